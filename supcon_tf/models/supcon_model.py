"""SupConModel: a Keras model whose `train_step` does contrastive (or cross-entropy) training.

    model = supcon_tf.SupConModel(encoder, loss="supcon", num_classes=10)
    model.compile(optimizer=supcon_tf.optimizers.LARS(0.5))
    model.fit(dataset)          # (views [B, V, H, W, C], labels [B]) batches
    embeddings = model.predict(images)   # encoder output for single-view images [B, H, W, C]

One training step: the multi-view batch `[B, V, ...]` is laid out view-major as `[V*B, ...]`
for the encoder (so batch norm sees every view), the encoder output goes through the projection
head to L2-normalised embeddings `[B, V, d]`, and the loss compares them. With `num_classes` an
online linear probe (a classifier on the stop-gradient encoder output) trains in the same step
and reports accuracy; its gradients never reach the encoder. Under `tf.distribute` the loss
gathers the global batch itself (see `supcon_tf.losses`), and the step divides the local loss by
the replica count so that the summed gradients are those of the global mean.

Multi-label data (`multi_label=True`): labels are label sets, multi-hot `[B, num_classes]`, and
SupCon weighs each pair by the Jaccard similarity of their sets (`losses.contrastive_loss`); the
memory queue stores label sets. The online probe is off: it is a softmax classifier scored by
top-1 accuracy, which assumes one class per image (evaluate multi-label representations with
`supcon_tf.transfer`'s VOC2007 11-point mAP probe instead), and losses that need one class per
sample (cross-entropy, joint, n-pairs, triplet, max-margin) are refused.
"""

import keras
import numpy as np
from keras import ops

from supcon_tf import distribute
from supcon_tf import losses
from supcon_tf.models import gradient_cache
from supcon_tf.models import heads
from supcon_tf.models import jax_step
from supcon_tf.models import memory as memory_lib

LOSSES = ("supcon", "simclr", "cross_entropy", "n_pairs", "triplet", "max_margin", "joint")
_CONTRASTIVE = ("supcon", "simclr", "n_pairs", "triplet", "max_margin", "joint")
_NEEDS_LABELS = ("cross_entropy", "joint")
_WITH_MEMORY = ("supcon", "simclr", "joint")
# Losses that take multi-hot label sets (SupCon weighs pairs by Jaccard; SimCLR ignores labels).
MULTI_LABEL_LOSSES = ("supcon", "simclr")
_IMAGE_KEYS = ("images", "image", "views")
_LABEL_KEYS = ("labels", "label")


# The options each loss takes through `loss_options` (its keyword arguments that the model does
# not set itself: features, labels, temperature and the memory keys are the model's).
LOSS_OPTIONS = {
    "supcon": ("contrast_mode", "summation", "denominator", "positives_cap",
               "scale_by_temperature"),
    "joint": ("contrast_mode", "summation", "denominator", "positives_cap",
              "scale_by_temperature"),
    "simclr": (),
    "cross_entropy": (),
    "n_pairs": ("l2_penalty",),
    "triplet": ("margin", "mining"),
    "max_margin": ("margin",),
}


