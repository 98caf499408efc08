"""Contrastive losses: SupCon (Khosla et al., 2020) and the baselines the paper compares with.

Every loss is written twice, as Keras does: a function that does the math and returns one value
per sample (float32 `[batch]`), and a thin registered `keras.losses.Loss` that averages it over
the batch and round-trips through `get_config`.

The per-step math is written in `keras.ops`, so it runs on every Keras 3 backend (the GPU
benchmarks run it under JAX). The one TensorFlow-specific piece, the cross-replica gather, lives in
`supcon_tf.distribute`: inside a `tf.distribute` replica context with several replicas each loss
contrasts the local anchors against the *global* batch, with exact gradients, so per-sample losses
and gradients equal the single-device computation over the whole batch.

Layout. Features arrive as `[batch, views, dim]`. Inside, the views are laid out view-major:
anchor row `v * local_batch + i` is view `v` of local sample `i`, contrast column
`v * global_batch + j` is view `v` of global sample `j`. This replica's sample `i` is global
sample `offset + i`.

Numerics. Everything runs in float32 whatever the input dtype (fp16/bf16 inputs are cast first).
Log-sum-exps subtract their row maximum under `stop_gradient` (the maximum only shifts the value
and must not receive gradient), and masked entries are excluded with `where` before `exp`, so no
anchor produces NaN or Inf: an anchor with no positive (a one-view sample whose label is unique in
the batch) has an undefined loss and contributes 0, as does an anchor whose denominator is empty
(`denominator="only_negatives"` in a batch with a single label).

Multi-label SupCon. Labels `[batch, num_classes]` with more than one column are label sets
(multi-hot; one-hot rows are the special case of one label each). A pair's positive weight is
the Jaccard similarity of the two sets, `w_ij = |y_i & y_j| / |y_i | y_j|` (a sample's own other
views weigh 1; two empty sets weigh 0), and anchor i's loss is `-sum_j w_ij log p_ij / sum_j w_ij`
with the usual softmax `p_ij` over every other entry. One-hot rows give weights in {0, 1} and
so the integer-label loss.
"""

import math

import keras
from keras import ops

from supcon_tf import distribute

CONTRAST_MODES = ("all_views", "one_view")
SUMMATIONS = ("outside", "inside")
DENOMINATORS = ("all", "one_positive", "only_negatives")
TRIPLET_MININGS = ("semi_hard", "batch_hard")


# ----------------------------------------------------------------------------------------------
# Input validation and the global batch.
# ----------------------------------------------------------------------------------------------


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}; use one of: {', '.join(repr(c) for c in choices)}.")


def _check_positive(name, value):
    if isinstance(value, (int, float)) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def _concrete(tensor):
    """Returns the numpy value of `tensor` when it is concrete (eager), else None."""
    try:
        return ops.convert_to_numpy(tensor)
    except Exception:  # Symbolic tensor inside a traced function: no value to check.
        return None


def _prepare_features(features):
    """Validates features and returns them as float32 `[batch, views, dim]`.

    Args:
        features: float `[batch, views, dim, ...]`; trailing dims after `views` are flattened.

    Returns:
        `(features, num_views)`: float32 `[batch, views, dim]` and the static view count.
    """
    features = ops.convert_to_tensor(features)
    shape = tuple(features.shape)
    if len(shape) < 3:
        raise ValueError(
            f"features must be [batch, num_views, dim], got shape {shape}: add the views axis "
            "(e.g. features[:, None, :] for one view, or stack the views on axis 1).")
    num_views = shape[1]
    if num_views is None or num_views < 1:
        raise ValueError(
            f"features need a static number of views >= 1 on axis 1, got shape {shape}.")
    features = ops.cast(features, "float32")
    if len(shape) > 3:
        dim = math.prod(shape[2:]) if None not in shape[2:] else -1
        features = ops.reshape(features, (-1, num_views, dim))
    return features, num_views


def class_ids(labels, batch_size=None):
    """Validates labels and returns them as int32 `[batch]` class ids (None stays None).

    Args:
        labels: None, int (or integral float) `[batch]` or `[batch, 1]`, or one-hot
            `[batch, num_classes]`.
        batch_size: The expected batch size, or None (not checked).

    Returns:
        int32 `[batch]`, or None.

    Raises:
        ValueError: labels of rank 0 or > 2, of another batch size, or one-hot rows that are
            not one-hot (checked when the values are concrete).
    """
    if labels is None:
        return None
    labels = ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) == 0 or len(shape) > 2:
        raise ValueError(
            f"labels must be [batch], [batch, 1] or one-hot [batch, num_classes], got shape "
            f"{shape}: flatten them to one class id per sample.")
    _check_batch_size(shape, batch_size, "label")
    if len(shape) == 2 and shape[1] != 1:
        _check_binary_rows(labels, "one-hot", "pass int class ids of shape [batch] or exact "
                           "one-hot rows.", exactly_one=True)
        return ops.cast(ops.argmax(labels, axis=1), "int32")
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def _check_batch_size(shape, batch_size, what):
    if shape[0] is not None and batch_size is not None and shape[0] != batch_size:
        raise ValueError(
            f"labels have batch size {shape[0]} but features have {batch_size}: pass one {what} "
            "per sample (not one per view).")


def _check_binary_rows(labels, read_as, fix, exactly_one=False):
    """Raises a ValueError naming the first row of `labels` `[batch, C]` that is not 0 / 1
    (or, `exactly_one`, not one-hot). Checked only when the values are concrete (eager)."""
    value = _concrete(labels)
    if value is None:
        return
    rows_ok = ((value == 0) | (value == 1)).all(axis=1)
    if exactly_one:
        rows_ok &= value.sum(axis=1) == 1
    if not rows_ok.all():
        bad = int((~rows_ok).argmax())
        raise ValueError(f"labels of shape {tuple(labels.shape)} are read as {read_as}, but row "
                         f"{bad} is {value[bad].tolist()}: {fix}")


def is_multi_hot(labels):
    """Whether `labels` are label sets `[batch, num_classes > 1]` (multi-hot or one-hot rows).

    Decided by the static shape only, so it is the same eager and traced.
    """
    if labels is None:
        return False
    shape = tuple(ops.convert_to_tensor(labels).shape)
    return len(shape) == 2 and shape[1] != 1


