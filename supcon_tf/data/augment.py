"""The paper's augmentation policies as seeded, per-image `tf.data` transforms.

`build_augmenter(policy, image_size, **options)` returns an `Augmenter`: a callable
`augmenter(image, seed=None)` mapping one image (uint8 in [0, 255] or float in [0, 1],
`[H, W, C]`, C in {1, 3}) to float32 `[image_size, image_size, C]` in [0, 1]. With an explicit
int `[2]` seed the output is a pure function of (image, seed): every random choice comes from
`tf.random.stateless_*` draws on sub-seeds of it, so a parallel `Dataset.map` gives the same
images on every run, and two views with different seeds differ (`pipeline.py` hands each element
and view its own seed). Without a seed one is drawn from TensorFlow's global generator.

Policies (paper, Sec. 5 and the official configurations):

* "simaugment" (SimCLR's augmentation): random resized crop (area `crop_area`, aspect
  `aspect_ratio`, bicubic resize), horizontal flip, colour jitter with probability
  `jitter_probability` (0.8) whose four parts run in a random order, grayscale with probability
  `grayscale_probability` (0.2), Gaussian blur with probability `blur_probability` (0.5 for
  ImageNet, 0 for CIFAR). The jitter is PyTorch-style: brightness multiplies, contrast blends
  with the mean grey level, saturation with the grey image, hue rotates in HSV; factors are drawn
  in [max(0, 1 - x), 1 + x] (hue in [-x, x]) with (x_b, x_c, x_s, x_h) = `jitter_strength` *
  (0.8, 0.8, 0.8, 0.2), so the official "SimAugment 0.5" for CIFAR is PyTorch's
  ColorJitter(0.4, 0.4, 0.4, 0.1). Override the four with `jitter=(b, c, s, h)`.
* "autoaugment": crop + flip, then the AutoAugment ImageNet policy (`autoaugment.py`; another
  table of `(op, probability, magnitude)` sub-policies can be passed as `policy_table`).
* "randaugment": crop + flip, then RandAugment with N = `num_ops`, M = `magnitude`.
* "stacked_randaugment": crop + flip, RandAugment, then SimAugment's jitter, grayscale and blur
  (RandAugment inserted before SimAugment's colour jitter, as in the paper).
* "eval": resize the shorter side to `image_size / center_crop_fraction` (bicubic) and take
  the central `image_size` square; `center_crop_fraction` defaults to 0.875 (224 of 256,
  ImageNet), and an image already `image_size` square is returned as is (CIFAR, digits).

Which parts come from Keras 3.15 and which are written here:

* Used from Keras (their deterministic `transform_images`, fed our stateless draws; see
  `image_ops.py`): `RandomGrayscale` (grayscale), `RandomColorDegeneration` (saturation and
  AutoAugment's Color), `Solarization`, `RandomPosterization`, `RandomInvert`, `Equalization`,
  `AutoContrast`, `RandomShear`, `RandomTranslation`, `RandomRotation`.
* Written here, because Keras has no such op or its semantics differ from the paper's:
  the random resized crop (Keras `RandomCrop`/`RandomZoom` do not sample area and log-aspect);
  the colour jitter (`RandomColorJitter` runs its parts in a fixed order, `RandomBrightness`
  adds instead of multiplying, `RandomContrast` uses per-channel means); the Gaussian blur
  (`RandomGaussianBlur` zero-pads, darkening borders; SimCLR reflects, and its kernel is 10% of
  the image side); PIL-style brightness/contrast/sharpness, cutout and solarize-add; the
  AutoAugment policy table and the fixed-magnitude RandAugment (`autoaugment.py` says why
  Keras' `RandAugment` does not fit).
* Not used for seeded runs: any Keras layer's own random draw, because its `SeedGenerator`
  is a shared variable and parallel maps would make runs differ.
"""

import math

import tensorflow as tf

from supcon_tf.data import autoaugment
from supcon_tf.data import image_ops

