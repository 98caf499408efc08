"""Memory: the rebuttal's label-aware key queue and MoCo's momentum encoder.

The paper's rebuttal reaches 79.0-79.1 % on ImageNet with a batch of 256 and a memory of 8,192
128-d keys instead of a batch of 6,144. As in MoCo (He et al., 2019), keys come from a momentum
(exponential moving average) copy of the encoder and projection head, are L2-normalised, and are
enqueued after each step into a ring buffer; SupCon's supervised variant keeps a parallel queue
of labels (-1 for empty slots) so that same-class keys are positives; for multi-label SupCon it
keeps label sets `[size, num_classes]` instead (rows of -1 for empty slots), so that keys weigh by
their Jaccard similarity to the anchor. Queue entries carry no gradient. Under `tf.distribute` every replica enqueues the same global batch of keys (gathered
across replicas), so the queue stays identical everywhere.
"""

import keras
from keras import ops

from supcon_tf import distribute


@keras.saving.register_keras_serializable(package="supcon_tf")
class LabelQueue(keras.layers.Layer):
    """A ring buffer of `size` keys `[dim]` with their labels and a write pointer.

    The state is three non-trainable weights, so it is saved in `.keras` files and checkpoints:
    `keys` float32 `[size, dim]` (zeros), `labels` int32 `[size]` class ids (-1 = empty) or,
    with `num_classes`, int32 `[size, num_classes]` label sets (rows of -1 = empty), `pointer`
    int32 scalar (the next slot to write).

    Args:
        size: K > 0, number of slots.
        dim: d > 0, key dimension.
        num_classes: None (class ids), or C > 0 to store multi-hot label sets `[C]` per key.
        **kwargs: `keras.layers.Layer` arguments.

    Raises:
        ValueError: size, dim or num_classes not a positive int.
    """

    def __init__(self, size, dim, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        checked = (("size", size), ("dim", dim)) + (
            (("num_classes", num_classes),) if num_classes is not None else ())
        for name, value in checked:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LabelQueue {name} must be a positive int, got {value!r}.")
        self.size = size
        self.dim = dim
        self.num_classes = num_classes

    def build(self, input_shape=None):
        self.keys = self.add_weight(
            shape=(self.size, self.dim), initializer="zeros", trainable=False, name="keys")
        label_shape = (self.size,) if self.num_classes is None else (self.size, self.num_classes)
        self.labels = self.add_weight(
            shape=label_shape, initializer=keras.initializers.Constant(-1), dtype="int32",
            trainable=False, name="labels")
        self.pointer = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="pointer")
        self.built = True

    def enqueue(self, keys, labels):
        """Writes `keys` / `labels` at the pointer (wrapping around) and advances it.

        Args:
            keys: float `[n, dim]`, n <= size; equal on every replica (gather them first).
            labels: int `[n]` class ids >= 0, or with `num_classes` 0 / 1 label sets
                `[n, num_classes]` (use 0 for unlabelled keys; -1 would mark them empty).
        """
        count = ops.shape(keys)[0]
        slots = (self.pointer + ops.arange(count, dtype="int32")) % self.size
        new_keys = ops.scatter_update(self.keys, slots[:, None], ops.cast(keys, "float32"))
        new_labels = ops.scatter_update(self.labels, slots[:, None], ops.cast(labels, "int32"))
        distribute.assign_replicated(
            [self.keys, self.labels, self.pointer],
            [new_keys, new_labels, (self.pointer + count) % self.size])

    def call(self, inputs=None):
        """Returns `(keys [size, dim], labels [size] or [size, num_classes])`."""
        return ops.convert_to_tensor(self.keys), ops.convert_to_tensor(self.labels)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim,
                "num_classes": self.num_classes}


def momentum_update(sources, targets, momentum):
    """targets <- momentum * targets + (1 - momentum) * sources, for matching weight lists.

    Covers every weight, batch-norm moving statistics included, so the key encoder's inference
    mode uses averaged statistics too.

    Args:
        sources: The query encoder's (and head's) weights.
        targets: The key encoder's weights, in the same order and shapes.
        momentum: float m in [0, 1] (MoCo: 0.999).
    """
    values = [momentum * ops.convert_to_tensor(t) + (1.0 - momentum) * ops.convert_to_tensor(s)
              for s, t in zip(sources, targets)]
    distribute.assign_replicated(targets, values)
