"""Multi-label image sources: PASCAL VOC and COCO from TFDS as `(image, targets)` pairs.

TFDS `voc/2007` and `coco/2017` have no supervised keys, so `sources.load_source` cannot read
them. Here each example becomes `(image uint8 [H, W, 3], targets int64 [num_classes])`:

* VOC (20 classes): the 1 / 0 / `IGNORE` encoding of `supcon_tf.evaluation.metrics`: 1 when the
  class has a non-difficult object in the image, `IGNORE` (-1) when all its objects are marked
  difficult, 0 when absent: `metrics.voc_targets`'s encoding, computed in TensorFlow ops from
  the TFDS features `labels` (every class present) and `labels_no_difficult`.
* COCO (80 classes): 1 when the image has an object of the class (`objects/label`, crowd
  regions included), else 0; COCO marks nothing difficult, so there is no `IGNORE`.

`load_label_sets` gives the label sets that multi-label SupCon trains on (Jaccard-weighted
positives, `losses.contrastive_loss`): the same targets with `IGNORE` read as absent (0), since
a class seen only in difficult objects is one the annotators would not vouch for, and a set
has no third state. The 11-point mAP of the evaluation keeps `IGNORE` (`load_multilabel_source`).

Nothing is downloaded: a dataset that is not prepared under `data_dir` raises
`sources.DatasetUnavailableError` (one line: how to prepare it and the flag to pass).
"""

import tensorflow as tf

from supcon_tf.data import sources
from supcon_tf.evaluation import metrics

VOC_SOURCES = ("voc/2007", "voc/2012")
COCO_SOURCES = ("coco/2017",)
MULTILABEL_SOURCES = VOC_SOURCES + COCO_SOURCES
VOC_NUM_CLASSES = 20
COCO_NUM_CLASSES = 80


def is_multilabel(name):
    """Whether `name` is a multi-label source of this module (a Python bool)."""
    return name in MULTILABEL_SOURCES


def num_classes(name):
    """Number of classes of a multi-label source (20 for VOC, 80 for COCO).

    Raises:
        ValueError: `name` is not one of `MULTILABEL_SOURCES`.
    """
    _check_name(name)
    return VOC_NUM_CLASSES if name in VOC_SOURCES else COCO_NUM_CLASSES


def _check_name(name):
    if name not in MULTILABEL_SOURCES:
        raise ValueError(f"Unknown multi-label source {name!r}; use one of "
                         f"{', '.join(MULTILABEL_SOURCES)}.")


def _present(ids, count):
    """bool [count]: which of `count` classes occur in the int64 [num_objects] list `ids`."""
    return tf.reduce_any(tf.one_hot(ids, count, on_value=True, off_value=False,
                                    dtype=tf.bool), axis=0)


def _example_targets(labels, labels_no_difficult):
    """int64 [20] targets of one VOC image from its two int64 [num_objects] label lists.

    The same encoding as `metrics.voc_targets`, in TensorFlow ops: 1 where a non-difficult
    object of the class is present, `IGNORE` where only difficult ones are, else 0.
    """
    return tf.where(_present(labels_no_difficult, VOC_NUM_CLASSES), tf.constant(1, tf.int64),
                    tf.where(_present(labels, VOC_NUM_CLASSES),
                             tf.constant(metrics.IGNORE, tf.int64), tf.constant(0, tf.int64)))


def _coco_targets(labels):
    """int64 [80] targets of one COCO image: 1 for each class among its objects' labels."""
    return tf.cast(_present(labels, COCO_NUM_CLASSES), tf.int64)


def present_labels(targets):
    """The label set of targets: int64 1 where a target is 1, 0 for absent and `IGNORE`.

    Args:
        targets: int `[..., num_classes]` in {1, 0, `metrics.IGNORE`}.

    Returns:
        int64 `[..., num_classes]` of 0 / 1.
    """
    return tf.cast(tf.equal(targets, 1), tf.int64)


def load_multilabel_source(name, split, data_dir=None, *, download=False, manual_dir=None):
    """Loads a prepared TFDS VOC or COCO dataset as `(image, targets)` pairs.

    Args:
        name: one of `MULTILABEL_SOURCES` ("voc/2007", "coco/2017").
        split: a TFDS split string ("train", "validation", "test", "train+validation", ...).
        data_dir: TFDS data directory holding the prepared dataset (default: TFDS's own).
        download: whether a dataset that is not prepared may be downloaded and prepared (needs
            the network); False fails at once with `DatasetUnavailableError`.
        manual_dir: passed to `sources.tfds_examples` (neither dataset needs one).

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, 3], targets int64 [num_classes(name)])`,
        targets in {1, 0, `metrics.IGNORE`} (VOC) or {1, 0} (COCO).

    Raises:
        ValueError: an unknown name or split.
        sources.DatasetUnavailableError: the dataset is not prepared under `data_dir`.
    """
    _check_name(name)
    _, dataset = sources.tfds_examples(name, split, data_dir, manual_dir, download=download)

    def to_pair(example):
        if name in VOC_SOURCES:
            targets = _example_targets(example["labels"], example["labels_no_difficult"])
        else:
            targets = _coco_targets(example["objects"]["label"])
        return tf.cast(example["image"], tf.uint8), targets

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)


def load_label_sets(name, split, data_dir=None, *, download=False, manual_dir=None):
    """`load_multilabel_source` with `IGNORE` read as absent: the sets SupCon trains on.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, 3], labels int64 [num_classes(name)])`,
        labels 0 / 1 (several ones per image, or none).
    """
    dataset = load_multilabel_source(name, split, data_dir, download=download,
                                     manual_dir=manual_dir)
    return dataset.map(lambda image, targets: (image, present_labels(targets)),
                       num_parallel_calls=tf.data.AUTOTUNE)
