"""The paper's stage 2: a linear classifier trained with SGD on a frozen encoder.

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
`batch_size / 256` like pretraining) and builds the schedule and optimizer. One trainer,
`fit_linear_classifier`, trains the Keras `LinearClassifier` (optional frozen encoder ->
stop-gradient -> optional L2 normalisation -> `Dense`) with `fit` and scores a test set; it is
reached three ways:

* `train_on_features`: no augmentation (`augmentation="eval"`). Every image is seen through
  the eval crop, so the frozen features are fixed and computed once
  (`features.extract_features`); the classifier is trained on them (no encoder in the model).
* `train_linear_classifier`: with training augmentation, images are augmented in `tf.data`
  (`augmented_dataset`) and streamed through the frozen encoder (under a `tf.distribute`
  strategy if given). The paper's stage 2 uses random resized crop + horizontal flip:
  `augmentation="crop_flip"`, which is SimAugment with the colour jitter, grayscale and blur
  turned off (`build_augmenter("simaugment", ..., jitter_probability=0,
  grayscale_probability=0, blur_probability=0)`). Any policy of `augment.POLICIES` may be
  used instead (with its default options and `crop_area=(crop_min_area, 1)`, `flip`).
* `sgd_linear_probe`: the features path with plain keyword arguments (an already scaled
  learning rate, any schedule and optimizer options).

All use `steps_per_epoch = ceil(num_train / batch_size)`; on features an epoch's last batch may
be partial, while the streamed pipeline repeats, so its last batch is full (it wraps into the
next epoch). Test images always go through the eval crop; scores are top-1 and top-5 accuracy
(`metrics.top_k_accuracy`). The L-BFGS logistic-regression probe is `linear_probe`.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from supcon_tf import optimizers
from supcon_tf import schedules
from supcon_tf.data import pipeline
from supcon_tf.data import sources
from supcon_tf.evaluation import features
from supcon_tf.evaluation import metrics

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
        return schedules.build_schedule(
            self.schedule, self.scaled_learning_rate,
            steps_per_epoch=self.steps_per_epoch(num_train_examples), epochs=self.epochs,
            **self.schedule_options())

    def build_optimizer(self, schedule):
        """The stage-2 optimizer (`optimizers.build_optimizer(..., stage=2)`) on `schedule`."""
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




@dataclasses.dataclass(frozen=True)
class LinearProbeResult:
    """Outcome of the linear classifier's training.

    Attributes:
        top1: Python float, test top-1 accuracy.
        top5: Python float, test top-5 accuracy (top-`num_classes` when fewer than 5 classes).
        model: the trained `LinearClassifier` (inputs -> [num_classes] logits).
    """
    top1: float
    top5: float
    model: object = dataclasses.field(repr=False)


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
    data = sources.load_source(source, split, data_dir=data_dir, manual_dir=manual_dir)
    return features.eval_pipeline(data, image_size, batch_size, center_crop_fraction)


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
    policy, options = config.augmenter_policy()
    data = pipeline.make_dataset(source, policy, 1, config.batch_size, image_size,
                                 training=True, seed=config.seed, split=split,
                                 data_dir=data_dir, manual_dir=manual_dir,
                                 augment_options=options)
    # One view per image: [B, 1, S, S, C] -> [B, S, S, C].
    return data.map(lambda views, labels: (views[:, 0], labels))


# ----------------------------------------------------------------------------------------------
# The model


class LinearClassifier(keras.Model):
    """(Frozen encoder ->) stop-gradient -> (L2-normalise) -> Dense logits.

    The encoder runs in inference mode (`training=False`: batch norm uses its moving statistics
    and never updates them); a Keras encoder is also set `trainable=False`, so its weights are
    not among the trainable variables (no gradient, no weight decay). Without an encoder the
    inputs are the features themselves. Not serialisable (the encoder may be any callable); the
    trained weights are `model.linear`'s.

    Args:
        encoder: a Keras model, or a callable, mapping images float32 [B, S, S, C] in [0, 1] to
            features [B, F] (e.g. a SavedModel's `embed` signature); or None for inputs that
            are already features float [B, F].
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
        self.linear = keras.layers.Dense(num_classes, dtype="float32", name="linear_classifier")

    def _features(self, inputs):
        if self.encoder is None:
            outputs = inputs
        elif isinstance(self.encoder, keras.Model):
            outputs = self.encoder(inputs, training=False)
        else:
            outputs = self.encoder(inputs)
        outputs = ops.stop_gradient(ops.cast(outputs, "float32"))  # [B, F]
        if self.normalize_features:
            norm = ops.sqrt(ops.sum(ops.square(outputs), axis=-1, keepdims=True))
            outputs = outputs / ops.maximum(norm, 1e-12)
        return outputs

    def call(self, inputs, training=False):
        """inputs float32 [B, S, S, C] (or features [B, F] without encoder) -> logits [B, K]."""
        return self.linear(self._features(inputs))

    def predict_step(self, data):
        """`(inputs, labels)` -> {"logits": [B, K], "labels": [B]}: one pass over a labelled
        test set gives both, under any strategy; inputs alone -> logits [B, K]."""
        if isinstance(data, (tuple, list)):
            inputs, labels = data[0], (data[1] if len(data) > 1 else None)
        else:
            inputs, labels = data, None
        logits = self(inputs, training=False)
        return logits if labels is None else {"logits": logits, "labels": labels}


def build_linear_classifier(encoder, num_classes, input_shape, *, normalize_features=False):
    """Builds (eagerly, so every variable exists) a `LinearClassifier`.

    Call under `strategy.scope()` to distribute it.

    Args:
        encoder: a Keras model, a callable images float32 [B, S, S, C] -> features [B, F], or
            None (the inputs are features).
        num_classes: Python int K.
        input_shape: (S, S, C) of the encoder's images, or (F,) without encoder.
        normalize_features: L2-normalise features before the Dense layer.

    Returns:
        A built `LinearClassifier` whose only trainable variables are the Dense kernel [F, K]
        and bias [K].
    """
    model = LinearClassifier(encoder, num_classes, normalize_features)
    model(ops.zeros((1,) + tuple(input_shape), dtype="float32"))
    return model


# ----------------------------------------------------------------------------------------------
# Training


def fit_linear_classifier(encoder, train_data, test_data, *, num_classes, input_shape,
                          optimizer_fn, epochs, batch_size=None, steps_per_epoch=None,
                          normalize_features=False, seed=0, strategy=None, verbose=0):
    """The one trainer of the linear classifier: builds, compiles, fits and scores it.

    Seeds Keras with `seed`, builds a `LinearClassifier` under `strategy.scope()`, compiles it
    with `optimizer_fn()` and softmax cross-entropy on logits, trains it with `fit` and scores
    `test_data` (top-1 and top-5 accuracy of the logits).

    Args:
        encoder: a Keras model, a callable images -> features, or None when the data are
            features.
        train_data: either `(features float [N, F], labels int [N])` numpy arrays (shuffled by
            Keras, `batch_size` per step, the last batch of an epoch partial), or a repeated
            `tf.data.Dataset` of `(images float32 [B, S, S, C], labels int [B])` (already
            shuffled and batched; `steps_per_epoch` steps per epoch).
        test_data: `(features [M, F], labels [M])` numpy arrays, or a finite `tf.data.Dataset`
            of `(images, labels)` batches.
        num_classes: Python int K.
        input_shape: the model's input shape without the batch: (F,) or (S, S, C).
        optimizer_fn: zero-argument callable returning the optimizer (called in the scope).
        epochs: Python int > 0.
        batch_size: Python int, the batch of numpy `train_data`.
        steps_per_epoch: Python int, the steps of an epoch of a `tf.data` `train_data`.
        normalize_features: L2-normalise the features inside the model.
        seed: Python int, seeds initialisation and Keras' shuffling.
        strategy: optional `tf.distribute.Strategy` (default: the current one).
        verbose: Keras `fit` verbosity.

    Returns:
        A `LinearProbeResult`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build_linear_classifier(encoder, num_classes, input_shape,
                                        normalize_features=normalize_features)
        # XLA ("auto": on accelerators) for the features; an encoder may be any callable.
        model.compile(optimizer=optimizer_fn(),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile="auto" if encoder is None else False)
        model.optimizer.build(model.trainable_variables)
    if isinstance(train_data, tf.data.Dataset):
        model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
                  verbose=verbose)  # train_data is shuffled by tf.data
    else:
        train_x, train_y = train_data
        model.fit(train_x, train_y, epochs=epochs, batch_size=batch_size, shuffle=True,
                  verbose=verbose)
    if not isinstance(test_data, tf.data.Dataset):
        test_x, test_y = test_data
        test_data = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(
            max(batch_size or 1, 1024))
    outputs = model.predict(test_data, verbose=0)
    logits = np.asarray(outputs["logits"])
    labels = np.asarray(outputs["labels"]).astype(np.int64)
    return LinearProbeResult(top1=metrics.top_k_accuracy(labels, logits, 1),
                             top5=metrics.top_k_accuracy(labels, logits, min(5, num_classes)),
                             model=model)


def train_linear_classifier(encoder, train_data, test_data, config, *, num_classes,
                            num_train_examples, input_shape, strategy=None, verbose=0):
    """Stage 2 with augmentation: trains a linear classifier on a frozen encoder from images.

    `fit_linear_classifier` with `config.build_optimizer(config.build_schedule(
    num_train_examples))` for `config.epochs * config.steps_per_epoch(num_train_examples)`
    steps of `train_data`.

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
        A `LinearProbeResult` (test top-1 and top-5, the trained model).

    Raises:
        ValueError: a bad configuration.
    """
    config.validate()
    schedule = config.build_schedule(num_train_examples)
    return fit_linear_classifier(
        encoder, train_data, test_data, num_classes=num_classes, input_shape=input_shape,
        optimizer_fn=lambda: config.build_optimizer(schedule), epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch(num_train_examples),
        normalize_features=config.normalize_features, seed=config.seed, strategy=strategy,
        verbose=verbose)


def _checked_features(train_x, train_y, test_x, test_y):
    """The four probe inputs checked: float32 features, int64 class ids, one dim."""
    train_x = features.check_features(train_x, "train_x")
    test_x = features.check_features(test_x, "test_x")
    train_y = features.check_class_ids(train_y, train_x.shape[0], "train_y")
    test_y = features.check_class_ids(test_y, test_x.shape[0], "test_y")
    features.check_same_dim(train_x, test_x, "train_x", "test_x")
    return train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y


def train_on_features(train_x, train_y, test_x, test_y, config, *, num_classes=None, verbose=0):
    """Stage 2 without augmentation: the linear classifier on precomputed frozen features.

    With `config.normalize_features` the features are L2-normalised once here.

    Args:
        train_x: float [num_train, dim] encoder features (eval crop).
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test].
        config: a `ClassifierConfig` with `augmentation="eval"`.
        num_classes: optional Python int; default largest id + 1.
        verbose: Keras `fit` verbosity.

    Returns:
        A `LinearProbeResult` (top-1, top-5 on test, the trained model).

    Raises:
        ValueError: a bad configuration, or augmentation other than "eval" (the features
            cannot show augmented images: use `train_linear_classifier`).
    """
    config.validate()
    if config.augmentation != "eval":
        raise ValueError(f"precomputed features cannot be augmented ({config.augmentation!r}); "
                         "use train_linear_classifier, or augmentation='eval'.")
    if config.normalize_features:
        train_x, test_x = features.l2_normalize(train_x), features.l2_normalize(test_x)
    train_x, train_y, test_x, test_y = _checked_features(train_x, train_y, test_x, test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1 if num_classes is None else num_classes
    schedule = config.build_schedule(train_x.shape[0])
    return fit_linear_classifier(
        None, (train_x, train_y), (test_x, test_y), num_classes=num_classes,
        input_shape=train_x.shape[1:], optimizer_fn=lambda: config.build_optimizer(schedule),
        epochs=config.epochs, batch_size=config.batch_size, seed=config.seed, verbose=verbose)


def sgd_linear_probe(train_x, train_y, test_x, test_y, *, num_classes=None, epochs=30,
                     batch_size=256, learning_rate=0.1, optimizer="momentum", schedule="cosine",
                     weight_decay=0.0, momentum=0.9, seed=0, verbose=0, schedule_options=None,
                     optimizer_options=None):
    """The linear classifier on frozen features, from plain keyword arguments.

    Optimizers come from `optimizers.build_optimizer(optimizer, ..., stage=2)` (coupled L2
    weight decay on the kernel, RMSProp epsilon 1e-3) and schedules from
    `schedules.build_schedule`, with `steps_per_epoch = ceil(num_train / batch_size)`.

    Args:
        train_x: float [num_train, dim] frozen features.
        train_y: int [num_train] class ids.
        test_x: float [num_test, dim].
        test_y: int [num_test] class ids.
        num_classes: optional Python int; default largest id + 1.
        epochs: Python int > 0.
        batch_size: Python int > 0.
        learning_rate: Python float, peak rate already scaled to `batch_size`.
        optimizer: a name of `optimizers.OPTIMIZERS` ("momentum", "nesterov", "rmsprop", ...).
        schedule: a name of `schedules.SCHEDULES`.
        weight_decay: Python float >= 0, coupled L2 on the kernel (bias excluded).
        momentum: Python float in [0, 1).
        seed: Python int, seeds Keras (initialisation and shuffling).
        verbose: Keras `fit` verbosity.
        schedule_options: optional dict of further `schedules.build_schedule` keywords
            (`warmup_epochs`, `decay_rate`, `decay_epochs`, `boundary_epochs`, `alpha`), e.g.
            `{"boundary_epochs": [60, 75, 90]}`.
        optimizer_options: optional dict of further `optimizers.build_optimizer` keywords,
            e.g. `{"epsilon": 1e-3}`.

    Returns:
        A `LinearProbeResult`.

    Raises:
        ValueError: bad shapes or hyperparameters.
    """
    train_x, train_y, test_x, test_y = _checked_features(train_x, train_y, test_x, test_y)
    epochs = features.check_positive_int("epochs", epochs, "Pass e.g. epochs=30.")
    batch_size = features.check_positive_int("batch_size", batch_size,
                                             "Pass e.g. batch_size=256.")
    num_classes = int(max(train_y.max(), test_y.max())) + 1 if num_classes is None else num_classes
    rate = schedules.build_schedule(schedule, learning_rate,
                                    steps_per_epoch=-(-train_x.shape[0] // batch_size),
                                    epochs=epochs, **(schedule_options or {}))
    return fit_linear_classifier(
        None, (train_x, train_y), (test_x, test_y), num_classes=num_classes,
        input_shape=train_x.shape[1:], epochs=epochs, batch_size=batch_size, seed=seed,
        verbose=verbose, optimizer_fn=lambda: optimizers.build_optimizer(
            optimizer, rate, weight_decay, momentum=momentum, stage=2,
            **(optimizer_options or {})))
