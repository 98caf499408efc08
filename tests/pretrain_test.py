"""End-to-end tests of `python -m supcon_tf.pretrain` on tiny digits runs (subprocesses).

The binary runs from `flags/tiny.flags` (ResNet-18 x0.25, 16 px, batch 32). One uninterrupted
run is shared by several tests (module fixture); the resume test kills a second run with
SIGKILL after its first checkpoint, resumes it and compares it with the uninterrupted one.
"""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO
from helpers import TINY_ARGS
from helpers import TINY_FLAGS
from helpers import checkpoint_values
from helpers import run_binary
from helpers import run_main_cases
from helpers import snapshot
from helpers import user_stderr_lines

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("pretrain") / "run")
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}",
                        "--verbose=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


@pytest.mark.slow
def test_writes_results_checkpoints_logs_and_saved_model(tiny_run):
    import tensorflow as tf

    model_dir, result = tiny_run
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 8
    assert results["total_steps"] == 8 and results["steps_per_epoch"] == 4
    assert results["resumed_from_step"] == 0
    assert results["weights_finite"] is True
    for key in ("loss", "contrastive_loss", "probe_loss", "probe_accuracy"):
        assert np.isfinite(results["final"][key]), key
    assert 0.0 <= results["probe_accuracy"] <= 1.0
    assert results["signatures"] == ["classify", "embed", "project"]
    assert "done: 8 steps" in result.stdout
    # One fit call per epoch; the progress lines count the run's epochs.
    assert [line for line in result.stdout.splitlines() if line.startswith("Epoch")] == [
        "Epoch 1/2", "Epoch 2/2"]
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    assert history["epoch"] == [1, 2] and history["step"] == [4, 8]
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config["train_steps"] == 8 and config["depth"] == 18 and config["loss"] == "supcon"
    assert os.path.getsize(os.path.join(model_dir, "loss.png")) > 1000
    assert os.path.getsize(os.path.join(model_dir, "tsne.png")) > 1000
    assert len(history["knn_accuracy"]) == 2
    assert results["monitor"] == {"eval_split": "test", "examples": 355}
    events = glob.glob(os.path.join(model_dir, "logs", "**", "events.out.tfevents.*"),
                       recursive=True)
    assert events
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert {"epoch_loss", "epoch_contrastive_loss", "epoch_probe_accuracy",
            "epoch_knn_accuracy"} <= tags
    checkpoints = os.path.join(model_dir, "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-8")
    values = checkpoint_values(model_dir)
    steps = [v for k, v in values.items() if k.startswith("optimizer/") and "iteration" in k]
    assert [int(s) for s in steps] == [8]

    loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
    images = tf.random.uniform([3, 16, 16, 3], seed=0)
    embeddings = loaded.signatures["embed"](images=images)["embeddings"]
    assert embeddings.shape == (3, 128)  # ResNet-18 x0.25: 512 * 0.25 features
    assert np.all(np.isfinite(embeddings.numpy()))
    projections = loaded.signatures["project"](images=images)["projections"].numpy()
    np.testing.assert_allclose(np.linalg.norm(projections, axis=1), 1.0, rtol=1e-4)
    probabilities = loaded.signatures["classify"](images=images)["probabilities"].numpy()
    assert probabilities.shape == (3, 10)


def _naive_knn_top1(train_x, train_y, test_x, test_y, k, temperature):
    """Cosine kNN with exp(s / T) votes, one query at a time (independent of evaluation/knn.py)."""
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    correct = 0
    for query, label in zip(test_x, test_y):
        similarity = train_x @ (query / np.linalg.norm(query))
        votes = {}
        for index in np.argsort(-similarity, kind="stable")[:k]:
            votes[train_y[index]] = votes.get(train_y[index], 0.0) + np.exp(
                similarity[index] / temperature)
        best = max(votes.values())
        correct += min(c for c, v in votes.items() if v == best) == label
    return correct / len(test_y)


@pytest.mark.slow
def test_knn_monitor_matches_a_direct_computation_on_the_saved_model(tiny_run):
    import tensorflow as tf

    from supcon_tf import config as config_lib


    from supcon_tf import trainer

    model_dir, _ = tiny_run
    with open(os.path.join(model_dir, "config.json")) as f:
        config = config_lib.PretrainConfig(**json.load(f))
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    embed = tf.saved_model.load(os.path.join(model_dir, "saved_model")).signatures["embed"]

    def features(split, seed):
        images, labels = trainer.monitor_arrays(config, split, config.monitor_examples, seed)
        floats = tf.constant(images.astype(np.float32) / 255.0)
        return embed(images=floats)["embeddings"].numpy(), labels

    train_x, train_y = features(config.split, config.seed)
    test_x, test_y = features("test", config.seed + 1)
    assert len(train_y) == 144 and len(test_y) == 355
    assert sorted(np.unique(test_y)) == list(range(10))
    direct = _naive_knn_top1(train_x, train_y, test_x, test_y, k=20, temperature=0.1)
    assert results["knn_accuracy"] == pytest.approx(direct, abs=2 / 355)  # <= 2 near-ties


