"""The run directory: what is in `<model_dir>`, and the decision to start, resume or overwrite.

Files: `config.json` (the run's configuration, compared on every restart), `run_facts.json`
(image channels, training examples and classes of the source), `checkpoints/`, `logs/`
(TensorBoard), `history.json` (per-epoch metrics), `loss.png`, `tsne.png`, `saved_model/`,
`results.json`, and `lock.json` while a process trains (`run_lock`). Every path goes through
`tf.io.gfile` (`filesystem`), so a run directory may be in a bucket.

    action = check_model_dir(model_dir, config, overwrite)   # read only
    ...                                                       # build, take the lock
    prepare_model_dir(model_dir, config, action)              # the first write
"""

import os

import tensorflow as tf

from supcon_tf import config as config_lib
from supcon_tf import filesystem
from supcon_tf import run_lock

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.json"
# What `build_run` learnt from the data source (channels, examples, classes), so that
# `load_pretrained` can rebuild the model where the data is absent.
FACTS_FILE = "run_facts.json"


class RunDirectoryError(ValueError):
    """`model_dir` holds another run (or foreign files) and `overwrite` was not given."""


def _run_entries(model_dir):
    """The entries of `model_dir` that belong to a run (the lock of the process holding the
    directory is not one); empty when the directory is missing."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    return [name.rstrip("/") for name in tf.io.gfile.listdir(model_dir)
            if name.rstrip("/") != run_lock.LOCK_FILE]


def check_model_dir(model_dir, config, overwrite=False):
    """Decides what to do with `model_dir` without touching it.

    Returns:
        "new" (missing or empty), "resume" (holds a run of the same configuration) or
        "overwrite" (holds something else and `overwrite` is True).

    Raises:
        RunDirectoryError: it holds a different run or foreign files and `overwrite` is False.
    """
    if filesystem.is_file(model_dir):
        raise RunDirectoryError(f"--model_dir {model_dir} is a file, not a directory.")
    if not _run_entries(model_dir):
        return "new"
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not filesystem.is_file(config_path):
        if overwrite:
            return "overwrite"
        raise RunDirectoryError(
            f"--model_dir {model_dir} is not empty and holds no {CONFIG_FILE}: choose another "
            "--model_dir or pass --overwrite to delete its contents.")
    try:
        stored = filesystem.read_json(config_path)
    except (OSError, ValueError, tf.errors.OpError):
        stored = None
    current = config.identity()
    stored_identity = None
    if isinstance(stored, dict):
        stored = {**config_lib.ADDED_FIELDS, **stored}
        stored_identity = {k: v for k, v in stored.items()
                           if k not in config_lib.NON_IDENTITY_FIELDS}
    if stored_identity == current:
        return "resume"
    if overwrite:
        return "overwrite"
    if stored_identity is None:
        raise RunDirectoryError(f"{config_path} is unreadable: pass --overwrite to start over.")
    differing = sorted(k for k in set(current) | set(stored_identity)
                       if current.get(k) != stored_identity.get(k))
    shown = ", ".join(f"{k}={stored_identity.get(k)!r}->{current.get(k)!r}"
                      for k in differing[:4]) + (", ..." if len(differing) > 4 else "")
    raise RunDirectoryError(
        f"--model_dir {model_dir} holds a run with a different configuration ({shown}): "
        "pass --overwrite to replace it, or choose another --model_dir.")


def prepare_model_dir(model_dir, config, action):
    """Applies `check_model_dir`'s decision: deletes an old run on "overwrite" (all but the
    lock of this process), creates the directory and writes `config.json` (a resumed run keeps
    its own)."""
    if action == "overwrite":
        for name in _run_entries(model_dir):
            path = os.path.join(model_dir, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
    tf.io.gfile.makedirs(model_dir)
    if action != "resume":
        filesystem.write_json(os.path.join(model_dir, CONFIG_FILE), config.to_dict())


def history_path(model_dir):
    """`<model_dir>/history.json`: the per-epoch metrics."""
    return os.path.join(model_dir, HISTORY_FILE)
