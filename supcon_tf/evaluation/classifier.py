"""The paper's stage 2: a linear classifier trained on a frozen encoder with a stage-2 optimizer.

After contrastive pretraining the projection head is discarded and a linear layer is trained on
the encoder output behind a stop-gradient, with the encoder's batch norm in inference mode and
no weight decay on the encoder (reference/paper.md, "Official configurations", stage 2), e.g.

| config | optimizer | base LR / 256 | schedule | wd | epochs |
|---|---|---|---|---|---|
| SupCon ImageNet | RMSProp (eps 1e-3) | 0.05 | x0.97 every 0.5 epoch | 1e-6 | 90 |
| SupCon CIFAR-10 | Momentum | 2.5 | x0.2 at epochs 60/75/90 | 0 | 100 |
| SimCLR ImageNet | Nesterov | 0.1 | cosine | 1e-6 | 90 |
| SimCLR CIFAR-10 | Momentum | 0.25 | cosine | 0 | 90 |

`ClassifierConfig` holds these settings (learning rate per 256 examples, scaled by
`batch_size / 256` like pretraining) and builds the schedule and optimizer. Two ways to train:

* `train_on_features`: no augmentation (`augmentation="eval"`). Every image is seen through
  the eval crop, so the frozen features are fixed and computed once; the classifier is
  `probes.sgd_linear_probe` on them (equal, and far cheaper, than streaming the images).
* `train_linear_classifier`: with training augmentation, images are augmented in `tf.data`
  (`augmented_dataset`) and streamed through `LinearClassifier`, a Keras model holding the
  frozen encoder and a `Dense` layer, trained with `fit` (under a `tf.distribute` strategy if
  given). The paper's stage 2 uses random resized crop + horizontal flip:
  `augmentation="crop_flip"`, which is SimAugment with the colour jitter, grayscale and blur
  turned off (`build_augmenter("simaugment", ..., jitter_probability=0,
  grayscale_probability=0, blur_probability=0)`). Any policy of `augment.POLICIES` may be
  used instead (with its default options and `crop_area=(crop_min_area, 1)`, `flip`).

Both use `steps_per_epoch = ceil(num_train / batch_size)`; the streamed pipeline repeats, so an
epoch's last batch is full (it wraps into the next epoch) where `sgd_linear_probe`'s is partial.
Test images always go through the eval crop; scores are top-1 and top-5 accuracy
(`metrics.top_k_accuracy`).
"""

import dataclasses
import math

import numpy as np

from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import probes

# "eval": no augmentation (precomputed features); "crop_flip": the paper's stage-2 augmentation;
# the rest are the pretraining policies of `augment.POLICIES`.
AUGMENTATIONS = ("eval", "crop_flip", "simaugment", "autoaugment", "randaugment",
                 "stacked_randaugment")
# SimAugment without its colour part is the random resized crop + flip.
_CROP_FLIP_OPTIONS = {"jitter_probability": 0.0, "grayscale_probability": 0.0,
                      "blur_probability": 0.0}


