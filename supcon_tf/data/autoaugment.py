"""AutoAugment (ImageNet policy) and RandAugment as data over the ops in `image_ops`.

Policies are tables of `(op name, probability, magnitude)`; `OPS` maps each name to a function
`(image, magnitude, seed) -> image` that turns the magnitude into the op's argument
(`magnitude_to_arg`) and, for geometric ops, draws the sign from the seed. Images are float32
`[H, W, C]` holding integers in [0, 255] (PIL's uint8 semantics; every op's output is rounded).

Magnitudes live on [0, MAX_MAGNITUDE] = [0, 10] (level = magnitude / 10) and every op grows
stronger with the magnitude, as in the AutoAugment paper's PIL code and torchvision:

| op | argument at level l | notes |
|---|---|---|
| ShearX/ShearY | shear 0.3 l, random sign | |
| TranslateX/Y | 0.45 l of the width/height, random sign | 150 px at 331 px, 100 px at 224 px |
| Rotate | 30 l degrees, random sign | |
| Posterize | keep 8 - round(4 l) bits | 8..4 bits (the TPU port keeps int(4 l) bits instead) |
| Solarize | threshold 256 (1 - l) | 256 = identity (the TPU port uses 256 l) |
| SolarizeAdd | add 110 l below 128 | RandAugment only |
| Color, Contrast, Brightness, Sharpness | factor 0.1 + 1.8 l | PIL enhance factors in [0.1, 1.9] |
| Cutout | half side 0.18 l of the shorter side, random centre, fill 128 | 40 px at 224 px |
| AutoContrast, Equalize, Invert | no magnitude | |

Keras' `RandAugment` layer is not used: it draws a random magnitude in [0, factor] instead of
the fixed M, ignores an explicit seed (its SeedGenerator is shared state, so parallel `tf.data`
maps are not reproducible), lacks Invert, Cutout and SolarizeAdd, and evaluates every op and
selects with `where` (11x the work). The ops it would run are the same Keras layers used here.
"""

import tensorflow as tf

from supcon_tf.data import image_ops

MAX_MAGNITUDE = 10.0

# The AutoAugment ImageNet policy (Cubuk et al. 2019, appendix): 25 sub-policies of two
# (op, probability, magnitude) steps; a sub-policy is drawn uniformly per image and each step
# fires with its probability. Magnitudes are the paper's discrete levels 0..9 (None for ops
# without one), mapped with level = magnitude / 10 as in the authors' TPU implementation.
AUTOAUGMENT_IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

# RandAugment's op list as in the TPU/EfficientNet code the paper's training used.
RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    "Cutout", "SolarizeAdd",
)


def magnitude_to_arg(name, magnitude):
    """The op's argument at `magnitude` (before any random sign); see the module table.

    Args:
        name: An op name in `OPS`.
        magnitude: float in [0, MAX_MAGNITUDE], a python number or a float32 scalar tensor.

    Returns:
        The argument (int bits for Posterize), a tensor when `magnitude` is one; None for ops
        without a magnitude.
    """
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    level = magnitude / MAX_MAGNITUDE if tf.is_tensor(magnitude) else float(magnitude) / 10.0
    if name in ("ShearX", "ShearY"):
        return 0.3 * level
    if name in ("TranslateX", "TranslateY"):
        return 0.45 * level  # fraction of the image side
    if name == "Rotate":
        return 30.0 * level
    if name == "Posterize":
        if isinstance(level, float):
            return 8 - int(round(4.0 * level))
        return 8 - tf.cast(tf.round(4.0 * level), tf.int32)
    if name == "Solarize":
        return 256.0 * (1.0 - level)
    if name == "SolarizeAdd":
        return 110.0 * level
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 0.1 + 1.8 * level
    if name == "Cutout":
        return 0.18 * level  # half side, fraction of the shorter side
    raise ValueError(f"Unknown augmentation op {name!r}; use one of {', '.join(sorted(OPS))}.")


