"""Pretraining as a library call: config -> objects -> resumable training -> files on disk.

The configuration is `config.PretrainConfig`, the run directory `run_dir`, checkpoints
`checkpointing`; this module builds the run's objects (`build_run`) and trains them (`train`).
`run_pretraining` is the binary's sequence, in this order so that every bad value is reported
before anything is written:

    action = run_dir.check_model_dir(model_dir, config, overwrite)   # read only
    run = build_run(config, strategy)                                 # objects, no disk
    with run_lock.RunLock(model_dir):                                 # one writer
        run_dir.prepare_model_dir(model_dir, config, action)          # the first write
        results = train(run, model_dir)

Multi-label sources (`multilabel.MULTILABEL_SOURCES`: "voc/2007", "coco/2017", ...) train on
multi-hot label sets (`multilabel.load_label_sets`) with `SupConModel(multi_label=True)`:
Jaccard-weighted SupCon, or SimCLR. The online probe and the kNN monitor (with its t-SNE) are
off for them: both score top-1 accuracy of one class per image, which label sets do not have;
evaluate such encoders with `supcon_tf.transfer` (VOC2007 11-point mAP). Losses that need one
class per sample are refused.

`load_pretrained(model_dir)` rebuilds the model from `config.json` and `run_facts.json` and
restores a checkpoint (linear evaluation and fine-tuning from checkpoints).

Resume: the newest readable checkpoint is restored and training continues to the same total
step count. The learning-rate schedule is a function of the optimizer step, which is in the
checkpoint. The data position is restored exactly: the input stream is reseeded
deterministically at every data epoch (seed derived from `(seed, epoch)`), and within the
interrupted epoch the batches already consumed are skipped, so a resumed run sees the same
batches as an uninterrupted one while re-reading at most one epoch.
"""

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import time
import zlib

import keras
import numpy as np
import tensorflow as tf

from supcon_tf import checkpoint_integrity
from supcon_tf import checkpointing
from supcon_tf import config as config_lib
from supcon_tf import distribute
from supcon_tf import export
from supcon_tf import filesystem
from supcon_tf import monitors
from supcon_tf import optimizers
from supcon_tf import preemption
from supcon_tf import run_dir
from supcon_tf import run_lock
from supcon_tf import schedules
from supcon_tf import train_loop
from supcon_tf.data import augment
from supcon_tf.data import image_folders
from supcon_tf.data import multilabel
from supcon_tf.data import pipeline
from supcon_tf.data import sources
from supcon_tf.evaluation import features
from supcon_tf.models import resnet
from supcon_tf.models import supcon_model


@dataclasses.dataclass
class Run:
    """The objects of a pretraining run, built by `build_run` (nothing written yet)."""

    config: config_lib.PretrainConfig
    channels: int
    strategy: object
    model: object
    optimizer: object
    schedule: object
    num_classes: int
    num_train_examples: int
    steps_per_epoch: int
    total_steps: int
    learning_rate: float
    eval_split: str = None
    # The training source as `pipeline.make_dataset` takes it: the source name, or (image
    # folders with `skip_unreadable_images`) the dataset of the readable files, scanned once.
    train_source: object = None
    skipped_images: tuple = ()


def augment_options(config):
    """`build_augmenter` options of the configured policy."""
    if config.augmentation == "eval":
        return {}
    options = {"crop_area": (config.crop_min_area, 1.0), "flip": config.flip}
    if config.augmentation in ("simaugment", "stacked_randaugment"):
        options.update(jitter_strength=config.jitter_strength,
                       blur_probability=config.blur_probability)
    return options


def _training_source(config):
    """(the source for `make_dataset`, its `tf.data.Dataset`, skipped unreadable images)."""
    if multilabel.is_multilabel(config.dataset):
        dataset = multilabel.load_label_sets(config.dataset, config.split, config.data_dir,
                                             manual_dir=config.manual_dir)
        return config.dataset, dataset, ()

    if config.skip_unreadable_images and config.dataset.startswith(sources.FOLDER_PREFIX):
        folder = sources.folder_source(config.dataset[len(sources.FOLDER_PREFIX):],
                                       config.split, skip_unreadable_images=True)
        dataset = folder.dataset()
        return dataset, dataset, tuple(path for path, _ in folder.skipped)
    dataset = sources.load_source(config.dataset, config.split, data_dir=config.data_dir,
                                  manual_dir=config.manual_dir)
    return config.dataset, dataset, ()


