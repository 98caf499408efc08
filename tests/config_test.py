"""Tests of `supcon_tf.config.PretrainConfig.validate`: every bad value names its flag."""

import re

import pytest


@pytest.mark.parametrize("overrides, message", [
    ({"loss": "supcn"}, "--loss='supcn' is unknown"),
    ({"optimizer": "sgdd"}, "--optimizer='sgdd' is unknown"),
    ({"augmentation": "cutmix"}, "--augmentation='cutmix' is unknown"),
    ({"strategy": "gpu"}, "--strategy='gpu' is unknown"),
    ({"schedule": "linear"}, "--schedule='linear' is unknown"),
    ({"mixed_precision": "fp8"}, "--mixed_precision='fp8' is unknown"),
    ({"stem": "tiny"}, "--stem='tiny' is unknown"),
    ({"depth": 42}, "--depth=42 is unknown"),
    ({"batch_size": 0}, "--batch_size must be a positive integer"),
    ({"image_size": -16}, "--image_size must be a positive integer"),
    ({"num_views": 0}, "--num_views must be a positive integer"),
    ({"checkpoint_every": 0}, "--checkpoint_every must be a positive integer"),
    ({"train_steps": -1}, "--train_steps must be an integer >= 0"),
    ({"train_steps": None}, "pass --epochs or --train_steps"),
    ({"learning_rate": 0.0}, "--learning_rate must be > 0"),
    ({"temperature": -0.1}, "--temperature must be > 0"),
    ({"weight_decay": -1.0}, "--weight_decay must be >= 0"),
    ({"momentum": 1.0}, "--momentum must be in"),
    ({"projection_units": (128, 0)}, "--projection_units must be positive"),
    ({"memory_size": -1}, "--memory_size must be >= 0"),
    ({"strategy": "tpu"}, "needs --tpu"),
    ({"gradient_chunks": 0}, "--gradient_chunks must be a positive integer"),
    ({"samples_per_class": 0}, "--samples_per_class must be a positive integer"),
    ({"batch_size": 10, "samples_per_class": 4}, "--batch_size 10 is not a multiple of "
     "--samples_per_class 4"),
])
def test_config_validation_names_the_flag(overrides, message):
    from supcon_tf import config as config_lib

    values = {"train_steps": 4, **overrides}
    config = config_lib.PretrainConfig(**values)
    with pytest.raises(ValueError, match=re.escape(message)):
        config.validate()