def _signed(value, seed):
    """`value` with a random sign (+ or - with probability 1/2) drawn from `seed`."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, -value, value)


def _side(image, axis):
    return tf.cast(tf.shape(image)[axis], tf.float32)


def _cutout(image, magnitude, seed):
    shape = tf.shape(image)
    half = tf.cast(tf.round(magnitude_to_arg("Cutout", magnitude)
                            * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)), tf.int32)
    center = tf.random.stateless_uniform([2], seed, minval=0, maxval=2 ** 30, dtype=tf.int32)
    return image_ops.cutout(image, center[0] % shape[0], center[1] % shape[1], half)


# name -> f(image [H, W, C] float32 in [0, 255], magnitude: python float, seed [2]) -> image
OPS = {
    "AutoContrast": lambda image, m, seed: image_ops.autocontrast(image),
    "Equalize": lambda image, m, seed: image_ops.equalize(image),
    "Invert": lambda image, m, seed: image_ops.invert(image),
    "Rotate": lambda image, m, seed: image_ops.rotate(
        image, _signed(magnitude_to_arg("Rotate", m), seed)),
    "Posterize": lambda image, m, seed: image_ops.posterize(
        image, magnitude_to_arg("Posterize", m)),
    "Solarize": lambda image, m, seed: image_ops.solarize(image, magnitude_to_arg("Solarize", m)),
    "SolarizeAdd": lambda image, m, seed: image_ops.solarize_add(
        image, magnitude_to_arg("SolarizeAdd", m)),
    "Color": lambda image, m, seed: image_ops.color(image, magnitude_to_arg("Color", m)),
    "Contrast": lambda image, m, seed: image_ops.contrast(image, magnitude_to_arg("Contrast", m)),
    "Brightness": lambda image, m, seed: image_ops.brightness(
        image, magnitude_to_arg("Brightness", m)),
    "Sharpness": lambda image, m, seed: image_ops.sharpness(
        image, magnitude_to_arg("Sharpness", m)),
    "ShearX": lambda image, m, seed: image_ops.shear_x(
        image, _signed(magnitude_to_arg("ShearX", m), seed)),
    "ShearY": lambda image, m, seed: image_ops.shear_y(
        image, _signed(magnitude_to_arg("ShearY", m), seed)),
    "TranslateX": lambda image, m, seed: image_ops.translate_x(
        image, _signed(magnitude_to_arg("TranslateX", m) * _side(image, 1), seed)),
    "TranslateY": lambda image, m, seed: image_ops.translate_y(
        image, _signed(magnitude_to_arg("TranslateY", m) * _side(image, 0), seed)),
    "Cutout": _cutout,
}


def check_magnitude(magnitude, what="magnitude"):
    """Raises ValueError unless `magnitude` is a number in [0, MAX_MAGNITUDE]."""
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not (
            0.0 <= magnitude <= MAX_MAGNITUDE):
        raise ValueError(f"{what} must be a number in [0, {MAX_MAGNITUDE:g}], got {magnitude!r}; "
                         "the policies use the AutoAugment/RandAugment 0..10 scale (e.g. 9).")


def check_policy(policy):
    """Validates a policy table: sub-policies of `(op name in OPS, p in [0, 1], magnitude)`."""
    if not policy:
        raise ValueError("An AutoAugment policy needs at least one sub-policy, got an empty one.")
    for sub_policy in policy:
        for step in sub_policy:
            if len(step) != 3:
                raise ValueError(f"Policy step {step!r} must be (op name, probability, "
                                 "magnitude).")
            name, probability, magnitude = step
            if name not in OPS:
                raise ValueError(f"Unknown augmentation op {name!r}; use one of "
                                 f"{', '.join(sorted(OPS))}.")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"Probability of {name!r} must be in [0, 1], got "
                                 f"{probability!r}.")
            if magnitude is not None or magnitude_to_arg(name, 0.0) is not None:
                check_magnitude(magnitude, f"Magnitude of {name!r}")


def _quantize(image):
    """Rounds to uint8 levels in [0, 255], as PIL's uint8 images do after every op."""
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def apply_op(name, image, magnitude, seed):
    """Applies op `name` at `magnitude` (None for ops without one) to a [0, 255] image, rounded."""
    if magnitude is not None and not tf.is_tensor(magnitude):
        magnitude = float(magnitude)
    out = OPS[name](image, magnitude, seed)
    return tf.ensure_shape(_quantize(out), image.shape)


