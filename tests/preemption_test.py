"""Tests of supcon_tf.preemption: signals are recorded, acted upon at step boundaries, and the
process's own handlers come back afterwards. Real signals are sent to this process."""

import os
import signal
import threading

import pytest

from supcon_tf import preemption


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_recorded_not_fatal_and_handlers_are_restored(signum):
    before = signal.getsignal(signum)
    with preemption.PreemptionWatcher() as watcher:
        assert watcher.active and not watcher.requested
        os.kill(os.getpid(), signum)
        assert watcher.requested and watcher.signum == signum
        os.kill(os.getpid(), signal.SIGTERM)  # A second signal does not replace the first.
        assert watcher.signum == signum
    assert signal.getsignal(signum) is before


def test_preempted_names_the_step_and_how_to_resume():
    message = str(preemption.Preempted(1234, signal.SIGTERM))
    assert message.startswith("preempted at step 1234") and "same command to resume" in message


def test_outside_the_main_thread_it_is_inert():
    seen = {}

    def run():
        with preemption.PreemptionWatcher() as watcher:
            seen["active"] = watcher.active

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"active": False}
