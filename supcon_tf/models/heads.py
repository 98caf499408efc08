"""Heads placed on an encoder's feature vector: the projection head and the classifier.

* `ProjectionHead` maps encoder features to the L2-normalised embedding the contrastive loss
  uses (paper Sec. 3.1: "projection network"; discarded after pretraining). Linear (`units=[128]`,
  SupCon ImageNet), MLP (`[2048, 128]`, SupCon CIFAR) or the SimCLR head (`[2048, 2048, 128]`
  with batch norm).
* `ClassificationHead` is the linear classifier of stage 2 and of the online probe, optionally
  behind a `stop_gradient` so that no gradient reaches the encoder.

Both normalise in float32 whatever the compute dtype, so under `mixed_float16` the squared norm
neither overflows (features above ~256) nor underflows (features below ~1e-4) in float16.
"""

import numbers

import keras
from keras import ops

# Floor on the squared L2 norm: x / sqrt(max(|x|^2, eps)). Safe in float32 (min normal 1.2e-38),
# where float16 would flush it to zero.
_NORM_EPSILON = 1e-12


def l2_normalize(x, axis=-1):
    """L2-normalises `x` along `axis`, computed in float32.

    Args:
        x: float tensor of any dtype (float16, bfloat16, float32), e.g. `[batch, dim]`.
        axis: Axis to normalise along.

    Returns:
        float32 tensor shaped like `x`, `x / max(||x||, 1e-6)`: unit norm along `axis`, and
        zero (not NaN) where `x` is zero.
    """
    x = ops.cast(x, "float32")
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, _NORM_EPSILON))


