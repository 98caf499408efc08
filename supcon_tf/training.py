"""Pretraining as a library call: config -> objects -> resumable training -> files on disk.

`supcon_tf.pretrain` (the absl binary) turns its flags into a `PretrainConfig` and calls, in
this order (so that every bad value is reported before anything is written):

    action = check_model_dir(model_dir, config, overwrite)   # read only
    run = build_run(config)                                   # objects in memory, no disk
    prepare_model_dir(model_dir, config, action)              # the first write
    results = train(run, model_dir)

Files in `model_dir`: `config.json` (the run's configuration, compared on every restart),
`checkpoints/` (`tf.train.CheckpointManager` of model + optimizer: weights, batch-norm
statistics, the memory queue and momentum encoder, optimizer slots and its step counter),
`logs/` (TensorBoard), `history.json` (per-epoch metrics), `loss.png`, `saved_model/`,
`run_facts.json` (image channels, training examples and classes of the source) and
`results.json`. `load_pretrained(model_dir)` rebuilds the model from `config.json` and
`run_facts.json` and restores a checkpoint (linear evaluation and fine-tuning from checkpoints).

Resume: the latest checkpoint is restored and training continues to the same total step count.
The learning-rate schedule is a function of the optimizer step, which is in the checkpoint. The
data position is restored exactly: the input stream is reseeded deterministically at every data
epoch (seed derived from `(seed, epoch)`), and within the interrupted epoch the batches already
consumed are skipped, so a resumed run sees the same batches as an uninterrupted one while
re-reading at most one epoch.
"""

import dataclasses
import os
import re
import shutil
import signal
import tempfile
import time
import zlib

import keras
import tensorflow as tf

from supcon_tf import checkpoint_integrity
from supcon_tf import distribute
from supcon_tf import filesystem
from supcon_tf import monitors
from supcon_tf import preemption
from supcon_tf import run_lock
from supcon_tf import train_loop

# Fields of the configuration that do not change what is trained: a restart may change them.
NON_IDENTITY_FIELDS = ("checkpoint_every", "checkpoint_every_secs", "data_dir", "manual_dir",
                       "tpu", "verbose", "eval_split", "monitor_examples",
                       "skip_unreadable_images")
# Losses that ignore labels (a single-class dataset is fine for them).
UNSUPERVISED_LOSSES = ("simclr",)
# Held-out splits tried, in order, when `eval_split` is not given.
EVAL_SPLITS = ("test", "validation")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
# What `build_run` learnt from the data source (channels, examples, classes), so that
# `load_pretrained` can rebuild the model where the data is absent.
FACTS_FILE = "run_facts.json"


class RunDirectoryError(ValueError):
    """`model_dir` holds another run (or foreign files) and `overwrite` was not given."""