POLICIES = ("simaugment", "autoaugment", "randaugment", "stacked_randaugment", "eval")

# Defaults per policy; every key can be overridden through build_augmenter(**options).
_CROP_DEFAULTS = dict(crop_area=(0.08, 1.0), aspect_ratio=(3.0 / 4.0, 4.0 / 3.0), flip=True)
_JITTER_DEFAULTS = dict(jitter_strength=1.0, jitter=None, jitter_probability=0.8,
                        grayscale_probability=0.2, blur_probability=0.0,
                        blur_sigma=(0.1, 2.0))
_DEFAULTS = {
    "simaugment": {**_CROP_DEFAULTS, **_JITTER_DEFAULTS},
    "autoaugment": {**_CROP_DEFAULTS, "policy_table": autoaugment.AUTOAUGMENT_IMAGENET_POLICY},
    "randaugment": {**_CROP_DEFAULTS, "num_ops": 2, "magnitude": 9.0, "op_probability": 1.0},
    "stacked_randaugment": {**_CROP_DEFAULTS, **_JITTER_DEFAULTS, "num_ops": 2,
                            "magnitude": 9.0, "op_probability": 1.0},
    "eval": {"center_crop_fraction": None},
}


def build_augmenter(policy, image_size, **options):
    """Builds the per-image transform of one augmentation policy.

    Args:
        policy: One of `POLICIES`.
        image_size: int S, the output side.
        **options: Policy options (see the module docstring), e.g. `crop_area=(0.2, 1.0)`,
            `jitter_strength=0.5`, `blur_probability=0.5`, `magnitude=9`, `num_ops=2`,
            `center_crop_fraction=0.875`. Options that do not apply to `policy` are an error.

    Returns:
        An `Augmenter`: `augmenter(image, seed=None)` -> float32 `[S, S, C]` in [0, 1].

    Raises:
        ValueError: Unknown policy or option, crop area outside (0, 1], magnitude outside
            [0, 10], a probability outside [0, 1], or a bad image size.
    """
    return Augmenter(policy, image_size, **options)


class Augmenter:
    """One policy's transform; see `build_augmenter`.

    Attributes:
        policy: The policy name.
        image_size: int, the output side.
        options: dict of every option in effect (defaults filled in).
    """

    def __init__(self, policy, image_size, **options):
        if policy not in POLICIES:
            raise ValueError(f"Unknown augmentation policy {policy!r}; use one of "
                             f"{', '.join(POLICIES)}.")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}; e.g. 32 "
                             "for CIFAR or 224 for ImageNet.")
        unknown = sorted(set(options) - set(_DEFAULTS[policy]))
        if unknown:
            raise ValueError(f"Unknown option(s) {', '.join(unknown)} for policy {policy!r}; "
                             f"it takes {', '.join(sorted(_DEFAULTS[policy])) or 'none'}.")
        self.policy = policy
        self.image_size = image_size
        self.options = {**_DEFAULTS[policy], **options}
        _validate_options(self.options)

    def get_config(self):
        """`build_augmenter(**config)` rebuilds this augmenter."""
        return {"policy": self.policy, "image_size": self.image_size, **self.options}

    @tf.autograph.experimental.do_not_convert  # Python control flow here is on static values
    def __call__(self, image, seed=None):
        """Augments one image.

        Args:
            image: uint8 `[H, W, C]` in [0, 255] or float `[H, W, C]` in [0, 1], C in {1, 3}.
            seed: Optional int32/int64 `[2]` stateless seed; None draws one.

        Returns:
            float32 `[image_size, image_size, C]` in [0, 1].

        Raises:
            ValueError: `image` is not rank 3 or has a channel count other than 1 or 3.
        """
        image = _to_float(image)
        if seed is None:
            seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)
        seed = tf.convert_to_tensor(seed)
        opts = self.options
        size = self.image_size
        if self.policy == "eval":
            out = center_crop(image, size, opts["center_crop_fraction"])
            return tf.clip_by_value(out, 0.0, 1.0)
        crop_seed, flip_seed, policy_seed, jitter_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4))
        out = random_resized_crop(image, crop_seed, size, opts["crop_area"],
                                  opts["aspect_ratio"])
        if opts["flip"]:
            out = tf.image.stateless_random_flip_left_right(out, flip_seed)
        out = tf.clip_by_value(out, 0.0, 1.0)  # bicubic resize overshoots
        if self.policy == "autoaugment":
            out = autoaugment.autoaugment(_to_255(out), policy_seed,
                                          opts["policy_table"]) / 255.0
        elif self.policy in ("randaugment", "stacked_randaugment"):
            out = autoaugment.randaugment(_to_255(out), policy_seed, opts["num_ops"],
                                          opts["magnitude"],
                                          op_probability=opts["op_probability"]) / 255.0
        if self.policy in ("simaugment", "stacked_randaugment"):
            out = _simclr_colour(out, jitter_seed, opts)
        return tf.ensure_shape(tf.clip_by_value(out, 0.0, 1.0), [size, size, image.shape[-1]])


