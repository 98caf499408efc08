"""Tests for supcon_tf.schedules: closed-form values, serialisation, resumption, bad input."""

import copy
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import schedules


def _values(schedule, steps):
    return [float(schedule(step)) for step in steps]


# --------------------------------------------------------------------------------------------
# Values against closed forms.


def test_scale_learning_rate():
    # LARS 0.4 per 256 at batch 6144 (ImageNet SupCon): 0.4 * 6144 / 256 = 9.6.
    assert schedules.scale_learning_rate(0.4, 6144) == pytest.approx(9.6)
    assert schedules.scale_learning_rate(0.5, 256) == 0.5
    assert schedules.scale_learning_rate(2.5, 1024) == 10.0


def test_warmup_cosine_values():
    # Peak 1.0, warmup 10 of 110 steps: 0 at 0, 0.5 at 5, 1 at 10; cosine over 100 steps:
    # at 35 p = 1/4 -> 0.5 * (1 + cos(pi/4)); at 60 p = 1/2 -> 0.5; 0 at 110 and beyond.
    schedule = schedules.WarmupCosineDecay(1.0, total_steps=110, warmup_steps=10)
    expected = [0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.0, 0.0]
    np.testing.assert_allclose(_values(schedule, [0, 5, 10, 35, 60, 110, 500]), expected,
                               atol=1e-6)


def test_cosine_alpha_and_no_warmup():
    # alpha = 0.1: lr = 2 * (0.1 + 0.9 * 0.5 * (1 + cos(pi p))), p = step / 40.
    schedule = schedules.WarmupCosineDecay(2.0, total_steps=40, alpha=0.1)
    expected = [2.0, 2.0 * (0.1 + 0.45), 2.0 * 0.1, 2.0 * 0.1]
    np.testing.assert_allclose(_values(schedule, [0, 20, 40, 41]), expected, rtol=1e-6)


def test_warmup_exponential_values():
    # The paper's stage 2: 0.97 every 0.5 epoch. With 5 steps per epoch, decay_steps = 2.5,
    # counted from the end of a 4-step warmup: k = floor((step - 4) / 2.5).
    schedule = schedules.build_schedule("exponential", 0.05, steps_per_epoch=5, epochs=90,
                                        warmup_epochs=0.8)
    steps = [0, 2, 4, 6, 7, 9, 10, 29]
    exponents = [None, None, 0, 0, 1, 2, 2, 10]  # 29 - 4 = 25 -> 10 decays.
    expected = [0.0, 0.025] + [0.05 * 0.97**k for k in exponents[2:]]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6)


def test_exponential_continuous():
    schedule = schedules.WarmupExponentialDecay(1.0, decay_steps=4.0, decay_rate=0.5,
                                                staircase=False)
    np.testing.assert_allclose(_values(schedule, [0, 2, 4, 6]),
                               [1.0, 0.5**0.5, 0.5, 0.5**1.5], rtol=1e-6)


def test_piecewise_default_boundaries():
    # CIFAR classifier: x0.2 at 60/75/90 % of 100 epochs of 10 steps -> steps 600, 750, 900.
    schedule = schedules.build_schedule("piecewise", 2.5, steps_per_epoch=10, epochs=100)
    assert schedule.boundaries == [600, 750, 900]
    expected = [2.5, 2.5, 0.5, 0.5, 0.1, 0.02, 0.02]
    np.testing.assert_allclose(_values(schedule, [0, 599, 600, 749, 750, 900, 10**6]), expected,
                               rtol=1e-6)


def test_piecewise_given_epochs_with_warmup():
    schedule = schedules.build_schedule("piecewise", 1.0, steps_per_epoch=4, epochs=10,
                                        warmup_epochs=1, decay_rate=0.1, boundary_epochs=[3, 6])
    # Warmup 4 steps: 0, 0.25, ...; 1 from step 4; 0.1 from step 12; 0.01 from step 24.
    np.testing.assert_allclose(_values(schedule, [0, 1, 4, 11, 12, 23, 24]),
                               [0.0, 0.25, 1.0, 1.0, 0.1, 0.1, 0.01], rtol=1e-6)


def test_constant_with_warmup():
    schedule = schedules.build_schedule("constant", 0.3, steps_per_epoch=10, epochs=5,
                                        warmup_epochs=2)
    np.testing.assert_allclose(_values(schedule, [0, 10, 20, 49]), [0.0, 0.15, 0.3, 0.3],
                               rtol=1e-6)


