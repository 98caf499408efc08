"""Tests of supcon_tf.checkpoint_integrity: damaged checkpoints are moved aside, never deleted.

Each test writes real `tf.train.CheckpointManager` checkpoints of a variable whose value is the
step, damages them the way crashes and people do (truncated data, garbage index, junk index
file, NaN values), and checks what `recover` returns, what it says and which files are where.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import snapshot
from supcon_tf import checkpoint_integrity as ci


def _write_checkpoints(directory, steps=(1, 2, 3)):
    variable = tf.Variable(tf.zeros([64]))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory,
                                         max_to_keep=3)
    for step in steps:
        variable.assign(tf.fill([64], float(step)))
        manager.save(checkpoint_number=step)
    return variable


def _restored_value(prefix):
    variable = tf.Variable(tf.zeros([64]))
    tf.train.Checkpoint(v=variable).restore(prefix).assert_existing_objects_matched()
    return variable.numpy()


def _truncate(path, size=10):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:size])


def test_intact_directory_is_left_untouched(tmp_path):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    before = snapshot(directory)
    lines = []
    assert ci.recover(directory, log=lines.append) == os.path.join(directory, "ckpt-3")
    assert lines == [] and snapshot(directory) == before


def test_new_run_has_no_checkpoint(tmp_path):
    assert ci.recover(str(tmp_path / "missing")) is None
    assert ci.recover(str(tmp_path)) is None


def test_truncated_newest_is_moved_aside_and_the_previous_is_used(tmp_path):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    data = os.path.join(directory, "ckpt-3.data-00000-of-00001")
    _truncate(data)
    lines = []
    prefix = ci.recover(directory, log=lines.append)
    assert prefix == os.path.join(directory, "ckpt-2")
    np.testing.assert_array_equal(_restored_value(prefix), np.full([64], 2.0))
    assert len(lines) == 1 and "ckpt-3" in lines[0] and "moved aside" in lines[0]
    aside = sorted(os.listdir(os.path.join(directory, ci.UNREADABLE_DIR)))
    assert aside == ["ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    # The rebuilt index names ckpt-2, and the manager's rotation goes on from there.
    assert tf.train.latest_checkpoint(directory) == prefix
    _write_checkpoints(directory, steps=(4, 5))
    assert ci.present_checkpoints(directory) == [
        os.path.join(directory, f"ckpt-{s}") for s in (2, 4, 5)]
    assert len(os.listdir(os.path.join(directory, ci.UNREADABLE_DIR))) == 2


@pytest.mark.parametrize("garbage", [b"garbage garbage", b"\xff\xfe\x00not utf-8"])
def test_garbage_index_is_moved_aside_and_rebuilt_from_the_files(tmp_path, garbage):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    with open(os.path.join(directory, ci.INDEX_FILE), "wb") as f:
        f.write(garbage)
    lines = []
    prefix = ci.recover(directory, log=lines.append)
    assert prefix == os.path.join(directory, "ckpt-3")
    assert len(lines) == 1 and "index" in lines[0] and os.path.join(directory, "checkpoint") \
        in lines[0]
    with open(os.path.join(directory, ci.UNREADABLE_DIR, ci.INDEX_FILE), "rb") as f:
        assert f.read() == garbage
    state = tf.train.get_checkpoint_state(directory)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-1", "ckpt-2", "ckpt-3"]


def test_junk_index_file_of_a_checkpoint_is_moved_aside(tmp_path):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    with open(os.path.join(directory, "ckpt-3.index"), "wb") as f:
        f.write(b"junk")
    assert ci.recover(directory, log=lambda line: None) == os.path.join(directory, "ckpt-2")


def test_non_finite_checkpoint_is_not_resumed(tmp_path):
    directory = str(tmp_path)
    variable = _write_checkpoints(directory, steps=(1, 2))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory, 3)
    variable.assign(tf.fill([64], np.nan))
    manager.save(checkpoint_number=3)
    lines = []
    assert ci.recover(directory, log=lines.append) == os.path.join(directory, "ckpt-2")
    assert "non-finite" in lines[0]


def test_no_readable_checkpoint_stops_and_keeps_every_file(tmp_path):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    originals = {n for n in os.listdir(directory) if n.startswith("ckpt-")}
    for name in originals:
        if ".data-" in name:
            _truncate(os.path.join(directory, name))
    with pytest.raises(ci.CheckpointError, match="no readable checkpoint.*--overwrite"):
        ci.recover(directory, log=lambda line: None)
    assert set(os.listdir(os.path.join(directory, ci.UNREADABLE_DIR))) == originals


def test_index_naming_vanished_files_stops(tmp_path):
    directory = str(tmp_path)
    _write_checkpoints(directory)
    for name in os.listdir(directory):
        if name.startswith("ckpt-"):
            os.remove(os.path.join(directory, name))
    with pytest.raises(ci.CheckpointError, match="ckpt-3"):
        ci.recover(directory)


def test_ram_filesystem():
    directory = "ram://checkpoint_integrity_test/checkpoints"
    _write_checkpoints(directory)
    tf.io.gfile.remove(directory + "/checkpoint")  # `ram://` appends on "w".
    with tf.io.gfile.GFile(directory + "/checkpoint", "w") as f:
        f.write("garbage garbage")
    assert ci.recover(directory, log=lambda line: None) == directory + "/ckpt-3"
    assert tf.io.gfile.exists(directory + "/unreadable/checkpoint")
