"""Benchmark: a SupConModel training step against PyTorch and against a plain Keras
cross-entropy step, and the peak memory of the memory variant against a plain batch of the same
contrast-set size.

Against PyTorch (`--part peer`). One SupCon training step of ResNet-18 (CIFAR stem, 32x32),
head 512 -> 512 -> 128, tau 0.1, 2 views, SGD momentum 0.9, at each of `--peer_batches`
(default 64 and 128 samples): ours (`SupConModel.fit`, timed per `train_function` call as
below) against the same model, loss and optimizer in PyTorch eager (NCHW), PyTorch with the
channels_last memory format, and `torch.compile` (forward and loss compiled, hence the backward
too; the strongest peer). All rows of a batch size run in one process in rotating order,
`--steps` steps per row and round after `--warmup` steps (tracing, compiling); the table gives
each row's median step, images/s (encoded views per second) and the median over rounds of the
round's ratio ours / this, by wall time and by this process's CPU time; the load average
before and after is printed, as the CPU may be shared. Optional rows: our step with the online
probe (`--peer_probe`) and with Keras' own BatchNormalization instead of the fused layer
(`--peer_keras_batch_norm`, what the fused layer bought). `--threads N` gives both frameworks
N threads (1: a comparison of the kernels that other load on the machine disturbs less).
PyTorch is a benchmark-only peer, not in requirements.txt (`.venv/bin/pip install torch`); when
it is missing the bench says so and shows our rows only. Afterwards SimAugment at the same image
size through `pipeline.make_dataset` (2 views; bench/input.py's measurement) is printed as a
ratio of the fastest step's consumption (goal >= 2x). Goal: ours >= 1.1x torch.compile's
images/s at both batch sizes.
bench/step_profile.py breaks our step of this comparison down by kind of op.

Throughput (`--part throughput`). Both models wrap the same encoder (by default a ResNet-18 with
the CIFAR stem at 32x32, built twice from the same seed) and train with `fit` and SGD (momentum
0.9):

* cross-entropy: `keras.Model(images -> encoder -> Dense(num_classes))`, compiled with
  `SparseCategoricalCrossentropy(from_logits=True)` and accuracy, fed `views x batch` images
  per step;
* SupCon: `SupConModel(encoder, loss="supcon", num_classes=..., projection_units=[2048, 128])`
  (online probe on), fed `batch` samples of `views` views, so its encoder also sees
  `views x batch` images per step (and, as a second row, the same without the probe).

Images/s counts encoded views. Both are compiled with the same `jit_compile` (Keras' default
"auto" unless `--jit_compile` says otherwise; the table states what it resolved to). Each step
is timed by a callback between `on_train_batch_begin` and `on_train_batch_end`, i.e. around one
`train_function` call (TensorFlow executes synchronously, so the step is done when it returns)
on a constant batch repeated by `tf.data` (no input cost). Each model first runs `--warmup`
untimed steps (the first traces the step); then the models take turns, `--steps` timed steps
each per round in a rotating order, so they see the same machine load (the CPU may be shared).
The table shows each model's median step and, against cross-entropy, the median over rounds of
the round's ratio; the same for this process's CPU time per step (`time.process_time`, all
threads), which other processes' load disturbs less. Goal: SupCon >= 0.95x the cross-entropy
images/s.

Memory (`--part memory`). `SupConModel(encoder, memory_size=8192)` (momentum key encoder + 8192
x 128 key queue, contrast set = batch + queue) at batch 256 against a plain `SupConModel` at
batch 256 + 8192 = 8448, both on a small encoder so the plain batch fits in RAM (by default a
ResNet-18 at width 0.25 with the CIFAR stem on 16x16 images, 128-d features). Peak is
TensorFlow's CPU allocator peak (`tf.config.experimental.get_memory_info("CPU:0")`) during one
training step, after a warm-up step, minus what was in use just before it (`reset_memory_stats`
first). Goal: memory variant <= 0.2x the plain batch.

    .venv/bin/python bench/train_step.py --part peer --peer_probe --peer_keras_batch_norm
    .venv/bin/python bench/train_step.py --part peer --threads 1 --peer_batches 64
    .venv/bin/python bench/train_step.py                      # every part, defaults
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
_PEER_UNITS = [512, 128]  # The head of the PyTorch comparison: 512 -> 512 -> 128.
_TEMPERATURE = 0.1


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


# ----------------------------------------------------------------------------------------------
# Against PyTorch: the same SupCon step (model, head, loss, optimizer) in TensorFlow and PyTorch.
# ----------------------------------------------------------------------------------------------


def _import_torch():
    """PyTorch, or None when it is not installed (it is a benchmark-only peer)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_resnet18(torch):
    """ResNet-18 v1.5 with the CIFAR stem (3x3/1 conv, no pool) and our BN settings, in
    PyTorch: the architecture of `resnet.resnet(18, stem="cifar")`, layer for layer."""
    nn = torch.nn

    def conv_bn(in_channels, out_channels, kernel_size, stride):
        return [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                          padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1)]  # Keras momentum 0.9

    class BasicBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride):
            super().__init__()
            self.branch = nn.Sequential(*conv_bn(in_channels, out_channels, 3, stride),
                                        nn.ReLU(inplace=True),
                                        *conv_bn(out_channels, out_channels, 3, 1))
            self.shortcut = (nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride))
                             if stride != 1 or in_channels != out_channels else nn.Identity())

        def forward(self, x):
            return torch.relu(self.branch(x) + self.shortcut(x))

    layers = [*conv_bn(3, 64, 3, 1), nn.ReLU(inplace=True)]
    in_channels = 64
    for stage, filters in enumerate((64, 128, 256, 512)):
        for index in range(2):
            layers.append(BasicBlock(in_channels, filters, 2 if stage and not index else 1))
            in_channels = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _torch_supcon_loss(torch, embeddings, labels, num_views, temperature):
    """SupCon L_out (Khosla et al. 2020, Eq. 2) with every view an anchor, scaled by the
    temperature: `contrastive_loss`'s defaults, written the usual PyTorch way.

    Args:
        embeddings: float `[V*B, d]`, L2-normalised, view-major.
        labels: int `[B]`.
    """
    view_labels = labels.repeat(num_views)
    logits = embeddings @ embeddings.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # Stable exp.
    self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    positives = (view_labels[:, None] == view_labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1,
                                        keepdim=True)
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
    return -temperature * mean_log_prob.mean()