def multi_hot(labels, batch_size=None):
    """Validates label sets and returns them as float32 `[batch, num_classes]` of 0 / 1.

    Args:
        labels: int or float `[batch, num_classes]`, 1 where the sample has the class and 0
            where not (several ones per row, or none). Targets with an "ignore" value (VOC's -1
            for difficult-only classes) must be mapped first; `supcon_tf.data.multilabel` maps
            it to 0 (absent).
        batch_size: The expected batch size, or None (not checked).

    Returns:
        float32 `[batch, num_classes]`.

    Raises:
        ValueError: another rank or batch size, or (when the values are concrete) an entry
            that is not 0 or 1.
    """
    labels = ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) != 2:
        raise ValueError(
            f"multi-hot labels must be [batch, num_classes], got shape {shape}.")
    _check_batch_size(shape, batch_size, "label set")
    _check_binary_rows(labels, "multi-hot label sets", "entries must be 0 or 1 (map ignore "
                       "targets such as VOC's -1 to 0), or pass int class ids of shape [batch].")
    return ops.cast(labels, "float32")


def jaccard_weights(row_sets, column_sets):
    """Pairwise Jaccard similarities of two lists of label sets.

        w_ij = |y_i & y_j| / |y_i | y_j| = y_i . y_j / (|y_i| + |y_j| - y_i . y_j)

    0 when both sets are empty (no NaN). Counts are exact in float32 below 2**24 classes.

    Args:
        row_sets: float32 `[rows, num_classes]` of 0 / 1.
        column_sets: float32 `[cols, num_classes]` of 0 / 1.

    Returns:
        float32 `[rows, cols]` in [0, 1].
    """
    intersection = ops.matmul(row_sets, ops.transpose(column_sets))
    union = (ops.sum(row_sets, axis=1)[:, None] + ops.sum(column_sets, axis=1)[None, :]
             - intersection)
    return ops.divide_no_nan(intersection, union)


def _own_sample(local_batch, global_batch, offset):
    """bool `[local_batch, global_batch]`: True at each local sample's own global index."""
    return ops.equal(
        ops.arange(global_batch, dtype="int32")[None, :],
        ops.arange(local_batch, dtype="int32")[:, None] + offset)


def _global_batch(features, labels):
    """Gathers features and labels (class ids or label sets) over replicas.

    Args:
        features: float32 `[local_batch, views, dim]`.
        labels: int32 `[local_batch]`, float32 multi-hot `[local_batch, num_classes]`, or None
            (every sample its own class).

    Returns:
        `(global_features, local_ids, global_ids, offset)`: float32 `[global_batch, views, dim]`,
        the local and global labels (int32 `[local_batch]` / `[global_batch]` class ids -- the
        global sample index when labels are None, so ids never collide across replicas -- or
        float32 `[local_batch, num_classes]` / `[global_batch, num_classes]` label sets), and
        this replica's first global row.
    """
    if labels is None:
        (global_features,), offset = distribute.gather_global(features)
        local_ids = ops.arange(ops.shape(features)[0], dtype="int32") + offset
        global_ids = ops.arange(ops.shape(global_features)[0], dtype="int32")
    else:
        (global_features, global_ids), offset = distribute.gather_global(features, labels)
        local_ids = labels
    # all_gather loses the static shape; the views axis must stay static.
    global_features = ops.reshape(
        global_features, (-1, features.shape[1], ops.shape(features)[2]))
    return global_features, local_ids, global_ids, offset


def _prepare_memory(memory_features, memory_labels, features, labels, positives_cap):
    """Validates memory keys; returns None or `(keys, key_labels or None, valid)`.

    Args:
        memory_features: None or float `[memory, dim]`.
        memory_labels: int `[memory]` class ids, -1 for empty slots; or multi-hot
            `[memory, num_classes]` label sets, rows of -1 for empty slots.
        features: float32 `[batch, views, dim]`.
        labels: int32 `[batch]`, float32 multi-hot `[batch, num_classes]`, or None.
        positives_cap: int.

    Returns:
        None, or float32 `[memory, dim]` keys (no gradient), the keys' labels in the form of
        `labels` (int32 `[memory]` or float32 `[memory, num_classes]`, empty slots 0; None
        without labels: keys are then only negatives) and bool `[memory]` filled slots.
    """
    if memory_features is None:
        if memory_labels is not None:
            raise ValueError("memory_labels were given without memory_features: pass both.")
        return None
    keys = ops.stop_gradient(ops.cast(ops.convert_to_tensor(memory_features), "float32"))
    if len(keys.shape) != 2 or keys.shape[1] != features.shape[2]:
        raise ValueError(
            f"memory_features must be [memory, {features.shape[2]}] like the features' last "
            f"dim, got shape {tuple(keys.shape)}.")
    if memory_labels is None:
        raise ValueError(
            "memory_features need memory_labels [memory] (class ids, -1 for empty slots).")
    if positives_cap != -1:
        raise ValueError(
            "positives_cap is not supported with a memory queue: use positives_cap=-1.")
    key_labels = ops.convert_to_tensor(memory_labels)
    key_sets = is_multi_hot(key_labels)
    if labels is not None and key_sets != (len(labels.shape) == 2):
        raise ValueError(
            f"memory_labels of shape {tuple(key_labels.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}: a queue of class ids [memory] goes with int labels "
            "[batch], one of label sets [memory, num_classes] with multi-hot labels.")
    if key_sets:
        if labels is not None and key_labels.shape[1] != labels.shape[1]:
            raise ValueError(
                f"memory_labels have {key_labels.shape[1]} classes but labels have "
                f"{labels.shape[1]}: store the same label sets in the queue.")
        key_labels = ops.cast(key_labels, "float32")
        valid = ops.all(key_labels >= 0, axis=1)
        key_labels = ops.where(valid[:, None], key_labels, 0.0)
    else:
        key_labels = ops.cast(ops.reshape(key_labels, (-1,)), "int32")
        valid = key_labels >= 0
    return keys, (key_labels if labels is not None else None), valid


def _view_major(features):
    """float `[batch, views, dim]` -> `[views * batch, dim]`, row `v * batch + i`."""
    return ops.reshape(ops.transpose(features, (1, 0, 2)), (-1, ops.shape(features)[2]))


def _masked_logsumexp(x, mask):
    """Row-wise log-sum-exp over the entries where `mask` is True.

    Args:
        x: float32 `[rows, cols]`.
        mask: bool `[rows, cols]`.

    Returns:
        `(lse, nonempty)`: float32 `[rows]` (0 for empty rows, never -inf) and bool `[rows]`.
    """
    # The row max only shifts the value: stop_gradient keeps it out of the gradient, and masked
    # entries become -inf *before* exp so neither the value nor its gradient sees an overflow.
    row_max = ops.max(ops.where(mask, x, -math.inf), axis=1, keepdims=True)
    row_max = ops.stop_gradient(ops.where(ops.isfinite(row_max), row_max, 0.0))
    total = ops.sum(ops.exp(ops.where(mask, x - row_max, -math.inf)), axis=1)
    nonempty = ops.any(mask, axis=1)
    lse = ops.squeeze(row_max, 1) + ops.log(ops.where(nonempty, total, 1.0))
    return lse, nonempty


