"""Input-pipeline throughput versus ResNet-50 training-step consumption, on this machine.

For every augmentation policy and image size it times `pipeline.make_dataset(..., num_views=2)`
(images per second, each image giving two augmented views) and one ResNet-50 training step
(`keras.applications.ResNet50(weights=None)`, forward + backward on both views of a batch), then
prints a table of pipeline images/s, model images/s and their ratio (goal: SimAugment at 32 px
feeds >= 2x what the model eats), followed by the command that produced it.

Sources: 32 px uses the bundled digits (32x32); larger sizes use random 256x256 uint8 images
held in memory (decoding JPEGs is not measured). Both are cached by the pipeline.

    .venv/bin/python bench/input.py                    # default: 32 and 224 px, ~3-5 minutes
    .venv/bin/python bench/input.py --sizes 32 --policies simaugment
"""

import argparse
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf.data import pipeline  # noqa: E402

POLICIES = ("simaugment", "autoaugment", "randaugment", "stacked_randaugment")


def source_for(size):
    """The pipeline source of bench images of side `size`: the bundled digits up to 32 px,
    else random 256x256 images in memory."""
    if size <= 32:
        return "digits"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(256, 256, 256, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, size=256)


def pipeline_rate(policy, size, batch_size, batches, source):
    """Images per second (2 views each) of a seeded training pipeline, after warm-up."""
    options = {"blur_probability": 0.5} if policy in ("simaugment", "stacked_randaugment") \
        and size > 32 else {}
    dataset = pipeline.make_dataset(source, policy, 2, batch_size, size, seed=0,
                                    augment_options=options)
    iterator = iter(dataset)
    for _ in range(2):  # warm-up: tracing, cache fill, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        views, _ = next(iterator)
    views.numpy()
    return batches * batch_size / (time.perf_counter() - start)


def model_rate(size, batch_size, steps):
    """Images per second one ResNet-50 training step consumes (2 views per image)."""
    encoder = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                          input_shape=(size, size, 3))
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    views = tf.random.uniform([batch_size, 2, size, size, 3])

    @tf.function
    def train_step(views):
        flat = tf.reshape(tf.transpose(views, [1, 0, 2, 3, 4]), [-1, size, size, 3])
        with tf.GradientTape() as tape:
            features = encoder(flat, training=True)  # [2B, 2048]
            features = tf.math.l2_normalize(features, axis=1)
            first, second = tf.split(features, 2)
            loss = -tf.reduce_mean(tf.reduce_sum(first * second, axis=1))
        grads = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
        return loss

    train_step(views).numpy()  # warm-up: tracing and first allocation
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(views)
    loss.numpy()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--pipeline_batches", type=int, default=8,
                        help="timed batches per pipeline (after 2 warm-up batches)")
    parser.add_argument("--model_steps", type=int, default=2,
                        help="timed ResNet-50 steps per size (after 1 warm-up step)")
    args = parser.parse_args(argv)

    rows = []
    for size in args.sizes:
        batch = 128 if size <= 32 else 16
        model_batch = 64 if size <= 32 else 8
        source = source_for(size)
        eaten = model_rate(size, model_batch, args.model_steps)
        for policy in args.policies:
            fed = pipeline_rate(policy, size, batch, args.pipeline_batches, source)
            rows.append((policy, size, fed, eaten))
            print(f"  measured {policy} @ {size}px: {fed:.1f} img/s vs model {eaten:.1f}",
                  file=sys.stderr, flush=True)

    cores = os.cpu_count()
    print(f"\nInput pipeline (2 views) vs ResNet-50 train step, {cores} CPU cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}")
    print("| policy | size | pipeline img/s | ResNet-50 img/s | ratio |")
    print("|---|---|---|---|---|")
    for policy, size, fed, eaten in rows:
        print(f"| {policy} | {size} | {fed:.1f} | {eaten:.1f} | {fed / eaten:.1f}x |")
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable)] + sys.argv)
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