def autoaugment(image, seed, policy=AUTOAUGMENT_IMAGENET_POLICY):
    """AutoAugment: one uniformly drawn sub-policy, each step applied with its probability.

    The table becomes three `[num_sub_policies, steps]` tensors (op index, probability,
    magnitude); each step is one `switch_case` over the policy's distinct ops plus an identity
    branch taken when the step does not fire, so the graph holds each op once per step rather
    than once per sub-policy.

    Args:
        image: float32 `[H, W, C]` holding integers in [0, 255].
        seed: int `[2]` stateless seed.
        policy: Tuple of sub-policies, each a tuple of `(op name, probability, magnitude)`
            steps; shorter sub-policies are padded with steps that never fire.

    Returns:
        float32 `[H, W, C]` holding integers in [0, 255].
    """
    names = sorted({name for sub_policy in policy for name, _, _ in sub_policy})
    steps = max(len(sub_policy) for sub_policy in policy)
    padded = [tuple(sub_policy) + ((names[0], 0.0, None),) * (steps - len(sub_policy))
              for sub_policy in policy]
    op_index = tf.constant([[names.index(n) for n, _, _ in sub] for sub in padded], tf.int32)
    probability = tf.constant([[p for _, p, _ in sub] for sub in padded], tf.float32)
    magnitude = tf.constant([[0.0 if m is None else m for _, _, m in sub] for sub in padded],
                            tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * steps)
    choice = tf.random.stateless_uniform([], seeds[0], maxval=len(policy), dtype=tf.int32)
    out = image
    for step in range(steps):
        fire = tf.random.stateless_uniform([], seeds[1 + 2 * step]) < probability[choice, step]
        branch = tf.where(fire, op_index[choice, step], len(names))  # last branch: identity
        step_magnitude = magnitude[choice, step]
        op_seed = seeds[2 + 2 * step]
        branches = [lambda o=out, n=name: apply_op(n, o, step_magnitude, op_seed)
                    for name in names] + [lambda o=out: o]
        out = tf.ensure_shape(tf.switch_case(branch, branches), image.shape)
    return out


def randaugment(image, seed, num_ops=2, magnitude=9.0, ops=RANDAUGMENT_OPS,
                op_probability=1.0):
    """RandAugment: `num_ops` (N) ops drawn uniformly with replacement, all at magnitude M.

    Args:
        image: float32 `[H, W, C]` holding integers in [0, 255].
        seed: int `[2]` stateless seed.
        num_ops: N, the number of ops applied in sequence.
        magnitude: M in [0, 10], shared by every op.
        ops: Names of the candidate ops (default: the 16 of the TPU implementation).
        op_probability: Probability that each drawn op is applied (1.0 in the paper's code).

    Returns:
        float32 `[H, W, C]` holding integers in [0, 255].
    """
    seeds = tf.random.experimental.stateless_split(seed, 3 * max(num_ops, 1))
    out = image
    for i in range(num_ops):
        choice = tf.random.stateless_uniform([], seeds[3 * i], maxval=len(ops), dtype=tf.int32)
        fire = tf.random.stateless_uniform([], seeds[3 * i + 1]) < op_probability
        branch = tf.where(fire, choice, len(ops))  # last branch: identity
        op_seed = seeds[3 * i + 2]
        branches = [lambda o=out, n=name, s=op_seed: apply_op(n, o, magnitude, s)
                    for name in ops] + [lambda o=out: o]
        out = tf.ensure_shape(tf.switch_case(branch, branches), image.shape)
    return out