def _dense_class_ids(ids):
    """Maps arbitrary int class ids to dense ids in `[0, len(ids))`, equal iff the ids are equal.

    Args:
        ids: int32 `[n]`.

    Returns:
        int32 `[n]`. O(n log n); no `[n, n]` comparison.
    """
    order = ops.argsort(ids)
    sorted_ids = ops.take(ids, order)
    starts = ops.cast(ops.not_equal(sorted_ids[1:], sorted_ids[:-1]), "int32")
    rank_sorted = ops.cumsum(ops.concatenate([ops.zeros((1,), "int32"), starts]))
    return ops.take(rank_sorted, ops.argsort(order))


# ----------------------------------------------------------------------------------------------
# SupCon.
# ----------------------------------------------------------------------------------------------


def _self_columns(num_anchors, local_batch, global_batch, offset):
    """Contrast column of each anchor's own view.

    Anchor `v * local_batch + i` is contrast column `v * global_batch + offset + i`.

    Returns:
        int32 `[num_anchors]`.
    """
    rows = ops.arange(num_anchors, dtype="int32")
    return (rows // local_batch) * global_batch + offset + rows % local_batch


def _logsumexp_over_others(anchors, contrast, self_columns, temperature, keys=None,
                           keys_valid=None):
    """log sum_{a in A(i)} exp(z_i . z_a / tau) for every anchor, A(i) = all contrast but itself.

    Builds no positives mask: only the anchor's own column (and empty memory slots) are set to
    -inf, and the gradient is written by hand so the backward pass is the two matrix products
    it must be, with no elementwise pass over the `[anchors, contrast]` matrix (softmax rows are
    the saved exponentials divided by their row sums, and that per-row factor is applied to the
    `[*, dim]` operands instead).

    Args:
        anchors: float32 `[num_anchors, dim]`, view-major.
        contrast: float32 `[views * global_batch, dim]`, view-major.
        self_columns: int32 `[num_anchors]`, each anchor's own contrast column.
        temperature: float > 0.
        keys: Optional float32 `[memory, dim]` memory keys appended to the contrast set; they
            receive no gradient.
        keys_valid: bool `[memory]`, False for empty memory slots (left out of A(i)).

    Returns:
        float32 `[num_anchors]`.
    """
    inv_temperature = 1.0 / temperature
    num_batch_columns = ops.shape(contrast)[0]

    @ops.custom_gradient
    def logsumexp(*tensors):
        anchors, contrast = tensors[:2]
        everything = contrast if keys is None else ops.concatenate([contrast, tensors[2]], 0)
        logits = ops.matmul(anchors * inv_temperature, ops.transpose(everything))
        # The anchor's own column becomes -inf. A broadcast comparison + where lets TensorFlow
        # reuse the logits buffer (a scatter would copy the whole matrix).
        excluded = ops.equal(
            ops.arange(ops.shape(everything)[0], dtype="int32")[None, :], self_columns[:, None])
        if keys is not None:
            empty = ops.concatenate(
                [ops.zeros((num_batch_columns,), "bool"), ops.logical_not(keys_valid)], 0)
            excluded = ops.logical_or(excluded, empty[None, :])
        logits = ops.where(excluded, -math.inf, logits)
        # Shift by the row max (value only) so exp never overflows, even for tau = 0.01.
        row_max = ops.max(logits, axis=1)
        row_max = ops.where(ops.isfinite(row_max), row_max, 0.0)
        exp = ops.exp(logits - row_max[:, None])
        total = ops.sum(exp, axis=1)
        value = row_max + ops.log(total)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # d lse_i / d logit_ij = exp_ij / total_i.
            row_scale = ops.divide_no_nan(upstream, total) * inv_temperature
            d_anchors = row_scale[:, None] * ops.matmul(exp, everything)
            batch_exp = exp if keys is None else exp[:, :num_batch_columns]
            # (exp^T @ scaled)^T computed as scaled^T @ exp: only [*, dim] factors are
            # transposed, never the [anchors, contrast] matrix (no second copy of it).
            d_contrast = ops.transpose(
                ops.matmul(ops.transpose(row_scale[:, None] * anchors), batch_exp))
            if keys is None:
                return d_anchors, d_contrast
            return d_anchors, d_contrast, ops.zeros_like(tensors[2])

        return value, grad

    if keys is None:
        return logsumexp(anchors, contrast)
    return logsumexp(anchors, contrast, keys)


def _supcon_default(anchors, global_features, global_ids, self_columns, temperature,
                    memory=None):
    """L_out with denominator "all" and no cap, without any `[anchors, contrast]` mask.

    sum_{p in P(i)} z_i . z_p = z_i . (S_{y_i} - z_i), with S_c the sum of every view of every
    class-c sample (and of every class-c memory key), so the positive term needs only
    per-class sums (segment sums) and the denominator is one log-sum-exp.

    Args:
        anchors: float32 `[num_anchors, dim]`.
        global_features: float32 `[global_batch, views, dim]`.
        global_ids: int32 `[global_batch]` class ids.
        self_columns: int32 `[num_anchors]`, each anchor's own contrast column.
        temperature: float.
        memory: None or `(keys [memory, dim], key_ids [memory] or None, valid [memory])`.

    Returns:
        float32 `[num_anchors]`, unscaled.
    """
    global_batch = ops.shape(global_features)[0]
    num_views = global_features.shape[1]
    contrast = _view_major(global_features)
    keys, key_ids, valid = memory if memory is not None else (None, None, None)
    log_denominator = _logsumexp_over_others(
        anchors, contrast, self_columns, temperature, keys, valid)

    view_sums = ops.sum(global_features, axis=1)  # [global_batch, dim]
    batch_ones = ops.ones_like(global_ids, dtype="float32")
    if key_ids is None:
        dense = _dense_class_ids(global_ids)
        num_segments = global_batch
    else:  # Same-class memory keys are positives too: one dense id space for both.
        dense = _dense_class_ids(ops.concatenate([global_ids, key_ids], 0))
        num_segments = global_batch + ops.shape(key_ids)[0]
    dense_global = dense[:global_batch]
    dense_anchor = ops.take(dense_global, self_columns % global_batch)
    class_sums = ops.segment_sum(view_sums, dense_global, num_segments=num_segments)
    class_counts = num_views * ops.segment_sum(
        batch_ones, dense_global, num_segments=num_segments)
    if key_ids is not None:
        weights = ops.cast(valid, "float32")
        dense_keys = dense[global_batch:]
        class_sums = class_sums + ops.segment_sum(
            keys * weights[:, None], dense_keys, num_segments=num_segments)
        class_counts = class_counts + ops.segment_sum(
            weights, dense_keys, num_segments=num_segments)
    positives_sum = ops.take(class_sums, dense_anchor, axis=0) - anchors  # [num_anchors, dim]
    num_positives = ops.take(class_counts, dense_anchor) - 1.0
    mean_positive_logit = ops.divide_no_nan(
        ops.sum(anchors * positives_sum, axis=1) / temperature, num_positives)
    loss = log_denominator - mean_positive_logit
    return ops.where(num_positives > 0, loss, 0.0)


def _supcon_weighted(anchors, global_features, pair_weights, self_columns, temperature,
                     memory=None):
    """L_out with denominator "all" and no cap for weighted positives (multi-label SupCon).

    sum_j w_ij z_i . z_j = z_i . (sum_j w_ij s_j - z_i), with s_j the sum of sample j's views
    (own sample weight 1, so its sum holds the anchor itself, taken out again): the positive
    term is one `[local, global] x [global, dim]` product, with no `[anchors, contrast]` mask.

    Args:
        anchors: float32 `[num_anchors, dim]`, view-major (row `v * local_batch + i`).
        global_features: float32 `[global_batch, views, dim]`.
        pair_weights: float32 `[local_batch, global_batch]`, w_ij (1 on the own sample).
        self_columns: int32 `[num_anchors]`, each anchor's own contrast column.
        temperature: float.
        memory: None or `(keys [memory, dim], key_weights [local_batch, memory] or None,
            valid [memory])`, key weights 0 on empty slots.

    Returns:
        float32 `[num_anchors]`, unscaled; 0 for an anchor whose weights sum to 0.
    """
    num_views = global_features.shape[1]
    keys, key_weights, valid = memory if memory is not None else (None, None, None)
    log_denominator = _logsumexp_over_others(
        anchors, _view_major(global_features), self_columns, temperature, keys, valid)
    weighted_sums = ops.matmul(pair_weights, ops.sum(global_features, axis=1))  # [local, dim]
    total_weights = num_views * ops.sum(pair_weights, axis=1)  # [local]
    if key_weights is not None:
        weighted_sums = weighted_sums + ops.matmul(key_weights, keys)
        total_weights = total_weights + ops.sum(key_weights, axis=1)
    anchor_sample = ops.arange(ops.shape(anchors)[0], dtype="int32") % ops.shape(
        pair_weights)[0]
    positives_sum = ops.take(weighted_sums, anchor_sample, axis=0) - anchors
    # The own view weighs 1 in the total; what is left is sum_j w_ij over j != the anchor.
    total_weight = ops.take(total_weights, anchor_sample) - 1.0
    mean_positive_logit = ops.divide_no_nan(
        ops.sum(anchors * positives_sum, axis=1) / temperature, total_weight)
    loss = log_denominator - mean_positive_logit
    return ops.where(total_weight > 0, loss, 0.0)


def _supcon_masked(anchors, contrast, pair_weights, self_columns, num_views, num_anchor_views,
                   offset, temperature, summation, denominator, positives_cap, memory=None):
    """Every SupCon variant, with explicit `[anchors, contrast]` weights.

    Positives are the pairs of positive weight, each counted with its weight (1 for class ids,
    the Jaccard similarity for label sets); negatives the pairs of weight 0.

    Args:
        anchors: float32 `[num_anchors, dim]`, view-major.
        contrast: float32 `[views * global_batch, dim]`, view-major.
        pair_weights: float32 `[local_batch, global_batch]`, the positive weight of local
            sample i and global sample j (1 on i's own global index; 1 / 0 for class ids).
        self_columns: int32 `[num_anchors]`.
        num_views: int, views per sample in the contrast set.
        num_anchor_views: int, anchor views per sample.
        offset: int32 scalar, this replica's first global sample.
        temperature, summation, denominator, positives_cap: as in `contrastive_loss`.
        memory: None or `(keys [memory, dim], key_weights [local_batch, memory] or None,
            valid [memory])`; key weights are 0 on empty slots (None: every key a negative).

    Returns:
        float32 `[num_anchors]`, unscaled.
    """
    local_batch, global_batch = ops.shape(pair_weights)[0], ops.shape(pair_weights)[1]
    same_class = pair_weights > 0
    if positives_cap >= 0:
        own_sample = _own_sample(local_batch, global_batch, offset)
        # Keep the first positives_cap // num_views other positive samples in global batch
        # order (deterministic); the rest are neither positives nor negatives.
        others = ops.logical_and(same_class, ops.logical_not(own_sample))
        rank = ops.cumsum(ops.cast(others, "int32"), axis=1)
        kept = ops.logical_and(others, rank <= positives_cap // num_views)
        pair_weights = ops.where(ops.logical_or(kept, own_sample), pair_weights, 0.0)
    # [local, global] -> [num_anchor_views * local, views * global] (view-major on both axes).
    weights = ops.tile(pair_weights, (num_anchor_views, num_views))
    negatives = ops.logical_not(ops.tile(same_class, (num_anchor_views, num_views)))
    not_self = ops.not_equal(
        ops.arange(ops.shape(contrast)[0], dtype="int32")[None, :], self_columns[:, None])
    weights = ops.where(not_self, weights, 0.0)
    if memory is not None:  # Memory keys: positives by their weight, negatives at weight 0.
        keys, key_weights, valid = memory
        if key_weights is None:
            key_weights = ops.zeros((local_batch, ops.shape(keys)[0]), "float32")
        other_key = ops.logical_and(ops.equal(key_weights, 0.0), valid[None, :])
        weights = ops.concatenate(
            [weights, ops.tile(key_weights, (num_anchor_views, 1))], axis=1)
        negatives = ops.concatenate(
            [negatives, ops.tile(other_key, (num_anchor_views, 1))], axis=1)
        contrast = ops.concatenate([contrast, keys], axis=0)
    positives = weights > 0

    logits = ops.matmul(anchors, ops.transpose(contrast)) / temperature
    negatives_lse, has_negatives = _masked_logsumexp(logits, negatives)
    if denominator == "all":
        log_denominator, _ = _masked_logsumexp(logits, ops.logical_or(positives, negatives))
        log_denominator = log_denominator[:, None]
        has_denominator = ops.any(positives, axis=1)
    elif denominator == "only_negatives":
        log_denominator = negatives_lse[:, None]
        has_denominator = has_negatives
    elif denominator == "one_positive":
        # Each positive p gets its own denominator exp(z_i.z_p/tau) + sum over negatives.
        log_denominator = ops.where(
            has_negatives[:, None], ops.logaddexp(logits, negatives_lse[:, None]), logits)
        has_denominator = ops.any(positives, axis=1)
    log_prob = logits - log_denominator  # [num_anchors, contrast]

    # Weights of 1 (class ids) make these the plain count, sum and mean of the positives.
    total_weight = ops.sum(weights, axis=1)
    if summation == "outside":  # Eq. 2: (weighted) mean of the log-probabilities.
        loss = -ops.divide_no_nan(
            ops.sum(ops.where(positives, weights * log_prob, 0.0), axis=1), total_weight)
    elif summation == "inside":  # Eq. 3: log of the (weighted) mean probability.
        log_weights = ops.log(ops.where(positives, weights, 1.0))
        positives_lse, _ = _masked_logsumexp(log_prob + log_weights, positives)
        loss = ops.log(ops.where(total_weight > 0, total_weight, 1.0)) - positives_lse
    valid = ops.logical_and(total_weight > 0, has_denominator)
    return ops.where(valid, loss, 0.0)


def contrastive_loss(features, labels=None, *, temperature=0.1, contrast_mode="all_views",
                     summation="outside", denominator="all", positives_cap=-1,
                     scale_by_temperature=True, memory_features=None, memory_labels=None):
    """The SupCon family of losses (Khosla et al., 2020), one value per sample.

    For anchor i with positives P(i) (the other samples of its class and its own other views),
    contrast set A(i) (everything but i) and temperature tau, summation "outside" is Eq. 2:

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )

    and "inside" is Eq. 3, the log of the mean instead of the mean of the logs (L_in <= L_out by
    Jensen; L_out trains much better). The denominator is the sum over A(i) ("all"), over the
    negatives only ("only_negatives"), or for each positive p its own term plus the negatives
    ("one_positive"). With labels None every sample is its own class and this is SimCLR's NT-Xent.

    Multi-label SupCon: with label sets (multi-hot `[batch, num_classes]`) every other entry j
    of A(i) has a positive weight, the Jaccard similarity of the two samples' sets
    `w_ij = |y_i & y_j| / |y_i | y_j|` (1 for i's own other views; 0 between two empty sets),
    and "outside" becomes

        L_i = -sum_{j in A(i)} w_ij log( exp(z_i.z_j/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )
              / sum_{j in A(i)} w_ij

    ("inside": `-log(sum_j w_ij p_ij / sum_j w_ij)`), with the same temperature rescaling. The
    positives are the entries of weight > 0 and the negatives those of weight 0 (no shared
    label), which is what "one_positive", "only_negatives" and the cap count. One-hot rows
    give weights in {0, 1}: the int-label loss. An empty label set shares nothing, so its
    only positives are its own other views.

    The default options (outside, all, no cap) never build an `[anchors, contrast]` mask (per-class
    sums of the positives and one log-sum-exp with a hand-written gradient); the other options
    use explicit masks and cost more (see bench/loss.py).

    Inside a `tf.distribute` replica context with several replicas the features and labels of all
    replicas are gathered: local anchors contrast against the global batch, and per-sample losses
    and gradients equal the single-device computation over the whole batch.

    Args:
        features: float `[batch, views, dim]` (trailing dims after `views` are flattened), any
            float dtype; used as given, so L2-normalise them first (the projection head does).
            Unnormalised features make the logits unbounded and the temperature meaningless.
        labels: None (SimCLR: each sample its own class), int `[batch]` or `[batch, 1]`, or
            label sets `[batch, num_classes]` of 0 / 1 (multi-hot; one-hot rows included).
        temperature: float tau > 0.
        contrast_mode: "all_views" (every view is an anchor) or "one_view" (view 0 only; the
            contrast set still holds every view).
        summation: "outside" (L_out, Eq. 2) or "inside" (L_in, Eq. 3).
        denominator: "all", "one_positive" or "only_negatives".
        positives_cap: at most this many positives per anchor besides its own other views: the
            first `positives_cap // views` other same-class samples (label sets: samples of
            weight > 0, keeping their weights) in global batch order, each with all its views;
            the removed ones leave the denominator too. -1: no cap.
        scale_by_temperature: multiply the loss by tau (the paper's rescaling, which keeps the
            gradient scale independent of tau). There is no other hidden base temperature.
        memory_features: Optional float `[memory, dim]` keys from a memory queue (MoCo-style,
            the rebuttal's memory variant), L2-normalised. They join every anchor's contrast
            set and receive no gradient; with labels, same-class keys are positives.
        memory_labels: int `[memory]` class ids of the keys, -1 for an empty slot (left out
            entirely); with label sets, `[memory, num_classes]` sets, a row of -1 for an empty
            slot, each key weighted by its Jaccard similarity to the anchor. Required with
            `memory_features`; without labels only "-1 = empty" is read and every filled key
            is a negative.

    Returns:
        float32 `[batch]`: each sample's loss averaged over its anchor views. An anchor with no
        positive (a one-view sample alone in its class, or whose label set shares no label
        with any other entry), or with an empty denominator ("only_negatives" in a
        single-class batch), contributes 0.

    Raises:
        ValueError: features without a views axis; labels of another batch size, of rank > 2,
            or label-set entries other than 0 / 1; an unknown mode; temperature <= 0;
            positives_cap < -1; one view without labels (no positive can exist); memory keys
            of another dim, without labels, with a positives cap, or whose labels are not of
            the labels' form.
    """
    _check_choice("contrast_mode", contrast_mode, CONTRAST_MODES)
    _check_choice("summation", summation, SUMMATIONS)
    _check_choice("denominator", denominator, DENOMINATORS)
    _check_positive("temperature", temperature)
    if not isinstance(positives_cap, int) or positives_cap < -1:
        raise ValueError(
            f"positives_cap must be an int >= -1 (-1 = no cap), got {positives_cap!r}.")
    features, num_views = _prepare_features(features)
    label_sets = is_multi_hot(labels)
    if label_sets:
        labels = multi_hot(labels, features.shape[0])
    else:
        labels = class_ids(labels, features.shape[0])
    if num_views == 1 and labels is None:
        raise ValueError(
            "features have one view and labels are None, so no anchor has a positive: pass "
            "labels, or at least two augmented views per sample.")

    memory = _prepare_memory(memory_features, memory_labels, features, labels, positives_cap)
    global_features, local_ids, global_ids, offset = _global_batch(features, labels)
    num_anchor_views = num_views if contrast_mode == "all_views" else 1
    local_batch = ops.shape(features)[0]
    global_batch = ops.shape(global_features)[0]
    anchors = _view_major(features[:, :num_anchor_views])
    self_columns = _self_columns(num_anchor_views * local_batch, local_batch, global_batch, offset)
    default = summation == "outside" and denominator == "all" and positives_cap == -1

    if default and not label_sets:
        loss = _supcon_default(
            anchors, global_features, global_ids, self_columns, temperature, memory)
    else:
        # [local, global] positive weights: Jaccard similarities of label sets (the own sample
        # 1, even for an empty set), or 1 / 0 for the same / another class id.
        if label_sets:
            pair_weights = ops.where(_own_sample(local_batch, global_batch, offset), 1.0,
                                     jaccard_weights(local_ids, global_ids))
        else:
            pair_weights = ops.cast(ops.equal(local_ids[:, None], global_ids[None, :]),
                                    "float32")
        if memory is not None:  # [local, memory] key weights, 0 on empty slots.
            keys, key_labels, valid = memory
            key_weights = None
            if key_labels is not None:
                key_weights = (jaccard_weights(local_ids, key_labels) if label_sets else
                               ops.cast(ops.equal(local_ids[:, None], key_labels[None, :]),
                                        "float32"))
                key_weights = ops.where(valid[None, :], key_weights, 0.0)
            memory = (keys, key_weights, valid)
        if default:
            loss = _supcon_weighted(
                anchors, global_features, pair_weights, self_columns, temperature, memory)
        else:
            loss = _supcon_masked(
                anchors, _view_major(global_features), pair_weights, self_columns, num_views,
                num_anchor_views, offset, temperature, summation, denominator, positives_cap,
                memory)
    if scale_by_temperature:
        loss = loss * temperature
    # [num_anchor_views * batch] -> [num_anchor_views, batch] -> mean over anchor views.
    return ops.mean(ops.reshape(loss, (num_anchor_views, -1)), axis=0)


def collapse_value(global_batch, num_views, temperature=0.1, scale_by_temperature=True):
    """The SupCon / NT-Xent loss when every embedding is the same (training has collapsed).

    Every logit is then equal, so each anchor's loss is ln |A(i)| = ln(N * V - 1), times tau
    when the loss is rescaled. A run whose loss sits at this value has collapsed.

    Args:
        global_batch: N, samples in the global batch.
        num_views: V, views per sample.
        temperature: tau.
        scale_by_temperature: whether the loss is multiplied by tau.

    Returns:
        Python float.
    """
    value = math.log(global_batch * num_views - 1)
    return value * temperature if scale_by_temperature else value


def nt_xent_loss(features, temperature=0.5):
    """SimCLR's NT-Xent loss (Chen et al., 2020), one value per sample.

    Each view's positive is the same sample's other view(s), everything else in the global batch
    is a negative, and there is no temperature rescaling. SimCLR's own loss (the sum over both
    directions of its two views, averaged over the batch) is twice the mean of this.

    Args:
        features: float `[batch, views >= 2, dim]`, L2-normalised.
        temperature: float > 0 (SimCLR uses 0.5 on CIFAR, 0.1 on ImageNet).

    Returns:
        float32 `[batch]`.
    """
    return contrastive_loss(features, None, temperature=temperature, scale_by_temperature=False)


# ----------------------------------------------------------------------------------------------
# Baselines.
# ----------------------------------------------------------------------------------------------


def cross_entropy_loss(labels, logits, label_smoothing=0.0):
    """Softmax cross-entropy with label smoothing, one value per sample, in float32.

    The target is `(1 - label_smoothing) * one_hot + label_smoothing / num_classes` (the paper's
    ImageNet cross-entropy baseline uses 0.05). Each sample's loss depends on that sample only,
    so it needs no cross-replica gather.

    Args:
        labels: int `[batch]` / `[batch, 1]`, or one-hot `[batch, num_classes]`.
        logits: float `[batch, num_classes]`, any float dtype.
        label_smoothing: float in [0, 1).

    Returns:
        float32 `[batch]`.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    if len(logits.shape) != 2:
        raise ValueError(
            f"logits must be [batch, num_classes], got shape {tuple(logits.shape)}.")
    num_classes = logits.shape[1]
    labels = class_ids(labels, logits.shape[0])
    targets = ops.one_hot(labels, num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)


def _pairwise_squared_distances(anchors, contrast):
    """||a_i - c_j||^2 >= 0 for float32 `[rows, dim]` x `[cols, dim]` -> `[rows, cols]`."""
    squared = (ops.sum(anchors * anchors, axis=1)[:, None]
               + ops.sum(contrast * contrast, axis=1)[None, :]
               - 2.0 * ops.matmul(anchors, ops.transpose(contrast)))
    return ops.maximum(squared, 0.0)


def _pair_masks(features, labels):
    """Anchors, contrast and positive/negative masks over the global batch, all views as samples.

    Args:
        features: float32 `[local_batch, views, dim]`.
        labels: int32 `[local_batch]` or None.

    Returns:
        `(anchors [A, dim], contrast [C, dim], positives [A, C] bool, negatives [A, C] bool,
        num_views)` with A = views * local_batch and C = views * global_batch, view-major;
        positives exclude each anchor's own column.
    """
    num_views = features.shape[1]
    global_features, local_ids, global_ids, offset = _global_batch(features, labels)
    local_batch = ops.shape(features)[0]
    same = ops.equal(
        ops.tile(local_ids, (num_views,))[:, None], ops.tile(global_ids, (num_views,))[None, :])
    self_columns = _self_columns(
        num_views * local_batch, local_batch, ops.shape(global_features)[0], offset)
    not_self = ops.not_equal(
        ops.arange(ops.shape(same)[1], dtype="int32")[None, :], self_columns[:, None])
    positives = ops.logical_and(same, not_self)
    return (_view_major(features), _view_major(global_features), positives,
            ops.logical_not(same), num_views)


def _per_sample(anchor_loss, num_views):
    """float32 `[views * batch]` (view-major) -> `[batch]`, the mean over a sample's views."""
    return ops.mean(ops.reshape(anchor_loss, (num_views, -1)), axis=0)


def n_pairs_loss(features, labels=None, l2_penalty=0.002):
    """Multi-class N-pairs loss (Sohn, 2016), one value per sample.

        L_i = log(1 + sum_{j: y_j != y_i} exp(f_i . f_j+ - f_i . f_i+))
              + l2_penalty * (||f_i||^2 + ||f_i+||^2)

    on unnormalised inner products, with view 0 the anchor f and view 1 its positive f+. With
    labels None every other sample of the global batch is a negative (Sohn's one pair per class);
    with labels, same-class pairs are left out. Equivalent to SupCon with one positive and tau = 1.

    Args:
        features: float `[batch, 2, dim]` (anchor, positive).
        labels: None or int `[batch]` / one-hot.
        l2_penalty: float >= 0, lambda of the embedding-norm penalty (0.002 in the paper).

    Returns:
        float32 `[batch]`.
    """
    features, num_views = _prepare_features(features)
    if num_views != 2:
        raise ValueError(
            f"n_pairs_loss needs exactly 2 views (anchor, positive), got {num_views}.")
    if l2_penalty < 0:
        raise ValueError(f"l2_penalty must be >= 0, got {l2_penalty}.")
    labels = class_ids(labels, features.shape[0])
    global_features, local_ids, global_ids, offset = _global_batch(features, labels)
    anchors, positives = features[:, 0], features[:, 1]
    own_positive_logit = ops.sum(anchors * positives, axis=1)
    logits = ops.matmul(anchors, ops.transpose(global_features[:, 1]))  # [local, global]
    negatives = ops.not_equal(local_ids[:, None], global_ids[None, :])
    lse, has_negatives = _masked_logsumexp(logits - own_positive_logit[:, None], negatives)
    # log(1 + sum exp(x)) = logaddexp(0, lse); 0 when there is no negative.
    loss = ops.where(has_negatives, ops.logaddexp(ops.zeros_like(lse), lse), 0.0)
    penalty = ops.sum(anchors * anchors, axis=1) + ops.sum(positives * positives, axis=1)
    return loss + l2_penalty * penalty


def _semi_hard_negative_distances(distances, negatives):
    """For each (anchor, positive) pair, the distance of its semi-hard negative.

    The semi-hard negative of (a, p) is the closest negative farther than p (FaceNet); when every
    negative is closer than p, the farthest negative is used. Each row's negative distances are
    sorted once and every positive finds its place by a vectorised binary search
    (O(rows * cols * log cols) time, O(rows * cols) memory; no `[rows, cols, cols]` tensor).

    Args:
        distances: float32 `[rows, cols]` squared distances.
        negatives: bool `[rows, cols]`.

    Returns:
        float32 `[rows, cols]`: entry (a, p) is the semi-hard negative distance for the pair
        (a, p), meaningful where p is a positive of a and row a has a negative.
    """
    cols = ops.shape(distances)[1]
    num_negatives = ops.sum(ops.cast(negatives, "int32"), axis=1, keepdims=True)  # [rows, 1]
    # Negatives first, ascending; the rest pushed behind them (never read: indices < count).
    sort_keys = ops.where(negatives, ops.stop_gradient(distances), math.inf)
    order = ops.argsort(sort_keys, axis=1)
    sorted_negatives = ops.take_along_axis(distances, order, axis=1)
    sorted_keys = ops.stop_gradient(sorted_negatives)
    low = ops.zeros_like(order)
    high = ops.broadcast_to(num_negatives, ops.shape(order))
    target = ops.stop_gradient(distances)
    num_steps = max(1, int(math.ceil(math.log2(int(cols) + 1)))) if isinstance(
        cols, int) else 32
    for _ in range(num_steps):  # Bisection steps, not samples: log2(cols) vectorised passes.
        middle = (low + high) // 2
        value = ops.take_along_axis(sorted_keys, ops.minimum(middle, cols - 1), axis=1)
        active = low < high
        go_right = ops.logical_and(active, value <= target)
        low = ops.where(go_right, middle + 1, low)
        high = ops.where(ops.logical_and(active, ops.logical_not(go_right)), middle, high)
    # `low` = number of negatives at distance <= d(a, p); the next one is the semi-hard one.
    farthest = ops.maximum(num_negatives - 1, 0)
    index = ops.where(low < num_negatives, low, farthest)
    return ops.take_along_axis(sorted_negatives, index, axis=1)


def triplet_loss(features, labels=None, margin=0.2, mining="semi_hard"):
    """Triplet loss (Schroff et al., 2015) on squared distances, with in-batch mining.

        loss(a, p, n) = max(||a - p||^2 - ||a - n||^2 + margin, 0)

    Every view of every sample is an anchor; positives are the other views and same-class
    samples, negatives the other classes, all over the global batch. "semi_hard": for each
    (a, p) the closest negative with ||a-n||^2 > ||a-p||^2 (the farthest negative when none is),
    averaged over a's positives. "batch_hard": the farthest positive and the closest negative.
    SupCon with one positive and one negative reduces to a triplet loss with margin 2 * tau.

    Args:
        features: float `[batch, views, dim]`, L2-normalised (the margin assumes it).
        labels: None (views of one sample are positives) or int `[batch]` / one-hot.
        margin: float >= 0.
        mining: "semi_hard" or "batch_hard".

    Returns:
        float32 `[batch]`; anchors without a positive or a negative contribute 0.
    """
    _check_choice("mining", mining, TRIPLET_MININGS)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}.")
    features, num_views = _prepare_features(features)
    labels = class_ids(labels, features.shape[0])
    if num_views == 1 and labels is None:
        raise ValueError(
            "triplet_loss with one view needs labels: no anchor has a positive otherwise.")
    anchors, contrast, positives, negatives, num_views = _pair_masks(features, labels)
    distances = _pairwise_squared_distances(anchors, contrast)
    has_positive = ops.any(positives, axis=1)
    has_negative = ops.any(negatives, axis=1)
    if mining == "batch_hard":
        hardest_positive = ops.max(ops.where(positives, distances, 0.0), axis=1)
        hardest_negative = ops.min(ops.where(negatives, distances, math.inf), axis=1)
        hardest_negative = ops.where(has_negative, hardest_negative, 0.0)
        loss = ops.relu(hardest_positive - hardest_negative + margin)
    elif mining == "semi_hard":
        negative_distances = _semi_hard_negative_distances(distances, negatives)
        pair_loss = ops.relu(distances - negative_distances + margin)
        loss = ops.divide_no_nan(
            ops.sum(ops.where(positives, pair_loss, 0.0), axis=1),
            ops.sum(ops.cast(positives, "float32"), axis=1))
    loss = ops.where(ops.logical_and(has_positive, has_negative), loss, 0.0)
    return _per_sample(loss, num_views)


def max_margin_contrastive_loss(features, labels=None, margin=1.0):
    """Max-margin contrastive loss (Hadsell et al., 2006), one value per sample.

    Over every pair (anchor i, other j) of the global batch, with D = ||z_i - z_j||:
    0.5 * D^2 for a similar pair, 0.5 * max(0, margin - D)^2 for a dissimilar one, averaged over
    the anchor's pairs and over the sample's views.

    Args:
        features: float `[batch, views, dim]`.
        labels: None (only a sample's own views are similar) or int `[batch]` / one-hot.
        margin: float > 0, the distance beyond which dissimilar pairs cost nothing.

    Returns:
        float32 `[batch]`.
    """
    _check_positive("margin", margin)
    features, num_views = _prepare_features(features)
    labels = class_ids(labels, features.shape[0])
    anchors, contrast, positives, negatives, num_views = _pair_masks(features, labels)
    squared = _pairwise_squared_distances(anchors, contrast)
    # sqrt has an infinite slope at 0: clamp (only dissimilar pairs need D itself).
    distance = ops.sqrt(ops.maximum(squared, 1e-12))
    pair_loss = ops.where(positives, 0.5 * squared,
                          ops.where(negatives, 0.5 * ops.square(ops.relu(margin - distance)), 0.0))
    num_pairs = ops.sum(ops.cast(ops.logical_or(positives, negatives), "float32"), axis=1)
    loss = ops.divide_no_nan(ops.sum(pair_loss, axis=1), num_pairs)
    return _per_sample(loss, num_views)


# ----------------------------------------------------------------------------------------------
# Keras Loss wrappers: `loss(y_true=labels, y_pred=features)`, mean over the batch.
# ----------------------------------------------------------------------------------------------


class _BatchLoss(keras.losses.Loss):
    """Base of the wrappers: keeps the hyperparameters and lets `y_true` be None."""

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None, **options):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self._options = options

    def __call__(self, y_true=None, y_pred=None, sample_weight=None):
        if y_true is None:  # Self-supervised: Keras would try to convert None to a tensor.
            y_true = ops.zeros((0,))
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def _labels(self, y_true):
        return None if len(y_true.shape) == 1 and y_true.shape[0] == 0 else y_true

    def get_config(self):
        return {**super().get_config(), **self._options}


