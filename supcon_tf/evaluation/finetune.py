"""Fine-tuning a pretrained encoder with a fresh linear classifier (transfer protocol).

The fine-tuning half of reference/transfer.md (Kornblith et al. 2019, as used by SimCLR and
SupCon): the whole network (encoder + a new linear layer) is trained with SGD, Nesterov momentum
0.9 and a cosine learning-rate decay to 0, for `steps` steps of `batch_size` images augmented
with a random resized crop (area in [0.08, 1], bicubic) and a horizontal flip. Batch-norm
layers use momentum `bn_momentum(s)` = max(1 - 10 / s, 0.9), s = steps per epoch =
ceil(train examples / batch size). Evaluation resizes the short side to
`image_size / EVAL_CROP_FRACTION` (256 for 224) and takes the central `image_size` square. The
reference grid (`make_grid()`) is 7 learning rates in [1e-4, 0.1] x 8 weight decays (0 and 7 in
[1e-6, 1e-3]), each run `STEPS` steps of batch `BATCH_SIZE`.

Weight decay is coupled L2 (`optimizers.SGDWithL2`, g <- g + c w): the grid's value `wd` is
divided by the learning rate, c = wd / lr, so each step shrinks the weights by lr_t * c, i.e.
by `wd` at the peak learning rate whatever the rate. As everywhere in supcon_tf, variables of
rank <= 1 (biases, batch-norm scale/offset) are not decayed. Learning rates are used as given
(not rescaled with the batch size).

Losses: softmax cross-entropy over `num_classes` for multiclass benchmarks; for multi-label
targets (VOC2007: int [num_classes] of 1 / 0 / `metrics.IGNORE`) a per-class sigmoid
cross-entropy averaged over the entries that are not `IGNORE` (difficult-only labels are left
out, as in the metric).

`finetune` trains one (learning rate, weight decay) pair; `grid_search` trains every pair of a
grid from the same pretrained weights and scores each on validation; `select_best` picks the
argmax. The caller (`transfer.finetune_benchmark`) then retrains the best pair on
train+validation and scores test; `classifier_scores` gives a trained model's logits of a split
(`features.extract_features` through the evaluation transform).
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from supcon_tf import optimizers
from supcon_tf import schedules
from supcon_tf.data import augment
from supcon_tf.evaluation import features
from supcon_tf.evaluation import metrics

STEPS = 20_000
BATCH_SIZE = 256
MOMENTUM = 0.9  # Nesterov
LEARNING_RATES = np.logspace(-4, -1, 7)
WEIGHT_DECAYS = np.concatenate([[0.0], np.logspace(-6, -3, 7)])
EVAL_CROP_FRACTION = 224 / 256  # resize the short side to 256, centre crop 224 (scaled to S)
TRAIN_CROP_AREA = (0.08, 1.0)
SHUFFLE_BUFFER = 10_000


def bn_momentum(steps_per_epoch):
    """Batch-norm momentum for fine-tuning: max(1 - 10 / s, 0.9) with s steps per epoch.

    Args:
        steps_per_epoch: Python int > 0.

    Returns:
        Python float in [0.9, 1).

    Raises:
        ValueError: `steps_per_epoch` is not a positive int.
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or (
            steps_per_epoch <= 0):
        raise ValueError(f"steps_per_epoch must be a positive int; received {steps_per_epoch!r}. "
                         "Pass ceil(train examples / batch size).")
    return max(1.0 - 10.0 / steps_per_epoch, 0.9)


# ----------------------------------------------------------------------------------------------
# loss, batch norm, model


