"""The 12-dataset fine-grained transfer benchmark of a pretraining run (reference/transfer.md).

    python -m supcon_tf.transfer --model_dir=runs/supcon_imagenet --mode=linear
    python -m supcon_tf.transfer --model_dir=runs/supcon_imagenet --mode=finetune \\
        --benchmarks=pets,flowers --finetune_steps=2000 --learning_rates=0.01,0.1 \\
        --weight_decays=0,1e-4

`--mode=linear`: the frozen encoder (`<model_dir>/saved_model`'s `embed` signature, or a
checkpoint with `--checkpoint`), images resized on the short side to `--image_size` (bicubic)
and centre-cropped, features of every split, the L-BFGS lambda sweep chosen on validation,
refit on train+validation, test scored with the dataset's metric.
`--mode=finetune`: the encoder restored from the checkpoint (`trainer.load_pretrained`), a new
linear classifier, the (learning rate x weight decay) grid chosen on validation, the best pair
retrained on train+validation and scored on test. The reference runs 56 grid points of 20,000
steps of batch 256 per dataset; `--finetune_steps`, `--finetune_batch_size`, `--learning_rates`
and `--weight_decays` shrink it.

`--image_size` defaults to the encoder's input size (224 for the protocol's ImageNet encoders).
Data: TFDS datasets prepared under `--data_dir`; Birdsnap, Aircraft and Cars from image folders
`<manual_dir>/<key>/<split>/<class_name>/*.jpg` (see `supcon_tf.data.benchmarks`).

A benchmark whose files are not here is skipped with one `warning:` line on stderr saying how to
get it, and the mean covers those present ("Mean (k of 12 datasets)"); `--noskip_unavailable`
makes a missing benchmark an error, and so is having none. Writes, in `--output_dir` (default
`<model_dir>/transfer_<mode>`): `<key>.json` per benchmark (what was chosen, validation and test
scores, sizes), `results.json` (scores, mean, skipped benchmarks, reports) and `results.md`
(the table, also printed). Every bad flag prints one line `error: ...` on stderr and exits with
status 2 before anything is written.
"""

import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from supcon_tf import cli  # noqa: E402
from supcon_tf import filesystem  # noqa: E402
from supcon_tf import flag_groups  # noqa: E402
from supcon_tf.evaluation import finetune  # noqa: E402
from supcon_tf.evaluation import transfer as registry  # noqa: E402

MODES = ("linear", "finetune")
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"

FLAGS = flag_groups.new_flag_values()
flag_groups.define_pretrained(FLAGS, saved_model=False, checkpoint_help=(
    "Checkpoint prefix (<model_dir>/checkpoints/ckpt-N) or 'latest'. linear: use it instead of "
    "the SavedModel; finetune: default latest."))
flag_groups.define_output(FLAGS, "<model_dir>/transfer_<mode>")
define = flag_groups.Definer(FLAGS)
define.string("data_dir", None, "TFDS data directory with the prepared datasets.")
define.string("manual_dir", None, "Root of the manual downloads: "
              "<manual_dir>/{birdsnap,aircraft,cars}/<split>/<class_name>/*.jpg.")
define.integer("image_size", None, "Image side (default: the encoder's input size).")
define.integer("batch_size", 256, "Batch of feature extraction and evaluation.")
define.enum("mode", "linear", MODES, "linear: L-BFGS probe on frozen features; finetune: "
            "fine-tune the whole network.")
define.list("benchmarks", list(registry.BENCHMARKS),
            f"Benchmark keys, from: {', '.join(registry.BENCHMARKS)}.")
define.integer("finetune_steps", finetune.STEPS, "Steps of every fine-tuning run.")
define.integer("finetune_batch_size", finetune.BATCH_SIZE,
               "Batch of fine-tuning.")
define.list("learning_rates", None, "Fine-tuning learning rates (default: the reference's "
            "7 log-spaced in [1e-4, 0.1]).")
