"""supcon_tf: Supervised Contrastive Learning (Khosla et al., 2020) for TensorFlow 2 / Keras 3.

Importing the package registers every serialisable layer, loss and optimizer, so `.keras` files
reload with `keras.models.load_model` and no `custom_objects`.
"""

from supcon_tf import distribute
from supcon_tf import losses
from supcon_tf import models
from supcon_tf import monitors
from supcon_tf.losses import SupConLoss
from supcon_tf.losses import contrastive_loss
from supcon_tf.models import ClassificationHead
from supcon_tf.models import ProjectionHead
from supcon_tf.models import SupConModel

__version__ = "0.1.0"
