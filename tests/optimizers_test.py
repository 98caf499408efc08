"""Tests for supcon_tf.optimizers: LARS and build_optimizer.

Expected values come from numpy re-implementations written from the definitions in
reference/paper.md (LARS) and the Keras/TF1 update rules, never from the code under test.
"""

import copy
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import optimizers
from supcon_tf import schedules


# --------------------------------------------------------------------------------------------
# Independent numpy references.


def lars_reference(weights, gradients, learning_rates, *, momentum, weight_decay, eta,
                   nesterov, decay, adapt):
    """LARS from the paper's definition, one variable, float64.

    g <- g + wd*w (if decay); trust = eta*||w||/||g|| (1 if a norm is 0 or not adapt);
    v <- m*v + lr*trust*g; w <- w - v (Nesterov: w <- w - (m*v + lr*trust*g)).
    """
    w = np.array(weights, dtype=np.float64)
    v = np.zeros_like(w)
    for g, lr in zip(gradients, learning_rates):
        g = np.array(g, dtype=np.float64)
        if decay:
            g = g + weight_decay * w
        trust = 1.0
        if adapt:
            w_norm = np.sqrt(np.sum(w * w))
            g_norm = np.sqrt(np.sum(g * g))
            if w_norm > 0 and g_norm > 0:
                trust = eta * w_norm / g_norm
        v = momentum * v + lr * trust * g
        if nesterov:
            w = w - (momentum * v + lr * trust * g)
        else:
            w = w - v
    return w, v


def momentum_l2_reference(w, gradients, lr, momentum, wd, nesterov):
    w = np.array(w, dtype=np.float64)
    v = np.zeros_like(w)
    for g in gradients:
        g = g + wd * w
        v = momentum * v - lr * g
        w = w + (momentum * v - lr * g if nesterov else v)
    return w


def rmsprop_l2_reference(w, gradients, lr, rho, momentum, epsilon, wd):
    w = np.array(w, dtype=np.float64)
    mean_square = np.zeros_like(w)
    v = np.zeros_like(w)
    for g in gradients:
        g = g + wd * w
        mean_square = rho * mean_square + (1 - rho) * g * g
        v = momentum * v + lr * g / np.sqrt(mean_square + epsilon)
        w = w - v
    return w


def adam_reference(w, gradients, lr, wd, coupled, decay=True, beta_1=0.9, beta_2=0.999,
                   epsilon=1e-7):
    w = np.array(w, dtype=np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(gradients, start=1):
        if decay and coupled:
            g = g + wd * w
        if decay and not coupled:
            w = w - lr * wd * w  # Keras decays before the Adam step.
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


# --------------------------------------------------------------------------------------------
# Helpers.


def _random(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _run_steps(optimizer, variables, gradients_per_step):
    for gradients in gradients_per_step:
        optimizer.apply([tf.constant(g) for g in gradients], variables)


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, activation="tanh", name="encoder"),
        keras.layers.Dense(3, name="head"),
    ], name="net")


def _regression_data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.normal(size=(n, 3)).astype(np.float32)
    return x, y


def _lars(**kwargs):
    defaults = dict(learning_rate=0.5, momentum=0.9, weight_decay=0.01, eta=0.01)
    defaults.update(kwargs)
    return optimizers.LARS(**defaults)