@dataclasses.dataclass
class ClassifierConfig:
    """Settings of the stage-2 linear classifier (plain values; the binary fills it from flags).

    Attributes:
        optimizer: a name of `optimizers.OPTIMIZERS` ("momentum", "nesterov", "rmsprop", ...).
        learning_rate: base learning rate per 256 examples (scaled by `batch_size / 256`).
        momentum: momentum of "lars", "momentum", "nesterov" and "rmsprop", in [0, 1).
        epsilon: RMSProp/Adam/LARS epsilon; None = the optimizer's stage-2 default (RMSProp 1e-3).
        weight_decay: coupled L2 on the classifier kernel (the bias and the frozen encoder are
            never decayed).
        epochs: Python int >= 1.
        batch_size: global batch, Python int >= 1.
        schedule: a name of `schedules.SCHEDULES`.
        warmup_epochs: linear warmup in epochs.
        decay_rate: "exponential" / "piecewise" factor; None = 0.97 / 0.2.
        decay_epochs: "exponential" only: epochs between decays.
        boundary_epochs: "piecewise" only: epochs at which the rate is multiplied by
            `decay_rate`; None = 60, 75 and 90 % of `epochs`.
        augmentation: one of `AUGMENTATIONS`.
        crop_min_area: smallest random-crop area fraction of the training augmentation.
        flip: random horizontal flips in the training augmentation.
        normalize_features: L2-normalise the encoder output before the classifier (the official
            SupCon ImageNet configuration; the encoder is unchanged).
        seed: seeds initialisation, shuffling and augmentation.
    """

    optimizer: str = "momentum"
    learning_rate: float = 0.1
    momentum: float = 0.9
    epsilon: float = None
    weight_decay: float = 0.0
    epochs: int = 90
    batch_size: int = 256
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    decay_rate: float = None
    decay_epochs: float = 0.5
    boundary_epochs: tuple = None
    augmentation: str = "eval"
    crop_min_area: float = 0.08
    flip: bool = True
    normalize_features: bool = False
    seed: int = 0

    def to_dict(self):
        """JSON-friendly dict of every field."""
        values = dataclasses.asdict(self)
        if self.boundary_epochs is not None:
            values["boundary_epochs"] = [float(b) for b in self.boundary_epochs]
        return values

    def validate(self):
        """Checks names and ranges without building TensorFlow objects.

        Raises:
            ValueError: one line naming the flag (`--name`) and the legal values.
        """
        from supcon_tf import optimizers
        from supcon_tf import schedules

        for name, legal in (("optimizer", optimizers.OPTIMIZERS),
                            ("schedule", schedules.SCHEDULES), ("augmentation", AUGMENTATIONS)):
            value = getattr(self, name)
            if value not in legal:
                raise ValueError(f"--{name}={value!r} is unknown; use one of "
                                 f"{', '.join(legal)}.")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be an integer >= 1, got {value!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate!r}.")
        for name in ("weight_decay", "warmup_epochs"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)!r}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum!r}.")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"--epsilon must be > 0, got {self.epsilon!r}.")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup_epochs {self.warmup_epochs!r} leaves no training after "
                             f"the warmup (--epochs {self.epochs}).")
        if self.decay_rate is not None:
            if self.schedule not in ("exponential", "piecewise"):
                raise ValueError(f"--decay_rate applies to --schedule=exponential or piecewise, "
                                 f"not {self.schedule!r}.")
            if not self.decay_rate > 0:
                raise ValueError(f"--decay_rate must be > 0, got {self.decay_rate!r}.")
        if not self.decay_epochs > 0:
            raise ValueError(f"--decay_epochs must be > 0, got {self.decay_epochs!r}.")
        if self.boundary_epochs is not None:
            if self.schedule != "piecewise":
                raise ValueError(f"--boundary_epochs applies to --schedule=piecewise, not "
                                 f"{self.schedule!r}.")
            bounds = [float(b) for b in self.boundary_epochs]
            if (not bounds or any(b1 <= b0 for b0, b1 in zip(bounds, bounds[1:]))
                    or bounds[0] < self.warmup_epochs or bounds[-1] > self.epochs):
                raise ValueError(f"--boundary_epochs must be increasing epochs between "
                                 f"--warmup_epochs and --epochs ({self.epochs}), got "
                                 f"{','.join(f'{b:g}' for b in bounds) or 'none'}.")
        if not 0 < self.crop_min_area <= 1:
            raise ValueError(f"--crop_min_area must be in (0, 1], got {self.crop_min_area!r}.")

    @property
    def scaled_learning_rate(self):
        """The peak learning rate used: `learning_rate * batch_size / 256`."""
        from supcon_tf import schedules

        return schedules.scale_learning_rate(self.learning_rate, self.batch_size)

    def steps_per_epoch(self, num_train_examples):
        """`ceil(num_train_examples / batch_size)` optimizer steps per epoch."""
        return max(1, math.ceil(num_train_examples / self.batch_size))

    def schedule_options(self):
        """The `schedules.build_schedule` keywords of this schedule (besides name, rate, length)."""
        options = {"warmup_epochs": float(self.warmup_epochs)}
        if self.schedule in ("exponential", "piecewise") and self.decay_rate is not None:
            options["decay_rate"] = float(self.decay_rate)
        if self.schedule == "exponential":
            options["decay_epochs"] = float(self.decay_epochs)
        if self.schedule == "piecewise" and self.boundary_epochs is not None:
            options["boundary_epochs"] = [float(b) for b in self.boundary_epochs]
        return options

    def optimizer_options(self):
        """The extra `optimizers.build_optimizer` keywords (the epsilon override, if any)."""
        return {} if self.epsilon is None else {"epsilon": float(self.epsilon)}

    def build_schedule(self, num_train_examples):
        """The step-based learning-rate schedule for a training set of this size.

        Args:
            num_train_examples: Python int > 0.

        Returns:
            A `keras.optimizers.schedules.LearningRateSchedule` (peak `scaled_learning_rate`).
        """
        from supcon_tf import schedules

        return schedules.build_schedule(
            self.schedule, self.scaled_learning_rate,
            steps_per_epoch=self.steps_per_epoch(num_train_examples), epochs=self.epochs,
            **self.schedule_options())

    def build_optimizer(self, schedule):
        """The stage-2 optimizer (`optimizers.build_optimizer(..., stage=2)`) on `schedule`."""
        from supcon_tf import optimizers

        return optimizers.build_optimizer(self.optimizer, schedule, self.weight_decay,
                                          momentum=self.momentum, stage=2,
                                          **self.optimizer_options())

    def augmenter_policy(self):
        """(policy, options) of the training augmentation for `augment.build_augmenter`."""
        if self.augmentation == "eval":
            return "eval", {}
        options = {"crop_area": (float(self.crop_min_area), 1.0), "flip": bool(self.flip)}
        if self.augmentation == "crop_flip":
            return "simaugment", {**options, **_CROP_FLIP_OPTIONS}
        return self.augmentation, options


