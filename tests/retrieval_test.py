"""End-to-end tests of `python -m supcon_tf.retrieval` on a tiny digits pretraining run.

Every expected value is recomputed here: the images of the test-half classes picked in numpy,
transformed by `helpers.resize_centre_crop` (crop 0.875, the default), embedded with the
SavedModel's `embed` signature loaded by TensorFlow alone, and scored by
`helpers.naive_retrieval_metrics` (a plain loop with a full sort per query). Digits run offline;
CUB-200-2011, Cars196 and Stanford Online Products go through `tfds.testing.mock_data`
(`helpers.mock_retrieval_benchmarks`: the TFDS metadata and the library's reading code are the
real ones). The picture's frames are checked against the naive ranking. Bad flags: one error
line, exit status 2, nothing written.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from helpers import IMAGE_SIZE
from helpers import MOCK_BENCHMARKS
from helpers import mock_benchmark_split
from helpers import naive_rankings
from helpers import naive_retrieval_metrics
from helpers import resize_centre_crop
from helpers import run_binary
from helpers import run_main_cases
from helpers import saved_model_embed
from helpers import snapshot
from helpers import tiny_run_dir
from helpers import user_stderr_lines

CROP = 0.875  # the evaluation transform's default centre crop
METRICS = ("precision_at_1", "r_precision", "map_at_r")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _assert_metrics(results, expected, ks):
    for name in (*METRICS, *(f"recall_at_{k}" for k in ks)):
        assert results[name] == pytest.approx(expected[name], abs=1e-9), name


def _digits_test_half():
    """uint8 images [896, 32, 32, 3] and labels of digits 5-9, in the "all" split's order."""
    from supcon_tf.data import sources

    images, labels, _ = sources.digits_arrays()
    keep = labels >= 5
    return images[keep], labels[keep]


@pytest.fixture(scope="module")
def digits_run(pretrained, tmp_path_factory):
    """(results, stdout, output dir, run copy) of the binary on a copy of the tiny run, with
    the default --dataset (the run's: digits) and --output_dir (<model_dir>/retrieval_digits)."""
    run = tmp_path_factory.mktemp("retrieval_run") / "run"
    shutil.copytree(pretrained, run)
    result = run_binary("supcon_tf.retrieval", f"--model_dir={run}", "--ks=1,2,4,8,16")
    assert result.returncode == 0, result.stderr[-3000:]
    output_dir = run / "retrieval_digits"
    return _read_json(output_dir / "results.json"), result.stdout, output_dir, run


@pytest.mark.slow
def test_digits_metrics_match_direct_computation(pretrained, digits_run):
    results, stdout, _, _ = digits_run
    images, labels = _digits_test_half()
    embeddings = saved_model_embed(pretrained, images, fraction=CROP)
    ks = (1, 2, 4, 8, 16)
    expected, left_out = naive_retrieval_metrics(embeddings, labels, ks=ks)
    _assert_metrics(results, expected, ks)
    assert left_out == results["num_without_reference"] == 0
    assert (results["num_images"], results["num_classes"], results["num_queries"]) == (896, 5,
                                                                                      896)
    assert (results["dataset"], results["split"], results["classes"],
            results["first_class"]) == ("digits", "all", "second_half", 5)
    assert results["encoder"] == "saved_model" and results["image_size"] == IMAGE_SIZE
    assert f"| {expected['precision_at_1']:.4f} | {expected['r_precision']:.4f} |" in stdout
    assert "| Precision@1 | R-Precision | MAP@R | Recall@1 | Recall@2 | Recall@4 | Recall@8 | " \
           "Recall@16 |" in stdout


