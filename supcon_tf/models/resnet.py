"""ResNet v1 encoders (He et al. 2016) with the stems and options SupCon trains.

`resnet(depth, input_shape, ...)` builds a functional `keras.Model` that maps a batch of images
float `[batch, height, width, channels]` to features float `[batch, feature_dim]` (global average
pooling of the last stage). It is built from stock Keras layers and
`batch_norm.BatchNormalization` (Keras' batch norm run by TensorFlow's fused kernel; same
weights), so it saves to and reloads from `.keras` files once `supcon_tf` is imported, and
weights and checkpoints of encoders built with the stock `BatchNormalization` load into it.

Architecture (ResNet v1.5, as in the TF official models, torchvision and the SupCon code):

* stem "imagenet": 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (total stride 32 with the stages);
  stem "cifar": 3x3/1 conv, BN, ReLU, no pool (total stride 8), for 32x32 images.
* four stages of residual blocks with 64, 128, 256, 512 base filters (times `width_multiplier`),
  the first block of stages 2-4 downsampling by 2. Depths 18 and 34 use basic blocks
  (two 3x3 convs, expansion 1); depths 50 and above bottleneck blocks (1x1, 3x3, 1x1, expansion
  4) with the stride on the 3x3 conv. A projection shortcut (1x1 conv + BN) is used where the
  shape changes.
* every conv has no bias (the BN that follows supplies it); BN momentum 0.9, epsilon 1e-5.
* ResNeXt (Xie et al. 2017): `groups` > 1 makes the bottleneck 3x3 conv grouped, with
  `int(filters * width_per_group / 64) * groups` channels (e.g. ResNeXt-50 32x4d:
  `depth=50, groups=32, width_per_group=4`).

Feature dimensions: `512 * width_multiplier` for depths 18/34, `2048 * width_multiplier` for
50 and above (see `feature_dim`).
"""

import numbers

import keras

from supcon_tf.models import batch_norm

# depth -> (block kind, number of blocks in each of the four stages).
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
STEMS = ("imagenet", "cifar")

_EXPANSION = {"basic": 1, "bottleneck": 4}
_STAGE_FILTERS = (64, 128, 256, 512)
# Total downsampling of each stem followed by the four stages.
_TOTAL_STRIDE = {"imagenet": 32, "cifar": 8}


def _scaled(filters, width_multiplier):
    """Returns `filters * width_multiplier` rounded to an int channel count (at least 1)."""
    return max(1, int(round(filters * width_multiplier)))