def test_imagenet_supcon_stage1_settings():
    # 350 epochs at batch 6144 with warmup 12 epochs: peak 9.6 at the end of warmup.
    steps_per_epoch = 1_281_167 // 6144
    schedule = schedules.build_schedule(
        "cosine", schedules.scale_learning_rate(0.4, 6144), steps_per_epoch=steps_per_epoch,
        epochs=350, warmup_epochs=12)
    assert schedule.warmup_steps == 12 * steps_per_epoch
    assert schedule.total_steps == 350 * steps_per_epoch
    assert float(schedule(schedule.warmup_steps)) == pytest.approx(9.6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_values_inside_tf_function(jit_compile):
    schedule = schedules.WarmupCosineDecay(1.0, total_steps=110, warmup_steps=10)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function(jit_compile=jit_compile)
    def learning_rate():
        return schedule(step)

    for value in [0, 5, 35, 200]:
        step.assign(value)
        assert float(learning_rate()) == pytest.approx(float(schedule(value)), abs=1e-6)


# --------------------------------------------------------------------------------------------
# Serialisation and resumption.


SCHEDULE_CASES = [
    ("constant", schedules.WarmupConstant(0.3, warmup_steps=5)),
    ("cosine", schedules.WarmupCosineDecay(0.3, total_steps=50, warmup_steps=5, alpha=0.1)),
    ("exponential", schedules.WarmupExponentialDecay(0.3, 2.5, decay_rate=0.9, warmup_steps=5,
                                                     staircase=False)),
    ("piecewise", schedules.WarmupPiecewiseDecay(0.3, [10, 20], decay_rate=0.2,
                                                 warmup_steps=5)),
]


@pytest.mark.parametrize("name,schedule", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_config_round_trip(name, schedule):
    del name
    config = schedule.get_config()
    restored = type(schedule).from_config(copy.deepcopy(config))
    assert restored.get_config() == config
    revived = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert type(revived) is type(schedule)
    assert revived.get_config() == config
    steps = [0, 3, 5, 12, 27, 60]
    np.testing.assert_allclose(_values(revived, steps), _values(schedule, steps), rtol=1e-7)


def test_optimizer_resumed_mid_run_continues_the_schedule(tmp_path):
    schedule = schedules.build_schedule("cosine", 1.0, steps_per_epoch=4, epochs=5,
                                        warmup_epochs=1)
    variable = keras.Variable(np.ones((2, 2), np.float32))
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    for _ in range(7):
        optimizer.apply([tf.ones((2, 2))], [variable])
    path = tf.train.Checkpoint(optimizer=optimizer, variable=variable).save(
        str(tmp_path / "ckpt"))

    fresh_variable = keras.Variable(np.zeros((2, 2), np.float32))
    fresh = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    fresh.build([fresh_variable])
    tf.train.Checkpoint(optimizer=fresh, variable=fresh_variable).restore(path)
    assert int(fresh.iterations) == 7
    # Warmup 4 steps, cosine over 16: at step 7, p = 3/16.
    expected = 0.5 * (1 + math.cos(math.pi * 3 / 16))
    assert float(fresh.learning_rate) == pytest.approx(expected, rel=1e-6)
    assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="linear"), r"Unknown schedule 'linear'; use one of constant, cosine"),
    (dict(warmup_epochs=12), r"warmup_epochs=12 is longer than training \(epochs=10\); "
                             r"lower warmup_epochs or raise epochs"),
    (dict(warmup_epochs=10), r"warmup_epochs=10 leaves no steps for the cosine decay"),
    (dict(learning_rate=-1.0), r"learning_rate must be >= 0; received -1\.0"),
    (dict(steps_per_epoch=0), r"steps_per_epoch must be a positive int; received 0"),
    (dict(epochs=0), r"epochs must be > 0; received 0"),
    (dict(warmup_epochs=-1), r"warmup_epochs must be >= 0; received -1"),
    (dict(name="exponential", decay_epochs=0.0), r"decay_epochs must be > 0; received 0\.0"),
    (dict(name="piecewise", warmup_epochs=5, boundary_epochs=[3]),
     r"boundary epoch 3 lies outside the post-warmup training \[5, 10\]"),
    (dict(name="piecewise", decay_rate=0.0), r"decay_rate must be > 0; received 0\.0"),
])
def test_build_schedule_bad_input(kwargs, match):
    settings = dict(name="cosine", learning_rate=0.1, steps_per_epoch=10, epochs=10)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        schedules.build_schedule(**settings)


@pytest.mark.parametrize("factory,match", [
    (lambda: schedules.WarmupCosineDecay(0.1, total_steps=10, warmup_steps=20),
     r"warmup_steps=20 is not shorter than training \(total_steps=10\)"),
    (lambda: schedules.WarmupCosineDecay(0.1, total_steps=10, alpha=2.0),
     r"alpha must be in \[0, 1\]; received 2\.0"),
    (lambda: schedules.WarmupExponentialDecay(0.1, decay_steps=0),
     r"decay_steps must be > 0; received 0"),
    (lambda: schedules.WarmupPiecewiseDecay(0.1, [20, 10]),
     r"boundaries must be strictly increasing; received \[20, 10\]"),
    (lambda: schedules.WarmupPiecewiseDecay(0.1, []), r"boundaries is empty"),
    (lambda: schedules.WarmupPiecewiseDecay(0.1, [5], warmup_steps=10),
     r"boundary 5 falls inside the warmup \(warmup_steps=10\)"),
    (lambda: schedules.WarmupConstant(-0.5), r"learning_rate must be >= 0; received -0\.5"),
    (lambda: schedules.scale_learning_rate(-0.1, 256),
     r"base_learning_rate must be >= 0; received -0\.1"),
    (lambda: schedules.scale_learning_rate(0.1, 0),
     r"global_batch_size must be a positive int; received 0"),
])
def test_schedule_bad_input(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
