"""Fixtures and helpers shared by the test modules (the only module tests import helpers from).

Binaries run as subprocesses from the repository root (`run_binary`); `user_stderr_lines` drops
TensorFlow's start-up log lines so a test can assert the program's own one-line errors;
`snapshot` records every file of a directory so a test can check that nothing changed;
`tiny_run_dir` is one 2-step tiny pretraining run per test session; `write_folders` lays out
digits image folders as manual-download transfer benchmarks. For the evaluation tests:
`sklearn_digits_splits` (fixed feature splits for the probes), `resize_centre_crop` and
`saved_model_embed` (the evaluation transform and the SavedModel's features written out
independently of the library), `chance_accuracy` (the baseline accuracy thresholds are set
against), `naive_rankings` and `naive_retrieval_metrics` (retrieval by a plain loop over queries).
`run_main_cases` runs a binary's `main` once per argv in one fresh process (optionally inside a
context manager of this module, e.g. `mock_retrieval_benchmarks`: TFDS's CUB, Cars196 and SOP
mocked with `mock_benchmark_split`'s digits; `mock_multilabel_sources`: VOC2007 and COCO mocked
with random examples).
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


# ----------------------------------------------------------------------------------------------
# evaluation


def sklearn_digits_splits():
    """sklearn's 8x8 digits as features, shuffled once: 600 train, 300 val, the rest test.

    Returns:
        {"train" | "val" | "test": (features float64 [N, 64], labels int [N])}.
    """
    from sklearn import datasets

    features, labels = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(labels.size)
    features, labels = features[order], labels[order]
    return {"train": (features[:600], labels[:600]), "val": (features[600:900], labels[600:900]),
            "test": (features[900:], labels[900:])}


def chance_accuracy(labels):
    """Top-1 accuracy of always predicting the most frequent class of `labels` (int [N])."""
    return float(np.bincount(np.asarray(labels)).max() / len(labels))


def resize_centre_crop(image, size, fraction=1.0):
    """Short side to `size / fraction` (bicubic, antialiased), then the central square of `size`.

    `fraction` 1.0 is the linear probe's transform; 224 / 256 the fine-tuning evaluation's.

    Args:
        image: uint8 [H, W, C].

    Returns:
        float32 [size, size, C] in [0, 1].
    """
    import tensorflow as tf

    height, width = image.shape[:2]
    scale = size / fraction / min(height, width)
    new_h, new_w = max(round(height * scale), size), max(round(width * scale), size)
    resized = tf.image.resize(image.astype(np.float32) / 255.0, [new_h, new_w],
                              method="bicubic", antialias=True).numpy()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.clip(resized[top:top + size, left:left + size], 0.0, 1.0)


def saved_model_embed(model_dir, images, fraction=1.0):
    """Features [N, F] of uint8 images through `resize_centre_crop` (crop `fraction`) and the
    run's SavedModel `embed` signature (loaded with TensorFlow alone)."""
    import tensorflow as tf

    embed = tf.saved_model.load(os.path.join(model_dir, "saved_model")).signatures["embed"]
    batch = np.stack([resize_centre_crop(image, IMAGE_SIZE, fraction) for image in images])
    return embed(images=tf.constant(batch))["embeddings"].numpy()


def naive_rankings(queries, references=None):
    """Every query's references ranked by a plain loop: cosine to each reference one at a time,
    then a full sort by (similarity descending, reference index). Without references:
    leave-one-out (the query itself is not ranked).

    Returns:
        list (one per query) of lists of reference indices, best first.
    """
    queries = np.asarray(queries, np.float64)
    loo = references is None
    references = queries if loo else np.asarray(references, np.float64)
    rankings = []
    for q, query in enumerate(queries):
        query = query / max(np.linalg.norm(query), 1e-12)
        candidates = [j for j in range(len(references)) if not (loo and j == q)]
        similarity = {j: float(np.dot(query, references[j] /
                                      max(np.linalg.norm(references[j]), 1e-12)))
                      for j in candidates}
        rankings.append(sorted(candidates, key=lambda j: (-similarity[j], j)))
    return rankings


def naive_retrieval_metrics(queries, labels, references=None, reference_labels=None,
                            ks=(1, 2, 4, 8)):
    """Retrieval metrics from `naive_rankings`, the definitions written out per query (queries
    with no relevant reference are left out).

    Returns:
        ({metric name: float}, number of queries left out).
    """
    labels = np.asarray(labels)
    reference_labels = labels if references is None else np.asarray(reference_labels)
    scores = {name: [] for name in ["precision_at_1", "r_precision", "map_at_r"] +
              [f"recall_at_{k}" for k in ks]}
    left_out = 0
    for label, ranking in zip(labels, naive_rankings(queries, references)):
        relevant = [bool(reference_labels[j] == label) for j in ranking]
        r = sum(relevant)
        if r == 0:
            left_out += 1
            continue
        scores["precision_at_1"].append(float(relevant[0]))
        scores["r_precision"].append(sum(relevant[:r]) / r)
        average = 0.0
        for i in range(r):
            if relevant[i]:
                average += sum(relevant[:i + 1]) / (i + 1)
        scores["map_at_r"].append(average / r)
        for k in ks:
            scores[f"recall_at_{k}"].append(float(any(relevant[:k])))
    return {name: float(np.mean(values)) for name, values in scores.items()}, left_out


