"""End-to-end tests of `python -m supcon_tf.transfer` on a tiny digits pretraining run.

Tiny benchmark data stands in for the real datasets: image folders of digits for the manual
downloads (FGVC Aircraft: mean per-class, official val split; Stanford Cars: top-1, validation
held out of train) under a temporary `--manual_dir`. Every expected value is recomputed here:
images decoded with PIL, resized with TensorFlow, embedded with the SavedModel's `embed`
signature, the lambda sweep, and the metrics written out in numpy. The protocol's own tests
(VOC2007 through `tfds.testing.mock_data`, linear and fine-tuning) are in
tests/evaluation/transfer_test.py; those of the data modules it reads in
tests/data/benchmarks_test.py and multilabel_test.py.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image
from helpers import IMAGE_SIZE
from helpers import REPO
from helpers import run_binary
from helpers import saved_model_embed
from helpers import snapshot
from helpers import tiny_run_dir
from helpers import user_stderr_lines
from helpers import write_folders


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("transfer_manual"))
    write_folders(root)
    return root


# ----------------------------------------------------------------------------------------------
# the direct computation


def _folder_split(model_dir, root, split):
    """Features [N, F] and labels [N] of <root>/<split>: labels from the sorted class folder
    names, files in the order the folder source yields them (a seeded order that mixes the
    classes; the protocol's 20 % hold-out depends on it)."""
    from supcon_tf.data import sources

    classes = sorted(os.listdir(os.path.join(root, split)))
    images, labels = [], []
    for path in sources.folder_source(root, split).paths:
        images.append(np.asarray(Image.open(path).convert("RGB")))
        labels.append(classes.index(os.path.basename(os.path.dirname(path))))
    return saved_model_embed(model_dir, images), np.asarray(labels)


def _top1(labels, scores):
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def _mean_per_class(labels, scores):
    predictions = np.argmax(scores, axis=1)
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def _direct_linear(model_dir, manual_dir, key):
    """(test score, best lambda) of one folder benchmark computed here."""
    from supcon_tf.evaluation import linear_probe

    root = os.path.join(manual_dir, key)
    train_x, train_y = _folder_split(model_dir, root, "train")
    test_x, test_y = _folder_split(model_dir, root, "test")
    if key == "aircraft":  # the creators' val split; metric mean per-class
        val_x, val_y = _folder_split(model_dir, root, "val")
        metric, score = "mean_per_class", _mean_per_class
    else:  # 20 % of each train class held out with the run's seed 0; metric top-1
        fit, held = linear_probe.stratified_holdout(train_y, 0.2, seed=0)
        train_x, train_y, val_x, val_y = train_x[fit], train_y[fit], train_x[held], train_y[held]
        metric, score = "top1", _top1
    sweep = linear_probe.lbfgs_logistic_sweep(train_x, train_y, val_x, val_y, test_x, test_y,
                                              lambdas=np.logspace(-6, 5, 45), metric=metric)
    return score(test_y, sweep.test_scores), sweep.best_lambda


# ----------------------------------------------------------------------------------------------
# linear mode


@pytest.mark.slow
def test_linear_mode_matches_direct_computation_and_skips_missing(pretrained, manual_dir):
    result = run_binary("supcon_tf.transfer", f"--model_dir={pretrained}",
                        f"--manual_dir={manual_dir}", "--benchmarks=birdsnap,cars,aircraft")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in user_stderr_lines(result.stderr) if line.startswith("warning:")]
    assert len(warnings) == 1 and "birdsnap" in warnings[0] and "--manual_dir" in warnings[0]
    output_dir = os.path.join(pretrained, "transfer_linear")  # the default
    with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
    assert list(results["skipped"]) == ["birdsnap"]
    assert results["num_datasets"] == 2 and results["image_size"] == IMAGE_SIZE
    for key in ("aircraft", "cars"):
        with open(os.path.join(output_dir, f"{key}.json")) as f:
            report = json.load(f)
        assert report == results["benchmarks"][key]
        test_score, best_lambda = _direct_linear(pretrained, manual_dir, key)
        assert report["test_score"] == pytest.approx(test_score, abs=1e-9)
        assert results["scores"][key] == report["test_score"]
        assert report["best_lambda"] == pytest.approx(best_lambda)
        assert report["val_score"] == pytest.approx(max(report["val_scores"]))
        assert len(report["lambdas"]) == 45
    sizes = results["benchmarks"]
    assert (sizes["aircraft"]["num_train"], sizes["aircraft"]["num_val"],
            sizes["aircraft"]["num_test"]) == (30, 15, 18)
    assert (sizes["cars"]["num_train"], sizes["cars"]["num_val"],
            sizes["cars"]["num_test"]) == (32, 8, 24)
    mean = (results["scores"]["aircraft"] + results["scores"]["cars"]) / 2
    assert results["mean"] == pytest.approx(mean)
    with open(os.path.join(output_dir, "results.md")) as f:
        table = f.read()
    assert f"| **Mean (2 of 12 datasets)** | | **{100 * mean:.2f}** |" in table
    assert table in result.stdout