def check_loss_options(name, temperature, options, num_views):
    """Validates `loss_options` of loss `name` at construction: names, then values.

    The values are checked by computing the loss once on a tiny random batch, so every check
    the loss function itself makes applies, reported as one line naming the loss and its
    options.

    Raises:
        ValueError: an unknown option, or a value the loss refuses.
    """
    legal = LOSS_OPTIONS[name]
    unknown = sorted(set(options) - set(legal))
    if unknown:
        valid = ", ".join(legal) if legal else "none"
        raise ValueError(f"loss_options {unknown} are not options of loss {name!r}; its "
                         f"options are: {valid}.")
    fn = _contrastive_fn(name, temperature, options)
    if fn is None or not options:
        return
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, max(num_views, 2), 4)).astype("float32")
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    try:
        fn(features, np.array([0, 1, 0, 1]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"loss_options {options} of loss {name!r}: "
                         f"{' '.join(str(e).split())} (its options are: "
                         f"{', '.join(legal)}).") from None


def _weighted_mean(values, weights):
    """Mean over the batch of float32 `values [N]`, each times `weights [N]` when given:
    `sum_i w_i v_i / N` (Keras' default "sum_over_batch_size" reduction)."""
    if weights is None:
        return ops.mean(values)
    return ops.mean(values * weights)


def _contrastive_fn(name, temperature, options):
    """Returns `fn(embeddings [B, V, d], labels or None, **memory) -> float32 [B]`."""
    if name in ("supcon", "joint"):
        return lambda z, y, **memory: losses.contrastive_loss(
            z, y, temperature=temperature, **options, **memory)
    if name == "simclr":  # NT-Xent: labels ignored, no temperature rescaling.
        return lambda z, y, **memory: losses.contrastive_loss(
            z, None, temperature=temperature, scale_by_temperature=False, **memory)
    if name == "n_pairs":
        return lambda z, y: losses.n_pairs_loss(z, y, **options)
    if name == "triplet":
        return lambda z, y: losses.triplet_loss(z, y, **options)
    if name == "max_margin":
        return lambda z, y: losses.max_margin_contrastive_loss(z, y, **options)
    return None


@keras.saving.register_keras_serializable(package="supcon_tf")
class SupConModel(keras.Model):
    """Contrastive pretraining of `encoder` with a projection head (and optional online probe).

    Args:
        encoder: A Keras model mapping images float `[B, H, W, C]` (in [0, 1]) to feature
            vectors `[B, F]`, e.g. `supcon_tf.models.resnet.resnet(50)` or a
            `keras.applications` model with `pooling="avg"`.
        loss: One of `LOSSES`: "supcon" (SupCon, labels optional: without them it is SimCLR),
            "simclr" (NT-Xent, labels ignored), "cross_entropy" (a classifier on the encoder,
            every view a training example), "n_pairs", "triplet", "max_margin", or "joint"
            (`ce_weight * CE + supcon_weight * SupCon` in one stage).
        num_views: Views per sample V when the input is single-view and `augmenter` makes them.
        projection_units: Sizes of the projection head's Dense layers, e.g. `[2048, 128]`
            (CIFAR SupCon), `[128]` (ImageNet SupCon), `[2048, 2048, 128]` (SimCLR).
        projection_batch_norm: Batch norm in the projection head (SimCLR's head).
        normalize_encoder_output: L2-normalise the encoder output before the head (paper).
        num_classes: Classes of the classifier ("cross_entropy", "joint") and of the online
            probe; None trains no probe (required for the two CE losses).
        temperature: tau of the SupCon / NT-Xent losses.
        loss_options: Extra keyword arguments of the loss function (e.g.
            `{"positives_cap": 5}` for SupCon, `{"margin": 0.2, "mining": "batch_hard"}` for
            triplet).
        label_smoothing: Of the cross-entropy ("cross_entropy", "joint").
        ce_weight, supcon_weight: Weights of the "joint" loss.
        probe: Train the online linear probe (needs `num_classes`).
        augmenter: Optional Keras layer mapping a batch of images `[B, H, W, C]` to a randomly
            augmented batch of the same shape; with it `fit` accepts single-view batches and
            makes `num_views` views in the model. Must be a registered Keras layer to be saved.
        sync_batch_norm: Use synchronized batch norm in the heads.
        memory_size: K > 0 turns on the memory variant (rebuttal; MoCo-style): a momentum copy
            of the encoder and projection head (run in inference mode) embeds every view as a
            key, the contrast set is batch + the K most recent keys, and after each step the
            global batch's keys (all views) are enqueued with their labels. K must be at least
            views x global batch. 0: no memory. Losses "supcon", "simclr", "joint".
        memory_momentum: m of the key encoder's moving average (MoCo: 0.999).
        multi_label: Labels are multi-hot label sets `[B, num_classes]` (needs `num_classes`;
            losses "supcon" and "simclr"): SupCon weighs pairs by the Jaccard similarity of
            their sets, a memory queue stores sets, and there is no online probe (see above).
        gradient_chunks: k >= 1. With k > 1 a training step encodes the batch in k chunks of
            samples without keeping activations, computes the loss on the whole batch, caches
            its gradient with respect to the encoder features and re-encodes each chunk to
            back-propagate it (GradCache, Gao et al. 2021; `supcon_tf.models.gradient_cache`):
            the encoder's activation memory is that of B/k samples, for a second forward pass.
            The step equals k=1 for encoders without batch-dependent layers; batch norm
            normalises each chunk by itself (as unsynchronised replicas do) and updates its
            moving statistics once per chunk. Each replica chunks its own share of the batch.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Raises:
        ValueError: an unknown loss, a CE loss without `num_classes`, `multi_label` with a loss
            that needs one class per sample or without `num_classes`, or an encoder whose
            output is not `[batch, features]`.
    """

    def __init__(self, encoder, loss="supcon", num_views=2, projection_units=(2048, 128),
                 projection_batch_norm=False, normalize_encoder_output=False,
                 num_classes=None, temperature=0.1, loss_options=None, label_smoothing=0.0,
                 ce_weight=1.0, supcon_weight=1.0, probe=True, augmenter=None,
                 sync_batch_norm=False, memory_size=0, memory_momentum=0.999,
                 multi_label=False, gradient_chunks=1, **kwargs):
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(
                f"Unknown loss {loss!r}; use one of: {', '.join(LOSSES)}.")
        if loss in _NEEDS_LABELS and not num_classes:
            raise ValueError(
                f"loss {loss!r} trains a classifier: pass num_classes (the number of labels).")
        if multi_label and loss not in MULTI_LABEL_LOSSES:
            raise ValueError(
                f"loss {loss!r} needs one class per sample and cannot use multi-hot labels: use "
                f"loss='supcon' (Jaccard-weighted positives) or 'simclr', or single-label data.")
        if multi_label and not num_classes:
            raise ValueError("multi_label=True needs num_classes (the length of the multi-hot "
                             "label rows).")
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be an int >= 1, got {num_views!r}.")
        if not isinstance(memory_size, int) or memory_size < 0:
            raise ValueError(f"memory_size must be an int >= 0, got {memory_size!r}.")
        if memory_size and loss not in _WITH_MEMORY:
            raise ValueError(
                f"A memory queue works with the losses {', '.join(_WITH_MEMORY)}, not {loss!r}: "
                "set memory_size=0.")
        if not 0.0 <= memory_momentum <= 1.0:
            raise ValueError(f"memory_momentum must be in [0, 1], got {memory_momentum}.")
        gradient_cache.check_chunks(gradient_chunks)
        output_shape = tuple(encoder.output_shape)
        if len(output_shape) != 2 or output_shape[-1] is None:
            raise ValueError(
                f"The encoder must output feature vectors [batch, features], got "
                f"{output_shape}: end it with global pooling (e.g. pooling='avg') or Flatten.")
        self.encoder = encoder
        self.loss_name = loss
        self.num_views = num_views
        self.projection_units = list(projection_units)
        self.projection_batch_norm = projection_batch_norm
        self.normalize_encoder_output = normalize_encoder_output
        self.num_classes = num_classes
        self.temperature = temperature
        self.loss_options = dict(loss_options or {})
        self.label_smoothing = label_smoothing
        self.ce_weight = ce_weight
        self.supcon_weight = supcon_weight
        self.multi_label = bool(multi_label)
        # The probe is a softmax classifier scored by top-1: meaningless for label sets.
        self.probe_enabled = bool(probe and num_classes and not multi_label)
        self.augmenter = augmenter
        self.sync_batch_norm = sync_batch_norm
        self.memory_size = memory_size
        self.memory_momentum = memory_momentum
        self.gradient_chunks = gradient_chunks
        check_loss_options(loss, temperature, self.loss_options, num_views)
        self._contrastive = _contrastive_fn(loss, temperature, self.loss_options)

        feature_dim = output_shape[-1]
        # Every sublayer is built here from the encoder's output shape: a layer first built
        # inside train_step would be saved unbuilt and silently lost on reload.
        self.projection_head = None
        if loss in _CONTRASTIVE:
            self.projection_head = heads.ProjectionHead(
                self.projection_units, use_batch_norm=projection_batch_norm,
                normalize_input=normalize_encoder_output, sync_batch_norm=sync_batch_norm,
                name="projection_head")
            self.projection_head.build((None, feature_dim))
        self.classifier = None
        if loss in _NEEDS_LABELS:
            self.classifier = heads.ClassificationHead(
                num_classes, stop_gradient=False, name="classifier")
            self.classifier.build((None, feature_dim))
        self.probe = None
        if self.probe_enabled:
            self.probe = heads.ClassificationHead(
                num_classes, stop_gradient=True, name="probe")
            self.probe.build((None, feature_dim))

        self.key_encoder = self.key_head = self.queue = None
        if memory_size:
            # The momentum (key) copies start equal to the query networks and never train:
            # trainable=False keeps them out of the gradients and runs their BN in inference.
            self.key_encoder = keras.models.clone_model(encoder)
            self.key_encoder.set_weights(encoder.get_weights())
            self.key_encoder.trainable = False
            self.key_head = heads.ProjectionHead.from_config(
                {**self.projection_head.get_config(), "name": "key_projection_head"})
            self.key_head.build((None, feature_dim))
            self.key_head.set_weights(self.projection_head.get_weights())
            self.key_head.trainable = False
            self.queue = memory_lib.LabelQueue(
                memory_size, self.projection_units[-1],
                num_classes=num_classes if multi_label else None, name="queue")
            self.queue.build()

        self.built = True  # Every sublayer is built above.

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.contrastive_tracker = keras.metrics.Mean(name="contrastive_loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
        self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self.ce_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # ------------------------------------------------------------------------------------------
    # Inputs.
    # ------------------------------------------------------------------------------------------

    @property
    def metrics(self):
        trackers = [self.loss_tracker]
        if self._contrastive is not None:
            trackers.append(self.contrastive_tracker)
        if self.classifier is not None:
            trackers += [self.ce_tracker, self.ce_accuracy]
        if self.probe is not None:
            trackers += [self.probe_loss_tracker, self.probe_accuracy]
        return trackers

    def _image_rank(self):
        return len(self.encoder.input_shape)

    def _unpack(self, data):
        """(x, y, sample_weight) from a batch: a tuple, or a dict with image and label keys.

        `sample_weight` comes back as None or float32 `[B]` (a `[B, 1]` column is flattened).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            images = next((x[k] for k in _IMAGE_KEYS if k in x), None)
            if images is None:
                raise ValueError(
                    f"A dict batch needs the images under one of {_IMAGE_KEYS}, got keys "
                    f"{sorted(x)}.")
            if y is None:
                y = next((x[k] for k in _LABEL_KEYS if k in x), None)
            x = images
        if sample_weight is not None:
            shape = tuple(sample_weight.shape)
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or (
                    None not in (shape[0], x.shape[0]) and shape[0] != x.shape[0]):
                raise ValueError(
                    f"sample_weight must hold one weight per sample, shape [batch] = "
                    f"[{x.shape[0]}], got shape {shape}.")
            sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return x, y, sample_weight

    def _labels(self, labels):
        """int32 class ids `[B]`, or float32 multi-hot label sets `[B, C]` when `multi_label`."""
        if not self.multi_label:
            return losses.class_ids(labels)
        labels = losses.multi_hot(labels)
        if labels.shape[1] != self.num_classes:
            raise ValueError(
                f"multi-label batches need label sets [batch, {self.num_classes}] "
                f"(num_classes), got shape {tuple(labels.shape)}.")
        return labels

    def _views(self, x, training):
        """float `[B, V, ...]` views of a batch that is multi-view or single-view."""
        rank = len(x.shape)
        image_rank = self._image_rank()
        if rank == image_rank + 1:
            return x
        if rank != image_rank:
            raise ValueError(
                "Expected multi-view images [batch, views, ...] or single-view [batch, ...] "
                f"matching the encoder input "
                f"{tuple(self.encoder.input_shape)}, got shape {tuple(x.shape)}.")
        if self.augmenter is None or not training:
            return x[:, None]
        return ops.stack([self.augmenter(x, training=True) for _ in range(self.num_views)],
                         axis=1)

    def _encode_views(self, views, training, encoder=None):
        """Encoder features float `[V*B, F]` (view-major) of views `[B, V, ...]`."""
        flat = ops.reshape(ops.swapaxes(views, 0, 1), (-1,) + tuple(views.shape[2:]))
        return (encoder or self.encoder)(flat, training=training)

    # ------------------------------------------------------------------------------------------
    # The step.
    # ------------------------------------------------------------------------------------------

    def call(self, inputs, training=False):
        """Encoder embeddings: `[B, F]` for single-view inputs, `[B, V, F]` for multi-view."""
        if len(inputs.shape) == self._image_rank() + 1:
            batch = ops.shape(inputs)[0]
            num_views = inputs.shape[1]
            features = self._encode_views(inputs, training)
            return ops.swapaxes(ops.reshape(features, (num_views, batch, -1)), 0, 1)
        return self.encoder(inputs, training=training)

    def _step_loss(self, features, labels, num_views, training, memory=None,
                   sample_weight=None):
        """Total loss (float32 scalar) of features `[V*B, F]`, updating the trackers.

        `memory`: None or the queue's `(keys [K, d], labels [K])`. `sample_weight`: None or
        float32 `[B]`; each per-sample loss term (contrastive: the sample's anchors; cross-
        entropy and probe: each of its views) is multiplied by its sample's weight and the
        batch mean is taken over the B samples (Keras' "sum_over_batch_size": `sum_i w_i l_i /
        B`, so weights of 1 give the unweighted loss and a weight of 0 drops a sample's anchors;
        it still serves as a contrast and positive for the others).
        """
        batch = ops.shape(features)[0] // num_views
        total = 0.0
        view_weight = None if sample_weight is None else ops.tile(sample_weight, (num_views,))
        if labels is not None:
            labels = self._labels(labels)
            if not self.multi_label:  # (label sets train no classifier or probe)
                view_labels = ops.tile(labels, (num_views,))  # view-major like the features
        elif self.loss_name in _NEEDS_LABELS or (
                self.loss_name != "simclr" and num_views == 1):
            raise ValueError(
                f"loss {self.loss_name!r} with {num_views} view(s) needs labels: pass "
                "(images, labels) batches.")
        if self._contrastive is not None and not (num_views == 1 and labels is None):
            embeddings = self.projection_head(features, training=training)
            embeddings = ops.swapaxes(ops.reshape(
                embeddings, (num_views, batch, self.projection_units[-1])), 0, 1)
            memory_kwargs = {} if memory is None else {
                "memory_features": memory[0], "memory_labels": memory[1]}
            contrastive = _weighted_mean(
                self._contrastive(embeddings, labels, **memory_kwargs), sample_weight)
            self.contrastive_tracker.update_state(contrastive)
            weight = self.supcon_weight if self.loss_name == "joint" else 1.0
            total = total + weight * contrastive
        if self.classifier is not None:
            logits = self.classifier(features)
            ce = _weighted_mean(
                losses.cross_entropy_loss(view_labels, logits, self.label_smoothing), view_weight)
            self.ce_tracker.update_state(ce)
            self.ce_accuracy.update_state(view_labels, logits, sample_weight=view_weight)
            weight = self.ce_weight if self.loss_name == "joint" else 1.0
            total = total + weight * ce
        if self.probe is not None and labels is not None:
            logits = self.probe(features)  # stop_gradient inside: trains the probe only
            probe_loss = _weighted_mean(losses.cross_entropy_loss(view_labels, logits),
                                        view_weight)
            self.probe_loss_tracker.update_state(probe_loss)
            self.probe_accuracy.update_state(view_labels, logits, sample_weight=view_weight)
            total = total + probe_loss
        return total

    def train_step(self, *args):
        """One optimizer step: `train_step(data)` (TensorFlow; returns the logs) or
        `train_step(state, data)` (JAX's functional trainer; returns `(logs, new_state)`, see
        `supcon_tf.models.jax_step`)."""
        if keras.backend.backend() == "jax":
            return jax_step.train_step(self, *args)
        return self._tf_train_step(*args)

    def _tf_train_step(self, data):
        import tensorflow as tf  # The TensorFlow trainer.

        x, y, sample_weight = self._unpack(data)
        views = self._views(x, training=True)
        memory = None
        if self.queue is not None:
            self._check_queue_size(views)
            memory = self.queue(None)
        num_views = views.shape[1]

        def step_loss(features):
            loss = self._step_loss(features, y, num_views, training=True, memory=memory,
                                   sample_weight=sample_weight)
            # Gradients are summed over replicas: divide so their sum is the global mean's.
            return loss, self.optimizer.scale_loss(loss / distribute.num_replicas_in_sync())

        if self.gradient_chunks > 1:
            loss, gradients = gradient_cache.tf_cached_gradients(self, views, step_loss)
        else:
            with tf.GradientTape() as tape:
                loss, scaled = step_loss(self._encode_views(views, training=True))
            gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        if self.queue is not None:
            self._update_memory(views, y)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def _check_queue_size(self, views):
        """The queue must hold at least one step's keys (views x global batch)."""
        batch, num_views = views.shape[0], views.shape[1]
        if batch is not None:
            needed = num_views * batch * distribute.num_replicas_in_sync()
            if needed > self.memory_size:
                raise ValueError(
                    f"memory_size {self.memory_size} is smaller than one step's keys "
                    f"({num_views} views x global batch {needed // num_views}): raise "
                    "memory_size or lower the batch size.")

    def _update_memory(self, views, labels):
        """Momentum-updates the key networks, then enqueues the global batch's keys."""
        memory_lib.momentum_update(
            self.encoder.weights + self.projection_head.weights,
            self.key_encoder.weights + self.key_head.weights, self.memory_momentum)
        batch, num_views = ops.shape(views)[0], views.shape[1]
        keys = self.key_head(self._encode_views(views, training=False, encoder=self.key_encoder))
        keys = ops.swapaxes(ops.reshape(
            ops.stop_gradient(keys), (num_views, batch, self.projection_units[-1])), 0, 1)
        if labels is None:
            labels = ops.zeros((batch, self.num_classes) if self.multi_label else (batch,),
                               "int32")
        labels = self._labels(labels)
        (keys, labels), _ = distribute.gather_global(keys, labels)
        # Sample-major [N, V, d] -> view-major [V*N, d]: the same order on any replica count.
        keys = ops.reshape(ops.swapaxes(keys, 0, 1), (-1, self.projection_units[-1]))
        repeats = (num_views,) if len(labels.shape) == 1 else (num_views, 1)
        self.queue.enqueue(keys, ops.tile(labels, repeats))

    def test_step(self, *args):
        """Evaluation: `test_step(data)`, or `test_step(state, data)` under JAX."""
        if keras.backend.backend() == "jax":
            return jax_step.test_step(self, *args)
        data, = args
        x, y, sample_weight = self._unpack(data)
        views = self._views(x, training=False)
        features = self._encode_views(views, training=False)
        loss = self._step_loss(features, y, views.shape[1], training=False,
                               sample_weight=sample_weight)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------------------------------------
    # Serialisation and export.
    # ------------------------------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "loss": self.loss_name,
            "num_views": self.num_views,
            "projection_units": self.projection_units,
            "projection_batch_norm": self.projection_batch_norm,
            "normalize_encoder_output": self.normalize_encoder_output,
            "num_classes": self.num_classes,
            "temperature": self.temperature,
            "loss_options": self.loss_options,
            "label_smoothing": self.label_smoothing,
            "ce_weight": self.ce_weight,
            "supcon_weight": self.supcon_weight,
            "probe": self.probe_enabled,
            "augmenter": (keras.saving.serialize_keras_object(self.augmenter)
                          if self.augmenter is not None else None),
            "sync_batch_norm": self.sync_batch_norm,
            "memory_size": self.memory_size,
            "memory_momentum": self.memory_momentum,
            "multi_label": self.multi_label,
            "gradient_chunks": self.gradient_chunks,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("augmenter") is not None:
            config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        return cls(**config)

    # ------------------------------------------------------------------------------------------
    # Compilation: the loss and the metrics are the model's own.
    # ------------------------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training: the optimizer (and Keras' `jit_compile`, `run_eagerly`, ...).

        The loss is a constructor argument (`SupConModel(encoder, loss="supcon", ...)`) and the
        model tracks its own metrics (`loss`, `contrastive_loss`, `ce_loss`, `accuracy`,
        `probe_loss`, `probe_accuracy`); a `loss`, `metrics`, `weighted_metrics` or
        `loss_weights` given here would be silently unused, so they are refused.

        Raises:
            ValueError: `loss`, `metrics`, `weighted_metrics` or `loss_weights` was given.
        """
        given = {"loss": loss, "metrics": metrics,
                 "weighted_metrics": kwargs.pop("weighted_metrics", None),
                 "loss_weights": kwargs.pop("loss_weights", None)}
        given = sorted(name for name, value in given.items() if value is not None)
        if given:
            raise ValueError(
                f"SupConModel.compile does not take {', '.join(given)}: the loss is set when "
                f"the model is built (SupConModel(encoder, loss={self.loss_name!r}, "
                "loss_options=...)) and the model tracks its own metrics; pass only the "
                "optimizer (and jit_compile, steps_per_execution, ...).")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a reloaded `.keras` model with its saved optimizer (state restored by
        Keras afterwards)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def export_saved_model(self, path):
        """Writes a SavedModel with `embed`, `project` and (with a classifier or probe)
        `classify` signatures; see `supcon_tf.export.export_saved_model`. (`export` keeps
        Keras' meaning: `keras.Model.export(filepath, format="tf_saved_model", ...)`.)"""
        from supcon_tf import export

        return export.export_saved_model(self, path)
