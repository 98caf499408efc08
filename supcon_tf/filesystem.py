"""Files on any filesystem `tf.io.gfile` reaches (local, `gs://`, `ram://`), written safely.

Every result, configuration and plot of a run goes through these helpers, so a run directory in
a bucket works like a local one and a failed write (a full disk, a revoked bucket permission)
is one `WriteError` naming the path, with the previous version of the file left intact:

- `write_text`/`write_json`/`write_bytes` write a temporary file beside the target and rename
  it over the target, so readers never see half a file;
- `write_figure` renders a matplotlib figure to memory and writes the PNG bytes.

Two quirks of TensorFlow 2.21's `ram://` filesystem (object stores share them in spirit) are
handled here: a file opened with "w" is appended to rather than truncated (so temporary files
are removed first), and `exists(p)` is true when any entry merely starts with `p`.
"""

import io
import json
import os

import tensorflow as tf


class WriteError(OSError):
    """A file could not be written (disk full, permission, ...): names the path."""


def is_local(path):
    """Whether `path` is on the local filesystem (no URL scheme, or `file://`)."""
    return "://" not in str(path) or str(path).startswith("file://")


def _one_line(error):
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(text.split())[:200]


def write_bytes(path, data):
    """Writes `data` to `path` atomically (temporary file + rename).

    Raises:
        WriteError: the write or the rename failed; `path` keeps its previous content.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (tf.errors.OpError, OSError) as e:
        try:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        except (tf.errors.OpError, OSError):
            pass
        raise WriteError(f"cannot write {path} ({_one_line(e)}): free space or fix permissions, "
                         "then run the same command again.") from None


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically; see `write_bytes`."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, value):
    """Writes `value` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_text(path):
    """The UTF-8 text of `path`."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read().decode("utf-8")


def read_json(path):
    """The JSON value stored in `path`."""
    return json.loads(read_text(path))


def write_figure(figure, path, dpi=100):
    """Saves a matplotlib `figure` as a PNG at `path` (rendered in memory, then written)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())


def is_file(path):
    """Whether `path` is an existing file (not a directory, not merely a name prefix)."""
    try:
        return not tf.io.gfile.stat(path).is_directory
    except tf.errors.NotFoundError:
        return False


def is_dir(path):
    """Whether `path` is an existing directory.

    `tf.io.gfile.isdir` on `ram://` is true for any name prefix of an entry, so the parent's
    listing decides there.
    """
    path = str(path).rstrip("/")
    parent, name = os.path.split(path)
    try:
        if not is_local(path) and name not in [e.rstrip("/") for e in
                                                tf.io.gfile.listdir(parent)]:
            return False
        return tf.io.gfile.isdir(path)
    except tf.errors.OpError:
        return False


def is_empty_dir(path):
    """Whether `path` is missing or an empty directory."""
    return not tf.io.gfile.isdir(path) or not tf.io.gfile.listdir(path)


def makedirs(path):
    """Creates directory `path` and its parents (no error when it exists)."""
    tf.io.gfile.makedirs(path)
