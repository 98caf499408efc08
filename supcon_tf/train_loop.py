"""The training loop: `model.train_step` run per replica by the strategy, one step at a time.

`model.fit` cannot train under `MultiWorkerMirroredStrategy` in Keras 3.15
(keras-team/keras#20585: it reduces the first batch across workers to build the model, and
reduces scalar logs along an axis they do not have). This loop does what `fit` does per step,
`strategy.run(model.train_step, args=(batch,))` inside a `tf.function`, without those two
reductions, and drives ordinary Keras callbacks (progress bar, TensorBoard, History, the
project's monitors) through a `keras.callbacks.CallbackList`, so one code path serves one
device, `MirroredStrategy`, `MultiWorkerMirroredStrategy` and `TPUStrategy`.

Stopping: a callback sets `model.stop_training = True` (as with `fit`); the loop stops after
that step's `on_train_batch_end` and still runs `on_epoch_end`/`on_train_end`.

Non-finite guard: each step also checks, inside the same `tf.function` (one scalar more in its
logs, no other host transfer), that every floating-point weight of the model is finite after
the update, and the loop checks the loss. At a far-too-high learning rate the weights overflow
several steps before the loss does, so the loss alone is not enough. The first non-finite step
raises `NonFiniteError` before any callback sees it: no checkpoint or export of non-finite
values is written, and every earlier checkpoint stays.
"""

import math

import keras
import tensorflow as tf


class NonFiniteError(FloatingPointError):
    """The loss or a weight became non-finite at optimizer step `step`."""

    def __init__(self, step, what):
        self.step = int(step)
        super().__init__(f"non-finite {what} at step {self.step}")


FINITE_KEY = "weights_finite"


def weights_finite(variables):
    """Scalar bool: every floating-point variable of `variables` is finite.

    `sum(v * 0)` is 0 for finite values and NaN as soon as one element is Inf or NaN, without
    the overflow a plain sum of large finite weights could give.
    """
    terms = [tf.reduce_sum(tf.cast(v, tf.float32) * 0.0) for v in variables
             if tf.as_dtype(v.dtype).is_floating]
    return tf.math.is_finite(tf.add_n(terms)) if terms else tf.constant(True)


def _first_replica(value, strategy):
    """A per-replica log value as one tensor (metrics are already aggregated across replicas)."""
    return strategy.experimental_local_results(value)[0]


def make_step_function(model, strategy, jit_compile=False, check_finite=True):
    """A `tf.function` running one optimizer step of `model` on a distributed batch.

    Args:
        model: a compiled `SupConModel` (optimizer built under `strategy.scope()`).
        strategy: the `tf.distribute.Strategy` the model was built under.
        jit_compile: compile each replica's step with XLA.
        check_finite: add `FINITE_KEY` to the logs: whether every weight is finite after the
            step (see `weights_finite`).

    Returns:
        `step(batch) -> {name: scalar tensor}`, the train step's logs: the model's metrics
        aggregated over all replicas (any other value from the first replica).
    """
    replica_step = model.train_step
    if jit_compile:
        replica_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)

    @tf.function
    def step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        # The trackers read here, outside the replicas, are aggregated over every replica;
        # a replica's own result() (what the step returns) is its share of the batch only.
        tracked = {metric.name: metric.result() for metric in model.metrics}
        logs = {name: tracked[name] if name in tracked else _first_replica(value, strategy)
                for name, value in per_replica.items()}
        if check_finite:
            logs[FINITE_KEY] = weights_finite(model.weights)
        return logs

    return step


def _checked_logs(model, logs):
    """The step's logs as Python floats, without `FINITE_KEY`.

    Raises:
        NonFiniteError: the loss or a weight is not finite.
    """
    logs = {name: float(value) for name, value in logs.items()}
    finite = logs.pop(FINITE_KEY, 1.0)
    if not finite or not math.isfinite(logs.get("loss", 0.0)):
        what = "weights" if not finite else "loss"
        raise NonFiniteError(int(model.optimizer.iterations.numpy()), what)
    return logs


def fit(model, strategy, dataset, *, epochs, steps_per_epoch, initial_epoch=0, callbacks=(),
        verbose=1, dataset_for_epoch=None, jit_compile=False, check_finite=True,
        step_function=None, total_epochs=None):
    """Trains `model` like `keras.Model.fit`, under any strategy.

    Args:
        model: a compiled `SupConModel` built under `strategy.scope()`.
        strategy: the `tf.distribute.Strategy`.
        dataset: a `tf.data.Dataset` of global batches (distributed here with
            `experimental_distribute_dataset`), a distributed dataset, or None when
            `dataset_for_epoch` gives each epoch's.
        epochs: the epoch index to stop at (exclusive), as in `fit`.
        steps_per_epoch: optimizer steps per epoch.
        initial_epoch: the first epoch index (a resumed run).
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        dataset_for_epoch: optional `f(epoch) -> dataset` used instead of `dataset` (e.g. a
            stream reseeded per epoch, with the batches a resumed run already took skipped).
        jit_compile: compile each replica's step with XLA.
        check_finite: stop at the first step whose loss or weights are not finite.
        step_function: a `make_step_function(model, strategy, ...)` to run instead of a new one
            (whose options then apply): a caller that calls `fit` once per epoch passes the
            same one, so that the step is traced once, not once per call.
        total_epochs: the run's number of epochs, which the progress bar ("Epoch 3/30") and
            the callbacks' `params["epochs"]` show; defaults to `epochs`. A caller that calls
            `fit` once per epoch passes the whole run's.

    Returns:
        The `keras.callbacks.History` of the run.

    Raises:
        NonFiniteError: the loss or a weight became non-finite (callbacks did not see that
            step, so nothing of it was saved).
    """
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=total_epochs or epochs, steps=steps_per_epoch)
    step = step_function or make_step_function(model, strategy, jit_compile=jit_compile,
                                               check_finite=check_finite)
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        for metric in model.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        source = dataset_for_epoch(epoch) if dataset_for_epoch is not None else dataset
        if isinstance(source, tf.data.Dataset):
            source = strategy.experimental_distribute_dataset(source)
        batches = iter(source)
        for index in range(steps_per_epoch):
            callback_list.on_train_batch_begin(index)
            try:
                batch = next(batches)
            except StopIteration:
                break
            logs = _checked_logs(model, step(batch))
            callback_list.on_train_batch_end(index, logs)
            if model.stop_training:
                break
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback_list.on_train_end(dict(logs))
    return model.history