def _check_pair(name, value, low, high, low_open=False):
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if ok:
        lo, hi = value
        ok = lo <= hi and (lo > low if low_open else lo >= low) and hi <= high
    if not ok:
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a pair (low, high) with low <= high inside {interval}, "
                         f"got {value!r}; e.g. {name}=(0.08, 1.0).")


def _check_probability(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")


def _validate_options(opts):
    if "crop_area" in opts:
        _check_pair("crop_area", opts["crop_area"], 0.0, 1.0, low_open=True)
        _check_pair("aspect_ratio", opts["aspect_ratio"], 0.0, math.inf, low_open=True)
    if "jitter_strength" in opts:
        strength = opts["jitter_strength"]
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
            raise ValueError(f"jitter_strength must be a number >= 0, got {strength!r}; the "
                             "paper uses 1.0 (ImageNet) and 0.5 (CIFAR).")
        jitter = opts["jitter"]
        if jitter is not None and (not isinstance(jitter, (tuple, list)) or len(jitter) != 4
                                   or any(j < 0 for j in jitter) or jitter[3] > 0.5):
            raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) >= 0 with "
                             f"hue <= 0.5, got {jitter!r}; e.g. (0.4, 0.4, 0.4, 0.1).")
        for name in ("jitter_probability", "grayscale_probability", "blur_probability"):
            _check_probability(name, opts[name])
        _check_pair("blur_sigma", opts["blur_sigma"], 0.0, math.inf, low_open=True)
    if "policy_table" in opts:
        autoaugment.check_policy(opts["policy_table"])
    if "magnitude" in opts:
        autoaugment.check_magnitude(opts["magnitude"])
        num_ops = opts["num_ops"]
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops (RandAugment's N) must be an int >= 0, got {num_ops!r}.")
        _check_probability("op_probability", opts["op_probability"])
    if "center_crop_fraction" in opts:
        fraction = opts["center_crop_fraction"]
        if fraction is not None and not (isinstance(fraction, (int, float))
                                         and 0 < fraction <= 1):
            raise ValueError(f"center_crop_fraction must be in (0, 1] or None, got "
                             f"{fraction!r}; ImageNet uses 0.875 (224 of 256).")


def _to_float(image):
    """uint8 [0, 255] or float [0, 1] `[H, W, C]` -> float32 [0, 1], checking rank and channels."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"Expected one image [H, W, C], got shape {image.shape}; map the "
                         "augmenter over a dataset of single images (unbatch first).")
    if image.shape[-1] not in (1, 3):
        raise ValueError(f"Expected 1 or 3 channels (channels last), got shape {image.shape}; "
                         "drop alpha with image[..., :3] or transpose channels-first images.")
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    if not image.dtype.is_floating:
        raise ValueError(f"Expected a uint8 or float image, got dtype {image.dtype.name}; "
                         "cast to uint8 (0..255) or float (0..1).")
    return tf.cast(image, tf.float32)


def _to_255(image):
    """[0, 1] float -> [0, 255] float holding integers (PIL's uint8 levels)."""
    return tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0)


# ----------------------------------------------------------------------------------------------
# Random resized crop and eval crop


def crop_window(height, width, seed, area_range, aspect_range, attempts=10):
    """Samples a crop window like torchvision's `RandomResizedCrop`.

    Up to `attempts` candidates (area fraction uniform in `area_range`, aspect ratio w/h
    log-uniform in `aspect_range`) are drawn at once; the first that fits is placed uniformly.
    If none fits, the largest centred window whose aspect ratio is clamped to the range is used.

    Args:
        height, width: int32 scalars, the image size.
        seed: int `[2]`.
        area_range: (low, high) fractions of the image area, 0 < low <= high <= 1.
        aspect_range: (low, high) width/height ratios.
        attempts: Number of candidates.

    Returns:
        `(top, left, crop_height, crop_width)` int32 scalars.
    """
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    areas = h * w * tf.random.stateless_uniform([attempts], area_seed, area_range[0],
                                                area_range[1])
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    ratios = tf.exp(tf.random.stateless_uniform([attempts], ratio_seed, log_lo, log_hi))
    crop_w = tf.round(tf.sqrt(areas * ratios))
    crop_h = tf.round(tf.sqrt(areas / ratios))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    # Fallback: whole image, aspect ratio clamped into the range, centred.
    ratio = w / h
    fallback_w = tf.where(ratio < aspect_range[0], w, tf.where(
        ratio > aspect_range[1], tf.round(h * aspect_range[1]), w))
    fallback_h = tf.where(ratio < aspect_range[0], tf.round(w / aspect_range[0]), h)
    any_fits = tf.reduce_any(fits)
    crop_h = tf.cast(tf.where(any_fits, crop_h[first], fallback_h), tf.int32)
    crop_w = tf.cast(tf.where(any_fits, crop_w[first], fallback_w), tf.int32)
    offsets = tf.random.stateless_uniform([2], offset_seed)
    random_top = tf.cast(offsets[0] * tf.cast(height - crop_h + 1, tf.float32), tf.int32)
    random_left = tf.cast(offsets[1] * tf.cast(width - crop_w + 1, tf.float32), tf.int32)
    top = tf.where(any_fits, tf.minimum(random_top, height - crop_h), (height - crop_h) // 2)
    left = tf.where(any_fits, tf.minimum(random_left, width - crop_w), (width - crop_w) // 2)
    return top, left, crop_h, crop_w


def random_resized_crop(image, seed, size, area_range=(0.08, 1.0),
                        aspect_range=(3.0 / 4.0, 4.0 / 3.0)):
    """Crops a random window (`crop_window`) and resizes it to `size` x `size` (bicubic).

    Args:
        image: float32 `[H, W, C]` in [0, 1].
        seed: int `[2]`.
        size: int, the output side.
        area_range: Area fractions, 0 < low <= high <= 1.
        aspect_range: Width/height ratios.

    Returns:
        float32 `[size, size, C]`; bicubic may overshoot [0, 1] slightly (callers clip).
    """
    shape = tf.shape(image)
    top, left, crop_h, crop_w = crop_window(shape[0], shape[1], seed, area_range, aspect_range)
    window = tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1]))
    resized = tf.image.resize(window, [size, size], method="bicubic", antialias=True)
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def center_crop(image, size, fraction=None):
    """Eval transform: resize the shorter side to `size / fraction`, take the centre square.

    Args:
        image: float32 `[H, W, C]` in [0, 1].
        size: int, the output side.
        fraction: Crop fraction in (0, 1]; None means 0.875 unless the image is already
            `size` x `size` (then it is returned unchanged: CIFAR, digits).

    Returns:
        float32 `[size, size, C]`.
    """
    if fraction is None:
        if image.shape[0] == size and image.shape[1] == size:
            return image
        fraction = 0.875
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    resize_to = float(size) / fraction
    scale = resize_to / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), size)
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bicubic", antialias=True)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    out = tf.slice(resized, tf.stack([top, left, 0]), [size, size, -1])
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


