"""Image sources: TFDS datasets, image folders, numpy arrays and the bundled digits.

Every source is a `tf.data.Dataset` of `(image, label)` pairs, `image` uint8 `[H, W, C]` with
`C` in {1, 3} (sizes may vary between elements for folders and some TFDS datasets) and `label`
int64 `[]`. Augmentation and batching live in `augment.py` and `pipeline.py`.

Names understood by `load_source`:

* `"digits"`: scikit-learn's 1,797 real handwritten 8x8 digits (`sklearn.datasets.load_digits`,
  shipped offline), upscaled bilinearly to 32x32x3 uint8. The splits are fixed, disjoint and
  stratified: within each class, in scikit-learn's order, every fifth image (positions 4, 9, ...)
  is "test" and the rest "train" (1,442 + 355 = 1,797); "all" is both. A validation set is cut
  from train with a slice, e.g. `"train[:90%]"` / `"train[90%:]"`.
* `"folder:<path>"`: an image-folder tree `<path>/<class_name>/*.{jpg,jpeg,png,bmp}` on any
  `tf.io.gfile` filesystem; labels are the class directories in sorted order. When
  `<path>/<split>/` exists (e.g. `root/train/cat/`) that sub-tree is the split, otherwise the
  whole tree is split "train" (or "all"). Slices are stratified and seeded within each class
  (`image_folders.py`).
* Any other name is a TFDS dataset (`"cifar10"`, `"imagenet2012"`, `"sun397/standard-part1-120k"`,
  ...) with TFDS split strings. Nothing is downloaded unless `download=True`: a dataset that is
  not prepared under `data_dir`, or one that must be downloaded by hand and whose files are not
  in `manual_dir`, raises `DatasetUnavailableError`, a `ValueError` whose message is one line
  naming the dataset, where the files go and the flag to pass (`--data_dir` / `--manual_dir`).

Numpy arrays go through `from_arrays(images, labels)`. `num_classes(name)` gives the number of
classes of any named source.
"""

import functools
import os
import re

import numpy as np
import tensorflow as tf

from supcon_tf import filesystem
from supcon_tf.data import image_folders

DIGITS = "digits"
FOLDER_PREFIX = "folder:"
DIGITS_SIZE = 32
DIGITS_SPLITS = ("train", "test", "all")
_SPLIT_RE = re.compile(r"^(?P<base>[\w\-]+)(?:\[(?P<start>-?\d+%?)?:(?P<end>-?\d+%?)?\])?$")


class DatasetUnavailableError(ValueError):
    """A dataset exists by name but its files are not here (manual download or offline).

    The message is a single line naming the dataset, where to put the files and the flag
    (`--data_dir` / `--manual_dir`) to pass, so binaries can print it instead of a TFDS trace.
    """


