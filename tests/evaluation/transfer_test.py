"""Tests of supcon_tf.evaluation.transfer: the registry against reference/transfer.md, summaries,
and the protocol on one benchmark (VOC2007 through `tfds.testing.mock_data`; linear probe and
fine-tuning), every expected value recomputed here: images resized with TensorFlow
(`helpers.resize_centre_crop`), embedded with the SavedModel's `embed` signature or passed
through each fine-tuned classifier, the lambda sweep, and the 11-point mAP written out in numpy.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import transfer
from helpers import IMAGE_SIZE
from helpers import resize_centre_crop
from helpers import saved_model_embed
from helpers import tiny_run_dir

# reference/transfer.md, typed in again: display name, TFDS name, train, test, classes, metric.
REFERENCE_TABLE = [
    ("Food-101", "food101", 75_750, 25_250, 101, "top1"),
    ("CIFAR-10", "cifar10", 50_000, 10_000, 10, "top1"),
    ("CIFAR-100", "cifar100", 50_000, 10_000, 100, "top1"),
    ("Birdsnap", None, 47_386, 2_443, 500, "top1"),
    ("SUN397", "sun397/standard-part1-120k", 19_850, 19_850, 397, "top1"),
    ("Stanford Cars", "cars196", 8_144, 8_041, 196, "top1"),
    ("FGVC Aircraft", None, 6_667, 3_333, 100, "mean_per_class"),
    ("VOC2007", "voc/2007", 5_011, 4_952, 20, "map_11point"),
    ("DTD", "dtd", 3_760, 1_880, 47, "top1"),
    ("Oxford Pets", "oxford_iiit_pet", 3_680, 3_669, 37, "mean_per_class"),
    ("Caltech-101", "caltech101", 3_060, 6_084, 102, "mean_per_class"),
    ("Flowers-102", "oxford_flowers102", 2_040, 6_149, 102, "mean_per_class"),
]
# "the creators' validation sets for Aircraft, VOC2007, DTD, Flowers; otherwise held out"
OFFICIAL_VALIDATION = {"FGVC Aircraft", "VOC2007", "DTD", "Flowers-102"}
MANUAL = {"Birdsnap", "Stanford Cars", "FGVC Aircraft"}


def test_registry_matches_reference_table():
    assert len(transfer.BENCHMARKS) == 12
    rows = [(b.display_name, b.tfds_name, b.train_size, b.test_size, b.num_classes, b.metric)
            for b in transfer.BENCHMARKS.values()]
    assert rows == REFERENCE_TABLE
    for key, benchmark in transfer.BENCHMARKS.items():
        assert benchmark.key == key
        assert benchmark.metric in metrics.METRICS
        assert benchmark.has_official_validation == (benchmark.display_name in OFFICIAL_VALIDATION)
        assert benchmark.manual_download == (benchmark.display_name in MANUAL)


def test_split_strings():
    food = transfer.get_benchmark("food101")
    assert (food.train_split, food.val_split, food.test_split) == ("train", None, "validation")
    assert food.trainval_split == "train"
    voc = transfer.get_benchmark("voc2007")
    assert voc.trainval_split == "train+validation"
    assert transfer.get_benchmark("aircraft").trainval_split == "train+val"


def test_registry_is_read_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        transfer.get_benchmark("dtd").num_classes = 3
    with pytest.raises(TypeError):
        transfer.BENCHMARKS["new"] = transfer.get_benchmark("dtd")


def test_unknown_key_lists_the_keys():
    with pytest.raises(ValueError, match=r"Unknown transfer benchmark 'imagenet'; use one of "
                                         r"food101, cifar10, .*, flowers\.$"):
        transfer.get_benchmark("imagenet")


def test_summarise_all_datasets():
    scores = {key: (index + 1) / 20 for index, key in enumerate(transfer.BENCHMARKS)}
    summary = transfer.summarise(dict(reversed(list(scores.items()))))
    assert summary.mean == pytest.approx(sum(range(1, 13)) / 12 / 20)  # 6.5 / 20 = 0.325
    lines = summary.markdown.strip().splitlines()
    assert lines[0] == "| Dataset | Metric | Score (%) |"
    assert lines[2] == "| Food-101 | top-1 | 5.00 |"  # registry order, not input order
    assert lines[9] == "| VOC2007 | 11-point mAP | 40.00 |"
    assert lines[-1] == "| **Mean** | | **32.50** |"
    assert len(lines) == 2 + 12 + 1
    assert list(summary.scores) == list(transfer.BENCHMARKS)
    assert json.loads(json.dumps(summary.to_dict()))["num_datasets"] == 12


def test_summarise_subset_says_how_many():
    summary = transfer.summarise({"cifar10": 0.9, "pets": np.float32(0.8)})
    assert summary.mean == pytest.approx(0.85)
    assert summary.markdown.strip().splitlines()[-1] == (
        "| **Mean (2 of 12 datasets)** | | **85.00** |")


@pytest.mark.parametrize("results, match", [
    ({}, "summarise got no results"),
    ({"imagenet": 0.5}, "Unknown transfer benchmark 'imagenet'"),
    ({"cifar10": 84.2}, r"score for 'cifar10' must be a finite number in \[0, 1\]; received 84.2"),
    ({"cifar10": float("nan")}, "must be a finite number"),
    ({"cifar10": "0.9"}, "must be a finite number"),
])
def test_summarise_bad_results(results, match):
    with pytest.raises(ValueError, match=match):
        transfer.summarise(results)


def test_linear_probe_lambdas_are_the_reference_45():
    assert len(transfer.LINEAR_PROBE_LAMBDAS) == 45
    np.testing.assert_allclose(transfer.LINEAR_PROBE_LAMBDAS[[0, -1]], [1e-6, 1e5])
    np.testing.assert_allclose(np.diff(np.log10(transfer.LINEAR_PROBE_LAMBDAS)), 11 / 44)


# ----------------------------------------------------------------------------------------------
# the protocol on one benchmark


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory)


def _map_11point(targets, scores):
    """VOC2007 11-point mAP written out: per class, ignored entries dropped, ranked by score."""
    aps = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] != -1
        hits = targets[keep, c][np.argsort(-scores[keep, c], kind="stable")] == 1
        if not hits.any():
            continue
        precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
        recall = np.cumsum(hits) / hits.sum()
        aps.append(np.mean([max([p for p, r in zip(precision, recall) if r >= t], default=0.0)
                            for t in np.arange(11) / 10.0]))
    return float(np.mean(aps))


def _voc_mock_split(builder, split):
    """(raw images, targets int64 [N, 20] from `metrics.voc_targets`) of a mock VOC split."""
    import tensorflow_datasets as tfds

    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    targets = metrics.voc_targets([e["labels"] for e in examples],
                                  [e["labels_no_difficult"] for e in examples], 20)
    return [e["image"] for e in examples], targets


def test_voc2007_linear_is_multilabel_map(pretrained):
    """VOC2007 through TFDS mock data: targets from voc_targets, sweep on the official val."""
    import tensorflow_datasets as tfds

    from supcon_tf import export
    from supcon_tf.data import benchmarks
    from supcon_tf.evaluation import linear_probe

    embed, _ = export.load_embed(os.path.join(pretrained, "saved_model"))
    with tfds.testing.mock_data(num_examples=24):
        data = benchmarks.open_benchmark(transfer.get_benchmark("voc2007"), download=True)
        report = transfer.linear_benchmark(embed, data, image_size=IMAGE_SIZE)
        builder = tfds.builder("voc/2007")
        direct = {}
        for split in ("train", "validation", "test"):
            images, targets = _voc_mock_split(builder, split)
            direct[split] = (saved_model_embed(pretrained, images), targets)
    assert data.multilabel and data.num_classes == 20
    assert report["metric"] == "map_11point" and report["validation"] == "official"
    assert (report["num_train"], report["num_val"], report["num_test"]) == (24, 24, 24)
    sweep = linear_probe.lbfgs_logistic_sweep(*direct["train"], *direct["validation"],
                                              *direct["test"], metric="map_11point")
    assert report["best_lambda"] == pytest.approx(sweep.best_lambda)
    assert report["test_score"] == pytest.approx(
        _map_11point(direct["test"][1], sweep.test_scores), abs=1e-9)


@pytest.mark.slow
def test_voc2007_finetune_scores_map_of_the_finetuned_model(pretrained, monkeypatch):
    """VOC2007 fine-tuning through TFDS mock data: every grid point and the final run rescored.

    Each `finetune.finetune` run (the grid's two, then the retrain on train+validation) is
    recorded with its trained weights; its classifier is then applied here to the raw images
    (short side to 16 * 256 / 224, bicubic, centre 16 crop) and scored with the 11-point mAP
    written out in numpy against `voc_targets` of the raw examples.
    """
    import tensorflow_datasets as tfds

    from supcon_tf import trainer
    from supcon_tf.data import benchmarks
    from supcon_tf.evaluation import finetune

    runs = []  # (keyword arguments, model, trained weights) of every fine-tuning run
    finetune_one = finetune.finetune

    def recording_finetune(encoder, train_data, **kwargs):
        result = finetune_one(encoder, train_data, **kwargs)
        runs.append((kwargs, result.model, result.model.get_weights()))
        return result

    monkeypatch.setattr(finetune, "finetune", recording_finetune)
    encoder = trainer.load_pretrained(pretrained).model.encoder
    grid = finetune.make_grid([0.001, 0.1], [1e-4])
    with tfds.testing.mock_data(num_examples=24):
        data = benchmarks.open_benchmark(transfer.get_benchmark("voc2007"), download=True)
        report = transfer.finetune_benchmark(encoder, data, grid=grid, steps=2,
                                             batch_size=8, seed=0)
        builder = tfds.builder("voc/2007")
        val_images, val_targets = _voc_mock_split(builder, "validation")
        test_images, test_targets = _voc_mock_split(builder, "test")

    def direct_map(run, images, targets):
        _, model, weights = run
        model.set_weights(weights)
        batch = np.stack([resize_centre_crop(image, IMAGE_SIZE, fraction=224 / 256)
                          for image in images])
        return _map_11point(targets, np.asarray(model(batch, training=False)))

    assert report["metric"] == "map_11point" and report["mode"] == "finetune"
    assert (report["num_train"], report["num_val"], report["num_test"]) == (24, 24, 24)
    assert len(runs) == 3  # two grid points, then the chosen one on train+validation
    assert [(p["learning_rate"], p["weight_decay"]) for p in report["grid"]] == [
        (0.001, 1e-4), (0.1, 1e-4)]
    for point, run in zip(report["grid"], runs[:2]):
        assert (run[0]["learning_rate"], run[0]["num_train_examples"]) == (
            point["learning_rate"], 24)
        assert point["val_score"] == pytest.approx(
            direct_map(run, val_images, val_targets), abs=1e-9)
    best = int(np.argmax([p["val_score"] for p in report["grid"]]))  # first maximum on ties
    assert report["learning_rate"] == report["grid"][best]["learning_rate"]
    assert report["val_score"] == report["grid"][best]["val_score"]
    final_kwargs = runs[2][0]
    assert final_kwargs["learning_rate"] == report["learning_rate"]
    assert final_kwargs["num_train_examples"] == 48 and final_kwargs["multilabel"]
    assert report["test_score"] == pytest.approx(
        direct_map(runs[2], test_images, test_targets), abs=1e-9)
