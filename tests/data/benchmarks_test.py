"""Tests for supcon_tf.data.benchmarks: where each transfer benchmark's splits come from.

Manual downloads are the digits image folders of helpers.py (`write_folders`,
`FOLDERS`: FGVC Aircraft with its own val split, Stanford Cars without one); VOC2007 is
`tfds.testing.mock_data`. Expected class ids and split sizes are counted from the folders
written here; missing or malformed files must fail with one line saying what to do.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from supcon_tf.data import benchmarks
from supcon_tf.data import sources
from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import transfer
from helpers import FOLDERS
from helpers import write_folders


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("benchmarks_manual"))
    write_folders(root)
    return root


def _folder_pairs(split_dir):
    """Sorted (class id, pixel bytes) of <split_dir>/<class>/*.png, classes in sorted order."""
    pairs = []
    for label, name in enumerate(sorted(os.listdir(split_dir))):
        for filename in os.listdir(os.path.join(split_dir, name)):
            image = np.asarray(Image.open(os.path.join(split_dir, name, filename)).convert("RGB"))
            pairs.append((label, image.tobytes()))
    return sorted(pairs)


@pytest.mark.parametrize("key,splits,classes,size", FOLDERS, ids=[key for key, *_ in FOLDERS])
def test_image_folders_give_sorted_class_ids_and_every_split(manual_dir, key, splits, classes,
                                                              size):
    data = benchmarks.open_benchmark(transfer.get_benchmark(key), manual_dir=manual_dir)
    assert data.num_classes == len(classes) and not data.multilabel
    assert data.source == f"image folders {os.path.join(manual_dir, key)}"
    assert (data.val is not None) == ("val" in splits)
    opened = {"train": data.train, "test": data.test}
    if data.val is not None:
        opened["val"] = data.val
    assert set(opened) == set(splits)
    width, height = size
    for split, dataset in opened.items():
        elements = list(dataset.as_numpy_iterator())
        assert len(elements) == splits[split] * len(classes)
        for image, _ in elements:
            assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        got = sorted((int(label), image.tobytes()) for image, label in elements)
        assert got == _folder_pairs(os.path.join(manual_dir, key, split))


def test_manual_benchmark_without_manual_dir_is_one_line():
    with pytest.raises(sources.DatasetUnavailableError) as info:
        benchmarks.open_benchmark(transfer.get_benchmark("birdsnap"))
    message = str(info.value)
    assert "\n" not in message and "Birdsnap must be downloaded by hand" in message
    assert "<manual_dir>/birdsnap/{train,test}/<class_name>/*.jpg" in message
    assert "--manual_dir" in message


def test_missing_split_folder_is_one_line(manual_dir, tmp_path):
    root = tmp_path / "manual"
    shutil.copytree(os.path.join(manual_dir, "aircraft"), root / "aircraft")
    shutil.rmtree(root / "aircraft" / "val")
    with pytest.raises(sources.DatasetUnavailableError,
                       match=r"no class folders of images in .*aircraft/val\)") as info:
        benchmarks.open_benchmark(transfer.get_benchmark("aircraft"), manual_dir=str(root))
    assert "\n" not in str(info.value)


def test_class_folders_differing_between_splits_raise(manual_dir, tmp_path):
    root = tmp_path / "manual"
    shutil.copytree(os.path.join(manual_dir, "aircraft"), root / "aircraft")
    shutil.rmtree(root / "aircraft" / "test" / "class_2")
    with pytest.raises(ValueError, match=r"differ from those of .*\(2 vs 3\)"):
        benchmarks.open_benchmark(transfer.get_benchmark("aircraft"), manual_dir=str(root))


def test_cars_without_folders_or_tfds_copy_names_both_ways(tmp_path):
    with pytest.raises(sources.DatasetUnavailableError) as info:
        benchmarks.open_benchmark(transfer.get_benchmark("cars"), data_dir=str(tmp_path / "data"),
                                  manual_dir=str(tmp_path / "manual"))
    message = str(info.value)
    assert "\n" not in message and "Stanford Cars is not available" in message
    assert "--manual_dir" in message and "TFDS cars196" in message and "--data_dir" in message


def test_voc2007_is_multilabel_with_the_official_validation(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        data = benchmarks.open_benchmark(transfer.get_benchmark("voc2007"),
                                         data_dir=str(tmp_path), download=True)
        _, targets = next(data.val.as_numpy_iterator())
    assert data.multilabel and data.num_classes == 20 and data.source == "TFDS voc/2007"
    assert data.train.element_spec[1] == tf.TensorSpec([20], tf.int64)
    assert set(np.unique(targets)) <= {1, 0, metrics.IGNORE}