def masked_sigmoid_cross_entropy(targets, logits):
    """Multi-label loss: sigmoid cross-entropy averaged over the non-ignored classes of a sample.

    With z = logits and y in {0, 1}, each entry is the stable form of -y log s(z) - (1 - y)
    log(1 - s(z)) = max(z, 0) - z y + log(1 + exp(-|z|)); entries whose target is
    `metrics.IGNORE` are masked out. A sample whose every entry is ignored has loss 0.

    Args:
        targets: int [batch, num_classes] of 1 / 0 / `metrics.IGNORE`.
        logits: float [batch, num_classes].

    Returns:
        float32 [batch].
    """
    targets = ops.cast(targets, "float32")
    logits = ops.cast(logits, "float32")
    mask = ops.cast(ops.not_equal(targets, float(metrics.IGNORE)), "float32")
    labels = ops.maximum(targets, 0.0)  # IGNORE -> 0; masked below
    entries = ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(entries * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def softmax_cross_entropy(targets, logits):
    """Multiclass loss: softmax cross-entropy of int class ids.

    Args:
        targets: int [batch] class ids.
        logits: float [batch, num_classes].

    Returns:
        float32 [batch].
    """
    return keras.losses.sparse_categorical_crossentropy(
        ops.cast(targets, "int32"), ops.cast(logits, "float32"), from_logits=True)


def batch_norm_layers(model):
    """Every `BatchNormalization` layer of `model`, nested models included (list)."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found


def set_batch_norm_momentum(model, momentum):
    """Sets the moving-statistics momentum of every batch-norm layer of `model` (in place).

    Keras' update is moving <- momentum * moving + (1 - momentum) * batch statistic, the
    convention of the protocol's max(1 - 10 / s, 0.9). Call before the model is traced.

    Returns:
        The number of layers changed.
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def build_classifier(encoder, num_classes, *, seed=0):
    """The encoder followed by a fresh linear layer ("classifier", init N(0, 0.01^2), bias 0).

    Args:
        encoder: a Keras model mapping float [B, S, S, C] in [0, 1] to features [B, F]; it is
            shared (not copied), so training the classifier trains it.
        num_classes: Python int > 0.
        seed: Python int, seeds the linear layer's initialiser.

    Returns:
        A `keras.Model` mapping float [B, S, S, C] to logits float [B, num_classes].
    """
    inputs = keras.Input(tuple(encoder.input_shape[1:]), name="images")
    features = encoder(inputs)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seed),
        name="classifier")(features)
    return keras.Model(inputs, logits, name="finetune_classifier")


# ----------------------------------------------------------------------------------------------
# input pipelines


def _to_float(image):
    return tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]


def train_pipeline(dataset, image_size, batch_size, *, seed=0, shuffle_buffer=SHUFFLE_BUFFER,
                   crop_area=TRAIN_CROP_AREA):
    """Shuffled, repeated, augmented training batches (random resized crop + flip).

    Every element gets its own stateless seed from `tf.data.Dataset.random(seed)`, so the
    stream (order and pixels) is a function of `seed`.

    Args:
        dataset: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`; target int [] or
            int [num_classes].
        image_size: Python int S.
        batch_size: Python int B.
        seed: Python int.
        shuffle_buffer: Python int, the shuffle buffer.
        crop_area: (low, high) area fractions of the random resized crop.

    Returns:
        An infinite `tf.data.Dataset` of `(images float32 [B, S, S, C] in [0, 1], targets [B]
        or [B, num_classes])`.
    """
    def augment_one(example, random):
        image, target = example
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([random, tf.constant(seed, tf.int64)]), 2))
        image = augment.random_resized_crop(_to_float(image), crop_seed, image_size, crop_area)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return tf.clip_by_value(image, 0.0, 1.0), target  # bicubic overshoots

    stream = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    stream = tf.data.Dataset.zip((stream, tf.data.Dataset.random(seed=seed)))
    stream = stream.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def classifier_scores(model, dataset, image_size, batch_size):
    """Logits of a fine-tuned classifier on a split (the fine-tuning evaluation transform).

    Args:
        model: from `finetune` (images [B, S, S, C] -> logits [B, K]).
        dataset: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`.
        image_size: Python int S.
        batch_size: Python int.

    Returns:
        (scores float32 [N, K], targets int64 [N] or [N, K]).
    """
    return features.extract_features(model.predict_on_batch, dataset, image_size, batch_size,
                                     EVAL_CROP_FRACTION)


# ----------------------------------------------------------------------------------------------
# one fine-tuning run