def _torch_step(torch, variant, batch, views, image_size, num_classes, seed=0):
    """A closure running one PyTorch SupCon training step on a fixed batch.

    `variant`: "eager" (NCHW), "channels_last" (NHWC memory format) or "compile"
    (`torch.compile` of the forward pass and loss; its backward is compiled too).
    """
    torch.manual_seed(seed)
    nn = torch.nn
    encoder = _torch_resnet18(torch)
    head = nn.Sequential(nn.Linear(512, _PEER_UNITS[0]), nn.ReLU(inplace=True),
                         nn.Linear(*_PEER_UNITS))
    model = nn.ModuleDict({"encoder": encoder, "head": head}).train()
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.uniform(
        size=(views * batch, 3, image_size, image_size)).astype("float32"))
    labels = torch.from_numpy(rng.integers(0, num_classes, size=batch))
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def forward(images, labels):
        embeddings = nn.functional.normalize(head(encoder(images)), dim=1)
        return _torch_supcon_loss(torch, embeddings, labels, views, _TEMPERATURE)

    if variant == "compile":
        forward = torch.compile(forward)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(images, labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _keras_step_runner(model, dataset):
    """A closure running `steps` training steps of a compiled Keras model through `fit`,
    returning each step's (wall seconds, CPU seconds) (`_StepTimer`: around one
    `train_function` call)."""
    def run(steps):
        timer = _StepTimer()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
                  callbacks=[timer])
        return list(zip(timer.seconds, timer.cpu_seconds))
    return run


def _torch_step_runner(step):
    """A closure running `steps` PyTorch steps, returning each step's (wall seconds, CPU
    seconds of this process)."""
    def run(steps):
        seconds = []
        for _ in range(steps):
            start = (time.perf_counter(), time.process_time())
            step()
            seconds.append((time.perf_counter() - start[0], time.process_time() - start[1]))
        return seconds
    return run