define.list("weight_decays", None, "Fine-tuning weight decays, divided by the learning "
            "rate (default: 0 and 7 log-spaced in [1e-6, 1e-3]).")
define.boolean("skip_unavailable", True, "Skip benchmarks whose files are not here "
               "(with a warning) instead of failing.")
define.integer("seed", 0, "Seed of the validation hold-out, classifier init and "
               "augmentation.")


# ----------------------------------------------------------------------------------------------
# checks (nothing written)


def _benchmark_keys(values):
    keys = [value.strip() for value in values if value.strip()]
    if not keys:
        raise ValueError(f"--benchmarks is empty; pass keys from {', '.join(registry.BENCHMARKS)}.")
    for key in keys:
        if key not in registry.BENCHMARKS:
            raise ValueError(f"--benchmarks: unknown benchmark {key!r}; use keys from "
                             f"{', '.join(registry.BENCHMARKS)}.")
    if len(set(keys)) != len(keys):
        raise ValueError(f"--benchmarks lists a benchmark twice: {','.join(keys)}.")
    return keys


def _float_list(name, values, minimum, inclusive):
    if values is None:
        return None
    parsed = []
    for value in values:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--{name} must be a comma-separated list of numbers; received "
                             f"{value!r}.") from None
        if not math.isfinite(number) or (number < minimum if inclusive else number <= minimum):
            raise ValueError(f"--{name} values must be {'>=' if inclusive else '>'} {minimum:g}; "
                             f"received {value!r}.")
        parsed.append(number)
    if not parsed:
        raise ValueError(f"--{name} is empty; omit it for the reference grid.")
    return parsed


def _check_ranges():
    for name in ("batch_size", "finetune_steps", "finetune_batch_size"):
        if getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
    if FLAGS.image_size is not None and FLAGS.image_size < 1:
        raise ValueError(f"--image_size must be >= 1, got {FLAGS.image_size}.")


