"""Tests for supcon_tf.data.sources: digits, image folders, arrays and the TFDS path."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from supcon_tf.data import sources


def _as_numpy(dataset):
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.stack(images), np.array(labels)


# ----------------------------------------------------------------------------------------------
# digits


def test_digits_splits_are_fixed_disjoint_stratified_and_complete():
    train_x, train_y = _as_numpy(sources.load_source("digits", "train"))
    test_x, test_y = _as_numpy(sources.load_source("digits", "test"))
    assert train_x.shape == (1442, 32, 32, 3) and train_x.dtype == np.uint8
    assert test_x.shape == (355, 32, 32, 3) and train_y.dtype == np.int64
    assert len(train_y) + len(test_y) == 1797
    # Disjoint and complete: train is exactly the complement of the test mask.
    images, labels, is_test = sources.digits_arrays()
    np.testing.assert_array_equal(images[is_test], test_x)
    np.testing.assert_array_equal(images[~is_test], train_x)
    np.testing.assert_array_equal(labels[~is_test], train_y)
    # Stratified: every class holds a fifth (rounded down) of its images in test.
    for label in range(10):
        assert (test_y == label).sum() == (labels == label).sum() // 5
    again_x, again_y = _as_numpy(sources.load_source("digits", "test"))
    np.testing.assert_array_equal(again_x, test_x)
    np.testing.assert_array_equal(again_y, test_y)


def test_digits_upscale_matches_sklearn():
    from sklearn.datasets import load_digits

    images, labels, _ = sources.digits_arrays()
    digits = load_digits()
    assert np.array_equal(labels, digits.target)
    # Independent bilinear upscale with np.interp (half-pixel centres, clamped edges) of the
    # first few digits, grey levels 0..16 scaled to 0..255.
    centres = (np.arange(32) + 0.5) / 4.0 - 0.5
    for index in range(5):
        small = digits.images[index] * 255.0 / 16.0
        rows = np.stack([np.interp(centres, np.arange(8), row) for row in small])  # [8, 32]
        large = np.stack([np.interp(centres, np.arange(8), col) for col in rows.T], axis=1)
        np.testing.assert_array_equal(images[index, ..., 0], np.round(large).astype(np.uint8))
        np.testing.assert_array_equal(images[index, ..., 0], images[index, ..., 2])


def test_digits_slices_cut_validation_from_train():
    val_y = _as_numpy(sources.load_source("digits", "train[90%:]"))[1]
    rest_y = _as_numpy(sources.load_source("digits", "train[:90%]"))[1]
    assert len(val_y) + len(rest_y) == 1442 and len(val_y) == 144
    assert sources.num_classes("digits") == 10


@pytest.mark.parametrize("split", ["validation", "train[:x]", "Train"])
def test_digits_unknown_split_raises(split):
    with pytest.raises(ValueError, match=r"Unknown split .* for 'digits'; use one of train"):
        sources.load_source("digits", split)


# ----------------------------------------------------------------------------------------------
# image folders


def _write_tree(root, classes, per_class, size=(6, 5)):
    rng = np.random.default_rng(1)
    written = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, size=size + (3,)).astype(np.uint8)
            path = root / name / f"img{i}.png"
            path.write_bytes(tf.io.encode_png(image).numpy())
            written[str(path)] = image
    return written


def test_folder_tree_labels_sorted_classes_and_exact_pixels(tmp_path):
    written = _write_tree(tmp_path, ["dog", "cat", "emu"], 2)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cat" / "readme.md").write_text("skipped")
    images, labels = _as_numpy(sources.load_source(f"folder:{tmp_path}", "train"))
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]  # cat, dog, emu (in a seeded order)
    found = []
    for image, label in zip(images, labels):
        class_dir = tmp_path / ["cat", "dog", "emu"][label]
        found += [path for path, pixels in written.items()
                  if path.startswith(str(class_dir) + "/") and np.array_equal(pixels, image)]
    assert sorted(found) == sorted(written)  # every file once, with its own class's label
    assert sources.num_classes(f"folder:{tmp_path}") == 3


def test_folder_split_directories_and_jpeg(tmp_path):
    _write_tree(tmp_path / "train", ["a", "b"], 3)
    _write_tree(tmp_path / "test", ["a", "b"], 1)
    jpeg = tf.io.encode_jpeg(np.full((4, 4, 3), 200, np.uint8)).numpy()
    (tmp_path / "test" / "b" / "extra.JPG").write_bytes(jpeg)
    _, train_labels = _as_numpy(sources.load_source(f"folder:{tmp_path}", "train"))
    test_images, test_labels = _as_numpy(
        sources.load_source(f"folder:{tmp_path}", "test").map(
            lambda x, y: (tf.image.resize(x, [4, 4]), y)))
    assert sorted(train_labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(test_labels.tolist()) == [0, 1, 1]


def test_empty_and_missing_folders_raise(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match=r"holds no images; expected .*<class_name>"):
        sources.load_source(f"folder:{tmp_path}", "train")
    with pytest.raises(ValueError, match="does not exist"):
        sources.load_source(f"folder:{tmp_path / 'nowhere'}", "train")
    _write_tree(tmp_path / "x", ["a"], 1)
    with pytest.raises(ValueError, match="Unknown split 'test' for image folder"):
        sources.load_source(f"folder:{tmp_path / 'x'}", "test")


# ----------------------------------------------------------------------------------------------
# numpy arrays


def test_from_arrays_converts_floats_and_grayscale():
    images = np.linspace(0, 1, 2 * 3 * 3).reshape(2, 3, 3).astype(np.float32)
    out_x, out_y = _as_numpy(sources.from_arrays(images, [3, 4]))
    assert out_x.shape == (2, 3, 3, 1) and out_x.dtype == np.uint8 and out_y.dtype == np.int64
    np.testing.assert_array_equal(out_x[..., 0], np.round(images * 255).astype(np.uint8))


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((2, 4, 4, 4), np.uint8), [0, 1], r"1 or 3 channels .*\(2, 4, 4, 4\)"),
    (np.zeros((4, 4), np.uint8), [0], r"\[N, H, W, C\] or \[N, H, W\], got shape \(4, 4\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1, 2], r"labels must be \[N\] with N = 2"),
    (np.full((1, 2, 2, 3), 2.0), [0], r"float images must lie in \[0, 1\]"),
    (np.zeros((1, 2, 2, 3), np.uint8), [0.5], "labels must be integers"),
])
def test_from_arrays_bad_input_raises(images, labels, match):
    with pytest.raises(ValueError, match=match):
        sources.from_arrays(images, np.asarray(labels))


# ----------------------------------------------------------------------------------------------
# TFDS


def test_tfds_path_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        dataset = sources.load_source("cifar10", "train", data_dir=str(tmp_path), download=True)
        images, labels = _as_numpy(dataset)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and ((0 <= labels) & (labels < 10)).all()
    assert sources.num_classes("cifar10") == 10


def test_manual_download_error_is_one_clear_line(tmp_path):
    with pytest.raises(sources.DatasetUnavailableError) as info:
        sources.load_source("imagenet2012", "train", data_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert "'imagenet2012' must be downloaded by hand" in message
    assert f"--manual_dir={tmp_path}/downloads/manual" in message
    assert isinstance(info.value, ValueError) and info.value.__cause__ is None


def test_manual_dir_without_files_fails_with_one_line_when_preparing(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "wrong_file.txt").write_text("x")
    with pytest.raises(sources.DatasetUnavailableError,
                       match=r"'imagenet2012' could not be prepared .*--manual_dir=") as info:
        sources.load_source("imagenet2012", "train", data_dir=str(tmp_path / "data"),
                            manual_dir=str(manual))
    assert "\n" not in str(info.value)


def test_unprepared_dataset_offline_fails_at_once(tmp_path):
    with pytest.raises(sources.DatasetUnavailableError,
                       match=rf"'cifar10' is not prepared under {tmp_path}: .*--data_dir=DIR"):
        sources.load_source("cifar10", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar1O", "no_such_dataset"])
def test_unknown_dataset_raises(name):
    with pytest.raises(ValueError, match=rf"Unknown dataset '{name}'"):
        sources.load_source(name, "train")
    with pytest.raises(ValueError, match=rf"Unknown dataset '{name}'"):
        sources.num_classes(name)
