"""Retrieval evaluation of a pretrained encoder: the metric-learning protocol.

    python -m supcon_tf.retrieval --model_dir=runs/tiny        # the run's dataset (digits)
    python -m supcon_tf.retrieval --model_dir=runs/supcon_r50 --dataset=caltech_birds2011 \\
        --data_dir=~/tensorflow_datasets
    python -m supcon_tf.retrieval --saved_model=exported/saved_model --dataset=cars196 \\
        --data_dir=~/tensorflow_datasets --output_dir=results/cars196

The encoder is the `embed` signature of a SavedModel (`--saved_model`, default
`<model_dir>/saved_model`), or with `--checkpoint` (a prefix `<model_dir>/checkpoints/ckpt-N`, or
`latest`) the Keras encoder rebuilt from the run directory (`trainer.load_pretrained`).

Protocol (the standard class split of the metric-learning benchmarks): the classes are split in
two halves, the first for training, the second for testing; every image of a test-half class is
a query and the gallery is all of them (leave-one-out: a query never retrieves itself). Images
get the evaluation transform (short side resized to `--image_size / --center_crop_fraction`,
bicubic, centre crop). `evaluation.retrieval.retrieve` ranks by cosine similarity and reports
Precision@1, R-Precision, MAP@R (Musgrave et al. 2020) and Recall@k for each of `--ks`. The
standard settings of each benchmark are the defaults of `--split` and `--classes`:

| --dataset | split | test classes | images |
|---|---|---|---|
| digits (bundled, offline) | all | 5-9 (second half) | 896 |
| caltech_birds2011 (CUB-200-2011) | train+test | 100-199 (second half) | 5,924 |
| cars196 (Cars196) | train+test | 98-195 (second half) | 8,131 |
| stanford_online_products (SOP) | test | all of the split (its 11,316 test classes) | 60,502 |

Any other source (`folder:<path>`, another TFDS name) needs `--split`; `--classes` defaults to
`second_half` (ids >= num_classes // 2) and `all` keeps every class of the split. TFDS datasets
are read prepared under `--data_dir` (never downloaded here).

Writes, in `--output_dir` (default `<model_dir>/retrieval_<dataset>`): `results.json` (the
metrics at the top level, and the settings and counts) and `retrieval.png` (`--num_examples`
queries drawn with `--seed` beside their nearest results: right ones framed green, wrong ones
red), and prints the table. Queries whose class has a single image have nothing to retrieve:
they are left out of the metrics and counted ("num_without_reference"). Every bad flag or input
prints one line `error: ...` on stderr and exits with status 2 before anything is written.
"""

import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from supcon_tf import cli  # noqa: E402
from supcon_tf import filesystem  # noqa: E402
from supcon_tf import flag_groups  # noqa: E402

SECOND_HALF, ALL_CLASSES = "second_half", "all"
# --dataset -> (split, classes) of the standard protocol.
STANDARD = {
    "digits": ("all", SECOND_HALF),
    "caltech_birds2011": ("train+test", SECOND_HALF),
    "cars196": ("train+test", SECOND_HALF),
    "stanford_online_products": ("test", ALL_CLASSES),
}
RESULTS_FILE = "results.json"
EXAMPLES_FILE = "retrieval.png"
MAX_SHOWN = 16  # results drawn per query at most

FLAGS = flag_groups.new_flag_values()
flag_groups.define_pretrained(FLAGS)
flag_groups.define_data(
    FLAGS, dataset_help="digits | caltech_birds2011 | cars196 | stanford_online_products | "
    "folder:<path> | a TFDS name (default: the pretraining run's).",
    split_help="Split read (default: the benchmark's, see --help).")
flag_groups.define_eval_images(FLAGS)
flag_groups.define_output(FLAGS, "<model_dir>/retrieval_<dataset>")
define = flag_groups.Definer(FLAGS)
define.enum("classes", None, [SECOND_HALF, ALL_CLASSES],
            "Classes evaluated: second_half (ids >= num_classes // 2) or all (default: the "
            "benchmark's).")