@dataclasses.dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (the binary's flags, minus file locations).

    Learning rates are per 256 examples (`learning_rate` is scaled to `batch_size` with
    `schedules.scale_learning_rate`). `train_steps`, when set, is the number of optimizer steps
    and overrides `epochs`; otherwise steps = round(epochs * steps_per_epoch).
    `weight_decay_exclusions` are regexes searched in `variable.path` that are excluded from
    weight decay (and LARS's layer adaptation); empty = every variable of rank <= 1 (biases and
    batch norm: SimCLR's rule; SupCon's is batch norm only, `("gamma$", "beta$")`).

    Monitoring (does not change what is trained): `monitor_examples` held-out images of
    `eval_split` (default the source's "test", else "validation" split) and as many training
    images give a kNN top-1 after every epoch and, at the end, a t-SNE plot; 0 turns both off.
    """

    dataset: str = "digits"
    split: str = "train"
    data_dir: str = None
    manual_dir: str = None
    num_train_examples: int = None
    image_size: int = 32
    batch_size: int = 256
    epochs: float = None
    train_steps: int = None
    loss: str = "supcon"
    optimizer: str = "lars"
    learning_rate: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_exclusions: tuple = ()
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    strategy: str = "default"
    tpu: str = None
    seed: int = 0
    depth: int = 50
    width_multiplier: float = 1.0
    stem: str = "cifar"
    sync_batch_norm: bool = False
    projection_units: tuple = (2048, 128)
    projection_batch_norm: bool = False
    normalize_encoder_output: bool = False
    temperature: float = 0.1
    label_smoothing: float = 0.0
    num_views: int = 2
    augmentation: str = "simaugment"
    jitter_strength: float = 1.0
    crop_min_area: float = 0.08
    blur_probability: float = 0.0
    flip: bool = True
    memory_size: int = 0
    memory_momentum: float = 0.999
    num_classes: int = None
    probe: bool = True
    checkpoint_every: int = 1000
    checkpoint_every_secs: float = 600.0
    skip_unreadable_images: bool = False
    mixed_precision: str = "none"
    verbose: int = 1
    eval_split: str = None
    monitor_examples: int = 1000

    def to_dict(self):
        """JSON-friendly dict of every field."""
        values = dataclasses.asdict(self)
        values["projection_units"] = [int(u) for u in self.projection_units]
        values["weight_decay_exclusions"] = [str(e) for e in self.weight_decay_exclusions]
        return values

    def identity(self):
        """The fields that must match for a run to be resumed (see `NON_IDENTITY_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}

    def validate(self):
        """Checks names and ranges that need no data or TensorFlow objects.

        Raises:
            ValueError: with a one-line message naming the flag and the fix.
        """
        from supcon_tf import distribute
        from supcon_tf import optimizers
        from supcon_tf import schedules
        from supcon_tf.data import augment
        from supcon_tf.models import resnet
        from supcon_tf.models import supcon_model

        choices = (("loss", supcon_model.LOSSES), ("optimizer", optimizers.OPTIMIZERS),
                   ("schedule", schedules.SCHEDULES), ("strategy", distribute.STRATEGIES),
                   ("augmentation", augment.POLICIES), ("stem", resnet.STEMS),
                   ("mixed_precision", MIXED_PRECISION))
        for name, legal in choices:
            value = getattr(self, name)
            if value not in legal:
                raise ValueError(f"--{name}={value!r} is unknown; use one of "
                                 f"{', '.join(legal)}.")
        if self.depth not in resnet.DEPTHS:
            raise ValueError(f"--depth={self.depth!r} is unknown; use one of "
                             f"{', '.join(str(d) for d in sorted(resnet.DEPTHS))}.")
        for name in ("image_size", "batch_size", "num_views", "checkpoint_every"):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.monitor_examples, bool) or not isinstance(
                self.monitor_examples, int) or self.monitor_examples < 0:
            raise ValueError(f"--monitor_examples must be an integer >= 0, got "
                             f"{self.monitor_examples!r}.")
        for name in ("train_steps", "num_classes", "num_train_examples"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if not self.checkpoint_every_secs > 0:
            raise ValueError(f"--checkpoint_every_secs must be > 0, got "
                             f"{self.checkpoint_every_secs!r}.")
        if self.epochs is None and self.train_steps is None:
            raise ValueError("pass --epochs or --train_steps (the length of pretraining).")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"--epochs must be > 0, got {self.epochs!r}.")
        for name in ("learning_rate", "temperature", "width_multiplier"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)!r}.")
        for name in ("weight_decay", "warmup_epochs", "label_smoothing", "blur_probability"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)!r}.")
        if not 0 < self.crop_min_area <= 1:
            raise ValueError(f"--crop_min_area must be in (0, 1], got {self.crop_min_area!r}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum!r}.")
        if not self.projection_units or any(int(u) < 1 for u in self.projection_units):
            raise ValueError(f"--projection_units must be positive ints, got "
                             f"{list(self.projection_units)!r}; e.g. 2048,128.")
        if self.memory_size < 0:
            raise ValueError(f"--memory_size must be >= 0, got {self.memory_size!r}.")
        for pattern in self.weight_decay_exclusions:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"--weight_decay_exclusions: {pattern!r} is not a regular "
                                 f"expression ({e}); e.g. gamma$,beta$.") from None
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError("--strategy=tpu needs --tpu=<name or grpc://address> "
                             "(--tpu=local on a TPU VM).")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}.")


@dataclasses.dataclass
class Run:
    """The objects of a pretraining run, built by `build_run` (nothing written yet)."""

    config: PretrainConfig
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
    from supcon_tf.data import sources

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
    from supcon_tf.data import sources

    if not config.monitor_examples:
        return None
    candidates = (config.eval_split,) if config.eval_split else EVAL_SPLITS
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


def build_run(config, strategy=None, *, channels=None):
    """Validates `config` and builds strategy, encoder + SupConModel, schedule and optimizer.

    Touches no file except reading the data source's metadata.

    Args:
        config: A `PretrainConfig`.
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

    from supcon_tf import distribute
    from supcon_tf import optimizers
    from supcon_tf import schedules
    from supcon_tf.data import augment
    from supcon_tf.data import sources
    from supcon_tf.models import resnet
    from supcon_tf.models import supcon_model

    config.validate()
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
    num_classes = config.num_classes or sources.num_classes(config.dataset, config.data_dir)
    if config.loss not in UNSUPERVISED_LOSSES and num_classes < 2:
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
    keras.mixed_precision.set_global_policy(
        "float32" if config.mixed_precision == "none" else config.mixed_precision)
    learning_rate = schedules.scale_learning_rate(config.learning_rate, config.batch_size)
    schedule = schedules.build_schedule(
        config.schedule, learning_rate, steps_per_epoch=steps_per_epoch,
        epochs=total_steps / steps_per_epoch, warmup_epochs=config.warmup_epochs)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
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
            memory_size=config.memory_size, memory_momentum=config.memory_momentum)
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
# The run directory.


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
    stored_identity = ({k: v for k, v in stored.items() if k not in NON_IDENTITY_FIELDS}
                       if isinstance(stored, dict) else None)
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
    from supcon_tf.data import pipeline

    config = run.config
    source = run.train_source or config.dataset
    options = dict(training=True, seed=epoch_seed(config.seed, epoch), split=config.split,
                   data_dir=config.data_dir, manual_dir=config.manual_dir,
                   augment_options=augment_options(config))
    if distribute.num_workers(run.strategy) > 1:
        dataset = pipeline.make_distributed_dataset(
            run.strategy, source, config.augmentation, config.num_views, config.batch_size,
            config.image_size, skip=skip, **options)
        return dataset
    dataset = pipeline.make_dataset(source, config.augmentation, config.num_views,
                                    config.batch_size, config.image_size, **options)
    return dataset.skip(skip) if skip else dataset


def make_checkpoint_manager(run, model_dir):
    """A `tf.train.CheckpointManager` of model (all weights) and optimizer (slots + step)."""

    checkpoint = tf.train.Checkpoint(model=run.model, optimizer=run.optimizer)
    return tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"),
                                      max_to_keep=3)


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

    config_path = os.path.join(model_dir, CONFIG_FILE)
    facts_path = os.path.join(model_dir, FACTS_FILE)
    for path in (config_path, facts_path):
        if not filesystem.is_file(path):
            raise ValueError(f"{path} is missing: --model_dir must be a supcon_tf.pretrain run "
                             "directory that has started training.")
    try:
        stored, facts = filesystem.read_json(config_path), filesystem.read_json(facts_path)
        for key in ("projection_units", "weight_decay_exclusions"):
            if key in stored:
                stored[key] = tuple(stored[key])
        config = PretrainConfig(**stored)
        config = dataclasses.replace(config, num_train_examples=facts["num_train_examples"],
                                     num_classes=facts["num_classes"], strategy="default",
                                     tpu=None)
    except (OSError, ValueError, TypeError, KeyError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read the run configuration in {model_dir} ({e}): it was not "
                         "written by this version of supcon_tf.pretrain.") from None
    run = build_run(config, strategy or tf.distribute.get_strategy(),
                    channels=facts["channels"])
    manager = make_checkpoint_manager(run, model_dir)
    path = checkpoint or manager.latest_checkpoint
    if not path:
        raise ValueError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')}: "
                         "pretrain first, or pass --checkpoint=<prefix>.")
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"checkpoint {path} does not exist (pass a prefix such as "
                         f"{os.path.join(model_dir, 'checkpoints', 'ckpt-1000')}).")
    _restore(manager.checkpoint, path, f"it does not match the architecture in {config_path}")
    return run


def _restore(checkpoint, path, fix):
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
        last_saved_step: the step of the checkpoint the run resumed from.
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


def _history_path(model_dir):
    return os.path.join(model_dir, "history.json")


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
    from supcon_tf import export

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
    from supcon_tf.data import image_folders
    from supcon_tf.data import sources

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
    manager = make_checkpoint_manager(run, out)
    latest = tf.train.latest_checkpoint(checkpoints)
    resumed_from = 0
    if latest:
        _restore(manager.checkpoint, latest, "delete the run or pass --overwrite to start over")
        resumed_from = int(run.optimizer.iterations.numpy())
        log(f"resumed from {latest} at step {resumed_from}")
    model_dir = out
    filesystem.write_json(os.path.join(model_dir, FACTS_FILE), {
        "channels": run.channels, "num_train_examples": run.num_train_examples,
        "num_classes": run.num_classes})
    history = {}
    if resumed_from and filesystem.is_file(_history_path(model_dir)):
        history = filesystem.read_json(_history_path(model_dir))
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
        StepCheckpointer(manager, run.optimizer, config.checkpoint_every,
                         config.checkpoint_every_secs, strategy=run.strategy,
                         last_saved_step=resumed_from),
    ]
    checkpointer = callbacks[-1]
    step = resumed_from
    spe = run.steps_per_epoch
    preempted = None
    while step < run.total_steps and preempted is None:
        epoch = step // spe
        steps = min(spe * (epoch + 1), run.total_steps) - step
        skip = step - epoch * spe
        try:
            fit = train_loop.fit(
                run.model, run.strategy, None, initial_epoch=epoch, epochs=epoch + 1,
                steps_per_epoch=steps, callbacks=callbacks, verbose=config.verbose,
                dataset_for_epoch=lambda e, skip=skip: epoch_dataset(run, e, skip=skip))
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
            filesystem.write_json(_history_path(model_dir), history)
    step = int(run.optimizer.iterations.numpy())
    if checkpointer.last_saved_step != step:
        save_checkpoint(manager, step)
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
            (monitors.embed_images(run.model, images), labels)}, seed=config.seed)

    final = {k: v[-1] for k, v in history.items() if k not in ("epoch", "step")}
    results_path = os.path.join(model_dir, RESULTS_FILE)
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
        config: the run's `PretrainConfig` (source, image size).
        split: the split to sample.
        count: Python int > 0, examples wanted (fewer when the split is smaller).
        seed: Python int, seeds the shuffle.

    Returns:
        (uint8 `[n, S, S, C]` images, int64 `[n]` labels), n <= count.
    """
    import numpy as np

    from supcon_tf.data import augment
    from supcon_tf.data import sources

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
    from supcon_tf import monitors

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
        config: a `PretrainConfig`.
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
    action = check_model_dir(model_dir, config, overwrite)
    run = build_run(config, strategy)
    if not distribute.is_chief(run.strategy):  # The chief owns model_dir.
        work_dir = tempfile.mkdtemp(prefix="supcon_worker_")
        try:
            return train(run, model_dir, log=lambda line: None, work_dir=work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    with run_lock.RunLock(model_dir, log=log):
        prepare_model_dir(model_dir, config, action)
        log(f"pretraining {config.loss} on {config.dataset}: {run.total_steps} steps "
            f"({run.steps_per_epoch} per epoch) of batch {config.batch_size}, lr "
            f"{run.learning_rate:g}; model_dir {model_dir} ({action})")
        return train(run, model_dir, log=log)

