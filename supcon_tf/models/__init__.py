"""Encoders and heads. Importing this registers the serialisable layers."""

from supcon_tf.models import heads
from supcon_tf.models import resnet
from supcon_tf.models.heads import ClassificationHead
from supcon_tf.models.heads import ProjectionHead
from supcon_tf.models.heads import l2_normalize
from supcon_tf.models.supcon_model import SupConModel
from supcon_tf.models.resnet import feature_dim
