"""Linear evaluation of a pretrained encoder (frozen) from a pretraining `--model_dir`.

    python -m supcon_tf.linear_eval --model_dir=runs/supcon_cifar10

Loads `<model_dir>/saved_model` (written by `supcon_tf.pretrain`) and uses its `embed`
signature as the frozen encoder; no supcon_tf model code is needed to read it. Features of the
train and test splits (eval augmentation: resize + centre crop) go to the L-BFGS
logistic-regression sweep of Kornblith et al. (`probes.lbfgs_logistic_sweep`): the L2 penalty is
chosen on a stratified held-out 20 % of train, then the probe is refit on all of train and
scored on test. Optionally a few-shot probe (`--shots`) runs on the same features.

Dataset, splits and image size default to the pretraining run's `config.json`. The results are
merged into `<model_dir>/results.json` under "top1", "top5" and "linear_eval", and printed as a
table. Every bad flag prints one line `error: ...` on stderr and exits with status 2, writing
nothing.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from supcon_tf import cli  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Pretraining run directory holding saved_model/.")
flags.DEFINE_string("saved_model", None,
                    "SavedModel to evaluate (default <model_dir>/saved_model).")
flags.DEFINE_string("dataset", None, "Source (default: the pretraining run's).")
flags.DEFINE_string("split", "train", "Split the probe is trained on.")
flags.DEFINE_string("test_split", "test", "Split the probe is scored on.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the pretraining run's).")
flags.DEFINE_string("manual_dir", None, "Manually downloaded files (default: the run's).")
flags.DEFINE_integer("image_size", None, "Image side (default: the SavedModel's input size).")
flags.DEFINE_float("center_crop_fraction", None,
                   "Eval centre crop fraction (default: the library's 0.875; images already "
                   "image_size square are used as they are).")
flags.DEFINE_integer("batch_size", 256, "Feature-extraction batch size.")
flags.DEFINE_float("val_fraction", 0.2, "Share of each train class held out to choose lambda.")
flags.DEFINE_integer("shots", 0, "Also run a few-shot probe with this many images per class "
                     "(0: no).")
flags.DEFINE_integer("draws", 20, "Few-shot draws averaged.")
flags.DEFINE_integer("seed", 0, "Seed of the held-out split and few-shot draws.")


def load_embed(path):
    """(embed function images -> [B, F] features, (S, S, C) input shape) of a SavedModel.

    Raises:
        ValueError: no SavedModel at `path`, or it has no usable `embed` signature.
    """
    import tensorflow as tf

    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"no SavedModel at {path}: run supcon_tf.pretrain first (it exports "
                         "<model_dir>/saved_model) or pass --saved_model.")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - any load failure is one user-facing line.
        raise ValueError(f"cannot load the SavedModel at {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    embed = loaded.signatures.get("embed")
    if embed is None:
        raise ValueError(f"the SavedModel at {path} has no 'embed' signature; signatures: "
                         f"{sorted(loaded.signatures)}.")
    spec = embed.structured_input_signature[1].get("images")
    if spec is None or spec.shape.rank != 4:
        raise ValueError(f"the 'embed' signature of {path} does not take images [B, H, W, C].")
    shape = tuple(spec.shape[1:])

    def features(images):
        return embed(images=images)["embeddings"]

    features.loaded = loaded  # Keeps the SavedModel's variables alive.
    return features, shape


def extract(embed, dataset, split, image_size, *, data_dir, manual_dir, crop_fraction,
            batch_size):
    """Features float32 [N, F] and labels int64 [N] of a split (eval augmentation)."""
    import numpy as np
    import tensorflow as tf

    from supcon_tf.data import augment
    from supcon_tf.data import sources

    options = {} if crop_fraction is None else {"center_crop_fraction": crop_fraction}
    resize = augment.build_augmenter("eval", image_size, **options)
    data = sources.load_source(dataset, split, data_dir=data_dir, manual_dir=manual_dir)
    data = data.map(lambda image, label: (resize(image), label),
                    num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    features, labels = [], []
    for images, batch_labels in data:
        features.append(embed(images).numpy())
        labels.append(batch_labels.numpy())
    if not features:
        raise ValueError(f"split {split!r} of {dataset!r} is empty.")
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass options as --flags.")
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        cli.fail("--model_dir is required (the pretraining run to evaluate).")
    from supcon_tf import training
    from supcon_tf.evaluation import metrics
    from supcon_tf.evaluation import probes

    start = time.time()
    try:
        if not os.path.isdir(FLAGS.model_dir):
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
        config_path = os.path.join(FLAGS.model_dir, training.CONFIG_FILE)
        run_config = {}
        if os.path.exists(config_path):
            with open(config_path) as f:
                run_config = json.load(f)
        dataset = FLAGS.dataset or run_config.get("dataset")
        if not dataset:
            raise ValueError(f"no --dataset given and {config_path} does not name one.")
        data_dir = FLAGS.data_dir or run_config.get("data_dir")
        manual_dir = FLAGS.manual_dir or run_config.get("manual_dir")
        path = FLAGS.saved_model or os.path.join(FLAGS.model_dir, "saved_model")
        embed, input_shape = load_embed(path)
        image_size = FLAGS.image_size or input_shape[0]
        if image_size is None:
            raise ValueError("the SavedModel takes any image size: pass --image_size.")
        if input_shape[0] is not None and image_size != input_shape[0]:
            raise ValueError(f"--image_size {image_size} differs from the SavedModel's input "
                             f"size {input_shape[0]}.")
        common = dict(data_dir=data_dir, manual_dir=manual_dir,
                      crop_fraction=FLAGS.center_crop_fraction, batch_size=FLAGS.batch_size)
        train_x, train_y = extract(embed, dataset, FLAGS.split, image_size, **common)
        test_x, test_y = extract(embed, dataset, FLAGS.test_split, image_size, **common)
        fit, held = probes.stratified_holdout(train_y, FLAGS.val_fraction, seed=FLAGS.seed)
    except ValueError as e:  # Bad flags, missing data (DatasetUnavailableError), no model.
        cli.fail(e)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    sweep = probes.lbfgs_logistic_sweep(train_x[fit], train_y[fit], train_x[held],
                                        train_y[held], test_x, test_y, num_classes=num_classes)
    top1 = float(sweep.test_score)
    top5 = float(metrics.top_k_accuracy(test_y, sweep.test_scores, k=min(5, num_classes)))
    report = {"dataset": dataset, "split": FLAGS.split, "test_split": FLAGS.test_split,
              "image_size": int(image_size), "num_train": int(len(train_y)),
              "num_test": int(len(test_y)), "feature_dim": int(train_x.shape[1]),
              "protocol": "lbfgs_logistic_sweep", "val_fraction": FLAGS.val_fraction,
              "best_lambda": sweep.best_lambda, "top1": top1, "top5": top5}
    rows = [("L-BFGS logistic, all labels", top1, top5)]
    if FLAGS.shots:
        few = probes.few_shot_probe(train_x, train_y, test_x, test_y, shots=FLAGS.shots,
                                    draws=FLAGS.draws, seed=FLAGS.seed)
        report.update({f"{FLAGS.shots}_shot_top1": few.mean,
                       f"{FLAGS.shots}_shot_std": few.std})
        rows.append((f"{FLAGS.shots}-shot logistic (mean of {FLAGS.draws})", few.mean, None))
    report["seconds"] = round(time.time() - start, 1)

    results_path = os.path.join(FLAGS.model_dir, training.RESULTS_FILE)
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    results.update({"top1": top1, "top5": top5, "linear_eval": report})
    training.write_json(results_path, results)

    print(f"linear evaluation of {path} on {dataset} ({len(train_y)} train / {len(test_y)} "
          f"{FLAGS.test_split} images, {train_x.shape[1]}-d features, lambda "
          f"{sweep.best_lambda:.3g}):")
    print("| probe | top-1 | top-5 |")
    print("|---|---:|---:|")
    for name, first, fifth in rows:
        print(f"| {name} | {first:.4f} | {'' if fifth is None else f'{fifth:.4f}'} |")
    print(f"wrote {results_path}")


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: cli.parse_flags(FLAGS, argv))
