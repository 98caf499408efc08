"""Deterministic single-image ops shared by the augmentation policies.

Every op is a small pure function of one image `[H, W, C]` (float32, C in {1, 3}) and explicit
arguments; randomness is drawn by the caller from a stateless seed (`augment.py`,
`autoaugment.py`), so the same seed always gives the same image. Ops that take `max_value` work
in either [0, 1] (SimAugment) or [0, 255] (AutoAugment/RandAugment, which follow PIL's uint8
semantics); the others say which range they expect.

Keras 3.15 preprocessing layers are used for the deterministic part of an op (their
`transform_images(images, transformation)`, fed a transformation we build from our own stateless
draws) where their semantics match the PIL/TF reference implementations of AutoAugment:

| op | implementation | why |
|---|---|---|
| solarize | `keras.layers.Solarization` | `x < t ? x : 255 - x`, as PIL |
| posterize | `keras.layers.RandomPosterization` | keep the high `bits` bits, as PIL |
| invert | `keras.layers.RandomInvert` | `255 - x` |
| equalize | `keras.layers.Equalization` | per-channel CDF equalisation (see `equalize`) |
| autocontrast | `keras.layers.AutoContrast` | per-channel min/max stretch, constant channels kept |
| color / saturation | `keras.layers.RandomColorDegeneration` | blend with the grey image |
| grayscale | `keras.layers.RandomGrayscale` | luma (0.2989, 0.587, 0.114), 3 channels kept |
| shear_x/y | `keras.layers.RandomShear` | PIL affine `(1, s, 0, 0, 1, 0)`, fill 128 |
| translate_x/y | `keras.layers.RandomTranslation` | shift in pixels, fill 128 |
| rotate | `keras.layers.RandomRotation` (our matrix) | rotation about the centre, fill 128 |
| brightness | written here | PIL/PyTorch multiply (`RandomBrightness` adds a delta) |
| contrast | written here | blend with the mean *grey* level (`RandomContrast` uses per-channel means) |
| sharpness | written here | PIL keeps the 1-pixel border (`RandomSharpness` zero-pads it) |
| cutout, solarize_add | written here | no Keras equivalent with a fixed size / PIL semantics |

The Keras layers are created once, in float32, and pinned to the TensorFlow backend so they run
inside `tf.data` whatever `KERAS_BACKEND` is.
"""

import functools
import math

import keras
import tensorflow as tf

FILL_VALUE = 128.0  # PIL/TPU AutoAugment's replace colour for geometric ops and cutout.


@functools.lru_cache(maxsize=1)
def keras_layers():
    """The Keras preprocessing layers whose `transform_images` the ops call (created once)."""
    geometry = dict(fill_mode="constant", fill_value=FILL_VALUE, interpolation="nearest",
                    dtype="float32")
    layers = {
        "solarization": keras.layers.Solarization(value_range=(0, 255), dtype="float32"),
        "posterization": keras.layers.RandomPosterization(factor=(1, 8), value_range=(0, 255),
                                                          dtype="float32"),
        "invert": keras.layers.RandomInvert(value_range=(0, 255), dtype="float32"),
        "equalization": keras.layers.Equalization(value_range=(0, 255), dtype="float32"),
        "auto_contrast": keras.layers.AutoContrast(value_range=(0, 255), dtype="float32"),
        "color_degeneration": keras.layers.RandomColorDegeneration(
            factor=1.0, value_range=(0, 255), dtype="float32"),
        "grayscale": keras.layers.RandomGrayscale(factor=1.0, dtype="float32"),
        "shear": keras.layers.RandomShear(**geometry),
        "translation": keras.layers.RandomTranslation(0.0, 0.0, **geometry),
        "rotation": keras.layers.RandomRotation(0.0, **geometry),
    }
    for layer in layers.values():
        layer.backend.set_backend("tensorflow")
    return layers


def _apply_layer(name, image, transformation):
    """Runs Keras layer `name`'s deterministic transform on one `[H, W, C]` image."""
    out = keras_layers()[name].transform_images(image[None], transformation, training=True)
    return tf.ensure_shape(tf.cast(out[0], tf.float32), image.shape)


def _scalar4(value):
    return tf.reshape(tf.cast(value, tf.float32), [1, 1, 1, 1])


# ----------------------------------------------------------------------------------------------
# Colour ops


