"""The quickstart's report: the table and plots of `make quickstart`'s runs on the bundled digits.

`make quickstart` trains and probes with the binaries every other run uses (see the Makefile):

    python -m supcon_tf.pretrain --flagfile=flags/quickstart_supcon.flags --overwrite
    python -m supcon_tf.pretrain --flagfile=flags/quickstart_ce.flags --overwrite
    python -m supcon_tf.pretrain --flagfile=flags/quickstart_supcon.flags --train_steps=0 \
        --model_dir=runs/quickstart/untrained --overwrite
    python -m supcon_tf.linear_eval --model_dir=runs/quickstart/<run> \
        --flagfile=flags/linear_eval/lbfgs.flags --shots=5 --draws=20 --center_crop_fraction=1.0
    python -m supcon_tf.quickstart --model_dir=runs/quickstart

that is, the same ResNet-18 (x0.25) trained with SupCon and with cross-entropy, and left
untrained (`--train_steps=0` exports the seeded initial weights), each probed on the held-out
digits by L-BFGS logistic regression with every training label and 5-shot. Digits are easy, so
the 5-shot column is the informative one.

This last step only reads the run directories `<model_dir>/<run>` (`--runs`): `results.json`
(the probes' top-1, merged in by `linear_eval`), `history.json` (per-epoch training loss and
held-out kNN top-1) and the SavedModel (the held-out embeddings, through the transform the probes
used). It prints the table and writes `<model_dir>/results.json` (the summary), `loss.png`
(training curves) and `tsne.png` (a t-SNE map of each encoder's held-out embeddings, coloured by
class). A run that is missing or was not probed is one `error:` line, and nothing is written.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from supcon_tf import cli  # noqa: E402
from supcon_tf import flag_groups  # noqa: E402

FLAGS = flag_groups.new_flag_values()
define = flag_groups.Definer(FLAGS)
define.string("model_dir", "runs/quickstart",
              "Directory of the runs; results.json, loss.png and tsne.png go there.")
define.list("runs", ["untrained", "cross_entropy", "supcon"],
            "Run directories under --model_dir, one table row each, in this order.")
define.integer("seed", 0, "Seed of the t-SNE maps.")

# The per-epoch training losses drawn, those of the objective that trains the encoder.
TRAINING_LOSSES = ("contrastive_loss", "ce_loss")
# What the probes of every run must agree on for their rows to share one table.
SHARED_PROBE_FIELDS = ("dataset", "split", "test_split", "image_size", "num_train", "num_test",
                       "shots", "draws")


def read_run(run_dir):
    """The files of a probed run directory.

    Returns:
        {"results": results.json, "config": config.json, "history": history.json ({} when
        absent)}, with `results["linear_eval"]` holding a few-shot probe.

    Raises:
        ValueError: no pretraining run in `run_dir`, or it has no linear evaluation with a
            few-shot probe (one line naming the command to run).
    """
    from supcon_tf import filesystem
    from supcon_tf import run_dir as run_dir_lib

    paths = {name: os.path.join(run_dir, file_name) for name, file_name in (
        ("results", run_dir_lib.RESULTS_FILE), ("config", run_dir_lib.CONFIG_FILE),
        ("history", run_dir_lib.HISTORY_FILE))}
    for name in ("results", "config"):
        if not filesystem.is_file(paths[name]):
            raise ValueError(f"{paths[name]} is missing: run python -m supcon_tf.pretrain "
                             f"--model_dir={run_dir} first (see make quickstart).")
    run = {name: filesystem.read_json(path) if filesystem.is_file(path) else {}
           for name, path in paths.items()}
    probe = run["results"].get("linear_eval", {})
    if not probe.get("shots") or f"{probe['shots']}_shot_top1" not in probe:
        raise ValueError(f"{paths['results']} holds no linear evaluation with a few-shot "
                         f"probe: run python -m supcon_tf.linear_eval --model_dir={run_dir} "
                         "--shots=5 first (see make quickstart).")
    return run


def shared_probe(runs):
    """The probe settings every run shares (`SHARED_PROBE_FIELDS` of their linear_eval).

    Raises:
        ValueError: two runs were probed differently (their rows would not compare).
    """
    probes = {name: {key: run["results"]["linear_eval"].get(key) for key in SHARED_PROBE_FIELDS}
              for name, run in runs.items()}
    first, settings = next(iter(probes.items()))
    for name, other in probes.items():
        if other != settings:
            differing = ", ".join(f"{key} {settings[key]!r} vs {other[key]!r}"
                                  for key in SHARED_PROBE_FIELDS if other[key] != settings[key])
            raise ValueError(f"runs {first} and {name} were probed differently ({differing}): "
                             "evaluate every run with the same linear_eval flags.")
    return settings


def probe_rows(runs, shots):
    """{run: {"top1", "<shots>_shot_top1", "<shots>_shot_std"}} from the runs' results."""
    keys = ("top1", f"{shots}_shot_top1", f"{shots}_shot_std")
    return {name: {key: float(run["results"]["linear_eval"][key]) for key in keys}
            for name, run in runs.items()}


