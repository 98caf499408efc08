"""SavedModel export with serving signatures that need no supcon_tf import to load.

`export_saved_model(model, path)` writes a SavedModel whose signatures each take a float32 batch
of images `[B, H, W, C]` in [0, 1] under the input name `images`:

* `embed`: the encoder's representation, `{"embeddings": [B, F]}`;
* `project`: the projection head's L2-normalised output, `{"projections": [B, d]}`
  (models trained with a contrastive loss);
* `classify`: `{"logits": [B, K], "probabilities": [B, K]}` from the classifier (cross-entropy
  or joint models) or else the online linear probe, when the model has one.

A fresh process loads it with `tf.saved_model.load(path).signatures["embed"](images=...)`.

The serving input contract is checked at run time by every signature (`checked_images`): rank
4, the exported size and channels, and values in [0, 1] (uint8 images are refused by dtype;
divide them by 255 first). A bad input raises `tf.errors.InvalidArgumentError` naming the
expected input; nothing can reach a kernel that would abort the process.
"""

import os

import tensorflow as tf

from supcon_tf import filesystem

# Tolerated overshoot of [0, 1] (bicubic resizing overshoots slightly before clipping).
RANGE_TOLERANCE = 1e-3


def _image_spec(encoder):
    shape = (None,) + tuple(encoder.input_shape[1:])
    return tf.TensorSpec(shape, tf.float32, name="images")


def _describe(spec):
    sides = ", ".join("?" if d is None else str(d) for d in spec.shape[1:])
    return f"a float32 batch of images [B, {sides}] with values in [0, 1]"


def checked_images(images, spec):
    """`images` after run-time checks of rank, size, channels and value range.

    A concrete function checks only the dtype of what it is called with; without these checks
    a rank-3 input reaches the convolution kernels, which abort the whole process, and images
    in [0, 255] give wrong numbers silently. Each failure is a catchable
    `tf.errors.InvalidArgumentError` naming the expected input.

    Args:
        images: the signature's input tensor (nominally `spec`).
        spec: the `tf.TensorSpec` of the expected images `[B, S, S, C]`.

    Returns:
        `images`, now known to match `spec` and lie in [0, 1].
    """
    expected = _describe(spec)
    images = tf.ensure_shape(images, spec.shape, name="check_image_shape")
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    in_range = tf.logical_and(low >= -RANGE_TOLERANCE, high <= 1.0 + RANGE_TOLERANCE)
    check = tf.debugging.Assert(
        tf.logical_or(tf.equal(tf.size(images), 0), in_range),
        [f"expected {expected} (divide uint8 images by 255); got values in", low, high],
        name="check_image_range")
    with tf.control_dependencies([check]):
        return tf.identity(images)


def export_saved_model(model, path):
    """Exports a `SupConModel` (or anything with `.encoder`) as a SavedModel.

    Args:
        model: A built `SupConModel`.
        path: Directory to write; must not exist yet or be an empty directory.

    Returns:
        The list of signature names written.

    Raises:
        ValueError: `path` exists and is not an empty directory (nothing is overwritten).
    """
    if filesystem.is_file(path) or (filesystem.is_dir(path) and tf.io.gfile.listdir(path)):
        raise ValueError(
            f"Export path {path} already exists and is not empty: remove it or choose another.")
    spec = _image_spec(model.encoder)
    module = tf.Module()
    module.model = model
    signatures = {}

    @tf.function(input_signature=[spec])
    def embed(images):
        images = checked_images(images, spec)
        return {"embeddings": tf.cast(model.encoder(images, training=False), tf.float32)}

    signatures["embed"] = embed
    head = getattr(model, "projection_head", None)
    if head is not None:
        @tf.function(input_signature=[spec])
        def project(images):
            images = checked_images(images, spec)
            return {"projections": head(model.encoder(images, training=False),
                                        training=False)}

        signatures["project"] = project
    classifier = getattr(model, "classifier", None) or getattr(model, "probe", None)
    if classifier is not None:
        @tf.function(input_signature=[spec])
        def classify(images):
            images = checked_images(images, spec)
            logits = tf.cast(classifier(model.encoder(images, training=False)), tf.float32)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        signatures["classify"] = classify
    for name, fn in signatures.items():
        setattr(module, name, fn)
    tf.saved_model.save(module, path, signatures=signatures)
    return sorted(signatures)


def load_embed(path):
    """The `embed` signature of a supcon_tf SavedModel.

    Args:
        path: a SavedModel directory (`<model_dir>/saved_model`).

    Returns:
        (embed callable float32 [B, S, S, C] -> float32 [B, F], input shape (S, S, C) with
        None for a free dimension).

    Raises:
        ValueError: no SavedModel at `path`, or it has no usable `embed` signature.
    """
    if not filesystem.is_file(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"no SavedModel at {path}: run supcon_tf.pretrain first (it exports "
                         "<model_dir>/saved_model), or evaluate a checkpoint with --checkpoint.")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001 - any load failure is one user-facing line.
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot load the SavedModel at {path}: {type(error).__name__}: "
                         f"{first[:200]}") from None
    signature = loaded.signatures.get("embed")
    spec = None if signature is None else signature.structured_input_signature[1].get("images")
    if spec is None or spec.shape.rank != 4:
        raise ValueError(f"the SavedModel at {path} has no 'embed' signature taking images "
                         f"[B, H, W, C]; signatures: {sorted(loaded.signatures)}.")

    def embed(images):
        return signature(images=images)["embeddings"]

    embed.loaded = loaded  # keeps the SavedModel's variables alive
    return embed, tuple(spec.shape[1:])
