"""Benchmark: forward + backward of `contrastive_loss` against the matrix-product floor.

Any SupCon formulation must do three matrix products at 2N x 2N x d: the logits z.z^T forward
and two [2N, 2N] x [2N, d] products backward. This script times those three products (the
floor), a plain TensorFlow matrix formula that builds the full [2N, 2N] masks (the usual way,
with autodiff), and `contrastive_loss` with its default options and with the options that cost
more, all in the same process, and prints a markdown table of times and ratios to the floor.
Two rows give the labels as label sets (multi-label SupCon's Jaccard-weighted path): the same
classes one-hot, and multi-hot sets of about 3 classes each.

Peak memory is TensorFlow's own allocator peak on the CPU device (`get_memory_info`) above what
was in use before the call, shown against the [2N, 2N] float32 logits matrix every formulation
must hold.

    .venv/bin/python bench/loss.py                 # 2048 samples x 2 views x 128 dims
    .venv/bin/python bench/loss.py --batch 512     # quicker
"""

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf import losses  # noqa: E402


def plain_matrix_supcon(features, labels, temperature):
    """The straightforward formula: full [2N, 2N] masks, autodiff for the gradient."""
    views = features.shape[1]
    contrast = tf.concat(tf.unstack(features, axis=1), axis=0)  # [V*N, d], view-major
    logits = tf.matmul(contrast, contrast, transpose_b=True) / temperature
    logits -= tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    not_self = 1.0 - tf.eye(tf.shape(contrast)[0])
    positives = tf.tile(same, [views, views]) * not_self
    exp_logits = tf.exp(logits) * not_self
    log_prob = logits - tf.math.log(tf.reduce_sum(exp_logits, axis=1, keepdims=True))
    mean_log_prob = tf.reduce_sum(positives * log_prob, 1) / tf.reduce_sum(positives, 1)
    return -temperature * tf.reduce_mean(mean_log_prob)


def _forward_backward(loss_fn, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def step(features, labels):
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = loss_fn(features, labels)
        return loss, tape.gradient(loss, features)
    return step


def _matmul_floor():
    @tf.function
    def step(features, labels):
        del labels
        contrast = tf.concat(tf.unstack(features, axis=1), axis=0)
        logits = tf.matmul(contrast, contrast, transpose_b=True)
        return (tf.matmul(logits, contrast),
                tf.matmul(logits, contrast, transpose_a=True))
    return step


def _measure(step, features, labels, repeats):
    for _ in range(2):  # Trace / compile and warm up.
        tf.nest.map_structure(lambda t: t.numpy(), step(features, labels))
    device = "CPU:0"
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step(features, labels))
        times.append(time.perf_counter() - start)
    peak = tf.config.experimental.get_memory_info(device)["peak"] - before
    return 1e3 * float(np.median(times)), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    z = rng.normal(size=(args.batch, args.views, args.dim)).astype("float32")
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    features = tf.constant(z)
    labels = tf.constant(rng.integers(0, args.classes, size=args.batch))
    one_hot_sets = tf.one_hot(labels, args.classes)
    multi_hot_sets = tf.constant(
        (rng.random((args.batch, args.classes)) < 3.0 / args.classes).astype("float32"))
    tau = args.temperature

    def ours(label_sets=None, **options):
        return lambda f, y: tf.reduce_mean(losses.contrastive_loss(
            f, y if label_sets is None else label_sets, temperature=tau, **options))

    rows = [
        ("matrix-product floor (3 matmuls)", _matmul_floor()),
        ("plain TF matrix formula, full masks", _forward_backward(
            lambda f, y: plain_matrix_supcon(f, y, tau))),
        ("plain TF matrix formula, XLA", _forward_backward(
            lambda f, y: plain_matrix_supcon(f, y, tau), jit_compile=True)),
        ("contrastive_loss (defaults)", _forward_backward(ours())),
        ("contrastive_loss (defaults), XLA", _forward_backward(ours(), jit_compile=True)),
        ("  labels=None (SimCLR)", _forward_backward(
            lambda f, y: tf.reduce_mean(losses.contrastive_loss(f, None, temperature=tau)))),
        ("  contrast_mode=one_view", _forward_backward(ours(contrast_mode="one_view"))),
        ("  summation=inside", _forward_backward(ours(summation="inside"))),
        ("  denominator=one_positive", _forward_backward(ours(denominator="one_positive"))),
        ("  denominator=only_negatives", _forward_backward(
            ours(denominator="only_negatives"))),
        ("  positives_cap=5", _forward_backward(ours(positives_cap=5))),
        ("  one-hot label sets", _forward_backward(ours(one_hot_sets))),
        ("  multi-hot label sets (~3 classes each)", _forward_backward(ours(multi_hot_sets))),
    ]
    anchors = args.batch * args.views
    logits_bytes = anchors * anchors * 4
    results = []
    for name, step in rows:
        results.append((name, *_measure(step, features, labels, args.repeats)))
        print(f"  measured {name.strip()}", file=sys.stderr)

    floor_ms = results[0][1]
    print(f"\ncontrastive_loss forward+backward, {args.batch} samples x {args.views} views x "
          f"{args.dim} dims, tau={tau}, {args.classes} classes; median of {args.repeats}; "
          f"TF {tf.__version__}, {os.cpu_count()} CPU cores ({platform.machine()}).")
    print(f"Logits [{anchors}, {anchors}] float32 = {logits_bytes / 2**20:.0f} MiB.\n")
    print("| formulation | ms | x floor | peak MiB | x logits |")
    print("|---|---:|---:|---:|---:|")
    for name, ms, peak in results:
        print(f"| {name} | {ms:.1f} | {ms / floor_ms:.2f} | {peak / 2**20:.0f} | "
              f"{peak / logits_bytes:.2f} |")
    print(f"\ncommand: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")


if __name__ == "__main__":
    main()