def load_source(name, split, data_dir=None, manual_dir=None, *, download=False,
                skip_unreadable_images=False):
    """Loads a named image source as `(image, label)` pairs.

    Args:
        name: "digits", "folder:<path>" or a TFDS dataset name (optionally "name/config").
        split: Split string. "train", "test", "all" and slices such as "train[:90%]" or
            "train[10:]" for digits and folders; any TFDS split string for TFDS datasets.
        data_dir: TFDS data directory holding prepared datasets (default: TFDS's own,
            `~/tensorflow_datasets`).
        manual_dir: Directory with files downloaded by hand, for datasets such as imagenet2012
            (default: `<data_dir>/downloads/manual`).
        download: Whether a TFDS dataset that is not prepared may be downloaded and prepared.
            False (the default) fails at once with `DatasetUnavailableError` instead of trying
            the network; datasets whose files are already in `manual_dir` are always prepared.
        skip_unreadable_images: image folders only: decode every file once now and leave the
            unreadable ones out (`folder_source(...).skipped` lists them). Otherwise an
            unreadable file fails when it is read; `image_folders.unreadable_images` names it.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, C], label int64 [])`.

    Raises:
        ValueError: `name` or `split` is unknown, or a folder holds no images.
        DatasetUnavailableError: A TFDS dataset is not prepared and cannot be prepared here.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Dataset name must be a non-empty string, got {name!r}; use 'digits', "
                         "'folder:<path>' or a TFDS name such as 'cifar10'.")
    if name == DIGITS:
        return _load_digits(split)
    if name.startswith(FOLDER_PREFIX):
        return folder_source(name[len(FOLDER_PREFIX):], split, skip_unreadable_images).dataset()
    return _load_tfds(name, split, data_dir, manual_dir, download)


def num_classes(name, data_dir=None):
    """Number of classes of a named source.

    Args:
        name: As for `load_source`.
        data_dir: TFDS data directory (only read for TFDS datasets with metadata on disk).

    Returns:
        int, e.g. 10 for "digits" and "cifar10", 1000 for "imagenet2012".

    Raises:
        ValueError: `name` is unknown or the TFDS dataset has no single integer label.
    """
    if name == DIGITS:
        return 10
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        return len(image_folders.classes(image_folders.split_root(root, "train", "train")))
    builder = _tfds_builder(name, data_dir)
    _, label_key = _supervised_keys(builder)
    return int(builder.info.features[label_key].num_classes)


def count_examples(dataset):
    """Python int, the number of elements (the cardinality when known, else by counting)."""
    size = int(dataset.cardinality())
    if size >= 0:
        return size
    return int(dataset.reduce(np.int64(0), lambda count, *example: count + 1))


def from_arrays(images, labels):
    """Wraps numpy arrays as a source.

    Args:
        images: `[N, H, W, C]` (C in {1, 3}) or `[N, H, W]` (grayscale) array, uint8 in
            [0, 255] or float in [0, 1] (converted to uint8 by rounding x * 255).
        labels: Integer `[N]` array.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, C], label int64 [])`.

    Raises:
        ValueError: Wrong rank, channel count, value range or a label count that differs.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] or [N, H, W], got shape {images.shape}; "
                         "stack single images with np.stack.")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (channels last), got shape "
                         f"{images.shape}; transpose channels-first arrays to [N, H, W, C].")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be [N] with N = {images.shape[0]} (one per image), got "
                         f"shape {labels.shape}; pass integer class ids, not one-hot rows.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}; map class names "
                         "to ids first.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}; "
                             "cast with images.astype(np.uint8).")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError(f"float images must lie in [0, 1], got [{images.min()}, "
                             f"{images.max()}]; divide by 255 or pass uint8.")
        images = np.round(images * 255.0).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


# ----------------------------------------------------------------------------------------------
# digits


def _bilinear_matrix(size_in, size_out):
    """`[size_out, size_in]` linear-interpolation weights, half-pixel centres, edges clamped."""
    centres = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    centres = np.clip(centres, 0.0, size_in - 1.0)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = centres - low
    weights = np.zeros((size_out, size_in))
    weights[np.arange(size_out), low] += 1.0 - frac
    weights[np.arange(size_out), high] += frac
    return weights


@functools.lru_cache(maxsize=1)
def digits_arrays():
    """The bundled digits as numpy arrays, in scikit-learn's order.

    Returns:
        `(images uint8 [1797, 32, 32, 3], labels int64 [1797], is_test bool [1797])`; images
        are the 0..16 grey levels scaled to 0..255 and upscaled bilinearly from 8x8.
    """
    from sklearn import datasets as sk_datasets

    digits = sk_datasets.load_digits()
    small = digits.images.astype(np.float64) * (255.0 / 16.0)  # [N, 8, 8], 0..255
    weights = _bilinear_matrix(small.shape[1], DIGITS_SIZE)  # [32, 8]
    large = np.einsum("ij,njk,lk->nil", weights, small, weights)  # [N, 32, 32]
    images = np.repeat(np.round(large).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)
        is_test[positions[4::5]] = True
    return images, labels, is_test


def _load_digits(split):
    base, start, end = _parse_split(split, DIGITS, DIGITS_SPLITS)
    images, labels, is_test = digits_arrays()
    mask = {"train": ~is_test, "test": is_test, "all": np.ones_like(is_test)}[base]
    images, labels = images[mask], labels[mask]
    lo, hi = _slice_bounds(start, end, len(labels))
    return from_arrays(images[lo:hi], labels[lo:hi])


# ----------------------------------------------------------------------------------------------
# split strings shared by digits and folders


def _parse_split(split, name, legal):
    match = _SPLIT_RE.match(split) if isinstance(split, str) else None
    if match is None or match.group("base") not in legal:
        raise ValueError(f"Unknown split {split!r} for {name!r}; use one of "
                         f"{', '.join(legal)}, optionally sliced like 'train[:90%]'.")
    return match.group("base"), match.group("start"), match.group("end")


def _slice_bounds(start, end, size):
    def bound(text, default):
        if text is None:
            return default
        if text.endswith("%"):
            return int(round(float(text[:-1]) * size / 100.0))
        return int(text)

    return slice(bound(start, 0), bound(end, size)).indices(size)[:2]


# ----------------------------------------------------------------------------------------------
# image folders (the files, slices and unreadable images: `image_folders.py`)


def folder_source(root, split, skip_unreadable_images=False):
    """The `image_folders.FolderSource` of a folder split (its files listed now).

    Args:
        root: the folder tree, `name` without its "folder:" prefix.
        split: "train", "test", "all", ... optionally sliced ("train[:80%]"): a stratified,
            seeded slice within each class.
        skip_unreadable_images: leave unreadable files out (listed in `.skipped`).
    """
    match = _SPLIT_RE.match(split) if isinstance(split, str) else None
    if match is None:
        raise ValueError(f"Unknown split {split!r} for image folder {root!r}; use 'train', "
                         "'test' or a slice such as 'train[:80%]'.")
    bounds = functools.partial(_slice_bounds, match.group("start"), match.group("end"))
    return image_folders.open_split(root, match.group("base"), split,
                                    bounds,
                                    skip_unreadable=skip_unreadable_images)


# ----------------------------------------------------------------------------------------------
# TFDS


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: it is not 'digits', not 'folder:<path>' and not a TFDS "
            "dataset; check the spelling against https://www.tensorflow.org/datasets/catalog "
            "(e.g. 'cifar10', 'imagenet2012').") from None


def _supervised_keys(builder):
    keys = builder.info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    features = builder.info.features
    for label_key in ("label", "class_id"):  # class_id: stanford_online_products
        if "image" in features and label_key in features:
            return "image", label_key
    raise ValueError(f"TFDS dataset {builder.name!r} has no (image, label) pair (features: "
                     f"{sorted(features.keys())}); load it with tfds and wrap it with "
                     "from_arrays or Dataset.map.")


def _default_data_dir(builder):
    # builder.data_dir is <data_dir>/<name>/<config>/<version>; report the root the flag takes.
    path = builder.data_dir
    for _ in builder.info.full_name.split("/"):
        path = os.path.dirname(path)
    return path


def tfds_examples(name, split, data_dir=None, manual_dir=None, *, download=False):
    """The raw TFDS examples (feature dicts) of a prepared dataset's split.

    The one place that finds a TFDS builder, prepares it from manual files when they are there
    (or downloads when `download`), and otherwise fails with a one-line
    `DatasetUnavailableError`; `load_source` and `multilabel.load_multilabel_source` use it.

    Args:
        name, split, data_dir, manual_dir, download: as for `load_source`.

    Returns:
        (the `tfds` builder, a `tf.data.Dataset` of its feature dicts).

    Raises:
        ValueError: unknown dataset or split. DatasetUnavailableError: not prepared here.
    """
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared():
        root = data_dir or _default_data_dir(builder)
        needs_manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None
        manual = manual_dir or os.path.join(root, "downloads", "manual")
        has_manual_files = filesystem.is_dir(manual) and bool(tf.io.gfile.listdir(manual))
        if needs_manual and not has_manual_files and not download:
            raise DatasetUnavailableError(
                f"Dataset {name!r} must be downloaded by hand: put its files (see "
                f"https://www.tensorflow.org/datasets/catalog/{builder.name}) in {manual} and "
                f"pass --manual_dir={manual} (the prepared copy goes to --data_dir={root}).")
        if not needs_manual and not download:
            raise DatasetUnavailableError(
                f"Dataset {name!r} is not prepared under {root}: run `tfds build {name} "
                f"--data_dir=DIR` on a machine with network, copy DIR here and pass "
                f"--data_dir=DIR (or allow downloading with download=True).")
        config = tfds.download.DownloadConfig(manual_dir=manual if needs_manual else None)
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as error:  # TFDS raises many types; the user needs one line.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            where = (f"put its files in {manual} and pass --manual_dir={manual}" if needs_manual
                     else f"prepare it elsewhere and pass --data_dir=<copy of {root}>")
            raise DatasetUnavailableError(
                f"Dataset {name!r} could not be prepared under {root} "
                f"({type(error).__name__}: {reason}); {where}.") from None
    try:
        dataset = builder.as_dataset(split=split)
    except ValueError as error:
        raise ValueError(f"Unknown split {split!r} for TFDS dataset {name!r} "
                         f"({str(error).splitlines()[0]}); use a TFDS split string such as "
                         "'train', 'test' or 'train[:90%]'.") from None
    return builder, dataset


def _load_tfds(name, split, data_dir, manual_dir, download):
    builder, dataset = tfds_examples(name, split, data_dir, manual_dir, download=download)
    image_key, label_key = _supervised_keys(builder)

    def to_pair(example):
        image = example[image_key]
        if image.dtype != tf.uint8:
            image = tf.cast(image, tf.uint8)
        return image, tf.cast(example[label_key], tf.int64)

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
