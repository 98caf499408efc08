"""Multi-label image sources: PASCAL VOC from TFDS as `(image, targets)` pairs.

TFDS `voc/2007` has no supervised keys, so `sources.load_source` cannot read it. Here each
example becomes `(image uint8 [H, W, 3], targets int64 [20])` with the 1 / 0 / `IGNORE` encoding
of `supcon_tf.evaluation.metrics`: 1 when the class has a non-difficult object in the image,
`IGNORE` (-1) when all its objects are marked difficult, 0 when absent: `metrics.voc_targets`'s
encoding, computed in TensorFlow ops from the TFDS features `labels` (every class present) and
`labels_no_difficult`.

Nothing is downloaded: a dataset that is not prepared under `data_dir` raises
`sources.DatasetUnavailableError` (one line: how to prepare it and the flag to pass).
"""

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
    """int64 [20] targets of one image from its two int64 [num_objects] label lists.

    The same encoding as `metrics.voc_targets`, in TensorFlow ops: 1 where a non-difficult
    object of the class is present, `IGNORE` where only difficult ones are, else 0.
    """
    def present(ids):
        return tf.reduce_any(tf.one_hot(ids, VOC_NUM_CLASSES, on_value=True, off_value=False,
                                        dtype=tf.bool), axis=0)

    return tf.where(present(labels_no_difficult), tf.constant(1, tf.int64),
                    tf.where(present(labels), tf.constant(metrics.IGNORE, tf.int64),
                             tf.constant(0, tf.int64)))


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
    _check_name(name)
    _, dataset = sources.tfds_examples(name, split, data_dir, download=download)

    def to_pair(example):
        targets = _example_targets(example["labels"], example["labels_no_difficult"])
        return tf.cast(example["image"], tf.uint8), targets

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
