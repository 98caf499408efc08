"""Contrastive (or cross-entropy) pretraining binary.

    python -m supcon_tf.pretrain --flagfile=flags/supcon_cifar10_resnet50.flags \
        --model_dir=runs/supcon_cifar10

Flags become a `training.PretrainConfig`; the work is done by `supcon_tf.training` (the library
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

FLAGS = flags.FLAGS

# The shared flags of the binaries (design.md).
flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, logs, results, SavedModel).")
flags.DEFINE_string("dataset", "digits", "Source: 'digits', 'folder:<path>' or a TFDS name.")
flags.DEFINE_string("split", "train", "Training split.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("manual_dir", None, "Directory of manually downloaded dataset files.")
flags.DEFINE_integer("image_size", 32, "Side of the square training images.")
flags.DEFINE_integer("batch_size", 256, "Global batch size (images; each gives num_views views).")
flags.DEFINE_float("epochs", None, "Length of pretraining in epochs.")
flags.DEFINE_integer("train_steps", None, "Length in optimizer steps; overrides --epochs.")
flags.DEFINE_string("loss", "supcon", "supcon | simclr | cross_entropy | n_pairs | triplet | "
                    "max_margin | joint.")
flags.DEFINE_string("optimizer", "lars", "lars | momentum | nesterov | rmsprop | adam | adamw.")
flags.DEFINE_float("learning_rate", 0.5, "Base learning rate per 256 examples.")
flags.DEFINE_string("strategy", "default", "default | mirrored | multiworker | tpu.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation and of the data stream.")
flags.DEFINE_bool("overwrite", False, "Delete a different run found in --model_dir first.")
# Pretraining.
flags.DEFINE_integer("num_train_examples", None, "Training examples (when the source cannot say).")
flags.DEFINE_integer("depth", 50, "ResNet depth: 18, 34, 50, 101, 152, 200.")
flags.DEFINE_float("width_multiplier", 1.0, "ResNet width multiplier.")
flags.DEFINE_string("stem", "cifar", "ResNet stem: imagenet (7x7/2 + max-pool) | cifar (3x3/1).")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronized batch norm across replicas.")
flags.DEFINE_list("projection_units", ["2048", "128"], "Projection head layer sizes.")
flags.DEFINE_bool("projection_batch_norm", False, "Batch norm in the projection head (SimCLR).")
flags.DEFINE_bool("normalize_encoder_output", False, "L2-normalise the encoder output before the "
                  "projection head (official SupCon ImageNet setting).")
flags.DEFINE_float("temperature", 0.1, "Temperature of the contrastive loss.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy losses.")
flags.DEFINE_integer("num_views", 2, "Augmented views per image.")
flags.DEFINE_string("augmentation", "simaugment", "simaugment | autoaugment | randaugment | "
                    "stacked_randaugment | eval.")
flags.DEFINE_float("jitter_strength", 1.0, "SimAugment colour-jitter strength (CIFAR: 0.5).")
flags.DEFINE_float("crop_min_area", 0.08, "Smallest random-crop area fraction (CIFAR: 0.2).")
flags.DEFINE_float("blur_probability", 0.0, "Gaussian-blur probability (ImageNet: 0.5).")
flags.DEFINE_bool("flip", True, "Random horizontal flips.")
flags.DEFINE_float("momentum", 0.9, "Optimizer momentum.")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (coupled L2, except adamw).")
flags.DEFINE_list("weight_decay_exclusions", [], "Regexes searched in variable paths that get "
                  "no weight decay (nor LARS adaptation); empty: every rank<=1 variable (biases "
                  "and batch norm, SimCLR's rule). SupCon's rule: gamma$,beta$.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear learning-rate warmup in epochs.")
flags.DEFINE_string("schedule", "cosine", "constant | cosine | exponential | piecewise.")
flags.DEFINE_integer("memory_size", 0, "Memory queue size K (0: no memory).")
flags.DEFINE_float("memory_momentum", 0.999, "Momentum of the memory's key encoder.")
flags.DEFINE_integer("num_classes", None, "Classes of the probe/classifier (default: source's).")
flags.DEFINE_bool("probe", True, "Train the online linear probe (stop-gradient).")
flags.DEFINE_integer("checkpoint_every", 1000, "Checkpoint every this many optimizer steps.")
flags.DEFINE_float("checkpoint_every_secs", 600.0, "Also checkpoint when this many seconds "
                   "passed since the last checkpoint.")
flags.DEFINE_bool("skip_unreadable_images", False, "Image folders: decode every file once at "
                  "start and leave unreadable ones out (counted in results.json) instead of "
                  "stopping at the first one.")
flags.DEFINE_string("mixed_precision", "none", "none | mixed_float16 | mixed_bfloat16.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu (local on a TPU VM).")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices, so that "
                     "--strategy=mirrored runs that many replicas on a machine without GPUs.")
flags.DEFINE_string("eval_split", None, "Held-out split of the kNN monitor and t-SNE plot "
                    "(default: the source's 'test', else 'validation').")
flags.DEFINE_integer("monitor_examples", 1000, "Held-out (and training) images of the per-epoch "
                     "kNN monitor and the t-SNE plot; 0 turns both off.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 per epoch.")


def config_from_flags(flag_values):
    """A `training.PretrainConfig` from parsed flag values (a `FlagValues`)."""
    from supcon_tf import training

    names = [field.name for field in dataclasses.fields(training.PretrainConfig)]
    values = {name: flag_values[name].value for name in names}
    try:
        values["projection_units"] = tuple(int(u) for u in values["projection_units"])
    except ValueError:
        raise ValueError(f"--projection_units must be a comma-separated list of ints, got "
                         f"{','.join(values['projection_units'])!r}.") from None
    values["weight_decay_exclusions"] = tuple(values["weight_decay_exclusions"])
    return training.PretrainConfig(**values)


def main(argv):
    cli.start(argv, FLAGS.model_dir, "the run directory")
    strategy = cli.make_strategy(FLAGS)  # First: before any other TensorFlow op.
    from supcon_tf import distribute
    from supcon_tf import filesystem
    from supcon_tf import run_lock
    from supcon_tf import training

    chief = distribute.is_chief(strategy)
    try:
        config = config_from_flags(FLAGS)
        results = training.run_pretraining(
            config, FLAGS.model_dir, overwrite=FLAGS.overwrite, strategy=strategy,
            log=lambda line: print(line, flush=True) if chief else None)
    except (ValueError, run_lock.RunLockError) as e:
        # Bad flags, missing data, another run or another writer in --model_dir (all found
        # before anything is written); an unreadable image; no readable checkpoint.
        cli.fail(e)
    except training.TrainingStopped as e:  # Non-finite values, or preempted by a signal.
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
