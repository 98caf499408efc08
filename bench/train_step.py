"""Benchmark: a SupConModel training step against a plain Keras cross-entropy step, and the
peak memory of the memory variant against a plain batch of the same contrast-set size.

Throughput. Both models wrap the same encoder (by default a ResNet-18 with the CIFAR stem at
32x32, built twice from the same seed) and train with `fit` and SGD (momentum 0.9):

* cross-entropy: `keras.Model(images -> encoder -> Dense(num_classes))`, compiled with
  `SparseCategoricalCrossentropy(from_logits=True)` and accuracy, fed `views x batch` images
  per step;
* SupCon: `SupConModel(encoder, loss="supcon", num_classes=..., projection_units=[2048, 128])`
  (online probe on), fed `batch` samples of `views` views, so its encoder also sees
  `views x batch` images per step (and, as a second row, the same without the probe).

Images/s counts encoded views. Both are compiled with the same `jit_compile` (Keras' default
"auto" unless `--jit_compile` says otherwise; the table states what it resolved to). Each step
is timed by a callback between `on_train_batch_begin` and `on_train_batch_end`, i.e. around
one `train_function` call (TensorFlow executes synchronously, so the step is done when it
returns) on a constant batch repeated by `tf.data` (no input cost). Each model first runs
`--warmup` untimed steps (the first traces the step); then the models take turns, `--steps`
timed steps each per round in a rotating order, so they see the same machine load (the CPU may
be shared). The table shows each model's median step and, against cross-entropy, the median
over rounds of the round's ratio; the same for this process's CPU time per step
(`time.process_time`, all threads), which other processes' load disturbs less. Goal: SupCon
>= 0.95x the cross-entropy images/s.

Memory. `SupConModel(encoder, memory_size=8192)` (momentum key encoder + 8192 x 128 key queue,
contrast set = batch + queue) at batch 256 against a plain `SupConModel` at batch
256 + 8192 = 8448, both on a small encoder so the plain batch fits in RAM (by default a ResNet-18
at width 0.25 with the CIFAR stem on 16x16 images, 128-d features). Peak is TensorFlow's CPU
allocator peak (`tf.config.experimental.get_memory_info("CPU:0")`) during one training step,
after a warm-up step, minus what was in use just before it (`reset_memory_stats` first). Goal:
memory variant <= 0.2x the plain batch.

    .venv/bin/python bench/train_step.py                      # both parts, defaults
    .venv/bin/python bench/train_step.py --part throughput --depth 50 --batch 16
    .venv/bin/python bench/train_step.py --part memory --memory_plain_batch 4096
"""

import argparse
import inspect
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf.models import resnet  # noqa: E402
from supcon_tf.models.supcon_model import SupConModel  # noqa: E402

_DEVICE = "CPU:0"


def _jit_flag(value):
    """The `--jit_compile` flag: "auto" (Keras' default) or a bool."""
    lowered = value.lower()
    if lowered == "auto":
        return "auto"
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"--jit_compile must be auto, true or false, got {value!r}")


def _encoder(depth, width, image_size, seed=0):
    """A ResNet with the CIFAR stem, initialised from `seed` (the same weights every call)."""
    keras.utils.set_random_seed(seed)
    return resnet.resnet(depth, (image_size, image_size, 3), width_multiplier=width,
                         stem="cifar")


def _sgd():
    """The optimizer every model trains with."""
    return keras.optimizers.SGD(0.05, momentum=0.9)


