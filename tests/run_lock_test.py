"""Tests of supcon_tf.run_lock: one writer per run directory.

A real second process holds the lock (a subprocess), a dead process's pid is a real finished
child, and the object-store path runs on TensorFlow's in-process `ram://` filesystem.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from helpers import REPO
from supcon_tf import run_lock

_HOLD = """
import sys, time
from supcon_tf import run_lock
with run_lock.RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _write_lock(model_dir, **holder):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, run_lock.LOCK_FILE), "w") as f:
        json.dump(holder, f)


def test_lock_names_host_pid_and_start_and_is_removed_on_exit(tmp_path):
    model_dir = str(tmp_path / "run")
    before = time.time()
    with run_lock.RunLock(model_dir) as lock:
        holder = lock.read()
        assert holder["host"] == socket.gethostname()
        assert holder["pid"] == os.getpid()
        assert before <= holder["start_time"] <= time.time()
    assert not os.path.exists(os.path.join(model_dir, run_lock.LOCK_FILE))


def test_second_process_is_refused_naming_the_holder(tmp_path):
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, model_dir], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.time()
        with pytest.raises(run_lock.RunLockError) as error:
            run_lock.RunLock(model_dir).acquire()
        assert time.time() - start < 5
        message = str(error.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "\n" not in message
        # The holder's lock is untouched.
        with open(os.path.join(model_dir, run_lock.LOCK_FILE)) as f:
            assert json.load(f)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path):
    model_dir = str(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(model_dir, host=socket.gethostname(), pid=dead.pid, start_time=0.0)
    lines = []
    with run_lock.RunLock(model_dir, log=lines.append) as lock:
        assert lock.read()["pid"] == os.getpid()
    assert len(lines) == 1 and f"pid {dead.pid}" in lines[0] and "taking over" in lines[0]


def test_lock_from_another_host_is_kept_and_says_how_to_clear_it(tmp_path):
    model_dir = str(tmp_path / "run")
    _write_lock(model_dir, host="some-other-host", pid=1, start_time=0.0)
    with pytest.raises(run_lock.RunLockError, match="some-other-host.*delete .*lock.json"):
        run_lock.RunLock(model_dir).acquire()
    with open(os.path.join(model_dir, run_lock.LOCK_FILE)) as f:
        assert json.load(f)["host"] == "some-other-host"


def test_unreadable_lock_is_replaced(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, run_lock.LOCK_FILE), "wb") as f:
        f.write(b"\xff\x00garbage")
    lines = []
    with run_lock.RunLock(model_dir, log=lines.append) as lock:
        assert lock.read()["pid"] == os.getpid()
    assert len(lines) == 1


def test_ram_filesystem_lock_refuses_a_second_holder():
    model_dir = "ram://run_lock_test/run"
    with run_lock.RunLock(model_dir):
        other = run_lock.RunLock(model_dir)
        other.holder = dict(other.holder, host="another-host")
        with pytest.raises(run_lock.RunLockError, match=f"pid {os.getpid()}"):
            other.acquire()
    assert not tf.io.gfile.exists(model_dir + "/" + run_lock.LOCK_FILE)
