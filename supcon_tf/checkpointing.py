"""Checkpoints of a run: the manager, restoring with one-line errors, saving (by steps and by
time) with failed writes named. Integrity on restart (unreadable files moved aside) is
`checkpoint_integrity`; the guarantee that nothing non-finite is saved comes from
`train_loop`, which stops before any callback sees such a step."""

import os
import time

import keras
import tensorflow as tf

from supcon_tf import distribute
from supcon_tf import filesystem


def make_checkpoint_manager(run, model_dir):
    """A `tf.train.CheckpointManager` of model (all weights) and optimizer (slots + step)."""

    checkpoint = tf.train.Checkpoint(model=run.model, optimizer=run.optimizer)
    return tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"),
                                      max_to_keep=3)


def restore(checkpoint, path, fix):
    """Restores `path` into `checkpoint`; any failure is one ValueError line ending in `fix`."""

    try:
        checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot restore checkpoint {path} ({first[:200]}): {fix}.") from None


def save_checkpoint(manager, step):
    """Saves checkpoint `ckpt-<step>`; a failed write is one `filesystem.WriteError`.

    `tf.train.CheckpointManager` writes a checkpoint's files under temporary names and lists
    it in its index only once they are complete, so after a failure the previous checkpoints
    are intact and a resumed run starts from the newest of them.
    """
    try:
        return manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
        text = " ".join((getattr(e, "message", None) or str(e)).split())[:200]
        raise filesystem.WriteError(
            f"cannot write checkpoint {step} in {manager.directory} ({text}): free space or fix "
            "permissions, then run the same command to resume from the last checkpoint."
        ) from None


class StepCheckpointer(keras.callbacks.Callback):
    """Saves a checkpoint every `every` optimizer steps and every `every_secs` seconds.

    Args:
        manager: the run's `tf.train.CheckpointManager`.
        optimizer: the optimizer whose `iterations` is the step.
        every: steps between checkpoints.
        every_secs: seconds between checkpoints (measured from the last save or the start).
        strategy: the run's strategy (several workers agree on time-based saves).
        last_saved_step: the step of the checkpoint the run resumed from (None: no checkpoint
            yet, so that a run of zero steps still saves its initial step).
    """

    def __init__(self, manager, optimizer, every, every_secs, strategy=None,
                 last_saved_step=0):
        super().__init__()
        self.manager, self.optimizer = manager, optimizer
        self.every, self.every_secs = every, every_secs
        self.strategy = strategy
        self.last_save = time.monotonic()
        self.last_saved_step = last_saved_step

    def _time_is_up(self):
        """Whether `every_secs` passed; with several workers, on any of them (all save
        together: a save is a collective step of every worker)."""
        late = time.monotonic() - self.last_save >= self.every_secs
        if self.strategy is None or distribute.num_workers(self.strategy) <= 1:
            return late
        return distribute.any_worker(self.strategy, late)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.optimizer.iterations.numpy())
        if step % self.every == 0 or self._time_is_up():
            save_checkpoint(self.manager, step)
            self.last_save = time.monotonic()
            self.last_saved_step = step
