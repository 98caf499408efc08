"""Contrastive (or cross-entropy) pretraining binary.

    python -m supcon_tf.pretrain --flagfile=flags/supcon_cifar10_resnet50.flags \
        --model_dir=runs/supcon_cifar10

Flags become a `config.PretrainConfig`; the work is done by `supcon_tf.trainer` (the library
reads no flags). Rerunning with the same flags on an existing `--model_dir` resumes from its
latest checkpoint and ends at the same step count; a `--model_dir` holding a run of another
configuration is refused unless `--overwrite` (which deletes it first). Every bad flag prints one
line `error: ...` on stderr, exits with status 2 and leaves the disk as it was.

`--learning_rate` is the base rate per 256 examples (the paper's convention); the rate used is
`learning_rate * batch_size / 256`.
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from supcon_tf import cli  # noqa: E402
from supcon_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
# Every default lives in the configuration dataclass; the flags read it from there.
DEFAULTS = config_lib.PretrainConfig

# The shared flags of the binaries (design.md).
flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, logs, results, SavedModel).")
flags.DEFINE_string("dataset", DEFAULTS.dataset,
                    "Source: 'digits', 'folder:<path>' or a TFDS name.")
flags.DEFINE_string("split", DEFAULTS.split, "Training split.")
flags.DEFINE_string("data_dir", DEFAULTS.data_dir, "TFDS data directory.")
flags.DEFINE_string("manual_dir", DEFAULTS.manual_dir,
                    "Directory of manually downloaded dataset files.")
flags.DEFINE_integer("image_size", DEFAULTS.image_size, "Side of the square training images.")
flags.DEFINE_integer("batch_size", DEFAULTS.batch_size,
                     "Global batch size (images; each gives num_views views).")
flags.DEFINE_float("epochs", DEFAULTS.epochs, "Length of pretraining in epochs.")
flags.DEFINE_integer("train_steps", DEFAULTS.train_steps,
                     "Length in optimizer steps; overrides --epochs.")
flags.DEFINE_string("loss", DEFAULTS.loss, "supcon | simclr | cross_entropy | n_pairs | triplet | "
                    "max_margin | joint.")
flags.DEFINE_string("optimizer", DEFAULTS.optimizer,
                    "lars | momentum | nesterov | rmsprop | adam | adamw.")
flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Base learning rate per 256 examples.")
flags.DEFINE_string("strategy", DEFAULTS.strategy, "default | mirrored | multiworker | tpu.")
flags.DEFINE_integer("seed", DEFAULTS.seed, "Seed of initialisation and of the data stream.")
flags.DEFINE_bool("overwrite", False, "Delete a different run found in --model_dir first.")
# Pretraining.
flags.DEFINE_integer("num_train_examples", DEFAULTS.num_train_examples,
                     "Training examples (when the source cannot say).")
flags.DEFINE_integer("depth", DEFAULTS.depth, "ResNet depth: 18, 34, 50, 101, 152, 200.")
flags.DEFINE_float("width_multiplier", DEFAULTS.width_multiplier, "ResNet width multiplier.")
flags.DEFINE_string("stem", DEFAULTS.stem,
                    "ResNet stem: imagenet (7x7/2 + max-pool) | cifar (3x3/1).")
flags.DEFINE_bool("sync_batch_norm", DEFAULTS.sync_batch_norm,
                  "Synchronized batch norm across replicas.")
flags.DEFINE_list("projection_units", [str(v) for v in DEFAULTS.projection_units],
                  "Projection head layer sizes.")
flags.DEFINE_bool("projection_batch_norm", DEFAULTS.projection_batch_norm,
                  "Batch norm in the projection head (SimCLR).")
flags.DEFINE_bool("normalize_encoder_output", DEFAULTS.normalize_encoder_output,
                  "L2-normalise the encoder output before the "
                  "projection head (official SupCon ImageNet setting).")
flags.DEFINE_float("temperature", DEFAULTS.temperature, "Temperature of the contrastive loss.")
flags.DEFINE_float("label_smoothing", DEFAULTS.label_smoothing,
                   "Label smoothing of the cross-entropy losses.")
flags.DEFINE_integer("num_views", DEFAULTS.num_views, "Augmented views per image.")
flags.DEFINE_string("augmentation", DEFAULTS.augmentation,
                    "simaugment | autoaugment | randaugment | "
                    "stacked_randaugment | eval.")
flags.DEFINE_float("jitter_strength", DEFAULTS.jitter_strength,
                   "SimAugment colour-jitter strength (CIFAR: 0.5).")
flags.DEFINE_float("crop_min_area", DEFAULTS.crop_min_area,
                   "Smallest random-crop area fraction (CIFAR: 0.2).")
flags.DEFINE_float("blur_probability", DEFAULTS.blur_probability,
                   "Gaussian-blur probability (ImageNet: 0.5).")
flags.DEFINE_bool("flip", DEFAULTS.flip, "Random horizontal flips.")
flags.DEFINE_float("momentum", DEFAULTS.momentum, "Optimizer momentum.")
flags.DEFINE_float("weight_decay", DEFAULTS.weight_decay,
                   "Weight decay (coupled L2, except adamw).")
flags.DEFINE_list("weight_decay_exclusions", [str(v) for v in DEFAULTS.weight_decay_exclusions],
                  "Regexes searched in variable paths that get "
                  "no weight decay (nor LARS adaptation); empty: every rank<=1 variable (biases "
                  "and batch norm, SimCLR's rule). SupCon's rule: gamma$,beta$.")
flags.DEFINE_float("warmup_epochs", DEFAULTS.warmup_epochs,
                   "Linear learning-rate warmup in epochs.")
flags.DEFINE_string("schedule", DEFAULTS.schedule, "constant | cosine | exponential | piecewise.")
flags.DEFINE_integer("memory_size", DEFAULTS.memory_size, "Memory queue size K (0: no memory).")
flags.DEFINE_float("memory_momentum", DEFAULTS.memory_momentum,
                   "Momentum of the memory's key encoder.")
flags.DEFINE_integer("num_classes", DEFAULTS.num_classes,
                     "Classes of the probe/classifier (default: source's).")
flags.DEFINE_bool("probe", DEFAULTS.probe, "Train the online linear probe (stop-gradient).")
flags.DEFINE_integer("checkpoint_every", DEFAULTS.checkpoint_every,
                     "Checkpoint every this many optimizer steps.")
flags.DEFINE_float("checkpoint_every_secs", DEFAULTS.checkpoint_every_secs,
                   "Also checkpoint when this many seconds "
                   "passed since the last checkpoint.")
flags.DEFINE_bool("skip_unreadable_images", DEFAULTS.skip_unreadable_images,
                  "Image folders: decode every file once at "
                  "start and leave unreadable ones out (counted in results.json) instead of "
                  "stopping at the first one.")
flags.DEFINE_string("mixed_precision", DEFAULTS.mixed_precision,
                    "none | mixed_float16 | mixed_bfloat16.")
flags.DEFINE_string("tpu", DEFAULTS.tpu,
                    "TPU name or address for --strategy=tpu (local on a TPU VM).")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices, so that "
                     "--strategy=mirrored runs that many replicas on a machine without GPUs.")
flags.DEFINE_string("eval_split", DEFAULTS.eval_split,
                    "Held-out split of the kNN monitor and t-SNE plot "
                    "(default: the source's 'test', else 'validation').")
flags.DEFINE_integer("monitor_examples", DEFAULTS.monitor_examples,
                     "Held-out (and training) images of the per-epoch "
                     "kNN monitor and the t-SNE plot; 0 turns both off.")
flags.DEFINE_integer("verbose", DEFAULTS.verbose,
                     "Keras fit verbosity: 0 silent, 1 progress bar, 2 per epoch.")


def config_from_flags(flag_values):
    """A `config.PretrainConfig` from parsed flag values (a `FlagValues`)."""
    names = [field.name for field in dataclasses.fields(config_lib.PretrainConfig)]
    values = {name: flag_values[name].value for name in names}
    try:
        values["projection_units"] = tuple(int(u) for u in values["projection_units"])
    except ValueError:
        raise ValueError(f"--projection_units must be a comma-separated list of ints, got "
                         f"{','.join(values['projection_units'])!r}.") from None
    values["weight_decay_exclusions"] = tuple(values["weight_decay_exclusions"])
    return config_lib.PretrainConfig(**values)


def main(argv):
    cli.start(argv, FLAGS.model_dir, "the run directory")
    strategy = cli.make_strategy(FLAGS)  # First: before any other TensorFlow op.
    from supcon_tf import distribute
    from supcon_tf import filesystem
    from supcon_tf import run_lock
    from supcon_tf import trainer

    chief = distribute.is_chief(strategy)
    try:
        config = config_from_flags(FLAGS)
        results = trainer.run_pretraining(
            config, FLAGS.model_dir, overwrite=FLAGS.overwrite, strategy=strategy,
            log=lambda line: print(line, flush=True) if chief else None)
    except (ValueError, run_lock.RunLockError) as e:
        # Bad flags, missing data, another run or another writer in --model_dir (all found
        # before anything is written); an unreadable image; no readable checkpoint.
        cli.fail(e)
    except trainer.TrainingStopped as e:  # Non-finite values, or preempted by a signal.
        cli.fail(e, status=e.status)
    except filesystem.WriteError as e:
        cli.fail(e, status=1)
    if not chief:
        return
    final = ", ".join(f"{k} {v:.4f}" for k, v in sorted(results["final"].items()))
    print(f"done: {results['steps']} steps; final {final}", flush=True)
    print(f"wrote {os.path.join(FLAGS.model_dir, 'results.json')} and "
          f"{os.path.join(FLAGS.model_dir, 'saved_model')}", flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: cli.parse_flags(FLAGS, argv))
