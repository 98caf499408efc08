"""Tests of `python -m supcon_tf.linear_eval` on a tiny digits pretraining run.

One 2-step pretraining run (module fixture) is evaluated by every protocol: the L-BFGS sweep
from the SavedModel and from a checkpoint, the SGD stage 2 on precomputed features and on
augmented images streamed through the frozen encoder. Expected values are recomputed here from
the SavedModel's `embed` signature and the probes; accuracy thresholds are set against the
chance rate of the test labels or a probe on random features, computed in the test. Bad flags
run `main` in-process (fast), plus one real subprocess; the flagfiles of flags/linear_eval/ are
parsed with the binary's FLAGS and checked against the paper's table. The stage-2 classifier's
own tests are tests/evaluation/linear_classifier_test.py.
"""

import gc
import glob
import json
import os
import shutil

import numpy as np
import pytest
from helpers import REPO
from helpers import chance_accuracy
from helpers import run_binary
from helpers import snapshot
from helpers import tiny_run_dir
from helpers import user_stderr_lines


LINEAR_EVAL_FLAGS = os.path.join(REPO, "flags", "linear_eval")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A copy of the session's tiny run (linear_eval writes its results into the run)."""
    model_dir = tmp_path_factory.mktemp("linear_eval") / "run"
    shutil.copytree(tiny_run_dir(tmp_path_factory), model_dir)
    return str(model_dir)


