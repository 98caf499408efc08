"""Tests of `make quickstart`: its flagfiles and its report step (`python -m supcon_tf.quickstart`).

The flagfiles are parsed with the pretraining binary's flags and compared with the quickstart's
settings written out here. The report runs on tiny run directories made by the real binaries:
the session's 2-step tiny run (`tiny_run_dir`, copied) as the trained row and a
`--train_steps=0` run of the same flags as the untrained row, both probed by `linear_eval`. The
expected table is written here from each run's results.json, not by the report's code; the plots
are checked as PNGs; a missing, unprobed or differently probed run is one error line and nothing
is written.
"""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import REPO
from helpers import TINY_FLAGS
from helpers import run_binary
from helpers import run_main_cases
from helpers import snapshot
from helpers import tiny_run_dir
from helpers import user_stderr_lines

RUNS = ("untrained", "supcon")
# The tiny runs' probe: 2-shot, 3 draws, the quickstart's crop (the digits resized whole).
PROBE_ARGS = [f"--flagfile={os.path.join(REPO, 'flags', 'linear_eval', 'lbfgs.flags')}",
              "--shots=2", "--draws=3", "--center_crop_fraction=1.0"]
# What the quickstart trains (README): both encoders alike but for the loss, its learning rate
# (per 256 examples: 1.0 and 0.1 at batch 128) and SupCon's online probe.
QUICKSTART = {"dataset": "digits", "split": "train", "image_size": 16, "batch_size": 128,
              "epochs": 30, "train_steps": None, "optimizer": "momentum", "momentum": 0.9,
              "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 1.0, "depth": 18,
              "width_multiplier": 0.25, "stem": "cifar", "projection_units": (128, 128),
              "temperature": 0.1, "num_views": 2, "augmentation": "simaugment",
              "jitter_strength": 0.5, "crop_min_area": 0.4, "blur_probability": 0.0,
              "flip": False, "memory_size": 0, "label_smoothing": 0.0, "seed": 0}
FLAGFILES = {"quickstart_supcon.flags": dict(loss="supcon", learning_rate=2.0, probe=True),
             "quickstart_ce.flags": dict(loss="cross_entropy", learning_rate=0.2, probe=False)}


@pytest.mark.parametrize("flagfile", sorted(FLAGFILES))
def test_flagfile_is_the_quickstart_configuration(flagfile):
    from supcon_tf import pretrain
    from supcon_tf import schedules

    flag_values = pretrain.FLAGS
    flag_values.unparse_flags()
    try:
        flag_values(["pretrain", f"--flagfile={os.path.join(REPO, 'flags', flagfile)}"])
        config = pretrain.config_from_flags(flag_values)
        model_dir = flag_values.model_dir
    finally:
        flag_values.unparse_flags()
    config.validate()
    expected = {**QUICKSTART, **FLAGFILES[flagfile]}
    assert {key: getattr(config, key) for key in expected} == expected
    rate = schedules.scale_learning_rate(config.learning_rate, config.batch_size)
    assert rate == pytest.approx(1.0 if config.loss == "supcon" else 0.1)
    assert model_dir == f"runs/quickstart/{'supcon' if config.loss == 'supcon' else config.loss}"


@pytest.fixture(scope="module")
def probed_runs(tmp_path_factory):
    """<root>/supcon (2 steps) and <root>/untrained (0 steps), both probed by linear_eval."""
    root = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(tiny_run_dir(tmp_path_factory), root / "supcon")
    result = run_binary("supcon_tf.pretrain", f"--flagfile={TINY_FLAGS}", "--train_steps=0",
                        f"--model_dir={root / 'untrained'}")
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = run_main_cases(
        "supcon_tf.linear_eval", {name: [f"--model_dir={root / name}", *PROBE_ARGS]
                                  for name in RUNS}, tmp_path_factory.mktemp("probe_driver"))
    for name, (code, _, stderr) in outcomes.items():
        assert code == 0, (name, stderr[-3000:])
    return root