@pytest.mark.slow
def test_digits_picture_frames_follow_the_ranking(pretrained, digits_run):
    from supcon_tf import plots

    results, _, output_dir, _ = digits_run
    images, labels = _digits_test_half()
    queries = results["examples"]
    assert len(queries) == 8 and len(set(queries)) == 8
    embeddings = saved_model_embed(pretrained, images, fraction=CROP)
    rankings = naive_rankings(embeddings[queries], embeddings)  # queries against all images
    picture = np.asarray(Image.open(output_dir / "retrieval.png").convert("RGB"))
    scale = plots.CELL // IMAGE_SIZE
    for row, query in enumerate(queries):
        ranking = [j for j in rankings[row] if j != query][:16]  # leave-one-out
        left, top = plots.example_box(row, 0)
        assert tuple(picture[top + 1, left + 1]) == plots.QUERY_COLOUR
        tile = picture[top + plots.FRAME:top + plots.FRAME + plots.CELL,
                       left + plots.FRAME:left + plots.FRAME + plots.CELL]
        expected = np.round(resize_centre_crop(images[query], IMAGE_SIZE, CROP) * 255)
        np.testing.assert_allclose(tile, np.kron(expected, np.ones((scale, scale, 1))), atol=1)
        for column, reference in enumerate(ranking, start=1):
            left, top = plots.example_box(row, column)
            right = labels[reference] == labels[query]
            colour = plots.RIGHT_COLOUR if right else plots.WRONG_COLOUR
            assert tuple(picture[top + 1, left + 1]) == colour, (row, column)
    assert picture.shape[1] == plots.example_box(0, 16)[0] + plots.CELL + 2 * plots.FRAME + \
        plots.MARGIN


@pytest.mark.slow
def test_checkpoint_gives_the_saved_model_numbers(digits_run, tmp_path):
    results, _, _, run = digits_run
    result = run_binary("supcon_tf.retrieval", f"--model_dir={run}", "--checkpoint=latest",
                        f"--output_dir={tmp_path / 'checkpoint'}", "--ks=1,2,4,8,16",
                        "--num_examples=0")
    assert result.returncode == 0, result.stderr[-3000:]
    from_checkpoint = _read_json(tmp_path / "checkpoint" / "results.json")
    assert from_checkpoint["encoder"] == "checkpoint"
    _assert_metrics(from_checkpoint, results, (1, 2, 4, 8, 16))
    assert not (tmp_path / "checkpoint" / "retrieval.png").exists()


# ----------------------------------------------------------------------------------------------
# the TFDS benchmarks through tfds.testing.mock_data


@pytest.mark.slow
def test_tfds_benchmarks_use_the_standard_class_split(pretrained, tmp_path):
    saved_model = os.path.join(pretrained, "saved_model")
    cases = {name: [f"--saved_model={saved_model}", f"--dataset={name}", "--ks=1,2,4",
                    f"--output_dir={tmp_path / name}", f"--data_dir={tmp_path / 'tfds'}",
                    "--num_examples=3"]
             for name in MOCK_BENCHMARKS}
    outcomes = run_main_cases("supcon_tf.retrieval", cases, tmp_path,
                              context="mock_retrieval_benchmarks")
    standard = {"caltech_birds2011": ("train+test", "second_half", 100),
                "cars196": ("train+test", "second_half", 98),
                "stanford_online_products": ("test", "all", 0)}
    for name, (code, stdout, stderr) in outcomes.items():
        assert code == 0, stderr[-3000:]
        results = _read_json(tmp_path / name / "results.json")
        images, labels = mock_benchmark_split(name)
        keep = labels >= standard[name][2]
        embeddings = saved_model_embed(pretrained, [images[i] for i in np.flatnonzero(keep)],
                                       fraction=CROP)
        expected, _ = naive_retrieval_metrics(embeddings, labels[keep], ks=(1, 2, 4))
        _assert_metrics(results, expected, (1, 2, 4))
        assert (results["split"], results["classes"], results["first_class"]) == standard[name]
        assert results["num_images"] == keep.sum() == (80 if name.startswith("stanford") else 40)
        assert len(results["examples"]) == 3
        assert (tmp_path / name / "retrieval.png").exists() and "wrote" in stdout


# ----------------------------------------------------------------------------------------------
# bad flags