def _fit(model, optimizer, epochs=2, **compile_kwargs):
    """Compiles and fits on `_regression_data` (two steps per epoch); returns the weights."""
    x, y = _regression_data()
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    model.fit(x, y, batch_size=len(x) // 2, epochs=epochs, shuffle=False, verbose=0)
    return [w.numpy() for w in model.trainable_weights]


# --------------------------------------------------------------------------------------------
# LARS update rule against the numpy reference.


LARS_CASES = [
    # name, kernel_scale, options, decay/adapt expected for (kernel, bias)
    ("kernel_decay_adaptation", 1.0, dict(weight_decay=0.01)),
    ("no_momentum", 1.0, dict(momentum=0.0, weight_decay=0.01)),
    ("nesterov", 1.0, dict(nesterov=True, weight_decay=0.01)),
    ("no_decay", 1.0, dict(weight_decay=0.0)),
    ("zero_norm_weights", 0.0, dict(weight_decay=0.01)),
]


@pytest.mark.parametrize("name,kernel_scale,options", LARS_CASES, ids=[c[0] for c in LARS_CASES])
def test_lars_matches_reference(name, kernel_scale, options):
    del name
    kernel = keras.Variable(_random((3, 4), 0, kernel_scale), name="kernel")
    bias = keras.Variable(_random((4,), 1), name="bias")
    initial = [kernel.numpy(), bias.numpy()]
    grads = [[_random((3, 4), 10 + s), _random((4,), 20 + s)] for s in range(4)]
    settings = dict(learning_rate=0.5, momentum=0.9, eta=0.01, nesterov=False)
    settings.update(options)
    optimizer = optimizers.LARS(**settings)
    _run_steps(optimizer, [kernel, bias], grads)

    lr = [settings["learning_rate"]] * len(grads)
    common = dict(momentum=settings["momentum"], weight_decay=settings["weight_decay"],
                  eta=settings["eta"], nesterov=settings["nesterov"])
    # Kernel (2-D): decay and adaptation. Bias (1-D): excluded from both by default.
    kernel_ref, kernel_v = lars_reference(initial[0], [g[0] for g in grads], lr, decay=True,
                                          adapt=True, **common)
    bias_ref, bias_v = lars_reference(initial[1], [g[1] for g in grads], lr, decay=False,
                                      adapt=False, **common)
    np.testing.assert_allclose(kernel.numpy(), kernel_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), bias_ref, rtol=1e-5, atol=1e-6)
    if settings["momentum"] > 0:
        slots = optimizer.momentums
        np.testing.assert_allclose(slots[0].numpy(), kernel_v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(slots[1].numpy(), bias_v, rtol=1e-5, atol=1e-6)


def test_lars_golden_one_step():
    # w = [3, 4] (||w|| = 5), g = [0.6, 0.8] (||g|| = 1), eta = 0.1, lr = 1, no decay:
    # trust = 0.1 * 5 / 1 = 0.5, v = 1 * 0.5 * g = [0.3, 0.4], w = [2.7, 3.6].
    w = keras.Variable(np.array([[3.0, 4.0]], np.float32))
    optimizer = optimizers.LARS(1.0, momentum=0.9, eta=0.1)
    optimizer.apply([tf.constant([[0.6, 0.8]])], [w])
    np.testing.assert_allclose(w.numpy(), [[2.7, 3.6]], rtol=1e-6)
    # Second step, same g: trust = 0.1 * ||[2.7, 3.6]|| / 1 = 0.45;
    # v = 0.9 * [0.3, 0.4] + 0.45 * [0.6, 0.8] = [0.54, 0.72]; w = [2.16, 2.88].
    optimizer.apply([tf.constant([[0.6, 0.8]])], [w])
    np.testing.assert_allclose(w.numpy(), [[2.16, 2.88]], rtol=1e-6)


def test_lars_zero_gradient_keeps_trust_one():
    # g = 0 and no decay: ||g|| = 0, trust = 1, the update is m*v (no NaN from 0/0).
    w = keras.Variable(_random((2, 3), 0))
    initial = w.numpy()
    optimizer = optimizers.LARS(0.1, momentum=0.9, eta=0.01)
    _run_steps(optimizer, [w], [[np.zeros((2, 3), np.float32)]] * 2)
    np.testing.assert_array_equal(w.numpy(), initial)
    assert np.all(np.isfinite(optimizer.momentums[0].numpy()))


def test_lars_with_schedule_matches_reference():
    schedule = schedules.WarmupCosineDecay(1.0, total_steps=6, warmup_steps=2)
    kernel = keras.Variable(_random((4, 2), 3), name="kernel")
    initial = kernel.numpy()
    grads = [[_random((4, 2), 30 + s)] for s in range(5)]
    optimizer = optimizers.LARS(schedule, momentum=0.9, weight_decay=1e-3, eta=0.01)
    _run_steps(optimizer, [kernel], grads)
    # Keras evaluates the schedule at the iteration count before the update (0, 1, 2, ...).
    lr = [0.0, 0.5, 1.0, 0.5 * (1 + np.cos(np.pi * 1 / 4)), 0.5]
    expected, _ = lars_reference(initial, [g[0] for g in grads], lr, momentum=0.9,
                                 weight_decay=1e-3, eta=0.01, nesterov=False, decay=True,
                                 adapt=True)
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_lars_exclusions_by_path_regex():
    model = _small_model()
    encoder_kernel, encoder_bias, head_kernel, head_bias = model.trainable_weights
    # Keras 3: `.path` is the layer path, `.name` only the short name.
    assert (head_kernel.path, head_kernel.name) == ("net/head/kernel", "kernel")
    initial = [w.numpy() for w in model.trainable_weights]
    grads = [[_random(w.shape, 40 + 4 * s + i) for i, w in enumerate(model.trainable_weights)]
             for s in range(3)]
    # Head excluded from decay; adaptation: None -> follows decay.
    optimizer = _lars(exclude_from_weight_decay=[r"(^|/)head/"])
    _run_steps(optimizer, model.trainable_weights, grads)
    lr = [0.5] * 3
    common = dict(momentum=0.9, weight_decay=0.01, eta=0.01, nesterov=False)
    flags = [(True, True), (True, True), (False, False), (False, False)]
    for i, (variable, (decay, adapt)) in enumerate(zip(model.trainable_weights, flags)):
        expected, _ = lars_reference(initial[i], [g[i] for g in grads], lr, decay=decay,
                                     adapt=adapt, **common)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=variable.path)
    del encoder_kernel, encoder_bias, head_bias


