"""supcon_tf: Supervised Contrastive Learning (Khosla et al., 2020) for TensorFlow 2 / Keras 3.

Importing the package makes every public subpackage resolve (`supcon_tf.losses`, `.models`,
`.optimizers`, `.schedules`, `.data`, `.evaluation`, `.distribute`, ...) and registers every
serialisable layer, loss, optimizer and schedule, so `.keras` files (with their optimizer state)
reload with `keras.models.load_model` and no `custom_objects`.

The model, its losses, LARS and the schedules are `keras.ops` code that needs no TensorFlow
(they train under `KERAS_BACKEND=jax`). The TensorFlow-only subpackages (`data`, `evaluation`,
`export`, `monitors`: tf.data, SavedModel, ...) are imported with the package when TensorFlow is
installed; without it they are imported on first use, which then names the missing TensorFlow.
"""

import importlib
import importlib.util

from supcon_tf import distribute
from supcon_tf import losses
from supcon_tf import models
from supcon_tf import optimizers
from supcon_tf import schedules
from supcon_tf.losses import SupConLoss
from supcon_tf.losses import contrastive_loss
from supcon_tf.models import ClassificationHead
from supcon_tf.models import ProjectionHead
from supcon_tf.models import SupConModel
from supcon_tf.optimizers import LARS

_TENSORFLOW_ONLY = ("data", "evaluation", "export", "monitors")

if importlib.util.find_spec("tensorflow") is not None:
    from supcon_tf import data
    from supcon_tf import evaluation
    from supcon_tf import export
    from supcon_tf import monitors


def __getattr__(name):
    """Imports a TensorFlow-only subpackage on first use (when TensorFlow was not found)."""
    if name in _TENSORFLOW_ONLY:
        return importlib.import_module(f"supcon_tf.{name}")
    raise AttributeError(f"module 'supcon_tf' has no attribute {name!r}")


__version__ = "0.1.0"
