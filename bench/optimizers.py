"""Benchmark: LARS step time vs Keras SGD(momentum=0.9) on ResNet-50's variables.

Each optimizer updates the 214 trainable variables (25.6 M parameters) of
`keras.applications.ResNet50(weights=None)` from fixed random gradients, with
`apply_gradients` inside a `tf.function` (optionally XLA-compiled). Timings alternate between
the optimizers in rounds and report the median per step, so both see the same machine load; the
ratio is LARS / SGD in the same run (goal <= 1.3x).

    .venv/bin/python bench/optimizers.py [--steps 20] [--rounds 5] [--modes graph,xla]
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


def _optimizers():
    return {
        "SGD(momentum=0.9)": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        "LARS(wd=1e-4)": lambda: optimizers.LARS(0.1, momentum=0.9, weight_decay=1e-4),
        "LARS(wd=1e-4, nesterov)": lambda: optimizers.LARS(0.1, momentum=0.9,
                                                           weight_decay=1e-4, nesterov=True),
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
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per optimizer")
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
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
        baseline = statistics.median(times["SGD(momentum=0.9)"])
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"| {mode:5} | {name:24} | {median:8.2f} | {median / baseline:5.2f}x |")


if __name__ == "__main__":
    main()