define.list("ks", ["1", "2", "4", "8"], "The k of each Recall@k.")
define.integer("num_examples", 8, "Queries drawn in retrieval.png (0: no picture).")
define.integer("seed", 0, "Seed of the queries drawn in retrieval.png.")


# ----------------------------------------------------------------------------------------------
# checks (nothing written)


def parse_ks(values):
    """`--ks` as a tuple of distinct ints >= 1 (the upper bound is checked with the data)."""
    ks = []
    for value in values:
        try:
            ks.append(int(value))
        except ValueError:
            raise ValueError(f"--ks must be a comma-separated list of ints, got {value!r}; "
                             "e.g. --ks=1,2,4,8.") from None
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"--ks must list distinct ints >= 1, got {','.join(values)!r}; "
                         "e.g. --ks=1,2,4,8.")
    return tuple(ks)


def protocol(dataset, split=None, classes=None):
    """(split, classes) of `dataset`: the flags where given, else the benchmark's standard.

    Raises:
        ValueError: a source without a standard split and no `split`.
    """
    standard_split, standard_classes = STANDARD.get(dataset, (None, SECOND_HALF))
    split = split or standard_split
    if split is None:
        raise ValueError(f"--dataset={dataset} has no standard retrieval split (those with one: "
                         f"{', '.join(STANDARD)}): pass --split (e.g. --split=all).")
    return split, classes or standard_classes


def first_test_class(num_classes, classes):
    """The smallest class id evaluated: num_classes // 2 for the second half, else 0."""
    return 0 if classes == ALL_CLASSES else num_classes // 2


def _check_ranges():
    if FLAGS.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {FLAGS.batch_size}.")
    if FLAGS.num_examples < 0:
        raise ValueError(f"--num_examples must be >= 0, got {FLAGS.num_examples}.")
    if FLAGS.image_size is not None and FLAGS.image_size < 1:
        raise ValueError(f"--image_size must be >= 1, got {FLAGS.image_size}.")
    fraction = FLAGS.center_crop_fraction
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"--center_crop_fraction must be in (0, 1], got {fraction}.")
    if FLAGS.model_dir and not filesystem.is_dir(FLAGS.model_dir):
        raise ValueError(f"--model_dir {FLAGS.model_dir} does not exist.")
    if FLAGS.checkpoint and FLAGS.saved_model:
        raise ValueError("pass --checkpoint or --saved_model, not both.")


def _run_config():
    """The pretraining run's config.json ({} without --model_dir or the file)."""
    from supcon_tf import run_dir

    if not FLAGS.model_dir:
        return {}
    path = os.path.join(FLAGS.model_dir, run_dir.CONFIG_FILE)
    return filesystem.read_json(path) if filesystem.is_file(path) else {}