@pytest.mark.slow
def test_load_pretrained_restores_the_exported_encoder(tiny_run):
    import keras
    import tensorflow as tf



    from supcon_tf import trainer

    model_dir, _ = tiny_run
    try:
        run = trainer.load_pretrained(model_dir)
        assert int(run.optimizer.iterations.numpy()) == 8
        images = tf.random.uniform([5, 16, 16, 3], seed=1)
        exported = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
        np.testing.assert_allclose(
            run.model.encoder(images, training=False).numpy(),
            exported.signatures["embed"](images=images)["embeddings"].numpy(),
            rtol=1e-4, atol=1e-5)
        earlier = trainer.load_pretrained(
            model_dir, checkpoint=os.path.join(model_dir, "checkpoints", "ckpt-6"))
        assert int(earlier.optimizer.iterations.numpy()) == 6
        for checkpoint, message in [
                (os.path.join(model_dir, "checkpoints", "ckpt-5"), "does not exist"),
                (None, "config.json is missing")]:
            with pytest.raises(ValueError, match=message):
                trainer.load_pretrained(model_dir if checkpoint else REPO,
                                         checkpoint=checkpoint)
    finally:
        keras.backend.clear_session()


@pytest.mark.slow
def test_load_pretrained_refuses_a_checkpoint_of_another_architecture(tiny_run, tmp_path):
    import keras



    from supcon_tf import trainer

    model_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    config["depth"] = 34
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f)
    try:
        with pytest.raises(ValueError, match="cannot restore checkpoint .* does not match the "
                           "architecture"):
            trainer.load_pretrained(model_dir)
    finally:
        keras.backend.clear_session()


@pytest.mark.slow
def test_resumes_after_sigkill_to_the_same_step_and_weights(tiny_run, tmp_path):
    reference_dir, _ = tiny_run
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        [sys.executable, "-m", "supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once the step-4 checkpoint is being written: resumes at step 2 (epoch 0, 2 batches
    # skipped) or 4 (epoch 1) depending on whether the checkpoint state file was updated.
    fourth = os.path.join(model_dir, "checkpoints", "ckpt-4.index")
    deadline = time.time() + 180
    try:
        while not os.path.exists(fourth) and process.poll() is None:
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not os.path.exists(os.path.join(model_dir, "results.json")), "killed too late"

    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 8
    assert 2 <= results["resumed_from_step"] < 8
    assert results["weights_finite"] is True
    assert all(np.isfinite(v) for v in results["final"].values())

    # Same data stream (reseeded per epoch, consumed batches skipped), same schedule and
    # optimizer state: the resumed run ends where the uninterrupted one does.
    resumed, reference = checkpoint_values(model_dir), checkpoint_values(reference_dir)
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-4, atol=1e-5,
                                   err_msg=key)


