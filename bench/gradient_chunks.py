"""Benchmark: peak memory and step time of gradient caching (`gradient_chunks=k`) against k=1.

One SupCon training step (`SupConModel.train_step` in a `tf.function`, SGD momentum) of a
ResNet-18 (CIFAR stem) at the same global batch for each k. Every measurement runs in a fresh
subprocess so that its peak resident memory (`ru_maxrss`) is its own: the subprocess builds the
model, warms the step up on a batch of k samples (threads, kernels), records its resident memory,
then runs `--steps` steps on the full batch (same trace); "step memory" is the peak minus that baseline. The
k rotate order from round to round and the table gives medians over rounds: ms per step, the
ratio to k=1 measured in the same rounds, and the step memory.

Then the batch that does not fit: each k runs again under an address-space budget
(`resource.setrlimit(RLIMIT_AS)`, set after the warm-up to the process's current size plus
`--budget_mb`, by default the midpoint between the step memory of k=1 and of the largest k), and
the table says whether the step ran or ran out of memory.

    .venv/bin/python bench/gradient_chunks.py [--batch 256] [--chunks 1,2,4,8] [--rounds 3]
"""

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per step (2 views each)")
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--chunks", default="1,2,4,8", help="comma-separated k; 1 first")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget_mb", type=float, default=None,
                        help="address-space budget of the limited runs (default: see above)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit_mb", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chunks = [int(k) for k in args.chunks.split(",")]
    if not chunks or chunks[0] != 1 or any(k < 1 or args.batch < k for k in chunks):
        parser.error(f"--chunks must start with 1 and hold k in [1, batch], got {args.chunks!r}.")
    args.chunk_list = chunks
    return args


def _rss_mb():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmSize"].split()[0]) / 1024


def _child(args):
    """One k: warm-up, baseline, timed steps; prints a JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, REPO)
    import keras
    import numpy as np
    import tensorflow as tf

    from supcon_tf.models import resnet
    from supcon_tf.models.supcon_model import SupConModel

    k = args.child
    keras.utils.set_random_seed(0)
    encoder = resnet.resnet(args.depth, input_shape=(args.image, args.image, 3),
                            width_multiplier=args.width, stem="cifar")
    model = SupConModel(encoder, projection_units=[512, 128], probe=False, gradient_chunks=k)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step, reduce_retracing=True)
    rng = np.random.default_rng(0)

    def batch(size):
        return (tf.constant(rng.uniform(size=(size, 2, args.image, args.image, 3)), tf.float32),
                tf.constant(rng.integers(0, 10, size=size)))

    full = batch(args.batch)
    # Threads and kernels; the second size makes the trace with a dynamic batch dimension that
    # the full batch then reuses (no tracing inside the measurement).
    for size in (k, k + 1):
        float(step(batch(size))["loss"])
    baseline, size = _rss_mb()
    if args.limit_mb is not None:
        limit = int((size + args.limit_mb) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    times = []
    try:
        for _ in range(args.steps):
            start = time.perf_counter()
            float(step(full)["loss"])
            times.append(time.perf_counter() - start)
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        print(json.dumps({"k": k, "ok": False, "error": type(error).__name__}), flush=True)
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"k": k, "ok": True, "ms": 1000 * statistics.median(times),
                      "step_mb": peak - baseline, "baseline_mb": baseline}), flush=True)


def _run(args, k, limit_mb=None):
    command = [sys.executable, os.path.abspath(__file__), f"--child={k}",
               f"--batch={args.batch}", f"--image={args.image}", f"--width={args.width}",
               f"--depth={args.depth}", f"--steps={args.steps}"]
    if limit_mb is not None:
        command.append(f"--limit_mb={limit_mb}")
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    # Killed or aborted under the limit (an allocation TensorFlow cannot handle): no JSON line.
    code = result.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    return {"k": k, "ok": False, "error": how}


def main(argv=None):
    args = _parse(argv)
    if args.child is not None:
        return _child(args)
    chunks = args.chunk_list
    runs = {k: [] for k in chunks}
    for round_index in range(args.rounds):
        shift = round_index % len(chunks)
        for k in chunks[shift:] + chunks[:shift]:
            result = _run(args, k)
            if not result["ok"]:
                sys.exit(f"k={k} failed without a memory limit: {result['error']}")
            runs[k].append(result)
    ms = {k: statistics.median(r["ms"] for r in runs[k]) for k in chunks}
    ratio = {k: statistics.median(r["ms"] / base["ms"] for r, base in zip(runs[k], runs[1]))
             for k in chunks}
    step_mb = {k: statistics.median(r["step_mb"] for r in runs[k]) for k in chunks}
    budget = args.budget_mb or (step_mb[1] + step_mb[chunks[-1]]) / 2
    limited = {k: _run(args, k, limit_mb=budget) for k in chunks}

    print(f"ResNet-{args.depth} x{args.width}, CIFAR stem, {args.image}px, SupCon, head "
          f"512->128, batch {args.batch} x 2 views; {args.rounds} rounds x {args.steps} steps, "
          f"each k in its own process; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'k':>3}{'ms/step':>10}{'time vs k=1':>13}{'step memory MB':>16}"
          f"{'vs k=1':>8}   under a {budget:.0f} MB budget")
    for k in chunks:
        outcome = "runs" if limited[k]["ok"] else f"out of memory ({limited[k]['error']})"
        print(f"{k:>3}{ms[k]:>10.0f}{ratio[k]:>12.2f}x{step_mb[k]:>16.0f}"
              f"{step_mb[k] / step_mb[1]:>7.2f}x   {outcome}")


if __name__ == "__main__":
    main()