def solarize(image, threshold):
    """Inverts every value >= `threshold`: `x < t ? x : 255 - x`.

    Args:
        image: float32 `[H, W, C]` in [0, 255].
        threshold: float scalar in [0, 256]; 256 leaves the image unchanged.

    Returns:
        float32 `[H, W, C]` in [0, 255].
    """
    return _apply_layer("solarization", image,
                        {"additions": _scalar4(0.0), "thresholds": _scalar4(threshold)})


def solarize_add(image, addition, threshold=128.0):
    """Adds `addition` to values below `threshold` (clipped to 255); others stay (TPU RandAugment).

    Args:
        image: float32 `[H, W, C]` in [0, 255].
        addition: float scalar, the amount added.
        threshold: float scalar.

    Returns:
        float32 `[H, W, C]` in [0, 255].
    """
    added = tf.clip_by_value(image + tf.cast(addition, tf.float32), 0.0, 255.0)
    return tf.where(image < threshold, added, image)


def posterize(image, bits):
    """Keeps the `bits` most significant bits of every uint8 value.

    Args:
        image: float32 `[H, W, C]` holding integers in [0, 255].
        bits: int scalar in [1, 8].

    Returns:
        float32 `[H, W, C]`: `(x >> (8 - bits)) << (8 - bits)`.
    """
    shift = tf.reshape(8 - tf.cast(bits, tf.uint8), [1])
    return _apply_layer("posterization", image, {"shift_factor": shift})


def invert(image):
    """`255 - x` on a float32 `[H, W, C]` image in [0, 255]."""
    return _apply_layer("invert", image, {"apply_inversion": tf.constant([True])})


def equalize(image):
    """Per-channel histogram equalisation of a float32 `[H, W, C]` image of integers in [0, 255].

    With `h` the channel's 256-bin histogram, `cdf` its cumulative sum and `cdf_min` the first
    non-zero entry, value v maps to `round(255 * (cdf[v] - cdf_min) / (cdf[255] - cdf_min))`;
    a channel with a single grey level is left unchanged. (PIL rounds its buckets slightly
    differently; results differ by a grey level or two at most.)
    """
    return _apply_layer("equalization", image, None)


def autocontrast(image):
    """Stretches each channel of a float32 `[H, W, C]` [0, 255] image to span [0, 255].

    `(x - min) * 255 / (max - min)` per channel; constant channels are left unchanged.
    """
    return _apply_layer("auto_contrast", image, None)


def grayscale(image):
    """Luma `0.2989 R + 0.587 G + 0.114 B` repeated over the channels; identity when C = 1.

    Args:
        image: float32 `[H, W, C]`, any value range.

    Returns:
        float32 `[H, W, C]`.
    """
    if image.shape[-1] == 1:
        return image
    return _apply_layer("grayscale", image, tf.constant(True, shape=[1, 1, 1, 1]))


def _grey(image):
    """float32 `[H, W, 1]` luma (identity for one channel)."""
    if image.shape[-1] == 1:
        return image
    return tf.image.rgb_to_grayscale(image)


def color(image, factor, max_value=255.0):
    """Saturation: `grey + factor * (image - grey)`, clipped (PIL `ImageEnhance.Color`).

    Args:
        image: float32 `[H, W, C]` in [0, max_value].
        factor: float scalar; 0 gives grey, 1 the image, > 1 more saturated.
        max_value: 255.0 or 1.0, the top of the value range.

    Returns:
        float32 `[H, W, C]` in [0, max_value].
    """
    if image.shape[-1] == 1:
        return image
    scaled = image * (255.0 / max_value)
    # Keras blends towards grey by its factor: x + f_k * (grey - x), so f_k = 1 - factor.
    out = _apply_layer("color_degeneration", scaled, {"factor": _scalar4(1.0 - factor)})
    return out * (max_value / 255.0)


def brightness(image, factor, max_value=255.0):
    """`image * factor`, clipped to [0, max_value] (PIL `ImageEnhance.Brightness`, PyTorch).

    Args:
        image: float32 `[H, W, C]` in [0, max_value].
        factor: float scalar >= 0.
        max_value: 255.0 or 1.0.

    Returns:
        float32 `[H, W, C]`.
    """
    return tf.clip_by_value(image * tf.cast(factor, tf.float32), 0.0, max_value)