def _with_keras_batch_norm(encoder):
    """`encoder` rebuilt with Keras' own `BatchNormalization` (the layer before the fused
    one), same config and weights: the 'before' row."""
    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    stock = keras.models.clone_model(encoder, clone_function=clone)
    stock.set_weights(encoder.get_weights())
    return stock


def peer_model(image_size, jit_compile, keras_batch_norm=False, **kwargs):
    """Our side of the PyTorch comparison, compiled: `SupConModel` on a seeded ResNet-18 (CIFAR
    stem), head 512 -> 512 -> 128, tau 0.1, SGD momentum; `keras_batch_norm` swaps in Keras'
    own BatchNormalization; `kwargs` go to `SupConModel` (e.g. `num_classes`)."""
    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(18, (image_size, image_size, 3), stem="cifar")
    if keras_batch_norm:
        encoder = _with_keras_batch_norm(encoder)
    model = SupConModel(encoder, loss="supcon", temperature=_TEMPERATURE,
                        projection_units=_PEER_UNITS, **kwargs)
    model.compile(optimizer=_sgd(), jit_compile=jit_compile)
    return model


def _peer_runners(args, batch, torch):
    """{row name: run(steps) -> seconds per step} for one batch size: ours, then the peers."""
    (views, labels), _ = _batches(batch, args.views, args.image_size, args.num_classes)
    dataset = _repeated(views, labels)

    def ours(**kwargs):
        return _keras_step_runner(peer_model(args.image_size, args.jit_compile, **kwargs),
                                  dataset)

    runners = {"supcon_tf (SupConModel.fit)": ours(num_classes=None)}
    if args.peer_probe:
        runners["supcon_tf + online probe"] = ours(num_classes=args.num_classes)
    if args.peer_keras_batch_norm:
        runners["supcon_tf, Keras' BatchNormalization (before)"] = ours(
            keras_batch_norm=True, num_classes=None)
    if torch is not None:
        for variant, name in (("eager", "PyTorch eager"),
                              ("channels_last", "PyTorch channels_last"),
                              ("compile", "PyTorch torch.compile")):
            runners[name] = _torch_step_runner(_torch_step(
                torch, variant, batch, args.views, args.image_size, args.num_classes))
    return runners


def _interleaved_rounds(runners, rounds, steps, warmup, label):
    """Warms each runner up, then runs `rounds` rounds of `steps` steps each in a rotating
    order; returns `[{name: [(wall, CPU) seconds per step]}]`, one dict per round."""
    names = list(runners)
    for name in names:  # Traces / compiles, untimed.
        runners[name](warmup)
    results = []
    for index in range(rounds):
        shift = index % len(names)
        times = {name: runners[name](steps) for name in names[shift:] + names[:shift]}
        results.append(times)
        print(f"  {label} round {index + 1}/{rounds}: " + ", ".join(
            f"{statistics.median(t for t, _ in times[n]) * 1e3:.0f}" for n in names) + " ms",
            file=sys.stderr, flush=True)
    return results


def peer(args):
    """Ours against PyTorch (eager, channels_last, torch.compile) at each `--peer_batches`;
    returns `{batch: [(name, median seconds, ours / this images/s ratio, median CPU
    seconds, ours / this CPU-time ratio)]}`."""
    torch = _import_torch()
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    tables = {}
    for batch in args.peer_batches:
        runners = _peer_runners(args, batch, torch)
        names = list(runners)
        rounds = _interleaved_rounds(runners, args.rounds, args.steps, args.warmup,
                                     f"batch {batch}")
        ours = names[0]
        rows = []
        for name in names:
            row = [name]
            for clock in (0, 1):  # wall, CPU
                row.append(statistics.median(
                    step[clock] for times in rounds for step in times[name]))
                # Each round's ratio compares steps taken under the same machine load.
                row.append(statistics.median(
                    statistics.median(step[clock] for step in times[name])
                    / statistics.median(step[clock] for step in times[ours])
                    for times in rounds))
            rows.append(tuple(row))
        tables[batch] = rows
        del runners
    return tables, torch


