"""Tests for supcon_tf.data.augment, .autoaugment and .image_ops.

Each op is checked against a few lines of numpy on a tiny image with an exact answer; every
policy is checked for shape, dtype, range, seeded determinism and differing views.
"""

import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.data import augment
from supcon_tf.data import autoaugment
from supcon_tf.data import image_ops

RNG = np.random.default_rng(0)
SMALL_RGB = RNG.integers(0, 256, size=(20, 24, 3)).astype(np.uint8)
GRID = (np.arange(9, dtype=np.float32).reshape(3, 3, 1) * 10.0)  # [[0, 10, 20], ...]


def _tf(x):
    return tf.constant(np.asarray(x, np.float32))


# ----------------------------------------------------------------------------------------------
# Ops against numpy


def test_solarize_inverts_values_at_or_above_threshold():
    expected = np.where(GRID < 40, GRID, 255 - GRID)
    np.testing.assert_array_equal(image_ops.solarize(_tf(GRID), 40.0).numpy(), expected)


def test_posterize_keeps_high_bits():
    image = np.array([[[255.0], [130.0], [63.0], [64.0]]], np.float32)
    for bits in (1, 2, 4, 8):
        expected = (image.astype(np.uint8) >> (8 - bits)) << (8 - bits)
        np.testing.assert_array_equal(image_ops.posterize(_tf(image), bits).numpy(), expected)


def test_invert():
    np.testing.assert_array_equal(image_ops.invert(_tf(GRID)).numpy(), 255.0 - GRID)


def test_equalize_known_histogram():
    # Values 0 (x4), 100 (x2), 200 (x2): cdf = 4, 6, 8; cdf_min = 4, total 8, so
    # 0 -> 0, 100 -> round(255 * 2 / 4) = 128 (127.5 rounds to even), 200 -> 255.
    image = np.array([[0, 0, 0, 0], [100, 100, 200, 200]], np.float32)[..., None]
    expected = np.array([[0, 0, 0, 0], [128, 128, 255, 255]], np.float32)[..., None]
    np.testing.assert_array_equal(image_ops.equalize(_tf(image)).numpy(), expected)


def test_equalize_matches_numpy_cdf_per_channel():
    image = RNG.integers(0, 256, size=(6, 7, 3)).astype(np.float32)
    expected = np.empty_like(image)
    for c in range(3):
        channel = image[..., c].astype(int)
        cdf = np.cumsum(np.bincount(channel.ravel(), minlength=256))
        cdf_min = cdf[cdf > 0][0]
        lut = np.clip(np.round((cdf - cdf_min) * 255.0 / (cdf[-1] - cdf_min)), 0, 255)
        expected[..., c] = lut[channel]
    np.testing.assert_allclose(image_ops.equalize(_tf(image)).numpy(), expected)


def test_autocontrast_stretches_each_channel_and_keeps_flat_ones():
    image = np.stack([GRID[..., 0] + 50.0, np.full((3, 3), 7.0, np.float32)], -1)
    image = np.concatenate([image, GRID], axis=-1)  # 3 channels: 50..130, flat 7, 0..80
    low = image.min(axis=(0, 1))
    high = image.max(axis=(0, 1))
    expected = (image - low) * 255.0 / np.where(high > low, high - low, 1)
    expected[..., 1] = 7.0
    np.testing.assert_allclose(image_ops.autocontrast(_tf(image)).numpy(), expected, atol=1e-4)


def test_rotate_90_is_np_rot90():
    np.testing.assert_array_equal(image_ops.rotate(_tf(GRID), 90.0).numpy(),
                                  np.rot90(GRID, k=1))
    np.testing.assert_array_equal(image_ops.rotate(_tf(GRID), -90.0).numpy(),
                                  np.rot90(GRID, k=-1))


def test_shear_and_translate_exact():
    fill = image_ops.FILL_VALUE
    sheared = np.array([[0, 10, 20], [40, 50, fill], [80, fill, fill]], np.float32)[..., None]
    np.testing.assert_array_equal(image_ops.shear_x(_tf(GRID), 1.0).numpy(), sheared)
    shifted = np.full_like(GRID, fill)
    shifted[:, 1:] = GRID[:, :-1]
    np.testing.assert_array_equal(image_ops.translate_x(_tf(GRID), 1.0).numpy(), shifted)
    shifted = np.full_like(GRID, fill)
    shifted[:-1] = GRID[1:]
    np.testing.assert_array_equal(image_ops.translate_y(_tf(GRID), -1.0).numpy(), shifted)


