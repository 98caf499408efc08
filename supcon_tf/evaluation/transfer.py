"""The 12-dataset transfer benchmark (Kornblith et al. 2019, as used by SimCLR and SupCon).

The registry: `BENCHMARKS` holds reference/transfer.md's table as data, one frozen `Benchmark`
per dataset, in the table's order, with its TFDS name and split strings, class count, metric (a
name of `metrics.METRICS`) and split sizes. `get_benchmark(key)` looks one up; `summarise(results)`
turns `{key: test score}` into the markdown results table with the arithmetic mean over the
datasets given. The images of each split are read by `supcon_tf.data.benchmarks.open_benchmark`
(a data source: TFDS or image folders), which returns a `BenchmarkData`.

The protocol, on one benchmark:

* `linear_benchmark(embed, data, ...)`: features of every split from a frozen encoder (short
  side resized to `image_size`, bicubic, centre crop, no augmentation:
  `features.extract_features`), then `linear_probe.lbfgs_logistic_sweep` over
  `LINEAR_PROBE_LAMBDAS` (45 log-spaced in [1e-6, 1e5]): lambda chosen on validation by the
  benchmark's metric, refit on train+validation, scored on test.
* `finetune_benchmark(encoder, data, ...)`: `finetune.grid_search` over (learning rate, weight
  decay) pairs chosen on validation, then the best pair retrained on train+validation from the
  pretrained weights and scored on test (the fine-tuning settings live in `finetune`: the grid,
  `finetune.STEPS` steps of batch `finetune.BATCH_SIZE`, SGD Nesterov 0.9, batch-norm momentum
  `finetune.bn_momentum(steps_per_epoch)`, cosine schedule).

Validation protocol: Aircraft, VOC2007, DTD and Flowers-102 use their creators' validation split
(`val_split`); the others hold out part of train (`val_split is None`): a seeded, per-class
`HELDOUT_FRACTION` of `train_split` (`linear_probe.stratified_holdout`); the same indices serve
both modes for a given seed. The reference says only "a held-out subset of train"; 20 % per
class is this project's choice. After choosing hyperparameters, the model is refitted on
train+validation (`trainval_split`) and scored on `test_split`.

Both protocol functions return a JSON-friendly report dict of what was chosen, the validation
and test scores and the split sizes. Nothing here reads flags or writes files.
"""

import dataclasses
import math
import types

import numpy as np
import tensorflow as tf

from supcon_tf.data import sources
from supcon_tf.evaluation import features
from supcon_tf.evaluation import finetune
from supcon_tf.evaluation import linear_probe
from supcon_tf.evaluation import metrics

HELDOUT_FRACTION = 0.2
LINEAR_PROBE_LAMBDAS = linear_probe.DEFAULT_LAMBDAS  # 45 log-spaced in [1e-6, 1e5]
PROBE_IMAGE_SIZE = 224
LINEAR_CROP_FRACTION = 1.0  # resize the short side to S, crop S (no margin)

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
            `train_split` (`linear_probe.stratified_holdout`).
        test_split: split the final score is reported on.
        num_classes: Python int.
        metric: one of `metrics.METRICS`.
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


# ----------------------------------------------------------------------------------------------
# the protocol on one benchmark


def dataset_targets(dataset, batch_size=1024):
    """Targets of a split, int64 [N] or [N, num_classes] (images are decoded and dropped)."""
    targets = [batch.numpy() for batch in
               dataset.map(lambda image, target: target).batch(batch_size)]
    if not targets:
        raise ValueError("the split is empty; check the benchmark's files.")
    return np.concatenate(targets).astype(np.int64)


def take_indices(dataset, indices, size):
    """The elements of `dataset` at `indices` (in dataset order).

    Args:
        dataset: a finite `tf.data.Dataset` of `size` elements.
        indices: int [K], positions in [0, size).
        size: Python int.

    Returns:
        A `tf.data.Dataset` of K elements.
    """
    keep = np.zeros(size, dtype=bool)
    keep[np.asarray(indices, dtype=np.int64)] = True
    keep = tf.constant(keep)
    kept = dataset.enumerate().filter(lambda index, example: tf.gather(keep, index))
    return kept.map(lambda index, example: example)


def _holdout(labels, data, seed):
    if data.multilabel:
        raise ValueError(f"{data.benchmark.display_name} is multi-label and has no validation "
                         "split; a stratified hold-out needs class ids.")
    return linear_probe.stratified_holdout(labels, HELDOUT_FRACTION, seed=seed)


def _sizes(num_train, num_val, num_test):
    return {"num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test),
            "num_trainval": int(num_train + num_val)}


def _report(data, mode, image_size, val_score, test_score, sizes, **chosen):
    benchmark = data.benchmark
    return {"benchmark": benchmark.key, "name": benchmark.display_name, "mode": mode,
            "metric": benchmark.metric, "source": data.source, "num_classes": data.num_classes,
            "validation": "official" if data.val is not None else (
                f"stratified hold-out of {HELDOUT_FRACTION:g} of train"),
            "image_size": int(image_size), "val_score": float(val_score),
            "test_score": float(test_score), **sizes, **chosen}


