"""Tests of `supcon_tf.run_dir`: when a run directory is new, resumed, refused or overwritten."""

import dataclasses
import os

import pytest
from helpers import pretrain_config as _config


def test_check_model_dir_decisions(tmp_path):
    from supcon_tf import run_dir

    config = _config()
    missing = str(tmp_path / "missing")
    assert run_dir.check_model_dir(missing, config) == "new"
    assert not os.path.exists(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_dir.check_model_dir(str(empty), config) == "new"

    run = tmp_path / "run"
    run_dir.prepare_model_dir(str(run), config, "new")
    assert run_dir.check_model_dir(str(run), config) == "resume"
    # Where checkpoints go or how often they are written does not change the run.
    assert run_dir.check_model_dir(
        str(run), dataclasses.replace(config, checkpoint_every=7, data_dir="/x")) == "resume"
    other = dataclasses.replace(config, learning_rate=0.1)
    with pytest.raises(run_dir.RunDirectoryError, match="learning_rate=0.5->0.1"):
        run_dir.check_model_dir(str(run), other)
    assert run_dir.check_model_dir(str(run), other, overwrite=True) == "overwrite"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(run_dir.RunDirectoryError, match="holds no config.json"):
        run_dir.check_model_dir(str(foreign), config)
    assert (foreign / "notes.txt").read_text() == "mine"
    run_dir.prepare_model_dir(str(foreign), config,
                               run_dir.check_model_dir(str(foreign), config, overwrite=True))
    assert sorted(os.listdir(foreign)) == ["config.json"]


def test_a_run_written_before_later_fields_still_resumes(tmp_path):
    import json

    from supcon_tf import config as config_lib
    from supcon_tf import run_dir

    config = _config()
    run = tmp_path / "run"
    run_dir.prepare_model_dir(str(run), config, "new")
    stored = json.loads((run / "config.json").read_text())
    for name in config_lib.ADDED_FIELDS:  # as an older release wrote it
        del stored[name]
    (run / "config.json").write_text(json.dumps(stored))
    assert run_dir.check_model_dir(str(run), config) == "resume"
    with pytest.raises(run_dir.RunDirectoryError, match="gradient_chunks=1->2"):
        run_dir.check_model_dir(str(run), dataclasses.replace(config, gradient_chunks=2))
