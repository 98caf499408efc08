"""Tests for supcon_tf.data.pipeline: multi-view batches, seeds, balance and distribution."""

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.data import augment
from supcon_tf.data import pipeline


def _label_coded_arrays(num=24, num_classes=6, size=10):
    """Flat images whose grey level is 20 * label, so a view's pixels reveal its label."""
    labels = np.arange(num, dtype=np.int64) % num_classes
    images = np.repeat((20 * labels).astype(np.uint8)[:, None, None, None], size, 1)
    images = np.repeat(np.repeat(images, size, 2), 3, 3)
    return images, labels


def _take(dataset, count):
    return [(v.numpy(), l.numpy()) for v, l in dataset.take(count)]


@pytest.mark.parametrize("policy", augment.POLICIES)
def test_every_policy_gives_multiview_batches(policy):
    dataset = pipeline.make_dataset("digits", policy, 2, 4, 16, seed=0)
    assert dataset.element_spec[0].shape == (4, 2, 16, 16, 3)
    (views, labels), = _take(dataset, 1)
    assert views.dtype == np.float32 and labels.dtype == np.int64 and labels.shape == (4,)
    assert 0.0 <= views.min() and views.max() <= 1.0
    if policy != "eval":
        assert np.abs(views[:, 0] - views[:, 1]).mean() > 1e-3  # views differ


def test_labels_stay_aligned_with_their_views():
    images, labels = _label_coded_arrays()
    dataset = pipeline.make_dataset(
        (images, labels), "simaugment", 3, 5, 8, seed=4,
        augment_options=dict(jitter_strength=0.0, grayscale_probability=0.0))
    for views, batch_labels in _take(dataset, 6):
        # Crop, flip and resize keep a flat image flat, so every view shows 20 * label.
        np.testing.assert_allclose(views, np.broadcast_to(
            (20.0 * batch_labels / 255.0)[:, None, None, None, None], views.shape), atol=1e-5)


def test_seeded_pipelines_repeat_and_differ_across_seeds():
    first = _take(pipeline.make_dataset("digits", "simaugment", 2, 8, 16, seed=7), 3)
    second = _take(pipeline.make_dataset("digits", "simaugment", 2, 8, 16, seed=7), 3)
    other = _take(pipeline.make_dataset("digits", "simaugment", 2, 8, 16, seed=8), 1)
    for (v1, l1), (v2, l2) in zip(first, second):
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(l1, l2)
    assert not np.array_equal(first[0][0], other[0][0])


def test_eval_pipeline_keeps_order_and_remainder():
    images, labels = _label_coded_arrays(num=10)
    batches = _take(pipeline.make_dataset((images, labels), "eval", 1, 4, 10, training=False), 9)
    assert [len(l) for _, l in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([l for _, l in batches]), labels)
    np.testing.assert_allclose(batches[0][0][:, 0], images[:4] / 255.0, atol=1e-6)


def test_training_pipeline_repeats_and_drops_remainder():
    images, labels = _label_coded_arrays(num=10)
    batches = _take(pipeline.make_dataset((images, labels), "eval", 2, 4, 10, seed=1), 7)
    assert len(batches) == 7 and all(len(l) == 4 for _, l in batches)
    # The first 2 full epochs (20 examples, 5 batches) show every example twice.
    counts = np.bincount(np.concatenate([l for _, l in batches[:5]]), minlength=6)
    np.testing.assert_array_equal(counts, np.bincount(np.concatenate([labels, labels])))


def test_class_balanced_batches_hold_m_images_of_distinct_classes():
    images, labels = _label_coded_arrays(num=36, num_classes=6)
    dataset = pipeline.make_dataset((images, labels), "eval", 2, 6, 10, seed=3,
                                    samples_per_class=2)
    seen = set()
    for views, batch_labels in _take(dataset, 8):
        classes, counts = np.unique(batch_labels, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all()
        np.testing.assert_allclose(views[:, 0, 0, 0, 0], 20.0 * batch_labels / 255.0, atol=1e-6)
        seen.update(classes.tolist())
    assert seen == set(range(6))


def _indexed_arrays(class_sizes, size=4):
    """Images whose grey level is 4 * their index (so a view names its example), with labels
    0..len(class_sizes)-1 of the given sizes."""
    labels = np.repeat(np.arange(len(class_sizes), dtype=np.int64), class_sizes)
    levels = (4 * np.arange(len(labels))).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (len(labels), size, size, 3)).copy(), labels


