"""Linear evaluation of a pretrained encoder (frozen) from a pretraining `--model_dir`.

    python -m supcon_tf.linear_eval --model_dir=runs/supcon_cifar10
    python -m supcon_tf.linear_eval --model_dir=runs/supcon_cifar10 \
        --flagfile=flags/linear_eval/supcon_cifar10.flags --checkpoint=latest

The frozen encoder is, by default, the `embed` signature of `<model_dir>/saved_model` (written
by `supcon_tf.pretrain`; no supcon_tf model code is needed to read it). With `--checkpoint` (a
prefix such as `<model_dir>/checkpoints/ckpt-1000`, or `latest`) the model is rebuilt from the
run's `config.json` + `run_facts.json` and the checkpoint is restored
(`trainer.load_pretrained`); its Keras encoder is used instead (same features as the SavedModel
of the final checkpoint). Only the checkpoint path runs under `--strategy`.

Two protocols (`--protocol`):

* `lbfgs` (default): the L-BFGS logistic-regression sweep of Kornblith et al.
  (`linear_probe.lbfgs_logistic_sweep`) on the features of the train and test splits (eval crop:
  resize + centre crop): the L2 penalty is chosen on a stratified held-out `--val_fraction` of
  train, then the probe is refit on all of train and scored on test.
* `sgd`: the paper's stage 2 (`supcon_tf.evaluation.linear_classifier`): a linear layer on the
  frozen, stop-gradient encoder output (batch norm in inference mode, no weight decay on the
  encoder), trained with `--optimizer`, `--learning_rate` (per 256 examples, scaled by
  `--batch_size / 256`), `--weight_decay`, `--momentum`, `--epsilon`, `--epochs`, `--schedule`
  (+ `--warmup_epochs`, `--decay_rate`, `--decay_epochs`, `--boundary_epochs`), with training
  augmentation `--augmentation`: `eval` (default; the features are then computed once and the
  classifier is trained on them), `crop_flip` (the paper's random resized crop with
  area in [`--crop_min_area`, 1] + flip; images are streamed through the frozen encoder), or a
  pretraining policy. flags/linear_eval/*.flags hold the paper's configurations.

Optionally a few-shot probe (`--shots`) runs on the eval-crop features. Dataset, splits and
image size default to the pretraining run's `config.json`. The results are merged into
`<model_dir>/results.json` under "top1", "top5" and "linear_eval" (the protocol and every
hyperparameter), and printed as a table. Every bad flag prints one line `error: ...` on stderr
and exits with status 2, writing nothing.

The flags live in this module's own `FLAGS` (`flag_groups`: the groups shared with the other
binaries), so any of the binaries can be imported in one process.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from supcon_tf import cli  # noqa: E402
from supcon_tf import flag_groups  # noqa: E402
from supcon_tf import filesystem  # noqa: E402

PROTOCOLS = ("lbfgs", "sgd")
LATEST = "latest"

FLAGS = flag_groups.new_flag_values()
# Where the encoder comes from, and where it runs.
flag_groups.define_pretrained(FLAGS)
flag_groups.define_distribution(FLAGS, strategy_help="default | mirrored | multiworker | tpu "
                                "(the sgd protocol from --checkpoint only).")
# Data.
flag_groups.define_data(FLAGS, split="train", split_help="Split the classifier is trained on.")
flag_groups.define_eval_images(FLAGS, batch_help="Training batch of the sgd protocol (global) "
                               "and feature-extraction batch.")
define = flag_groups.Definer(FLAGS)
define.string("test_split", "test", "Split the classifier is scored on.")
define.integer("seed", 0, "Seed of the held-out split, few-shot draws, classifier "
               "initialisation, shuffling and augmentation.")
# Protocol.
define.string("protocol", "lbfgs", "lbfgs (Kornblith et al. sweep) | sgd (the paper's "
              "stage 2).")
define.float("val_fraction", 0.2, "lbfgs: share of each train class held out to choose "
             "lambda.")
define.integer("shots", 0, "Also run a few-shot probe with this many images per class "
               "(0: no).")
define.integer("draws", 20, "Few-shot draws averaged.")
# The sgd protocol's classifier (supcon_tf.evaluation.linear_classifier.ClassifierConfig).
define.string("optimizer", "momentum", "sgd: lars | momentum | nesterov | rmsprop | adam "
              "| adamw.")
define.float("learning_rate", 0.1, "sgd: base learning rate per 256 examples.")
define.float("momentum", 0.9, "sgd: optimizer momentum.")
define.float("epsilon", None, "sgd: optimizer epsilon (default: RMSProp's stage-2 1e-3).")
define.float("weight_decay", 0.0, "sgd: coupled L2 on the classifier kernel.")
define.integer("epochs", 90, "sgd: training epochs.")
define.string("schedule", "cosine", "sgd: constant | cosine | exponential | piecewise.")
define.float("warmup_epochs", 0.0, "sgd: linear learning-rate warmup in epochs.")
define.float("decay_rate", None, "sgd: exponential (default 0.97) or piecewise (default "
             "0.2) factor.")
define.float("decay_epochs", 0.5, "sgd: epochs between exponential decays.")
define.list("boundary_epochs", None, "sgd: piecewise decay epochs (default 60,75,90 "
            "percent of --epochs).")
define.string("augmentation", "eval", "sgd: eval (no augmentation) | crop_flip (random "
              "resized crop + flip) | simaugment | autoaugment | randaugment | "
              "stacked_randaugment.")
define.float("crop_min_area", 0.08, "sgd: smallest random-crop area fraction.")
define.bool("flip", True, "sgd: random horizontal flips.")
define.bool("normalize_features", False, "sgd: L2-normalise the encoder output before "
            "the classifier.")
define.integer("verbose", 0, "Keras fit verbosity of the sgd protocol.")


def config_from_flags(flag_values):
    """The validated `linear_classifier.ClassifierConfig` of parsed flag values.

    Raises:
        ValueError: a bad `--protocol` or classifier flag (one line naming it).
    """
    from supcon_tf.evaluation import linear_classifier

    if flag_values["protocol"].value not in PROTOCOLS:
        raise ValueError(f"--protocol={flag_values['protocol'].value!r} is unknown; use one of "
                         f"{', '.join(PROTOCOLS)}.")
    boundaries = flag_values["boundary_epochs"].value
    if boundaries is not None:
        try:
            boundaries = tuple(float(b) for b in boundaries)
        except ValueError:
            raise ValueError(f"--boundary_epochs must be a comma-separated list of epochs, got "
                             f"{','.join(boundaries)!r}.") from None
    names = ("optimizer", "learning_rate", "momentum", "epsilon", "weight_decay", "epochs",
             "batch_size", "schedule", "warmup_epochs", "decay_rate", "decay_epochs",
             "augmentation", "crop_min_area", "flip", "normalize_features", "seed")
    config = linear_classifier.ClassifierConfig(
        boundary_epochs=boundaries, **{name: flag_values[name].value for name in names})
    config.validate()
    return config


def load_checkpoint_encoder(model_dir, checkpoint=LATEST, strategy=None):
    """The Keras encoder of a pretraining checkpoint (`trainer.load_pretrained`).

    Args:
        model_dir: a `supcon_tf.pretrain` run directory (config.json, run_facts.json).
        checkpoint: a checkpoint prefix, or "latest" / None for the latest one.
        strategy: optional `tf.distribute.Strategy` to build the model under.

    Returns:
        (encoder, embed, input_shape, checkpoint_path): the Keras encoder (images float32
        [B, S, S, C] -> features [B, F]); `embed`, a traced function images -> float32 features
        [B, F] in inference mode; (S, S, C); the prefix restored.

    Raises:
        ValueError: no run there, no such checkpoint, or it does not match the architecture.
    """
    import tensorflow as tf

    from supcon_tf import trainer
    from supcon_tf.evaluation import features

    prefix = None if checkpoint in (None, LATEST) else checkpoint
    run = trainer.load_pretrained(model_dir, checkpoint=prefix, strategy=strategy)
    path = prefix or tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    encoder = run.model.encoder
    input_shape = tuple(encoder.input_shape[1:])
    return encoder, features.embed_function(encoder), input_shape, path


def extract(embed, dataset, split, image_size, *, data_dir, manual_dir, crop_fraction,
            batch_size):
    """Features float32 [N, F] and labels int64 [N] of a split (eval augmentation)."""
    from supcon_tf.evaluation import features
    from supcon_tf.evaluation import linear_classifier

    data = linear_classifier.eval_dataset(dataset, image_size, batch_size, split=split,
                                          data_dir=data_dir, manual_dir=manual_dir,
                                          center_crop_fraction=crop_fraction)
    try:
        return features.embed_batches(embed, data)
    except ValueError:
        raise ValueError(f"split {split!r} of {dataset!r} is empty.") from None


def count_examples(dataset, split, *, data_dir, manual_dir):
    """Number of examples of a split (its cardinality, or counted when unknown)."""
    from supcon_tf.data import sources

    count = sources.count_examples(sources.load_source(dataset, split, data_dir=data_dir,
                                                       manual_dir=manual_dir))
    if count == 0:
        raise ValueError(f"split {split!r} of {dataset!r} is empty.")
    return count


def _check_flags():
    """Range checks of the flags that `config_from_flags` does not cover."""
    cli.check_strategy_name(FLAGS)
    if not filesystem.is_dir(FLAGS.model_dir):
        raise ValueError(f"--model_dir {FLAGS.model_dir} does not exist.")
    for name in ("batch_size", "draws"):
        if getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
    if FLAGS.shots < 0:
        raise ValueError(f"--shots must be >= 0, got {FLAGS.shots}.")
    if not 0 < FLAGS.val_fraction < 1:
        raise ValueError(f"--val_fraction must be in (0, 1), got {FLAGS.val_fraction}.")
    if FLAGS.image_size is not None and FLAGS.image_size < 1:
        raise ValueError(f"--image_size must be >= 1, got {FLAGS.image_size}.")
    if FLAGS.checkpoint and FLAGS.saved_model:
        raise ValueError("pass --checkpoint or --saved_model, not both.")
    if FLAGS.strategy != "default" and not (FLAGS.checkpoint and FLAGS.protocol == "sgd"):
        raise ValueError(f"--strategy={FLAGS.strategy} distributes the sgd protocol from a "
                         "checkpoint: add --protocol=sgd --checkpoint=latest (or a prefix).")


def _describe(config):
    """A short table label of the sgd classifier."""
    return (f"SGD linear classifier ({config.optimizer}, {config.epochs} ep, "
            f"{config.augmentation})")


def main(argv):
    cli.start(argv, FLAGS.model_dir, "the pretraining run to evaluate")
    from supcon_tf import export
    from supcon_tf import run_dir
    from supcon_tf.data import sources
    from supcon_tf.evaluation import few_shot
    from supcon_tf.evaluation import linear_classifier
    from supcon_tf.evaluation import linear_probe
    from supcon_tf.evaluation import metrics

    start = time.time()
    protocol = FLAGS.protocol
    try:
        config = config_from_flags(FLAGS)
        _check_flags()
        strategy = cli.make_strategy(FLAGS)  # Before any TensorFlow op (checks above: none).
        config_path = os.path.join(FLAGS.model_dir, run_dir.CONFIG_FILE)
        run_config = {}
        if filesystem.is_file(config_path):
            run_config = filesystem.read_json(config_path)
        dataset = FLAGS.dataset or run_config.get("dataset")
        if not dataset:
            raise ValueError(f"no --dataset given and {config_path} does not name one.")
        data_dir = FLAGS.data_dir or run_config.get("data_dir")
        manual_dir = FLAGS.manual_dir or run_config.get("manual_dir")
        if FLAGS.checkpoint:
            encoder, embed, input_shape, source = load_checkpoint_encoder(
                FLAGS.model_dir, FLAGS.checkpoint, strategy)
            kind = "checkpoint"
        else:
            source = FLAGS.saved_model or os.path.join(FLAGS.model_dir, "saved_model")
            embed, input_shape = export.load_embed(source)
            encoder, kind = embed, "saved_model"
        image_size = FLAGS.image_size or input_shape[0]
        if image_size is None:
            raise ValueError("the SavedModel takes any image size: pass --image_size.")
        if input_shape[0] is not None and image_size != input_shape[0]:
            raise ValueError(f"--image_size {image_size} differs from the encoder's input "
                             f"size {input_shape[0]}.")
        input_shape = (image_size, image_size, input_shape[-1])
        streamed = protocol == "sgd" and config.augmentation != "eval"
        common = dict(data_dir=data_dir, manual_dir=manual_dir,
                      crop_fraction=FLAGS.center_crop_fraction, batch_size=FLAGS.batch_size)
        if not streamed or FLAGS.shots:
            train_x, train_y = extract(embed, dataset, FLAGS.split, image_size, **common)
            test_x, test_y = extract(embed, dataset, FLAGS.test_split, image_size, **common)
        if protocol == "lbfgs":
            fit, held = linear_probe.stratified_holdout(train_y, FLAGS.val_fraction,
                                                        seed=FLAGS.seed)
            num_classes = int(max(train_y.max(), test_y.max())) + 1
        else:
            num_classes = sources.num_classes(dataset, data_dir)
        if streamed:
            import keras

            keras.utils.set_random_seed(config.seed)  # tf.data's seeds depend on the global one
            num_train = count_examples(dataset, FLAGS.split, data_dir=data_dir,
                                       manual_dir=manual_dir)
            train_data = linear_classifier.augmented_dataset(
                dataset, image_size, config, split=FLAGS.split, data_dir=data_dir,
                manual_dir=manual_dir)
            test_data = linear_classifier.eval_dataset(
                dataset, image_size, FLAGS.batch_size, split=FLAGS.test_split,
                data_dir=data_dir, manual_dir=manual_dir,
                center_crop_fraction=FLAGS.center_crop_fraction)
        else:
            num_train = len(train_y)
        if protocol == "sgd":
            config.build_optimizer(config.build_schedule(num_train))  # Bad values: one line.
    except ValueError as e:  # Bad flags, missing data (DatasetUnavailableError), no model.
        cli.fail(e)

    report = {"dataset": dataset, "split": FLAGS.split, "test_split": FLAGS.test_split,
              "image_size": int(image_size), "center_crop_fraction": FLAGS.center_crop_fraction,
              "num_train": int(num_train), "encoder": kind, "encoder_path": source,
              "protocol": protocol}
    if protocol == "lbfgs":
        sweep = linear_probe.lbfgs_logistic_sweep(train_x[fit], train_y[fit], train_x[held],
                                                  train_y[held], test_x, test_y,
                                                  num_classes=num_classes)
        top1 = float(sweep.test_score)
        top5 = float(metrics.top_k_accuracy(test_y, sweep.test_scores, k=min(5, num_classes)))
        report.update({"val_fraction": FLAGS.val_fraction, "best_lambda": sweep.best_lambda})
        rows = [("L-BFGS logistic, all labels", top1, top5)]
        detail = f"lambda {sweep.best_lambda:.3g}"
    else:
        if streamed:
            result = linear_classifier.train_linear_classifier(
                encoder, train_data, test_data, config, num_classes=num_classes,
                num_train_examples=num_train, input_shape=input_shape, strategy=strategy,
                verbose=FLAGS.verbose)
        else:
            result = linear_classifier.train_on_features(train_x, train_y, test_x, test_y,
                                                         config, num_classes=num_classes,
                                                         verbose=FLAGS.verbose)
        top1, top5 = float(result.top1), float(result.top5)
        steps_per_epoch = config.steps_per_epoch(num_train)
        report.update({"classifier": config.to_dict(), "num_classes": int(num_classes),
                       "scaled_learning_rate": config.scaled_learning_rate,
                       "steps_per_epoch": steps_per_epoch,
                       "total_steps": steps_per_epoch * config.epochs,
                       "strategy": FLAGS.strategy})
        rows = [(_describe(config), top1, top5)]
        detail = f"lr {config.scaled_learning_rate:g} at batch {config.batch_size}"
    if not streamed or FLAGS.shots:
        report.update({"num_test": int(len(test_y)), "feature_dim": int(train_x.shape[1])})
    report.update({"top1": top1, "top5": top5})
    if FLAGS.shots:
        few = few_shot.few_shot_probe(train_x, train_y, test_x, test_y, shots=FLAGS.shots,
                                      draws=FLAGS.draws, seed=FLAGS.seed)
        report.update({"shots": FLAGS.shots, "draws": FLAGS.draws,
                       f"{FLAGS.shots}_shot_top1": few.mean, f"{FLAGS.shots}_shot_std": few.std})
        rows.append((f"{FLAGS.shots}-shot logistic (mean of {FLAGS.draws})", few.mean, None))
    report["seconds"] = round(time.time() - start, 1)

    results_path = os.path.join(FLAGS.model_dir, run_dir.RESULTS_FILE)
    results = {}
    if filesystem.is_file(results_path):
        results = filesystem.read_json(results_path)
    results.update({"top1": top1, "top5": top5, "linear_eval": report})
    filesystem.write_json(results_path, results)

    print(f"linear evaluation ({protocol}) of {source} on {dataset} ({num_train} "
          f"{FLAGS.split} images, {detail}):")
    print("| probe | top-1 | top-5 |")
    print("|---|---:|---:|")
    for name, first, fifth in rows:
        print(f"| {name} | {first:.4f} | {'' if fifth is None else f'{fifth:.4f}'} |")
    print(f"wrote {results_path}")


if __name__ == "__main__":
    app.run(main, flags_parser=flag_groups.flags_parser(FLAGS, __doc__))
