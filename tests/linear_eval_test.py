"""End-to-end tests of `python -m supcon_tf.linear_eval` on a tiny digits pretraining run."""

import json
import os

import numpy as np
import pytest

from pretrain_test import REPO
from pretrain_test import run_binary
from pretrain_test import snapshot
from pretrain_test import user_stderr_lines

TINY_FLAGS = os.path.join(REPO, "flags", "tiny.flags")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("linear_eval") / "run")
    result = run_binary("supcon_tf.pretrain", f"--flagfile={TINY_FLAGS}", "--train_steps=2",
                        f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def _direct_top1(model_dir):
    """The protocol computed here from library calls: embed -> holdout -> sweep -> top-1."""
    import tensorflow as tf

    from supcon_tf.data import augment
    from supcon_tf.data import sources
    from supcon_tf.evaluation import probes

    embed = tf.saved_model.load(os.path.join(model_dir, "saved_model")).signatures["embed"]
    resize = augment.build_augmenter("eval", 16)

    def features(split):
        data = sources.load_source("digits", split).map(
            lambda image, label: (resize(image), label)).batch(256)
        xs, ys = zip(*[(embed(images=x)["embeddings"].numpy(), y.numpy()) for x, y in data])
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = features("train")
    test_x, test_y = features("test")
    fit, held = probes.stratified_holdout(train_y, 0.2, seed=0)
    sweep = probes.lbfgs_logistic_sweep(train_x[fit], train_y[fit], train_x[held], train_y[held],
                                        test_x, test_y)
    return sweep.test_score, sweep.best_lambda


@pytest.mark.slow
def test_linear_eval_writes_top1_and_matches_the_protocol(pretrained):
    result = run_binary("supcon_tf.linear_eval", f"--model_dir={pretrained}", "--shots=2",
                        "--draws=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| L-BFGS logistic, all labels |" in result.stdout
    assert "| 2-shot logistic (mean of 2) |" in result.stdout
    with open(os.path.join(pretrained, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 2  # the pretraining entries are kept
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0
    report = results["linear_eval"]
    assert report["num_train"] == 1442 and report["num_test"] == 355
    assert report["feature_dim"] == 128 and report["image_size"] == 16
    assert 0.0 <= report["2_shot_top1"] <= 1.0
    assert results["top1"] > 0.3  # ten classes: far above chance even after 2 steps

    top1, best_lambda = _direct_top1(pretrained)
    assert results["top1"] == pytest.approx(top1, abs=1e-6)
    assert report["best_lambda"] == pytest.approx(best_lambda)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_dir", "no_saved_model", "bad_dataset"])
def test_bad_flag_is_one_line_and_writes_nothing(pretrained, tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {
        "missing_dir": [f"--model_dir={tmp_path / 'missing'}"],
        "no_saved_model": [f"--model_dir={empty}", "--dataset=digits"],
        "bad_shots": [f"--model_dir={pretrained}", "--shots=-1"],
        "bad_dataset": [f"--model_dir={pretrained}", "--dataset=folder:/nonexistent/images"],
    }[case]
    message = {"missing_dir": "does not exist", "no_saved_model": "no SavedModel",
               "bad_shots": "--shots must be >= 0", "bad_dataset": "nonexistent"}[case]
    before_run, before_tmp = snapshot(pretrained), snapshot(tmp_path)
    result = run_binary("supcon_tf.linear_eval", *args, timeout=120)
    assert result.returncode != 0
    lines = user_stderr_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert snapshot(pretrained) == before_run
    assert snapshot(tmp_path) == before_tmp
    assert not (tmp_path / "missing").exists()