_MAIN_DRIVER = """
import contextlib, importlib, io, json, sys
sys.path.insert(0, {tests!r})
from supcon_tf import cli

module, cases_path, outcomes_path, context = sys.argv[1:5]
binary = importlib.import_module(module)
with open(cases_path) as f:
    cases = json.load(f)
outcomes = {{}}
manager = getattr(importlib.import_module("helpers"), context)() if context else contextlib.nullcontext()
with manager:
    for name, argv in cases.items():
        stdout, stderr, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                binary.FLAGS.unparse_flags()
                binary.main(cli.parse_flags(binary.FLAGS, [module, *argv]))
            except SystemExit as exit:
                code = exit.code
        outcomes[name] = [code, stdout.getvalue(), stderr.getvalue()]
with open(outcomes_path, "w") as f:
    json.dump(outcomes, f)
"""


def run_main_cases(module, cases, scratch, context=None, timeout=300):
    """Runs `module.main` once per case in one fresh process (TensorFlow starts once).

    Args:
        module: the binary's module name, e.g. "supcon_tf.retrieval" (its flags are reset
            between cases).
        cases: {name: argv list without the program name}.
        scratch: a directory for the driver's files.
        context: optional name of a function of this module returning a context manager that
            is entered around every case (e.g. "mock_retrieval_benchmarks").

    Returns:
        {name: (exit code, stdout, stderr)}; code 0 when `main` returned.
    """
    import json

    scratch = str(scratch)
    driver = os.path.join(scratch, "driver.py")
    cases_path, outcomes_path = os.path.join(scratch, "cases.json"), os.path.join(scratch,
                                                                                 "out.json")
    with open(driver, "w") as f:
        f.write(_MAIN_DRIVER.format(tests=os.path.join(REPO, "tests")))
    with open(cases_path, "w") as f:
        json.dump(cases, f)
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, driver, module, cases_path, outcomes_path,
                             context or ""], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(outcomes_path) as f:
        return {name: tuple(outcome) for name, outcome in json.load(f).items()}


# TFDS name -> (label feature, number of classes) of what `mock_retrieval_benchmarks` serves.
MOCK_BENCHMARKS = {"caltech_birds2011": ("label", 200), "cars196": ("label", 196),
                   "stanford_online_products": ("class_id", 22634)}


def mock_benchmark_split(name, per_digit=8):
    """The examples `mock_retrieval_benchmarks` serves for TFDS dataset `name` (every split).

    Digits 0-4 get the first class ids of the first (training) half, digits 5-9 the first ids
    of the second half (for SOP, whose test split holds only test classes, every digit gets an
    id of the second half); images are the bundled digits resized to 32 x {32, 40, 48}.

    Returns:
        (images: list of uint8 [32, W, 3], labels int64 [N]).
    """
    from supcon_tf.data import sources

    _, num_classes = MOCK_BENCHMARKS[name]
    images, digits, _ = sources.digits_arrays()
    picks = np.concatenate([np.flatnonzero(digits == d)[:per_digit] for d in range(10)])
    half = num_classes // 2
    if name == "stanford_online_products":
        labels = half + 1 + digits[picks]
    else:
        labels = np.where(digits[picks] < 5, digits[picks], half + digits[picks] - 5)
    resized = [np.asarray(Image.fromarray(images[p]).resize((32 + 8 * (i % 3), 32),
                                                             Image.BILINEAR))
               for i, p in enumerate(picks)]
    return resized, labels.astype(np.int64)


def mock_retrieval_benchmarks():
    """A context manager: TFDS caltech_birds2011, cars196 and stanford_online_products are
    "prepared" and serve `mock_benchmark_split` (`tfds.testing.mock_data`; the rest of TFDS,
    the metadata and the library's reading code are the real ones)."""
    import tensorflow as tf

    def as_dataset(builder, split, **kwargs):
        label_key, _ = MOCK_BENCHMARKS[builder.name]
        images, labels = mock_benchmark_split(builder.name)
        return tf.data.Dataset.from_generator(
            lambda: ({"image": image, label_key: label} for image, label in zip(images, labels)),
            output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8),
                              label_key: tf.TensorSpec((), tf.int64)})

    return _mock_prepared_tfds(as_dataset_fn=as_dataset)


def _mock_prepared_tfds(**mock_options):
    """A context manager: every TFDS builder is "prepared" and serves
    `tfds.testing.mock_data(**mock_options)`."""
    import contextlib
    from unittest import mock

    import tensorflow_datasets as tfds

    stack = contextlib.ExitStack()
    stack.enter_context(tfds.testing.mock_data(**mock_options))
    stack.enter_context(mock.patch(
        "tensorflow_datasets.core.dataset_builder.DatasetBuilder.is_prepared",
        return_value=True))
    return stack


def pretrain_config(**overrides):
    """A `config.PretrainConfig` of 4 steps with `overrides` (no data read, nothing written)."""
    from supcon_tf import config as config_lib

    return config_lib.PretrainConfig(train_steps=4, **overrides)


def mock_multilabel_sources():
    """A context manager: TFDS voc/2007 and coco/2017 (every TFDS dataset) are "prepared" and
    serve 48 random examples per split drawn by `tfds.testing.mock_data` from the datasets' real
    feature specs (random images, object labels and difficult flags); the library's reading
    code is the real one."""
    return _mock_prepared_tfds(num_examples=48)
