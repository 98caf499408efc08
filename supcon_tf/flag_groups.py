"""The flag groups the binaries share, each defined in one place.

Every binary builds its own `absl.flags.FlagValues` (`new_flag_values`), never absl's global
`FLAGS`, so that any of them can be imported together in one process (a test, a notebook, the
quickstart report) without a `DuplicateFlagError`, and each keeps its own defaults. The groups:

* `define_run_directory`: `--model_dir`, `--overwrite`, `--seed` of a binary that writes a run.
* `define_pretrained`: `--model_dir`, `--saved_model`, `--checkpoint` of a binary that reads a
  pretraining run (the encoder comes from its SavedModel or one of its checkpoints).
* `define_data`: `--dataset`, `--split`, `--data_dir`, `--manual_dir`, `--image_size`.
* `define_eval_images`: `--center_crop_fraction` and the feature-extraction `--batch_size`.
* `define_output`: `--output_dir`, `--overwrite` of an evaluation that writes beside the run.
* `define_distribution`: `--strategy`, `--tpu`, `--cpu_devices` (read by `cli.make_strategy`).

`flags_parser(flag_values, doc)` is what `app.run` takes: one `error:` line for a bad flag,
`--help` printing the binary's docstring and flags.
"""

import functools

from absl import flags

from supcon_tf import cli

FROM_RUN = "(default: the pretraining run's)"


def new_flag_values():
    """An empty `FlagValues` for one binary."""
    return flags.FlagValues()


def define_run_directory(flag_values, what, seed=0, seed_help="Seed."):
    """`--model_dir` (required; `what` says what it holds), `--overwrite`, `--seed`."""
    flags.DEFINE_string("model_dir", None, what, flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Delete a different run found in --model_dir first.",
                      flag_values=flag_values)
    flags.DEFINE_integer("seed", seed, seed_help, flag_values=flag_values)


def define_pretrained(flag_values, saved_model=True, checkpoint_help=None):
    """`--model_dir` of the pretraining run read, `--checkpoint` and (optionally)
    `--saved_model`."""
    flags.DEFINE_string("model_dir", None,
                        "Pretraining run directory (saved_model/, checkpoints/).",
                        flag_values=flag_values)
    if saved_model:
        flags.DEFINE_string("saved_model", None,
                            "SavedModel to evaluate (default <model_dir>/saved_model).",
                            flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint", None, checkpoint_help or "Evaluate a checkpoint instead of the SavedModel: "
        "a prefix such as <model_dir>/checkpoints/ckpt-1000, or 'latest'.",
        flag_values=flag_values)


def define_data(flag_values, dataset=None, split=None, data_dir=None, manual_dir=None,
                image_size=None, dataset_help=None, split_help=None, image_size_help=None,
                manual_dir_help=None):
    """`--dataset`, `--split`, `--data_dir`, `--manual_dir`, `--image_size`.

    A default of None means "the pretraining run's" (evaluation binaries); the helps say so.
    """
    flags.DEFINE_string("dataset", dataset, dataset_help or (
        "Source: 'digits', 'folder:<path>' or a TFDS name" +
        (f" {FROM_RUN}." if dataset is None else ".")), flag_values=flag_values)
    flags.DEFINE_string("split", split, split_help or "Split read.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", data_dir, "TFDS data directory" + (
        f" {FROM_RUN}." if data_dir is None else "."), flag_values=flag_values)
    flags.DEFINE_string("manual_dir", manual_dir, manual_dir_help or (
        "Directory of manually downloaded dataset files" +
        (f" {FROM_RUN}." if manual_dir is None else ".")), flag_values=flag_values)
    flags.DEFINE_integer("image_size", image_size, image_size_help or (
        "Image side (default: the encoder's input size)." if image_size is None
        else "Side of the square training images."), flag_values=flag_values)


def define_eval_images(flag_values, batch_size=256, batch_help="Feature-extraction batch."):
    """`--center_crop_fraction` and `--batch_size` of evaluation on held-out images."""
    flags.DEFINE_float("center_crop_fraction", None,
                       "Eval centre crop fraction (default: the library's 0.875; images already "
                       "image_size square are used as they are).", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", batch_size, batch_help, flag_values=flag_values)


def define_output(flag_values, default):
    """`--output_dir` (default `default`, e.g. "<model_dir>/retrieval_<dataset>") and
    `--overwrite`."""
    flags.DEFINE_string("output_dir", None, f"Where results go (default {default}).",
                        flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace results already in --output_dir.",
                      flag_values=flag_values)


def define_distribution(flag_values, strategy="default", tpu=None, strategy_help=None):
    """`--strategy`, `--tpu`, `--cpu_devices` (what `cli.make_strategy` reads)."""
    flags.DEFINE_string("strategy", strategy, strategy_help or
                        "default | mirrored | multiworker | tpu.", flag_values=flag_values)
    flags.DEFINE_string("tpu", tpu, "TPU name or address for --strategy=tpu (local on a TPU VM).",
                        flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices, so "
                         "that --strategy=mirrored runs that many replicas on a machine without "
                         "GPUs.", flag_values=flag_values)


def flags_parser(flag_values, doc):
    """The `flags_parser` of `app.run` for a binary whose flags live in `flag_values`.

    Parses `argv` into `flag_values` (a bad flag: one `error:` line, exit 2) and absl's global
    flags (logging, debugging) at their defaults, which `app.run` reads. `--help` prints `doc`
    and the binary's flags.
    """

    def parse(argv):
        if any(arg in ("--help", "-h", "--helpfull", "-?") for arg in argv[1:]):
            print(doc)
            print(flag_values.get_help())
            raise SystemExit(0)
        remaining = cli.parse_flags(flag_values, argv)
        if not flags.FLAGS.is_parsed():
            flags.FLAGS(argv[:1])
        return remaining

    return parse


class Definer:
    """`define.string(name, default, help)`, `define.integer(...)`, ... into one `FlagValues`
    (absl's `flags.DEFINE_<kind>` with `flag_values` bound)."""

    def __init__(self, flag_values):
        self._flag_values = flag_values

    def __getattr__(self, kind):
        return functools.partial(getattr(flags, "DEFINE_" + kind), flag_values=self._flag_values)
