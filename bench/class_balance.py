"""Benchmark: what class-balanced batches (`samples_per_class=m`) give and cost.

1. Coverage. A source with classes of very different sizes (`--sizes`, images per class); the
   balanced pipeline draws `batch / m` classes per batch in proportion to their size. Over
   `--epochs` epochs' worth of batches the table gives, per class, how often each of its images
   was used per epoch (1.0 is the ideal), next to what a uniform choice of classes (the usual
   metric-learning sampler) would give in expectation, and the share of batches whose classes
   are all distinct with m images each.
2. Speed. Batches per second of the two-view SimAugment pipeline on the bundled digits at
   `--image_size`, plain shuffling against `samples_per_class=m`, in interleaved rounds (medians
   and the median per-round ratio).

    .venv/bin/python bench/class_balance.py [--m 2] [--batch 8] [--epochs 40] [--rounds 5]

A class heavier than 1 / (batch / m) of the images cannot be drawn in proportion (it appears at
most once per batch), so its images are used less than once per epoch and the others a little
more; the default sizes stay below that.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf.data import pipeline  # noqa: E402


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="24,20,16,12,12,10,8,8,6,6,6,5,4,4,4,3,3,3,3,3",
                        help="images per class of the coverage source")
    parser.add_argument("--m", type=int, default=2, help="samples per class")
    parser.add_argument("--batch", type=int, default=8, help="coverage batch size")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--speed_batch", type=int, default=64)
    parser.add_argument("--speed_batches", type=int, default=20)
    parser.add_argument("--speed_m", type=int, default=8,
                        help="samples per class of the speed run (digits has 10 classes)")
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


def coverage(sizes, m, batch, epochs):
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    if len(labels) > 256:
        raise SystemExit("--sizes: at most 256 images in all (each image's grey level is its "
                         "index).")
    # The image of example i is flat grey level i, so every use is counted exactly.
    images = np.broadcast_to(np.arange(len(labels), dtype=np.uint8)[:, None, None, None],
                             (len(labels), 2, 2, 3)).copy()
    steps = epochs * len(labels) // batch
    dataset = pipeline.make_dataset((images, labels), "eval", 1, batch, 2, seed=0,
                                    samples_per_class=m)
    uses, balanced = np.zeros(len(labels)), 0
    for views, batch_labels in dataset.take(steps):
        index = np.rint(views.numpy()[:, 0, 0, 0, 0] * 255).astype(int)
        np.add.at(uses, index, 1)
        values, counts = np.unique(batch_labels.numpy(), return_counts=True)
        balanced += int(len(values) == batch // m and (counts == m).all())
    sizes = np.array(sizes)
    per_class = np.bincount(labels, weights=uses) / (sizes * epochs)
    # Uniform choice of batch/m distinct classes: each class is in a batch with probability
    # (batch/m)/C and then gives m images.
    uniform = steps * (batch / m) / len(sizes) * m / (sizes * epochs)
    return sizes, per_class, uniform, balanced / steps


def speed(image_size, batch, batches, m, rounds):
    def rate(samples_per_class):
        dataset = pipeline.make_dataset("digits", "simaugment", 2, batch, image_size, seed=0,
                                        samples_per_class=samples_per_class)
        iterator = iter(dataset)
        next(iterator)  # start-up: the class streams, the cache
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches / (time.perf_counter() - start)

    plain, balanced, ratios = [], [], []
    for round_index in range(rounds):
        order = (None, m) if round_index % 2 == 0 else (m, None)
        measured = {k: rate(k) for k in order}
        plain.append(measured[None])
        balanced.append(measured[m])
        ratios.append(measured[m] / measured[None])
    return statistics.median(plain), statistics.median(balanced), statistics.median(ratios)


def main():
    args = _parse()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"TF {tf.__version__}, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    sizes, per_class, uniform, share = coverage(sizes, args.m, args.batch, args.epochs)
    print(f"\nCoverage: batch {args.batch}, samples_per_class {args.m}, {args.epochs} epochs; "
          f"{share:.1%} of batches hold {args.batch // args.m} distinct classes x {args.m}.\n")
    print("| class size | uses per image and epoch (balanced) | uniform class choice |")
    print("|---:|---:|---:|")
    for size, value, expected in zip(sizes, per_class, uniform):
        print(f"| {size} | {value:.2f} | {expected:.2f} |")
    plain, balanced, ratio = speed(args.image_size, args.speed_batch, args.speed_batches,
                                   args.speed_m, args.rounds)
    print(f"\nSpeed: digits, SimAugment 2 views at {args.image_size} px, batch "
          f"{args.speed_batch}, {args.rounds} interleaved rounds (medians).\n")
    print("| pipeline | batches/s | x plain |")
    print("|---|---:|---:|")
    print(f"| plain shuffle | {plain:.1f} | 1.00 |")
    print(f"| samples_per_class={args.speed_m} | {balanced:.1f} | {ratio:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
