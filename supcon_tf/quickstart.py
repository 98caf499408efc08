"""Quickstart: SupCon pretraining + linear probes on the bundled digits, offline, on a CPU.

    python -m supcon_tf.quickstart --model_dir=runs/quickstart

Trains the same small ResNet encoder twice with the same data, augmentation, steps and batch
size: once with SupCon (two views, projection head, `contrastive_loss`) and once with
cross-entropy. It then probes the frozen encoders, and an untrained one, with L-BFGS
logistic regression on the held-out digits: with every training label (the L2 penalty chosen
from 45 values on a held-out fifth of train, then refit), and 5-shot (5 labelled images per
class, mean over draws). Digits are easy, so the 5-shot column is the informative one.

Writes `<model_dir>/results.json`, `loss.png` (training curves) and `tsne.png` (a t-SNE map of
each encoder's held-out embeddings, coloured by class), and prints the table.
"""

import dataclasses
import os
import time

from absl import app
from absl import flags

from supcon_tf import cli
from supcon_tf import filesystem
from supcon_tf import plots

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/quickstart", "Where results.json, loss.png and tsne.png go.")
flags.DEFINE_integer("epochs", 30, "Training epochs for each model.")
flags.DEFINE_integer("image_size", 16,
                     "Side the 32x32 digits are cropped/resized to (they are 8x8 scans).")
flags.DEFINE_integer("batch_size", 128, "Batch size (samples; SupCon sees 2 views of each).")
flags.DEFINE_float("supcon_learning_rate", 1.0,
                   "SupCon peak learning rate (SGD, momentum 0.9, cosine).")
flags.DEFINE_float("ce_learning_rate", 0.1,
                   "Cross-entropy peak learning rate (SGD, momentum 0.9, cosine).")
flags.DEFINE_list("models", ["untrained", "cross_entropy", "supcon"],
                  "Which encoders to train and probe.")
flags.DEFINE_float("temperature", 0.1, "SupCon temperature.")
flags.DEFINE_float("width_multiplier", 0.25, "ResNet-18 width multiplier.")
flags.DEFINE_integer("shots", 5, "Labelled images per class in the few-shot probe.")
flags.DEFINE_integer("draws", 20, "Random few-shot draws averaged.")
flags.DEFINE_integer("seed", 0, "Seed of weights, augmentation and few-shot draws.")
flags.DEFINE_bool("quiet", False, "One line per epoch instead of progress bars.")
flags.DEFINE_bool("overwrite", False, "Replace the results of an earlier run in model_dir.")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The quickstart's flags as plain values (helpers never read FLAGS)."""

    model_dir: str
    epochs: int
    image_size: int
    batch_size: int
    supcon_learning_rate: float
    ce_learning_rate: float
    models: tuple
    temperature: float
    width_multiplier: float
    shots: int
    draws: int
    seed: int
    quiet: bool
    overwrite: bool

    @classmethod
    def from_flags(cls, flag_values):
        return cls(**{f.name: (tuple(flag_values[f.name].value) if f.name == "models"
                               else flag_values[f.name].value)
                      for f in dataclasses.fields(cls)})


def _arrays(split):
    import numpy as np
    from supcon_tf.data import sources

    images, labels = [], []
    for image, label in sources.load_source("digits", split).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.stack(images), np.array(labels)


_AUGMENT = dict(crop_area=(0.4, 1.0), flip=False, jitter_strength=0.5, grayscale_probability=0.0)


def _encoder(settings):
    import keras
    from supcon_tf.models import resnet

    keras.utils.set_random_seed(settings.seed)
    size = settings.image_size
    return resnet.resnet(18, (size, size, 3), width_multiplier=settings.width_multiplier,
                         stem="cifar")


def _train(kind, encoder, num_classes, steps_per_epoch, settings):
    """Fits a SupConModel ("supcon" or "cross_entropy") on two-view digits; returns losses."""
    import keras
    from supcon_tf.data import pipeline
    from supcon_tf.models import supcon_model
    from supcon_tf import schedules

    batches = pipeline.make_dataset(
        "digits", "simaugment", 2, settings.batch_size, settings.image_size, training=True,
        seed=settings.seed, augment_options=_AUGMENT)
    learning_rate = (settings.supcon_learning_rate if kind == "supcon"
                     else settings.ce_learning_rate)
    schedule = schedules.build_schedule(
        "cosine", learning_rate, steps_per_epoch=steps_per_epoch, epochs=settings.epochs,
        warmup_epochs=min(1, settings.epochs - 1))  # No warmup for a one-epoch run.
    model = supcon_model.SupConModel(
        encoder, loss=kind, num_classes=num_classes, projection_units=[128, 128],
        temperature=settings.temperature, probe=(kind == "supcon"))
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    print(f"\nTraining {kind}: {settings.epochs} epochs x {steps_per_epoch} steps of "
          f"{settings.batch_size} digits x 2 views")
    history = model.fit(batches, epochs=settings.epochs, steps_per_epoch=steps_per_epoch,
                        verbose=2 if settings.quiet else "auto")
    key = "contrastive_loss" if kind == "supcon" else "ce_loss"
    return [float(v) for v in history.history[key]]


