"""Training monitors: kNN accuracy on a held-out set and a collapse warning (Keras callbacks).

* `KNNAccuracy` embeds a labelled reference set and a held-out set with the model's encoder
  (`evaluation.features.embed_images`) every `frequency` epochs and logs the cosine kNN top-1
  (`evaluation.knn`) as `knn_accuracy`: a label-free view of representation quality while
  contrastive training runs.
* `CollapseMonitor` warns when training has collapsed to a single embedding: the epoch's
  contrastive loss sits at `losses.collapse_value` (ln(N*V - 1), times tau when rescaled) or
  the projected embeddings of a probe batch have no spread left. It logs `embedding_spread`.
"""

import warnings

import keras
import numpy as np
from absl import logging

from supcon_tf import losses
from supcon_tf.evaluation import features
from supcon_tf.evaluation import knn


class KNNAccuracy(keras.callbacks.Callback):
    """Logs the kNN top-1 accuracy of the encoder's embeddings on a held-out set.

    Args:
        reference_images: float `[N, H, W, C]` in [0, 1] (or uint8 in [0, 255]) labelled
            images whose embeddings vote.
        reference_labels: int `[N]`.
        test_images: float `[M, H, W, C]` (or uint8) held-out images.
        test_labels: int `[M]`.
        k: neighbours per query.
        temperature: vote weight exp(similarity / T); None for plain majority.
        frequency: run every this many epochs (and after the last one Keras reports).
        batch_size: images per embedding batch.
    """

    def __init__(self, reference_images, reference_labels, test_images, test_labels, k=20,
                 temperature=0.1, frequency=1, batch_size=256):
        super().__init__()
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}.")
        self.reference = (reference_images, np.asarray(reference_labels))
        self.test = (test_images, np.asarray(test_labels))
        self.k, self.temperature = k, temperature
        self.frequency, self.batch_size = frequency, batch_size
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        accuracy = knn.knn_accuracy(
            features.embed_images(self.model, self.reference[0], self.batch_size),
            self.reference[1],
            features.embed_images(self.model, self.test[0], self.batch_size), self.test[1],
            k=self.k, temperature=self.temperature)
        self.history.append((epoch + 1, accuracy))
        if logs is not None:
            logs["knn_accuracy"] = accuracy


class CollapseMonitor(keras.callbacks.Callback):
    """Warns (Python warning + absl log) when contrastive training has collapsed.

    Args:
        global_batch: N, samples per optimizer step (all replicas).
        num_views: V, views per sample.
        probe_images: Optional float `[P, H, W, C]` images whose projected embeddings'
            spread (mean distance to their mean) is logged as `embedding_spread`.
        loss_tolerance: relative distance to the collapse value that counts as "at" it.
        spread_threshold: spread below which the embeddings count as collapsed.
        log: optional callable taking the one-line warning instead of the Python warning and
            absl log (the pretraining binary prints it).
    """

    def __init__(self, global_batch, num_views, probe_images=None, loss_tolerance=0.005,
                 spread_threshold=1e-3, log=None):
        super().__init__()
        self.global_batch, self.num_views = global_batch, num_views
        self.probe_images = probe_images
        self.loss_tolerance, self.spread_threshold = loss_tolerance, spread_threshold
        self.collapsed_epochs = []
        self.log = log

    def collapse_value(self):
        temperature = getattr(self.model, "temperature", 0.1)
        scaled = (getattr(self.model, "loss_name", "supcon") != "simclr" and
                  getattr(self.model, "loss_options", {}).get("scale_by_temperature", True))
        return losses.collapse_value(self.global_batch, self.num_views, temperature, scaled)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        reasons = []
        loss = logs.get("contrastive_loss")
        if loss is not None:
            value = self.collapse_value()
            if abs(loss - value) <= self.loss_tolerance * value:
                reasons.append(f"the contrastive loss {loss:.4f} sits at the collapse value "
                               f"{value:.4f} = ln(N*V - 1) for N={self.global_batch}, "
                               f"V={self.num_views}")
        head = getattr(self.model, "projection_head", None)
        if self.probe_images is not None and head is not None:
            embeddings = np.asarray(head(self.model.encoder(self.probe_images)))
            spread = float(np.mean(np.linalg.norm(embeddings - embeddings.mean(0), axis=1)))
            logs["embedding_spread"] = spread
            if spread < self.spread_threshold:
                reasons.append(f"the embeddings' spread is {spread:.2e}")
        if reasons:
            self.collapsed_epochs.append(epoch + 1)
            message = (f"Epoch {epoch + 1}: training looks collapsed ({'; '.join(reasons)}): "
                       "every sample gets the same embedding. Lower the learning rate, check "
                       "the augmentations and labels, or raise the temperature.")
            if self.log is not None:
                self.log(f"warning: {message}")
                return
            logging.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
