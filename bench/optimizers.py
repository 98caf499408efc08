"""Benchmark: LARS step time vs Keras SGD(momentum=0.9) on ResNet-50's variables.

Each optimizer updates the 214 trainable variables (25.6 M parameters) of
`keras.applications.ResNet50(weights=None)` from fixed random gradients, with
`apply_gradients` inside a `tf.function` (optionally XLA-compiled). Timings alternate between
the optimizers in rounds (in a rotating order) and report the median per step, so both see the
same machine load; the ratio is LARS / SGD in the same run, the median over rounds of each
round's ratio (goal <= 1.3x). The baseline is Keras' own SGD, traced in
the same `tf.function` (same mode, same variables and gradients, same alternation) as LARS.
Outside XLA, LARS runs TensorFlow's fused training kernels (`LARS.use_fused_kernels`); the
"keras.ops" row shows its backend-agnostic update for reference (under XLA both rows run it).

    .venv/bin/python bench/optimizers.py [--steps 10] [--rounds 11] [--modes graph,xla]
"""

import argparse
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

from supcon_tf import optimizers  # noqa: E402


def _ops_only_lars(**kwargs):
    optimizer = optimizers.LARS(**kwargs)
    optimizer.use_fused_kernels = False
    return optimizer


def _optimizers():
    return {
        "SGD(momentum=0.9)": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        "LARS(wd=1e-4)": lambda: optimizers.LARS(0.1, momentum=0.9, weight_decay=1e-4),
        "LARS(wd=1e-4, nesterov)": lambda: optimizers.LARS(0.1, momentum=0.9,
                                                           weight_decay=1e-4, nesterov=True),
        # For reference: the backend-agnostic keras.ops update (what runs on other backends
        # and under XLA, where it is the only path).
        "LARS(wd=1e-4) keras.ops": lambda: _ops_only_lars(learning_rate=0.1, momentum=0.9,
                                                          weight_decay=1e-4),
    }


def _make_step(optimizer, variables, gradients, jit_compile, steps):
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def one_step():
        optimizer.apply_gradients(zip(gradients, variables))

    def run():
        for _ in range(steps):
            one_step()
        # Reading a variable waits for the last update.
        return float(optimizer.iterations.numpy())

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds per optimizer")
    parser.add_argument("--modes", default="graph,xla",
                        help="comma-separated: graph (tf.function) and/or xla (jit_compile)")
    args = parser.parse_args(argv)

    print("command:", " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, devices "
          f"{[d.device_type for d in tf.config.list_logical_devices()]}")

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(scale=1e-3, size=v.shape).astype(np.float32))
                 for v in variables]
    n_params = sum(int(np.prod(v.shape)) for v in variables)
    print(f"ResNet50: {len(variables)} trainable variables, {n_params / 1e6:.1f} M parameters; "
          f"{args.steps} steps x {args.rounds} rounds, median ms/step")
    print()
    print(f"| {'mode':5} | {'optimizer':24} | {'ms/step':>8} | {'vs SGD':>6} |")
    print(f"|{'-' * 7}|{'-' * 26}|{'-' * 10}|{'-' * 8}|")
    for mode in args.modes.split(","):
        if mode not in ("graph", "xla"):
            raise ValueError(f"Unknown mode {mode!r}; use graph and/or xla.")
        runners = {}
        for name, factory in _optimizers().items():
            runners[name] = _make_step(factory(), variables, gradients, mode == "xla",
                                       args.steps)
            runners[name]()  # Trace/compile and warm up.
        times = {name: [] for name in runners}
        names = list(runners)
        for round_index in range(args.rounds):
            # Rotate the order every round so no optimizer always runs first (or right after
            # another one) under the same load.
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runners[name]()
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
        baseline = times["SGD(momentum=0.9)"]
        for name, samples in times.items():
            # The ratio pairs each round with the baseline's round (same load), then takes the
            # median over rounds; on a shared machine this is steadier than a ratio of medians.
            ratio = statistics.median(t / b for t, b in zip(samples, baseline))
            print(f"| {mode:5} | {name:24} | {statistics.median(samples):8.2f} | "
                  f"{ratio:5.2f}x |")


if __name__ == "__main__":
    main()
