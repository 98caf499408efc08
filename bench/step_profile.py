"""Benchmark: where the time of our SupCon training step goes, by kind of op.

The step is bench/train_step.py's `--part peer` row (`SupConModel.fit`, ResNet-18 with the
CIFAR stem at 32x32, head 512 -> 512 -> 128, tau 0.1, 2 views, SGD momentum 0.9, on a constant
batch). TensorFlow's profiler records `--steps` steps after `--warmup` untimed ones; the ops'
durations are read from the profile (`*.xplane.pb`) and summed per kind: convolutions (forward,
gradient of the input, gradient of the kernel), batch norm (forward, gradient), ReLU and its
gradient, residual adds and gradient sums, the explicit padding of strided convolutions and its
gradient, the optimizer's update, and the rest (head, loss, reading variables). TensorFlow runs
one op at a time here (`inter_op_parallelism_threads=1`; every op still uses all `intra` threads)
so that the ops' durations add up to the step instead of overlapping; the table prints both
totals. For the convolutions it also prints the achieved GFLOP/s (2 x multiply-adds of each
layer, counted from its shapes, over the time of its ops) next to the GFLOP/s of a float32
matrix product of `--matmul_size` square matrices measured in the same process, the rate this
CPU sustains on the densest kernel TensorFlow has.

    .venv/bin/python bench/step_profile.py
    .venv/bin/python bench/step_profile.py --batch 128 --steps 3
"""

import argparse
import collections
import glob
import os
import re
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import train_step  # noqa: E402  (bench/train_step.py: the model, batches and timer it uses)

# (kind, predicate on (op type, op name)), first match wins.
_KINDS = (
    ("convolution: gradient of the kernel", lambda t, n: "Conv2DBackpropFilter" in t),
    ("convolution: gradient of the input", lambda t, n: "Conv2DBackpropInput" in t),
    ("convolution: forward", lambda t, n: "Conv2D" in t),
    ("batch norm: gradient", lambda t, n: "FusedBatchNormGrad" in t),
    ("batch norm: forward (with a fused ReLU where grappler fused one)",
     lambda t, n: "FusedBatchNorm" in t),
    ("optimizer update (SGD momentum)", lambda t, n: "/sgd/" in n.lower()),
    ("ReLU and its gradient", lambda t, n: t in ("Relu", "ReluGrad")),
    ("residual adds and gradient sums", lambda t, n: t in ("AddV2", "AddN")),
    ("padding of strided convolutions and its gradient", lambda t, n: t in ("Pad", "Slice")),
)
_CONV_KINDS = [kind for kind, _ in _KINDS[:3]]


def _conv_flops(encoder, images):
    """{layer name: float multiply-adds x 2 of one forward pass of that Conv2D layer}."""
    flops = {}
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_h, kernel_w, in_per_group, _ = layer.kernel.shape
            flops[layer.name] = (2.0 * images * height * width * out_channels * kernel_h
                                 * kernel_w * in_per_group)
    return flops


def _read_profile(logdir):
    """[(op type, op name, seconds)] of every op TensorFlow's executor ran in the profile."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as file:
        space.ParseFromString(file.read())
    ops = []
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # Executor threads only (not the Python caller or tf.data).
            for event in line.events:
                name, _, op_type = names.get(event.metadata_id, "").rpartition(":")
                if name and op_type != "Process":
                    ops.append((op_type, name, event.duration_ps * 1e-12))
    return ops


def _matmul_gflops(size, repeats=10):
    """GFLOP/s of a float32 [size, size] @ [size, size] product (median of `repeats`)."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    product = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    product(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(seconds) * 1e-9


def profile(args):
    """Profiles the step; returns ({kind: seconds per step}, {conv kind: GFLOP/s}, step
    seconds per step (median), op seconds per step)."""
    (views, labels), _ = train_step._batches(args.batch, args.views, 32, 10)
    model = train_step.peer_model(32, jit_compile=False, num_classes=None)
    run = train_step._keras_step_runner(model, train_step._repeated(views, labels))
    run(args.warmup)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        step_seconds = [wall for wall, _ in run(args.steps)]
        tf.profiler.experimental.stop()
        ops = _read_profile(logdir)

    flops = _conv_flops(model.encoder, args.views * args.batch)
    layer_of = re.compile(r"/(" + "|".join(map(re.escape, flops)) + r")(?:_\d+)?/")
    seconds = collections.Counter()
    conv_flops = collections.Counter()
    for op_type, name, duration in ops:
        kind = next((k for k, match in _KINDS if match(op_type, name)),
                    "the rest (head, loss, variables, ...)")
        seconds[kind] += duration / args.steps
        if kind in _CONV_KINDS:
            conv_flops[kind] += flops[layer_of.search(name).group(1)] / args.steps
    gflops = {kind: conv_flops[kind] / seconds[kind] * 1e-9 for kind in _CONV_KINDS}
    return (seconds, gflops, statistics.median(step_seconds),
            sum(duration for _, _, duration in ops) / args.steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="SupCon samples per step")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--matmul_size", type=int, default=2048)
    args = parser.parse_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(1)  # Before the runtime starts.
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable)] + sys.argv)
    load_before = os.getloadavg()

    seconds, gflops, step, op_total = profile(args)
    matmul = _matmul_gflops(args.matmul_size)
    print(f"\n### Where our SupCon step goes: ResNet-18 (CIFAR stem) at 32x32, batch "
          f"{args.batch} x {args.views} views, head 512->{train_step._PEER_UNITS[0]}->"
          f"{train_step._PEER_UNITS[1]}, SGD momentum 0.9, TF {tf.__version__}, "
          f"{os.cpu_count()} CPU cores; {args.steps} profiled steps after {args.warmup} "
          f"warm-up steps, ops run one at a time. Median step {1e3 * step:.0f} ms; the ops "
          f"add up to {1e3 * op_total:.0f} ms per step. Load average before: "
          f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    print("| kind of op | ms/step | share of the ops | GFLOP/s |")
    print("|---|---:|---:|---:|")
    for kind, value in seconds.most_common():
        rate = f"{gflops[kind]:.0f}" if kind in gflops else ""
        print(f"| {kind} | {1e3 * value:.1f} | {100 * value / op_total:.1f}% | {rate} |")
    conv = sum(seconds[kind] for kind in _CONV_KINDS)
    print(f"\nConvolutions: {100 * conv / op_total:.1f}% of the ops; everything else "
          f"{1e3 * (op_total - conv):.0f} ms per step. A float32 {args.matmul_size}x"
          f"{args.matmul_size} matrix product runs at {matmul:.0f} GFLOP/s on this CPU in the "
          f"same process.")
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
