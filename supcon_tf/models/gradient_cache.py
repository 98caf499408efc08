"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): a contrastive step over a big batch in the memory of a small one.

The loss couples every sample of the batch, so the batch cannot simply be split into
micro-batches whose gradients are summed. It can be split at the encoder, whose output per sample
depends only on that sample (when no layer looks across the batch):

1. Encode the batch in k chunks of samples without recording activations (no tape): only the
   features `[V*B, F]` are kept.
2. Run the heads and the loss on the whole batch with a tape, and take the gradient of the loss
   with respect to the features, `G = dL/dfeatures` (and the heads' own weight gradients).
3. Re-encode each chunk with a tape and back-propagate its rows of `G`: by the chain rule the
   encoder's gradient is `sum_chunks J_chunk^T G_chunk`, the gradient of the whole-batch step.

Peak activation memory is that of one chunk; the price is a second encoder forward pass.

Batch-dependent layers: each chunk is a batch of its own, so batch normalisation in training
mode normalises every chunk with that chunk's statistics, exactly as unsynchronised replicas
each normalise their share (the weights after a step equal those of a k-replica run without sync
BN). The moving statistics are updated once per chunk, in chunk order (k moving-average updates
per step): the encoder's non-trainable state (moving statistics, random-layer seeds) is saved
before the first pass and restored after it, so the re-encoding pass sees the same state, draws
the same dropout masks and makes the only updates.

Samples are split, not rows: a chunk holds every view of its samples, `[b, V, ...]`, encoded
view-major `[V*b, ...]`; chunk sizes differ by at most one (`B // k` or `B // k + 1`).
"""

import keras
from keras import ops


def check_chunks(gradient_chunks):
    """Raises ValueError unless `gradient_chunks` is an int >= 1."""
    if isinstance(gradient_chunks, bool) or not isinstance(gradient_chunks, int) or (
            gradient_chunks < 1):
        raise ValueError(
            f"gradient_chunks must be an int >= 1 (1: no chunking), got {gradient_chunks!r}.")


def chunk_bounds(batch, gradient_chunks):
    """`[(start, stop)]` of `gradient_chunks` consecutive sample ranges covering `[0, batch)`.

    Args:
        batch: The batch size B, a Python int or a scalar int tensor (dynamic batch).
        gradient_chunks: k, a Python int.

    Returns:
        k pairs `(floor(c*B/k), floor((c+1)*B/k))`: sizes differ by at most one.

    Raises:
        ValueError: a static batch smaller than k (some chunk would be empty).
    """
    if isinstance(batch, int) and batch < gradient_chunks:
        raise ValueError(
            f"gradient_chunks={gradient_chunks} needs at least that many samples per batch "
            f"(per replica), got {batch}: lower gradient_chunks or raise the batch size.")
    cuts = [(c * batch) // gradient_chunks for c in range(gradient_chunks + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def merge_chunks(chunk_features, num_views):
    """View-major features of the whole batch from those of its sample chunks.

    Args:
        chunk_features: k tensors `[V*b_c, F]`, each view-major over its chunk's samples.
        num_views: V.

    Returns:
        `[V*B, F]`, view-major over the batch (view 0 of every sample first).
    """
    per_view = [ops.reshape(f, (num_views, -1, f.shape[-1])) for f in chunk_features]
    merged = ops.concatenate(per_view, axis=1)  # [V, B, F]
    return ops.reshape(merged, (-1, merged.shape[-1]))


def chunk_rows(features, num_views, start, stop):
    """The rows `[V*b, F]` of samples `[start, stop)` in view-major features `[V*B, F]`."""
    per_view = ops.reshape(features, (num_views, -1, features.shape[-1]))
    return ops.reshape(per_view[:, start:stop], (-1, features.shape[-1]))


def _nonempty(size, encode, empty):
    """`encode()`, or `empty()` when a dynamic chunk has no samples (a batch smaller than k,
    e.g. an epoch's last batch): batch norm of an empty batch would write NaN statistics."""
    if isinstance(size, int):
        return encode() if size > 0 else empty()
    import tensorflow as tf

    return tf.cond(size > 0, encode, empty)


def tf_cached_gradients(model, views, step_loss):
    """Loss and gradients of one step, the encoder run in `model.gradient_chunks` chunks.

    TensorFlow (tape) implementation; the JAX step has its own (`supcon_tf.models.jax_step`).

    Args:
        model: The `SupConModel` (its `encoder`, `_encode_views`, `trainable_weights`,
            `optimizer`, `gradient_chunks`).
        views: float `[B, V, ...]` multi-view batch.
        step_loss: `step_loss(features [V*B, F]) -> (loss, scaled_loss)`, float32 scalars: the
            whole-batch loss (heads included) and the value to differentiate (scaled for the
            replicas and the loss scale).

    Returns:
        `(loss, gradients)`: the float32 loss and one gradient (or None) per
        `model.trainable_weights`, equal to those of one tape over the unchunked step.
    """
    import tensorflow as tf

    num_views = views.shape[1]
    batch = views.shape[0] if views.shape[0] is not None else tf.shape(views)[0]
    bounds = chunk_bounds(batch, model.gradient_chunks)
    feature_dim = model.encoder.output_shape[-1]
    dtype = model.encoder.compute_dtype

    def empty():
        return tf.zeros((0, feature_dim), dtype)

    def encode(start, stop, after):
        # Chained on the previous chunk's result so that the graph runs chunks one at a time
        # (concurrent chunks would hold all their activations at once).
        with tf.control_dependencies(after):
            chunk = tf.identity(views[start:stop])
        return _nonempty(stop - start, lambda: model._encode_views(chunk, training=True), empty)

    # 1. Features of every chunk, no tape; the encoder state is put back for the second pass.
    state = model.encoder.non_trainable_variables
    saved = [tf.identity(v.value) for v in state]
    chunk_features, after = [], []
    for start, stop in bounds:
        features = tf.stop_gradient(encode(start, stop, after))
        chunk_features.append(features)
        after = [features]
    with tf.control_dependencies(after):
        for variable, value in zip(state, saved):
            variable.assign(value)
    features = merge_chunks(chunk_features, num_views)

    # 2. Heads and loss on the whole batch: dL/dfeatures and the heads' gradients.
    encoder_ids = {id(v) for v in model.encoder.trainable_weights}
    others = [v for v in model.trainable_weights if id(v) not in encoder_ids]
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss, scaled = step_loss(features)
    feature_gradient, *other_gradients = tape.gradient(scaled, [features] + others)

    # 3. Re-encode each chunk and back-propagate its rows of the cached gradient.
    encoder_weights = model.encoder.trainable_weights
    encoder_gradients = [None] * len(encoder_weights)
    after = [feature_gradient]
    for start, stop in bounds:
        with tf.GradientTape() as tape:
            features = encode(start, stop, after)
        gradients = tape.gradient(
            features, encoder_weights,
            output_gradients=chunk_rows(feature_gradient, num_views, start, stop))
        encoder_gradients = [g if total is None else (total if g is None else total + g)
                             for total, g in zip(encoder_gradients, gradients)]
        after = [g for g in gradients if g is not None]

    by_id = dict(zip(map(id, others), other_gradients))
    by_id.update(zip(map(id, encoder_weights), encoder_gradients))
    return loss, [by_id[id(v)] for v in model.trainable_weights]