def _features(encoder, images, labels, settings):
    """Encoder features float32 [N, F] of uint8 images [N, 32, 32, 3], resized as in training."""
    import tensorflow as tf
    from supcon_tf.evaluation import features

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    return features.extract_features(encoder, data, settings.image_size, 256, crop_fraction=1.0)[0]


def _probe(train_x, train_y, test_x, test_y, settings):
    """Full-label L-BFGS sweep and few-shot probes; returns top-1 accuracies."""
    from supcon_tf.evaluation import few_shot
    from supcon_tf.evaluation import linear_probe

    # Full labels: lambda chosen on a stratified held-out fifth of train, refit on all of it.
    fit, held = linear_probe.stratified_holdout(train_y, 0.2, seed=settings.seed)
    sweep = linear_probe.lbfgs_logistic_sweep(
        train_x[fit], train_y[fit], train_x[held], train_y[held], test_x, test_y)
    few = few_shot.few_shot_probe(train_x, train_y, test_x, test_y, shots=settings.shots,
                                  draws=settings.draws, seed=settings.seed)
    return float(sweep.test_score), float(few.mean), float(few.std)


def main(argv):
    settings = Settings.from_flags(FLAGS)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass options as --flags.")
    for name in ("epochs", "batch_size", "shots", "draws", "image_size"):
        if getattr(settings, name) < 1:
            cli.fail(f"--{name} must be >= 1, got {getattr(settings, name)}.")
    for name in ("supcon_learning_rate", "ce_learning_rate", "temperature", "width_multiplier"):
        if getattr(settings, name) <= 0:
            cli.fail(f"--{name} must be > 0, got {getattr(settings, name)}.")
    results_path = os.path.join(settings.model_dir, "results.json")
    if filesystem.is_file(results_path) and not settings.overwrite:
        cli.fail(f"{results_path} already exists: pass --overwrite to replace it, or choose "
              "another --model_dir.")

    start = time.time()
    train_images, train_labels = _arrays("train")
    test_images, test_labels = _arrays("test")
    if settings.batch_size > len(train_labels):
        cli.fail(f"--batch_size {settings.batch_size} exceeds the {len(train_labels)} training "
              "images.")
    num_classes = int(train_labels.max()) + 1
    steps_per_epoch = len(train_labels) // settings.batch_size

    known = ("untrained", "cross_entropy", "supcon")
    if not settings.models or any(m not in known for m in settings.models):
        cli.fail(f"--models must list some of {', '.join(known)}, got {settings.models}.")
    encoders, histories = {}, {}
    for kind in [m for m in known if m in settings.models]:
        encoders[kind] = _encoder(settings)
        if kind != "untrained":
            histories[kind] = _train(kind, encoders[kind], num_classes, steps_per_epoch,
                                     settings)

    rows, features = {}, {}
    for kind, encoder in encoders.items():
        train_x = _features(encoder, train_images, train_labels, settings)
        test_x = _features(encoder, test_images, test_labels, settings)
        features[kind] = test_x
        full, few, few_std = _probe(train_x, train_labels, test_x, test_labels, settings)
        rows[kind] = {"top1": full, f"{settings.shots}_shot_top1": few,
                      f"{settings.shots}_shot_std": few_std}

    filesystem.makedirs(settings.model_dir)
    results = {
        "dataset": "digits", "train_images": int(len(train_labels)),
        "test_images": int(len(test_labels)), "encoder": "resnet18_cifar_stem",
        "image_size": settings.image_size,
        "width_multiplier": settings.width_multiplier, "epochs": settings.epochs,
        "batch_size": settings.batch_size, "steps": settings.epochs * steps_per_epoch,
        "temperature": settings.temperature, "probes": rows,
        "top1": rows.get("supcon", {}).get("top1"), "training_loss": histories,
        "seconds": round(time.time() - start, 1),
    }
    filesystem.write_json(results_path, results)
    if histories:
        plots.save_curves(os.path.join(settings.model_dir, "loss.png"), {
            f"{kind} training loss": ("mean loss per epoch",
                                      {kind: (range(1, len(losses) + 1), losses)})
            for kind, losses in histories.items()})
    plots.save_tsne(os.path.join(settings.model_dir, "tsne.png"), {
        f"{kind}: {len(test_labels)} held-out digits": (features[kind], test_labels)
        for kind in rows}, seed=settings.seed)

    print(f"\nHeld-out digits ({len(test_labels)} images), linear probes on frozen encoder "
          f"features ({results['steps']} steps of batch {settings.batch_size} per trained model):")
    print(f"| encoder | top-1, all {len(train_labels)} labels | top-1, {settings.shots}-shot "
          f"(mean of {settings.draws}) |")
    print("|---|---:|---:|")
    for kind, row in rows.items():
        print(f"| {kind} | {row['top1']:.4f} | {row[f'{settings.shots}_shot_top1']:.4f} "
              f"± {row[f'{settings.shots}_shot_std']:.4f} |")
    print(f"\nwrote {results_path}, loss.png and tsne.png (t-SNE of the held-out embeddings) "
          f"in {settings.model_dir} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)