def _cross_entropy_model(encoder, num_classes, jit_compile):
    """The baseline: encoder + Dense classifier trained with Keras' own cross-entropy fit."""
    images = keras.Input(encoder.input_shape[1:])
    logits = keras.layers.Dense(num_classes, name="classifier")(encoder(images))
    model = keras.Model(images, logits, name="cross_entropy")
    model.compile(optimizer=_sgd(), jit_compile=jit_compile,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _supcon_model(encoder, num_classes, jit_compile, probe=True, **kwargs):
    """SupCon with the CIFAR projection head [2048, 128] (and the online probe)."""
    model = SupConModel(encoder, loss="supcon", num_classes=num_classes, probe=probe,
                        projection_units=[2048, 128], **kwargs)
    model.compile(optimizer=_sgd(), jit_compile=jit_compile)
    return model


class _StepTimer(keras.callbacks.Callback):
    """Records the wall time and this process's CPU time of every training step (one
    `train_function` call)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start[0])
        self.cpu_seconds.append(time.process_time() - self._start[1])


class _StepPeakMemory(keras.callbacks.Callback):
    """Allocator peak during step `step` minus the bytes in use just before it."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.peak = None
        self._before = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.step:
            tf.config.experimental.reset_memory_stats(_DEVICE)
            self._before = tf.config.experimental.get_memory_info(_DEVICE)["current"]

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            self.peak = tf.config.experimental.get_memory_info(_DEVICE)["peak"] - self._before


def _repeated(*tensors):
    """A dataset yielding the same batch forever (no input-pipeline cost)."""
    return tf.data.Dataset.from_tensors(tuple(tensors)).repeat()


def _batches(batch, views, image_size, num_classes, seed=0):
    """A multi-view batch `[B, V, S, S, 3]` with labels `[B]`, and the same images flattened
    view-major with tiled labels `[V*B, S, S, 3]`, `[V*B]` for the cross-entropy model."""
    rng = np.random.default_rng(seed)
    multi_view = rng.uniform(size=(batch, views, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, num_classes, size=batch).astype("int64")
    flat = multi_view.transpose(1, 0, 2, 3, 4).reshape((views * batch,) + multi_view.shape[2:])
    return (multi_view, labels), (flat, np.tile(labels, views))


def _summarise(rounds, name, baseline, clock):
    """(median step seconds of `name`, median over rounds of baseline / `name` step time).

    Args:
        rounds: One dict per round, `{model name: (wall seconds, CPU seconds) per step}`.
        name: The model to summarise.
        baseline: The model the ratio divides by (cross-entropy).
        clock: 0 for wall time, 1 for CPU time.
    """
    median = statistics.median(t for times in rounds for t in times[name][clock])
    # Each round's ratio compares steps taken under the same machine load.
    ratio = statistics.median(
        statistics.median(times[baseline][clock]) / statistics.median(times[name][clock])
        for times in rounds)
    return median, ratio


def throughput(args):
    """Times CE and SupCon steps in alternating rounds; returns the table's rows."""
    (views, labels), (flat, flat_labels) = _batches(
        args.batch, args.views, args.image_size, args.num_classes)
    images_per_step = args.views * args.batch
    make = {
        "Keras cross-entropy fit (encoder + Dense)": lambda: (
            _cross_entropy_model(_encoder(args.depth, args.width, args.image_size),
                                 args.num_classes, args.jit_compile),
            _repeated(flat, flat_labels)),
        "SupConModel fit (supcon, probe)": lambda: (
            _supcon_model(_encoder(args.depth, args.width, args.image_size),
                          args.num_classes, args.jit_compile),
            _repeated(views, labels)),
        "SupConModel fit (supcon, no probe)": lambda: (
            _supcon_model(_encoder(args.depth, args.width, args.image_size),
                          args.num_classes, args.jit_compile, probe=False),
            _repeated(views, labels)),
    }
    models = {name: build() for name, build in make.items()}
    resolved = {name: model.jit_compile for name, (model, _) in models.items()}
    names = list(models)
    for name in names:  # Trace and warm up, untimed.
        model, dataset = models[name]
        model.fit(dataset, epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)
    # rounds[r][name] = (wall seconds, CPU seconds) of each step of model `name` in round r.
    rounds = []
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        times = {}
        for name in names[shift:] + names[:shift]:  # A rotating order.
            model, dataset = models[name]
            timer = _StepTimer()
            model.fit(dataset, epochs=1, steps_per_epoch=args.steps, shuffle=False,
                      verbose=0, callbacks=[timer])
            times[name] = (timer.seconds, timer.cpu_seconds)
        rounds.append(times)
        print(f"  round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{statistics.median(times[n][0]) * 1e3:.0f}" for n in names) + " ms",
            file=sys.stderr, flush=True)
    rows = []
    for name in names:
        wall, wall_ratio = _summarise(rounds, name, names[0], clock=0)
        cpu, cpu_ratio = _summarise(rounds, name, names[0], clock=1)
        rows.append((name, resolved[name], wall, images_per_step / wall, wall_ratio, cpu,
                     cpu_ratio))
    return rows, images_per_step


def _memory_variant_available():
    """Whether this SupConModel has the memory variant (`memory_size`)."""
    return "memory_size" in inspect.signature(SupConModel).parameters


def _step_peak(model, dataset):
    """Peak bytes of the second training step (the first traces it)."""
    meter = _StepPeakMemory(step=1)
    model.fit(dataset, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0,
              callbacks=[meter])
    return meter.peak


def memory(args):
    """Peak memory of the memory variant and of a plain batch; returns the table's rows."""
    encoder_args = (args.memory_depth, args.memory_width, args.memory_image_size)
    rows = []
    if _memory_variant_available():
        (views, labels), _ = _batches(args.memory_batch, args.views, args.memory_image_size,
                                      args.num_classes)
        model = _supcon_model(_encoder(*encoder_args), args.num_classes, "auto",
                              memory_size=args.memory_size)
        peak = _step_peak(model, _repeated(views, labels))
        rows.append((f"memory variant: batch {args.memory_batch} + queue {args.memory_size}",
                     args.memory_batch, args.views * args.memory_batch + args.memory_size, peak))
        del model
    else:
        rows.append((f"memory variant: batch {args.memory_batch} + queue {args.memory_size}",
                     args.memory_batch, None, None))
    plain_batch = args.memory_plain_batch or args.memory_batch + args.memory_size
    (views, labels), _ = _batches(plain_batch, args.views, args.memory_image_size,
                                  args.num_classes)
    model = _supcon_model(_encoder(*encoder_args), args.num_classes, "auto")
    peak = _step_peak(model, _repeated(views, labels))
    rows.append((f"plain SupConModel: batch {plain_batch}", plain_batch,
                 args.views * plain_batch, peak))
    return rows


def _mib(value):
    """Bytes to MiB."""
    return value / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "throughput", "memory"), default="all")
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth (throughput)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (throughput)")
    parser.add_argument("--image_size", type=int, default=32, help="image side (throughput)")
    parser.add_argument("--batch", type=int, default=32,
                        help="SupCon samples per step; the CE model gets views x batch images")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model and round")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per model first (the first traces the step)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds")
    parser.add_argument("--jit_compile", type=_jit_flag, default="auto",
                        help="auto (Keras' default), true or false; the same for every model")
    parser.add_argument("--memory_batch", type=int, default=256)
    parser.add_argument("--memory_size", type=int, default=8192)
    parser.add_argument("--memory_plain_batch", type=int, default=0,
                        help="plain batch to compare with; 0 = memory_batch + memory_size")
    parser.add_argument("--memory_depth", type=int, default=18)
    parser.add_argument("--memory_width", type=float, default=0.25)
    parser.add_argument("--memory_image_size", type=int, default=16)
    args = parser.parse_args(argv)

    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable)] + sys.argv)
    print(f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores "
          f"({platform.machine()}), devices "
          f"{[d.device_type for d in tf.config.list_physical_devices()]}.")

    if args.part in ("all", "throughput"):
        rows, images_per_step = throughput(args)
        print(f"\n### Training step throughput: ResNet-{args.depth} (width {args.width:g}, "
              f"CIFAR stem) at {args.image_size}x{args.image_size}, {images_per_step} encoded "
              f"images per step ({args.batch} x {args.views} views for SupCon), SGD momentum "
              f"0.9, jit_compile={args.jit_compile!r}; {args.rounds} rounds of {args.steps} "
              f"step(s) per model in rotating order after {args.warmup} warm-up step(s); "
              f"ms/step "
              f"is the median step, the ratio the median over rounds of the round's "
              f"ratio of median steps.\n")
        print("| step | jit_compile (resolved) | ms/step | images/s | x cross-entropy | "
              "CPU s/step | x cross-entropy (CPU time) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, jit, seconds, images_per_second, ratio, cpu, cpu_ratio in rows:
            print(f"| {name} | {jit} | {1e3 * seconds:.0f} | {images_per_second:.1f} | "
                  f"{ratio:.2f} | {cpu:.2f} | {cpu_ratio:.2f} |")
        ratio = rows[1][4]
        print(f"\nGoal SupCon (with probe) >= 0.95x cross-entropy images/s: "
              f"{ratio:.2f}x, {'met' if ratio >= 0.95 else 'NOT met'} (by this process's CPU "
              f"time per step, less sensitive to other load on the machine: "
              f"{rows[1][6]:.2f}x).")

    if args.part in ("all", "memory"):
        rows = memory(args)
        plain_peak = rows[-1][3]
        print(f"\n### Peak memory of one training step: ResNet-{args.memory_depth} (width "
              f"{args.memory_width:g}, CIFAR stem, "
              f"{resnet.feature_dim(args.memory_depth, args.memory_width)}-d features) at "
              f"{args.memory_image_size}x{args.memory_image_size}, {args.views} views, "
              f"projection [2048, 128], probe on; TensorFlow CPU allocator peak above the "
              f"bytes in use before the step (second step).\n")
        print("| setup | batch | contrast set (embeddings) | peak MiB | x plain batch |")
        print("|---|---:|---:|---:|---:|")
        for name, batch, contrast, peak in rows:
            if peak is None:
                print(f"| {name} | {batch} | - | n/a (memory variant not available) | - |")
            else:
                print(f"| {name} | {batch} | {contrast} | {_mib(peak):.0f} | "
                      f"{peak / plain_peak:.3f} |")
        if rows[0][3] is not None:
            ratio = rows[0][3] / plain_peak
            print(f"\nGoal memory variant <= 0.2x the plain batch: {ratio:.3f}x, "
                  f"{'met' if ratio <= 0.2 else 'NOT met'}.")

    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