def test_lars_separate_adaptation_exclusions():
    kernel = keras.Variable(_random((3, 3), 5), name="kernel")
    bias = keras.Variable(_random((3,), 6), name="bias")
    initial = [kernel.numpy(), bias.numpy()]
    grads = [[_random((3, 3), 50 + s), _random((3,), 60 + s)] for s in range(3)]
    # Nothing excluded from adaptation; the default (rank <= 1) rule still for decay.
    optimizer = _lars(exclude_from_layer_adaptation=[])
    _run_steps(optimizer, [kernel, bias], grads)
    common = dict(momentum=0.9, weight_decay=0.01, eta=0.01, nesterov=False)
    kernel_ref, _ = lars_reference(initial[0], [g[0] for g in grads], [0.5] * 3, decay=True,
                                   adapt=True, **common)
    bias_ref, _ = lars_reference(initial[1], [g[1] for g in grads], [0.5] * 3, decay=False,
                                 adapt=True, **common)
    np.testing.assert_allclose(kernel.numpy(), kernel_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), bias_ref, rtol=1e-5, atol=1e-6)


def test_lars_does_not_use_base_weight_decay():
    optimizer = _lars(weight_decay=0.5)
    assert optimizer.weight_decay is None  # The base class' decoupled decay stays off.
    assert optimizer.get_config()["weight_decay"] == 0.5


# --------------------------------------------------------------------------------------------
# TensorFlow fast path (fused training kernels) against the keras.ops path.


FUSED_CASES = [
    ("decay_adaptation", 1.0, dict(weight_decay=0.01)),
    ("no_momentum", 1.0, dict(momentum=0.0, weight_decay=0.01)),
    ("nesterov", 1.0, dict(nesterov=True, weight_decay=0.01)),
    ("no_decay", 1.0, dict(weight_decay=0.0)),
    ("zero_norm_weights", 0.0, dict(weight_decay=0.01)),
    ("epsilon_all_adapted", 1.0, dict(weight_decay=0.01, epsilon=1e-3,
                                      exclude_from_layer_adaptation=[])),
]


def _spy_paths(monkeypatch):
    """Counts the calls of LARS' two update implementations."""
    calls = {"tf": 0, "ops": 0}
    for key, name in (("tf", "_update_step_tf"), ("ops", "_update_step_ops")):
        original = getattr(optimizers.LARS, name)

        def spy(self, *args, _original=original, _key=key):
            calls[_key] += 1
            return _original(self, *args)

        monkeypatch.setattr(optimizers.LARS, name, spy)
    return calls


def _lars_run(fused, options, kernel_scale, graph, steps=4):
    kernel = keras.Variable(_random((5, 4), 0, kernel_scale), name="kernel")
    bias = keras.Variable(_random((4,), 1), name="bias")
    settings = dict(learning_rate=schedules.WarmupCosineDecay(0.5, total_steps=6,
                                                              warmup_steps=2),
                    momentum=0.9, eta=0.01)
    settings.update(options)
    optimizer = optimizers.LARS(**settings)
    optimizer.use_fused_kernels = fused
    variables = [kernel, bias]
    grads = [[tf.constant(_random((5, 4), 10 + s)), tf.constant(_random((4,), 20 + s))]
             for s in range(steps)]
    optimizer.build(variables)

    def apply(step_grads):
        optimizer.apply(step_grads, variables)

    if graph:
        apply = tf.function(apply)
    for step_grads in grads:
        apply(step_grads)
    return [v.numpy() for v in variables], [m.numpy() for m in optimizer.momentums]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("name,kernel_scale,options", FUSED_CASES,
                         ids=[c[0] for c in FUSED_CASES])
