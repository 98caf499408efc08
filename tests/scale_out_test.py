"""Scale-out through the binaries: mirrored replicas on logical CPUs against one device, two
worker processes on loopback against one process, and every binary on TensorFlow's in-process
`ram://` filesystem (standing in for `gs://`) against the same run on the local disk."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from helpers import REPO
from helpers import TINY_FLAGS
from helpers import checkpoint_values
from helpers import run_binary
from helpers import tiny_run_dir
from helpers import user_stderr_lines
from helpers import write_folders
from supcon_tf import distribute

pytestmark = pytest.mark.slow

# Sync BN makes a replica's statistics those of the global batch, as on one device.
_ARGS = [f"--flagfile={TINY_FLAGS}", "--train_steps=4", "--sync_batch_norm",
         "--monitor_examples=64"]


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
    """The one-device run of `_ARGS` both scale-out comparisons are made against."""
    model_dir = str(tmp_path_factory.mktemp("scale_out") / "single")
    result = run_binary("supcon_tf.pretrain", *_ARGS, f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_mirrored_two_cpu_replicas_equal_one_device(single_device_run, tmp_path):
    single, mirrored = single_device_run, str(tmp_path / "mirrored")
    result = run_binary("supcon_tf.pretrain", *_ARGS, "--cpu_devices=2", "--strategy=mirrored",
                        f"--model_dir={mirrored}")
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _results(single), _results(mirrored)
    assert one["steps"] == two["steps"] == 4
    # The kNN monitor and the export ran under the strategy.
    assert two["knn_accuracy"] == pytest.approx(one["knn_accuracy"], abs=0.02)
    assert os.path.exists(os.path.join(mirrored, "saved_model", "saved_model.pb"))
    for key, value in one["final"].items():  # metrics of the global batch on both
        assert two["final"][key] == pytest.approx(value, rel=1e-3), key
    # Same global batches; only the summation order differs (two half-batch sums, all-reduced).
    a, b = checkpoint_values(mirrored), checkpoint_values(single)
    assert a.keys() == b.keys()
    for key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-4, err_msg=key)


def test_bad_cpu_devices_is_one_line(tmp_path):
    result = run_binary("supcon_tf.pretrain", *_ARGS, "--cpu_devices=2",
                        f"--model_dir={tmp_path / 'run'}")
    lines = user_stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1
    assert "--cpu_devices=2 only makes sense with --strategy=mirrored" in lines[0]
    assert not os.path.exists(tmp_path / "run")


def _worker_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "supcon_worker_*")))


def test_two_workers_on_loopback_train_like_one_process(single_device_run, tmp_path):
    """The same command on two workers, only TF_CONFIG differing: the chief owns --model_dir,
    the other worker prints nothing and removes its temporary directory; both take the same
    steps as one process with the same global batch and seed.

    The losses are not bit-equal: each worker reads its own shard of the source (every example
    once per epoch over the workers, each shard shuffled and augmented with its own seeds), so
    the global batches are a different draw from the same data than one process's. After 4
    steps of this tiny run the final losses agree within 5%; the model, loss, schedule and
    gradients are those of the one-process run (tests/distribute_test.py checks the step itself
    to 1e-5 with identical batches)."""
    single, multi = single_device_run, str(tmp_path / "multi")

    before = _worker_dirs()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", NO_PROXY="127.0.0.1,localhost")
    start = time.time()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "supcon_tf.pretrain", *_ARGS, "--strategy=multiworker",
         f"--model_dir={multi}"], cwd=REPO, env=dict(env, TF_CONFIG=config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for config in distribute.local_cluster_configs(2)]
    try:
        outputs = [worker.communicate(timeout=400) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    print(f"two workers: {time.time() - start:.1f} s")
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert "done: 4 steps" in outputs[0][0]
    assert outputs[1][0].strip() == ""  # the other worker says nothing
    assert _worker_dirs() == before  # and leaves no temporary directory behind
    one, two = _results(single), _results(multi)
    assert two["steps"] == one["steps"] == 4
    assert not os.path.exists(os.path.join(multi, "lock.json"))
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(
        multi, "checkpoints", "ckpt-*.index"))) == ["ckpt-2.index", "ckpt-4.index"]
    assert two["final"]["contrastive_loss"] == pytest.approx(
        one["final"]["contrastive_loss"], rel=0.05)


# ---------------------------------------------------------------------------------------------
# ram://: each binary in one process (ram:// lives in the process), its inputs copied in.

_RAM_DRIVER = r"""
import importlib, json, os, sys
import tensorflow as tf

module_name, copies, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
for local, remote in copies.items():  # local trees copied into ram://
    for root, _, files in os.walk(local):
        target = remote + root[len(local):]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), target + "/" + name, overwrite=True)
module = importlib.import_module(module_name)
code = 0
try:
    module.main(module.FLAGS([module_name] + args))
except SystemExit as exit:
    code = exit.code or 0
files, results = [], {}
for root, _, names in tf.io.gfile.walk("ram://run"):
    for name in names:
        path = root.rstrip("/") + "/" + name
        files.append(path)
        if name == "results.json":
            with tf.io.gfile.GFile(path) as f:
                results[path] = json.load(f)