# ----------------------------------------------------------------------------------------------
# Data


def eval_dataset(source, image_size, batch_size, *, split, data_dir=None, manual_dir=None,
                 center_crop_fraction=None):
    """Batches of eval-cropped images of a split, in the source's order, every example kept.

    Args:
        source: a source name for `sources.load_source` ("digits", "folder:<path>", TFDS name).
        image_size: Python int S.
        batch_size: Python int >= 1.
        split, data_dir, manual_dir: passed to `sources.load_source`.
        center_crop_fraction: eval crop option (None: the library default).

    Returns:
        A `tf.data.Dataset` of `(images float32 [B, S, S, C] in [0, 1], labels int64 [B])`.

    Raises:
        ValueError: unknown or unavailable source or split, bad crop fraction.
    """
    from supcon_tf.data import sources
    from supcon_tf.evaluation import finetune

    data = sources.load_source(source, split, data_dir=data_dir, manual_dir=manual_dir)
    return finetune.eval_pipeline(data, image_size, batch_size, center_crop_fraction)


def augmented_dataset(source, image_size, config, *, split, data_dir=None, manual_dir=None):
    """The endless, shuffled stream of augmented training batches (seeded by `config.seed`).

    `tf.data` combines the shuffle's seed with TensorFlow's global seed, so call
    `keras.utils.set_random_seed(...)` before this for a stream that repeats run to run
    whatever ran earlier in the process (the binary sets `config.seed`).

    Args:
        source: a source name, as for `eval_dataset`.
        image_size: Python int S.
        config: a `ClassifierConfig` (augmentation, crop, flip, batch size, seed).
        split, data_dir, manual_dir: passed to `sources.load_source`.

    Returns:
        A repeated `tf.data.Dataset` of `(images float32 [B, S, S, C] in [0, 1], labels int64
        [B])` with `B = config.batch_size` (every batch full).

    Raises:
        ValueError: unknown or unavailable source, bad augmentation options.
    """
    from supcon_tf.data import pipeline

    policy, options = config.augmenter_policy()
    data = pipeline.make_dataset(source, policy, 1, config.batch_size, image_size,
                                 training=True, seed=config.seed, split=split,
                                 data_dir=data_dir, manual_dir=manual_dir,
                                 augment_options=options)
    # One view per image: [B, 1, S, S, C] -> [B, S, S, C].
    return data.map(lambda views, labels: (views[:, 0], labels))


# ----------------------------------------------------------------------------------------------
# Training


def train_on_features(train_x, train_y, test_x, test_y, config, *, num_classes=None, verbose=0):
    """Stage 2 without augmentation: `probes.sgd_linear_probe` on precomputed frozen features.

    Args:
        train_x: float [num_train, dim] encoder features (eval crop).
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test].
        config: a `ClassifierConfig` with `augmentation="eval"`.
        num_classes: optional Python int.
        verbose: Keras `fit` verbosity.

    Returns:
        A `probes.LinearProbeResult` (top-1, top-5 on test, the trained Dense model).

    Raises:
        ValueError: a bad configuration, or augmentation other than "eval" (the features
            cannot show augmented images: use `train_linear_classifier`).
    """
    config.validate()
    if config.augmentation != "eval":
        raise ValueError(f"precomputed features cannot be augmented ({config.augmentation!r}); "
                         "use train_linear_classifier, or augmentation='eval'.")
    if config.normalize_features:
        train_x, test_x = probes.l2_normalize(train_x), probes.l2_normalize(test_x)
    return probes.sgd_linear_probe(
        train_x, train_y, test_x, test_y, num_classes=num_classes, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.scaled_learning_rate,
        optimizer=config.optimizer, schedule=config.schedule, weight_decay=config.weight_decay,
        momentum=config.momentum, seed=config.seed, verbose=verbose,
        schedule_options=config.schedule_options(), optimizer_options=config.optimizer_options())


