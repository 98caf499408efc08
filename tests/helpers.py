"""Fixtures and helpers shared by the test modules (the only module tests import helpers from).

Binaries run as subprocesses from the repository root (`run_binary`); `user_stderr_lines` drops
TensorFlow's start-up log lines so a test can assert the program's own one-line errors;
`snapshot` records every file of a directory so a test can check that nothing changed;
`tiny_run_dir` is one 2-step tiny pretraining run per test session; `write_folders` lays out
digits image folders as manual-download transfer benchmarks.
"""

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = os.path.join(REPO, "flags", "tiny.flags")
# 144 training images: 4 steps per epoch, so 8 steps cross an epoch boundary (the data stream is
# reseeded per epoch) and a resume lands mid-epoch (consumed batches are skipped).
TINY_ARGS = [f"--flagfile={TINY_FLAGS}", "--split=train[:10%]", "--train_steps=8",
             "--checkpoint_every=2"]
# TensorFlow's C++ runtime writes these to stderr when it is imported, before any flag is read.
_RUNTIME_LINE = re.compile(
    r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following instructions)")


def run_binary(module, *args, timeout=240):
    """Runs `python -m module args...` from the repository root; returns CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def user_stderr_lines(stderr):
    """stderr lines written by the program (TensorFlow's start-up log lines dropped)."""
    return [line for line in stderr.splitlines() if line.strip() and not _RUNTIME_LINE.match(line)]


def snapshot(directory):
    """{relative path: (size, mtime_ns)} of every file below `directory`."""
    state = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            info = os.stat(path)
            state[os.path.relpath(path, directory)] = (info.st_size, info.st_mtime_ns)
    return state


def checkpoint_values(model_dir):
    """{variable key: array} of the latest checkpoint of a run (model and optimizer)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if "save_counter" not in key and "OBJECT_GRAPH" not in key}



IMAGE_SIZE = 16  # the tiny run's input side
# (benchmark key, {split: images per class}, digit classes, image (width, height))
FOLDERS = (("aircraft", {"train": 10, "val": 5, "test": 6}, (0, 1, 2), (20, 24)),
           ("cars", {"train": 10, "test": 6}, (3, 4, 5, 6), (24, 18)))


def tiny_run_dir(tmp_path_factory):
    """A tiny pretraining run (2 steps of flags/tiny.flags), made once per test session.

    Shared by the transfer and fine-tuning tests through the session's base temporary directory.
    """
    model_dir = tmp_path_factory.getbasetemp() / "transfer_tiny_run" / "run"
    if not (model_dir / "saved_model" / "saved_model.pb").exists():
        model_dir.parent.mkdir(exist_ok=True)
        result = run_binary("supcon_tf.pretrain", f"--flagfile={TINY_FLAGS}", "--train_steps=2",
                            f"--model_dir={model_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
    return str(model_dir)


def write_folders(manual_dir):
    """Digits image folders laid out as <manual_dir>/<key>/<split>/<class>/<i>.png."""
    from supcon_tf.data import sources

    images, labels, _ = sources.digits_arrays()
    rng = np.random.default_rng(0)
    for key, splits, classes, size in FOLDERS:
        for split, count in splits.items():
            for label in classes:
                folder = os.path.join(manual_dir, key, split, f"class_{label}")
                os.makedirs(folder)
                picks = rng.choice(np.flatnonzero(labels == label), count, replace=False)
                for index, pick in enumerate(picks):
                    Image.fromarray(images[pick]).resize(size, Image.BILINEAR).save(
                        os.path.join(folder, f"{index:03d}.png"))




def reference_run_dir(tmp_path_factory):
    """An uninterrupted 8-step run of `TINY_ARGS`, made once per test session: what resumed,
    recovered or preempted runs of the same command must end equal to."""
    model_dir = tmp_path_factory.getbasetemp() / "reference_tiny_run" / "run"
    if not (model_dir / "results.json").exists():
        model_dir.parent.mkdir(exist_ok=True)
        result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
    return str(model_dir)


def assert_same_checkpoint(model_dir, reference_dir, context=""):
    """The latest checkpoints of two runs hold the same values (resume is exact up to float
    reassociation: rtol 1e-4)."""
    resumed, reference = checkpoint_values(model_dir), checkpoint_values(reference_dir)
    assert resumed.keys() == reference.keys(), context
    for key in reference:
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{key} {context}")