print(json.dumps({"code": code, "files": sorted(files), "results": results}))
"""


def _ram(tmp_path, module, copies, *args):
    cwd = str(tmp_path / "cwd")
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _RAM_DRIVER, module, json.dumps(copies),
                             *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(cwd) == []  # nothing landed on the local disk instead
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr[-3000:]
    return report


def test_pretrain_writes_its_whole_run_directory_to_ram(tmp_path):
    report = _ram(tmp_path, "supcon_tf.pretrain", {}, f"--flagfile={TINY_FLAGS}",
                  "--train_steps=2", "--model_dir=ram://run/tiny")
    names = {path[len("ram://run/tiny/"):] for path in report["files"]}
    for expected in ("config.json", "run_facts.json", "history.json", "results.json",
                     "loss.png", "tsne.png", "checkpoints/checkpoint", "checkpoints/ckpt-2.index",
                     "saved_model/saved_model.pb", "saved_model/variables/variables.index"):
        assert expected in names, (expected, sorted(names))
    assert any(name.startswith("logs/train/events.out.tfevents") for name in names)
    assert "lock.json" not in names
    assert report["results"]["ram://run/tiny/results.json"]["steps"] == 2


def test_linear_eval_on_ram_equals_the_local_run(tmp_path_factory, tmp_path):
    local = tiny_run_dir(tmp_path_factory)
    copy = str(tmp_path / "local_copy")
    subprocess.run(["cp", "-r", local, copy], check=True)
    result = run_binary("supcon_tf.linear_eval", f"--model_dir={copy}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = _ram(tmp_path, "supcon_tf.linear_eval", {local: "ram://run/tiny"},
                  "--model_dir=ram://run/tiny")
    remote = report["results"]["ram://run/tiny/results.json"]
    assert remote["top1"] == _results(copy)["top1"]


def test_transfer_reads_folders_and_writes_results_on_ram(tmp_path_factory, tmp_path):
    local = tiny_run_dir(tmp_path_factory)
    manual = str(tmp_path / "manual")
    write_folders(manual)
    out = str(tmp_path / "local_out")
    result = run_binary("supcon_tf.transfer", f"--model_dir={local}", f"--manual_dir={manual}",
                        "--benchmarks=aircraft", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = _ram(tmp_path, "supcon_tf.transfer",
                  {local: "ram://run/tiny", manual: "ram://run/manual"},
                  "--model_dir=ram://run/tiny", "--manual_dir=ram://run/manual",
                  "--benchmarks=aircraft", "--output_dir=ram://run/out")
    remote = report["results"]["ram://run/out/results.json"]
    with open(os.path.join(out, "results.json")) as f:
        expected = json.load(f)
    assert remote["benchmarks"]["aircraft"]["test_score"] == \
        expected["benchmarks"]["aircraft"]["test_score"]
    assert "ram://run/out/results.md" in report["files"]


def _start_workers(model_dir, *extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", NO_PROXY="127.0.0.1,localhost")
    return [subprocess.Popen(
        [sys.executable, "-m", "supcon_tf.pretrain", *_ARGS, *extra, "--strategy=multiworker",
         f"--model_dir={model_dir}"], cwd=REPO, env=dict(env, TF_CONFIG=config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for config in distribute.local_cluster_configs(2)]


def _signal_one_worker(model_dir, extra, signum):
    """Starts two workers, sends `signum` to the one that is not the chief once the first
    epoch is done (history.json), and waits for both.

    Returns:
        ([returncode of each worker], [stderr of each worker], seconds from signal to the
        chief's exit).
    """
    workers = _start_workers(model_dir, *extra)
    try:
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(model_dir, "history.json")):
            assert all(w.poll() is None for w in workers), workers[0].communicate()[1][-3000:]
            assert time.time() < deadline, "the first epoch never ended"
            time.sleep(0.05)
        workers[1].send_signal(signum)
        sent = time.time()
        _, chief_stderr = workers[0].communicate(timeout=300)
        seconds = time.time() - sent
        _, other_stderr = workers[1].communicate(timeout=120)
    finally:
        for worker in workers:
            worker.kill()
    return [w.returncode for w in workers], [chief_stderr, other_stderr], seconds


def _resume_to_the_end(model_dir, extra):
    """Runs the same command on both workers again; returns the chief's stdout."""
    workers = _start_workers(model_dir, *extra)
    outputs = [worker.communicate(timeout=400) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert _results(model_dir)["steps"] == 40
    return outputs[0][0]


def test_sigterm_to_one_worker_saves_the_same_step_everywhere_and_resumes(tmp_path):
    import signal

    model_dir = str(tmp_path / "multi")
    # 144 images: 4 steps per epoch, so history.json marks the end of step 4 of 40.
    extra = ("--split=train[:10%]", "--train_steps=40", "--checkpoint_every=1000")
    codes, stderrs, seconds = _signal_one_worker(model_dir, extra, signal.SIGTERM)
    print(f"SIGTERM to one worker -> both stopped in {seconds:.1f} s")
    lines = [user_stderr_lines(stderr) for stderr in stderrs]
    assert codes == [143, 143], lines
    step = int(lines[0][-1].split("preempted at step ")[1].split(" ")[0])
    assert lines[1][-1].startswith(f"error: preempted at step {step} ")
    assert 4 <= step < 40
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(
        model_dir, "checkpoints", "ckpt-*.index"))) == [f"ckpt-{step}.index"]
    assert f"at step {step}" in _resume_to_the_end(model_dir, extra)


def test_a_killed_worker_stops_the_others_with_one_line_and_the_run_resumes(tmp_path):
    import signal

    model_dir = str(tmp_path / "multi")
    extra = ("--split=train[:10%]", "--train_steps=40", "--checkpoint_every=2")
    codes, stderrs, seconds = _signal_one_worker(model_dir, extra, signal.SIGKILL)
    print(f"worker 1 killed -> the chief stopped in {seconds:.1f} s")
    lines = user_stderr_lines(stderrs[0])
    assert codes[0] == 1, lines
    assert lines[-1].startswith("error: another worker stopped") and "same command" in lines[-1]
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))
    assert "resumed from" in _resume_to_the_end(model_dir, extra)
