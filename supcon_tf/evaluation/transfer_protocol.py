"""The transfer protocol run on one benchmark: linear probe or fine-tuning (reference/transfer.md).

* `linear_benchmark(embed, data, ...)`: features of every split from a frozen encoder (short
  side resized to `image_size`, bicubic, centre crop, no augmentation), then
  `probes.lbfgs_logistic_sweep` over 45 log-spaced lambdas in [1e-6, 1e5]: lambda chosen on
  validation by the benchmark's metric, refit on train+validation, scored on test.
* `finetune_benchmark(encoder, data, ...)`: `finetune.grid_search` over (learning rate, weight
  decay) pairs chosen on validation, then the best pair retrained on train+validation from the
  pretrained weights and scored on test.

Validation is the creators' split where the registry has one (`data.val`), else a seeded
stratified hold-out of `transfer.HELDOUT_FRACTION` of each train class
(`probes.stratified_holdout`); the same indices serve both modes for a given seed.

Both return a JSON-friendly report dict of what was chosen, the validation and test scores and
the split sizes. Nothing here reads flags or writes files.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from supcon_tf.data import sources
from supcon_tf.evaluation import finetune
from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import probes
from supcon_tf.evaluation import transfer

LINEAR_CROP_FRACTION = 1.0  # resize the short side to S, crop S (no margin)


def encoder_embed(encoder):
    """A frozen-encoder embed function (inference mode) of a Keras encoder."""
    return tf.function(lambda images: encoder(images, training=False), reduce_retracing=True)


def extract_features(embed, dataset, image_size, batch_size,
                     crop_fraction=LINEAR_CROP_FRACTION):
    """Features and targets of a split (eval transform, no augmentation).

    Args:
        embed: callable float32 [B, S, S, C] -> float [B, F].
        dataset: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`.
        image_size: Python int S.
        batch_size: Python int.
        crop_fraction: Python float in (0, 1].

    Returns:
        (features float32 [N, F], targets int64 [N] or [N, num_classes]).
    """
    return finetune.predict(embed, finetune.eval_pipeline(dataset, image_size, batch_size,
                                                          crop_fraction))


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
    return probes.stratified_holdout(labels, transfer.HELDOUT_FRACTION, seed=seed)


def _sizes(num_train, num_val, num_test):
    return {"num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test),
            "num_trainval": int(num_train + num_val)}


def _report(data, mode, image_size, val_score, test_score, sizes, **chosen):
    benchmark = data.benchmark
    return {"benchmark": benchmark.key, "name": benchmark.display_name, "mode": mode,
            "metric": benchmark.metric, "source": data.source, "num_classes": data.num_classes,
            "validation": "official" if data.val is not None else (
                f"stratified hold-out of {transfer.HELDOUT_FRACTION:g} of train"),
            "image_size": int(image_size), "val_score": float(val_score),
            "test_score": float(test_score), **sizes, **chosen}


def linear_benchmark(embed, data, *, image_size, batch_size=256, seed=0,
                     lambdas=transfer.LINEAR_PROBE_LAMBDAS):
    """Linear-probe transfer of a frozen encoder on one benchmark.

    Args:
        embed: callable float32 [B, S, S, C] in [0, 1] -> float [B, F] (`export.load_embed`,
            `encoder_embed`).
        data: a `benchmarks.BenchmarkData`.
        image_size: Python int S (the short side is resized to S, then a centre S crop).
        batch_size: Python int, feature-extraction batch.
        seed: Python int, seeds the validation hold-out.
        lambdas: 1-D positive floats, the L2 penalties swept.

    Returns:
        Report dict: benchmark, mode "linear", metric, best_lambda, val_score (at best_lambda),
        test_score, the lambdas and their val_scores, sizes, feature_dim, image_size, source.
    """
    def features(split):
        return extract_features(embed, split, image_size, batch_size)

    train_x, train_y = features(data.train)
    test_x, test_y = features(data.test)
    if data.val is not None:
        val_x, val_y = features(data.val)
    else:
        fit, held = _holdout(train_y, data, seed)
        train_x, train_y, val_x, val_y = train_x[fit], train_y[fit], train_x[held], train_y[held]
    sweep = probes.lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y,
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
