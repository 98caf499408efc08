"""Batch normalization that runs TensorFlow's fused kernel where it applies.

Keras 3's `BatchNormalization` computes the batch moments and the normalisation as a dozen
separate element-wise ops, which on a CPU costs about 2.3x TensorFlow's fused batch-norm kernel
(`FusedBatchNormV3`: one pass for the moments and the output, one for the gradient). In a
ResNet-18 SupCon step that difference is about a seventh of the step.

This module's `BatchNormalization` subclasses `keras.layers.BatchNormalization`: the same
arguments, weights (`gamma`, `beta`, `moving_mean`, `moving_variance`), variable paths and
config, registered as "supcon_tf>BatchNormalization". It keeps Keras' class name on purpose: a
`.keras` file stores each layer's weights under its snake-cased class name
("batch_normalization_3"), so only a same-named class reads the weights of models built with the
stock layer (and checkpoints, keyed by attribute names, restore either way). It computes the
same function:

    training:  y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta,
               moving_mean     <- momentum * moving_mean     + (1 - momentum) * mean_B
               moving_variance <- momentum * moving_variance + (1 - momentum) * var_B
    inference: y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta

where `mean_B`, `var_B` are the moments of the batch over every axis but the channels and
`var_B` is the biased (1/n) variance, as Keras uses. TensorFlow's kernel returns the unbiased
(1/(n-1)) batch variance, which is rescaled by (n-1)/n before the moving average.

The fused kernel is used under the TensorFlow backend for 4-D channels-last inputs (NHWC) of
float32, float16 or bfloat16 (statistics in float32, as Keras keeps them), in training and
inference mode. Everything else takes Keras' own path, unchanged: other backends (JAX),
`synchronized=True` inside a `tf.distribute` replica context with more than one replica (the
moments must be cross-replica sums), masks, batch renormalization, other ranks and axes.
"""

import keras

_FUSED_DTYPES = ("float32", "float16", "bfloat16")


@keras.saving.register_keras_serializable(package="supcon_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel where it can be.

    Takes exactly the arguments of `keras.layers.BatchNormalization` (see the module docstring
    for where the fused kernel applies and what it computes).

    Call arguments:
        inputs: float `[batch, height, width, channels]` for the fused path; any shape Keras'
            layer accepts otherwise.
        training: Python bool; True normalises with the batch moments and updates the moving
            statistics (when the layer is trainable).
        mask: Optional; a mask always takes Keras' path.

    Returns:
        Tensor of the input's shape in the layer's compute dtype.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_call(inputs, training=bool(training) and self.trainable)

    def _fusable(self, inputs, training, mask):
        """Whether the fused kernel computes what Keras' path would for this call."""
        if keras.backend.backend() != "tensorflow" or mask is not None or self.renorm:
            return False
        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or inputs.shape[-1] is None:
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in _FUSED_DTYPES:
            return False
        if training not in (None, True, False):  # A symbolic flag: Keras' path handles it.
            return False
        if training and self.trainable and self.synchronized:
            return not _multi_replica()
        return True

    def _fused_call(self, inputs, training):
        """Normalises NHWC `inputs` with `FusedBatchNormV3`; updates the moving statistics
        when `training`."""
        import tensorflow as tf  # The fused kernel is TensorFlow's.

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,), "float32")
        beta = self.beta if self.center else tf.zeros((channels,), "float32")
        gamma = tf.cast(gamma, "float32")
        beta = tf.cast(beta, "float32")
        if training:
            empty = tf.constant([], "float32")
            outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=True)
            # The kernel's batch variance has Bessel's correction; Keras averages the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = unbiased_variance * ((count - 1.0) / count)
            momentum = self.momentum
            self.moving_mean.assign(
                tf.cast(self.moving_mean, "float32") * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                tf.cast(self.moving_variance, "float32") * momentum
                + variance * (1.0 - momentum))
        else:
            outputs = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=False)[0]
        return tf.cast(outputs, self.compute_dtype)


def _multi_replica():
    """Whether this runs in a `tf.distribute` replica context with more than one replica,
    where synchronized batch norm needs cross-replica moments."""
    import tensorflow as tf  # Only reached under the TensorFlow backend.

    # Keras takes local moments in a cross-replica context too (no replica context there).
    if not tf.distribute.has_strategy() or tf.distribute.get_replica_context() is None:
        return False
    return tf.distribute.get_strategy().num_replicas_in_sync > 1
