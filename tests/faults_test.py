"""The fault suite: `python -m supcon_tf.pretrain` driven through every fault a long run meets.

Each case asserts the exit status, the program's one line (stderr without TensorFlow's start-up
lines) and the files on disk before and after. Runs that recover (damaged checkpoints, a stale
lock, SIGTERM, a failed write) must then end with the same checkpoint as one uninterrupted run
of the same command (`helpers.reference_run_dir`). The serving-input cases are in
tests/export_test.py, the library-level ones in tests/checkpoint_integrity_test.py,
tests/run_lock_test.py, tests/train_loop_test.py and tests/data/image_folders_test.py.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO
from helpers import TINY_ARGS
from helpers import TINY_FLAGS
from helpers import assert_same_checkpoint
from helpers import reference_run_dir
from helpers import run_binary
from helpers import snapshot
from helpers import user_stderr_lines
from supcon_tf import checkpoint_integrity
from supcon_tf.data import sources

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run_dir(tmp_path_factory)


def _copy(reference, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(reference, model_dir)
    return model_dir


def _one_error_line(result, status):
    assert result.returncode == status, result.stderr[-3000:]
    lines = user_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _checkpoint_steps(model_dir):
    return sorted(int(os.path.basename(p)[5:-6])
                  for p in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")))


def _popen(*args):
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "supcon_tf.pretrain", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, process, timeout=180):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Non-finite values


def test_divergence_stops_at_the_step_and_keeps_every_good_checkpoint(tmp_path):
    model_dir = str(tmp_path / "run")
    result = run_binary("supcon_tf.pretrain", f"--flagfile={TINY_FLAGS}", "--train_steps=30",
                        "--learning_rate=1e30", "--checkpoint_every=1", "--monitor_examples=0",
                        f"--model_dir={model_dir}")
    line = _one_error_line(result, 1)
    assert "non-finite" in line and "nothing of it was saved" in line
    step = int(line.split(" at step ")[1].split(";")[0])
    steps = _checkpoint_steps(model_dir)
    # Every step before the bad one was checkpointed (the three newest are kept), none after.
    assert steps == list(range(max(1, step - 3), step)), (line, steps)
    newest = os.path.join(model_dir, "checkpoints", f"ckpt-{step - 1}")
    assert f"newest good checkpoint: {newest}" in line
    for kept in steps:
        path = os.path.join(model_dir, "checkpoints", f"ckpt-{kept}")
        assert checkpoint_integrity.unreadable_reason(path) is None  # readable and finite
    assert not os.path.exists(os.path.join(model_dir, "saved_model"))
    assert not os.path.exists(os.path.join(model_dir, "results.json"))
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints


def _recovers(reference, model_dir, expect_in_stdout):
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert expect_in_stdout in result.stdout, result.stdout
    assert json.load(open(os.path.join(model_dir, "results.json")))["steps"] == 8
    assert_same_checkpoint(model_dir, reference)
    return result


def test_truncated_newest_checkpoint_is_moved_aside_and_the_previous_resumed(reference,
                                                                          tmp_path):
    model_dir = _copy(reference, tmp_path)
    data = os.path.join(model_dir, "checkpoints", "ckpt-8.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(100)
    result = _recovers(reference, model_dir, "ckpt-8 is unreadable")
    assert "resumed from" in result.stdout and "ckpt-6" in result.stdout
    aside = os.path.join(model_dir, "checkpoints", "unreadable")
    assert sorted(os.listdir(aside)) == ["ckpt-8.data-00000-of-00001", "ckpt-8.index"]
    assert os.path.getsize(os.path.join(aside, "ckpt-8.data-00000-of-00001")) == 100


# Non-UTF-8 garbage is recovered the same way (tests/checkpoint_integrity_test.py).
@pytest.mark.parametrize("garbage", [b"model_checkpoint_path: garbage {{"])
def test_garbage_index_is_rebuilt_from_the_checkpoint_files(reference, tmp_path, garbage):
    model_dir = _copy(reference, tmp_path)
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    with open(index, "wb") as f:
        f.write(garbage)
    before = snapshot(os.path.join(model_dir, "checkpoints"))
    _recovers(reference, model_dir, f"checkpoint index {index} is unreadable")
    with open(os.path.join(model_dir, "checkpoints", "unreadable", "checkpoint"), "rb") as f:
        assert f.read() == garbage
    # Nothing was lost: the checkpoint files are those that were there (the run was complete).
    after = snapshot(os.path.join(model_dir, "checkpoints"))
    assert {k: v for k, v in before.items() if k.startswith("ckpt-")} == {
        k: v for k, v in after.items() if k.startswith("ckpt-")}


def test_no_readable_checkpoint_stops_without_starting_over(reference, tmp_path):
    model_dir = _copy(reference, tmp_path)
    names = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    for name in names:
        if ".data-" in name:
            with open(os.path.join(model_dir, "checkpoints", name), "r+b") as f:
                f.truncate(10)
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
    line = _one_error_line(result, 2)
    assert "no readable checkpoint" in line and "--overwrite" in line
    assert _checkpoint_steps(model_dir) == []  # none written, none deleted:
    aside = os.listdir(os.path.join(model_dir, "checkpoints", "unreadable"))
    assert sorted(aside) == sorted(n for n in names if n.startswith("ckpt-"))


# ---------------------------------------------------------------------------------------------
# One writer per run directory


def test_second_process_is_refused_within_seconds_naming_the_holder(tmp_path):
    model_dir = str(tmp_path / "run")
    first = _popen(f"--flagfile={TINY_FLAGS}", "--train_steps=400", "--monitor_examples=0",
                   f"--model_dir={model_dir}")
    try:
        _wait_for(os.path.join(model_dir, "lock.json"), first)
        start = time.time()
        result = run_binary("supcon_tf.pretrain", f"--flagfile={TINY_FLAGS}",
                            "--train_steps=400", "--monitor_examples=0",
                            f"--model_dir={model_dir}")
        elapsed = time.time() - start
        assert first.poll() is None  # the holder still runs
        line = _one_error_line(result, 2)
        assert f"pid {first.pid} on {socket.gethostname()}" in line and "in use" in line
        assert elapsed < 60, elapsed
        with open(os.path.join(model_dir, "lock.json")) as f:
            assert json.load(f)["pid"] == first.pid
    finally:
        first.kill()
        first.communicate()


def test_stale_lock_of_a_dead_process_is_taken_over(reference, tmp_path):
    model_dir = _copy(reference, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(model_dir, "lock.json"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "start_time": 0.0}, f)
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"taking over the lock of {model_dir} from pid {dead.pid}" in result.stdout
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))


# ---------------------------------------------------------------------------------------------
# Preemption


# SIGINT takes the same path (tests/preemption_test.py sends both to the watcher); one signal
# through the binary keeps the suite short.
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_signal_saves_the_current_step_and_the_same_command_resumes(reference, tmp_path, signum):
    model_dir = str(tmp_path / "run")
    # Checkpoints every 1000 steps: only the signal can make one before the end.
    args = [*TINY_ARGS[:-1], "--checkpoint_every=1000", f"--model_dir={model_dir}"]
    process = _popen(*args)
    _wait_for(os.path.join(model_dir, "history.json"), process)  # mid-run: epoch 1 is done
    process.send_signal(signum)
    sent = time.time()
    _, stderr = process.communicate(timeout=120)
    seconds = time.time() - sent
    result = subprocess.CompletedProcess(args, process.returncode, "", stderr)
    line = _one_error_line(result, 128 + signum)
    assert line.startswith("error: preempted at step ") and "run the same command" in line
    step = int(line.split("preempted at step ")[1].split(" ")[0])
    assert 4 <= step < 8 and _checkpoint_steps(model_dir) == [step]
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))
    print(f"{signal.Signals(signum).name} to exit: {seconds:.2f} s (step {step})")

    resumed = run_binary("supcon_tf.pretrain", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stdout
    # The reference checkpointed every 2 steps; compare the final values only.
    assert_same_checkpoint(model_dir, reference)


# ---------------------------------------------------------------------------------------------
# A failed write (a full disk)

_FULL_DISK = r"""
import sys
import tensorflow as tf
from absl import app