def test_class_balanced_batches_use_every_example_about_once_per_epoch():
    # Classes of 12, 12, 6, 6, 6, 6, 3, 3, 3, 3 images: a uniform draw of classes would use the
    # examples of the small classes twice as often as those of the big ones, and those of the
    # big ones about half as often as once per epoch.
    sizes = [12, 12, 6, 6, 6, 6, 3, 3, 3, 3]
    images, labels = _indexed_arrays(sizes)
    batch, epochs = 4, 40
    steps = epochs * len(labels) // batch
    dataset = pipeline.make_dataset((images, labels), "eval", 1, batch, 4, seed=5,
                                    samples_per_class=2)
    uses = np.zeros(len(labels))
    for views, batch_labels in _take(dataset, steps):
        assert len(set(batch_labels.tolist())) == 2
        index = np.rint(views[:, 0, 0, 0, 0] * 255 / 4).astype(int)
        np.testing.assert_array_equal(labels[index], batch_labels)  # labels stay aligned
        np.add.at(uses, index, 1)
    per_class = np.bincount(labels, weights=uses) / (np.array(sizes) * epochs)
    np.testing.assert_allclose(per_class, 1.0, atol=0.2)  # uses per example and epoch
    assert uses.min() > 0.5 * epochs


def test_assign_classes_balances_the_shards():
    counts = np.array([50, 3, 7, 20, 20, 1, 9, 30, 2, 8])
    for shards in (1, 2, 3, 4):
        shard_of = pipeline.assign_classes(counts, shards)
        totals = np.bincount(shard_of, weights=counts, minlength=shards)
        assert set(shard_of.tolist()) == set(range(shards))
        assert totals.max() - totals.min() <= counts.max()  # the greedy rule's bound
        np.testing.assert_array_equal(shard_of, pipeline.assign_classes(counts, shards))


def test_class_balanced_shards_draw_disjoint_classes():
    images, labels = _label_coded_arrays(num=48, num_classes=8)
    seen = []
    for index in range(2):
        dataset = pipeline.make_dataset((images, labels), "eval", 1, 4, 10, seed=3,
                                        samples_per_class=2, shard=(2, index))
        classes = set()
        for _, batch_labels in _take(dataset, 12):
            values, counts = np.unique(batch_labels, return_counts=True)
            assert len(values) == 2 and (counts == 2).all()
            classes.update(values.tolist())
        seen.append(classes)
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8))


def test_class_balanced_replicas_of_one_step_hold_distinct_classes(two_cpu_strategy):
    images, labels = _label_coded_arrays(num=48, num_classes=8)
    dataset = pipeline.make_distributed_dataset(
        two_cpu_strategy, (images, labels), "eval", 1, 8, 10, seed=2, samples_per_class=2)
    steps = iter(dataset)
    for _ in range(10):
        _, per_replica = next(steps)
        first, second = (t.numpy() for t in two_cpu_strategy.experimental_local_results(
            per_replica))
        for half in (first, second):
            values, counts = np.unique(half, return_counts=True)
            assert len(values) == 2 and (counts == 2).all()
        assert not set(first.tolist()) & set(second.tolist())  # 4 distinct classes per step


@pytest.mark.parametrize("kwargs, match", [
    (dict(samples_per_class=4), "samples_per_class must be a positive int dividing batch_size 6"),
    (dict(samples_per_class=1), r"need 6 distinct classes .* has 3"),
    (dict(samples_per_class=2, training=False), "samples_per_class .* is for training"),
])
def test_class_balance_errors(kwargs, match):
    images, labels = _label_coded_arrays(num=9, num_classes=3)
    with pytest.raises(ValueError, match=match):
        pipeline.make_dataset((images, labels), "eval", 1, 6, 10, **kwargs)