BAD_FLAGS = {
    "positional": (["extra"], "unexpected arguments"),
    "no_model": (["--model_dir="], "--model_dir is required"),
    "missing_run": (["--model_dir={tmp}/nowhere"], "does not exist"),
    "both_encoders": (["--checkpoint=latest", "--saved_model={run}/saved_model"],
                      "not both"),
    "no_saved_model": (["--saved_model={tmp}/empty"], "no SavedModel at"),
    "bad_checkpoint": (["--checkpoint={run}/checkpoints/ckpt-999"], "ckpt-999"),
    "ks_word": (["--ks=1,two"], "--ks must be a comma-separated list of ints"),
    "ks_zero": (["--ks=0,1"], "distinct ints >= 1"),
    "ks_twice": (["--ks=2,2"], "distinct ints >= 1"),
    "ks_too_big": (["--ks=1,5000"], "exceeds the 895 references"),
    "batch": (["--batch_size=0"], "--batch_size must be >= 1"),
    "examples": (["--num_examples=-1"], "--num_examples must be >= 0"),
    "image_size": (["--image_size=32"], "differs from the encoder's input size 16"),
    "crop": (["--center_crop_fraction=1.5"], "--center_crop_fraction must be in (0, 1]"),
    "classes": (["--classes=first_half"], "--classes"),
    "dataset": (["--dataset=no_such_dataset"], "Unknown dataset 'no_such_dataset'"),
    "no_split": (["--dataset=mnist"], "pass --split"),
    "unprepared": (["--dataset=cars196", "--data_dir={tmp}/tfds"], "is not prepared"),
    "bad_split": (["--split=valid"], "Unknown split 'valid'"),
    "empty": (["--split=all[:4]"], "holds no image of the evaluated classes"),
    "all_lone": (["--split=all[:3]", "--classes=all", "--ks=1"],
                 "no query has a relevant reference"),
    "output_needed": (["--model_dir=", "--saved_model={run}/saved_model", "--output_dir=",
                       "--dataset=digits"],
                      "--output_dir is required without --model_dir"),
    "results_exist": (["--output_dir={tmp}/done"], "already holds results"),
    "output_is_file": (["--output_dir={tmp}/done/results.json"], "is a file"),
}


def _case_args(case, tmp, run):
    args = [arg.format(tmp=tmp, run=run) for arg in BAD_FLAGS[case][0]]
    for name, value in {"--model_dir": run, "--output_dir": f"{tmp}/out"}.items():
        if not any(arg.startswith(name + "=") for arg in args):
            args.append(f"{name}={value}")
    return [arg for arg in args if not arg.endswith("=")]


def _bad_flag_dirs(tmp):
    (tmp / "empty").mkdir()
    (tmp / "done").mkdir()
    (tmp / "done" / "results.json").write_text("{}")


@pytest.fixture(scope="module")
def bad_flag_outcomes(pretrained, tmp_path_factory):
    """({case: (exit code, stdout, stderr)}, snapshots before, snapshots after)."""
    tmp = tmp_path_factory.mktemp("retrieval_bad_flags")
    _bad_flag_dirs(tmp)
    before = (snapshot(pretrained), snapshot(tmp))
    outcomes = run_main_cases(
        "supcon_tf.retrieval", {case: _case_args(case, tmp, pretrained) for case in BAD_FLAGS},
        tmp_path_factory.mktemp("retrieval_driver"))
    return outcomes, before, (snapshot(pretrained), snapshot(tmp))


def _assert_one_error_line(code, stderr, message):
    assert code == 2
    lines = user_stderr_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_is_one_error_line(bad_flag_outcomes, case):
    code, _, stderr = bad_flag_outcomes[0][case]
    _assert_one_error_line(code, stderr, BAD_FLAGS[case][1])


@pytest.mark.slow
def test_bad_flags_write_nothing(bad_flag_outcomes):
    _, before, after = bad_flag_outcomes
    assert after == before  # the run directory and the scratch directory are untouched


def test_bad_flag_in_the_real_binary(pretrained, tmp_path):
    _bad_flag_dirs(tmp_path)
    before = (snapshot(pretrained), snapshot(tmp_path))
    result = run_binary("supcon_tf.retrieval", *_case_args("ks_too_big", tmp_path, pretrained),
                        timeout=120)
    _assert_one_error_line(result.returncode, result.stderr, BAD_FLAGS["ks_too_big"][1])
    assert (snapshot(pretrained), snapshot(tmp_path)) == before
