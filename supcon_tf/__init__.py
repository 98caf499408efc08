"""supcon_tf: Supervised Contrastive Learning (Khosla et al., 2020) for TensorFlow 2 / Keras 3.

Importing the package makes every public subpackage resolve (`supcon_tf.losses`, `.models`,
`.optimizers`, `.schedules`, `.data`, `.evaluation`, `.distribute`, ...) and registers every
serialisable layer, loss, optimizer and schedule, so `.keras` files (with their optimizer state)
reload with `keras.models.load_model` and no `custom_objects`.
"""

from supcon_tf import data
from supcon_tf import distribute
from supcon_tf import evaluation
from supcon_tf import export
from supcon_tf import losses
from supcon_tf import models
from supcon_tf import monitors
from supcon_tf import optimizers
from supcon_tf import schedules
from supcon_tf.losses import SupConLoss
from supcon_tf.losses import contrastive_loss
from supcon_tf.models import ClassificationHead
from supcon_tf.models import ProjectionHead
from supcon_tf.models import SupConModel
from supcon_tf.optimizers import LARS

__version__ = "0.1.0"