def contrast(image, factor, max_value=255.0):
    """Blend with the mean grey level: `m + factor * (image - m)`, clipped (PIL, PyTorch).

    Args:
        image: float32 `[H, W, C]` in [0, max_value].
        factor: float scalar >= 0; 0 gives a flat image of the mean grey level.
        max_value: 255.0 or 1.0.

    Returns:
        float32 `[H, W, C]`.
    """
    mean = tf.reduce_mean(_grey(image))
    factor = tf.cast(factor, tf.float32)
    return tf.clip_by_value(mean + factor * (image - mean), 0.0, max_value)


def sharpness(image, factor, max_value=255.0):
    """Blend with a 3x3 smoothed copy (PIL `ImageEnhance.Sharpness`), border pixels kept.

    The smoothing kernel is `[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`; the result is
    `smooth + factor * (image - smooth)` on the interior and `image` on the 1-pixel border.

    Args:
        image: float32 `[H, W, C]` in [0, max_value], H and W >= 3.
        factor: float scalar; 0 smooths, 1 is the identity, > 1 sharpens.
        max_value: 255.0 or 1.0.

    Returns:
        float32 `[H, W, C]`.
    """
    channels = image.shape[-1]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    interior = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    # Pad the smoothed interior with the original border: PIL leaves the border untouched.
    smooth = tf.pad(interior, [[1, 1], [1, 1], [0, 0]])
    shape = tf.shape(image)
    interior_mask = tf.pad(tf.ones(shape - [2, 2, 0], tf.bool), [[1, 1], [1, 1], [0, 0]])
    smooth = tf.where(interior_mask, smooth, image)
    factor = tf.cast(factor, tf.float32)
    return tf.clip_by_value(smooth + factor * (image - smooth), 0.0, max_value)


# ----------------------------------------------------------------------------------------------
# Geometric ops (nearest neighbour, outside filled with FILL_VALUE, as PIL/TPU AutoAugment)


def shear_x(image, level):
    """Horizontal shear: output `(x, y)` reads input `(x + level * y, y)`.

    Args:
        image: float32 `[H, W, C]`.
        level: float scalar, the shear coefficient (AutoAugment uses |level| <= 0.3).

    Returns:
        float32 `[H, W, C]`, uncovered pixels `FILL_VALUE`.
    """
    factors = tf.reshape(tf.stack([tf.cast(level, tf.float32), 0.0]), [1, 2])
    return _apply_layer("shear", image, {"shear_factor": factors})


def shear_y(image, level):
    """Vertical shear: output `(x, y)` reads input `(x, y + level * x)`; see `shear_x`."""
    factors = tf.reshape(tf.stack([0.0, tf.cast(level, tf.float32)]), [1, 2])
    return _apply_layer("shear", image, {"shear_factor": factors})


def translate_x(image, pixels):
    """Shifts the image right by `pixels` (left if negative); see `shear_x`."""
    shift = tf.reshape(tf.stack([tf.cast(pixels, tf.float32), 0.0]), [1, 2])
    return _apply_layer("translation", image, {"translations": shift})


def translate_y(image, pixels):
    """Shifts the image down by `pixels` (up if negative); see `shear_x`."""
    shift = tf.reshape(tf.stack([0.0, tf.cast(pixels, tf.float32)]), [1, 2])
    return _apply_layer("translation", image, {"translations": shift})


def rotate(image, degrees):
    """Rotates the image counter-clockwise by `degrees` about its centre.

    Args:
        image: float32 `[H, W, C]`.
        degrees: float scalar.

    Returns:
        float32 `[H, W, C]`, uncovered pixels `FILL_VALUE`.
    """
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    # Projective transform mapping output (x, y) to input coordinates, about the centre; y
    # points down, so this matrix turns the picture counter-clockwise for positive angles.
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    matrix = tf.reshape(tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]), [1, 8])
    return _apply_layer("rotation", image, {"rotation_matrix": matrix})


def cutout(image, center_y, center_x, half_size, fill_value=FILL_VALUE):
    """Fills the square `[cy - half, cy + half) x [cx - half, cx + half)` (clipped) with a colour.

    Args:
        image: float32 `[H, W, C]`.
        center_y, center_x: int scalars, the square's centre.
        half_size: int scalar >= 0; 0 leaves the image unchanged.
        fill_value: float, the fill colour.

    Returns:
        float32 `[H, W, C]`.
    """
    shape = tf.shape(image)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = ((rows >= center_y - half_size) & (rows < center_y + half_size)
              & (cols >= center_x - half_size) & (cols < center_x + half_size))
    return tf.where(inside[:, :, None], tf.cast(fill_value, tf.float32), image)