# ----------------------------------------------------------------------------------------------
# SimCLR colour distortion and blur ([0, 1] images)


def color_jitter(image, seed, brightness, contrast, saturation, hue):
    """PyTorch-style colour jitter, its four parts applied in a random order.

    Factors are drawn uniformly: brightness, contrast and saturation in
    [max(0, 1 - x), 1 + x], the hue shift in [-hue, hue] (fraction of the colour wheel). A
    part whose amount is 0 is the identity. Each part clips to [0, 1].

    Args:
        image: float32 `[H, W, C]` in [0, 1].
        seed: int `[2]`.
        brightness, contrast, saturation, hue: Jitter amounts (python floats).

    Returns:
        float32 `[H, W, C]` in [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def factor(amount, s):
        return tf.random.stateless_uniform([], s, max(0.0, 1.0 - amount), 1.0 + amount)

    colour = image.shape[-1] == 3
    parts = [
        lambda x: image_ops.brightness(x, factor(brightness, seeds[0]), 1.0),
        lambda x: image_ops.contrast(x, factor(contrast, seeds[1]), 1.0),
        lambda x: image_ops.color(x, factor(saturation, seeds[2]), 1.0) if colour else x,
        lambda x: (tf.image.adjust_hue(x, tf.random.stateless_uniform([], seeds[3], -hue, hue))
                   if colour and hue > 0 else x),
    ]
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[4]))
    out = image
    for position in range(4):
        out = tf.switch_case(order[position], [lambda p=p, o=out: p(o) for p in parts])
        out = tf.ensure_shape(out, image.shape)  # switch_case forgets the channel count
    return tf.clip_by_value(out, 0.0, 1.0)


def gaussian_blur(image, sigma, kernel_size):
    """Separable Gaussian blur with reflect padding (SimCLR).

    Args:
        image: float32 `[H, W, C]`.
        sigma: float scalar > 0.
        kernel_size: odd python int; the radius is `kernel_size // 2`.

    Returns:
        float32 `[H, W, C]`.
    """
    radius = kernel_size // 2
    if radius == 0:
        return image
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-0.5 * tf.square(x / tf.cast(sigma, tf.float32)))
    weights /= tf.reduce_sum(weights)
    channels = image.shape[-1]
    vertical = tf.tile(tf.reshape(weights, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(weights, [1, -1, 1, 1]), [1, 1, channels, 1])
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    out = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, horizontal, [1, 1, 1, 1], "VALID")
    return out[0]


def _apply_with_probability(probability, seed, fn, image):
    if probability <= 0:
        return image
    if probability >= 1:
        return fn(image)
    out = tf.cond(tf.random.stateless_uniform([], seed) < probability, lambda: fn(image),
                  lambda: image)
    return tf.ensure_shape(out, image.shape)


def _simclr_colour(image, seed, opts):
    """Jitter (p), grayscale (p), blur (p) of SimAugment on a [0, 1] `[S, S, C]` image."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    jitter = opts["jitter"] or tuple(opts["jitter_strength"] * x for x in (0.8, 0.8, 0.8, 0.2))
    jitter = tuple(float(j) for j in jitter)
    out = image
    if any(j > 0 for j in jitter):
        out = _apply_with_probability(opts["jitter_probability"], seeds[0],
                                      lambda x: color_jitter(x, seeds[1], *jitter), out)
    out = _apply_with_probability(opts["grayscale_probability"], seeds[2],
                                  image_ops.grayscale, out)
    size = image.shape[0]
    kernel_size = max(size // 10, 1) // 2 * 2 + 1  # SimCLR: 10% of the side, made odd
    low, high = opts["blur_sigma"]
    sigma = tf.random.stateless_uniform([], seeds[4], low, high)
    out = _apply_with_probability(opts["blur_probability"], seeds[3],
                                  lambda x: gaussian_blur(x, sigma, kernel_size), out)
    return out