def _eval_images(split):
    """(images float32 [N, 16, 16, 3], labels [N]) of digits through the eval crop."""
    from supcon_tf.data import augment
    from supcon_tf.data import sources

    resize = augment.build_augmenter("eval", 16)
    data = sources.load_source("digits", split).map(lambda image, label: (resize(image), label))
    images, labels = zip(*data.batch(2048).as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def saved_model_features(pretrained):
    """{split: (features [N, 128], labels [N])} from the SavedModel's `embed` signature."""
    import tensorflow as tf

    embed = tf.saved_model.load(os.path.join(pretrained, "saved_model")).signatures["embed"]
    out = {}
    for split in ("train", "test"):
        images, labels = _eval_images(split)
        features = [embed(images=images[i:i + 256])["embeddings"].numpy()
                    for i in range(0, len(images), 256)]
        out[split] = (np.concatenate(features), labels)
    return out


@pytest.fixture(scope="module")
def direct_lbfgs(saved_model_features):
    """The L-BFGS protocol computed here from library calls: holdout -> sweep -> top-1."""
    from supcon_tf.evaluation import linear_probe

    (train_x, train_y), (test_x, test_y) = saved_model_features["train"], saved_model_features[
        "test"]
    fit, held = linear_probe.stratified_holdout(train_y, 0.2, seed=0)
    return linear_probe.lbfgs_logistic_sweep(train_x[fit], train_y[fit], train_x[held],
                                             train_y[held], test_x, test_y)


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_linear_eval_writes_top1_and_matches_the_protocol(pretrained, direct_lbfgs,
                                                           saved_model_features):
    result = run_binary("supcon_tf.linear_eval", f"--model_dir={pretrained}", "--shots=2",
                        "--draws=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| L-BFGS logistic, all labels |" in result.stdout
    assert "| 2-shot logistic (mean of 2) |" in result.stdout
    results = _results(pretrained)
    assert results["steps"] == 2  # the pretraining entries are kept
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0
    report = results["linear_eval"]
    assert report["protocol"] == "lbfgs" and report["encoder"] == "saved_model"
    assert report["num_train"] == 1442 and report["num_test"] == 355
    assert report["feature_dim"] == 128 and report["image_size"] == 16
    assert 0.0 <= report["2_shot_top1"] <= 1.0
    assert (report["shots"], report["draws"], report["center_crop_fraction"]) == (2, 2, None)
    chance = chance_accuracy(saved_model_features["test"][1])  # the most frequent class
    assert results["top1"] > 3 * chance  # far above chance even after 2 pretraining steps

    assert results["top1"] == pytest.approx(direct_lbfgs.test_score, abs=1e-6)
    assert report["best_lambda"] == pytest.approx(direct_lbfgs.best_lambda)


@pytest.mark.slow
def test_checkpoint_gives_the_saved_model_features_and_top1(pretrained, saved_model_features,
                                                            direct_lbfgs):
    import tensorflow as tf

    from supcon_tf import linear_eval

    prefix = tf.train.latest_checkpoint(os.path.join(pretrained, "checkpoints"))
    assert prefix.endswith("ckpt-2")  # the final checkpoint, the one the SavedModel holds
    encoder, _, input_shape, path = linear_eval.load_checkpoint_encoder(pretrained, "latest")
    assert path == prefix and input_shape == (16, 16, 3)
    for split in ("train", "test"):
        images, labels = _eval_images(split)
        features = np.concatenate([encoder(images[i:i + 256], training=False).numpy()
                                   for i in range(0, len(images), 256)])
        expected, expected_labels = saved_model_features[split]
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)

    result = run_binary("supcon_tf.linear_eval", f"--model_dir={pretrained}",
                        f"--checkpoint={prefix}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = _results(pretrained)["linear_eval"]
    assert report["encoder"] == "checkpoint" and report["encoder_path"] == prefix
    assert report["top1"] == pytest.approx(direct_lbfgs.test_score, abs=1e-6)
    assert report["best_lambda"] == pytest.approx(direct_lbfgs.best_lambda)


@pytest.mark.slow
def test_sgd_protocol_equals_sgd_linear_probe_on_the_features(pretrained, saved_model_features):
    from supcon_tf.evaluation import linear_classifier

    result = run_binary(
        "supcon_tf.linear_eval", f"--model_dir={pretrained}", "--protocol=sgd",
        "--optimizer=nesterov", "--learning_rate=1.0", "--batch_size=128", "--epochs=4",
        "--schedule=piecewise", "--boundary_epochs=2,3", "--decay_rate=0.5",
        "--weight_decay=1e-4", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| SGD linear classifier (nesterov, 4 ep, eval) |" in result.stdout
    results = _results(pretrained)
    report = results["linear_eval"]
    assert report["protocol"] == "sgd" and report["encoder"] == "saved_model"
    assert report["scaled_learning_rate"] == pytest.approx(0.5)  # 1.0 * 128 / 256
    assert report["steps_per_epoch"] == 12 and report["total_steps"] == 48  # ceil(1442 / 128)
    assert report["classifier"]["boundary_epochs"] == [2.0, 3.0]
    assert report["classifier"]["augmentation"] == "eval"

    (train_x, train_y), (test_x, test_y) = saved_model_features["train"], saved_model_features[
        "test"]
    options = dict(num_classes=10, epochs=4, batch_size=128, learning_rate=0.5,
                   optimizer="nesterov", schedule="piecewise", weight_decay=1e-4, momentum=0.9,
                   seed=3, schedule_options={"boundary_epochs": [2, 3], "decay_rate": 0.5})
    direct = linear_classifier.sgd_linear_probe(train_x, train_y, test_x, test_y, **options)
    assert results["top1"] == pytest.approx(direct.top1, abs=1e-9)
    assert results["top5"] == pytest.approx(direct.top5, abs=1e-9)
    # Baseline: the same classifier on random features of the same shape and scale.
    rng = np.random.default_rng(0)
    scale = train_x.std()
    baseline = linear_classifier.sgd_linear_probe(
        rng.normal(scale=scale, size=train_x.shape), train_y,
        rng.normal(scale=scale, size=test_x.shape), test_y, **options)
    assert baseline.top1 < 2 * chance_accuracy(test_y)
    assert direct.top1 > baseline.top1 + 0.2


@pytest.mark.slow
def test_sgd_with_augmentation_streams_images_and_beats_chance(pretrained, saved_model_features):
    import keras

    from supcon_tf import export
    from supcon_tf.evaluation import linear_classifier

    args = ["--protocol=sgd", "--augmentation=crop_flip", "--crop_min_area=0.5", "--flip=false",
            "--epochs=4", "--batch_size=64", "--learning_rate=2.0", "--weight_decay=1e-3"]
    result = run_binary("supcon_tf.linear_eval", f"--model_dir={pretrained}",
                        "--checkpoint=latest", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _results(pretrained)["linear_eval"]
    assert report["encoder"] == "checkpoint" and report["classifier"]["augmentation"] == (
        "crop_flip")
    assert report["steps_per_epoch"] == 23 and report["total_steps"] == 92  # ceil(1442 / 64)
    chance = chance_accuracy(saved_model_features["test"][1])  # about 0.1
    assert report["top1"] > 2.5 * chance  # about 0.45 here

    # The same stream through the SavedModel's `embed` (a plain callable, not a Keras model)
    # gives the same classifier: the two encoders compute the same features.
    config = linear_classifier.ClassifierConfig(
        augmentation="crop_flip", crop_min_area=0.5, flip=False, epochs=4, batch_size=64,
        learning_rate=2.0, weight_decay=1e-3)
    embed, input_shape = export.load_embed(os.path.join(pretrained, "saved_model"))
    keras.utils.set_random_seed(config.seed)
    train_data = linear_classifier.augmented_dataset("digits", 16, config, split="train")
    test_data = linear_classifier.eval_dataset("digits", 16, 64, split="test")
    streamed = linear_classifier.train_linear_classifier(
        embed, train_data, test_data, config, num_classes=10, num_train_examples=1442,
        input_shape=input_shape)
    assert streamed.top1 == pytest.approx(report["top1"], abs=1.5 / 355)  # <= 1 image apart
    assert [v.path.split("/")[-1] for v in streamed.model.trainable_variables] == [
        "kernel", "bias"]


# ----------------------------------------------------------------------------------------------
# Bad flags: one `error:` line, exit status 2, nothing written.


def _run_main(args, capsys):
    """Runs the binary's flag parsing + `main` in this process; returns (exit code, stderr lines).

    Objects of earlier tests (e.g. a partly restored `tf.train.Checkpoint`) may be garbage
    collected at any time and log a "WARNING:tensorflow:" line; they are collected before and
    after the run and such lines are not counted as the program's.
    """
    from supcon_tf import cli
    from supcon_tf import linear_eval

    gc.collect()
    capsys.readouterr()
    linear_eval.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            linear_eval.main(cli.parse_flags(linear_eval.FLAGS, ["linear_eval", *args]))
    finally:
        linear_eval.FLAGS.unparse_flags()
        stderr = capsys.readouterr().err
        gc.collect()
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith("WARNING:tensorflow:")]
    return exit_info.value.code, lines


def _other_architecture(pretrained, tmp_path):
    """A run directory whose config asks for a wider encoder than `pretrained`'s checkpoint."""
    run = tmp_path / "wider"
    run.mkdir()
    shutil.copy(os.path.join(pretrained, "run_facts.json"), run / "run_facts.json")
    with open(os.path.join(pretrained, "config.json")) as f:
        config = json.load(f)
    config["width_multiplier"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    return str(run)


BAD_FLAGS = {
    # case: (arguments ({run}: the pretrained run, {tmp}: a scratch dir), message)
    "missing_dir": (["--model_dir={tmp}/missing"], "does not exist"),
    "no_saved_model": (["--model_dir={tmp}/empty", "--dataset=digits"], "no SavedModel"),
    "bad_shots": (["--model_dir={run}", "--shots=-1"], "--shots must be >= 0"),
    "bad_dataset": (["--model_dir={run}", "--dataset=folder:/nonexistent/images"],
                    "nonexistent"),
    "unknown_protocol": (["--model_dir={run}", "--protocol=svm"], "--protocol='svm' is unknown"),
    "bad_optimizer": (["--model_dir={run}", "--protocol=sgd", "--optimizer=sgdd"],
                      "--optimizer='sgdd' is unknown"),
    "bad_schedule": (["--model_dir={run}", "--protocol=sgd", "--schedule=linear"],
                     "--schedule='linear' is unknown"),
    "bad_augmentation": (["--model_dir={run}", "--protocol=sgd", "--augmentation=mixup"],
                         "--augmentation='mixup' is unknown"),
    "zero_epochs": (["--model_dir={run}", "--protocol=sgd", "--epochs=0"],
                    "--epochs must be an integer >= 1"),
    "fractional_epochs": (["--model_dir={run}", "--epochs=1.5"], "--epochs"),  # absl parse error
    "zero_learning_rate": (["--model_dir={run}", "--protocol=sgd", "--learning_rate=0"],
                           "--learning_rate must be > 0"),
    "bad_momentum": (["--model_dir={run}", "--protocol=sgd", "--momentum=1"],
                     "--momentum must be in [0, 1)"),
    "long_warmup": (["--model_dir={run}", "--protocol=sgd", "--epochs=5", "--warmup_epochs=5"],
                    "leaves no training after the warmup"),
    "unsorted_boundaries": (["--model_dir={run}", "--protocol=sgd", "--schedule=piecewise",
                             "--epochs=10", "--boundary_epochs=6,3"],
                            "--boundary_epochs must be increasing"),
    "boundaries_without_piecewise": (["--model_dir={run}", "--protocol=sgd",
                                      "--boundary_epochs=3"], "applies to --schedule=piecewise"),
    "bad_crop": (["--model_dir={run}", "--protocol=sgd", "--crop_min_area=0"],
                 "--crop_min_area must be in (0, 1]"),
    "missing_checkpoint": (["--model_dir={run}", "--checkpoint={run}/checkpoints/ckpt-999"],
                           "checkpoints/ckpt-999 does not exist"),
    "checkpoint_of_another_architecture": (
        ["--model_dir={tmp}/wider", "--checkpoint={run}/checkpoints/ckpt-2"],
        "does not match the architecture"),
    "checkpoint_and_saved_model": (["--model_dir={run}", "--checkpoint=latest",
                                    "--saved_model={run}/saved_model"], "not both"),
    "no_run_for_checkpoint": (["--model_dir={tmp}/empty", "--checkpoint=latest",
                               "--dataset=digits"], "config.json is missing"),
    "unknown_strategy": (["--model_dir={run}", "--strategy=gpu"], "--strategy='gpu' is unknown"),
    "strategy_without_checkpoint": (["--model_dir={run}", "--protocol=sgd",
                                     "--strategy=mirrored"], "from a checkpoint"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_is_one_line_and_writes_nothing(pretrained, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    _other_architecture(pretrained, tmp_path)
    arguments, message = BAD_FLAGS[case]
    args = [a.format(run=pretrained, tmp=tmp_path) for a in arguments]
    before_run, before_tmp = snapshot(pretrained), snapshot(tmp_path)
    code, lines = _run_main(args, capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert snapshot(pretrained) == before_run
    assert snapshot(tmp_path) == before_tmp
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_the_binary_reports_a_bad_checkpoint_in_one_line(pretrained, tmp_path):
    before = snapshot(pretrained)
    result = run_binary("supcon_tf.linear_eval", f"--model_dir={pretrained}",
                        f"--checkpoint={tmp_path}/ckpt-7", "--protocol=sgd", timeout=120)
    assert result.returncode == 2
    lines = user_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint "), lines
    assert snapshot(pretrained) == before


# ----------------------------------------------------------------------------------------------
# The paper's stage-2 flagfiles (flags/linear_eval/), parsed with the binary's own FLAGS.

# reference/paper.md, "Official configurations", stage 2 (and the files' documented choices).
_IMAGENET, _CIFAR10 = 1_281_167, 50_000
FLAGFILES = {
    "supcon_imagenet.flags": dict(
        examples=_IMAGENET, optimizer="RMSpropWithL2", base=0.05, batch=6144, epochs=90,
        weight_decay=1e-6, epsilon=1e-3, nesterov=None, schedule="WarmupExponentialDecay",
        decay_rate=0.97, decay_epochs=0.5, warmup=12, crop=0.08, normalize=True),
    "supcon_cifar10.flags": dict(
        examples=_CIFAR10, optimizer="SGDWithL2", base=2.5, batch=4096, epochs=100,
        weight_decay=0.0, epsilon=None, nesterov=False, schedule="WarmupPiecewiseDecay",
        decay_rate=0.2, boundaries=(60, 75, 90), warmup=0, crop=0.2, normalize=False),
    "simclr_imagenet.flags": dict(
        examples=_IMAGENET, optimizer="SGDWithL2", base=0.1, batch=6144, epochs=90,
        weight_decay=1e-6, epsilon=None, nesterov=True, schedule="WarmupCosineDecay", warmup=12,
        crop=0.08, normalize=False),
    "simclr_cifar10.flags": dict(
        examples=_CIFAR10, optimizer="SGDWithL2", base=0.25, batch=1024, epochs=90,
        weight_decay=0.0, epsilon=None, nesterov=False, schedule="WarmupCosineDecay", warmup=0,
        crop=0.2, normalize=False),
    "lbfgs.flags": None,
}


def test_every_linear_eval_flagfile_is_checked():
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(LINEAR_EVAL_FLAGS,
                                                                       "*.flags")))
    assert found == sorted(FLAGFILES)


@pytest.mark.parametrize("flagfile", sorted(FLAGFILES))
def test_linear_eval_flagfile_parses_and_builds_its_optimizer_and_schedule(flagfile):
    from supcon_tf import linear_eval

    flag_values = linear_eval.FLAGS
    flag_values.unparse_flags()
    try:
        flag_values(["linear_eval", f"--flagfile={os.path.join(LINEAR_EVAL_FLAGS, flagfile)}",
                     "--model_dir=/nonexistent/never_written"])
        config = linear_eval.config_from_flags(flag_values)
        expected = FLAGFILES[flagfile]
        if expected is None:  # the L-BFGS sweep: no optimizer
            assert flag_values.protocol == "lbfgs" and flag_values.val_fraction == 0.2
            return
        assert flag_values.protocol == "sgd"
        assert config.augmentation == "crop_flip" and config.flip
        assert config.crop_min_area == expected["crop"]
        assert config.normalize_features == expected["normalize"]
        assert (config.epochs, config.batch_size) == (expected["epochs"], expected["batch"])
        steps = -(-expected["examples"] // expected["batch"])  # ceil
        peak = expected["base"] * expected["batch"] / 256
        schedule = config.build_schedule(expected["examples"])
        optimizer = config.build_optimizer(schedule)

        assert type(optimizer).__name__ == expected["optimizer"]
        assert optimizer.l2_weight_decay == pytest.approx(expected["weight_decay"])
        if expected["epsilon"] is not None:
            assert optimizer.epsilon == pytest.approx(expected["epsilon"])
        if expected["nesterov"] is not None:
            assert optimizer.nesterov is expected["nesterov"]
        assert optimizer.momentum == pytest.approx(0.9)

        assert type(schedule).__name__ == expected["schedule"]
        warmup = expected["warmup"] * steps
        assert schedule.warmup_steps == warmup
        total = expected["epochs"] * steps
        if expected["schedule"] == "WarmupExponentialDecay":
            assert schedule.decay_steps == pytest.approx(expected["decay_epochs"] * steps)
            assert schedule.decay_rate == pytest.approx(expected["decay_rate"])
            # 10 whole decay intervals after the warmup: peak * 0.97 ** 10.
            at = warmup + int(np.ceil(10 * expected["decay_epochs"] * steps))
            assert float(schedule(at)) == pytest.approx(peak * 0.97 ** 10, rel=1e-5)
        elif expected["schedule"] == "WarmupPiecewiseDecay":
            assert schedule.boundaries == [b * steps for b in expected["boundaries"]]
            assert float(schedule(70 * steps)) == pytest.approx(peak * 0.2, rel=1e-5)
            assert float(schedule(total - 1)) == pytest.approx(peak * 0.2 ** 3, rel=1e-5)
        else:
            assert schedule.total_steps == total
            assert float(schedule(total)) == pytest.approx(0.0, abs=1e-6)
        assert float(schedule(warmup)) == pytest.approx(peak, rel=1e-5)
    finally:
        flag_values.unparse_flags()
