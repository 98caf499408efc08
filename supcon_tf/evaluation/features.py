"""Frozen features: how every protocol gets them from an encoder, and how probes check them.

One path from images to features serves every caller (the linear probes, kNN, few-shot, the
transfer protocol, fine-tuning's scores, the kNN monitor, the quickstart):

* `embed_function(encoder)`: a callable images float32 `[B, S, S, C]` in [0, 1] -> float32
  features `[B, F]`. A Keras encoder is traced once (`tf.function`, inference mode: batch norm
  uses its moving statistics) and cached per encoder; any other callable (the SavedModel's
  `embed` signature of `export.load_embed`, a classifier's `predict_on_batch`) is used as given.
* `eval_pipeline(dataset, image_size, batch_size, crop_fraction)`: the evaluation transform
  (short side resized, bicubic, centre crop; no augmentation), batched in input order.
* `embed_batches(function, batches)`: the function applied to every batch, outputs and targets
  stacked as numpy arrays.
* `extract_features(embed, dataset, ...)`: the two above on a split of `(image uint8, target)`.
* `embed_images(model, images)`: features of a numpy stack of images already at the encoder's
  size (uint8 or float).

The encoder is called directly, never `Model.predict`, which under a distribution strategy
splits a batch over the replicas and returns every replica's rows: the same code serves one
device, mirrored replicas and every worker of a multi-worker run.

The rest checks the numpy inputs every probe takes (`check_features`, `check_class_ids`,
`check_multilabel`, `check_positive_int`) and L2-normalises rows (`l2_normalize`).
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from supcon_tf.data import augment
from supcon_tf.evaluation import metrics

_EMBED_FUNCTIONS = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------------------------
# images -> features


def embed_function(encoder):
    """The frozen-encoder embed function of `encoder`.

    Args:
        encoder: a Keras model (or a model with an `.encoder`, e.g. a `SupConModel`) mapping
            images float32 [B, S, S, C] in [0, 1] to features [B, F]; or any other callable of
            that signature (returned unchanged, e.g. `export.load_embed`'s).

    Returns:
        A callable images float32 [B, S, S, C] -> float32 [B, F]; for a Keras model a
        `tf.function` calling it with `training=False`, made once per encoder.
    """
    encoder = getattr(encoder, "encoder", encoder)
    if not isinstance(encoder, keras.Model):
        return encoder
    if encoder not in _EMBED_FUNCTIONS:
        _EMBED_FUNCTIONS[encoder] = tf.function(
            lambda images: tf.cast(encoder(images, training=False), tf.float32),
            reduce_retracing=True)
    return _EMBED_FUNCTIONS[encoder]


def eval_pipeline(dataset, image_size, batch_size, crop_fraction=None):
    """Resize the short side to `image_size / crop_fraction` (bicubic), centre crop, batch.

    Args:
        dataset: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`.
        image_size: Python int S.
        batch_size: Python int B.
        crop_fraction: Python float in (0, 1]: 1.0 is the linear probe's "resize to S, crop S",
            224 / 256 the fine-tuning "resize to 256, crop 224" scaled to S; None the eval
            augmenter's own default.

    Returns:
        A finite `tf.data.Dataset` of `(images float32 [B, S, S, C] in [0, 1], targets)` in
        input order.
    """
    options = {} if crop_fraction is None else {"center_crop_fraction": crop_fraction}
    resize = augment.build_augmenter("eval", image_size, **options)
    return dataset.map(lambda image, target: (resize(image), target),
                       num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
                           tf.data.AUTOTUNE)


def embed_batches(function, batches):
    """Applies `function` to every batch of images and stacks the outputs and targets.

    Args:
        function: callable float32 [B, S, S, C] -> float [B, D] (`embed_function(...)`, a
            classifier's `predict_on_batch`); called once per batch.
        batches: `tf.data.Dataset` of `(images [B, S, S, C], targets)` (`eval_pipeline`).

    Returns:
        (outputs float32 [N, D], targets int64 [N] or [N, num_classes]) as numpy arrays.

    Raises:
        ValueError: the dataset is empty.
    """
    outputs, targets = [], []
    for images, batch_targets in batches:
        outputs.append(np.asarray(function(images), dtype=np.float32))
        targets.append(batch_targets.numpy())
    if not outputs:
        raise ValueError("the split is empty (no batches); check that it holds images.")
    return np.concatenate(outputs), np.concatenate(targets).astype(np.int64)


def extract_features(embed, dataset, image_size, batch_size, crop_fraction=None):
    """Features (or any per-image outputs) and targets of a split through the eval transform.

    Args:
        embed: a Keras encoder or a callable float32 [B, S, S, C] -> float [B, F]
            (see `embed_function`).
        dataset: `tf.data.Dataset` of `(image uint8 [H, W, C], target)`.
        image_size: Python int S.
        batch_size: Python int.
        crop_fraction: Python float in (0, 1], or None for the eval augmenter's default.

    Returns:
        (features float32 [N, F], targets int64 [N] or [N, num_classes]).

    Raises:
        ValueError: the split is empty.
    """
    return embed_batches(embed_function(embed),
                         eval_pipeline(dataset, image_size, batch_size, crop_fraction))


def embed_images(model, images, batch_size=256):
    """The features of a stack of images at the encoder's input size, on this process alone.

    Args:
        model: a Keras encoder, a model with an `.encoder` (`SupConModel`), or an embed callable
            (see `embed_function`), taking float images in [0, 1].
        images: float `[N, S, S, C]` in [0, 1], or uint8 `[N, S, S, C]` in [0, 255] (converted
            one batch at a time, so a large held-out set can be kept as uint8).
        batch_size: Python int, images per batch.

    Returns:
        numpy float32 `[N, F]`.
    """
    embed = embed_function(model)
    batches = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        batch = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 else batch
        batches.append(np.asarray(embed(tf.constant(batch, tf.float32)), np.float32))
    return np.concatenate(batches)


# ----------------------------------------------------------------------------------------------
# the numpy inputs of the probes


def check_features(features, name):
    """`features` as float64 [num_samples > 0, dim], finite.

    Raises:
        ValueError: another rank, no rows, or NaN / inf values (naming `name`).
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"{name} must be float [num_samples > 0, dim]; received shape "
                         f"{features.shape}. Flatten or pool the encoder output first.")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} holds NaN or inf values; check the encoder output.")
    return features.astype(np.float64, copy=False)


def check_class_ids(labels, num_samples, name):
    """`labels` as int64 [num_samples] of class ids >= 0.

    Raises:
        ValueError: another shape, a non-integer dtype or a negative id (naming `name`).
    """
    labels = np.asarray(labels)
    if labels.shape != (num_samples,):
        raise ValueError(f"{name} must be int [num_samples={num_samples}]; received shape "
                         f"{labels.shape}. Pass one class id per feature row.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{name} must hold class ids >= 0; received dtype {labels.dtype}, "
                         f"minimum {labels.min()}. Pass integer labels.")
    return labels.astype(np.int64)


def check_multilabel(targets, num_samples, name):
    """`targets` as int64 [num_samples, num_classes] of 1 / 0 / `metrics.IGNORE`.

    Raises:
        ValueError: another shape or another value (naming `name`).
    """
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != num_samples:
        raise ValueError(f"{name} must be int [num_samples={num_samples}, num_classes] of 1 / 0 / "
                         f"{metrics.IGNORE}; received shape {targets.shape}.")
    bad = ~np.isin(targets, (1, 0, metrics.IGNORE))
    if np.any(bad):
        raise ValueError(f"{name} must hold only 1, 0 or {metrics.IGNORE}; received "
                         f"{targets[bad][0].item()!r}. Mark difficult-only labels with {metrics.IGNORE}.")
    return targets.astype(np.int64)


def check_positive_int(name, value, fix):
    """`value` as a Python int > 0.

    Raises:
        ValueError: a bool, a non-integer or a value <= 0 (naming `name`, then `fix`).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int; received {value!r}. {fix}")
    return int(value)


def check_same_dim(reference, other, reference_name, other_name):
    """Raises ValueError unless the feature matrices `reference` and `other` share their dim."""
    if other.shape[1] != reference.shape[1]:
        raise ValueError(f"{other_name} must have {reference_name}'s dim {reference.shape[1]}; "
                         f"received {other.shape[1]}. Extract all splits with the same encoder.")


def l2_normalize(features, epsilon=1e-12):
    """Rows divided by their L2 norm (a zero row stays zero).

    Args:
        features: float [num_samples, dim].
        epsilon: floor on the norm.

    Returns:
        float64 [num_samples, dim] with unit rows.
    """
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, epsilon)
