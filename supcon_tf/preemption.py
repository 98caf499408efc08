"""Preemption: SIGTERM/SIGINT become "save at the current step, then stop".

GCE, Kubernetes and Slurm preempt with SIGTERM (then SIGKILL after a grace period); a person
stops a run with Ctrl-C (SIGINT). Either way the trainer should checkpoint the step it is at and
exit non-zero with one line, instead of dying and losing the work since the last checkpoint.

`PreemptionWatcher` installs handlers that only record the signal; the training loop asks
`requested` at each step boundary, saves, and raises `Preempted`. A second signal while the save
is under way is recorded, not acted upon, so the save completes (the platform's SIGKILL is the
hard stop). Handlers are restored on exit, so nothing leaks into the caller's process.

    with PreemptionWatcher() as watcher:
        for step in ...:
            train_one_step()
            if watcher.requested:
                save(step)
                raise Preempted(step)
"""

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
    """Training stopped on a signal after checkpointing `step`."""

    def __init__(self, step, signum=signal.SIGTERM):
        self.step = int(step)
        self.signum = signum
        super().__init__(f"preempted at step {self.step} ({signal.Signals(signum).name}); the "
                         "checkpoint is saved: run the same command to resume.")


class PreemptionWatcher:
    """Records SIGTERM/SIGINT while active (a context manager).

    Outside the main thread (where Python cannot install signal handlers) it is inert and says
    so through `active`.

    Args:
        signals: the signals to watch.
    """

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.signum = None
        self.active = False
        self._previous = {}

    @property
    def requested(self):
        """Whether a watched signal arrived."""
        return self.signum is not None

    def _record(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._record)
            self.active = True
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        self.active = False
        return False
