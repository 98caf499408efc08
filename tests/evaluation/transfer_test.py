"""Tests of supcon_tf.evaluation.transfer: the registry against reference/transfer.md, summaries."""

import dataclasses
import json

import numpy as np
import pytest

from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import transfer

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


def test_finetune_protocol():
    grid = transfer.finetune_grid()
    assert len(grid) == 7 * 8
    rates = sorted({rate for rate, _, _ in grid})
    decays = sorted({decay for _, decay, _ in grid})
    np.testing.assert_allclose([rates[0], rates[-1]], [1e-4, 0.1])
    assert decays[0] == 0.0
    np.testing.assert_allclose([decays[1], decays[-1]], [1e-6, 1e-3])
    for rate, decay, coefficient in grid:
        assert coefficient * rate == pytest.approx(decay)
    assert transfer.finetune_bn_momentum(50) == pytest.approx(0.9)   # 1 - 10/50 = 0.8 -> 0.9
    assert transfer.finetune_bn_momentum(200) == pytest.approx(0.95)  # 1 - 10/200
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int; received 0"):
        transfer.finetune_bn_momentum(0)
    assert len(transfer.LINEAR_PROBE_LAMBDAS) == 45
    np.testing.assert_allclose(transfer.LINEAR_PROBE_LAMBDAS[[0, -1]], [1e-6, 1e5])
