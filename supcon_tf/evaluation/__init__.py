"""Evaluation: probes on frozen features, metrics, and the transfer-benchmark registry."""

from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import probes
from supcon_tf.evaluation import transfer
