"""Tests of supcon_tf.filesystem on the local disk and TensorFlow's in-process `ram://`
filesystem; a failed write is injected and must leave the previous file intact."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from supcon_tf import filesystem  # noqa: E402


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    path = f"ram://filesystem_test/{request.node.name}"
    tf.io.gfile.makedirs(path)
    return path


def test_json_round_trip_and_shorter_rewrite(root):
    path = root + "/results.json"
    filesystem.write_json(path, {"top1": 0.5, "padding": "x" * 100})
    filesystem.write_json(path, {"top1": 0.75})
    assert filesystem.read_json(path) == {"top1": 0.75}
    assert json.loads(filesystem.read_text(path)) == {"top1": 0.75}
    assert tf.io.gfile.listdir(root) == ["results.json"]  # no temporary left behind


def test_figure_is_a_png(root):
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    filesystem.write_figure(figure, root + "/loss.png")
    plt.close(figure)
    with tf.io.gfile.GFile(root + "/loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_failed_write_names_the_path_and_keeps_the_old_file(root, monkeypatch):
    path = root + "/results.json"
    filesystem.write_json(path, {"old": 1})

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.io.gfile, "rename", full_disk)
    with pytest.raises(filesystem.WriteError) as error:
        filesystem.write_json(path, {"new": 2})
    assert path in str(error.value) and "No space left" in str(error.value)
    monkeypatch.undo()
    assert filesystem.read_json(path) == {"old": 1}
    assert sorted(tf.io.gfile.listdir(root)) == ["results.json"]


def test_is_file_is_not_fooled_by_name_prefixes(root):
    filesystem.write_text(root + "/results.json", "{}")
    assert filesystem.is_file(root + "/results.json")
    assert not filesystem.is_file(root + "/res")
    assert not filesystem.is_file(root + "/missing.json")
    assert filesystem.is_local("/tmp/x") and filesystem.is_local("file:///tmp/x")
    assert not filesystem.is_local("gs://bucket/x") and not filesystem.is_local("ram://x")
