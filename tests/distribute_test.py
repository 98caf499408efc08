"""Tests for `supcon_tf.distribute`: the strategy factory, the cross-replica gather, and a
two-process `MultiWorkerMirroredStrategy` run checked against one process.

The mirrored tests use the two logical CPU devices that `conftest.py` configures. The
multi-worker test starts two worker processes of `multiworker_worker.py` on free loopback ports
(a `TF_CONFIG` cluster of two workers on 127.0.0.1); every subprocess has a timeout, so a stuck
collective fails the test instead of hanging the suite.
"""

import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import multiworker_worker
from supcon_tf import distribute

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_ROOT, "tests", "multiworker_worker.py")
_CPUS = ["/cpu:0", "/cpu:1"]


def _free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _child_env(**extra):
    """Environment of a child process: this one's, with the repo importable and no proxies."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")}
    env.update(PYTHONPATH=os.pathsep.join([_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", **extra)
    return env


# ---------------------------------------------------------------------------------------------
# make_strategy.
# ---------------------------------------------------------------------------------------------

def test_default_is_the_default_strategy():
    strategy = distribute.make_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribute.make_strategy() is strategy


def test_mirrored_over_two_logical_cpus_has_two_replicas():
    strategy = distribute.make_strategy("mirrored", devices=_CPUS)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert [d.split("/")[-1] for d in strategy.extended.worker_devices] == [
        "device:CPU:0", "device:CPU:1"]


@pytest.mark.parametrize("name", ["horovod", "Mirrored", "", "parameter_server"])
def test_unknown_strategy_name_is_refused(name):
    with pytest.raises(ValueError, match=rf"Unknown strategy {name!r}; use one of default, "
                                         r"mirrored, multiworker, tpu\."):
        distribute.make_strategy(name)


def test_tpu_without_an_address_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match=r"Strategy 'tpu' needs a TPU address: pass --tpu="):
        distribute.make_strategy("tpu")


# What follows is as far as TPUStrategy can be checked without a TPU. Nothing listens on the
# address, so connecting must fail; it fails at once only where gRPC is told to fail fast.
_CONNECT_TPU = """
import sys
from supcon_tf import distribute
distribute.make_strategy("tpu", tpu=sys.argv[1])
"""


def test_tpu_at_an_unreachable_address_fails_at_once_naming_it():
    address = f"127.0.0.1:{_free_port()}"  # Nothing listens there.
    result = subprocess.run(
        [sys.executable, "-c", _CONNECT_TPU, f"grpc://{address}"], capture_output=True,
        text=True, timeout=120, cwd=_ROOT, env=_child_env())
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "ValueError" in last_line and f"TPU worker {address}" in last_line, last_line
    assert "does not answer" in last_line


@pytest.mark.parametrize("tpu", ["no-such-tpu-here", "local"])
def test_tpu_that_cannot_be_resolved_is_refused_naming_it(tpu):
    with pytest.raises(ValueError, match=r"Cannot find the TPU --tpu=" + re.escape(repr(tpu))):
        distribute.make_strategy("tpu", tpu=tpu)


# ---------------------------------------------------------------------------------------------
# gather_global under MirroredStrategy.
# ---------------------------------------------------------------------------------------------

def test_gather_outside_a_replica_context_returns_the_inputs():
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    (gathered,), offset = distribute.gather_global(x)
    assert gathered is x and offset == 0
    assert distribute.num_replicas_in_sync() == 1


@pytest.mark.parametrize("sizes", [(3, 3), (2, 3), (4, 1)], ids=["equal", "2+3", "4+1"])
def test_gather_concatenates_replicas_in_order_with_exact_gradients(sizes, two_cpu_strategy):
    rng = np.random.default_rng(sum(sizes))
    total = sum(sizes)
    starts = np.cumsum((0,) + sizes[:-1])
    features = rng.normal(size=(total, 2, 3)).astype("float32")
    labels = rng.integers(0, 100, size=total)
    # Replica r weighs the gathered batch by its own weights: d loss / d features is the sum
    # over replicas of their weights at the local rows.
    weights = rng.normal(size=(len(sizes), total, 2, 3)).astype("float32")
    strategy = two_cpu_strategy

    def local_rows(context):
        replica = context.replica_id_in_sync_group
        rows = slice(starts[replica], starts[replica] + sizes[replica])
        return (tf.constant(features[rows]), tf.constant(labels[rows]),
                tf.constant(weights[replica]))

    inputs = strategy.experimental_distribute_values_from_function(local_rows)

    def replica_fn(local_features, local_labels, replica_weights):
        with tf.GradientTape() as tape:
            tape.watch(local_features)
            (all_features, all_labels), offset = distribute.gather_global(
                local_features, local_labels)
            loss = tf.reduce_sum(all_features * replica_weights)
        return (all_features, all_labels, offset, tape.gradient(loss, local_features),
                distribute.num_replicas_in_sync())

    @tf.function
    def step(values):
        return strategy.run(replica_fn, args=values)

    outputs = [strategy.experimental_local_results(t) for t in step(inputs)]
    for replica, (all_features, all_labels, offset, gradient, replicas) in enumerate(
            zip(*outputs)):
        np.testing.assert_array_equal(all_features.numpy(), features)
        np.testing.assert_array_equal(all_labels.numpy(), labels)
        assert int(offset) == starts[replica]
        assert int(replicas) == 2
        rows = slice(starts[replica], starts[replica] + sizes[replica])
        np.testing.assert_allclose(gradient.numpy(), weights.sum(0)[rows], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: two local worker processes against one process.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def multiworker_run(tmp_path_factory):
    """Runs the two-worker pair once, and one process on the global batches meanwhile.

    Returns:
        `{mode: (initial, reference, per_worker)}`: weight dicts before and after one process
        fits the global batches, and per worker the weights after the two-worker run (or the
        error text of a mode that raised).
    """
    directory = tmp_path_factory.mktemp("multiworker")
    models = {kind: multiworker_worker.build_model(memory=kind == "memory")
              for kind in ("plain", "memory")}
    initial = {}
    for kind, model in models.items():
        initial[kind] = multiworker_worker.flat_weights(model)
        np.savez(directory / f"initial.{kind}.npz", **initial[kind])

    workers = []
    for config in distribute.local_cluster_configs(2):
        workers.append(subprocess.Popen(
            [sys.executable, _WORKER, str(directory)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=_ROOT, env=_child_env(TF_CONFIG=config)))

    # Meanwhile, one process on the global batches: plain fit, no strategy.
    views, labels = multiworker_worker.global_data()
    reference = {}
    for kind, model in models.items():
        model.fit(views, labels, batch_size=multiworker_worker.GLOBAL_BATCH, epochs=1,
                  shuffle=False, verbose=0)
        reference[kind] = multiworker_worker.flat_weights(model)
    try:
        outputs = [worker.communicate(timeout=240) for worker in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
            worker.communicate()
        pytest.fail("the two MultiWorkerMirroredStrategy workers did not finish in 240 s")
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]

    results = {}
    for mode in multiworker_worker.MODES:
        kind = "memory" if mode.endswith("memory") else "plain"
        per_worker = []
        for index in range(2):
            error = directory / f"worker{index}.{mode}.error.txt"
            if error.exists():
                per_worker = error.read_text()
                break
            with np.load(directory / f"worker{index}.{mode}.npz") as archive:
                per_worker.append(dict(archive))
        results[mode] = (initial[kind], reference[kind], per_worker)
    return results


def _check_agreement(initial, reference, per_worker):
    """Both workers end with the same weights, those of the one process, and they moved."""
    if isinstance(per_worker, str):
        pytest.fail(f"the workers raised {per_worker.splitlines()[0][:300]}")
    assert set(reference) == set(initial) == set(per_worker[0]) == set(per_worker[1])
    for key in reference:
        np.testing.assert_allclose(per_worker[0][key], per_worker[1][key], rtol=0, atol=1e-6)
        np.testing.assert_allclose(per_worker[0][key], reference[key], rtol=1e-5, atol=1e-5,
                                   err_msg=key)
    assert max(np.abs(reference[k] - initial[k]).max() for k in reference) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train_step", "train_step_memory", "train_loop"])
def test_two_workers_take_the_same_steps_as_one_process(multiworker_run, mode):
    """`SupConModel.train_step` run per replica by the strategy (what `fit` runs each step),
    each worker fed its half of every global batch: with sync BN, the probe, SGD momentum and
    (memory) the momentum encoder and a wrapping key queue, both workers end with the weights
    (queue, labels and pointer included) of one process fitting the global batches."""
    _check_agreement(*multiworker_run[mode])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "keras-team/keras#20585: Keras 3.15 `fit` under MultiWorkerMirroredStrategy reduces the "
    "whole first (x, y) batch in one strategy.reduce call (_maybe_symbolic_build), which the "
    "strategy rejects, and then reduces scalar logs with axis=0 (reduce_per_replica)."))
@pytest.mark.parametrize("mode", ["fit_dataset_fn", "fit_arrays"])
def test_two_workers_fit_like_one_process(multiworker_run, mode):
    _check_agreement(*multiworker_run[mode])


def test_local_cluster_configs_name_distinct_loopback_workers():
    import json

    configs = [json.loads(c) for c in distribute.local_cluster_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    with pytest.raises(ValueError, match="num_workers"):
        distribute.local_cluster_configs(0)


_CPU_DEVICES = r"""
import sys
from supcon_tf import distribute
devices = distribute.configure_cpu_devices(3)
strategy = distribute.make_strategy("mirrored", devices=devices)
import tensorflow as tf
tf.constant(1.0)
try:
    distribute.configure_cpu_devices(2)
    late = "accepted"
except ValueError as error:
    late = str(error)
print(strategy.num_replicas_in_sync, devices, late)
"""


def test_cpu_devices_give_mirrored_replicas_and_refuse_a_late_change():
    result = subprocess.run([sys.executable, "-c", _CPU_DEVICES], capture_output=True,
                            text=True, timeout=120, cwd=_ROOT, env=_child_env())
    assert result.returncode == 0, result.stderr[-2000:]
    replicas, _, late = result.stdout.strip().splitlines()[-1].partition(" ")
    assert replicas == "3" and "['/cpu:0', '/cpu:1', '/cpu:2']" in late
    assert "already running with 3" in late and "before any other TensorFlow op" in late
    with pytest.raises(ValueError, match="cpu_devices"):
        distribute.configure_cpu_devices(0)