def table(runs):
    """The quickstart's table (Markdown), a heading line first, as a list of lines."""
    probe = shared_probe(runs)
    shots = probe["shots"]
    trained = sorted({(run["results"]["steps"], run["results"]["batch_size"])
                      for run in runs.values() if run["results"].get("steps")})
    training = " or ".join(f"{steps} steps of batch {batch}" for steps, batch in trained)
    lines = [f"Held-out {probe['dataset']} ({probe['num_test']} images), linear probes on "
             f"frozen encoder features ({training or 'no training'} per trained model):",
             f"| encoder | top-1, all {probe['num_train']} labels | top-1, {shots}-shot "
             f"(mean of {probe['draws']}) |",
             "|---|---:|---:|"]
    for name, row in probe_rows(runs, shots).items():
        lines.append(f"| {name} | {row['top1']:.4f} | {row[f'{shots}_shot_top1']:.4f} "
                     f"± {row[f'{shots}_shot_std']:.4f} |")
    return lines


def loss_panels(runs):
    """`plots.save_curves` panels: each trained run's training loss per epoch, and the held-out
    kNN top-1 of every run that has one (empty when no run has a history)."""
    panels = {}
    for name, run in runs.items():
        history = run["history"]
        series = {key: (history["epoch"], history[key]) for key in TRAINING_LOSSES
                  if key in history}
        if series:
            panels[f"{name} training loss"] = ("mean loss per epoch", series)
    knn = {name: (run["history"]["epoch"], run["history"]["knn_accuracy"])
           for name, run in runs.items() if "knn_accuracy" in run["history"]}
    if knn:
        panels["held-out kNN top-1 (monitor)"] = ("kNN top-1 (k = 20)", knn)
    return panels


def held_out_embeddings(run_dir, run):
    """The run's SavedModel `embed` features of the split its probes were scored on, through
    the same evaluation transform: (features float32 [N, F], labels int64 [N])."""
    from supcon_tf import export
    from supcon_tf.data import sources
    from supcon_tf.evaluation import features

    probe, config = run["results"]["linear_eval"], run["config"]
    embed, _ = export.load_embed(os.path.join(run_dir, "saved_model"))
    data = sources.load_source(probe["dataset"], probe["test_split"],
                               data_dir=config.get("data_dir"),
                               manual_dir=config.get("manual_dir"))
    return features.extract_features(embed, data, probe["image_size"], 256,
                                     crop_fraction=probe.get("center_crop_fraction"))


def summary(runs, seconds):
    """The `<model_dir>/results.json` of the report: the probes and what they were run on."""
    probe = shared_probe(runs)
    rows = probe_rows(runs, probe["shots"])
    return {
        "dataset": probe["dataset"], "train_images": probe["num_train"],
        "test_images": probe["num_test"], "image_size": probe["image_size"],
        "shots": probe["shots"], "draws": probe["draws"], "probes": rows,
        "top1": rows.get("supcon", {}).get("top1"),
        "runs": {name: {key: run["config"].get(key) for key in (
            "loss", "depth", "width_multiplier", "stem", "batch_size", "epochs", "train_steps",
            "learning_rate", "temperature", "seed")} | {"steps": run["results"].get("steps")}
            for name, run in runs.items()},
        "training_loss": {name: {key: run["history"][key] for key in TRAINING_LOSSES
                                 if key in run["history"]}
                          for name, run in runs.items() if run["history"]},
        "seconds": {"report": seconds, "runs": {
            name: {"pretrain": run["results"].get("pretrain_seconds"),
                   "linear_eval": run["results"]["linear_eval"].get("seconds")}
            for name, run in runs.items()}},
    }


def main(argv):
    cli.start(argv, FLAGS.model_dir, "the directory of the quickstart's runs")
    from supcon_tf import filesystem
    from supcon_tf import plots

    start = time.time()
    if not FLAGS.runs or len(set(FLAGS.runs)) != len(FLAGS.runs):
        cli.fail(f"--runs must name distinct run directories, got {FLAGS.runs}.")
    run_dirs = {name: os.path.join(FLAGS.model_dir, name) for name in FLAGS.runs}
    try:
        runs = {name: read_run(run_dir) for name, run_dir in run_dirs.items()}
        lines = table(runs)
        embeddings = {name: held_out_embeddings(run_dirs[name], run)
                      for name, run in runs.items()}
    except ValueError as e:  # A missing or unprobed run, different probes, no SavedModel.
        cli.fail(e)

    probe = shared_probe(runs)
    held_out = f"{probe['num_test']} held-out images ({probe['dataset']} {probe['test_split']})"
    tsne_path = os.path.join(FLAGS.model_dir, "tsne.png")
    loss_path = os.path.join(FLAGS.model_dir, "loss.png")
    try:
        plots.save_tsne(tsne_path, {f"{name}: {held_out}": embeddings[name] for name in runs},
                        seed=FLAGS.seed)
        panels = loss_panels(runs)
        if panels:
            plots.save_curves(loss_path, panels)
        results_path = os.path.join(FLAGS.model_dir, "results.json")
        filesystem.write_json(results_path, summary(runs, round(time.time() - start, 1)))
    except filesystem.WriteError as e:
        cli.fail(e, status=1)
    print("\n" + "\n".join(lines))
    print(f"\nwrote {results_path}, {tsne_path} (t-SNE of the held-out embeddings)"
          f"{f' and {loss_path}' if panels else ''}")


if __name__ == "__main__":
    app.run(main, flags_parser=flag_groups.flags_parser(FLAGS, __doc__))
