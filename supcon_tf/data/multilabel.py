"""Multi-label image sources: PASCAL VOC from TFDS as `(image, targets)` pairs.

TFDS `voc/2007` has no supervised keys, so `sources.load_source` cannot read it. Here each
example becomes `(image uint8 [H, W, 3], targets int64 [20])` with the 1 / 0 / `IGNORE` encoding
of `supcon_tf.evaluation.metrics`: 1 when the class has a non-difficult object in the image,
`IGNORE` (-1) when all its objects are marked difficult, 0 when absent. The matrix comes from
`metrics.voc_targets` applied to the TFDS features `labels` (every class present) and
`labels_no_difficult`.

Nothing is downloaded: a dataset that is not prepared under `data_dir` raises
`sources.DatasetUnavailableError` (one line: how to prepare it and the flag to pass).
"""

import os

import tensorflow as tf

from supcon_tf.data import sources
from supcon_tf.evaluation import metrics

MULTILABEL_SOURCES = ("voc/2007", "voc/2012")
VOC_NUM_CLASSES = 20


def num_classes(name):
    """Number of classes of a multi-label source (20 for VOC).

    Raises:
        ValueError: `name` is not one of `MULTILABEL_SOURCES`.
    """
    _check_name(name)
    return VOC_NUM_CLASSES


def _check_name(name):
    if name not in MULTILABEL_SOURCES:
        raise ValueError(f"Unknown multi-label source {name!r}; use one of "
                         f"{', '.join(MULTILABEL_SOURCES)}.")


def _example_targets(labels, labels_no_difficult):
    """int64 [20] targets of one image from its two int64 [num_objects] label lists."""
    def build(present, clear):
        return metrics.voc_targets([present], [clear], VOC_NUM_CLASSES)[0]

    targets = tf.numpy_function(build, [labels, labels_no_difficult], tf.int64, stateful=False)
    return tf.ensure_shape(targets, [VOC_NUM_CLASSES])


def _data_root(builder):
    """The `--data_dir` root of a builder (its data_dir is <root>/<name>/<config>/<version>)."""
    path = builder.data_dir
    for _ in builder.info.full_name.split("/"):
        path = os.path.dirname(path)
    return path


def load_multilabel_source(name, split, data_dir=None, *, download=False):
    """Loads a prepared TFDS VOC dataset as `(image, targets)` pairs.

    Args:
        name: one of `MULTILABEL_SOURCES` ("voc/2007").
        split: a TFDS split string ("train", "validation", "test", "train+validation", ...).
        data_dir: TFDS data directory holding the prepared dataset (default: TFDS's own).
        download: whether a dataset that is not prepared may be downloaded and prepared (needs
            the network); False fails at once with `DatasetUnavailableError`.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, 3], targets int64 [20])`, targets in
        {1, 0, `metrics.IGNORE`}.

    Raises:
        ValueError: an unknown name or split.
        sources.DatasetUnavailableError: the dataset is not prepared under `data_dir`.
    """
    import tensorflow_datasets as tfds

    _check_name(name)
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    elif not builder.is_prepared():
        root = data_dir or _data_root(builder)
        raise sources.DatasetUnavailableError(
            f"Dataset {name!r} is not prepared under {root}: run `tfds build {name} "
            f"--data_dir=DIR` on a machine with network, copy DIR here and pass --data_dir=DIR.")
    try:
        dataset = builder.as_dataset(split=split)
    except ValueError as error:
        raise ValueError(f"Unknown split {split!r} for TFDS dataset {name!r} "
                         f"({str(error).splitlines()[0]}); use 'train', 'validation' or "
                         "'test'.") from None

    def to_pair(example):
        targets = _example_targets(example["labels"], example["labels_no_difficult"])
        return tf.cast(example["image"], tf.uint8), targets

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
