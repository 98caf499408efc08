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
"""

import keras
import tensorflow as tf


def _first_replica(value, strategy):
    """A per-replica log value as one tensor (metrics are already aggregated across replicas)."""
    return strategy.experimental_local_results(value)[0]


def make_step_function(model, strategy, jit_compile=False):
    """A `tf.function` running one optimizer step of `model` on a distributed batch.

    Args:
        model: a compiled `SupConModel` (optimizer built under `strategy.scope()`).
        strategy: the `tf.distribute.Strategy` the model was built under.
        jit_compile: compile each replica's step with XLA.

    Returns:
        `step(batch) -> {name: scalar tensor}`, the train step's logs of the first replica.
    """
    replica_step = model.train_step
    if jit_compile:
        replica_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)

    @tf.function
    def step(batch):
        logs = strategy.run(replica_step, args=(batch,))
        return {name: _first_replica(value, strategy) for name, value in logs.items()}

    return step


def _to_python(logs):
    return {name: float(value) for name, value in logs.items()}


def fit(model, strategy, dataset, *, epochs, steps_per_epoch, initial_epoch=0, callbacks=(),
        verbose=1, dataset_for_epoch=None, jit_compile=False):
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

    Returns:
        The `keras.callbacks.History` of the run.
    """
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    step = make_step_function(model, strategy, jit_compile=jit_compile)
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
            logs = _to_python(step(batch))
            callback_list.on_train_batch_end(index, logs)
            if model.stop_training:
                break
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback_list.on_train_end(dict(logs))
    return model.history