# ----------------------------------------------------------------------------------------------
# fine-tuning mode


@pytest.mark.slow
def test_finetune_mode_writes_the_chosen_grid_point(pretrained, manual_dir, tmp_path):
    output_dir = tmp_path / "finetune"
    result = run_binary("supcon_tf.transfer", f"--model_dir={pretrained}", "--mode=finetune",
                        f"--manual_dir={manual_dir}", "--benchmarks=aircraft",
                        f"--output_dir={output_dir}", "--finetune_steps=3",
                        "--finetune_batch_size=8", "--learning_rates=0.001,0.1",
                        "--weight_decays=1e-4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retracing" not in result.stderr
    with open(output_dir / "aircraft.json") as f:
        report = json.load(f)
    grid = report["grid"]
    assert [(p["learning_rate"], p["weight_decay"]) for p in grid] == [(0.001, 1e-4), (0.1, 1e-4)]
    for point in grid:
        assert point["optimizer_weight_decay"] == pytest.approx(1e-4 / point["learning_rate"])
    best = int(np.argmax([p["val_score"] for p in grid]))  # first maximum on ties
    assert report["learning_rate"] == grid[best]["learning_rate"]
    assert report["val_score"] == grid[best]["val_score"]
    # 45 train+val images, batch 8: 6 steps per epoch, BN momentum max(1 - 10/6, 0.9).
    assert report["bn_momentum"] == pytest.approx(0.9)
    assert (report["num_train"], report["num_val"], report["num_test"]) == (30, 15, 18)
    assert report["steps"] == 3 and report["batch_size"] == 8
    assert 0.0 <= report["test_score"] <= 1.0
    with open(output_dir / "results.json") as f:
        results = json.load(f)
    assert results["mode"] == "finetune" and results["mean"] == report["test_score"]
    assert results["scores"] == {"aircraft": report["test_score"]}
    assert os.path.exists(output_dir / "results.md")


# ----------------------------------------------------------------------------------------------
# bad flags
#
# Every case of BAD_FLAGS runs `supcon_tf.transfer.main` in one child process (`_DRIVER`, one
# TensorFlow start-up for all cases; the binary's flags are never defined in the test process,
# where other binaries' flags of the same names live); SUBPROCESS_CASES also run as the real
# `python -m supcon_tf.transfer`.

BAD_FLAGS = {
    "unknown_benchmark": (["--benchmarks=cifar10,imagenet"], "unknown benchmark 'imagenet'"),
    "duplicate_benchmark": (["--benchmarks=cars,cars"], "lists a benchmark twice"),
    "bad_mode": (["--mode=probe"], "--mode"),
    "missing_model_dir": (["--model_dir={tmp}/missing"], "does not exist"),
    "no_model_dir": (["--model_dir="], "--model_dir is required"),
    "no_saved_model": (["--model_dir={tmp}/empty"], "no SavedModel"),
    "missing_checkpoint": (["--checkpoint={run}/checkpoints/ckpt-999"], "ckpt-999 does not exist"),
    "finetune_without_run": (["--model_dir={tmp}/empty", "--mode=finetune"], "config.json"),
    "zero_steps": (["--mode=finetune", "--finetune_steps=0"], "--finetune_steps must be >= 1"),
    "zero_finetune_batch": (["--finetune_batch_size=0"], "--finetune_batch_size must be >= 1"),
    "bad_batch": (["--batch_size=0"], "--batch_size must be >= 1"),
    "negative_lr": (["--learning_rates=0.1,-1"], "--learning_rates values must be > 0"),
    "negative_decay": (["--weight_decays=0,-1e-4"], "--weight_decays values must be >= 0"),
    "bad_decay": (["--weight_decays=abc"], "--weight_decays must be a comma-separated list"),
    "image_size": (["--image_size=32"], "differs from the encoder's input size 16"),
    "results_exist": (["--output_dir={tmp}/done"], "already holds results"),
    "output_is_file": (["--output_dir={tmp}/done/results.json"], "is a file"),
    "none_available": (["--benchmarks=birdsnap"], "none of the requested benchmarks"),
    "missing_not_skipped": (["--benchmarks=cars,birdsnap", "--noskip_unavailable"],
                            "benchmark birdsnap is not available"),
    "positional": (["extra"], "unexpected arguments"),
}
SUBPROCESS_CASES = ("bad_mode", "no_saved_model")

_DRIVER = """
import contextlib, io, json, sys
from supcon_tf import cli, transfer

with open(sys.argv[1]) as f:
    cases = json.load(f)
outcomes = {}
for name, argv in cases.items():
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            transfer.FLAGS.unparse_flags()
            transfer.main(cli.parse_flags(transfer.FLAGS, ["transfer", *argv]))
        except SystemExit as exit:
            code = exit.code
    outcomes[name] = [code, stderr.getvalue()]
with open(sys.argv[2], "w") as f:
    json.dump(outcomes, f)
"""


def _case_args(case, tmp, run, manual_dir):
    args, _ = BAD_FLAGS[case]
    args = [arg.format(tmp=tmp, run=run) for arg in args]
    defaults = {"--model_dir": run, "--benchmarks": "cars", "--output_dir": f"{tmp}/out",
                "--manual_dir": manual_dir}
    for name, value in defaults.items():
        if not any(arg.startswith(name + "=") for arg in args):
            args.append(f"{name}={value}")
    return args


def _bad_flag_dirs(tmp):
    (tmp / "empty").mkdir()
    (tmp / "done").mkdir()
    (tmp / "done" / "results.json").write_text("{}")


@pytest.fixture(scope="module")
def bad_flag_outcomes(pretrained, manual_dir, tmp_path_factory):
    """({case: [exit code, stderr]}, snapshots before, snapshots after) of every BAD_FLAGS case."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("bad_flags")
    _bad_flag_dirs(tmp)
    scratch = tmp_path_factory.mktemp("bad_flags_driver")
    driver, cases, outcomes = scratch / "driver.py", scratch / "cases.json", scratch / "out.json"
    driver.write_text(_DRIVER)
    cases.write_text(json.dumps({case: _case_args(case, tmp, pretrained, manual_dir)
                                 for case in BAD_FLAGS}))
    before = (snapshot(pretrained), snapshot(tmp))
    result = subprocess.run([sys.executable, str(driver), str(cases), str(outcomes)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""),
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    after = (snapshot(pretrained), snapshot(tmp))
    return json.loads(outcomes.read_text()), before, after


def _assert_one_error_line(code, stderr, message):
    assert code == 2
    lines = user_stderr_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_is_one_error_line(bad_flag_outcomes, case):
    code, stderr = bad_flag_outcomes[0][case]
    _assert_one_error_line(code, stderr, BAD_FLAGS[case][1])


def test_bad_flags_write_nothing(bad_flag_outcomes):
    _, before, after = bad_flag_outcomes
    assert after == before  # the run directory and the scratch directory are untouched


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_flag_in_the_real_binary(pretrained, manual_dir, tmp_path, case):
    _bad_flag_dirs(tmp_path)
    before_run, before_tmp = snapshot(pretrained), snapshot(tmp_path)
    result = run_binary("supcon_tf.transfer",
                        *_case_args(case, tmp_path, pretrained, manual_dir), timeout=120)
    _assert_one_error_line(result.returncode, result.stderr, BAD_FLAGS[case][1])
    assert snapshot(pretrained) == before_run
    assert snapshot(tmp_path) == before_tmp