def _linear_classifier_class():
    import keras
    from keras import ops

    class LinearClassifier(keras.Model):
        """Frozen encoder -> stop-gradient -> (L2-normalise) -> Dense logits.

        The encoder runs in inference mode (`training=False`: batch norm uses its moving
        statistics and never updates them); a Keras encoder is also set `trainable=False`, so
        its weights are not among the trainable variables (no gradient, no weight decay).

        Args:
            encoder: a Keras model, or a callable, mapping images float32 [B, S, S, C] in
                [0, 1] to features [B, F] (e.g. a SavedModel's `embed` signature).
            num_classes: Python int K.
            normalize_features: L2-normalise the features before the Dense layer.
        """

        def __init__(self, encoder, num_classes, normalize_features=False, **kwargs):
            super().__init__(**kwargs)
            if isinstance(encoder, keras.Model):
                encoder.trainable = False
            self.encoder = encoder
            self.normalize_features = normalize_features
            # float32 whatever the global mixed-precision policy the encoder was built under.
            self.linear = keras.layers.Dense(num_classes, dtype="float32",
                                             name="linear_classifier")

        def _features(self, images):
            if isinstance(self.encoder, keras.Model):
                features = self.encoder(images, training=False)
            else:
                features = self.encoder(images)
            features = ops.stop_gradient(ops.cast(features, "float32"))  # [B, F]
            if self.normalize_features:
                norm = ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))
                features = features / ops.maximum(norm, 1e-12)
            return features

        def call(self, images, training=False):
            """images float32 [B, S, S, C] -> logits float32 [B, K]."""
            return self.linear(self._features(images))

        def predict_step(self, data):
            """`(images, labels)` -> {"logits": [B, K], "labels": [B]}: one pass over a labelled
            test set gives both, under any strategy."""
            images, labels = data
            return {"logits": self(images, training=False), "labels": labels}

    return LinearClassifier


def build_linear_classifier(encoder, num_classes, input_shape, *, normalize_features=False):
    """Builds (eagerly, so every variable exists) the frozen-encoder linear classifier.

    Call under `strategy.scope()` to distribute it.

    Args:
        encoder: a Keras model or a callable images float32 [B, S, S, C] -> features [B, F].
        num_classes: Python int K.
        input_shape: (S, S, C) of the encoder's images.
        normalize_features: L2-normalise features before the Dense layer.

    Returns:
        A built `keras.Model` mapping images [B, S, S, C] to logits [B, K], whose only
        trainable variables are the Dense kernel [F, K] and bias [K].
    """
    from keras import ops

    model = _linear_classifier_class()(encoder, num_classes, normalize_features)
    model(ops.zeros((1,) + tuple(input_shape), dtype="float32"))
    return model


def train_linear_classifier(encoder, train_data, test_data, config, *, num_classes,
                            num_train_examples, input_shape, strategy=None, verbose=0):
    """Stage 2 with augmentation: trains a linear classifier on a frozen encoder from images.

    Builds `LinearClassifier` (under `strategy.scope()`), compiles it with
    `config.build_optimizer(config.build_schedule(num_train_examples))` and softmax
    cross-entropy on logits, trains `config.epochs * config.steps_per_epoch(num_train_examples)`
    steps on `train_data` with `fit`, then scores `test_data`.

    Args:
        encoder: a Keras model (set non-trainable here, called with `training=False`) or a
            callable images float32 [B, S, S, C] -> features [B, F].
        train_data: repeated `tf.data.Dataset` of `(images float32 [B, S, S, C], labels int
            [B])`, e.g. `augmented_dataset(...)`.
        test_data: finite `tf.data.Dataset` of `(images, labels)`, e.g. `eval_dataset(...)`.
        config: a `ClassifierConfig`.
        num_classes: Python int K.
        num_train_examples: Python int, the size of the training split (defines an epoch).
        input_shape: (S, S, C).
        strategy: optional `tf.distribute.Strategy` (default: the current one).
        verbose: Keras `fit` verbosity.

    Returns:
        A `probes.LinearProbeResult` (test top-1 and top-5, the trained model).

    Raises:
        ValueError: a bad configuration.
    """
    import keras
    import tensorflow as tf

    config.validate()
    strategy = strategy or tf.distribute.get_strategy()
    steps_per_epoch = config.steps_per_epoch(num_train_examples)
    schedule = config.build_schedule(num_train_examples)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_linear_classifier(encoder, num_classes, input_shape,
                                        normalize_features=config.normalize_features)
        model.compile(optimizer=config.build_optimizer(schedule),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        model.optimizer.build(model.trainable_variables)
    model.fit(train_data, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
              shuffle=False, verbose=verbose)  # train_data is shuffled by tf.data
    outputs = model.predict(test_data, verbose=0)
    logits = np.asarray(outputs["logits"])
    labels = np.asarray(outputs["labels"]).astype(np.int64)
    return probes.LinearProbeResult(
        top1=metrics.top_k_accuracy(labels, logits, 1),
        top5=metrics.top_k_accuracy(labels, logits, min(5, num_classes)), model=model)
