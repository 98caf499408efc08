"""Benchmark: multi-label SupCon against SimCLR on synthetic multi-hot images.

Each of C classes owns a fixed random 8x8x3 pattern; an image holds the sum of its label set's
patterns (each class present with probability p, so some images hold none) plus a random
nuisance image of its own, which its two views share, and each view adds fresh noise. The
nuisance tells instances apart as well as the classes do, so SimCLR can match views without
learning the classes; SupCon's label sets point at the classes. A small MLP encoder trains with `SupConModel` for the same
steps under multi-label SupCon (`multi_label=True`: Jaccard-weighted positives) and under
SimCLR (labels ignored); each frozen encoder is then scored by the 11-point mAP of the L-BFGS
logistic probe (`evaluation.linear_probe`, lambda chosen on validation) on held-out images,
next to the untrained encoder. Prints a markdown table.

    .venv/bin/python bench/multilabel.py
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from supcon_tf.evaluation import linear_probe  # noqa: E402
from supcon_tf.models.supcon_model import SupConModel  # noqa: E402

SHAPE = (8, 8, 3)


def synthetic(rng, patterns, count, probability, nuisance, noise):
    """(images float32 [count, 8, 8, 3], two views [count, 2, 8, 8, 3], sets int64 [count, C])."""
    sets = (rng.random((count, len(patterns))) < probability).astype(np.int64)
    clean = np.einsum("nc,chwk->nhwk", sets, patterns)
    clean = clean + nuisance * rng.normal(size=clean.shape)

    def noisy():
        return (clean + noise * rng.normal(size=clean.shape)).astype("float32")

    return noisy(), np.stack([noisy(), noisy()], axis=1), sets


def encoder(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(64, activation="relu")], name="encoder")


def probe_map(model_encoder, train, val, test):
    embed = lambda x: model_encoder.predict(x[0], batch_size=512, verbose=0)  # noqa: E731
    result = linear_probe.lbfgs_logistic_sweep(
        embed(train), train[1], embed(val), val[1], embed(test), test[1],
        lambdas=np.logspace(-4, 2, 7), metric="map_11point")
    return 100.0 * result.test_score


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--probability", type=float, default=0.2)
    parser.add_argument("--nuisance", type=float, default=2.0)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    patterns = rng.normal(size=(args.classes,) + SHAPE)
    data = (args.probability, args.nuisance, args.noise)
    images, views, sets = synthetic(rng, patterns, args.train, *data)
    probe_sets = [synthetic(rng, patterns, 512, *data)
                  for _ in range(3)]  # probe train / validation / test
    probe_sets = [(x, y) for x, _, y in probe_sets]
    del images

    rows = [("untrained encoder", None, probe_map(encoder(args.seed), *probe_sets), 0.0)]
    for name, loss, multi_label in (("SimCLR (labels ignored)", "simclr", False),
                                    ("multi-label SupCon (Jaccard)", "supcon", True)):
        model = SupConModel(encoder(args.seed), loss=loss, projection_units=[32],
                            temperature=0.1, num_classes=args.classes, multi_label=multi_label,
                            probe=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        history = model.fit(views, sets, batch_size=args.batch, epochs=args.epochs,
                            shuffle=True, verbose=0)
        seconds = time.perf_counter() - start
        losses = history.history["contrastive_loss"]
        rows.append((name, (losses[0], losses[-1]), probe_map(model.encoder, *probe_sets),
                     seconds))

    print(f"\n{args.train} synthetic {'x'.join(map(str, SHAPE))} images, {args.classes} classes "
          f"(each present with p={args.probability}; {int((sets.sum(1) == 0).sum())} images "
          f"with none), nuisance {args.nuisance}, view noise {args.noise}, 2 views; MLP 192-128-64, head 32, tau 0.1, Adam "
          f"1e-3, batch {args.batch}, {args.epochs} epochs, seed {args.seed}. Probe: L-BFGS "
          "logistic regression on frozen features, 512 / 512 / 512 images.\n")
    print("| encoder | contrastive loss (first -> last epoch) | probe 11-point mAP % | fit s |")
    print("|---|---|---:|---:|")
    for name, loss, score, seconds in rows:
        loss_text = "-" if loss is None else f"{loss[0]:.4f} -> {loss[1]:.4f}"
        print(f"| {name} | {loss_text} | {score:.1f} | {seconds:.1f} |")
    print(f"\ncommand: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")


if __name__ == "__main__":
    main()