def _pipeline_rate(args):
    """SimAugment at the bench's image size through `pipeline.make_dataset` (2 views):
    source images/s, measured by bench/input.py's `pipeline_rate`."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "input.py")
    spec = importlib.util.spec_from_file_location("bench_input", path)
    bench_input = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_input)
    return bench_input.pipeline_rate("simaugment", args.image_size, 128,
                                     args.pipeline_batches,
                                     bench_input.source_for(args.image_size))


def _print_peer(args, tables, torch, load_before):
    print(f"\n### One SupCon training step against PyTorch: ResNet-18 (CIFAR stem) at "
          f"{args.image_size}x{args.image_size}, head {512}->{_PEER_UNITS[0]}->"
          f"{_PEER_UNITS[1]}, tau {_TEMPERATURE}, {args.views} views, SGD momentum 0.9, on "
          f"{os.cpu_count()} CPU cores ({args.threads or 'default'} threads per framework); "
          f"{args.rounds} rounds of {args.steps} step(s) per row "
          f"in rotating order after {args.warmup} warm-up step(s); images/s counts encoded "
          f"views (views x batch / median step); 'ours / this' is the median over rounds of "
          f"the round's ratio of images/s. Load average (1, 5, 15 min) before: "
          f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    if torch is None:
        print("PyTorch is not installed, so only our rows are shown: it is a benchmark-only "
              "peer, not a dependency (`.venv/bin/pip install torch` to compare).\n")
    else:
        print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads), installed for "
              f"this benchmark only (not in requirements.txt).\n")
    print("| batch | step | ms/step | images/s | ours / this (images/s) | CPU s/step | "
          "ours / this (CPU time) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch, rows in tables.items():
        for name, seconds, ratio, cpu, cpu_ratio in rows:
            print(f"| {batch} | {name} | {1e3 * seconds:.0f} | "
                  f"{args.views * batch / seconds:.1f} | {ratio:.2f} | {cpu:.2f} | "
                  f"{cpu_ratio:.2f} |")
    if torch is not None:
        for batch, rows in tables.items():
            ratio = {row[0]: row[2] for row in rows}["PyTorch torch.compile"]
            print(f"\nGoal ours >= 1.1x torch.compile's images/s at batch {batch}: "
                  f"{ratio:.2f}x, {'met' if ratio >= 1.1 else 'NOT met'}.")
    if args.pipeline_batches:
        fed = args.views * _pipeline_rate(args)
        fastest = max(args.views * batch / row[1]
                      for batch, rows in tables.items() for row in rows)
        print(f"\nInput pipeline: SimAugment at {args.image_size} px through "
              f"pipeline.make_dataset ({args.views} views, batch 128, bundled digits) makes "
              f"{fed:.0f} views/s, {fed / fastest:.1f}x the fastest step above "
              f"({fastest:.0f} views/s); goal >= 2x: "
              f"{'met' if fed >= 2 * fastest else 'NOT met'}.")


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
    parser.add_argument("--part", choices=("all", "peer", "throughput", "memory"),
                        default="all")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of both frameworks (TensorFlow intra- and inter-op, "
                        "PyTorch intra-op); 0 = their defaults (one per core)")
    parser.add_argument("--peer_batches", type=int, nargs="+", default=[64, 128],
                        help="SupCon batch sizes of the PyTorch comparison")
    parser.add_argument("--peer_probe", action="store_true",
                        help="also time our step with the online linear probe")
    parser.add_argument("--peer_keras_batch_norm", action="store_true",
                        help="also time our step with Keras' own BatchNormalization (before "
                        "the fused layer)")
    parser.add_argument("--pipeline_batches", type=int, default=8,
                        help="timed input-pipeline batches after the PyTorch comparison (0: "
                        "skip)")
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
    if args.threads:  # Before TensorFlow's runtime starts.
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable)] + sys.argv)
    print(f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores "
          f"({platform.machine()}), devices "
          f"{[d.device_type for d in tf.config.list_physical_devices()]}.")

    if args.part in ("all", "peer"):
        load_before = os.getloadavg()
        tables, torch = peer(args)
        _print_peer(args, tables, torch, load_before)

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
