"""The 12-dataset transfer benchmark (Kornblith et al. 2019, as used by SimCLR and SupCon).

`BENCHMARKS` holds reference/transfer.md's table as data: one frozen `Benchmark` per dataset, in
the table's order, with its TFDS name and split strings, class count, metric (a name of
`supcon_tf.evaluation.metrics.METRICS`) and split sizes. `get_benchmark(key)` looks one up;
`summarise(results)` turns `{key: test score}` into the markdown results table with the
arithmetic mean over the datasets given.

Validation protocol: Aircraft, VOC2007, DTD and Flowers-102 use their creators' validation split
(`val_split`); the others hold out part of train (`val_split is None`): the linear-eval binary
extracts features of `train_split` and cuts a seeded, per-class validation subset with
`probes.stratified_holdout(labels, HELDOUT_FRACTION)`. The reference says only "a held-out subset
of train"; 20 % per class is this project's choice. After choosing hyperparameters, the model is
refitted on train+validation (`trainval_split`) and scored on `test_split`.

Linear probe: `probes.lbfgs_logistic_sweep` over `LINEAR_PROBE_LAMBDAS`, images resized to 224 on
the short side (bicubic) and centre-cropped to 224, no augmentation. Fine-tuning: the grid of
`finetune_grid()`, `FINETUNE_STEPS` steps of batch `FINETUNE_BATCH_SIZE`, SGD Nesterov 0.9, BN
momentum `finetune_bn_momentum(steps_per_epoch)`, cosine schedule.
"""

import dataclasses
import math
import types

import numpy as np

HELDOUT_FRACTION = 0.2
LINEAR_PROBE_LAMBDAS = np.logspace(-6, 5, 45)
PROBE_IMAGE_SIZE = 224
FINETUNE_STEPS = 20_000
FINETUNE_BATCH_SIZE = 256
FINETUNE_MOMENTUM = 0.9  # Nesterov
FINETUNE_LEARNING_RATES = np.logspace(-4, -1, 7)
FINETUNE_WEIGHT_DECAYS = np.concatenate([[0.0], np.logspace(-6, -3, 7)])
FINETUNE_EVAL_RESIZE = 256  # then a 224 centre crop