def _validate_architecture(depth, width_multiplier, groups, width_per_group):
    """Checks the architecture arguments shared by `resnet` and `feature_dim`."""
    if (isinstance(depth, bool) or not isinstance(depth, numbers.Integral)
            or depth not in DEPTHS):
        raise ValueError(
            f"Unknown ResNet depth {depth!r}; use one of {sorted(DEPTHS)} "
            "(basic blocks for 18/34, bottleneck blocks from 50).")
    if (isinstance(width_multiplier, bool) or not isinstance(width_multiplier, numbers.Real)
            or not width_multiplier > 0):
        raise ValueError(
            f"width_multiplier must be a number > 0, got {width_multiplier!r}; use e.g. 1 "
            "(standard widths), 2 or 0.5.")
    for name, value in (("groups", groups), ("width_per_group", width_per_group)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    block, _ = DEPTHS[depth]
    if block == "basic" and (groups != 1 or width_per_group != 64):
        raise ValueError(
            f"ResNeXt grouping (groups={groups}, width_per_group={width_per_group}) needs "
            f"bottleneck blocks, but depth {depth} uses basic blocks; use depth >= 50 or "
            "groups=1, width_per_group=64.")
    if groups > 1:
        for base in _STAGE_FILTERS:
            filters = _scaled(base, width_multiplier)
            inner = int(filters * width_per_group / 64) * groups
            if inner < groups:
                raise ValueError(
                    f"width_multiplier={width_multiplier!r} with width_per_group="
                    f"{width_per_group} leaves fewer channels than groups={groups} in a "
                    "grouped conv; raise width_per_group or width_multiplier.")


def feature_dim(depth, width_multiplier=1):
    """Returns the size of the feature vector `resnet(depth, ...)` produces.

    Args:
        depth: One of `DEPTHS` (18, 34, 50, 101, 152, 200).
        width_multiplier: Positive number scaling every layer's channels.

    Returns:
        int: `expansion * round(512 * width_multiplier)`, i.e. 512 for ResNet-18/34 and
        2048 for ResNet-50 and deeper at width 1.

    Raises:
        ValueError: for an unknown depth or a width multiplier <= 0.
    """
    _validate_architecture(depth, width_multiplier, 1, 64)
    block, _ = DEPTHS[depth]
    return _EXPANSION[block] * _scaled(_STAGE_FILTERS[-1], width_multiplier)


def _as_int(value):
    """Returns `value` as a Python int if it is an integer (e.g. numpy's), else unchanged."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _validate_input_shape(input_shape, stem):
    """Checks `input_shape` = (height, width, channels) against what `stem` needs."""
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {input_shape!r}; "
            "e.g. (224, 224, 3) or (32, 32, 3), without the batch axis.") from None
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels) without the batch axis, got "
            f"{input_shape!r}; e.g. (224, 224, 3) or (None, None, 3).")
    input_shape = tuple(None if size is None else _as_int(size) for size in input_shape)
    height, width, channels = input_shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"input_shape {input_shape!r} needs a known positive channel count as its last "
            "entry (channels-last images, e.g. 3 for RGB).")
    minimum = _TOTAL_STRIDE[stem]
    for size in (height, width):
        if size is None:
            continue
        if not isinstance(size, int) or size < minimum:
            hint = ("use stem='cifar' (total stride 8) for small images or resize the images"
                    if stem == "imagenet" else "resize the images")
            raise ValueError(
                f"input_shape {input_shape!r} is too small for stem={stem!r}, which with the "
                f"four stages downsamples by {minimum}; need height and width >= {minimum} "
                f"(or None): {hint}.")
    return input_shape


class _Builder:
    """Creates named conv/BN layers with the settings shared by one network."""

    def __init__(self, sync_batch_norm, momentum, epsilon, zero_init_residual):
        self.sync_batch_norm = sync_batch_norm
        self.momentum = momentum
        self.epsilon = epsilon
        self.zero_init_residual = zero_init_residual

    def conv(self, x, filters, kernel_size, strides, name, groups=1):
        """Bias-free conv; stride > 1 pads explicitly (symmetric, independent of input size)."""
        if strides > 1:
            pad_total = kernel_size - 1
            pad_begin = pad_total // 2
            padding = (pad_begin, pad_total - pad_begin)
            if pad_total > 0:
                x = keras.layers.ZeroPadding2D(padding=(padding, padding), name=name + "_pad")(x)
            padding_mode = "valid"
        else:
            padding_mode = "same"
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding_mode, groups=groups,
            use_bias=False, kernel_initializer="he_normal", name=name)(x)

    def batch_norm(self, x, name, zero_gamma=False):
        """BN over the channel axis; `zero_gamma` starts a residual branch at zero."""
        return batch_norm.BatchNormalization(
            axis=-1, momentum=self.momentum, epsilon=self.epsilon,
            gamma_initializer="zeros" if zero_gamma and self.zero_init_residual else "ones",
            synchronized=self.sync_batch_norm, name=name)(x)


def _basic_block(builder, x, filters, strides, name):
    """Two 3x3 convs; output channels `filters`."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = builder.conv(x, filters, 1, strides, name + "_shortcut_conv")
        shortcut = builder.batch_norm(shortcut, name + "_shortcut_bn")
    y = builder.conv(x, filters, 3, strides, name + "_conv1")
    y = builder.batch_norm(y, name + "_bn1")
    y = keras.layers.ReLU(name=name + "_relu1")(y)
    y = builder.conv(y, filters, 3, 1, name + "_conv2")
    y = builder.batch_norm(y, name + "_bn2", zero_gamma=True)
    y = keras.layers.Add(name=name + "_add")([shortcut, y])
    return keras.layers.ReLU(name=name + "_out")(y)


def _bottleneck_block(builder, x, filters, strides, name, groups, width_per_group):
    """1x1 reduce, 3x3 (strided, optionally grouped), 1x1 expand; output `4 * filters`."""
    out_filters = _EXPANSION["bottleneck"] * filters
    inner = int(filters * width_per_group / 64) * groups
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = builder.conv(x, out_filters, 1, strides, name + "_shortcut_conv")
        shortcut = builder.batch_norm(shortcut, name + "_shortcut_bn")
    y = builder.conv(x, inner, 1, 1, name + "_conv1")
    y = builder.batch_norm(y, name + "_bn1")
    y = keras.layers.ReLU(name=name + "_relu1")(y)
    y = builder.conv(y, inner, 3, strides, name + "_conv2", groups=groups)
    y = builder.batch_norm(y, name + "_bn2")
    y = keras.layers.ReLU(name=name + "_relu2")(y)
    y = builder.conv(y, out_filters, 1, 1, name + "_conv3")
    y = builder.batch_norm(y, name + "_bn3", zero_gamma=True)
    y = keras.layers.Add(name=name + "_add")([shortcut, y])
    return keras.layers.ReLU(name=name + "_out")(y)


def resnet(depth, input_shape=(224, 224, 3), width_multiplier=1, stem="imagenet",
           sync_batch_norm=False, *, groups=1, width_per_group=64, batch_norm_momentum=0.9,
           batch_norm_epsilon=1e-5, zero_init_residual=True, name=None):
    """Builds a ResNet v1 encoder ending in global average pooling.

    The model applies no mean/std normalisation: feed images scaled to [0, 1] (the stem's batch
    norm absorbs the offset and scale). The model follows the global dtype policy (e.g.
    `mixed_float16`, giving float16 features; batch-norm statistics stay float32) and saves to
    `.keras`.

    Args:
        depth: Number of layers; one of 18, 34, 50, 101, 152, 200.
        input_shape: `(height, width, channels)` of one image, without the batch axis; height
            and width may be None (any size). Must be at least 32 for the ImageNet stem and 8
            for the CIFAR stem.
        width_multiplier: Positive number multiplying every layer's channel count (SimCLR's
            R-50 (2x) is 2); fractional values are rounded per layer.
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no pool: a
            32x32 image keeps 32x32 resolution through the stem).
        sync_batch_norm: If True every batch norm has `synchronized=True`, so under a
            `tf.distribute` strategy its batch statistics are computed over the global batch.
        groups: ResNeXt cardinality of the bottleneck 3x3 conv (1 = plain ResNet).
        width_per_group: ResNeXt channels per group at the first stage (64 = plain ResNet).
        batch_norm_momentum: Momentum of the BN moving statistics.
        batch_norm_epsilon: BN variance epsilon.
        zero_init_residual: If True the last BN of each residual branch starts with gamma = 0,
            so every block starts as the identity (Goyal et al. 2017).
        name: Model name; defaults to e.g. "resnet50", "resnet50_w2" or "resnext50_32x4d".

    Returns:
        A `keras.Model` mapping images float `[batch, height, width, channels]` to features
        `[batch, feature_dim(depth, width_multiplier)]` in the compute dtype.

    Raises:
        ValueError: for an unknown depth, an unknown stem, a width multiplier <= 0, grouping
            asked of a basic-block depth, or an input shape that is not (height, width,
            channels) or is smaller than the stem's total stride.
    """
    _validate_architecture(depth, width_multiplier, groups, width_per_group)
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}; use one of {STEMS} ('cifar' for 32x32 images).")
    input_shape = _validate_input_shape(input_shape, stem)
    depth, groups, width_per_group = int(depth), int(groups), int(width_per_group)
    block, blocks_per_stage = DEPTHS[depth]
    if name is None:
        if groups > 1 or width_per_group != 64:
            name = f"resnext{depth}_{groups}x{width_per_group}d"
        else:
            name = f"resnet{depth}"
        if width_multiplier != 1:
            name += f"_w{width_multiplier:g}".replace(".", "p")

    builder = _Builder(sync_batch_norm, batch_norm_momentum, batch_norm_epsilon,
                       zero_init_residual)
    images = keras.Input(shape=input_shape, name="images")
    stem_filters = _scaled(64, width_multiplier)
    if stem == "imagenet":
        x = builder.conv(images, stem_filters, 7, 2, "stem_conv")
    else:
        x = builder.conv(images, stem_filters, 3, 1, "stem_conv")
    x = builder.batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem == "imagenet":
        # Zero padding equals -inf padding here: the inputs are >= 0 after the ReLU.
        x = keras.layers.ZeroPadding2D(padding=1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name="stem_pool")(x)

    for stage, (base_filters, num_blocks) in enumerate(zip(_STAGE_FILTERS, blocks_per_stage)):
        filters = _scaled(base_filters, width_multiplier)
        for index in range(num_blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            block_name = f"stage{stage + 1}_block{index + 1}"
            if block == "basic":
                x = _basic_block(builder, x, filters, strides, block_name)
            else:
                x = _bottleneck_block(builder, x, filters, strides, block_name, groups,
                                      width_per_group)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=name)
