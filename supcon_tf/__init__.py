"""supcon_tf: Supervised Contrastive Learning (Khosla et al., 2020) for TensorFlow 2 / Keras 3."""

from supcon_tf import distribute
from supcon_tf import losses
from supcon_tf.losses import SupConLoss
from supcon_tf.losses import contrastive_loss

__version__ = "0.1.0"
