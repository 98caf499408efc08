"""Benchmark: the cost of the non-finite guard in the training step.

One SupCon optimizer step (`supcon_tf.train_loop.make_step_function`, the binaries' step) with
and without the guard (`check_finite`: every weight checked for Inf/NaN after the update, in
the same `tf.function`), on the quickstart's model by default: ResNet-18 x0.25, CIFAR stem,
16 px, 2 views, head 512->128, SGD momentum, the online probe, batch 128. The two
steps alternate in rounds (rotating order) so both see the same machine load; each round times
`--steps` steps of each, and the table gives the median step time and the median over rounds of
the per-round ratio guarded / unguarded (goal <= 1.02x).

    .venv/bin/python bench/guard.py [--batch 128] [--image 16] [--width 0.25] [--rounds 9]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf import train_loop  # noqa: E402
from supcon_tf.models import resnet  # noqa: E402
from supcon_tf.models.supcon_model import SupConModel  # noqa: E402


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image", type=int, default=16)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=9)
    return parser.parse_args()


def main():
    args = _parse()
    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(args.depth, input_shape=(args.image, args.image, 3),
                            width_multiplier=args.width, stem="cifar")
    model = SupConModel(encoder, projection_units=[512, 128], num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.uniform(size=(args.batch, 2, args.image, args.image, 3)),
                         tf.float32),
             tf.constant(rng.integers(0, 10, size=args.batch)))
    steps = {"unguarded": train_loop.make_step_function(model, strategy, check_finite=False),
             "guarded": train_loop.make_step_function(model, strategy, check_finite=True)}
    for step in steps.values():  # trace and warm up
        for _ in range(2):
            float(step(batch)["loss"])
    times = {name: [] for name in steps}
    ratios = []
    names = list(steps)
    for round_index in range(args.rounds):
        order = names[round_index % 2:] + names[:round_index % 2]
        this_round = {}
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                float(steps[name](batch)["loss"])  # the loop syncs the logs every step too
            this_round[name] = (time.perf_counter() - start) / args.steps
            times[name].append(this_round[name])
        ratios.append(this_round["guarded"] / this_round["unguarded"])
    parameters = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"ResNet-{args.depth} x{args.width}, {args.image}px, batch {args.batch} x 2 views, "
          f"{parameters:,} weights checked; {args.rounds} rounds x {args.steps} steps; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'step':<12}{'median ms/step':>16}{'ratio':>10}")
    for name in names:
        median = statistics.median(times[name])
        ratio = statistics.median(ratios) if name == "guarded" else 1.0
        print(f"{name:<12}{1000 * median:>16.1f}{ratio:>9.3f}x")


if __name__ == "__main__":
    main()
