"""Tests of supcon_tf.data.image_folders: stratified seeded slices, any gfile filesystem, and
unreadable images named (or skipped and counted). Expected splits are recounted from the files
written here."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.data import image_folders
from supcon_tf.data import sources


def _png(seed, size=(5, 4)):
    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 256, size + (3,)).astype(np.uint8)).numpy()


def _write(root, counts):
    """{class name: number of PNGs} under root (any gfile path); returns {path: bytes}."""
    written = {}
    for index, (name, count) in enumerate(sorted(counts.items())):
        tf.io.gfile.makedirs(os.path.join(root, name))
        for i in range(count):
            path = os.path.join(root, name, f"{i:03d}.png")
            data = _png(100 * index + i)
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(data)
            written[path] = data
    return written


def _labels(dataset):
    return [int(label) for _, label in dataset.as_numpy_iterator()]


def test_slices_are_stratified_complementary_and_mixed(tmp_path):
    counts = {"a": 50, "b": 30, "c": 20}
    _write(str(tmp_path), counts)
    name = f"folder:{tmp_path}"
    head = sources.folder_source(str(tmp_path), "train[:80%]")
    tail = sources.folder_source(str(tmp_path), "train[80%:]")
    assert not set(head.paths) & set(tail.paths)
    assert len(head.paths) + len(tail.paths) == 100
    for source, share in ((head, 0.8), (tail, 0.2)):
        per_class = collections.Counter(source.labels.tolist())
        assert per_class == {i: round(share * n) for i, n in enumerate(counts.values())}
    # Every class is present in any prefix of reasonable size: the order mixes the classes.
    assert set(head.labels[:20].tolist()) == {0, 1, 2}
    # Labels follow the files' class directories, and the same slice is the same every time.
    for path, label in zip(head.paths, head.labels):
        assert os.path.basename(os.path.dirname(path)) == "abc"[label]
    assert sources.folder_source(str(tmp_path), "train[:80%]").paths == head.paths
    assert sorted(_labels(sources.load_source(name, "train[80%:]"))) == sorted(
        tail.labels.tolist())


def test_folder_in_ram_filesystem():
    root = "ram://image_folders_test/tree"
    written = _write(root, {"cat": 3, "dog": 2})
    data = sources.load_source(f"folder:{root}", "train")
    images = sorted(tf.io.encode_png(image).numpy() for image, _ in data.as_numpy_iterator())
    assert images == sorted(written.values())
    assert sources.num_classes(f"folder:{root}") == 2


@pytest.fixture
def damaged(tmp_path):
    """A folder with one zero-byte, one truncated and one non-image `.png` among good ones."""
    _write(str(tmp_path), {"a": 4, "b": 4})
    bad = {"empty": tmp_path / "a" / "zz_empty.png", "truncated": tmp_path / "b" / "zz_cut.png",
           "garbage": tmp_path / "b" / "zz_text.png"}
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(_png(7, size=(40, 40))[:60])
    bad["garbage"].write_bytes(b"this is not an image")
    return str(tmp_path), {str(path) for path in bad.values()}


def test_unreadable_images_are_named(damaged):
    root, bad = damaged
    source = sources.folder_source(root, "train")
    failures = image_folders.unreadable_images(source.paths)
    assert {path for path, _ in failures} == bad
    line = image_folders.describe_unreadable(failures)
    assert "\n" not in line and "(and 2 more)" in line and "--skip_unreadable_images" in line
    assert any(path in line for path in bad)
    # Without skipping, reading the source fails on the bad files.
    with pytest.raises(tf.errors.InvalidArgumentError):
        _labels(sources.load_source(f"folder:{root}", "train"))


def test_skip_unreadable_leaves_them_out_and_counts_them(damaged):
    root, bad = damaged
    source = sources.folder_source(root, "train", skip_unreadable_images=True)
    assert {path for path, _ in source.skipped} == bad
    assert len(source.paths) == 8 and not set(source.paths) & bad
    labels = _labels(sources.load_source(f"folder:{root}", "train", skip_unreadable_images=True))
    assert sorted(labels) == [0] * 4 + [1] * 4