def _check_feature_shape(input_shape, layer_name):
    """Raises unless `input_shape` is `[batch, dim]` with a known `dim`."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 2 or input_shape[-1] is None:
        raise ValueError(
            f"{layer_name} expects features [batch, dim] with a known dim, got shape "
            f"{input_shape}; pool or flatten the encoder output first (e.g. "
            "keras.layers.GlobalAveragePooling2D()).")
    return input_shape


@keras.saving.register_keras_serializable(package="supcon_tf")
class ProjectionHead(keras.layers.Layer):
    """Projection network: Dense layers ending in an L2-normalised embedding.

    `units=[d_1, ..., d_n]` gives n Dense layers; ReLU follows every layer but the last, so
    `[128]` is linear and `[2048, 128]` an MLP with one hidden layer. With `use_batch_norm` each
    Dense is followed by batch norm and has no bias (the BN's beta replaces it); the last BN has
    no beta either, as in SimCLR v2's head.

        z = normalize(Dense_n(relu(... relu(Dense_1(normalize?(h))))))

    Args:
        units: Sequence of positive ints, the output size of each Dense layer; the last is the
            embedding dimension. E.g. `[128]`, `[2048, 128]`, `[2048, 2048, 128]`.
        use_batch_norm: Whether each Dense is followed by batch norm (SimCLR head).
        normalize_input: Whether to L2-normalise the encoder output before the first Dense
            (the paper normalises the encoder's representation).
        sync_batch_norm: If True the batch norms are `synchronized=True` (global-batch
            statistics under `tf.distribute`).
        batch_norm_momentum: Momentum of the BN moving statistics.
        batch_norm_epsilon: BN variance epsilon.
        kernel_initializer: Initializer of the Dense kernels (name, dict or object).
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, `trainable`).

    Call args:
        inputs: float `[batch, dim]` encoder features, any float dtype.
        training: Python bool or None; selects batch statistics for the batch norms.

    Returns:
        float32 `[batch, units[-1]]`, each row of unit L2 norm (zero for an all-zero row).

    Raises:
        ValueError: if `units` is empty or not all positive ints, or (when built) the input is
            not `[batch, dim]` with a known `dim`.
    """

    def __init__(self, units=(2048, 128), use_batch_norm=False, normalize_input=False,
                 sync_batch_norm=False, batch_norm_momentum=0.9, batch_norm_epsilon=1e-5,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, numbers.Integral) and not isinstance(units, bool):
            units = [units]
        try:
            units = list(units)
        except TypeError:
            units = None
        if not units or any(isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1
                            for u in units):
            raise ValueError(
                f"units must be a non-empty sequence of positive ints, got {units!r}; e.g. "
                "[128] (linear), [2048, 128] (MLP) or [2048, 2048, 128] (SimCLR).")
        self.units = [int(u) for u in units]
        self.use_batch_norm = bool(use_batch_norm)
        self.normalize_input = bool(normalize_input)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        self.dense_layers = []
        self.batch_norm_layers = []
        for index, size in enumerate(self.units):
            last = index == len(self.units) - 1
            self.dense_layers.append(keras.layers.Dense(
                size, use_bias=not self.use_batch_norm,
                kernel_initializer=keras.initializers.get(
                    keras.initializers.serialize(self.kernel_initializer)),
                dtype=self.dtype_policy, name=f"dense_{index}"))
            if self.use_batch_norm:
                self.batch_norm_layers.append(keras.layers.BatchNormalization(
                    momentum=batch_norm_momentum, epsilon=batch_norm_epsilon,
                    center=not last, synchronized=self.sync_batch_norm,
                    dtype=self.dtype_policy, name=f"batch_norm_{index}"))

    @property
    def input_dtype(self):
        # Keras casts a layer's inputs to `input_dtype` before `call`; keeping float32 (a
        # lossless upcast from float16/bfloat16) lets the input normalisation run before any
        # cast to the compute dtype, so large float32 features do not overflow float16.
        return "float32"

    def build(self, input_shape):
        shape = _check_feature_shape(input_shape, "ProjectionHead")
        for index, dense in enumerate(self.dense_layers):
            dense.build(shape)
            shape = (shape[0], self.units[index])
            if self.use_batch_norm:
                self.batch_norm_layers[index].build(shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.normalize_input:
            x = ops.cast(l2_normalize(x), self.compute_dtype)
        for index, dense in enumerate(self.dense_layers):
            x = dense(x)
            if self.use_batch_norm:
                x = self.batch_norm_layers[index](x, training=training)
            if index < len(self.dense_layers) - 1:
                x = ops.relu(x)
        return l2_normalize(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units[-1])

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs.shape[0], self.units[-1]), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": list(self.units),
            "use_batch_norm": self.use_batch_norm,
            "normalize_input": self.normalize_input,
            "sync_batch_norm": self.sync_batch_norm,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package="supcon_tf")
class ClassificationHead(keras.layers.Layer):
    """Linear classifier on encoder features, optionally behind a stop-gradient.

        logits = Dense(stop_gradient(normalize?(h)))

    With `stop_gradient=True` (stage 2 and the online probe) the classifier trains but no
    gradient flows back into the encoder (paper Sec. 3: linear classifier on the frozen
    representation).

    Args:
        num_classes: Positive int, the number of logits.
        stop_gradient: Whether to block gradients from reaching the inputs.
        normalize_input: Whether to L2-normalise the features (in float32) first.
        use_bias: Whether the Dense layer has a bias.
        kernel_initializer: Initializer of the Dense kernel; default `RandomNormal(0.01)` as in
            the official SupCon classifier.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, `trainable`).

    Call args:
        inputs: float `[batch, dim]` encoder features, any float dtype.

    Returns:
        float32 `[batch, num_classes]` logits (float32 even under mixed precision, so the
        softmax cross-entropy is computed in float32).

    Raises:
        ValueError: if `num_classes` is not a positive int, or (when built) the input is not
            `[batch, dim]` with a known `dim`.
    """

    def __init__(self, num_classes, stop_gradient=True, normalize_input=False, use_bias=True,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                or num_classes < 1):
            raise ValueError(
                f"num_classes must be a positive int, got {num_classes!r}; pass the number of "
                "classes in the labels (e.g. 10 for CIFAR-10).")
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.01)
        self.num_classes = int(num_classes)
        self.stop_gradient = bool(stop_gradient)
        self.normalize_input = bool(normalize_input)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(
            num_classes, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="logits")

    @property
    def input_dtype(self):
        # Keras casts a layer's inputs to `input_dtype` before `call`; keeping float32 (a
        # lossless upcast from float16/bfloat16) lets the input normalisation run before any
        # cast to the compute dtype, so large float32 features do not overflow float16.
        return "float32"

    def build(self, input_shape):
        shape = _check_feature_shape(input_shape, "ClassificationHead")
        self.dense.build(shape)

    def call(self, inputs):
        x = inputs
        if self.stop_gradient:
            x = ops.stop_gradient(x)
        if self.normalize_input:
            x = ops.cast(l2_normalize(x), self.compute_dtype)
        return ops.cast(self.dense(x), "float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "stop_gradient": self.stop_gradient,
            "normalize_input": self.normalize_input,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