@pytest.mark.parametrize("args, kwargs, match", [
    (("digits", "simaugment", 0, 4, 16), {}, "num_views must be a positive int, got 0"),
    (("digits", "simaugment", 2, -1, 16), {}, "batch_size must be a positive int, got -1"),
    (("digits", "rand_augment", 2, 4, 16), {}, "Unknown augmentation policy 'rand_augment'"),
    (("nope_dataset_x", "eval", 1, 4, 16), {}, "Unknown dataset 'nope_dataset_x'"),
    ((42, "eval", 1, 4, 16), {}, "Unknown source 42"),
    (("digits", "eval", 1, 4, 16), dict(cache=3), "cache must be True, False"),
    (("digits", "eval", 1, 4, 16), dict(shard=(2, 2)), r"shard index must be in \[0, 2\)"),
])
def test_bad_arguments_raise(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipeline.make_dataset(*args, **kwargs)


def test_shards_are_disjoint():
    images, labels = _label_coded_arrays(num=8, num_classes=8)
    shard_labels = [
        np.concatenate([l for _, l in _take(pipeline.make_dataset(
            (images, labels), "eval", 1, 2, 10, training=False, shard=(2, i)), 10)])
        for i in range(2)]
    assert sorted(np.concatenate(shard_labels).tolist()) == list(range(8))
    assert not set(shard_labels[0]) & set(shard_labels[1])


def test_distributed_dataset_splits_the_global_batch_over_replicas(two_cpu_strategy):
    strategy = two_cpu_strategy
    images, labels = _label_coded_arrays()
    dataset = pipeline.make_distributed_dataset(
        strategy, (images, labels), "eval", 2, 8, 10, seed=5)
    views, batch_labels = next(iter(dataset))
    local_views = strategy.experimental_local_results(views)
    local_labels = strategy.experimental_local_results(batch_labels)
    assert [v.shape for v in local_views] == [(4, 2, 10, 10, 3)] * 2
    for v, l in zip(local_views, local_labels):
        np.testing.assert_allclose(v.numpy()[:, 0, 0, 0, 0], 20.0 * l.numpy() / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="global_batch_size 7 is not divisible by the 2"):
        pipeline.make_distributed_dataset(strategy, (images, labels), "eval", 2, 7, 10)


def test_label_sets_stay_aligned_with_their_views():
    # The grey level 20 * c codes the class id c; the label set is c's three bits (class 0
    # has the empty set), so every batch row's set must be the bits of its views' grey level.
    images, labels = _label_coded_arrays()
    bits = ((labels[:, None] >> np.arange(3)) & 1).astype(np.int64)  # [N, 3]
    source = tf.data.Dataset.from_tensor_slices((images, bits))
    dataset = pipeline.make_dataset(
        source, "simaugment", 2, 5, 8, seed=4,
        augment_options=dict(jitter_strength=0.0, grayscale_probability=0.0))
    assert dataset.element_spec[1].shape == (5, 3)
    for views, batch_sets in _take(dataset, 6):
        assert batch_sets.dtype == np.int64
        class_ids = np.round(views[:, :, 0, 0, 0] * 255.0 / 20.0).astype(np.int64)  # [B, V]
        for row, ids in zip(batch_sets, class_ids):
            for class_id in ids:
                np.testing.assert_array_equal(row, [(class_id >> k) & 1 for k in range(3)])


def test_class_balanced_batches_refuse_label_sets():
    images, labels = _label_coded_arrays()
    source = tf.data.Dataset.from_tensor_slices((images, np.eye(6, dtype=np.int64)[labels]))
    with pytest.raises(ValueError, match="needs one class per image, but the source has label"):
        pipeline.make_dataset(source, "eval", 2, 6, 8, samples_per_class=2)