METRIC_LABELS = types.MappingProxyType(
    {"top1": "top-1", "mean_per_class": "mean per-class", "map_11point": "11-point mAP"})


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One transfer dataset of reference/transfer.md.

    Attributes:
        key: short registry key ("food101", "voc2007", ...).
        display_name: the table's name ("Food-101").
        tfds_name: TFDS name with config ("sun397/standard-part1-120k"), or None for datasets
            read from a manual download (`load_source("folder:<dir>", split)`).
        train_split: split fitted during hyperparameter search (TFDS split string, or the
            sub-folder name for manual datasets).
        val_split: the creators' validation split, or None when validation is held out of
            `train_split` (`probes.stratified_holdout`).
        test_split: split the final score is reported on.
        num_classes: Python int.
        metric: one of `supcon_tf.evaluation.metrics.METRICS`.
        train_size: examples of train+validation (the table's "Train").
        test_size: examples of the test split.
        manual_download: True when TFDS cannot fetch the files (pass `--manual_dir`).
        notes: the table's notes.
    """
    key: str
    display_name: str
    tfds_name: str | None
    train_split: str
    val_split: str | None
    test_split: str
    num_classes: int
    metric: str
    train_size: int
    test_size: int
    manual_download: bool = False
    notes: str = ""

    @property
    def has_official_validation(self):
        """Whether the creators provide a validation split (else it is held out of train)."""
        return self.val_split is not None

    @property
    def trainval_split(self):
        """The split the final model is refitted on: train+validation."""
        if self.val_split is None:
            return self.train_split
        return f"{self.train_split}+{self.val_split}"


def _benchmarks(*entries):
    return types.MappingProxyType({entry.key: entry for entry in entries})


BENCHMARKS = _benchmarks(
    Benchmark("food101", "Food-101", "food101", "train", None, "validation", 101, "top1",
              75_750, 25_250, notes='tfds split "validation" is the official test set'),
    Benchmark("cifar10", "CIFAR-10", "cifar10", "train", None, "test", 10, "top1",
              50_000, 10_000),
    Benchmark("cifar100", "CIFAR-100", "cifar100", "train", None, "test", 100, "top1",
              50_000, 10_000),
    Benchmark("birdsnap", "Birdsnap", None, "train", None, "test", 500, "top1",
              47_386, 2_443, manual_download=True, notes="manual download"),
    Benchmark("sun397", "SUN397", "sun397/standard-part1-120k", "train", None, "test", 397,
              "top1", 19_850, 19_850, notes="first official split; images resized in tfds"),
    Benchmark("cars", "Stanford Cars", "cars196", "train", None, "test", 196, "top1",
              8_144, 8_041, manual_download=True,
              notes="tfds download URL broken: manual copy"),
    Benchmark("aircraft", "FGVC Aircraft", None, "train", "val", "test", 100, "mean_per_class",
              6_667, 3_333, manual_download=True,
              notes="manual download; variant labels; trainval/test"),
    Benchmark("voc2007", "VOC2007", "voc/2007", "train", "validation", "test", 20,
              "map_11point", 5_011, 4_952,
              notes="multi-label; ignore difficult-only images (metrics.voc_targets)"),
    Benchmark("dtd", "DTD", "dtd", "train", "validation", "test", 47, "top1",
              3_760, 1_880, notes="first split"),
    Benchmark("pets", "Oxford Pets", "oxford_iiit_pet", "train", None, "test", 37,
              "mean_per_class", 3_680, 3_669),
    Benchmark("caltech101", "Caltech-101", "caltech101", "train", None, "test", 102,
              "mean_per_class", 3_060, 6_084,
              notes="30 train images per class, background included"),
    Benchmark("flowers", "Flowers-102", "oxford_flowers102", "train", "validation", "test", 102,
              "mean_per_class", 2_040, 6_149, notes="train+validation 1,020 each"),
)


def get_benchmark(key):
    """The `Benchmark` registered under `key`.

    Args:
        key: a key of `BENCHMARKS` (e.g. "cifar10").

    Returns:
        The frozen `Benchmark`.

    Raises:
        ValueError: unknown key (the message lists the keys).
    """
    if key not in BENCHMARKS:
        raise ValueError(f"Unknown transfer benchmark {key!r}; use one of "
                         f"{', '.join(BENCHMARKS)}.")
    return BENCHMARKS[key]


def finetune_bn_momentum(steps_per_epoch):
    """Batch-norm momentum for fine-tuning: max(1 - 10 / s, 0.9) with s steps per epoch.

    Args:
        steps_per_epoch: Python int > 0.

    Returns:
        Python float in [0.9, 1).
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or (
            steps_per_epoch <= 0):
        raise ValueError(f"steps_per_epoch must be a positive int; received {steps_per_epoch!r}. "
                         "Pass ceil(train examples / batch size).")
    return max(1.0 - 10.0 / steps_per_epoch, 0.9)


def finetune_grid():
    """The fine-tuning grid: 7 learning rates x 8 weight decays (7 log-spaced plus 0).

    The reference divides the weight decay by the learning rate: the coefficient given to the
    optimizer is `weight_decay / learning_rate`, so the per-step shrinkage
    `learning_rate * coefficient` equals the grid value whatever the learning rate.

    Returns:
        List of 56 `(learning_rate, weight_decay, optimizer_weight_decay)` Python-float tuples,
        learning rate major.
    """
    return [(float(rate), float(decay), float(decay) / float(rate))
            for rate in FINETUNE_LEARNING_RATES for decay in FINETUNE_WEIGHT_DECAYS]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Outcome of `summarise`.

    Attributes:
        markdown: the results table, one row per dataset in registry order, then the mean.
        mean: Python float, arithmetic mean of the scores given (fractions in [0, 1]).
        scores: dict key -> score, in registry order.
    """
    markdown: str
    mean: float
    scores: dict

    def to_dict(self):
        """JSON-friendly form: scores, mean and the number of datasets."""
        return {"scores": dict(self.scores), "mean": self.mean, "num_datasets": len(self.scores)}


def summarise(results, *, title="Score (%)"):
    """Builds the transfer results table and the arithmetic mean over datasets.

    Scores are fractions in [0, 1] (each dataset's own metric) and are printed as percentages
    with two decimals. The mean is our own arithmetic mean of the scores given (the paper's
    printed SupCon mean, 84.27, is not the mean of its row, 84.85); when fewer than 12 datasets
    are given the mean row says over how many.

    Args:
        results: mapping of benchmark key -> Python float score in [0, 1].
        title: header of the score column.

    Returns:
        A `Summary`.

    Raises:
        ValueError: empty results, an unknown key, or a score that is not a finite number in
            [0, 1].
    """
    if not results:
        raise ValueError("summarise got no results; pass {benchmark key: score in [0, 1]}.")
    for key, value in results.items():
        get_benchmark(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                             np.integer)) or not (
                math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"score for {key!r} must be a finite number in [0, 1]; received "
                             f"{value!r}. Pass fractions, not percentages.")
    scores = {key: float(results[key]) for key in BENCHMARKS if key in results}
    mean = float(np.mean(list(scores.values())))
    lines = [f"| Dataset | Metric | {title} |", "|---|---|---:|"]
    for key, value in scores.items():
        benchmark = BENCHMARKS[key]
        lines.append(f"| {benchmark.display_name} | {METRIC_LABELS[benchmark.metric]} | "
                     f"{100.0 * value:.2f} |")
    label = "Mean" if len(scores) == len(BENCHMARKS) else (
        f"Mean ({len(scores)} of {len(BENCHMARKS)} datasets)")
    lines.append(f"| **{label}** | | **{100.0 * mean:.2f}** |")
    return Summary(markdown="\n".join(lines) + "\n", mean=mean, scores=scores)