def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_report_prints_the_runs_probes_and_draws_the_plots(probed_runs):
    import tensorflow as tf
    from PIL import Image

    untrained = _results(probed_runs / "untrained")
    assert untrained["steps"] == 0  # --train_steps=0: the initial weights, checkpointed
    assert tf.train.latest_checkpoint(str(probed_runs / "untrained" / "checkpoints")).endswith(
        "ckpt-0")

    result = run_binary("supcon_tf.quickstart", f"--model_dir={probed_runs}",
                        f"--runs={','.join(RUNS)}")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = ["Held-out digits (355 images), linear probes on frozen encoder features "
                "(2 steps of batch 32 per trained model):",
                "| encoder | top-1, all 1442 labels | top-1, 2-shot (mean of 3) |",
                "|---|---:|---:|"]
    probes = {}
    for name in RUNS:
        report = _results(probed_runs / name)["linear_eval"]
        probes[name] = {"top1": report["top1"], "2_shot_top1": report["2_shot_top1"],
                        "2_shot_std": report["2_shot_std"]}
        expected.append(f"| {name} | {report['top1']:.4f} | {report['2_shot_top1']:.4f} ± "
                        f"{report['2_shot_std']:.4f} |")
    lines = result.stdout.splitlines()
    start = lines.index(expected[0])
    assert lines[start:start + len(expected)] == expected

    summary = _results(probed_runs)
    assert summary["probes"] == probes and summary["top1"] == probes["supcon"]["top1"]
    assert (summary["train_images"], summary["test_images"], summary["shots"]) == (1442, 355, 2)
    assert {name: run["steps"] for name, run in summary["runs"].items()} == {
        "untrained": 0, "supcon": 2}
    # t-SNE: one panel per run; curves: the SupCon loss and the kNN monitor (one epoch each).
    for name, width in (("tsne.png", 100 * (5.2 * len(RUNS) + 1.2)), ("loss.png", 100 * 5 * 2)):
        with Image.open(probed_runs / name) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert abs(pixels.shape[1] - width) <= 2, name
        assert pixels.std() > 10, name  # drawn, not blank


def _fake_run(run_dir, shots):
    """A run directory with the files the report reads before any SavedModel."""
    os.makedirs(run_dir)
    probe = {"dataset": "digits", "split": "train", "test_split": "test", "image_size": 16,
             "num_train": 1442, "num_test": 355, "top1": 0.5}
    if shots:
        probe.update({"shots": shots, "draws": 3, f"{shots}_shot_top1": 0.4,
                      f"{shots}_shot_std": 0.1})
    for name, value in (("config.json", {"loss": "supcon"}),
                        ("results.json", {"steps": 2, "batch_size": 32, "linear_eval": probe})):
        with open(os.path.join(run_dir, name), "w") as f:
            json.dump(value, f)


def test_missing_unprobed_or_mismatched_runs_are_one_error_line(tmp_path):
    root = tmp_path / "runs"
    for name, shots in (("unprobed", 0), ("two_shot", 2), ("five_shot", 5)):
        _fake_run(str(root / name), shots)
    before = snapshot(root)
    cases = {"missing": ("absent", "absent/results.json is missing: run python -m "
                         "supcon_tf.pretrain"),
             "unprobed": ("two_shot,unprobed", "holds no linear evaluation with a few-shot "
                          "probe: run python -m supcon_tf.linear_eval"),
             "mismatched": ("two_shot,five_shot", "runs two_shot and five_shot were probed "
                            "differently (shots 2 vs 5)"),
             "repeated": ("two_shot,two_shot", "--runs must name distinct run directories")}
    outcomes = run_main_cases("supcon_tf.quickstart", {
        name: [f"--model_dir={root}", f"--runs={runs}"] for name, (runs, _) in cases.items()},
        tmp_path)
    for name, (_, message) in cases.items():
        code, stdout, stderr = outcomes[name]
        assert code == 2 and not stdout, name
        lines = user_stderr_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            name, lines)
    assert snapshot(root) == before
