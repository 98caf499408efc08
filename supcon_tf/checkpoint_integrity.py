"""Checkpoint integrity: restore only what can be read, never lose what is on disk.

A run directory's `checkpoints/` holds `tf.train.CheckpointManager` files: `ckpt-<step>.index`,
`ckpt-<step>.data-*` and the index `checkpoint` (a text proto naming the latest). Any of them
can be damaged by a crash, a full disk or a person. Before a run resumes, `recover` finds the
newest checkpoint whose every tensor reads back and is finite:

- an unreadable checkpoint is reported by name and moved aside into `checkpoints/unreadable/`
  (renamed, never deleted), and the next newest is tried;
- an unreadable or stale index is moved aside too and rebuilt from the checkpoint files present,
  so that the manager's rotation keeps deleting only what it wrote;
- when checkpoints exist but none can be read, `CheckpointError` stops the run: it never starts
  silently from step 0 over a run that had progress.

Every file operation goes through `tf.io.gfile`, so the same holds on `gs://` and `ram://`
(checkpoints are read with `NewCheckpointReader`, which takes the prefix as given:
`tf.train.load_checkpoint` mistakes a `ram://` prefix for a directory).
"""

import os
import re
import time

import numpy as np
import tensorflow as tf

INDEX_FILE = "checkpoint"
UNREADABLE_DIR = "unreadable"
_PREFIX = re.compile(r"^(?P<prefix>.*-(?P<step>\d+))\.index$")


class CheckpointError(ValueError):
    """No checkpoint of a run with checkpoints can be read."""


def present_checkpoints(directory):
    """Checkpoint prefixes with an `.index` file in `directory`, oldest (lowest step) first."""
    if not tf.io.gfile.isdir(directory):
        return []
    found = []
    for name in tf.io.gfile.listdir(directory):
        match = _PREFIX.match(name.rstrip("/"))
        if match:
            found.append((int(match["step"]), os.path.join(directory, match["prefix"])))
    return [prefix for _, prefix in sorted(found)]


def unreadable_reason(prefix):
    """Why checkpoint `prefix` cannot be restored (every tensor read back), or None if it can.

    Float tensors must also be finite: a checkpoint of non-finite weights is as useless as a
    truncated one.
    """
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        for key in reader.get_variable_to_shape_map():
            value = reader.get_tensor(key)
            if (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)
                    and not np.all(np.isfinite(value))):
                return f"{key} holds non-finite values"
    except (tf.errors.OpError, ValueError, IndexError, OSError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return first[:160]
    return None


def _aside_path(path):
    """Where `path` goes when moved aside: `<its dir>/unreadable/<name>[.<time>]`."""
    folder = os.path.join(os.path.dirname(path), UNREADABLE_DIR)
    tf.io.gfile.makedirs(folder)
    target = os.path.join(folder, os.path.basename(path))
    if tf.io.gfile.exists(target):
        target += time.strftime(".%Y%m%d-%H%M%S", time.gmtime())
    return target


def move_aside(paths):
    """Renames each file of `paths` into the `unreadable/` folder beside it; returns the folder."""
    folder = None
    for path in paths:
        target = _aside_path(path)
        tf.io.gfile.rename(path, target)
        folder = os.path.dirname(target)
    return folder


def checkpoint_files(prefix):
    """The files of checkpoint `prefix`: its `.index` and every `.data-*` shard."""
    return sorted(tf.io.gfile.glob(prefix + ".index") + tf.io.gfile.glob(prefix + ".data-*"))


def _read_index(directory):
    """(file name of the latest checkpoint named by the index, whether the index is readable)."""
    path = os.path.join(directory, INDEX_FILE)
    if not tf.io.gfile.exists(path):
        return None, True
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, UnicodeDecodeError, ValueError):
        return None, False
    if state is None or not state.model_checkpoint_path:
        return None, False
    return os.path.basename(state.model_checkpoint_path), True


def recover(directory, log=print):
    """Makes `directory` resumable from its newest readable checkpoint; returns its prefix.

    Args:
        directory: a `tf.train.CheckpointManager` directory (may be missing).
        log: called with one line per checkpoint or index moved aside.

    Returns:
        The prefix of the newest readable checkpoint, or None when there is none and there
        never was one (a new run).

    Raises:
        CheckpointError: checkpoints (or an index naming one) exist but none can be read.
    """
    prefixes = present_checkpoints(directory)
    latest, index_readable = _read_index(directory)
    index_path = os.path.join(directory, INDEX_FILE)
    rebuild = not index_readable or (
        latest is not None and latest not in [os.path.basename(p) for p in prefixes])
    if not index_readable:
        folder = move_aside([index_path])
        log(f"warning: checkpoint index {index_path} is unreadable: moved aside to {folder}; "
            f"rebuilding it from the {len(prefixes)} checkpoint(s) present.")
    moved = 0
    readable = list(prefixes)
    while readable:
        reason = unreadable_reason(readable[-1])
        if reason is None:
            break
        prefix = readable.pop()
        folder = move_aside(checkpoint_files(prefix))
        moved += 1
        rebuild = True
        log(f"warning: checkpoint {prefix} is unreadable ({reason}): moved aside to {folder}; "
            "using the previous one.")
    if not readable:
        if moved:
            what = (f"{moved} unreadable checkpoint(s) moved to "
                    f"{os.path.join(directory, UNREADABLE_DIR)}")
        elif latest is not None:
            what = f"its index names {latest}, whose files are gone"
        elif not index_readable:
            what = "its index was unreadable and no checkpoint file is present"
        else:
            return None  # A new run.
        raise CheckpointError(
            f"no readable checkpoint in {directory} ({what}): restore the files from a backup, "
            "or pass --overwrite to start the run over.")
    if rebuild:
        write_index(directory, readable)
    return readable[-1]


def write_index(directory, prefixes):
    """Writes the index naming `prefixes` (oldest first; the last is the latest), atomically.

    Each entry gets its `.index` file's modification time as its timestamp, as the manager
    records them, so that `tf.train.CheckpointManager` rotation deletes the oldest as usual.
    """
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    stamps = [tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9 for p in prefixes]
    lines += [f"all_model_checkpoint_timestamps: {stamp!r}" for stamp in stamps]
    lines.append(f"last_preserved_timestamp: {min(stamps) - 1.0!r}")
    path = os.path.join(directory, INDEX_FILE)
    if tf.io.gfile.exists(path + ".tmp"):  # `ram://` appends to a file opened with "w".
        tf.io.gfile.remove(path + ".tmp")
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
