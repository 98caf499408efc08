"""Image folders: `<root>/<class_name>/*.{jpg,jpeg,png,bmp}` as a labelled source.

Labels are the class directories in sorted order. When `<root>/<split>/` exists (e.g.
`root/train/cat/`) that sub-tree is the split, otherwise the whole tree is split "train" (or
"all"). Every path goes through `tf.io.gfile`, so a folder in a bucket (`gs://...`) works as a
local one.

Slices are stratified and seeded: `"train[:80%]"` takes the first 80% of a fixed, seeded
shuffle of each class's files (so every class keeps its share, and `"train[80%:]"` is exactly
the rest), and the selected files are then put in a seeded order that mixes the classes, so any
prefix is a fair sample too. A plain file-order slice would keep whole classes out of one side.

Unreadable images (empty, truncated, not an image): by default the first decode failure is
reported by `unreadable_images`, which names the files, and the run stops; with
`skip_unreadable=True` every file is decoded once when the source is opened and the unreadable
ones are left out and counted (`FolderSource.skipped`).
"""

import dataclasses
import os
import zlib

import numpy as np
import tensorflow as tf

from supcon_tf import filesystem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SLICE_SEED = 0


class UnreadableImageError(ValueError):
    """An image file of a folder source cannot be decoded; the message names it."""


def is_image(filename):
    """Whether `filename` has an image extension this source reads."""
    return filename.lower().endswith(IMAGE_EXTENSIONS)


def _entries(directory):
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory))


def classes(root):
    """Sorted class directory names under `root` that hold at least one image.

    Raises:
        ValueError: `root` is missing or holds no class directory with images.
    """
    if not filesystem.is_dir(root):
        raise ValueError(f"Image folder {root!r} does not exist; pass "
                         "'folder:<root>' with images in <root>/<class_name>/*.jpg|png.")
    found = []
    for entry in _entries(root):
        path = os.path.join(root, entry)
        if tf.io.gfile.isdir(path) and any(is_image(f) for f in _entries(path)):
            found.append(entry)
    if not found:
        raise ValueError(f"Image folder {root!r} holds no images; expected "
                         f"{os.path.join(root, '<class_name>', '*.jpg|png')}.")
    return found


def split_root(root, base, split):
    """`<root>/<base>` when that split directory exists, else `root` itself for train/all."""
    if base is not None and filesystem.is_dir(os.path.join(root, base)):
        return os.path.join(root, base)
    if base in ("train", "all"):
        return root
    raise ValueError(f"Unknown split {split!r} for image folder {root!r}: there is no "
                     f"{os.path.join(root, str(base))!r} directory; use 'train' or 'all' for a "
                     "folder without split sub-directories.")


def list_images(root):
    """(paths, labels int64 [N], class names) of every image under `root`, class by class."""
    names = classes(root)
    paths, labels = [], []
    for label, class_name in enumerate(names):
        class_dir = os.path.join(root, class_name)
        for filename in _entries(class_dir):
            if is_image(filename):
                paths.append(os.path.join(class_dir, filename))
                labels.append(label)
    return paths, np.asarray(labels, np.int64), names


def stratified_slice(labels, bounds, seed=SLICE_SEED):
    """Indices of a stratified, seeded slice of `labels`.

    Args:
        labels: int array `[N]`.
        bounds: `f(size) -> (lo, hi)`, the slice applied within each class (e.g. 0 .. 80%).
        seed: the shuffle seed; the same seed gives complementary slices for complementary
            bounds.

    Returns:
        int64 `[M]` indices into `labels`, in a seeded order that mixes the classes.
    """
    chosen = []
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)
        order = np.random.default_rng(zlib.crc32(f"{seed}/{label}".encode())).permutation(
            positions)
        lo, hi = bounds(len(order))
        chosen.append(order[lo:hi])
    chosen = np.concatenate(chosen) if chosen else np.zeros([0], np.int64)
    return np.random.default_rng(seed).permutation(chosen).astype(np.int64)


def decode(path):
    """uint8 `[H, W, 3]` image of the file at `path` (a string tensor)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def unreadable_images(paths):
    """[(path, reason)] of the files of `paths` that cannot be read and decoded.

    Every file is decoded once in parallel (a `tf.data` pass that drops failures); only the
    failures are decoded again, one by one, for their reason.
    """
    indices = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(paths), dtype=np.int64), np.asarray(paths, dtype=object).astype(str)))
    readable = indices.map(lambda index, path: (index, tf.shape(decode(path))[0]),
                           num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    good = {int(index) for index, _ in readable.as_numpy_iterator()}
    failures = []
    for index in sorted(set(range(len(paths))) - good):
        try:
            decode(tf.constant(paths[index]))
            reason = "unreadable"
        except (tf.errors.OpError, ValueError) as e:
            text = getattr(e, "message", str(e))
            reason = " ".join(text.split("}}")[-1].split())[:120] or type(e).__name__
        failures.append((paths[index], reason))
    return failures


def describe_unreadable(failures):
    """One line naming the first unreadable file (and how many there are) and the fix."""
    path, reason = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return (f"cannot read image {path} ({reason}){more}: fix or remove the file, or pass "
            "--skip_unreadable_images to leave unreadable images out.")


@dataclasses.dataclass
class FolderSource:
    """A folder split resolved to files: what `load` turns into a dataset."""

    paths: list
    labels: np.ndarray
    class_names: list
    skipped: list = dataclasses.field(default_factory=list)

    def dataset(self):
        """`tf.data.Dataset` of `(image uint8 [H, W, 3], label int64 [])`."""
        files = tf.data.Dataset.from_tensor_slices(
            (np.asarray(self.paths, dtype=object).astype(str), self.labels))
        return files.map(lambda path, label: (decode(path), label),
                         num_parallel_calls=tf.data.AUTOTUNE)


def open_split(root, base, split, bounds, *, skip_unreadable=False):
    """Resolves a folder split (stratified slice, unreadable files) to a `FolderSource`.

    Args:
        root: the folder tree (any `tf.io.gfile` path).
        base: the split name ("train", "test", ...).
        split: the split string as given (for messages).
        bounds: `f(size) -> (lo, hi)` of the slice within each class.
        skip_unreadable: decode every file now and leave the unreadable ones out (counted in
            `skipped`); otherwise files are decoded when read.
    """
    root = split_root(root, base, split)
    paths, labels, names = list_images(root)
    picks = stratified_slice(labels, bounds)
    paths, labels = [paths[i] for i in picks], labels[picks]
    skipped = []
    if skip_unreadable:
        skipped = unreadable_images(paths)
        bad = {path for path, _ in skipped}
        keep = np.asarray([path not in bad for path in paths], dtype=bool)
        paths, labels = [p for p, k in zip(paths, keep) if k], labels[keep]
    return FolderSource(paths, labels, names, skipped)
