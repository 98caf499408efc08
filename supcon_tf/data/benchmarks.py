"""Where each transfer benchmark's images come from (`evaluation.transfer.BENCHMARKS`).

`open_benchmark(benchmark, data_dir, manual_dir)` returns the benchmark's train, validation (when
the creators provide one) and test splits as `tf.data.Dataset`s of `(image uint8 [H, W, 3],
target)`, target an int64 class id, or for VOC2007 int64 [20] of 1 / 0 / `metrics.IGNORE`
(`multilabel.py`). Nothing is downloaded; a benchmark whose files are not here raises
`sources.DatasetUnavailableError` with one line saying how to get it.

* TFDS benchmarks (Food-101, CIFAR-10/100, SUN397, DTD, Pets, Caltech-101, Flowers-102) read the
  prepared TFDS copy under `data_dir` (`sources.load_source`), with the registry's split strings.
* VOC2007 reads TFDS `voc/2007` through `multilabel.load_multilabel_source`.
* Manual downloads (Birdsnap, FGVC Aircraft, Stanford Cars) read image folders laid out as

      <manual_dir>/<key>/<split>/<class_name>/<image>.{jpg,jpeg,png,bmp}

  with `<key>` the registry key (`birdsnap`, `aircraft`, `cars`) and `<split>` the registry's
  split names: `train` and `test` (Birdsnap, Cars), `train`, `val` and `test` (Aircraft: the
  creators' train / val / test of the 100 variants; train+val is the 6,667-image "trainval").
  Class ids are the class directories in sorted order, which must be the same in every split.
  Stanford Cars falls back to a prepared TFDS `cars196` under `data_dir` when
  `<manual_dir>/cars` does not exist (TFDS's own download URL is broken).
"""

import dataclasses
import os

import tensorflow as tf

from supcon_tf import filesystem
from supcon_tf.data import image_folders
from supcon_tf.data import multilabel
from supcon_tf.data import sources


@dataclasses.dataclass
class BenchmarkData:
    """The splits of one benchmark, ready to read.

    Attributes:
        benchmark: the registry's `Benchmark`.
        train: `tf.data.Dataset` of `(image uint8 [H, W, 3], target)`, the split fitted during
            the hyperparameter search.
        val: the creators' validation split (same element spec), or None (hold out of train).
        test: the split reported.
        num_classes: Python int, the classes of the source found (the registry's for the real
            datasets).
        source: Python str saying where the images come from (for the reports).
    """
    benchmark: object
    train: tf.data.Dataset
    val: object
    test: tf.data.Dataset
    num_classes: int
    source: str

    @property
    def multilabel(self):
        """Whether targets are [num_classes] 1 / 0 / IGNORE rows (the "map_11point" metric)."""
        return self.benchmark.metric == "map_11point"


def manual_root(benchmark, manual_dir):
    """`<manual_dir>/<key>`, the image-folder root of a manual-download benchmark."""
    return os.path.join(manual_dir, benchmark.key)


def _splits(benchmark):
    return [split for split in (benchmark.train_split, benchmark.val_split,
                                benchmark.test_split) if split is not None]


def _class_names(split_dir):
    """Sorted sub-directories of `split_dir` holding at least one image ([] when none)."""
    try:
        return image_folders.classes(split_dir)
    except ValueError:
        return []


def _layout_hint(benchmark, manual_dir):
    root = manual_root(benchmark, manual_dir or "<manual_dir>")
    splits = ",".join(_splits(benchmark))
    return f"{root}/{{{splits}}}/<class_name>/*.jpg"


def _open_folders(benchmark, manual_dir):
    root = manual_root(benchmark, manual_dir)
    classes = None
    for split in _splits(benchmark):
        split_dir = os.path.join(root, split)
        names = _class_names(split_dir)
        if not names:
            raise sources.DatasetUnavailableError(
                f"{benchmark.display_name} must be downloaded by hand (no class folders of "
                f"images in {split_dir}): lay the files out as "
                f"{_layout_hint(benchmark, manual_dir)} and pass --manual_dir.")
        if classes is not None and names != classes:
            raise ValueError(f"{benchmark.display_name}: the class folders of {split_dir} differ "
                             f"from those of {os.path.join(root, benchmark.train_split)} "
                             f"({len(names)} vs {len(classes)}); every split needs the same "
                             "class directories.")
        classes = names
    datasets = {split: sources.load_source(f"{sources.FOLDER_PREFIX}{root}", split)
                for split in _splits(benchmark)}
    return datasets, len(classes), f"image folders {root}"


def _open_tfds(benchmark, data_dir, manual_dir, download):
    name = benchmark.tfds_name
    if benchmark.metric == "map_11point":
        datasets = {split: multilabel.load_multilabel_source(name, split, data_dir,
                                                              download=download)
                    for split in _splits(benchmark)}
        return datasets, multilabel.num_classes(name), f"TFDS {name}"
    datasets = {split: sources.load_source(name, split, data_dir=data_dir, manual_dir=manual_dir,
                                         download=download)
                for split in _splits(benchmark)}
    return datasets, sources.num_classes(name, data_dir), f"TFDS {name}"


def open_benchmark(benchmark, data_dir=None, manual_dir=None, *, download=False):
    """Opens every split of a benchmark without reading images.

    Args:
        benchmark: a `transfer.Benchmark`.
        data_dir: TFDS data directory (default: TFDS's own).
        manual_dir: root of the manual downloads (see the module docstring); None means none.
        download: whether TFDS may download and prepare a missing dataset (needs the network;
            the binary never sets it).

    Returns:
        A `BenchmarkData`.

    Raises:
        sources.DatasetUnavailableError: the files are not here (one line: how to get them).
        ValueError: the files are here but malformed (class folders differ between splits).
    """
    if benchmark.manual_download:
        folders = manual_dir is not None and filesystem.is_dir(manual_root(benchmark, manual_dir))
        if folders or benchmark.tfds_name is None:
            if manual_dir is None:
                raise sources.DatasetUnavailableError(
                    f"{benchmark.display_name} must be downloaded by hand: lay the files out as "
                    f"{_layout_hint(benchmark, None)} and pass --manual_dir.")
            datasets, num_classes, source = _open_folders(benchmark, manual_dir)
        else:
            try:
                datasets, num_classes, source = _open_tfds(benchmark, data_dir, manual_dir,
                                                           download)
            except sources.DatasetUnavailableError:
                raise sources.DatasetUnavailableError(
                    f"{benchmark.display_name} is not available: lay its files out as "
                    f"{_layout_hint(benchmark, manual_dir)} and pass --manual_dir, or prepare "
                    f"TFDS {benchmark.tfds_name} elsewhere and pass --data_dir.") from None
    else:
        datasets, num_classes, source = _open_tfds(benchmark, data_dir, manual_dir, download)
    return BenchmarkData(benchmark=benchmark, train=datasets[benchmark.train_split],
                         val=datasets.get(benchmark.val_split), test=datasets[benchmark.test_split],
                         num_classes=int(num_classes), source=source)
