"""One worker of the two-process `MultiWorkerMirroredStrategy` test in `distribute_test.py`.

Run as a script (AutoGraph needs the source in a file) with `TF_CONFIG` naming this worker:

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]},
                "task": {"type": "worker", "index": 0}}' \
        python tests/multiworker_worker.py DIRECTORY

The worker creates the strategy with `supcon_tf.distribute.make_strategy("multiworker")`,
then, once per mode of `MODES`, builds the tiny model of `build_model`, loads its initial
weights from `DIRECTORY/initial.<plain|memory>.npz` and trains `STEPS` steps on its share of the
fixed global batches of `global_data`:

* "train_step": a plain loop, `strategy.run(model.train_step, ...)` in a `tf.function` (what
  `fit` runs per step) over `distribute_datasets_from_function`, each worker given its half of
  every global batch explicitly (rows `[i * B / 2, (i + 1) * B / 2)` of worker `i`).
* "train_step_memory": the same with the memory variant (momentum encoder and a key queue
  smaller than the keys of all steps, so the ring pointer wraps).
* "train_loop": `supcon_tf.train_loop.fit` (the binaries' loop: the same per-step
  `strategy.run` driving Keras callbacks) on the distributed dataset of "train_step".
* "fit_dataset_fn": `model.fit` on the distributed dataset of "train_step".
* "fit_arrays": `model.fit(x, y, batch_size=GLOBAL_BATCH)` on the whole arrays; Keras
  distributes them with `AutoShardPolicy.DATA`, which splits every global batch between the
  workers in the same contiguous way.

The final weights go to `DIRECTORY/worker<i>.<mode>.npz`; a mode that raises writes its error
to `DIRECTORY/worker<i>.<mode>.error.txt` instead and the worker goes on with the next one (with
Keras 3.15 both `fit` modes raise: keras-team/keras#20585). The test imports this module for
`build_model`, `global_data` and `flat_weights`, so the single-process reference is built by the
same code.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

IMAGE = (4, 4, 3)
GLOBAL_BATCH = 8
STEPS = 3
NUM_CLASSES = 3
LEARNING_RATE = 0.1
MOMENTUM = 0.9
MEMORY_SIZE = 40  # < STEPS * 2 views * GLOBAL_BATCH = 48 keys: the queue wraps.
MEMORY_MOMENTUM = 0.9
MODES = ("train_step", "train_step_memory", "train_loop", "fit_dataset_fn", "fit_arrays")


def build_model(memory=False):
    """The tiny SupCon model both sides train: a Flatten-Dense-sync BN encoder, head and probe.

    Args:
        memory: Build the memory variant (`MEMORY_SIZE` keys, momentum `MEMORY_MOMENTUM`).

    Returns:
        A `SupConModel`, compiled with SGD (momentum), with freshly initialised weights.
    """
    from supcon_tf.models.supcon_model import SupConModel

    encoder = keras.Sequential([
        keras.Input(IMAGE),
        keras.layers.Flatten(),
        keras.layers.Dense(8),
        keras.layers.BatchNormalization(synchronized=True),
        keras.layers.Activation("relu"),
    ], name="encoder")
    kwargs = dict(memory_size=MEMORY_SIZE, memory_momentum=MEMORY_MOMENTUM) if memory else {}
    model = SupConModel(encoder, projection_units=[6, 4], num_classes=NUM_CLASSES,
                        temperature=0.5, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM))
    return model


def global_data():
    """The fixed training set: `STEPS` global batches of two-view images and labels.

    Returns:
        `(views float32 [STEPS * GLOBAL_BATCH, 2, *IMAGE], labels int64 [STEPS * GLOBAL_BATCH])`.
    """
    rng = np.random.default_rng(0)
    views = rng.uniform(size=(STEPS * GLOBAL_BATCH, 2) + IMAGE).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=STEPS * GLOBAL_BATCH).astype("int64")
    return views, labels


def flat_weights(model):
    """The model's weights (trainable and not) as a dict `{"w0": array, ...}` in model order."""
    return {f"w{i}": w.numpy() for i, w in enumerate(model.weights)}


def _worker_share(array, worker, num_workers):
    """Worker `worker`'s contiguous share of every global batch of `array`, in step order."""
    batches = array.reshape((STEPS, GLOBAL_BATCH) + array.shape[1:])
    share = GLOBAL_BATCH // num_workers
    return batches[:, worker * share:(worker + 1) * share].reshape((-1,) + array.shape[1:])


def _dataset_fn(views, labels):
    """A `distribute_datasets_from_function` input function giving each worker its half."""
    import tensorflow as tf

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        data = tuple(_worker_share(a, context.input_pipeline_id, context.num_input_pipelines)
                     for a in (views, labels))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return tf.data.Dataset.from_tensor_slices(data).batch(per_replica).with_options(options)

    return dataset_fn


def initial_name(mode):
    """The file (in the run's directory) holding the initial weights of `mode`'s model."""
    return "initial.memory.npz" if mode.endswith("memory") else "initial.plain.npz"


def _train(strategy, mode, directory, views, labels):
    """Builds `mode`'s model under `strategy`, loads its initial weights, trains `STEPS` steps."""
    import tensorflow as tf

    with strategy.scope():
        model = build_model(memory=mode.endswith("memory"))
        model.optimizer.build(model.trainable_variables)
    with np.load(os.path.join(directory, initial_name(mode))) as initial:
        model.set_weights([initial[f"w{i}"] for i in range(len(model.weights))])
    if mode in ("train_step", "train_step_memory"):
        dataset = strategy.distribute_datasets_from_function(_dataset_fn(views, labels))

        @tf.function
        def step(batch):
            return strategy.run(model.train_step, args=(batch,))

        batches = iter(dataset)
        for _ in range(STEPS):
            step(next(batches))
    elif mode == "train_loop":
        from supcon_tf import train_loop

        train_loop.fit(model, strategy, strategy.distribute_datasets_from_function(
            _dataset_fn(views, labels)), epochs=1, steps_per_epoch=STEPS, verbose=0)
    elif mode == "fit_dataset_fn":
        dataset = strategy.distribute_datasets_from_function(_dataset_fn(views, labels))
        model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0)
    elif mode == "fit_arrays":
        model.fit(views, labels, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    else:
        raise ValueError(f"Unknown mode {mode!r}; use one of {MODES}.")
    return model


def main(argv):
    directory = argv[1]
    from supcon_tf import distribute

    # The strategy comes first: it must configure the runtime before any other TF op runs.
    strategy = distribute.make_strategy("multiworker")
    if strategy.num_replicas_in_sync != 2:
        raise SystemExit(f"expected 2 replicas, got {strategy.num_replicas_in_sync}")
    prefix = os.path.join(directory, f"worker{strategy.cluster_resolver.task_id}")
    views, labels = global_data()
    for mode in MODES:
        try:
            model = _train(strategy, mode, directory, views, labels)
        except Exception as error:  # Recorded for the test, which reports it.
            with open(f"{prefix}.{mode}.error.txt", "w") as f:
                f.write(f"{type(error).__name__}: {error}"[:2000])
            continue
        np.savez(f"{prefix}.{mode}.npz", **flat_weights(model))
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv)
