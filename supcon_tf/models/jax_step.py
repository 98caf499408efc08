"""SupConModel's training and evaluation steps under Keras' JAX backend (`KERAS_BACKEND=jax`).

JAX's trainer is functional: it calls `train_step(state, data)` with the values of every
variable, `state = (trainable, non_trainable, optimizer, metrics)`, inside `jax.jit`, and expects
`(logs, new_state)` back. The steps here run the model's own backend-neutral step pieces
(`_views`, `_encode_views`, `_step_loss`, `_update_memory`, all `keras.ops`) inside a
`keras.StatelessScope` that maps each variable to its value in `state` and collects what they
assign (batch-norm statistics, metric totals, the memory queue, the momentum encoder), so the
math is the TensorFlow step's: the loss, its gradient (`jax.value_and_grad`) and the update
(`optimizer.stateless_apply`). Without `tf.distribute` there is no replica to gather from; the
loss is the local batch's, as on one TensorFlow device.

Not here: `gradient_chunks > 1` (gradient caching is implemented for the TensorFlow step only;
refused with a ValueError), and everything that is TensorFlow by nature (`tf.distribute`,
`tf.data`, SavedModel export).
"""

import keras


def _run_stateless(mapping, collect, fn):
    """Runs `fn()` with variables read from `mapping` and returns `(fn(), new values)`.

    Args:
        mapping: `[(variable, value)]`: what each variable reads as inside the scope.
        collect: Variables whose values after `fn` are returned (assigned ones updated, the
            others as mapped).
        fn: A function of no arguments that may read and assign the variables.
    """
    values = {id(variable): value for variable, value in mapping}
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = fn()
    new_values = []
    for variable in collect:
        value = scope.get_current_value(variable)
        new_values.append(values[id(variable)] if value is None else value)
    return result, new_values


def train_step(model, state, data):
    """One training step on values `state`; returns `(logs, new_state)` (JAX's trainer API).

    Args:
        model: The `SupConModel`.
        state: `(trainable, non_trainable, optimizer, metrics)` lists of arrays, in the order
            of `model.trainable_variables`, `model.non_trainable_variables`,
            `model.optimizer.variables` and `model.metrics_variables`.
        data: A batch as the TensorFlow step takes it: `(views [B, V, ...] or images
            [B, ...], labels [B] or None[, sample_weight [B]])` or a dict.

    Raises:
        ValueError: `gradient_chunks > 1` (TensorFlow only).
    """
    import jax

    if model.gradient_chunks > 1:
        raise ValueError(
            f"gradient_chunks={model.gradient_chunks} runs on the TensorFlow backend only; "
            "under KERAS_BACKEND=jax use gradient_chunks=1.")
    trainable, non_trainable, optimizer_values, metrics_values = state
    optimizer_mapping = list(zip(model.optimizer.variables, optimizer_values))
    x, y, sample_weight = model._unpack(data)

    def loss_fn(trainable, non_trainable, metrics_values):
        mapping = (list(zip(model.trainable_variables, trainable))
                   + list(zip(model.non_trainable_variables, non_trainable))
                   + list(zip(model.metrics_variables, metrics_values)) + optimizer_mapping)

        def forward():
            views = model._views(x, training=True)
            memory = None
            if model.queue is not None:
                model._check_queue_size(views)
                memory = model.queue(None)
            features = model._encode_views(views, training=True)
            loss = model._step_loss(features, y, views.shape[1], training=True, memory=memory,
                                    sample_weight=sample_weight)
            return loss, model.optimizer.scale_loss(loss), views

        (loss, scaled, views), new_values = _run_stateless(
            mapping, model.non_trainable_variables + model.metrics_variables, forward)
        count = len(model.non_trainable_variables)
        return scaled, (loss, views, new_values[:count], new_values[count:])

    (_, (loss, views, non_trainable, metrics_values)), gradients = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable, non_trainable, metrics_values)
    trainable, optimizer_values = model.optimizer.stateless_apply(
        optimizer_values, gradients, trainable)

    if model.queue is not None:  # momentum encoder and queue, from the updated weights
        mapping = (list(zip(model.trainable_variables, trainable))
                   + list(zip(model.non_trainable_variables, non_trainable)))
        _, non_trainable = _run_stateless(
            mapping, model.non_trainable_variables,
            lambda: model._update_memory(views, y))
    logs, metrics_values = _logs(model, metrics_values, loss)
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


def test_step(model, state, data):
    """One evaluation step on values `state = (trainable, non_trainable, metrics)`; returns
    `(logs, new_state)`."""
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = model._unpack(data)
    mapping = (list(zip(model.trainable_variables, trainable))
               + list(zip(model.non_trainable_variables, non_trainable))
               + list(zip(model.metrics_variables, metrics_values)))

    def forward():
        views = model._views(x, training=False)
        features = model._encode_views(views, training=False)
        return model._step_loss(features, y, views.shape[1], training=False,
                                sample_weight=sample_weight)

    loss, metrics_values = _run_stateless(mapping, model.metrics_variables, forward)
    logs, metrics_values = _logs(model, metrics_values, loss)
    return logs, (trainable, non_trainable, metrics_values)


def _logs(model, metrics_values, loss):
    """Feeds `loss` to the loss tracker; returns `(logs, new metric values)`."""

    def update():
        model.loss_tracker.update_state(loss)
        return {metric.name: metric.result() for metric in model.metrics}

    return _run_stateless(list(zip(model.metrics_variables, metrics_values)),
                          model.metrics_variables, update)
