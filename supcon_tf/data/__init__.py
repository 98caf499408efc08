"""Data: sources (TFDS, image folders, arrays, the bundled digits), augmentation policies and
multi-view input pipelines."""

from supcon_tf.data import augment
from supcon_tf.data import image_folders
from supcon_tf.data import pipeline
from supcon_tf.data import sources