def linear_benchmark(embed, data, *, image_size, batch_size=256, seed=0,
                     lambdas=LINEAR_PROBE_LAMBDAS):
    """Linear-probe transfer of a frozen encoder on one benchmark.

    Args:
        embed: a Keras encoder, or a callable float32 [B, S, S, C] in [0, 1] -> float [B, F]
            (`export.load_embed`); see `features.embed_function`.
        data: a `benchmarks.BenchmarkData`.
        image_size: Python int S (the short side is resized to S, then a centre S crop).
        batch_size: Python int, feature-extraction batch.
        seed: Python int, seeds the validation hold-out.
        lambdas: 1-D positive floats, the L2 penalties swept.

    Returns:
        Report dict: benchmark, mode "linear", metric, best_lambda, val_score (at best_lambda),
        test_score, the lambdas and their val_scores, sizes, feature_dim, image_size, source.
    """
    def split_features(split):
        return features.extract_features(embed, split, image_size, batch_size,
                                         LINEAR_CROP_FRACTION)

    train_x, train_y = split_features(data.train)
    test_x, test_y = split_features(data.test)
    if data.val is not None:
        val_x, val_y = split_features(data.val)
    else:
        fit, held = _holdout(train_y, data, seed)
        train_x, train_y, val_x, val_y = train_x[fit], train_y[fit], train_x[held], train_y[held]
    sweep = linear_probe.lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y,
                                              lambdas=lambdas, metric=data.benchmark.metric,
                                              num_classes=data.num_classes)
    best = int(np.flatnonzero(sweep.lambdas == sweep.best_lambda)[0])
    return _report(data, "linear", image_size, sweep.val_scores[best], sweep.test_score,
                   _sizes(len(train_x), len(val_x), len(test_x)),
                   feature_dim=int(train_x.shape[1]), best_lambda=float(sweep.best_lambda),
                   lambdas=[float(value) for value in sweep.lambdas],
                   val_scores=[float(value) for value in sweep.val_scores])


def finetune_benchmark(encoder, data, *, grid, steps, batch_size, seed=0, eval_batch_size=256,
                       log=None):
    """Fine-tuning transfer on one benchmark: grid on validation, retrain, score test.

    The encoder's weights are restored to the pretrained ones before every run and at the end.

    Args:
        encoder: Keras model, float [B, S, S, C] in [0, 1] -> features [B, F], pretrained
            (`trainer.load_pretrained(...).model.encoder`); S is the image size.
        data: a `benchmarks.BenchmarkData`.
        grid: list of (learning_rate, weight_decay, ...) (`finetune.make_grid`).
        steps: Python int, optimizer steps of every run.
        batch_size: Python int, training batch.
        seed: Python int, seeds the hold-out, classifier init and augmentation.
        eval_batch_size: Python int.
        log: optional callable taking one progress line.

    Returns:
        Report dict: benchmark, mode "finetune", metric, learning_rate and weight_decay chosen,
        optimizer_weight_decay, bn_momentum of the final run, val_score, test_score, the grid's
        points, steps, batch_size, sizes, image_size, source.
    """
    image_size = int(encoder.input_shape[1])
    if data.val is not None:
        train, val, trainval = data.train, data.val, data.train.concatenate(data.val)
        num_train = sources.count_examples(data.train)
        num_val = sources.count_examples(data.val)
    else:
        labels = dataset_targets(data.train)
        fit, held = _holdout(labels, data, seed)
        train = take_indices(data.train, fit, len(labels))
        val = take_indices(data.train, held, len(labels))
        trainval, num_train, num_val = data.train, len(fit), len(held)
    common = dict(metric=data.benchmark.metric, num_classes=data.num_classes, steps=steps,
                  batch_size=batch_size, multilabel=data.multilabel, seed=seed)
    points, best = finetune.grid_search(encoder, train, val, grid,
                                        num_train_examples=num_train,
                                        eval_batch_size=eval_batch_size, log=log, **common)
    chosen = points[best]
    pretrained = encoder.get_weights()
    try:
        final = finetune.finetune(encoder, trainval, num_classes=data.num_classes,
                                  num_train_examples=num_train + num_val,
                                  learning_rate=chosen.learning_rate,
                                  weight_decay=chosen.weight_decay, steps=steps,
                                  batch_size=batch_size, multilabel=data.multilabel, seed=seed)
        scores, targets = finetune.classifier_scores(final.model, data.test, image_size,
                                                     eval_batch_size)
    finally:
        encoder.set_weights(pretrained)
    test_score = metrics.score(data.benchmark.metric, targets, scores)
    return _report(data, "finetune", image_size, chosen.val_score, test_score,
                   _sizes(num_train, num_val, len(targets)),
                   learning_rate=chosen.learning_rate, weight_decay=chosen.weight_decay,
                   optimizer_weight_decay=chosen.optimizer_weight_decay,
                   bn_momentum=final.bn_momentum, steps=int(steps), batch_size=int(batch_size),
                   final_train_loss=float(final.step_losses[-1]),
                   grid=[dataclasses.asdict(point) for point in points])