def _source_facts(config, dataset):
    """(number of training examples, image channels) of the configured source's `dataset`."""
    channels = dataset.element_spec[0].shape[-1] or 3
    count = config.num_train_examples
    if count is None:
        count = int(dataset.cardinality())
        if count < 0:
            raise ValueError(f"the size of {config.dataset!r} split {config.split!r} is unknown; "
                             "pass --num_train_examples.")
    return count, int(channels)


def resolve_eval_split(config):
    """The held-out split the monitors read, or None when monitoring is off or there is none.

    Raises:
        ValueError: an explicit `config.eval_split` that the source does not have.
    """
    # The kNN monitor scores top-1 of one class per image: off for label sets.
    if not config.monitor_examples or multilabel.is_multilabel(config.dataset):
        return None
    candidates = (config.eval_split,) if config.eval_split else config_lib.EVAL_SPLITS
    for split in candidates:
        try:
            sources.load_source(config.dataset, split, data_dir=config.data_dir,
                                manual_dir=config.manual_dir)
        except ValueError as e:
            if config.eval_split:
                raise ValueError(f"--eval_split={split!r}: {e}") from None
            continue
        return split
    return None


@contextlib.contextmanager
def dtype_policy(mixed_precision):
    """Sets Keras' global dtype policy for what is built inside, then restores the previous one.

    The layers built inside keep the policy (Keras layers read it at construction), so the run's
    model computes in `mixed_precision` while nothing built after it is affected.

    Args:
        mixed_precision: "none" (float32), "mixed_float16" or "mixed_bfloat16".
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        "float32" if mixed_precision == "none" else mixed_precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_run(config, strategy=None, *, channels=None):
    """Validates `config` and builds strategy, encoder + SupConModel, schedule and optimizer.

    Touches no file except reading the data source's metadata.

    Args:
        config: A `config.PretrainConfig`.
        strategy: Optional `tf.distribute.Strategy` to use instead of `config.strategy`.
        channels: Image channels; with it, `config.num_train_examples` and
            `config.num_classes` set, the data source is not opened at all (to build a
            configuration's objects where its data is absent).

    Returns:
        A `Run`.

    Raises:
        ValueError: a bad configuration (one-line message); `sources.DatasetUnavailableError`
            (a `ValueError`) when the data is not here.
    """
    config.validate()
    multi_label = multilabel.is_multilabel(config.dataset)
    if multi_label and config.loss not in supcon_model.MULTI_LABEL_LOSSES:
        raise ValueError(f"--loss={config.loss} needs one class per image, but "
                         f"{config.dataset!r} has label sets: use --loss=supcon "
                         "(Jaccard-weighted positives) or --loss=simclr.")
    if multi_label and config.samples_per_class:
        raise ValueError(f"--samples_per_class needs one class per image, but "
                         f"{config.dataset!r} has label sets: leave --samples_per_class unset.")
    augment.build_augmenter(config.augmentation, config.image_size, **augment_options(config))
    eval_split = None
    train_source, skipped = config.dataset, ()
    if channels is None or config.num_train_examples is None or config.num_classes is None:
        train_source, dataset, skipped = _training_source(config)
        count, channels = _source_facts(config, dataset)
        eval_split = resolve_eval_split(config)
    else:
        count = config.num_train_examples
    if config.batch_size > count:
        raise ValueError(f"--batch_size {config.batch_size} exceeds the {count} training "
                         f"examples of {config.dataset!r}.")
    num_classes = config.num_classes or (
        multilabel.num_classes(config.dataset) if multi_label
        else sources.num_classes(config.dataset, config.data_dir))
    if config.loss not in config_lib.UNSUPERVISED_LOSSES and num_classes < 2:
        raise ValueError(f"--loss={config.loss} needs labels of at least 2 classes, but "
                         f"{config.dataset!r} has {num_classes}: every sample would be a "
                         "positive of every other and training collapses; add classes, or use "
                         "--loss=simclr for unlabelled images.")
    steps_per_epoch = count // config.batch_size
    if config.train_steps is not None:
        total_steps = config.train_steps
    else:
        total_steps = max(1, int(round(config.epochs * steps_per_epoch)))
    if config.memory_size and config.memory_size < config.num_views * config.batch_size:
        raise ValueError(f"--memory_size {config.memory_size} is smaller than one step's keys "
                         f"({config.num_views} views x batch {config.batch_size}).")
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, tpu=config.tpu)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size {config.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas.")
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    if config.samples_per_class and per_replica % config.samples_per_class:
        raise ValueError(f"--samples_per_class {config.samples_per_class} does not divide the "
                         f"per-replica batch {per_replica} (--batch_size {config.batch_size} / "
                         f"{strategy.num_replicas_in_sync} replicas); use a batch size that is a "
                         f"multiple of {config.samples_per_class * strategy.num_replicas_in_sync}.")
    if config.gradient_chunks > per_replica:
        raise ValueError(f"--gradient_chunks {config.gradient_chunks} is more than the "
                         f"per-replica batch {per_replica}; use at most {per_replica}.")
    learning_rate = schedules.scale_learning_rate(config.learning_rate, config.batch_size)
    if total_steps:
        schedule = schedules.build_schedule(
            config.schedule, learning_rate, steps_per_epoch=steps_per_epoch,
            epochs=total_steps / steps_per_epoch, warmup_epochs=config.warmup_epochs)
    else:  # --train_steps=0 takes no step (the initial weights are exported): any rate will do.
        schedule = schedules.build_schedule("constant", learning_rate,
                                            steps_per_epoch=steps_per_epoch, epochs=1)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), dtype_policy(config.mixed_precision):
        encoder = resnet.resnet(
            config.depth, (config.image_size, config.image_size, channels),
            width_multiplier=config.width_multiplier, stem=config.stem,
            sync_batch_norm=config.sync_batch_norm)
        model = supcon_model.SupConModel(
            encoder, loss=config.loss, num_views=config.num_views,
            projection_units=[int(u) for u in config.projection_units],
            projection_batch_norm=config.projection_batch_norm,
            normalize_encoder_output=config.normalize_encoder_output, num_classes=num_classes,
            temperature=config.temperature, label_smoothing=config.label_smoothing,
            probe=config.probe, sync_batch_norm=config.sync_batch_norm,
            memory_size=config.memory_size, memory_momentum=config.memory_momentum,
            gradient_chunks=config.gradient_chunks, multi_label=multi_label)
        optimizer = optimizers.build_optimizer(
            config.optimizer, schedule, config.weight_decay, momentum=config.momentum, stage=1,
            exclude_from_weight_decay=list(config.weight_decay_exclusions) or None)
        model.compile(optimizer=optimizer)
        model.optimizer.build(model.trainable_variables)
    return Run(config=config, channels=int(channels), strategy=strategy, model=model,
               optimizer=model.optimizer,
               schedule=schedule, num_classes=num_classes, num_train_examples=count,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps,
               learning_rate=learning_rate, eval_split=eval_split,
               train_source=train_source, skipped_images=skipped)


# ----------------------------------------------------------------------------------------------
# Training.


def epoch_seed(seed, epoch):
    """The data seed of one data epoch: a pure function of the run seed and the epoch index."""
    return zlib.crc32(f"{seed}/epoch/{epoch}".encode()) & 0x7FFFFFFF


def epoch_dataset(run, epoch, skip=0):
    """The batches of data epoch `epoch` (reseeded deterministically), first `skip` dropped.

    One worker: a `tf.data.Dataset` of global batches (the loop splits each over the local
    replicas). Several workers: a distributed dataset in which each worker reads its own shard
    of the source (every example once per epoch over all workers) with its own seeds, in
    per-replica batches of `batch_size / replicas`.
    """
    config = run.config
    source = run.train_source or config.dataset
    options = dict(training=True, seed=epoch_seed(config.seed, epoch), split=config.split,
                   data_dir=config.data_dir, manual_dir=config.manual_dir,
                   augment_options=augment_options(config),
                   samples_per_class=config.samples_per_class)
    if distribute.num_workers(run.strategy) > 1:
        dataset = pipeline.make_distributed_dataset(
            run.strategy, source, config.augmentation, config.num_views, config.batch_size,
            config.image_size, skip=skip, **options)
        return dataset
    dataset = pipeline.make_dataset(source, config.augmentation, config.num_views,
                                    config.batch_size, config.image_size, **options)
    return dataset.skip(skip) if skip else dataset


def load_pretrained(model_dir, *, checkpoint=None, strategy=None):
    """Rebuilds a pretraining run's model from its directory and restores a checkpoint.

    The configuration comes from `<model_dir>/config.json` and the source facts from
    `run_facts.json`, so the data need not be present. The model is built under `strategy`
    (default: the current one, not the run's `--strategy`: evaluation may run elsewhere).

    Args:
        model_dir: a `supcon_tf.pretrain` run directory.
        checkpoint: a checkpoint prefix (`.../checkpoints/ckpt-<step>`); default the latest.
        strategy: optional `tf.distribute.Strategy`.

    Returns:
        A `Run` whose model (encoder, head, probe, memory) holds the checkpoint's weights.

    Raises:
        ValueError: a missing or foreign directory, no checkpoint, or a checkpoint that does
            not match the configured architecture (one line each, naming the fix).
    """
    config_path = os.path.join(model_dir, run_dir.CONFIG_FILE)
    facts_path = os.path.join(model_dir, run_dir.FACTS_FILE)
    for path in (config_path, facts_path):
        if not filesystem.is_file(path):
            raise ValueError(f"{path} is missing: --model_dir must be a supcon_tf.pretrain run "
                             "directory that has started training.")
    try:
        stored, facts = filesystem.read_json(config_path), filesystem.read_json(facts_path)
        for key in ("projection_units", "weight_decay_exclusions"):
            if key in stored:
                stored[key] = tuple(stored[key])
        config = config_lib.PretrainConfig(**stored)
        config = dataclasses.replace(config, num_train_examples=facts["num_train_examples"],
                                     num_classes=facts["num_classes"], strategy="default",
                                     tpu=None)
    except (OSError, ValueError, TypeError, KeyError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read the run configuration in {model_dir} ({e}): it was not "
                         "written by this version of supcon_tf.pretrain.") from None
    run = build_run(config, strategy or tf.distribute.get_strategy(),
                    channels=facts["channels"])
    manager = checkpointing.make_checkpoint_manager(run, model_dir)
    path = checkpoint or manager.latest_checkpoint
    if not path:
        raise ValueError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')}: "
                         "pretrain first, or pass --checkpoint=<prefix>.")
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"checkpoint {path} does not exist (pass a prefix such as "
                         f"{os.path.join(model_dir, 'checkpoints', 'ckpt-1000')}).")
    checkpointing.restore(manager.checkpoint, path,
                          f"it does not match the architecture in {config_path}")
    return run


class PreemptionCheck(keras.callbacks.Callback):
    """Raises `preemption.Preempted` after the current step once `watcher` saw SIGTERM/SIGINT.

    Raising (rather than `stop_training`) skips the epoch-end work (the kNN monitor, logs),
    so the process saves and exits within the platform's grace period.
    """

    def __init__(self, watcher, strategy=None):
        super().__init__()
        self.watcher = watcher
        self.strategy = strategy

    def on_train_batch_end(self, batch, logs=None):
        requested = self.watcher.requested
        if self.strategy is not None and distribute.num_workers(self.strategy) > 1:
            # A signal to any worker stops every worker after the same step (all of them
            # then take part in the same checkpoint).
            requested = distribute.any_worker(self.strategy, requested)
        if requested:
            raise preemption.Preempted(self.model.optimizer.iterations.numpy(),
                                       self.watcher.signum or signal.SIGTERM)


def tensorboard_available():
    """Whether the `tensorboard` package (needed by `tf.summary.scalar`) is installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_tensorboard_callback(log_dir, optimizer):
    """`keras.callbacks.TensorBoard` when `tensorboard` is installed; otherwise a callback that
    writes the same per-epoch scalars (`<log_dir>/train/events.out.tfevents.*`, tags
    `epoch_<metric>`, step = epoch) with the raw `tf.summary.write`, which needs no tensorboard
    package (TensorFlow 2.21 does not install it)."""

    if tensorboard_available():
        return keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"

    class ScalarTensorBoard(keras.callbacks.Callback):
        """Per-epoch scalars as TensorBoard events (no tensorboard package needed)."""

        def __init__(self):
            super().__init__()
            self._writer = None

        def on_train_begin(self, logs=None):
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))

        def on_epoch_end(self, epoch, logs=None):
            values = dict(logs or {})
            values["learning_rate"] = _current_learning_rate(optimizer)
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.write(f"epoch_{key}", tf.constant(float(value)), step=epoch,
                                     metadata=metadata)
            self._writer.flush()

    return ScalarTensorBoard()