def _output_dir(dataset):
    output_dir = FLAGS.output_dir
    if output_dir is None:
        if not FLAGS.model_dir:
            raise ValueError("--output_dir is required without --model_dir.")
        name = re.sub(r"[^\w.-]+", "_", dataset).strip("_")
        output_dir = os.path.join(FLAGS.model_dir, f"retrieval_{name}")
    if filesystem.is_file(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file, not a directory.")
    if filesystem.is_dir(output_dir) and not FLAGS.overwrite:
        held = [name for name in (RESULTS_FILE, EXAMPLES_FILE)
                if filesystem.is_file(os.path.join(output_dir, name))]
        if held:
            raise ValueError(f"--output_dir {output_dir} already holds results ({held[0]}): pass "
                             "--overwrite to replace them or choose another --output_dir.")
    return output_dir


def load_encoder(model_dir=None, saved_model=None, checkpoint=None):
    """The encoder to evaluate.

    Args:
        model_dir: a pretraining run directory, or None with `saved_model`.
        saved_model: a SavedModel path (default `<model_dir>/saved_model`).
        checkpoint: None (the SavedModel), "latest" or a checkpoint prefix of `model_dir`.

    Returns:
        (embed: a Keras encoder or a callable images float32 [B, S, S, C] -> float32 [B, F]
        (`features.embed_function` takes either), input side S or None, kind, path read).

    Raises:
        ValueError: no SavedModel or run there, or an unreadable checkpoint.
    """
    from supcon_tf import export
    from supcon_tf import trainer

    if checkpoint:
        prefix = None if checkpoint == "latest" else checkpoint
        encoder = trainer.load_pretrained(model_dir, checkpoint=prefix).model.encoder
        return encoder, encoder.input_shape[1], "checkpoint", f"{model_dir} ({checkpoint})"
    path = saved_model or os.path.join(model_dir, "saved_model")
    embed, shape = export.load_embed(path)
    return embed, shape[0], "saved_model", path


def _image_size(input_side):
    if input_side is None:
        if FLAGS.image_size is None:
            raise ValueError("the SavedModel takes any image size: pass --image_size.")
        return FLAGS.image_size
    if FLAGS.image_size is not None and FLAGS.image_size != input_side:
        raise ValueError(f"--image_size {FLAGS.image_size} differs from the encoder's input size "
                         f"{input_side}; omit --image_size or pass {input_side}.")
    return int(input_side)


def open_test_set(dataset, split, first_class, *, data_dir=None, manual_dir=None):
    """The images of the evaluated classes, in the source's order.

    Returns:
        A `tf.data.Dataset` of `(image uint8 [H, W, C], label int64)` with label >= first_class.
    """
    from supcon_tf.data import sources

    data = sources.load_source(dataset, split, data_dir=data_dir, manual_dir=manual_dir)
    if first_class == 0:
        return data
    return data.filter(lambda image, label: label >= first_class)


# ----------------------------------------------------------------------------------------------
# the picture


def example_images(data, indices, image_size, crop_fraction=None):
    """The evaluation-transformed images at positions `indices` of `data`.

    Args:
        data: `tf.data.Dataset` of `(image uint8 [H, W, C], label)` (`open_test_set`).
        indices: int [M] positions in `data`.
        image_size, crop_fraction: the evaluation transform's.

    Returns:
        {position: float32 [S, S, C] in [0, 1]}.
    """
    import numpy as np
    import tensorflow as tf

    from supcon_tf.evaluation import features

    wanted = tf.constant(np.unique(indices), tf.int64)
    subset = data.enumerate().filter(
        lambda position, pair: tf.reduce_any(tf.equal(position, wanted))).map(
            lambda position, pair: (pair[0], position))
    images, positions = features.embed_batches(
        lambda batch: batch, features.eval_pipeline(subset, image_size, 64, crop_fraction))
    return dict(zip(positions.tolist(), images))


def save_examples(path, data, labels, neighbours, *, num_examples, seed, image_size,
                  crop_fraction=None):
    """Draws `num_examples` queries with a relevant reference and their first results."""
    import numpy as np

    from supcon_tf import plots

    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[inverse] > 1)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(candidates, min(num_examples, len(candidates)), replace=False))
    results = neighbours[queries, :MAX_SHOWN]  # [Q, K]
    images = example_images(data, np.concatenate([queries, results.ravel()]), image_size,
                            crop_fraction)
    plots.save_retrieval_examples(
        path, np.stack([images[q] for q in queries.tolist()]), labels[queries],
        np.stack([[images[r] for r in row] for row in results.tolist()]), labels[results])
    return queries.tolist()


# ----------------------------------------------------------------------------------------------


METRIC_NAMES = {"precision_at_1": "Precision@1", "r_precision": "R-Precision",
                "map_at_r": "MAP@R"}