def _output_dir(keys):
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, f"transfer_{FLAGS.mode}")
    if filesystem.is_file(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file, not a directory.")
    if filesystem.is_dir(output_dir) and not FLAGS.overwrite:
        held = [name for name in [RESULTS_FILE, TABLE_FILE] + [f"{key}.json" for key in keys]
                if filesystem.is_file(os.path.join(output_dir, name))]
        if held:
            raise ValueError(f"--output_dir {output_dir} already holds results ({held[0]}): pass "
                             "--overwrite to replace them or choose another --output_dir.")
    return output_dir


def _checkpoint_prefix():
    if FLAGS.checkpoint in (None, "latest"):
        return None
    return FLAGS.checkpoint


def _load_encoder():
    """(embed function or None, Keras encoder or None, input side or None, description)."""
    from supcon_tf import export
    from supcon_tf import trainer

    if FLAGS.mode == "linear" and FLAGS.checkpoint is None:
        path = os.path.join(FLAGS.model_dir, "saved_model")
        embed, shape = export.load_embed(path)
        return embed, None, shape[0], path
    run = trainer.load_pretrained(FLAGS.model_dir, checkpoint=_checkpoint_prefix())
    encoder = run.model.encoder
    description = FLAGS.checkpoint if _checkpoint_prefix() else "latest checkpoint"
    return None, encoder, encoder.input_shape[1], f"{FLAGS.model_dir} ({description})"


def _image_size(input_side):
    if input_side is None:
        return FLAGS.image_size or registry.PROBE_IMAGE_SIZE
    if FLAGS.image_size is not None and FLAGS.image_size != input_side:
        raise ValueError(f"--image_size {FLAGS.image_size} differs from the encoder's input size "
                         f"{input_side}; omit --image_size or pass {input_side}.")
    return int(input_side)


def _open_benchmarks(keys):
    """({key: BenchmarkData} of those available, {key: one-line reason} of the others)."""
    from supcon_tf.data import benchmarks
    from supcon_tf.data import sources

    opened, missing = {}, {}
    for key in keys:
        try:
            opened[key] = benchmarks.open_benchmark(registry.get_benchmark(key), FLAGS.data_dir,
                                                    FLAGS.manual_dir)
        except sources.DatasetUnavailableError as error:
            missing[key] = " ".join(str(error).split())
    if not opened:
        reasons = "; ".join(f"{key}: {reason}" for key, reason in missing.items())
        raise ValueError(f"none of the requested benchmarks is available here ({reasons})")
    if missing and not FLAGS.skip_unavailable:
        key, reason = next(iter(missing.items()))
        raise ValueError(f"benchmark {key} is not available (--noskip_unavailable): {reason}")
    return opened, missing


# ----------------------------------------------------------------------------------------------
# running


def _run_one(data, embed, encoder, image_size, grid):
    if FLAGS.mode == "linear":
        return registry.linear_benchmark(embed or encoder, data, image_size=image_size,
                                         batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    return registry.finetune_benchmark(
        encoder, data, grid=grid, steps=FLAGS.finetune_steps,
        batch_size=FLAGS.finetune_batch_size, seed=FLAGS.seed,
        eval_batch_size=FLAGS.batch_size, log=print)


def _describe(report):
    if report["mode"] == "linear":
        chosen = f"lambda {report['best_lambda']:.3g}"
    else:
        chosen = f"lr {report['learning_rate']:.3g}, wd {report['weight_decay']:.3g}"
    return (f"{report['name']}: {chosen}; validation {report['val_score']:.4f}, test "
            f"{report['metric']} {report['test_score']:.4f} ({report['num_trainval']} "
            f"train+val / {report['num_test']} test)")


def main(argv):
    cli.start(argv, FLAGS.model_dir, "the pretraining run to evaluate")
    try:
        if not filesystem.is_dir(FLAGS.model_dir):
            raise ValueError(f"--model_dir {FLAGS.model_dir} does not exist.")
        keys = _benchmark_keys(FLAGS.benchmarks)
        _check_ranges()
        learning_rates = _float_list("learning_rates", FLAGS.learning_rates, 0.0, False)
        weight_decays = _float_list("weight_decays", FLAGS.weight_decays, 0.0, True)
        grid = finetune.make_grid(learning_rates, weight_decays)
        output_dir = _output_dir(keys)
        embed, encoder, input_side, encoder_source = _load_encoder()
        image_size = _image_size(input_side)
        opened, missing = _open_benchmarks(keys)
    except ValueError as error:  # bad flags, missing run or data (DatasetUnavailableError)
        cli.fail(error)

    filesystem.makedirs(output_dir)
    for key, reason in missing.items():
        print(f"warning: skipping {key}: {reason}", file=sys.stderr)
    print(f"{FLAGS.mode} transfer of {encoder_source} at {image_size} px on "
          f"{len(opened)} benchmark(s): {', '.join(opened)}")
    reports = {}
    for key, data in opened.items():
        start = time.time()
        try:
            report = _run_one(data, embed, encoder, image_size, grid)
        except ValueError as error:  # malformed files found while reading
            cli.fail(f"{key}: {error}")
        report["seconds"] = round(time.time() - start, 1)
        filesystem.write_json(os.path.join(output_dir, f"{key}.json"), report)
        reports[key] = report
        print(_describe(report))

    summary = registry.summarise({key: report["test_score"] for key, report in reports.items()},
                                 title=f"{FLAGS.mode} (%)")
    results = {**summary.to_dict(), "mode": FLAGS.mode, "encoder": encoder_source,
               "image_size": int(image_size), "seed": FLAGS.seed, "skipped": missing,
               "benchmarks": reports}
    filesystem.write_json(os.path.join(output_dir, RESULTS_FILE), results)
    table_path = os.path.join(output_dir, TABLE_FILE)
    filesystem.write_text(table_path, summary.markdown)
    print(summary.markdown, end="")
    print(f"wrote {os.path.join(output_dir, RESULTS_FILE)} and {table_path}")


if __name__ == "__main__":
    app.run(main, flags_parser=flag_groups.flags_parser(FLAGS, __doc__))
