"""Tests for supcon_tf.models.resnet.

Parameter counts are checked against independent figures: torchvision's published totals minus
their fc layer (trainable parameters: conv kernels + BN gamma/beta), `keras.applications.ResNet50`
minus its conv biases (which a conv followed by BN does not need), and a closed-form count
written here from the architecture tables of He et al. (2016) and Xie et al. (2017).
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.models import batch_norm
from supcon_tf.models import resnet

# torchvision totals (with the 1000-way fc) minus the fc (512 or 2048 inputs * 1000 + 1000).
_TORCHVISION_TRAINABLE = {
    18: 11_689_512 - 513_000,    # 11,176,512
    34: 21_797_672 - 513_000,    # 21,284,672
    50: 25_557_032 - 2_049_000,  # 23,508,032
    101: 44_549_160 - 2_049_000,
    152: 60_192_808 - 2_049_000,
}
_RESNEXT50_32X4D_TRAINABLE = 25_028_904 - 2_049_000  # torchvision resnext50_32x4d minus fc.


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _closed_form_trainable(depth, width=1, stem="imagenet", channels=3, groups=1,
                           width_per_group=64):
    """Counts conv kernels + BN (gamma, beta) from the architecture table, by hand."""
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
              152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}[depth]
    bottleneck = depth >= 50
    stem_out = int(64 * width)
    kernel = 7 if stem == "imagenet" else 3
    total = kernel * kernel * channels * stem_out + 2 * stem_out
    in_ch = stem_out
    for stage, n in enumerate(blocks):
        planes = int(64 * 2**stage * width)
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            if bottleneck:
                inner = int(planes * width_per_group / 64) * groups
                out = 4 * planes
                total += in_ch * inner + 2 * inner                          # 1x1
                total += 9 * (inner // groups) * inner + 2 * inner          # 3x3 grouped
                total += inner * out + 2 * out                              # 1x1
            else:
                out = planes
                total += 9 * in_ch * out + 2 * out + 9 * out * out + 2 * out
            if stride != 1 or in_ch != out:
                total += in_ch * out + 2 * out                              # projection
            in_ch = out
    return total


@functools.lru_cache(maxsize=None)
def _imagenet_model(depth):
    """One model per depth for the whole module (ResNet-200 takes seconds to build)."""
    return resnet.resnet(depth, input_shape=(32, 32, 3))


def _depths(depths):
    """Depths as pytest params; the deep ones take seconds each to build, so are marked slow."""
    return [pytest.param(d, marks=pytest.mark.slow) if d > 100 else d for d in depths]


@pytest.mark.parametrize("depth", _depths([18, 34, 50, 101, 152]))
def test_trainable_parameters_match_torchvision(depth):
    assert _trainable_count(_imagenet_model(depth)) == _TORCHVISION_TRAINABLE[depth]


@pytest.mark.parametrize("depth", _depths(sorted(resnet.DEPTHS)))
def test_trainable_parameters_match_closed_form(depth):
    assert _trainable_count(_imagenet_model(depth)) == _closed_form_trainable(depth)


def test_resnet50_matches_keras_applications_without_conv_biases():
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3))
    assert reference.count_params() == 23_587_712
    conv_biases = sum(int(np.prod(layer.bias.shape)) for layer in reference.layers
                      if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)
    ours = _imagenet_model(50)
    # Same layers and BN statistics; ours drops the biases of convs followed by BN.
    assert ours.count_params() == reference.count_params() - conv_biases
    assert _trainable_count(ours) == _trainable_count(reference) - conv_biases
    assert ours.output_shape == reference.output_shape == (None, 2048)


def test_resnext50_32x4d_parameters():
    model = resnet.resnet(50, input_shape=(32, 32, 3), groups=32, width_per_group=4)
    assert model.name == "resnext50_32x4d"
    assert _trainable_count(model) == _RESNEXT50_32X4D_TRAINABLE
    assert _trainable_count(model) == _closed_form_trainable(50, groups=32, width_per_group=4)
    grouped = [layer for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.groups == 32]
    assert len(grouped) == 16  # One per bottleneck block.


@pytest.mark.parametrize("depth", _depths(sorted(resnet.DEPTHS)))
def test_output_shape_each_depth(depth):
    model = _imagenet_model(depth)
    expected = 512 if depth < 50 else 2048
    assert model.output_shape == (None, expected)
    assert resnet.feature_dim(depth) == expected


@pytest.mark.parametrize("depth,stem,size,final_map", [
    (18, "imagenet", 32, 1),
    (18, "imagenet", 64, 2),
    (18, "cifar", 32, 4),
    (50, "cifar", 16, 2),
])
def test_forward_pass_shapes(depth, stem, size, final_map):
    model = resnet.resnet(depth, input_shape=(size, size, 3), stem=stem, width_multiplier=0.25)
    images = np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype("float32")
    features = model(images, training=False)
    assert features.shape == (2, resnet.feature_dim(depth, 0.25))
    assert np.all(np.isfinite(features))
    last_block = [layer for layer in model.layers if layer.name.endswith("_out")][-1]
    assert tuple(last_block.output.shape[1:3]) == (final_map, final_map)
    # The features are the spatial mean of the last block's output.
    trunk = keras.Model(model.input, last_block.output)
    np.testing.assert_allclose(
        features, np.mean(trunk(images, training=False), axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_dynamic_spatial_size():
    model = resnet.resnet(18, input_shape=(None, None, 3), stem="cifar", width_multiplier=0.125)
    for size in (8, 12):
        assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, 64)


@pytest.mark.parametrize("stem,size,stem_map", [("cifar", 32, 32), ("imagenet", 64, 16)])
def test_stem_resolution(stem, size, stem_map):
    model = resnet.resnet(18, input_shape=(size, size, 3), stem=stem, width_multiplier=0.25)
    stem_out = model.get_layer("stem_pool" if stem == "imagenet" else "stem_relu").output
    assert tuple(stem_out.shape) == (None, stem_map, stem_map, 16)
    assert tuple(model.get_layer("stem_conv").kernel.shape) == (
        (7, 7, 3, 16) if stem == "imagenet" else (3, 3, 3, 16))
    names = [layer.name for layer in model.layers]
    assert ("stem_pool" in names) == (stem == "imagenet")


@pytest.mark.parametrize("depth,width", [(18, 0.5), (18, 1.5), (50, 0.25), (50, 0.5)])
def test_width_multiplier(depth, width):
    model = resnet.resnet(depth, input_shape=(32, 32, 3), stem="cifar", width_multiplier=width)
    base = 512 if depth < 50 else 2048
    assert resnet.feature_dim(depth, width) == int(base * width)
    assert model.output_shape == (None, int(base * width))
    assert _trainable_count(model) == _closed_form_trainable(depth, width, stem="cifar")


def test_sync_batch_norm():
    plain = resnet.resnet(18, (32, 32, 3), stem="cifar", width_multiplier=0.125)
    synced = resnet.resnet(18, (32, 32, 3), stem="cifar", width_multiplier=0.125,
                           sync_batch_norm=True)
    for model, flag in ((plain, False), (synced, True)):
        batch_norms = [layer for layer in model.layers
                       if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(batch_norms) == 1 + 2 * 8 + 3  # stem, two per block, three shortcuts.
        assert all(layer.synchronized is flag for layer in batch_norms)
        assert all(layer.momentum == 0.9 and layer.epsilon == 1e-5 for layer in batch_norms)


def test_sync_batch_norm_uses_global_batch_statistics(two_cpu_strategy):
    """Training-mode features under two replicas equal one device on the whole batch."""
    images = np.random.default_rng(1).uniform(size=(8, 8, 8, 3)).astype("float32")
    kwargs = dict(input_shape=(8, 8, 3), stem="cifar", width_multiplier=0.125,
                  zero_init_residual=False)
    single = resnet.resnet(18, sync_batch_norm=False, **kwargs)
    expected = single(images, training=True).numpy()

    strategy = two_cpu_strategy
    with strategy.scope():
        synced = resnet.resnet(18, sync_batch_norm=True, **kwargs)
        unsynced = resnet.resnet(18, sync_batch_norm=False, **kwargs)
    synced.set_weights(single.get_weights())
    unsynced.set_weights(single.get_weights())

    def run(model):
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
        per_replica = strategy.run(tf.function(lambda x: model(x, training=True)), (batch,))
        return np.concatenate([t.numpy() for t in strategy.experimental_local_results(
            per_replica)])

    # Sync BN computes the variance as E[x^2] - E[x]^2, so float32 round-off (~1e-5 after 20
    # BNs) differs from the one-device path; local statistics differ by O(1).
    synced_error = np.max(np.abs(run(synced) - expected))
    unsynced_error = np.max(np.abs(run(unsynced) - expected))
    assert synced_error < 2e-4, synced_error
    assert unsynced_error > 0.05, unsynced_error


def test_zero_init_residual():
    model = resnet.resnet(50, (32, 32, 3), stem="cifar", width_multiplier=0.125)
    last_bn = model.get_layer("stage1_block1_bn3")
    np.testing.assert_array_equal(last_bn.gamma.numpy(), 0.0)
    np.testing.assert_array_equal(model.get_layer("stage1_block1_bn1").gamma.numpy(), 1.0)
    other = resnet.resnet(50, (32, 32, 3), stem="cifar", width_multiplier=0.125,
                          zero_init_residual=False)
    np.testing.assert_array_equal(other.get_layer("stage1_block1_bn3").gamma.numpy(), 1.0)


def test_keras_save_and_load(tmp_path):
    model = resnet.resnet(18, (16, 16, 3), stem="cifar", width_multiplier=0.125,
                          sync_batch_norm=True)
    # Non-trivial BN statistics and gammas, so a weight mix-up on reload would show.
    rng = np.random.default_rng(2)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "resnet.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.name == model.name
    np.testing.assert_array_equal(restored(images, training=False), model(images, training=False))
    assert all(layer.synchronized for layer in restored.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_numpy_integers_accepted():
    model = resnet.resnet(np.int64(18), input_shape=np.array([32, 32, 3]), stem="cifar",
                          width_multiplier=np.float32(0.125))
    assert model.name == "resnet18_w0p125" and model.output_shape == (None, 64)


def test_default_names():
    assert resnet.resnet(18, (32, 32, 3), width_multiplier=0.25).name == "resnet18_w0p25"
    assert resnet.resnet(18, (32, 32, 3), name="encoder", width_multiplier=0.25).name == "encoder"


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=20), r"Unknown ResNet depth 20; use one of \[18, 34, 50, 101, 152, 200\]"),
    (dict(depth="50"), r"Unknown ResNet depth '50'"),
    (dict(depth=50.0), r"Unknown ResNet depth 50.0"),
    (dict(depth=18, stem="tiny"), r"Unknown stem 'tiny'; use one of \('imagenet', 'cifar'\)"),
    (dict(depth=18, width_multiplier=0), r"width_multiplier must be a number > 0, got 0"),
    (dict(depth=18, width_multiplier=-1.5), r"got -1.5"),
    (dict(depth=18, input_shape=(16, 16, 3)),
     r"\(16, 16, 3\) is too small for stem='imagenet'.*>= 32.*stem='cifar'"),
    (dict(depth=18, input_shape=(4, 32, 3), stem="cifar"), r"too small for stem='cifar'.*>= 8"),
    (dict(depth=18, input_shape=(32, 32)), r"must be \(height, width, channels\)"),
    (dict(depth=18, input_shape=(32, 32, None)), r"known positive channel count"),
    (dict(depth=18, groups=32, width_per_group=4), r"needs bottleneck blocks.*depth >= 50"),
    (dict(depth=50, groups=0), r"groups must be a positive int, got 0"),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault("input_shape", (32, 32, 3))
    with pytest.raises(ValueError, match=match):
        resnet.resnet(**kwargs)


def test_feature_dim_bad_arguments():
    with pytest.raises(ValueError, match=r"Unknown ResNet depth 19"):
        resnet.feature_dim(19)
    with pytest.raises(ValueError, match=r"width_multiplier must be a number > 0"):
        resnet.feature_dim(50, width_multiplier=0)


def _with_stock_batch_norm(model):
    """The same network as built before the fused batch norm: every batch norm a stock
    `keras.layers.BatchNormalization` with the same config and weights."""
    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    old = keras.models.clone_model(model, clone_function=clone)
    old.set_weights(model.get_weights())
    return old


def _randomised(model, seed=2):
    """`model` with non-trivial weights and BN statistics, so a mix-up on reload would show."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def test_batch_norm_is_fused():
    model = resnet.resnet(18, (16, 16, 3), stem="cifar", width_multiplier=0.125)
    batch_norms = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(type(layer) is batch_norm.BatchNormalization
                               for layer in batch_norms)