@keras.saving.register_keras_serializable(package="supcon_tf")
class SupConLoss(_BatchLoss):
    """Keras `Loss` for `contrastive_loss`: `loss(labels, features)`, the mean over the batch.

    Args:
        temperature, contrast_mode, summation, denominator, positives_cap,
            scale_by_temperature: as in `contrastive_loss`.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Call args:
        y_true: labels, None / int `[batch]` / one-hot or multi-hot label sets
            `[batch, num_classes]` (multi-label SupCon).
        y_pred: float `[batch, views, dim]`, L2-normalised.
    """

    def __init__(self, temperature=0.1, contrast_mode="all_views", summation="outside",
                 denominator="all", positives_cap=-1, scale_by_temperature=True,
                 reduction="sum_over_batch_size", name="supcon_loss", dtype=None):
        _check_choice("contrast_mode", contrast_mode, CONTRAST_MODES)
        _check_choice("summation", summation, SUMMATIONS)
        _check_choice("denominator", denominator, DENOMINATORS)
        _check_positive("temperature", temperature)
        super().__init__(
            reduction=reduction, name=name, dtype=dtype, temperature=temperature,
            contrast_mode=contrast_mode, summation=summation, denominator=denominator,
            positives_cap=positives_cap, scale_by_temperature=scale_by_temperature)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_pred, self._labels(y_true), **self._options)