def test_flip_is_identity_or_mirror():
    image = tf.constant(SMALL_RGB)
    seen = set()
    for s in range(8):
        out = tf.image.stateless_random_flip_left_right(image, [s, 0]).numpy()
        mirrored = np.array_equal(out, SMALL_RGB[:, ::-1])
        assert mirrored or np.array_equal(out, SMALL_RGB)
        seen.add(mirrored)
    assert seen == {True, False}


def test_colour_blends_against_numpy():
    image = RNG.uniform(0, 1, size=(4, 5, 3)).astype(np.float32)
    grey = image @ np.array([0.2989, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(image_ops.brightness(_tf(image), 1.5, 1.0).numpy(),
                               np.clip(image * 1.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(image_ops.contrast(_tf(image), 0.5, 1.0).numpy(),
                               np.clip(grey.mean() + 0.5 * (image - grey.mean()), 0, 1), atol=1e-5)
    np.testing.assert_allclose(image_ops.color(_tf(image), 0.3, 1.0).numpy(),
                               np.clip(grey[..., None] + 0.3 * (image - grey[..., None]), 0, 1),
                               atol=1e-5)
    np.testing.assert_allclose(image_ops.grayscale(_tf(image)).numpy(),
                               np.repeat(grey[..., None], 3, -1), atol=1e-5)


def test_sharpness_smooths_interior_and_keeps_border():
    image = RNG.integers(0, 256, size=(5, 6, 1)).astype(np.float32)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = image.copy()
    for i in range(1, 4):
        for j in range(1, 5):
            smooth[i, j, 0] = np.sum(image[i - 1:i + 2, j - 1:j + 2, 0] * kernel)
    for factor in (0.0, 0.5, 1.7):
        expected = np.clip(smooth + factor * (image - smooth), 0, 255)
        np.testing.assert_allclose(image_ops.sharpness(_tf(image), factor).numpy(), expected,
                                   atol=1e-3)


def test_cutout_and_solarize_add():
    out = image_ops.cutout(_tf(GRID), 0, 2, 1).numpy()[..., 0]
    expected = GRID[..., 0].copy()
    expected[0:1, 1:3] = image_ops.FILL_VALUE
    np.testing.assert_array_equal(out, expected)
    added = image_ops.solarize_add(_tf(GRID * 3), 100.0).numpy()
    np.testing.assert_array_equal(added, np.where(GRID * 3 < 128, np.minimum(GRID * 3 + 100, 255),
                                                  GRID * 3))


def test_gaussian_blur_matches_numpy_reflect_convolution():
    image = RNG.uniform(0, 1, size=(6, 7, 1)).astype(np.float32)
    sigma, radius = 0.8, 1
    x = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(image[..., 0], radius, mode="reflect")
    expected = np.zeros((6, 7), np.float32)
    for i in range(6):
        for j in range(7):
            expected[i, j] = np.sum(padded[i:i + 3, j:j + 3] * np.outer(w, w))
    out = augment.gaussian_blur(_tf(image), sigma, 3).numpy()[..., 0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_color_jitter_brightness_only_scales_by_one_factor_in_range():
    image = RNG.uniform(0.2, 0.6, size=(4, 4, 3)).astype(np.float32)
    for s in range(5):
        out = augment.color_jitter(_tf(image), [s, 1], 0.4, 0.0, 0.0, 0.0).numpy()
        ratio = out / image
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)
        assert 0.6 - 1e-6 <= ratio.flat[0] <= 1.4 + 1e-6


def test_color_jitter_order_is_random():
    # With brightness and contrast only, the output is contrast(brightness(x)) or
    # brightness(contrast(x)) with the factors drawn from sub-seeds 0 and 1; both orders occur.
    image = RNG.uniform(0, 1, size=(4, 4, 3)).astype(np.float32)
    grey_mean = lambda x: (x @ np.array([0.2989, 0.587, 0.114], np.float32)).mean()
    bright = lambda x, f: np.clip(x * f, 0, 1)
    contr = lambda x, f: np.clip(grey_mean(x) + f * (x - grey_mean(x)), 0, 1)
    orders = set()
    for s in range(12):
        seeds = tf.random.experimental.stateless_split(tf.constant([s, 2], tf.int64), 5)
        b = float(tf.random.stateless_uniform([], seeds[0], 0.2, 1.8))
        c = float(tf.random.stateless_uniform([], seeds[1], 0.2, 1.8))
        out = augment.color_jitter(_tf(image), tf.constant([s, 2], tf.int64), 0.8, 0.8, 0.0,
                                   0.0).numpy()
        brightness_first = contr(bright(image, b), c)
        contrast_first = bright(contr(image, c), b)
        if np.allclose(out, brightness_first, atol=1e-5):
            orders.add("brightness first")
        else:
            np.testing.assert_allclose(out, contrast_first, atol=1e-5)
            orders.add("contrast first")
    assert orders == {"brightness first", "contrast first"}


def test_crop_window_respects_area_and_bounds():
    for s in range(40):
        top, left, h, w = (int(v) for v in augment.crop_window(
            tf.constant(50), tf.constant(60), tf.constant([s, 3]), (0.2, 0.6), (0.75, 4 / 3)))
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 60
        assert 0.2 * 3000 * 0.9 <= h * w <= 0.6 * 3000 * 1.1  # rounding of the sides


def test_crop_window_falls_back_to_centre_crop():
    # No candidate can fit: a 100x10 image with aspect ratios 1..1 and area 0.9..1.
    top, left, h, w = (int(v) for v in augment.crop_window(
        tf.constant(100), tf.constant(10), tf.constant([1, 1]), (0.9, 1.0), (1.0, 1.0)))
    assert (h, w) == (10, 10) and (top, left) == (45, 0)


# ----------------------------------------------------------------------------------------------
# Policy tables


def test_autoaugment_imagenet_table_has_25_two_op_sub_policies():
    table = autoaugment.AUTOAUGMENT_IMAGENET_POLICY
    assert len(table) == 25
    assert all(len(sub) == 2 for sub in table)
    autoaugment.check_policy(table)
    assert table[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert table[-1] == (("Equalize", 0.8, None), ("Equalize", 0.6, None))


def test_randaugment_op_list_and_zero_magnitude_identities():
    assert len(autoaugment.RANDAUGMENT_OPS) == 16
    assert set(autoaugment.RANDAUGMENT_OPS) <= set(autoaugment.OPS)
    image = _tf(np.round(RNG.uniform(0, 255, size=(8, 8, 3))))
    for name in ("Rotate", "ShearX", "TranslateY", "Posterize", "Solarize", "SolarizeAdd",
                 "Cutout"):
        out = autoaugment.apply_op(name, image, 0.0, tf.constant([1, 2]))
        np.testing.assert_array_equal(out.numpy(), image.numpy(), err_msg=name)
    assert autoaugment.magnitude_to_arg("Posterize", 10) == 4
    assert autoaugment.magnitude_to_arg("Rotate", 10) == 30.0
    assert autoaugment.magnitude_to_arg("Color", 5) == pytest.approx(1.0)


def test_randaugment_applies_exactly_the_drawn_op():
    image = _tf(np.round(RNG.uniform(0, 255, size=(6, 6, 3))))
    out = autoaugment.randaugment(image, tf.constant([4, 4]), num_ops=1, magnitude=5,
                                  ops=("Invert",))
    np.testing.assert_array_equal(out.numpy(), 255.0 - image.numpy())
    out = autoaugment.randaugment(image, tf.constant([4, 4]), num_ops=2, magnitude=5,
                                  ops=("Invert",), op_probability=0.0)
    np.testing.assert_array_equal(out.numpy(), image.numpy())


# ----------------------------------------------------------------------------------------------
# Policies end to end


@pytest.mark.parametrize("policy", augment.POLICIES)
@pytest.mark.parametrize("channels", [3, 1])
def test_policy_shape_dtype_range_and_determinism(policy, channels):
    augmenter = augment.build_augmenter(policy, 16)
    image = SMALL_RGB[..., :channels]
    out = augmenter(image, tf.constant([5, 6]))
    assert out.shape == (16, 16, channels) and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    np.testing.assert_array_equal(out.numpy(), augmenter(image, tf.constant([5, 6])).numpy())
    float_out = augmenter(image.astype(np.float32) / 255.0, tf.constant([5, 6]))
    np.testing.assert_allclose(float_out.numpy(), out.numpy(), atol=1e-5)


@pytest.mark.parametrize("policy", ["simaugment", "autoaugment", "randaugment",
                                    "stacked_randaugment"])
def test_two_views_differ(policy):
    augmenter = augment.build_augmenter(policy, 16)
    a = augmenter(SMALL_RGB, tf.constant([1, 0])).numpy()
    b = augmenter(SMALL_RGB, tf.constant([2, 0])).numpy()
    assert np.abs(a - b).mean() > 1e-3


def test_seeded_parallel_map_is_reproducible():
    augmenter = augment.build_augmenter("simaugment", 12, blur_probability=0.5)
    images = np.repeat(SMALL_RGB[None], 16, axis=0)

    def run():
        ds = tf.data.Dataset.from_tensor_slices((images, np.arange(16, dtype=np.int64)))
        ds = ds.map(lambda x, i: augmenter(x, tf.stack([i, tf.constant(9, tf.int64)])),
                    num_parallel_calls=4, deterministic=True)
        return np.stack(list(ds.as_numpy_iterator()))

    first, second = run(), run()
    np.testing.assert_array_equal(first, second)
    assert np.abs(first[0] - first[1]).mean() > 1e-3


def test_unseeded_call_and_config_round_trip():
    augmenter = augment.build_augmenter("simaugment", 8, jitter_strength=0.5,
                                        crop_area=(0.2, 1.0))
    assert augmenter(SMALL_RGB).shape == (8, 8, 3)
    again = augment.build_augmenter(**augmenter.get_config())
    assert again.get_config() == augmenter.get_config()


def test_simaugment_without_distortions_is_a_resize():
    augmenter = augment.build_augmenter(
        "simaugment", 20, crop_area=(1.0, 1.0), aspect_ratio=(1.2, 1.2), flip=False,
        jitter_strength=0.0, grayscale_probability=0.0)
    out = augmenter(SMALL_RGB, tf.constant([0, 0])).numpy()
    expected = tf.image.resize(SMALL_RGB / 255.0, [20, 20], "bicubic", antialias=True).numpy()
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-5)


def test_eval_identity_for_cifar_sizes_and_centre_crop_otherwise():
    image = RNG.integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    out = augment.build_augmenter("eval", 16)(image).numpy()
    np.testing.assert_allclose(out, image / 255.0, atol=1e-6)
    tall = RNG.integers(0, 256, size=(32, 16, 3)).astype(np.uint8)
    out = augment.build_augmenter("eval", 8, center_crop_fraction=0.5)(tall)
    # Shorter side 16 -> 16 (no resize), centre 8x8 of the 32x16 image.
    np.testing.assert_allclose(out.numpy(), tall[12:20, 4:12] / 255.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("policy, options, match", [
    ("simclr", {}, "Unknown augmentation policy 'simclr'"),
    ("simaugment", {"crop_area": (0.0, 1.0)}, r"crop_area .*\(0, 1\]"),
    ("simaugment", {"crop_area": (0.5, 1.5)}, r"crop_area .*\(0.5, 1.5\)"),
    ("autoaugment", {"crop_area": (0.9, 0.1)}, "crop_area"),
    ("randaugment", {"magnitude": 11}, r"magnitude must be a number in \[0, 10\], got 11"),
    ("stacked_randaugment", {"magnitude": -1}, "got -1"),
    ("randaugment", {"num_ops": -2}, "num_ops"),
    ("simaugment", {"blur_probability": 1.5}, "blur_probability must be a probability"),
    ("simaugment", {"jitter_strength": -1}, "jitter_strength must be a number >= 0"),
    ("eval", {"crop_area": (0.2, 1.0)}, "Unknown option.*crop_area.*'eval'"),
    ("autoaugment", {"policy_table": ((("Rotate", 0.5, 12),),)}, "Magnitude of 'Rotate'"),
    ("autoaugment", {"policy_table": ((("Blur", 0.5, 1),),)}, "Unknown augmentation op 'Blur'"),
])
def test_bad_options_raise(policy, options, match):
    with pytest.raises(ValueError, match=match):
        augment.build_augmenter(policy, 16, **options)


def test_bad_image_size_raises():
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        augment.build_augmenter("simaugment", 0)


@pytest.mark.parametrize("image, match", [
    (np.zeros((4, 4), np.uint8), r"Expected one image \[H, W, C\], got shape \(4, 4\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"got shape \(2, 4, 4, 3\)"),
    (np.zeros((4, 4, 4), np.uint8), r"Expected 1 or 3 channels .* \(4, 4, 4\)"),
    (np.zeros((4, 4, 3), np.int32), "uint8 or float image, got dtype int32"),
])
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        augment.build_augmenter("simaugment", 8)(image)