@dataclasses.dataclass
class FinetuneResult:
    """Outcome of `finetune`.

    Attributes:
        model: the `keras.Model` (encoder + "classifier") after training.
        optimizer: its `optimizers.SGDWithL2` (Nesterov); `l2_weight_decay` = wd / lr.
        schedule: the optimizer's cosine `LearningRateSchedule` (peak `learning_rate`, 0 at
            the last step).
        learning_rate: Python float, the peak learning rate.
        weight_decay: Python float, the grid's weight decay (before division by the rate).
        bn_momentum: Python float, the momentum set on every batch-norm layer.
        steps_per_epoch: Python int s = ceil(num_train_examples / batch_size).
        step_losses: float64 [steps], the training loss of each step (batch mean).
    """
    model: object
    optimizer: object
    schedule: object
    learning_rate: float
    weight_decay: float
    bn_momentum: float
    steps_per_epoch: int
    step_losses: np.ndarray


def finetune(encoder, train_data, *, num_classes, num_train_examples, learning_rate,
             weight_decay, steps, batch_size, multilabel=False, seed=0,
             shuffle_buffer=SHUFFLE_BUFFER):
    """Fine-tunes `encoder` plus a fresh linear classifier with one (lr, wd) pair.

    Sets the encoder's batch-norm momentum to `bn_momentum(s)` and its
    `trainable` to True, then runs `steps` steps of `model.fit` (one step per Keras epoch, so
    the history holds each step's loss). The encoder's weights change in place: callers that
    train several pairs restore the pretrained weights in between (`grid_search` does).

    Args:
        encoder: Keras model, float [B, S, S, C] in [0, 1] -> features [B, F].
        train_data: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`; target int [] class
            id, or int [num_classes] of 1 / 0 / `metrics.IGNORE` when `multilabel`.
        num_classes: Python int > 0.
        num_train_examples: Python int > 0, the size of `train_data` (for s).
        learning_rate: Python float > 0, the peak of the cosine schedule.
        weight_decay: Python float >= 0, the grid value; the optimizer gets wd / lr.
        steps: Python int > 0, optimizer steps.
        batch_size: Python int > 0.
        multilabel: Python bool, sigmoid (masked) instead of softmax cross-entropy.
        seed: Python int, seeds the classifier init, shuffling and augmentation.
        shuffle_buffer: Python int > 0.

    Returns:
        A `FinetuneResult`.

    Raises:
        ValueError: a non-positive size, step count or learning rate, or a negative decay.
    """
    for name, value in (("num_classes", num_classes), ("num_train_examples", num_train_examples),
                        ("steps", steps), ("batch_size", batch_size)):
        features.check_positive_int(name, value, f"Pass {name} >= 1.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; received {learning_rate!r}.")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0; received {weight_decay!r}.")
    steps_per_epoch = math.ceil(num_train_examples / batch_size)
    momentum = bn_momentum(steps_per_epoch)
    encoder.trainable = True
    set_batch_norm_momentum(encoder, momentum)
    model = build_classifier(encoder, num_classes, seed=seed)
    schedule = schedules.build_schedule("cosine", float(learning_rate),
                                        steps_per_epoch=steps_per_epoch,
                                        epochs=steps / steps_per_epoch)
    optimizer = optimizers.build_optimizer(
        "nesterov", schedule, float(weight_decay) / float(learning_rate),
        momentum=MOMENTUM)
    model.compile(optimizer=optimizer,
                  loss=masked_sigmoid_cross_entropy if multilabel else softmax_cross_entropy)
    image_size = int(encoder.input_shape[1])
    batches = train_pipeline(train_data, image_size, batch_size, seed=seed,
                             shuffle_buffer=shuffle_buffer)
    history = model.fit(batches, epochs=steps, steps_per_epoch=1, shuffle=False, verbose=0)
    return FinetuneResult(model=model, optimizer=optimizer, schedule=schedule,
                          learning_rate=float(learning_rate),
                          weight_decay=float(weight_decay), bn_momentum=momentum,
                          steps_per_epoch=steps_per_epoch,
                          step_losses=np.asarray(history.history["loss"], dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# the grid


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One grid point's validation outcome.

    Attributes:
        learning_rate: Python float.
        weight_decay: Python float, the grid value.
        optimizer_weight_decay: Python float, weight_decay / learning_rate.
        val_score: Python float in [0, 1], the benchmark's metric on validation.
        final_loss: Python float, the training loss of the last step.
    """
    learning_rate: float
    weight_decay: float
    optimizer_weight_decay: float
    val_score: float
    final_loss: float


def make_grid(learning_rates=None, weight_decays=None):
    """(learning rate, weight decay, weight decay / learning rate) triples, learning rate major.

    Args:
        learning_rates: positive floats; default `LEARNING_RATES` (7 log-spaced in
            [1e-4, 0.1]).
        weight_decays: floats >= 0; default `WEIGHT_DECAYS` (0 and 7 log-spaced in
            [1e-6, 1e-3]).

    Returns:
        List of Python-float triples; with both defaults the reference's 56-point grid. The
        optimizer's coefficient is `weight_decay / learning_rate`, so the per-step shrinkage
        `learning_rate * coefficient` equals the grid value whatever the learning rate.

    Raises:
        ValueError: an empty list, a learning rate <= 0 or a weight decay < 0.
    """
    rates = LEARNING_RATES if learning_rates is None else learning_rates
    decays = WEIGHT_DECAYS if weight_decays is None else weight_decays
    rates = [float(rate) for rate in rates]
    decays = [float(decay) for decay in decays]
    if not rates or not all(rate > 0 for rate in rates):
        raise ValueError(f"learning rates must be a non-empty list of values > 0; received "
                         f"{rates!r}.")
    if not decays or not all(decay >= 0 for decay in decays):
        raise ValueError(f"weight decays must be a non-empty list of values >= 0; received "
                         f"{decays!r}.")
    return [(rate, decay, decay / rate) for rate in rates for decay in decays]


def select_best(val_scores):
    """Index of the best validation score; ties go to the first (grid order).

    Args:
        val_scores: 1-D floats, one per grid point.

    Returns:
        Python int.
    """
    val_scores = np.asarray(val_scores, dtype=np.float64)
    if val_scores.ndim != 1 or val_scores.size == 0:
        raise ValueError(f"val_scores must be a non-empty 1-D list; received shape "
                         f"{val_scores.shape}.")
    return int(np.flatnonzero(val_scores == np.nanmax(val_scores))[0])


def grid_search(encoder, train_data, val_data, grid, *, metric, num_classes, num_train_examples,
                steps, batch_size, multilabel=False, seed=0, eval_batch_size=256, log=None):
    """Fine-tunes from the same pretrained weights at every grid point; scores validation.

    The encoder's weights (batch-norm statistics included) are saved first and restored before
    every point and at the end, so the encoder leaves as it came in (bar its batch-norm momentum).

    Args:
        encoder: Keras model, float [B, S, S, C] -> features [B, F], holding pretrained weights.
        train_data: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`.
        val_data: same, the validation split.
        grid: list of `(learning_rate, weight_decay, ...)` tuples (`make_grid`).
        metric: one of `metrics.METRICS`.
        num_classes, num_train_examples, steps, batch_size, multilabel, seed: as for `finetune`.
        eval_batch_size: Python int, batch of the validation pass.
        log: optional callable taking one progress line.

    Returns:
        (list of `GridPoint` in grid order, index of the best by `select_best`).
    """
    metrics.check_metric(metric)
    pretrained = encoder.get_weights()
    points = []
    try:
        for learning_rate, weight_decay, *_ in grid:
            encoder.set_weights(pretrained)
            result = finetune(encoder, train_data, num_classes=num_classes,
                              num_train_examples=num_train_examples,
                              learning_rate=learning_rate, weight_decay=weight_decay,
                              steps=steps, batch_size=batch_size, multilabel=multilabel,
                              seed=seed)
            scores, targets = classifier_scores(result.model, val_data,
                                                int(encoder.input_shape[1]), eval_batch_size)
            point = GridPoint(learning_rate=float(learning_rate),
                              weight_decay=float(weight_decay),
                              optimizer_weight_decay=float(result.optimizer.l2_weight_decay),
                              val_score=metrics.score(metric, targets, scores),
                              final_loss=float(result.step_losses[-1]))
            points.append(point)
            if log is not None:
                log(f"  lr {point.learning_rate:.3g} wd {point.weight_decay:.3g}: validation "
                    f"{metric} {point.val_score:.4f}")
    finally:
        encoder.set_weights(pretrained)
    return points, select_best([point.val_score for point in points])
