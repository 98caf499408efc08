"""Tests for supcon_tf.data.multilabel: VOC / COCO targets in TensorFlow ops, the TFDS sources.

Expected targets come from `metrics.voc_targets` (a numpy loop over the label lists) and, for
a few named cases, from the encoding written out by hand: 1 for a class with a non-difficult
object, `IGNORE` (-1) for one whose objects are all difficult, 0 for an absent class; the label
sets SupCon trains on read `IGNORE` as absent. COCO targets are checked against a loop over
each mocked image's objects.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from supcon_tf.data import multilabel
from supcon_tf.evaluation import metrics

# name: (labels, labels_no_difficult, {class: expected target}; every other class 0)
TARGET_CASES = {
    "clear_and_difficult_only": ([0, 5, 5, 7], [0, 5], {0: 1, 5: 1, 7: metrics.IGNORE}),
    "difficult_beside_a_clear_one": ([11, 11], [11], {11: 1}),  # one clear object is enough
    "only_difficult": ([12, 12, 3], [], {12: metrics.IGNORE, 3: metrics.IGNORE}),
    "first_and_last_class": ([19, 0], [19], {19: 1, 0: metrics.IGNORE}),
    "no_objects": ([], [], {}),
}


def _example_targets(labels, labels_no_difficult):
    return multilabel._example_targets(tf.constant(labels, tf.int64),
                                       tf.constant(labels_no_difficult, tf.int64))


@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_example_targets_equal_voc_targets(case):
    labels, labels_no_difficult, present = TARGET_CASES[case]
    got = _example_targets(labels, labels_no_difficult)
    assert got.dtype == tf.int64 and got.shape == (20,)
    expected = metrics.voc_targets([labels], [labels_no_difficult], 20)[0]
    np.testing.assert_array_equal(got.numpy(), expected)
    by_hand = np.zeros(20, np.int64)
    for cls, value in present.items():
        by_hand[cls] = value
    np.testing.assert_array_equal(got.numpy(), by_hand)


def test_example_targets_in_a_graph_equal_voc_targets_row_by_row():
    cases = [TARGET_CASES[case][:2] for case in sorted(TARGET_CASES)]
    traced = tf.function(multilabel._example_targets)
    expected = metrics.voc_targets(*zip(*cases), 20)
    for (labels, labels_no_difficult), row in zip(cases, expected):
        got = traced(tf.constant(labels, tf.int64), tf.constant(labels_no_difficult, tf.int64))
        np.testing.assert_array_equal(got.numpy(), row)


def _mocked(name, split, tmp_path, loader):
    """(loader's pairs, TFDS's raw examples) of a mocked TFDS dataset (6 random examples)."""
    with tfds.testing.mock_data(num_examples=6):
        pairs = list(loader(name, split, data_dir=str(tmp_path),
                            download=True).as_numpy_iterator())
        examples = list(tfds.as_numpy(tfds.builder(name, data_dir=str(tmp_path))
                                      .as_dataset(split=split)))
    assert len(pairs) == len(examples) == 6
    return pairs, examples


def test_voc2007_source_pairs_images_with_voc_targets(tmp_path):
    pairs, examples = _mocked("voc/2007", "validation", tmp_path,
                              multilabel.load_multilabel_source)
    expected = metrics.voc_targets([e["labels"] for e in examples],
                                   [e["labels_no_difficult"] for e in examples], 20)
    for (image, targets), example, row in zip(pairs, examples, expected):
        assert image.dtype == np.uint8 and targets.dtype == np.int64
        np.testing.assert_array_equal(image, example["image"])
        np.testing.assert_array_equal(targets, row)
    assert multilabel.num_classes("voc/2007") == 20


@pytest.mark.parametrize("name", ["voc/2010", "cifar10"])
def test_unknown_multilabel_source_raises(name):
    with pytest.raises(ValueError, match=rf"Unknown multi-label source '{name}'; use one of "):
        multilabel.load_multilabel_source(name, "train")
    with pytest.raises(ValueError, match=rf"Unknown multi-label source '{name}'"):
        multilabel.num_classes(name)


@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_present_labels_read_ignore_as_absent(case):
    labels, labels_no_difficult, present = TARGET_CASES[case]
    got = multilabel.present_labels(_example_targets(labels, labels_no_difficult)).numpy()
    by_hand = np.zeros(20, np.int64)
    for cls, value in present.items():
        by_hand[cls] = 1 if value == 1 else 0  # IGNORE (difficult only) is absent.
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, by_hand)


def test_voc2007_label_sets_are_the_targets_equal_to_one(tmp_path):
    pairs, examples = _mocked("voc/2007", "train", tmp_path, multilabel.load_label_sets)
    targets = metrics.voc_targets([e["labels"] for e in examples],
                                  [e["labels_no_difficult"] for e in examples], 20)
    for (image, label_set), example, row in zip(pairs, examples, targets):
        np.testing.assert_array_equal(image, example["image"])
        np.testing.assert_array_equal(label_set, (row == 1).astype(np.int64))


def test_coco2017_targets_are_multi_hot_over_80_classes(tmp_path):
    for loader in (multilabel.load_multilabel_source, multilabel.load_label_sets):
        pairs, examples = _mocked("coco/2017", "validation", tmp_path, loader)
        for (image, targets), example in zip(pairs, examples):
            by_hand = np.zeros(80, np.int64)
            for label in example["objects"]["label"]:  # a loop over the image's objects
                by_hand[label] = 1
            assert image.dtype == np.uint8 and targets.dtype == np.int64
            np.testing.assert_array_equal(image, example["image"])
            np.testing.assert_array_equal(targets, by_hand)
    assert multilabel.num_classes("coco/2017") == 80 and multilabel.is_multilabel("coco/2017")
    assert not multilabel.is_multilabel("cifar10")