calls = []
save = tf.train.CheckpointManager.save


def save_on_a_disk_that_fills_up(self, *args, **kwargs):
    calls.append(kwargs.get("checkpoint_number"))
    if len(calls) == 2:
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    return save(self, *args, **kwargs)


tf.train.CheckpointManager.save = save_on_a_disk_that_fills_up
from supcon_tf import flag_groups, pretrain
app.run(pretrain.main, argv=["pretrain"] + sys.argv[1:],
        flags_parser=flag_groups.flags_parser(pretrain.FLAGS, pretrain.__doc__))
"""


def test_failed_checkpoint_write_names_the_path_and_resume_is_exact(reference, tmp_path):
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, *TINY_ARGS,
                             f"--model_dir={model_dir}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    line = _one_error_line(result, 1)
    checkpoints = os.path.join(model_dir, "checkpoints")
    assert f"cannot write checkpoint 4 in {checkpoints}" in line and "No space left" in line
    assert _checkpoint_steps(model_dir) == [2]
    assert checkpoint_integrity.unreadable_reason(os.path.join(checkpoints, "ckpt-2")) is None
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))
    _recovers(reference, model_dir, "resumed from")


# ---------------------------------------------------------------------------------------------
# Data faults


def _digit_folder(root, classes, per_class):
    """Digits written as PNG image folders `<root>/class_<d>/<i>.png`."""
    images, labels, _ = sources.digits_arrays()
    for label in classes:
        folder = os.path.join(root, f"class_{label}")
        os.makedirs(folder)
        for index, pick in enumerate(np.flatnonzero(labels == label)[:per_class]):
            with open(os.path.join(folder, f"{index:03d}.png"), "wb") as f:
                f.write(tf.io.encode_png(images[pick]).numpy())
    return root


_FOLDER_ARGS = ["--image_size=16", "--batch_size=16", "--train_steps=2", "--depth=18",
                "--width_multiplier=0.25", "--projection_units=32,16", "--optimizer=momentum",
                "--learning_rate=0.1", "--verbose=0", "--checkpoint_every=1000"]


@pytest.fixture(scope="module")
def damaged_folder(tmp_path_factory):
    root = _digit_folder(str(tmp_path_factory.mktemp("damaged") / "images"), (0, 1, 2), 20)
    bad = os.path.join(root, "class_1", "zz_truncated.png")
    with open(os.path.join(root, "class_1", "000.png"), "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 2])
    return root, bad


@pytest.mark.parametrize("monitor_examples", [0, 16])
def test_unreadable_image_stops_with_its_name(damaged_folder, tmp_path, monitor_examples):
    root, bad = damaged_folder
    model_dir = str(tmp_path / "run")
    result = run_binary("supcon_tf.pretrain", f"--dataset=folder:{root}", *_FOLDER_ARGS,
                        "--eval_split=train", f"--monitor_examples={monitor_examples}",
                        f"--model_dir={model_dir}")
    line = _one_error_line(result, 2)
    assert f"cannot read image {bad}" in line and "--skip_unreadable_images" in line
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))


def _pretrain_on_folder(root, model_dir, *args):
    """results.json of a successful pretraining run on the image folder `root`."""
    result = run_binary("supcon_tf.pretrain", f"--dataset=folder:{root}", *_FOLDER_ARGS, *args,
                        f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


def test_skip_unreadable_images_counts_them(damaged_folder, tmp_path):
    root, bad = damaged_folder
    results = _pretrain_on_folder(root, str(tmp_path / "run"), "--skip_unreadable_images",
                                  "--eval_split=train", "--monitor_examples=16")
    assert results["skipped_images"] == {"count": 1, "files": [bad]}


def test_stratified_folder_slices_keep_every_class_for_the_monitor(tmp_path):
    # With file-order slices, train[80%:] of a class-sorted folder is the last class alone and
    # the kNN monitor (every held-out image of a class the reference lacks) reads 0.0.
    root = _digit_folder(str(tmp_path / "images"), (0, 1, 2, 3, 4), 20)
    results = _pretrain_on_folder(root, str(tmp_path / "run"), "--split=train[:80%]",
                                  "--eval_split=train[80%:]", "--monitor_examples=20")
    held_out = sources.folder_source(root, "train[80%:]")
    assert sorted(set(held_out.labels.tolist())) == [0, 1, 2, 3, 4]
    assert results["monitor"]["examples"] == 20
    assert results["knn_accuracy"] > 0.2  # 5 classes: an untrained ResNet's kNN is far above


def test_supervised_loss_on_one_class_is_refused(tmp_path):
    root = _digit_folder(str(tmp_path / "images"), (7,), 20)
    model_dir = str(tmp_path / "run")
    result = run_binary("supcon_tf.pretrain", f"--dataset=folder:{root}", *_FOLDER_ARGS,
                        "--monitor_examples=0", f"--model_dir={model_dir}")
    line = _one_error_line(result, 2)
    assert "at least 2 classes" in line and "has 1" in line and "--loss=simclr" in line
    assert not os.path.exists(model_dir)