def test_lars_fused_tf_path_equals_ops_path(monkeypatch, name, kernel_scale, options, graph):
    del name
    calls = _spy_paths(monkeypatch)
    fused_weights, fused_slots = _lars_run(True, options, kernel_scale, graph)
    assert calls["tf"] > 0 and calls["ops"] == 0
    calls.update(tf=0, ops=0)
    ops_weights, ops_slots = _lars_run(False, options, kernel_scale, graph)
    assert calls["ops"] > 0 and calls["tf"] == 0
    assert len(fused_slots) == len(ops_slots)
    for got, expected in zip(fused_weights + fused_slots, ops_weights + ops_slots):
        # Only the order of the norms' float32 sums differs.
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_lars_fused_path_not_used_under_xla(monkeypatch):
    calls = _spy_paths(monkeypatch)
    model = _small_model()
    _fit(model, _lars(), epochs=1, jit_compile=True)
    assert calls["ops"] > 0 and calls["tf"] == 0
    calls.update(tf=0, ops=0)
    _fit(_small_model(), _lars(), epochs=1, jit_compile=False)
    assert calls["tf"] > 0 and calls["ops"] == 0


def test_lars_fused_path_not_part_of_config():
    optimizer = _lars()
    optimizer.use_fused_kernels = False
    assert "use_fused_kernels" not in optimizer.get_config()
    assert optimizers.LARS.from_config(optimizer.get_config()).use_fused_kernels


# --------------------------------------------------------------------------------------------
# Serialisation.


@pytest.mark.parametrize("learning_rate", [
    0.3, schedules.WarmupCosineDecay(0.3, total_steps=100, warmup_steps=10)],
    ids=["float", "schedule"])
def test_lars_config_round_trip(learning_rate):
    optimizer = optimizers.LARS(learning_rate, momentum=0.8, weight_decay=1e-4, eta=0.002,
                                nesterov=True, exclude_from_weight_decay=["bn", "bias"],
                                exclude_from_layer_adaptation=["bn"], epsilon=1e-9,
                                clipnorm=1.0)
    config = optimizer.get_config()
    # Keras' from_config deserialises a schedule in place, hence the copy.
    restored = optimizers.LARS.from_config(copy.deepcopy(config))
    assert restored.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, optimizers.LARS)
    assert revived.get_config() == config


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
def test_built_optimizer_config_round_trip(name):
    optimizer = optimizers.build_optimizer(name, 0.1, 1e-4, exclude_from_weight_decay=["bias"])
    config = optimizer.get_config()
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(revived) is type(optimizer)
    assert revived.get_config() == config