@keras.saving.register_keras_serializable(package="supcon_tf")
class SimCLRLoss(_BatchLoss):
    """Keras `Loss` for `nt_xent_loss` (labels are ignored): `loss(None, features)`."""

    def __init__(self, temperature=0.5, reduction="sum_over_batch_size", name="simclr_loss",
                 dtype=None):
        _check_positive("temperature", temperature)
        super().__init__(reduction=reduction, name=name, dtype=dtype, temperature=temperature)

    def call(self, y_true, y_pred):
        return nt_xent_loss(y_pred, **self._options)


@keras.saving.register_keras_serializable(package="supcon_tf")
class CrossEntropyLoss(_BatchLoss):
    """Keras `Loss` for `cross_entropy_loss`: `loss(labels, logits)`."""

    def __init__(self, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="cross_entropy_loss", dtype=None):
        super().__init__(
            reduction=reduction, name=name, dtype=dtype, label_smoothing=label_smoothing)

    def call(self, y_true, y_pred):
        return cross_entropy_loss(y_true, y_pred, **self._options)


@keras.saving.register_keras_serializable(package="supcon_tf")
class NPairsLoss(_BatchLoss):
    """Keras `Loss` for `n_pairs_loss`: `loss(labels or None, features [batch, 2, dim])`."""

    def __init__(self, l2_penalty=0.002, reduction="sum_over_batch_size", name="n_pairs_loss",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype, l2_penalty=l2_penalty)

    def call(self, y_true, y_pred):
        return n_pairs_loss(y_pred, self._labels(y_true), **self._options)


@keras.saving.register_keras_serializable(package="supcon_tf")
class TripletLoss(_BatchLoss):
    """Keras `Loss` for `triplet_loss`: `loss(labels or None, features)`."""

    def __init__(self, margin=0.2, mining="semi_hard", reduction="sum_over_batch_size",
                 name="triplet_loss", dtype=None):
        _check_choice("mining", mining, TRIPLET_MININGS)
        super().__init__(
            reduction=reduction, name=name, dtype=dtype, margin=margin, mining=mining)

    def call(self, y_true, y_pred):
        return triplet_loss(y_pred, self._labels(y_true), **self._options)


@keras.saving.register_keras_serializable(package="supcon_tf")
class MaxMarginContrastiveLoss(_BatchLoss):
    """Keras `Loss` for `max_margin_contrastive_loss`: `loss(labels or None, features)`."""

    def __init__(self, margin=1.0, reduction="sum_over_batch_size",
                 name="max_margin_contrastive_loss", dtype=None):
        _check_positive("margin", margin)
        super().__init__(reduction=reduction, name=name, dtype=dtype, margin=margin)

    def call(self, y_true, y_pred):
        return max_margin_contrastive_loss(y_pred, self._labels(y_true), **self._options)
