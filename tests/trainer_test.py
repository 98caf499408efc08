"""Tests of `supcon_tf.trainer` in process: what `build_run` builds and checks, the data seeds.

The trainer's end-to-end behaviour (train, resume, export) is tested through the binary in
pretrain_test.py, faults_test.py and scale_out_test.py.
"""

import re

import numpy as np
import pytest
from helpers import pretrain_config as _config


def _tiny_config(**overrides):
    return _config(dataset="digits", image_size=8, batch_size=8, depth=18, width_multiplier=0.125,
                   projection_units=(16, 8), monitor_examples=0, **overrides)


def test_gradient_chunks_and_samples_per_class_reach_the_model_and_the_batches():
    from supcon_tf import trainer

    run = trainer.build_run(_tiny_config(gradient_chunks=2, samples_per_class=4))
    assert run.model.gradient_chunks == 2
    for _, labels in trainer.epoch_dataset(run, 0).take(3):
        values, counts = np.unique(labels.numpy(), return_counts=True)
        assert len(values) == 2 and (counts == 4).all()  # batch 8 = 2 classes x 4


def test_class_balance_is_refused_for_label_sets():
    from supcon_tf import trainer

    with pytest.raises(ValueError, match="--samples_per_class needs one class per image"):
        trainer.build_run(_config(dataset="voc/2007", samples_per_class=2))


@pytest.mark.parametrize("overrides, message", [
    ({"samples_per_class": 8}, "--samples_per_class 8 does not divide the per-replica batch 4"),
    ({"gradient_chunks": 5}, "--gradient_chunks 5 is more than the per-replica batch 4"),
])
def test_chunks_and_class_balance_are_checked_against_the_replicas(two_cpu_strategy, overrides,
                                                                   message):
    from supcon_tf import trainer

    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.build_run(_tiny_config(**overrides), two_cpu_strategy)


def test_epoch_seeds_are_deterministic_and_distinct():
    from supcon_tf import trainer

    assert trainer.epoch_seed(0, 3) == trainer.epoch_seed(0, 3)
    assert len({trainer.epoch_seed(s, e) for s in range(3) for e in range(50)}) == 150