def _current_learning_rate(optimizer):
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def _plot_history(history, path):
    """Loss and accuracy curves per epoch to a PNG (online probe and held-out kNN)."""
    from supcon_tf import plots

    epochs = history.get("epoch", [])
    names = {"probe_accuracy": "online probe (training batches)",
             "accuracy": "classifier (training batches)",
             "knn_accuracy": "kNN top-1 (held-out)"}
    panels = {"training loss": ("mean loss per epoch", {
        key: (epochs, history[key])
        for key in ("loss", "contrastive_loss", "ce_loss", "probe_loss") if key in history})}
    accuracy = {names[key]: (epochs, history[key]) for key in names if key in history}
    if accuracy:
        panels["accuracy"] = ("accuracy", accuracy)
    plots.save_curves(path, panels)


class TrainingStopped(RuntimeError):
    """The run stopped before its last step; `status` is the exit status a binary should use
    and the message is one line saying why and what to do."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def _export(run, model_dir):
    """Writes `<model_dir>/saved_model`, replacing an earlier export only once complete.

    Locally the export goes to a temporary directory that is renamed; on other filesystems
    (object stores, `ram://`) a directory rename is not atomic and may drop files, so the
    SavedModel is written in place after removing the old one.
    """
    saved_model = os.path.join(model_dir, "saved_model")
    target = saved_model + ".tmp" if filesystem.is_local(model_dir) else saved_model
    try:
        for path in {target, saved_model} if target == saved_model else {target}:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
        signatures = export.export_saved_model(run.model, target)
        if target != saved_model:
            if tf.io.gfile.isdir(saved_model):
                tf.io.gfile.rmtree(saved_model)
            tf.io.gfile.rename(target, saved_model)
    except (tf.errors.OpError, OSError) as e:
        text = " ".join((getattr(e, "message", None) or str(e)).split())[:200]
        raise filesystem.WriteError(f"cannot write the SavedModel {saved_model} ({text}): free "
                                    "space, then run the same command again.") from None
    return signatures


def _data_error(run, error):
    """A one-line `ValueError` naming the unreadable image behind a failure while reading an
    image folder (training or monitor split), or None when that is not the cause."""
    del error  # The reader's error does not say which file: find it.
    config = run.config
    if not config.dataset.startswith(sources.FOLDER_PREFIX):
        return None
    root = config.dataset[len(sources.FOLDER_PREFIX):]
    for split in dict.fromkeys(s for s in (config.split, run.eval_split) if s):
        failures = image_folders.unreadable_images(sources.folder_source(root, split).paths)
        if failures:
            return ValueError(image_folders.describe_unreadable(failures))
    return None


def train(run, model_dir, log=print, *, work_dir=None):
    """Trains (resuming from the newest readable checkpoint in `model_dir`), writes every output.

    Run safety: unreadable checkpoints are moved aside (`checkpoint_integrity`); a non-finite
    loss or weight stops the run before anything of it is saved; SIGTERM/SIGINT checkpoint the
    current step and stop; a failed write names its path. The caller holds the run's lock.

    Args:
        run: A `Run` from `build_run`.
        model_dir: The prepared run directory (`prepare_model_dir`).
        log: Callable taking one progress line.
        work_dir: a worker that is not the chief (multi-worker): it reads the chief's
            checkpoints in `model_dir` and writes everything to this temporary directory.

    Returns:
        The results dict also written to `<model_dir>/results.json`.

    Raises:
        TrainingStopped: non-finite values (status 1) or a signal (status 128 + signal), with
            one line naming the step and what to do.
        ValueError: an unreadable training image or no readable checkpoint (one line).
        filesystem.WriteError: a file could not be written (one line naming it).
    """
    with preemption.PreemptionWatcher() as watcher:
        return _train(run, model_dir, log, watcher, work_dir=work_dir)


def _train(run, model_dir, log, watcher, work_dir=None):
    config = run.config
    start_time = time.time()
    chief = work_dir is None
    checkpoints = os.path.join(model_dir, "checkpoints")
    if chief:
        checkpoint_integrity.recover(checkpoints, log=log)
    distribute.barrier(run.strategy)  # Other workers read the chief's recovered checkpoints.
    # A worker that is not the chief resumes from the chief's checkpoints and writes its own
    # (every worker takes part in each save) to `work_dir`, which the caller removes.
    out = model_dir if chief else work_dir
    manager = checkpointing.make_checkpoint_manager(run, out)
    latest = tf.train.latest_checkpoint(checkpoints)
    resumed_from = 0
    if latest:
        checkpointing.restore(manager.checkpoint, latest,
                              "delete the run or pass --overwrite to start over")
        resumed_from = int(run.optimizer.iterations.numpy())
        log(f"resumed from {latest} at step {resumed_from}")
    model_dir = out
    filesystem.write_json(os.path.join(model_dir, run_dir.FACTS_FILE), {
        "channels": run.channels, "num_train_examples": run.num_train_examples,
        "num_classes": run.num_classes})
    history = {}
    if resumed_from and filesystem.is_file(run_dir.history_path(model_dir)):
        history = filesystem.read_json(run_dir.history_path(model_dir))
    try:
        knn = _make_knn_monitor(run)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
        raise _data_error(run, e) or e from None
    collapse = monitors.CollapseMonitor(config.batch_size, config.num_views, log=log)
    callbacks = [knn] if knn else []  # First: the TensorBoard callback logs its knn_accuracy.
    callbacks += [
        make_tensorboard_callback(os.path.join(model_dir, "logs"), run.optimizer),
        collapse,
        PreemptionCheck(watcher, run.strategy),
        checkpointing.StepCheckpointer(manager, run.optimizer, config.checkpoint_every,
                         config.checkpoint_every_secs, strategy=run.strategy,
                         last_saved_step=resumed_from if latest else None),  # 0 steps: ckpt-0
    ]
    checkpointer = callbacks[-1]
    step = resumed_from
    spe = run.steps_per_epoch
    preempted = None
    step_function = train_loop.make_step_function(run.model, run.strategy)  # Traced once.
    while step < run.total_steps and preempted is None:
        epoch = step // spe
        steps = min(spe * (epoch + 1), run.total_steps) - step
        skip = step - epoch * spe
        try:
            fit = train_loop.fit(
                run.model, run.strategy, None, initial_epoch=epoch, epochs=epoch + 1,
                steps_per_epoch=steps, callbacks=callbacks, verbose=config.verbose,
                dataset_for_epoch=lambda e, skip=skip: epoch_dataset(run, e, skip=skip),
                step_function=step_function, total_epochs=-(-run.total_steps // spe))
        except preemption.Preempted as e:
            preempted = e
            break
        except train_loop.NonFiniteError as e:
            newest = manager.latest_checkpoint or "none (no checkpoint was written)"
            raise TrainingStopped(
                f"{e}; nothing of it was saved; newest good checkpoint: {newest}. Lower "
                "--learning_rate (or raise --warmup_epochs) and run again; the same command "
                "resumes from that checkpoint.") from None
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            raise _data_error(run, e) or e from None
        except (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.DeadlineExceededError, tf.errors.CancelledError) as e:
            if distribute.num_workers(run.strategy) <= 1:
                raise
            text = " ".join((getattr(e, "message", None) or str(e)).split())[:160]
            newest = tf.train.latest_checkpoint(checkpoints) or "none yet"
            raise TrainingStopped(
                f"another worker stopped ({type(e).__name__}: {text}); this worker stops too. "
                f"Run the same command on every worker to resume from the newest checkpoint "
                f"({newest}).") from None
        step = int(run.optimizer.iterations.numpy())
        if fit.history:
            history.setdefault("epoch", []).append(epoch + 1)
            history.setdefault("step", []).append(step)
            for key, values in fit.history.items():
                history.setdefault(key, []).append(float(values[-1]))
            filesystem.write_json(run_dir.history_path(model_dir), history)
    step = int(run.optimizer.iterations.numpy())
    if checkpointer.last_saved_step != step:
        checkpointing.save_checkpoint(manager, step)
    if preempted is not None:  # (A signal after the last step lets the run finish.)
        signum = int(watcher.signum or preempted.signum)
        raise TrainingStopped(str(preemption.Preempted(step, signum)), status=128 + signum)

    signatures = _export(run, model_dir)
    if history and chief:
        _plot_history(history, os.path.join(model_dir, "loss.png"))
    if knn and len(knn.test[1]) > 4 and chief:
        from supcon_tf import plots

        images, labels = knn.test
        plots.save_tsne(os.path.join(model_dir, "tsne.png"), {
            f"t-SNE of {len(labels)} held-out embeddings ({config.loss}, {run.eval_split} split)":
            (features.embed_images(run.model, images), labels)}, seed=config.seed)

    final = {k: v[-1] for k, v in history.items() if k not in ("epoch", "step")}
    results_path = os.path.join(model_dir, run_dir.RESULTS_FILE)
    results = filesystem.read_json(results_path) if filesystem.is_file(results_path) else {}
    results.update({
        "steps": step, "total_steps": run.total_steps, "steps_per_epoch": spe,
        "resumed_from_step": resumed_from, "dataset": config.dataset, "loss": config.loss,
        "batch_size": config.batch_size, "learning_rate": run.learning_rate,
        "num_classes": run.num_classes, "final": final, "weights_finite": True,
        "signatures": signatures, "pretrain_seconds": round(time.time() - start_time, 1),
        "collapse": {"collapsed_epochs": collapse.collapsed_epochs,
                     "collapse_value": collapse.collapse_value()},
        "skipped_images": {"count": len(run.skipped_images),
                           "files": list(run.skipped_images[:100])},
    })
    for key in ("probe_accuracy", "knn_accuracy"):
        if key in final:
            results[key] = final[key]
    if knn:
        results["monitor"] = {"eval_split": run.eval_split, "examples": len(knn.test[1])}
    filesystem.write_json(results_path, results)
    distribute.barrier(run.strategy)  # Workers end together, once the chief has written all.
    return results


def monitor_arrays(config, split, count, seed):
    """A seeded sample of `count` images of `split`, eval-cropped, as uint8 arrays.

    Args:
        config: the run's `config.PretrainConfig` (source, image size).
        split: the split to sample.
        count: Python int > 0, examples wanted (fewer when the split is smaller).
        seed: Python int, seeds the shuffle.

    Returns:
        (uint8 `[n, S, S, C]` images, int64 `[n]` labels), n <= count.
    """
    resize = augment.build_augmenter("eval", config.image_size)
    data = sources.load_source(config.dataset, split, data_dir=config.data_dir,
                               manual_dir=config.manual_dir,
                               skip_unreadable_images=config.skip_unreadable_images)
    data = data.map(lambda image, label: (tf.cast(tf.round(resize(image) * 255.0), tf.uint8),
                                          label), num_parallel_calls=tf.data.AUTOTUNE)
    data = data.shuffle(2 * count, seed=seed).take(count).batch(256)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data])
    return np.concatenate(images), np.concatenate(labels)


def _make_knn_monitor(run):
    """A `monitors.KNNAccuracy` on `monitor_examples` train and held-out images, or None."""
    config = run.config
    if run.eval_split is None:
        return None
    reference = monitor_arrays(config, config.split, config.monitor_examples, config.seed)
    held_out = monitor_arrays(config, run.eval_split, config.monitor_examples, config.seed + 1)
    return monitors.KNNAccuracy(*reference, *held_out, k=min(20, len(reference[1])))


def run_pretraining(config, model_dir, *, overwrite=False, log=print, strategy=None):
    """Checks, builds and trains in one call (the binary's sequence; see the module docstring).

    The run directory is locked (`run_lock.RunLock`) from its first write to the end. Under
    a multi-worker strategy only the chief writes it; the other workers write to temporary
    directories that they remove (the Keras convention) and print nothing.

    Args:
        config: a `config.PretrainConfig`.
        model_dir: the run directory (any `tf.io.gfile` path).
        overwrite: replace a different run found in `model_dir`.
        log: callable taking one progress line.
        strategy: the `tf.distribute.Strategy`, created by the caller before any other
            TensorFlow op (default: `config.strategy`, made here).

    Returns:
        The results dict.

    Raises:
        ValueError: a bad configuration, missing data, another run in `model_dir` (found
            before anything is written), an unreadable image or no readable checkpoint.
        run_lock.RunLockError: another process holds `model_dir`.
        TrainingStopped, filesystem.WriteError: see `train`.
    """
    action = run_dir.check_model_dir(model_dir, config, overwrite)
    run = build_run(config, strategy)
    if not distribute.is_chief(run.strategy):  # The chief owns model_dir.
        work_dir = tempfile.mkdtemp(prefix="supcon_worker_")
        try:
            return train(run, model_dir, log=lambda line: None, work_dir=work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    with run_lock.RunLock(model_dir, log=log):
        run_dir.prepare_model_dir(model_dir, config, action)
        log(f"pretraining {config.loss} on {config.dataset}: {run.total_steps} steps "
            f"({run.steps_per_epoch} per epoch) of batch {config.batch_size}, lr "
            f"{run.learning_rate:g}; model_dir {model_dir} ({action})")
        return train(run, model_dir, log=log)

