"""One writer per run directory: a lock file naming the host, process and start time.

A training process holds `<model_dir>/lock.json` while it writes the run. A second process on
the same directory fails at once with a `RunLockError` naming the holder. A lock left by a
process that died on this host (its pid is gone) is taken over with a warning; a lock from
another host cannot be checked from here, so it stays until a person removes the file (the
error says how).

    with RunLock(model_dir, log=print):
        train(...)

On a local filesystem the lock is created atomically (`O_CREAT | O_EXCL`). Object stores
(`gs://`) have no exclusive create through `tf.io.gfile`: there the lock is written and read
back, which catches every start that is not within the same second as another; say so to users
who launch two jobs at the same instant on a bucket.
"""

import json
import os
import socket
import time

import tensorflow as tf

LOCK_FILE = "lock.json"


class RunLockError(RuntimeError):
    """Another live process holds the run directory."""


def _is_local(path):
    return "://" not in path or path.startswith("file://")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    return True


def describe(holder):
    """One phrase naming a lock's holder: `pid 123 on host-a since 2026-12-04 01:02:03 UTC`."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("start_time", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {started}"


class RunLock:
    """The lock of one run directory (a context manager; `acquire`/`release` also work).

    Args:
        model_dir: the run directory (any `tf.io.gfile` path); created if missing.
        log: called with a one-line warning when a stale lock is taken over.
    """

    def __init__(self, model_dir, log=print):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.log = log
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                       "start_time": time.time()}
        self.held = False

    def read(self):
        """The current holder's record, or None when there is no (readable) lock."""
        try:
            with tf.io.gfile.GFile(self.path, "r") as f:
                holder = json.loads(f.read())
        except (tf.errors.NotFoundError, ValueError, UnicodeDecodeError):
            return None
        return holder if isinstance(holder, dict) else None

    def _create(self):
        """Creates the lock file; False when one already exists."""
        text = json.dumps(self.holder)
        if _is_local(self.path):
            path = self.path[len("file://"):] if self.path.startswith("file://") else self.path
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
        if tf.io.gfile.exists(self.path) and self.read() is not None:
            return False
        with tf.io.gfile.GFile(self.path, "w") as f:
            f.write(text)
        return self.read() == self.holder

    def _stale(self, holder):
        """Whether `holder` is a process of this host that no longer runs (or unreadable)."""
        if holder is None:
            return True
        if holder.get("host") != self.holder["host"]:
            return False
        pid = holder.get("pid")
        return not isinstance(pid, int) or (pid != os.getpid() and not _pid_alive(pid))

    def acquire(self):
        """Takes the lock, or raises `RunLockError` naming the live holder.

        Raises:
            RunLockError: another process (alive on this host, or on another host) holds it.
        """
        tf.io.gfile.makedirs(self.model_dir)
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            holder = self.read()
            if not self._stale(holder):
                raise RunLockError(
                    f"{self.model_dir} is in use by {describe(holder)} (lock {self.path}): wait "
                    "for it to finish, or choose another --model_dir; if that process is dead on "
                    f"another host, delete {self.path}.")
            what = describe(holder) if holder else "an unreadable lock"
            self.log(f"warning: taking over the lock of {self.model_dir} from {what}, which is "
                     "no longer running.")
            if self.read() == holder:  # Still the stale one, not a newcomer's.
                try:
                    tf.io.gfile.remove(self.path)
                except tf.errors.NotFoundError:
                    pass
        raise RunLockError(f"could not take the lock {self.path}: several processes are "
                           "starting on this run directory at once; start only one.")

    def release(self):
        """Removes the lock if this process holds it."""
        if self.held and self.read() == self.holder:
            tf.io.gfile.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
