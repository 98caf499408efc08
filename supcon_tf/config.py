"""The configuration of a pretraining run: every field with its default, in one place.

`PretrainConfig` is what `supcon_tf.pretrain`'s flags become (the flags read their defaults from
it) and what `<model_dir>/config.json` stores; `identity()` is the part that must match for a
run directory to be resumed.
"""

import dataclasses
import re

# Fields of the configuration that do not change what is trained: a restart may change them.
NON_IDENTITY_FIELDS = ("checkpoint_every", "checkpoint_every_secs", "data_dir", "manual_dir",
                       "tpu", "verbose", "eval_split", "monitor_examples",
                       "skip_unreadable_images")
# Fields added after runs were first written, with the value that reproduces those runs: a
# config.json without them is read with these values (so an older run still resumes).
ADDED_FIELDS = {"gradient_chunks": 1, "samples_per_class": None}
# Losses that ignore labels (a single-class dataset is fine for them).
UNSUPERVISED_LOSSES = ("simclr",)
# Held-out splits tried, in order, when `eval_split` is not given.
EVAL_SPLITS = ("test", "validation")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (the binary's flags, minus file locations).

    Learning rates are per 256 examples (`learning_rate` is scaled to `batch_size` with
    `schedules.scale_learning_rate`). `train_steps`, when set, is the number of optimizer steps
    and overrides `epochs`; otherwise steps = round(epochs * steps_per_epoch). `train_steps=0`
    trains nothing: the run checkpoints and exports its seeded initial weights (an untrained
    baseline, such as the quickstart's).
    `weight_decay_exclusions` are regexes searched in `variable.path` that are excluded from
    weight decay (and LARS's layer adaptation); empty = every variable of rank <= 1 (biases and
    batch norm: SimCLR's rule; SupCon's is batch norm only, `("gamma$", "beta$")`).

    Monitoring (does not change what is trained): `monitor_examples` held-out images of
    `eval_split` (default the source's "test", else "validation" split) and as many training
    images give a kNN top-1 after every epoch and, at the end, a t-SNE plot; 0 turns both off.

    `gradient_chunks` k > 1 encodes each step's batch in k chunks with gradient caching
    (`SupConModel`); `samples_per_class` m makes every global batch hold batch_size / m classes
    with m images each (`pipeline.make_dataset`).
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
    gradient_chunks: int = 1
    samples_per_class: int = None
    num_classes: int = None
    probe: bool = True
    checkpoint_every: int = 1000
    checkpoint_every_secs: float = 600.0
    skip_unreadable_images: bool = False
    mixed_precision: str = "none"
    verbose: int = 2
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
        for name in ("image_size", "batch_size", "num_views", "checkpoint_every",
                     "gradient_chunks"):
            _check_int(name, getattr(self, name))
        _check_int("monitor_examples", self.monitor_examples, minimum=0)
        if self.train_steps is not None:
            _check_int("train_steps", self.train_steps, minimum=0)
        for name in ("num_classes", "num_train_examples", "samples_per_class"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
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
        if self.samples_per_class is not None and self.batch_size % self.samples_per_class:
            raise ValueError(f"--batch_size {self.batch_size} is not a multiple of "
                             f"--samples_per_class {self.samples_per_class}; every batch holds "
                             "batch_size / samples_per_class classes.")
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


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"--{name} must be {wanted}, got {value!r}.")