def table(metrics, ks):
    """The metrics as a one-row markdown table."""
    names = [*METRIC_NAMES, *(f"recall_at_{k}" for k in ks)]
    header = [METRIC_NAMES.get(name, f"Recall@{name.rsplit('_', 1)[1]}") for name in names]
    return ("| " + " | ".join(header) + " |\n|" + "---:|" * len(names) + "\n| " +
            " | ".join(f"{metrics[name]:.4f}" for name in names) + " |\n")


def main(argv):
    cli.start(argv, FLAGS.model_dir or FLAGS.saved_model,
              "the pretraining run to evaluate, or pass --saved_model")
    from supcon_tf.data import sources
    from supcon_tf.evaluation import features
    from supcon_tf.evaluation import retrieval

    start = time.time()
    try:
        _check_ranges()
        ks = parse_ks(FLAGS.ks)
        run_config = _run_config()
        dataset = FLAGS.dataset or run_config.get("dataset")
        if not dataset:
            raise ValueError("no --dataset given and no pretraining run config names one; pass "
                             f"e.g. --dataset=digits (standard: {', '.join(STANDARD)}).")
        data_dir = FLAGS.data_dir or run_config.get("data_dir")
        manual_dir = FLAGS.manual_dir or run_config.get("manual_dir")
        num_classes = sources.num_classes(dataset, data_dir)  # an unknown name fails here
        split, classes = protocol(dataset, FLAGS.split, FLAGS.classes)
        output_dir = _output_dir(dataset)
        embed, input_side, kind, encoder_path = load_encoder(FLAGS.model_dir, FLAGS.saved_model,
                                                             FLAGS.checkpoint)
        image_size = _image_size(input_side)
        first_class = first_test_class(num_classes, classes)
        data = open_test_set(dataset, split, first_class, data_dir=data_dir,
                             manual_dir=manual_dir)
        try:
            embeddings, labels = features.extract_features(
                embed, data, image_size, FLAGS.batch_size, FLAGS.center_crop_fraction)
        except ValueError:
            raise ValueError(f"split {split!r} of {dataset!r} holds no image of the evaluated "
                             f"classes (ids >= {first_class}); check --split and "
                             "--classes.") from None
        result = retrieval.retrieve(embeddings, labels, ks=ks)
    except ValueError as error:  # bad flags, no model, missing data, too few images
        cli.fail(error)

    report = {**result.metrics, "dataset": dataset, "split": split, "classes": classes,
              "first_class": int(first_class), "num_images": int(len(labels)),
              "num_classes": int(len(set(labels.tolist()))),
              "num_queries": result.num_queries,
              "num_without_reference": result.num_without_reference, "ks": list(ks),
              "image_size": int(image_size), "center_crop_fraction": FLAGS.center_crop_fraction,
              "feature_dim": int(embeddings.shape[1]), "encoder": kind,
              "encoder_path": encoder_path}
    filesystem.makedirs(output_dir)
    if FLAGS.num_examples:
        examples_path = os.path.join(output_dir, EXAMPLES_FILE)
        report["examples"] = save_examples(
            examples_path, data, labels, result.neighbours, num_examples=FLAGS.num_examples,
            seed=FLAGS.seed, image_size=image_size, crop_fraction=FLAGS.center_crop_fraction)
    report["seconds"] = round(time.time() - start, 1)
    results_path = os.path.join(output_dir, RESULTS_FILE)
    filesystem.write_json(results_path, report)
    print(f"retrieval of {encoder_path} on {dataset} ({split}, classes >= {first_class}: "
          f"{len(labels)} images of {report['num_classes']} classes, {result.num_queries} "
          f"queries, leave-one-out):")
    print(table(result.metrics, ks), end="")
    print(f"wrote {results_path}" + (f" and {examples_path}" if FLAGS.num_examples else ""))


if __name__ == "__main__":
    app.run(main, flags_parser=flag_groups.flags_parser(FLAGS, __doc__))
