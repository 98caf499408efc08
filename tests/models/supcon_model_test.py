"""Tests for SupConModel: the step against an independent computation, and one device."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import loss_reference as ref
from supcon_tf.models import supcon_model
from supcon_tf.models.supcon_model import SupConModel

IMAGE = (4, 4, 3)


def _encoder(seed=0, batch_norm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(IMAGE), keras.layers.Flatten(), keras.layers.Dense(8)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(synchronized=True))
    layers.append(keras.layers.Activation("relu"))
    return keras.Sequential(layers, name="encoder")


def _data(batch=8, views=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(batch, views) + IMAGE).astype("float32"),
            np.array([0, 1, 2, 0, 1, 2, 0, 1][:batch]))


# Label sets of the 8 samples of `_data` (3 classes; sample 5's set is empty).
SETS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1],
                 [0, 1, 0]])


def _plain_supcon(z, labels, temperature, pair_weights=None):
    """Mean SupCon L_out with full masks, written directly in TensorFlow (no shared code).

    `pair_weights`: optional `[batch, batch]` positive weight of each pair of samples (1 on the
    diagonal), replacing the same-label test (multi-label SupCon's Jaccard weights)."""
    views = z.shape[1]
    contrast = tf.concat(tf.unstack(z, axis=1), axis=0)
    logits = tf.matmul(contrast, contrast, transpose_b=True) / temperature
    if pair_weights is None:
        pair_weights = np.equal(labels[:, None], labels[None, :]).astype("float32")
    not_self = 1.0 - tf.eye(tf.shape(contrast)[0])
    positives = tf.tile(tf.constant(pair_weights, tf.float32), [views, views]) * not_self
    log_denominator = tf.math.log(tf.reduce_sum(tf.exp(logits) * not_self, 1, keepdims=True))
    log_prob = logits - log_denominator
    per_anchor = -tf.reduce_sum(positives * log_prob, 1) / tf.reduce_sum(positives, 1)
    return temperature * tf.reduce_mean(per_anchor)


def test_one_step_equals_a_hand_written_sgd_step():
    x, y = _data()
    model = SupConModel(_encoder(), projection_units=[6, 4], temperature=0.5, probe=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    start = [w.numpy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    # The same step by hand: view-major encoder batch, head, plain formula, w -= lr * g.
    variables = [tf.Variable(w) for w in start]
    for v, w in zip(model.trainable_weights, start):
        v.assign(w)
    with tf.GradientTape() as tape:
        flat = tf.reshape(tf.transpose(x, (1, 0, 2, 3, 4)), (-1,) + IMAGE)
        z = model.projection_head(model.encoder(flat, training=True), training=True)
        z = tf.transpose(tf.reshape(z, (2, 8, 4)), (1, 0, 2))
        loss = _plain_supcon(z, y, 0.5)
    grads = tape.gradient(loss, model.trainable_weights)
    for v, g in zip(variables, grads):
        v.assign_sub(0.1 * g)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # From `start` again.
    for got, want in zip(model.trainable_weights, variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_multilabel_step_equals_a_hand_written_sgd_step():
    x, _ = _data()
    model = SupConModel(_encoder(2), projection_units=[6, 4], temperature=0.5, num_classes=3,
                        multi_label=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert model.probe is None  # Top-1 of one class per image: off for label sets.
    start = [w.numpy() for w in model.trainable_weights]
    history = model.fit(x, SETS, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert "probe_accuracy" not in history.history

    # By hand: Jaccard weights by a loop over Python sets, the plain weighted formula.
    jaccard = np.array([[1.0 if i == j else ref.jaccard(SETS[i], SETS[j]) for j in range(8)]
                        for i in range(8)])
    with tf.GradientTape() as tape:
        for v, w in zip(model.trainable_weights, start):
            v.assign(w)
        flat = tf.reshape(tf.transpose(x, (1, 0, 2, 3, 4)), (-1,) + IMAGE)
        z = model.projection_head(model.encoder(flat, training=True), training=True)
        z = tf.transpose(tf.reshape(z, (2, 8, 4)), (1, 0, 2))
        loss = _plain_supcon(z, None, 0.5, pair_weights=jaccard)
    expected = [w - 0.1 * g.numpy()
                for w, g in zip(start, tape.gradient(loss, model.trainable_weights))]
    model.fit(x, SETS, batch_size=8, epochs=1, shuffle=False, verbose=0)  # From `start` again.
    for got, want in zip(model.trainable_weights, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["supcon", "joint"])
def test_sample_weights_scale_each_samples_loss_like_a_hand_weighted_step(loss):
    x, y = _data()
    weights = np.array([0.0, 2.0, 0.5, 1.0, 3.0, 0.0, 1.5, 1.0], "float32")
    model = SupConModel(_encoder(5), loss=loss, projection_units=[6, 4], temperature=0.5,
                        num_classes=3, probe=loss == "joint", ce_weight=0.7, supcon_weight=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    start = [w.numpy() for w in model.trainable_weights]

    # By hand: per-sample SupCon from `contrastive_loss`, per-view cross-entropies from
    # TensorFlow, each weighted by its sample's weight, summed and divided by the batch size.
    from supcon_tf import losses

    view_weights, view_labels = np.tile(weights, 2), np.tile(y, 2)

    def weighted_ce(logits):
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(view_labels, logits)
        return tf.reduce_sum(view_weights * ce) / 16

    with tf.GradientTape() as tape:
        flat = tf.reshape(tf.transpose(x, (1, 0, 2, 3, 4)), (-1,) + IMAGE)
        features = model.encoder(flat, training=True)
        z = model.projection_head(features, training=True)
        z = tf.transpose(tf.reshape(z, (2, 8, 4)), (1, 0, 2))
        per_sample = losses.contrastive_loss(z, y, temperature=0.5)
        total = tf.reduce_sum(weights * per_sample) / 8
        if loss == "joint":
            total = 1.3 * total + 0.7 * weighted_ce(model.classifier(features))
            total += weighted_ce(model.probe(features))
    grads = tape.gradient(total, model.trainable_weights)
    expected = [w - 0.1 * g.numpy() for w, g in zip(start, grads)]

    model.fit(x, y, sample_weight=weights, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(model.trainable_weights, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # Unit weights are the unweighted step; evaluate reports the weighted loss.
    logs = model.evaluate(x, y, sample_weight=weights, batch_size=8, verbose=0, return_dict=True)
    unit = model.evaluate(x, y, sample_weight=np.ones(8), batch_size=8, verbose=0,
                          return_dict=True)
    plain = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(unit["loss"], plain["loss"], rtol=1e-6)
    assert not np.isclose(logs["loss"], plain["loss"])


def test_sample_weights_of_the_wrong_shape_are_refused():
    x, y = _data()
    model = SupConModel(_encoder(), projection_units=[4])
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"one weight per sample, shape \[batch\]"):
        model.train_step((tf.constant(x), tf.constant(y), tf.ones((8, 2))))


def test_probe_gradients_never_reach_the_encoder():
    x, y = _data()
    with_probe = SupConModel(_encoder(1), projection_units=[4], num_classes=3)
    without = SupConModel(_encoder(1), projection_units=[4], probe=False)
    without.projection_head.set_weights(with_probe.projection_head.get_weights())
    probe_before = [w.numpy() for w in with_probe.probe.weights]
    for model in (with_probe, without):
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(with_probe.encoder.weights, without.encoder.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(probe_before, with_probe.probe.weights))
    logs = with_probe.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) >= {"loss", "contrastive_loss", "probe_loss", "probe_accuracy"}


@pytest.mark.parametrize("loss", supcon_model.LOSSES)
def test_every_loss_trains_and_reports_finite_metrics(loss):
    x, y = _data()
    model = SupConModel(_encoder(), loss=loss, projection_units=[4], num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    if loss in ("cross_entropy", "joint"):
        assert "accuracy" in history.history


def test_simclr_without_labels_and_dict_batches():
    x, y = _data()
    model = SupConModel(_encoder(), projection_units=[4])
    model.compile(optimizer="sgd")
    model.fit(x, epochs=1, batch_size=4, verbose=0)  # No labels: SimCLR.
    data = tf.data.Dataset.from_tensor_slices({"images": x, "labels": y}).batch(4)
    logs = model.fit(data, epochs=1, verbose=0).history
    assert "probe_accuracy" not in logs and np.isfinite(logs["loss"]).all()


def test_single_view_input_with_in_model_augmenter():
    x, y = _data()
    augmenter = keras.layers.RandomFlip("horizontal_and_vertical", seed=0)
    model = SupConModel(_encoder(), projection_units=[4], num_classes=3, num_views=3,
                        augmenter=augmenter)
    model.compile(optimizer="sgd")
    history = model.fit(x[:, 0], y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["contrastive_loss"]).all()
    views = model._views(tf.constant(x[:, 0]), training=True)
    assert tuple(views.shape) == (8, 3) + IMAGE


def test_predict_returns_encoder_embeddings_and_keras_file_round_trips(tmp_path):
    x, y = _data()
    model = SupConModel(_encoder(), projection_units=[5, 4], num_classes=3,
                        loss_options={"positives_cap": 2}, temperature=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    images = x[:, 0]
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               model.encoder(images, training=False), rtol=1e-6)
    path = tmp_path / "supcon.keras"
    model.save(path)
    revived = keras.models.load_model(path)
    assert isinstance(revived, SupConModel)
    assert revived.get_config()["loss_options"] == {"positives_cap": 2}
    np.testing.assert_allclose(revived.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-6)
    for a, b in zip(revived.weights, model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy())


_LOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
assert "supcon_tf" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
images = tf.constant(np.load(sys.argv[2]))
out = {name: {k: v.numpy().tolist() for k, v in loaded.signatures[name](images=images).items()}
       for name in ("embed", "project", "classify")}
print(json.dumps(out))
"""


def test_export_loads_in_a_fresh_process_without_supcon_tf(tmp_path):
    x, y = _data()
    model = SupConModel(_encoder(), projection_units=[4], num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.export_saved_model(str(tmp_path / "saved")) == ["classify", "embed", "project"]
    np.save(tmp_path / "images.npy", x[:, 0])
    (tmp_path / "load.py").write_text(_LOAD_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(tmp_path / "saved"),
         str(tmp_path / "images.npy")], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    features = model.encoder(x[:, 0], training=False)
    np.testing.assert_allclose(out["embed"]["embeddings"], features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["project"]["projections"],
                               model.projection_head(features), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["classify"]["logits"], model.probe(features),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already exists and is not empty"):
        model.export_saved_model(str(tmp_path / "saved"))


@pytest.mark.parametrize("loss", ["supcon", "simclr"])
def test_two_replicas_take_the_same_step_as_one_device(loss, two_cpu_strategy):
    x, y = _data()
    single = SupConModel(_encoder(3, batch_norm=True), loss=loss, projection_units=[4])
    single.compile(optimizer=keras.optimizers.SGD(0.5))
    start = [w.numpy() for w in single.weights]
    single.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    strategy = two_cpu_strategy
    with strategy.scope():
        mirrored = SupConModel(_encoder(4, batch_norm=True), loss=loss, projection_units=[4])
        mirrored.compile(optimizer=keras.optimizers.SGD(0.5))
    for v, w in zip(mirrored.weights, start):
        v.assign(w)
    mirrored.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(mirrored.weights, single.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    moved = [not np.allclose(a, b.numpy()) for a, b in zip(start, single.weights)]
    assert any(moved)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_mixed_precision_trains_with_a_float32_loss(policy, multi_label):
    x, y = _data()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = SupConModel(_encoder(), projection_units=[4], num_classes=3,
                            multi_label=multi_label)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        history = model.fit(x, SETS if multi_label else y, batch_size=8, epochs=2, verbose=0)
        assert model.encoder.compute_dtype != "float32"
        assert all(np.isfinite(v).all() for v in history.history.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs,message", [
    (dict(loss="arcface"), r"Unknown loss 'arcface'; use one of"),
    (dict(loss="cross_entropy"), r"pass num_classes"),
    (dict(num_views=0), r"num_views must be an int >= 1"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SupConModel(_encoder(), **kwargs)


@pytest.mark.parametrize("loss", ["cross_entropy", "joint", "n_pairs", "triplet", "max_margin"])
def test_multilabel_refuses_losses_that_need_one_class_per_sample(loss):
    with pytest.raises(ValueError, match=rf"loss '{loss}' needs one class per sample and "
                                         r"cannot use multi-hot labels: use loss='supcon'") as e:
        SupConModel(_encoder(), loss=loss, num_classes=3, multi_label=True)
    assert "\n" not in str(e.value)


def test_multilabel_needs_num_classes_and_label_sets_of_that_width():
    with pytest.raises(ValueError, match="multi_label=True needs num_classes"):
        SupConModel(_encoder(), multi_label=True)
    model = SupConModel(_encoder(), projection_units=[4], num_classes=4, multi_label=True)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"label sets \[batch, 4\] \(num_classes\), got shape"):
        model.fit(_data()[0], SETS, batch_size=8, verbose=0, epochs=1)


def test_encoder_without_vector_output_is_refused():
    encoder = keras.Sequential([keras.Input(IMAGE), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError, match="must output feature vectors.*pooling"):
        SupConModel(encoder)


def test_wrong_input_rank_and_missing_labels_are_refused():
    model = SupConModel(_encoder(), loss="cross_entropy", num_classes=3)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="Expected multi-view images"):
        model.fit(np.zeros((4, 4, 4), "float32"), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(_data()[0], epochs=1, verbose=0)


# ------------------------------------------------------------------------------------------
# The memory variant (momentum key encoder + label queue).
# ------------------------------------------------------------------------------------------


def _memory_model(seed=0, size=24, momentum=0.9, loss="supcon", multi_label=False):
    model = SupConModel(_encoder(seed, batch_norm=True), loss=loss, projection_units=[4],
                        memory_size=size, memory_momentum=momentum, probe=False,
                        num_classes=3 if multi_label else None, multi_label=multi_label)
    model.compile(optimizer=keras.optimizers.SGD(0.3))
    return model


def test_memory_step_matches_a_hand_computation():
    x, y = _data()
    model = _memory_model()
    # Fill the queue with known keys first (one step), then check the second step by hand.
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    queue_keys, queue_labels = model.queue.keys.numpy(), model.queue.labels.numpy()
    assert int(model.queue.pointer.numpy()) == 16
    np.testing.assert_array_equal(queue_labels[:16], np.tile(y, 2))
    np.testing.assert_array_equal(queue_labels[16:], -1)
    before = [w.numpy() for w in model.weights]
    key_before = [w.numpy() for w in model.key_encoder.weights + model.key_head.weights]

    # Expected loss gradient step: SupCon over batch + the queue as it was.
    query_weights = model.encoder.trainable_weights + model.projection_head.trainable_weights
    with tf.GradientTape() as tape:
        flat = tf.reshape(tf.transpose(x, (1, 0, 2, 3, 4)), (-1,) + IMAGE)
        z = model.projection_head(model.encoder(flat, training=True), training=True)
        z = tf.transpose(tf.reshape(z, (2, 8, 4)), (1, 0, 2))
        loss = tf.reduce_mean(supcon_model.losses.contrastive_loss(
            z, y, memory_features=queue_keys, memory_labels=queue_labels))
    grads = tape.gradient(loss, query_weights)
    expected = {w.path: w.numpy() - 0.3 * g.numpy() for w, g in zip(query_weights, grads)}
    for w, value in zip(model.weights, before):  # Restore (BN statistics moved above).
        w.assign(value)

    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for w in query_weights:
        np.testing.assert_allclose(w.numpy(), expected[w.path], rtol=1e-5, atol=1e-6)
    # Key networks: k <- 0.9 k + 0.1 q (every weight, BN statistics included).
    sources = model.encoder.weights + model.projection_head.weights
    for k_old, q_new, k_new in zip(key_before, sources,
                                   model.key_encoder.weights + model.key_head.weights):
        np.testing.assert_allclose(k_new.numpy(), 0.9 * k_old + 0.1 * q_new.numpy(),
                                   rtol=1e-5, atol=1e-6)
    # Enqueued: the updated key networks' embeddings of both views, view-major, at 16..31 % 24.
    flat = tf.reshape(tf.transpose(x, (1, 0, 2, 3, 4)), (-1,) + IMAGE)
    keys = model.key_head(model.key_encoder(flat, training=False)).numpy()
    slots = np.arange(16, 32) % 24
    np.testing.assert_allclose(model.queue.keys.numpy()[slots], keys, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.queue.labels.numpy()[slots], np.tile(y, 2))
    assert int(model.queue.pointer.numpy()) == 32 % 24


def test_memory_queue_smaller_than_a_step_is_refused():
    x, y = _data()
    model = _memory_model(size=8)
    with pytest.raises(ValueError, match="memory_size 8 is smaller than one step's keys"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_memory_needs_a_contrastive_loss():
    with pytest.raises(ValueError, match="A memory queue works with the losses"):
        SupConModel(_encoder(), loss="triplet", memory_size=16)


def test_memory_state_round_trips_through_a_keras_file(tmp_path):
    x, y = _data()
    model = _memory_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "memory.keras")
    revived = keras.models.load_model(tmp_path / "memory.keras")
    for name in ("keys", "labels", "pointer"):
        np.testing.assert_array_equal(getattr(revived.queue, name).numpy(),
                                      getattr(model.queue, name).numpy())
    for a, b in zip(revived.key_encoder.weights, model.key_encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("loss,multi_label", [
    ("supcon", False), ("simclr", False), ("supcon", True), ("simclr", True)])
def test_memory_under_two_replicas_equals_one_device(loss, multi_label, two_cpu_strategy):
    x, y = _data()
    y = SETS if multi_label else y
    single = _memory_model(5, loss=loss, multi_label=multi_label)
    start = [w.numpy() for w in single.weights]
    single.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    strategy = two_cpu_strategy
    with strategy.scope():
        mirrored = _memory_model(6, loss=loss, multi_label=multi_label)
    for v, w in zip(mirrored.weights, start):
        v.assign(w)
    mirrored.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(mirrored.weights, single.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)
    assert int(mirrored.queue.pointer.numpy()) == 48 % 24


@pytest.mark.parametrize("memory_size", [0, 24])
def test_one_hot_label_sets_take_the_int_label_steps(memory_size):
    # multi_label=True with one-hot rows: Jaccard weights of 1 / 0, so three steps (with the
    # queue filling with one-hot sets) land on the int-label model's weights.
    x, y = _data()
    models = []
    for multi_label in (False, True):
        model = SupConModel(_encoder(7, batch_norm=True), projection_units=[4], probe=False,
                            memory_size=memory_size, memory_momentum=0.9, num_classes=3,
                            multi_label=multi_label)
        model.compile(optimizer=keras.optimizers.SGD(0.3))
        models.append(model)
    int_model, set_model = models
    for part in ("encoder", "projection_head") + (("key_encoder", "key_head")
                                                  if memory_size else ()):
        getattr(set_model, part).set_weights(getattr(int_model, part).get_weights())
    int_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    set_model.fit(x, np.eye(3, dtype="int64")[y], batch_size=8, epochs=3, shuffle=False,
                  verbose=0)
    for a, b in zip(set_model.trainable_weights, int_model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    if memory_size:
        ids = int_model.queue.labels.numpy()
        assert set_model.queue.labels.shape == (24, 3)
        np.testing.assert_array_equal(
            set_model.queue.labels.numpy(), np.where(ids[:, None] >= 0, np.eye(3)[ids], -1))


def test_multilabel_memory_state_round_trips_through_a_keras_file(tmp_path):
    x, _ = _data()
    model = _memory_model(multi_label=True)
    model.fit(x, SETS, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.queue.labels.numpy()[:16], np.tile(SETS, (2, 1)))
    model.save(tmp_path / "multilabel.keras")
    revived = keras.models.load_model(tmp_path / "multilabel.keras")
    assert revived.multi_label and revived.probe is None
    np.testing.assert_array_equal(revived.queue.labels.numpy(), model.queue.labels.numpy())


def test_a_keras_applications_model_works_as_the_encoder():
    encoder = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg",
        include_preprocessing=False)
    model = SupConModel(encoder, projection_units=[16], num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 2, 32, 32, 3)).astype("float32")
    history = model.fit(x, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x[:, 0], verbose=0).shape == (4, encoder.output_shape[-1])


@pytest.mark.slow
def test_supcon_on_real_digits_probes_at_least_as_well_as_cross_entropy():
    # Same small ResNet, data, augmentation, steps and batch; frozen-feature L-BFGS probes on
    # the held-out digits. SupCon must reach the cross-entropy model's top-1 minus one point.
    from supcon_tf import schedules
    from supcon_tf.data import pipeline
    from supcon_tf.evaluation import linear_probe
    from supcon_tf.models import resnet

    size, epochs, batch = 16, 20, 128
    augment = dict(crop_area=(0.4, 1.0), flip=False, jitter_strength=0.5,
                   grayscale_probability=0.0)
    train = pipeline.make_dataset("digits", "simaugment", 2, batch, size, seed=0,
                                  augment_options=augment)
    evaluation = {}
    for split in ("train", "test"):
        data = pipeline.make_dataset("digits", "eval", 1, 256, size, training=False,
                                     split=split, augment_options={"center_crop_fraction": 1.0})
        evaluation[split] = (np.concatenate([v[:, 0] for v, _ in data]),
                             np.concatenate([y for _, y in data]))
    steps = len(evaluation["train"][1]) // batch
    accuracy = {}
    for loss, learning_rate in (("supcon", 1.0), ("cross_entropy", 0.1)):
        keras.utils.set_random_seed(0)
        encoder = resnet.resnet(18, (size, size, 3), width_multiplier=0.25, stem="cifar")
        model = SupConModel(encoder, loss=loss, num_classes=10, projection_units=[128, 128],
                            probe=False)
        model.compile(optimizer=keras.optimizers.SGD(schedules.build_schedule(
            "cosine", learning_rate, steps_per_epoch=steps, epochs=epochs, warmup_epochs=1),
            momentum=0.9))
        model.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0)
        features = {s: model.predict(x, verbose=0) for s, (x, _) in evaluation.items()}
        train_y, test_y = evaluation["train"][1], evaluation["test"][1]
        fit, held = linear_probe.stratified_holdout(train_y, 0.2, seed=0)
        accuracy[loss] = linear_probe.lbfgs_logistic_sweep(
            features["train"][fit], train_y[fit], features["train"][held], train_y[held],
            features["test"], test_y).test_score
    assert accuracy["supcon"] >= accuracy["cross_entropy"] - 0.01, accuracy
    assert accuracy["supcon"] >= 0.95, accuracy