def test_lars_slots_saved_and_restored_by_checkpoint(tmp_path):
    model = _small_model()
    optimizer = _lars()
    _fit(model, optimizer, epochs=1)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    fresh_model = _small_model(seed=7)
    fresh_optimizer = _lars()
    fresh_optimizer.build(fresh_model.trainable_variables)
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh_optimizer).restore(
        path).assert_existing_objects_matched()
    for slot, fresh_slot in zip(optimizer.momentums, fresh_optimizer.momentums):
        assert np.any(slot.numpy() != 0)
        np.testing.assert_array_equal(fresh_slot.numpy(), slot.numpy())
    assert int(fresh_optimizer.iterations) == int(optimizer.iterations) == 2

    # Training on from the restored state follows the original run exactly.
    continued = _fit(model, optimizer, epochs=1)
    resumed = _fit(fresh_model, fresh_optimizer, epochs=1)
    for a, b in zip(continued, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_lars_model_saved_to_keras_file(tmp_path):
    model = _small_model()
    schedule = schedules.WarmupExponentialDecay(0.5, decay_steps=2.5, warmup_steps=1)
    _fit(model, optimizers.LARS(schedule, weight_decay=1e-3, eta=0.01), epochs=1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.optimizer, optimizers.LARS)
    assert reloaded.optimizer.get_config() == model.optimizer.get_config()
    for slot, reloaded_slot in zip(model.optimizer.momentums, reloaded.optimizer.momentums):
        np.testing.assert_array_equal(reloaded_slot.numpy(), slot.numpy())


# --------------------------------------------------------------------------------------------
# Execution contexts: MirroredStrategy, LossScaleOptimizer, XLA.


def test_lars_mirrored_strategy_equals_one_device(two_cpu_strategy):
    reference_model = _small_model()
    initial = reference_model.get_weights()
    expected = _fit(reference_model, _lars(), epochs=2)

    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = _small_model()
        model.set_weights(initial)
        optimizer = _lars()
        got = _fit(model, optimizer, epochs=2)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_lars_inside_loss_scale_optimizer():
    model = _small_model()
    initial = model.get_weights()
    expected = _fit(model, _lars(), epochs=2)

    model = _small_model()
    model.set_weights(initial)
    scaled = keras.optimizers.LossScaleOptimizer(_lars(), initial_scale=2.0**10)
    got = _fit(model, scaled, epochs=2)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    config = keras.optimizers.serialize(scaled)
    revived = keras.optimizers.deserialize(config)
    assert isinstance(revived.inner_optimizer, optimizers.LARS)


def test_lars_jit_compile_equals_graph():
    model = _small_model()
    initial = model.get_weights()
    expected = _fit(model, _lars(nesterov=True), epochs=2, jit_compile=False)

    model = _small_model()
    model.set_weights(initial)
    got = _fit(model, _lars(nesterov=True), epochs=2, jit_compile=True)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_JAX_SCRIPT = """
import json
import numpy as np
import keras
from supcon_tf import optimizers
assert keras.backend.backend() == "jax"
w = keras.Variable(np.array([[3.0, 4.0]], np.float32))
b = keras.Variable(np.array([1.0, 2.0], np.float32))
optimizer = optimizers.LARS(1.0, momentum=0.9, eta=0.1)
for _ in range(2):
    optimizer.apply([np.array([[0.6, 0.8]], np.float32), np.array([0.1, 0.1], np.float32)],
                    [w, b])
print(json.dumps([w.numpy().tolist(), b.numpy().tolist()]))
"""


def test_lars_runs_on_jax_backend(tmp_path):
    # The per-step math is keras.ops only: the golden above also holds under JAX. The bias is
    # 1-D (trust 1): v = 0.1, then 0.9 * 0.1 + 0.1 = 0.19, so b = [1, 2] - 0.29.
    script = tmp_path / "lars_jax.py"
    script.write_text(textwrap.dedent(_JAX_SCRIPT))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    kernel, bias = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(kernel, [[2.16, 2.88]], rtol=1e-6)
    np.testing.assert_allclose(bias, [0.71, 1.71], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# build_optimizer: classes, weight-decay semantics, real fits.


def test_build_optimizer_classes_and_settings():
    lars = optimizers.build_optimizer("lars", 0.4, 1e-3)
    assert isinstance(lars, optimizers.LARS)
    assert (lars.momentum, lars.l2_weight_decay, lars.eta) == (0.9, 1e-3, 0.001)
    nesterov = optimizers.build_optimizer("nesterov", 0.1, 1e-4)
    assert isinstance(nesterov, keras.optimizers.SGD) and nesterov.nesterov
    assert nesterov.weight_decay is None  # coupled: the base class' decoupled decay is off.
    assert not optimizers.build_optimizer("momentum", 0.1).nesterov
    assert optimizers.build_optimizer("rmsprop", 0.1, stage=1).epsilon == 1.0
    assert optimizers.build_optimizer("rmsprop", 0.1, stage=2).epsilon == 1e-3
    assert optimizers.build_optimizer("rmsprop", 0.1, epsilon=0.5).epsilon == 0.5
    adamw = optimizers.build_optimizer("adamw", 0.1, 1e-2)
    assert adamw.weight_decay == 1e-2  # decoupled: the Keras base class applies it.


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_sgd_coupled_weight_decay_matches_reference(name):
    kernel = keras.Variable(_random((3, 2), 7))
    initial = kernel.numpy()
    grads = [[_random((3, 2), 70 + s)] for s in range(3)]
    optimizer = optimizers.build_optimizer(name, 0.1, 0.05, momentum=0.9)
    _run_steps(optimizer, [kernel], grads)
    expected = momentum_l2_reference(initial, [g[0] for g in grads], 0.1, 0.9, 0.05,
                                     nesterov=name == "nesterov")
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_rmsprop_coupled_weight_decay_matches_reference():
    kernel = keras.Variable(_random((3, 2), 8))
    bias = keras.Variable(_random((2,), 9))
    initial = [kernel.numpy(), bias.numpy()]
    grads = [[_random((3, 2), 80 + s), _random((2,), 90 + s)] for s in range(3)]
    optimizer = optimizers.build_optimizer("rmsprop", 0.05, 0.1, stage=1)
    _run_steps(optimizer, [kernel, bias], grads)
    kernel_ref = rmsprop_l2_reference(initial[0], [g[0] for g in grads], 0.05, 0.9, 0.9, 1.0,
                                      0.1)
    bias_ref = rmsprop_l2_reference(initial[1], [g[1] for g in grads], 0.05, 0.9, 0.9, 1.0,
                                    0.0)  # 1-D: excluded from decay.
    np.testing.assert_allclose(kernel.numpy(), kernel_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), bias_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,coupled", [("adam", True), ("adamw", False)])
def test_adam_weight_decay_semantics(name, coupled):
    kernel = keras.Variable(_random((3, 2), 11))
    bias = keras.Variable(_random((2,), 12))
    initial = [kernel.numpy(), bias.numpy()]
    grads = [[_random((3, 2), 110 + s), _random((2,), 120 + s)] for s in range(3)]
    optimizer = optimizers.build_optimizer(name, 0.01, 0.5)
    _run_steps(optimizer, [kernel, bias], grads)
    kernel_ref = adam_reference(initial[0], [g[0] for g in grads], 0.01, 0.5, coupled)
    bias_ref = adam_reference(initial[1], [g[1] for g in grads], 0.01, 0.5, coupled,
                              decay=False)
    np.testing.assert_allclose(kernel.numpy(), kernel_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), bias_ref, rtol=1e-5, atol=1e-6)


FIT_CASES = [("lars", 3.0), ("momentum", 0.1), ("nesterov", 0.1), ("rmsprop", 0.01),
             ("adam", 0.01), ("adamw", 0.01)]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("name,learning_rate", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_digits_converges(digits, name, learning_rate):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizers.build_optimizer(name, learning_rate, 1e-4, stage=2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.3 * history["loss"][0]  # ln 10 = 2.3 at chance.
    assert history["accuracy"][-1] > 0.9


# --------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("kwargs,match", [
    (dict(learning_rate=-0.1), r"learning_rate must be >= 0; received -0\.1"),
    (dict(momentum=1.0), r"momentum must be a float in \[0, 1\); received 1\.0"),
    (dict(momentum=-0.5), r"momentum must be a float in \[0, 1\); received -0\.5"),
    (dict(eta=0.0), r"eta must be a float > 0; received 0\.0\. Use 0\.001"),
    (dict(weight_decay=-1e-4), r"weight_decay must be a float >= 0; received -0\.0001"),
    (dict(epsilon=-1.0), r"epsilon must be a float >= 0; received -1\.0"),
    (dict(exclude_from_weight_decay="bias"), r"Wrap it in a list: \['bias'\]"),
    (dict(exclude_from_layer_adaptation=["("]), r"holds '\(', which is not a regular"),
])
def test_lars_bad_input(kwargs, match):
    settings = dict(learning_rate=0.1)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        optimizers.LARS(**settings)


@pytest.mark.parametrize("args,kwargs,match", [
    (("sgd", 0.1), {}, r"Unknown optimizer 'sgd'; use one of lars, momentum, nesterov"),
    (("rmsprop", 0.1), dict(stage=3), r"stage must be 1 \(pretraining\) or 2"),
    (("momentum", -1.0), {}, r"learning_rate must be >= 0; received -1\.0"),
    (("nesterov", 0.1), dict(momentum=1.2), r"momentum must be a float in \[0, 1\)"),
    (("adamw", 0.1, -0.1), {}, r"weight_decay must be a float >= 0; received -0\.1"),
    (("lars", 0.1), dict(eta=-1.0), r"eta must be a float > 0; received -1\.0"),
    (("adam", 0.1), dict(exclude_from_layer_adaptation=["x"]),
     r"exclude_from_layer_adaptation applies to 'lars' only"),
])
def test_build_optimizer_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizers.build_optimizer(*args, **kwargs)

