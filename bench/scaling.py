"""Benchmark: multi-worker scaling, 1 vs 2 workers on loopback at the same global batch.

Each configuration runs the binaries' training step (`supcon_tf.train_loop.make_step_function`
under `MultiWorkerMirroredStrategy`; one worker is a one-worker cluster, so both pay for the
strategy) on ResNet-18 x0.25, CIFAR stem, 16 px, 2 views, SGD momentum, the online probe, with
synthetic images (the input pipeline is not measured here: `bench/input.py` does that). Every
worker is a separate process started with its own `TF_CONFIG`; the configurations alternate in
rounds and the table gives the median steps/s and images/s and the efficiency

    efficiency = (images/s with 2 workers) / (images/s with 1 worker x host share)

where the host share is 1: on one host the two workers share the same CPU cores that one
worker had to itself (each worker runs cores / workers threads), so ideal scaling here is
1.0x (no speed-up, no loss), and anything below it is the cost of the cross-worker all-reduce
and gathers over loopback. On separate hosts the ideal is 2.0x; this is an honest lower bound
for them, not a measurement.

    .venv/bin/python bench/scaling.py [--global_batch 128] [--steps 10] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _worker(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    from supcon_tf import distribute

    # The workers share this host's cores: each gets its share of threads, as one worker per
    # host would have the host's. Set before the strategy initialises the runtime.
    workers = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])
    threads = max(1, os.cpu_count() // workers)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    strategy = distribute.make_strategy("multiworker")  # first: before any other TF op
    import keras
    import numpy as np

    from supcon_tf import train_loop
    from supcon_tf.models import resnet
    from supcon_tf.models.supcon_model import SupConModel

    replicas = strategy.num_replicas_in_sync
    per_replica = args.global_batch // replicas
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder = resnet.resnet(18, input_shape=(16, 16, 3), width_multiplier=0.25,
                                stem="cifar", sync_batch_norm=True)
        model = SupConModel(encoder, projection_units=[512, 128], num_classes=10,
                            sync_batch_norm=True)
        model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
        model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(strategy.cluster_resolver.task_id)
    images = rng.uniform(size=(per_replica, 2, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, size=per_replica)

    def dataset_fn(context):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return tf.data.Dataset.from_tensors((images, labels)).repeat().with_options(options)

    batches = iter(strategy.distribute_datasets_from_function(dataset_fn))
    step = train_loop.make_step_function(model, strategy)
    for _ in range(args.warmup):
        float(step(next(batches))["loss"])
    start = time.perf_counter()
    for _ in range(args.steps):
        float(step(next(batches))["loss"])
    elapsed = time.perf_counter() - start
    if strategy.cluster_resolver.task_id == 0:
        print(json.dumps({"seconds_per_step": elapsed / args.steps}), flush=True)


def _run(num_workers, args):
    sys.path.insert(0, ROOT)
    from supcon_tf import distribute

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, os.path.abspath(__file__), "--worker",
               f"--global_batch={args.global_batch}", f"--steps={args.steps}",
               f"--warmup={args.warmup}"]
    workers = [subprocess.Popen(command, env=dict(env, TF_CONFIG=config),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for config in distribute.local_cluster_configs(num_workers)]
    outputs = [worker.communicate(timeout=900) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        if worker.returncode:
            raise SystemExit(f"a worker failed:\n{stderr[-2000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])["seconds_per_step"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global_batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    times = {1: [], 2: []}
    for round_index in range(args.rounds):
        for workers in ((1, 2) if round_index % 2 == 0 else (2, 1)):
            times[workers].append(_run(workers, args))
    print(f"ResNet-18 x0.25, 16 px, 2 views, global batch {args.global_batch}; "
          f"{args.rounds} rounds x {args.steps} steps; {os.cpu_count()} CPU cores on one host; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'workers':<9}{'steps/s':>9}{'images/s':>10}{'efficiency':>12}")
    base = None
    for workers, values in times.items():
        steps_per_second = 1.0 / statistics.median(values)
        images = steps_per_second * args.global_batch
        base = base or images
        print(f"{workers:<9}{steps_per_second:>9.2f}{images:>10.1f}{images / base:>11.2f}x")
    return None


if __name__ == "__main__":
    main()
