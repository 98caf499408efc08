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

from supcon_tf import cli  # noqa: E402
from supcon_tf import config as config_lib  # noqa: E402
from supcon_tf import flag_groups  # noqa: E402

FLAGS = flag_groups.new_flag_values()
# Every default lives in the configuration dataclass; the flags read it from there.
DEFAULTS = config_lib.PretrainConfig

# The groups the binaries share (flag_groups).
flag_groups.define_run_directory(
    FLAGS, "Run directory (checkpoints, logs, results, SavedModel).", seed=DEFAULTS.seed,
    seed_help="Seed of initialisation and of the data stream.")
flag_groups.define_data(FLAGS, DEFAULTS.dataset, DEFAULTS.split, DEFAULTS.data_dir,
                        DEFAULTS.manual_dir, DEFAULTS.image_size, split_help="Training split.")
flag_groups.define_distribution(FLAGS, DEFAULTS.strategy, DEFAULTS.tpu)
define = flag_groups.Definer(FLAGS)
define.integer("batch_size", DEFAULTS.batch_size,
               "Global batch size (images; each gives num_views views).")
define.float("epochs", DEFAULTS.epochs, "Length of pretraining in epochs.")
define.integer("train_steps", DEFAULTS.train_steps,
               "Length in optimizer steps; overrides --epochs.")
define.string("loss", DEFAULTS.loss, "supcon | simclr | cross_entropy | n_pairs | triplet | "
              "max_margin | joint.")
define.string("optimizer", DEFAULTS.optimizer,
              "lars | momentum | nesterov | rmsprop | adam | adamw.")
define.float("learning_rate", DEFAULTS.learning_rate, "Base learning rate per 256 examples.")
# Pretraining.
define.integer("num_train_examples", DEFAULTS.num_train_examples,
               "Training examples (when the source cannot say).")
define.integer("depth", DEFAULTS.depth, "ResNet depth: 18, 34, 50, 101, 152, 200.")
define.float("width_multiplier", DEFAULTS.width_multiplier, "ResNet width multiplier.")
define.string("stem", DEFAULTS.stem,
              "ResNet stem: imagenet (7x7/2 + max-pool) | cifar (3x3/1).")
define.bool("sync_batch_norm", DEFAULTS.sync_batch_norm,
            "Synchronized batch norm across replicas.")
define.list("projection_units", [str(v) for v in DEFAULTS.projection_units],
            "Projection head layer sizes.")
define.bool("projection_batch_norm", DEFAULTS.projection_batch_norm,
            "Batch norm in the projection head (SimCLR).")
define.bool("normalize_encoder_output", DEFAULTS.normalize_encoder_output,
            "L2-normalise the encoder output before the "
            "projection head (official SupCon ImageNet setting).")
define.float("temperature", DEFAULTS.temperature, "Temperature of the contrastive loss.")
define.float("label_smoothing", DEFAULTS.label_smoothing,
             "Label smoothing of the cross-entropy losses.")
define.integer("num_views", DEFAULTS.num_views, "Augmented views per image.")
define.string("augmentation", DEFAULTS.augmentation,
              "simaugment | autoaugment | randaugment | "
              "stacked_randaugment | eval.")
define.float("jitter_strength", DEFAULTS.jitter_strength,
             "SimAugment colour-jitter strength (CIFAR: 0.5).")
define.float("crop_min_area", DEFAULTS.crop_min_area,
             "Smallest random-crop area fraction (CIFAR: 0.2).")
define.float("blur_probability", DEFAULTS.blur_probability,
             "Gaussian-blur probability (ImageNet: 0.5).")
define.bool("flip", DEFAULTS.flip, "Random horizontal flips.")
define.float("momentum", DEFAULTS.momentum, "Optimizer momentum.")
define.float("weight_decay", DEFAULTS.weight_decay,
             "Weight decay (coupled L2, except adamw).")
define.list("weight_decay_exclusions", [str(v) for v in DEFAULTS.weight_decay_exclusions],
            "Regexes searched in variable paths that get "
            "no weight decay (nor LARS adaptation); empty: every rank<=1 variable (biases "
            "and batch norm, SimCLR's rule). SupCon's rule: gamma$,beta$.")
define.float("warmup_epochs", DEFAULTS.warmup_epochs,
             "Linear learning-rate warmup in epochs.")
define.string("schedule", DEFAULTS.schedule, "constant | cosine | exponential | piecewise.")
define.integer("memory_size", DEFAULTS.memory_size, "Memory queue size K (0: no memory).")
define.float("memory_momentum", DEFAULTS.memory_momentum,
             "Momentum of the memory's key encoder.")
define.integer("gradient_chunks", DEFAULTS.gradient_chunks,
               "Encode each step's batch in this many chunks with gradient caching (Gao et al. "
               "2021): the loss sees the whole batch, activations of one chunk are kept at a "
               "time. With batch norm each chunk normalises itself.")
define.integer("samples_per_class", DEFAULTS.samples_per_class,
               "Class-balanced batches: every global batch holds batch_size / this classes "
               "with this many images each (classes drawn in proportion to their size).")
define.integer("num_classes", DEFAULTS.num_classes,
               "Classes of the probe/classifier (default: source's).")
define.bool("probe", DEFAULTS.probe, "Train the online linear probe (stop-gradient).")
define.integer("checkpoint_every", DEFAULTS.checkpoint_every,
               "Checkpoint every this many optimizer steps.")
define.float("checkpoint_every_secs", DEFAULTS.checkpoint_every_secs,
             "Also checkpoint when this many seconds "
             "passed since the last checkpoint.")
define.bool("skip_unreadable_images", DEFAULTS.skip_unreadable_images,
            "Image folders: decode every file once at "
            "start and leave unreadable ones out (counted in results.json) instead of "
            "stopping at the first one.")
define.string("mixed_precision", DEFAULTS.mixed_precision,
              "none | mixed_float16 | mixed_bfloat16.")
define.string("eval_split", DEFAULTS.eval_split,
              "Held-out split of the kNN monitor and t-SNE plot "
              "(default: the source's 'test', else 'validation').")
define.integer("monitor_examples", DEFAULTS.monitor_examples,
               "Held-out (and training) images of the per-epoch "
               "kNN monitor and the t-SNE plot; 0 turns both off.")
define.integer("verbose", DEFAULTS.verbose,
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
    app.run(main, flags_parser=flag_groups.flags_parser(FLAGS, __doc__))