def test_old_keras_file_loads_into_the_fused_resnet(tmp_path):
    """A `.keras` file of the stock-BN ResNet loads (as itself, and as weights of the new
    encoder) and gives the same features in inference and training mode."""
    kwargs = dict(input_shape=(16, 16, 3), stem="cifar", width_multiplier=0.125)
    old = _with_stock_batch_norm(_randomised(resnet.resnet(18, **kwargs)))
    assert not any(isinstance(layer, batch_norm.BatchNormalization)
                   for layer in old.layers)
    path = str(tmp_path / "old_resnet.keras")
    old.save(path)
    images = np.random.default_rng(3).uniform(size=(4, 16, 16, 3)).astype("float32")
    new = resnet.resnet(18, **kwargs)
    new.load_weights(path)
    reloaded = keras.models.load_model(path)
    for training in (False, True):
        want = old(images, training=training).numpy()
        np.testing.assert_allclose(new(images, training=training), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(reloaded(images, training=training), want, rtol=1e-4,
                                   atol=1e-4)


def test_old_checkpoint_restores_into_the_fused_resnet(tmp_path):
    kwargs = dict(input_shape=(16, 16, 3), stem="cifar", width_multiplier=0.125)
    old = _with_stock_batch_norm(_randomised(resnet.resnet(18, **kwargs)))
    path = tf.train.Checkpoint(encoder=old).write(str(tmp_path / "ckpt"))
    new = resnet.resnet(18, **kwargs)
    tf.train.Checkpoint(encoder=new).read(path).assert_consumed()
    assert [v.path for v in new.weights] == [v.path for v in old.weights]
    for got, want in zip(new.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(got, want)