@pytest.mark.slow
def test_resumes_after_sigkills_at_random_moments(tiny_run, tmp_path):
    """Two SIGKILLs at random moments, then a run to the end: the same final step and weights
    as the uninterrupted run. Each kill waits for a random event (start-up, or the appearance
    of checkpoint 2, 4 or 6, so at any phase: training, writing a checkpoint, skipping batches
    on resume, exporting) and then a random delay."""
    import random

    reference_dir, _ = tiny_run
    seed = int(os.environ.get("SUPCON_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    kills = []
    for _ in range(2):
        event = rng.choice(["start", "ckpt-2", "ckpt-4", "ckpt-6"])
        delay = rng.uniform(0.0, 10.0 if event == "start" else 2.0)
        process = subprocess.Popen(
            [sys.executable, "-m", "supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marker = os.path.join(model_dir, "checkpoints", f"{event}.index")
        deadline = time.time() + 180
        while event != "start" and not os.path.exists(marker) and process.poll() is None:
            assert time.time() < deadline, f"{marker} never appeared"
            time.sleep(0.02)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        checkpoints = sorted(glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")))
        kills.append((event, round(delay, 2), process.returncode,
                      [os.path.basename(c)[:-6] for c in checkpoints]))
    context = f"SUPCON_KILL_SEED={seed}, kills (event, delay s, exit, checkpoints): {kills}"
    print(context)

    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}")
    assert result.returncode == 0, f"{context}\n{result.stderr[-3000:]}"
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 8, context
    resumed, reference = checkpoint_values(model_dir), checkpoint_values(reference_dir)
    assert resumed.keys() == reference.keys(), context
    for key in reference:
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{key}; {context}")


@pytest.mark.slow
def test_refuses_a_run_dir_with_a_different_configuration(tiny_run):
    model_dir, _ = tiny_run
    before = snapshot(model_dir)
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}",
                        "--temperature=0.5")
    assert result.returncode != 0
    lines = user_stderr_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "different configuration" in lines[0]
    assert "temperature" in lines[0] and "--overwrite" in lines[0]
    assert snapshot(model_dir) == before


@pytest.mark.slow
@pytest.mark.parametrize("bad_flag, message", [
    ("--loss=supcn", "--loss='supcn' is unknown"),
    ("--batch_size=0", "--batch_size must be a positive integer"),
    ("--image_size=abc", "--image_size=abc"),
    ("--dataset=folder:/nonexistent/images", "nonexistent"),
])
def test_bad_flag_is_one_line_and_writes_nothing(tmp_path, bad_flag, message):
    model_dir = tmp_path / "run"
    result = run_binary("supcon_tf.pretrain", *TINY_ARGS, f"--model_dir={model_dir}",
                        bad_flag, timeout=120)
    assert result.returncode != 0
    lines = user_stderr_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not model_dir.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_pretrains_on_mocked_multilabel_sources_with_label_sets(tmp_path):
    # VOC2007 and COCO through the real TFDS reading code (mocked examples): multi-hot label
    # sets into Jaccard-weighted SupCon (COCO with the memory queue); probe and kNN monitor
    # off; a loss that needs one class per image refused in one line before any write.
    base = [f"--flagfile={TINY_FLAGS}", "--batch_size=8", "--train_steps=3",
            f"--data_dir={tmp_path / 'tfds'}"]
    runs = {"voc": ["--dataset=voc/2007", "--split=train"],
            "coco_memory": ["--dataset=coco/2017", "--split=validation", "--memory_size=32"],
            "voc_cross_entropy": ["--dataset=voc/2007", "--loss=cross_entropy"]}
    cases = {name: base + flags + [f"--model_dir={tmp_path / name}"]
             for name, flags in runs.items()}
    outcomes = run_main_cases("supcon_tf.pretrain", cases, tmp_path,
                              context="mock_multilabel_sources", timeout=600)
    for name, num_classes in (("voc", 20), ("coco_memory", 80)):
        code, stdout, stderr = outcomes[name]
        assert code == 0, stderr[-3000:]
        with open(tmp_path / name / "results.json") as f:
            results = json.load(f)
        assert results["steps"] == 3 and results["num_classes"] == num_classes
        assert np.isfinite(results["final"]["contrastive_loss"])
        assert not {"probe_accuracy", "knn_accuracy", "monitor"} & set(results)
        assert os.path.isdir(tmp_path / name / "saved_model")
    code, _, stderr = outcomes["voc_cross_entropy"]
    lines = user_stderr_lines(stderr)
    assert code != 0 and len(lines) == 1, lines
    assert "--loss=cross_entropy needs one class per image" in lines[0]
    assert "--loss=supcon" in lines[0] and not (tmp_path / "voc_cross_entropy").exists()


# ----------------------------------------------------------------------------------------------
# In-process: the flagfiles.


@pytest.mark.slow
@pytest.mark.parametrize("flagfile", sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(REPO, "flags", "*.flags"))))
def test_flagfile_parses_and_builds_its_objects(flagfile):
    import keras

    from supcon_tf import optimizers
    from supcon_tf import pretrain
    from supcon_tf import trainer

    flag_values = pretrain.FLAGS
    flag_values.unparse_flags()
    flag_values(["pretrain", f"--flagfile={os.path.join(REPO, 'flags', flagfile)}",
                 "--model_dir=/nonexistent/never_written"])
    try:
        config = pretrain.config_from_flags(flag_values)
        # No dataset here but digits: give what the source would say.
        facts = {"digits": (1442, 10), "cifar10": (50000, 10), "imagenet2012": (1281167, 1000)}
        count, classes = facts[config.dataset]
        config = dataclasses.replace(config, num_train_examples=count,
                                     num_classes=config.num_classes or classes)
        run = trainer.build_run(config, channels=3)
        # The model computes in the configured policy; the process-wide policy is left as it was.
        assert keras.mixed_precision.global_policy().name == "float32"
        expected = "float32" if config.mixed_precision == "none" else config.mixed_precision
        assert run.model.encoder.dtype_policy.name == expected
        assert run.strategy.num_replicas_in_sync == 1
        assert run.total_steps > 0 and run.steps_per_epoch == count // config.batch_size
        assert run.model.encoder.output_shape[-1] > 0
        assert run.learning_rate == pytest.approx(
            config.learning_rate * config.batch_size / 256)
        assert float(run.schedule(run.total_steps // 2)) > 0
        assert int(run.optimizer.iterations.numpy()) == 0
        # Decay exclusions (reference/paper.md): batch norm always; biases too except in the
        # SupCon paper configurations.
        variables = run.model.trainable_variables
        excluded = {v.path for v in variables
                    if optimizers.is_excluded(v, run.optimizer.decay_exclusions)}
        norms = {v.path for v in variables if v.path.endswith(("/gamma", "/beta"))}
        biases = {v.path for v in variables if v.path.endswith("/bias")}
        assert norms and biases and norms <= excluded
        assert (not biases & excluded) if flagfile.startswith("supcon_") else biases <= excluded
        assert not os.path.exists("/nonexistent/never_written")
    finally:
        flag_values.unparse_flags()
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
