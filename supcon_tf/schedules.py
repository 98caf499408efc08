"""Learning-rate schedules of the paper's sweeps: linear warmup, then cosine / exponential / piecewise.

Every schedule here is a `keras.optimizers.schedules.LearningRateSchedule`: a pure function of the
optimizer step (`optimizer.iterations`), so a run resumed from a checkpoint (which restores
`iterations`) continues on exactly the same curve. All are registered for Keras serialisation and
round-trip through `get_config`/`from_config` (and so through `.keras` files, inside an optimizer).

Warmup (Goyal et al. 2017, as in SimCLR/SupCon): for `step < warmup_steps`

    lr(step) = learning_rate * step / warmup_steps

which is 0 at step 0 and reaches `learning_rate` at `step == warmup_steps`, where the decay phase
starts from `learning_rate`. Decays count steps from the end of warmup, so the curve is continuous.

The paper quotes base learning rates per 256 examples: the rate to use is
`scale_learning_rate(base, global_batch_size) = base * global_batch_size / 256`. `build_schedule`
turns epoch-based settings (warmup 10 epochs, decay 0.97 every 0.5 epoch, x0.2 at 60/75/90 % of
training) into one of these step-based schedules.
"""

import math

import keras
from keras import ops

SCHEDULES = ("constant", "cosine", "exponential", "piecewise")

# Defaults of the paper's configurations (reference/paper.md, "Official configurations").
EXPONENTIAL_DECAY_RATE = 0.97
EXPONENTIAL_DECAY_EPOCHS = 0.5
PIECEWISE_DECAY_RATE = 0.2
PIECEWISE_BOUNDARY_FRACTIONS = (0.6, 0.75, 0.9)


def scale_learning_rate(base_learning_rate, global_batch_size):
    """Scales a base learning rate quoted per 256 examples to the global batch (linear scaling).

    lr = base_learning_rate * global_batch_size / 256   (e.g. LARS 0.4 at batch 6144 -> 9.6).

    Args:
        base_learning_rate: Python float >= 0, the learning rate for a batch of 256.
        global_batch_size: Python int > 0, the batch summed over all replicas.

    Returns:
        Python float, the scaled learning rate.

    Raises:
        ValueError: a negative rate or a non-positive batch size.
    """
    if base_learning_rate < 0:
        raise ValueError(
            f"base_learning_rate must be >= 0; received {base_learning_rate!r}. "
            "Pass the (non-negative) rate per 256 examples.")
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or (
            global_batch_size <= 0):
        raise ValueError(
            f"global_batch_size must be a positive int; received {global_batch_size!r}. "
            "Pass the batch size summed over all replicas.")
    return float(base_learning_rate) * global_batch_size / 256.0


def _check_non_negative(name, value, fix):
    if value is None or value < 0:
        raise ValueError(f"{name} must be >= 0; received {value!r}. {fix}")


def _check_positive(name, value, fix):
    if value is None or value <= 0:
        raise ValueError(f"{name} must be > 0; received {value!r}. {fix}")


class _WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then `_decay(step)`."""

    def __init__(self, learning_rate, warmup_steps=0, name=None):
        super().__init__()
        _check_non_negative("learning_rate", learning_rate,
                            "Pass a non-negative peak learning rate.")
        _check_non_negative("warmup_steps", warmup_steps,
                            "Pass 0 for no warmup or a positive number of steps.")
        self.learning_rate = float(learning_rate)
        self.warmup_steps = warmup_steps
        self.name = name or self.__class__.__name__

    def _decay(self, step):
        """Returns the float32 scalar learning rate for `step >= warmup_steps`."""
        raise NotImplementedError

    def __call__(self, step):
        """Returns the learning rate at `step`.

        Args:
            step: int or float scalar (tensor, variable or Python number), the optimizer step.

        Returns:
            float32 scalar tensor.
        """
        step = ops.cast(step, "float32")
        decayed = self._decay(step)
        if not self.warmup_steps:
            return decayed
        warmup = self.learning_rate * step / float(self.warmup_steps)
        return ops.where(step < float(self.warmup_steps), warmup, decayed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "name": self.name}


@keras.saving.register_keras_serializable(package="supcon_tf")
class WarmupConstant(_WarmupSchedule):
    """Linear warmup, then a constant learning rate.

    lr(step) = learning_rate * step / warmup_steps   for step < warmup_steps
             = learning_rate                         otherwise.

    Args:
        learning_rate: Python float >= 0, the rate after warmup.
        warmup_steps: Python int >= 0.
        name: Optional name.
    """

    def _decay(self, step):
        return ops.full((), self.learning_rate, dtype="float32")


@keras.saving.register_keras_serializable(package="supcon_tf")
class WarmupCosineDecay(_WarmupSchedule):
    """Linear warmup, then cosine decay to `alpha * learning_rate` at `total_steps`.

    For step >= warmup_steps, with p = min(1, (step - warmup_steps) / (total_steps - warmup_steps)):

        lr(step) = learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * p)))

    and `alpha * learning_rate` after `total_steps`.

    Args:
        learning_rate: Python float >= 0, the peak rate (end of warmup).
        total_steps: Python int, the length of training in steps (warmup included).
        warmup_steps: Python int in [0, total_steps).
        alpha: Python float in [0, 1], the final rate as a fraction of the peak.
        name: Optional name.

    Raises:
        ValueError: warmup not shorter than training, or `alpha` outside [0, 1].
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, alpha=0.0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        _check_positive("total_steps", total_steps, "Pass the number of training steps.")
        if warmup_steps >= total_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps!r} is not shorter than training "
                f"(total_steps={total_steps!r}); shorten the warmup or train for longer.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"alpha must be in [0, 1]; received {alpha!r}. It is the final learning rate as "
                "a fraction of the peak (0 decays to zero).")
        self.total_steps = total_steps
        self.alpha = float(alpha)

    def _decay(self, step):
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - float(self.warmup_steps)) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.learning_rate * (self.alpha + (1.0 - self.alpha) * cosine)

    def get_config(self):
        config = super().get_config()
        config.update({"total_steps": self.total_steps, "alpha": self.alpha})
        return config


@keras.saving.register_keras_serializable(package="supcon_tf")
class WarmupExponentialDecay(_WarmupSchedule):
    """Linear warmup, then decay by `decay_rate` every `decay_steps` (may be fractional).

    For step >= warmup_steps, with k = floor((step - warmup_steps) / decay_steps) when
    `staircase` (else the real quotient):

        lr(step) = learning_rate * decay_rate ** k

    The paper's stage 2 uses decay_rate 0.97 every 0.5 epoch, i.e.
    `decay_steps = 0.5 * steps_per_epoch`, which need not be a whole number of steps.

    Args:
        learning_rate: Python float >= 0, the peak rate (end of warmup).
        decay_steps: Python float > 0, steps between two decays.
        decay_rate: Python float > 0, the factor applied at each decay.
        warmup_steps: Python int >= 0.
        staircase: Python bool, decay in discrete jumps (True) or continuously.
        name: Optional name.

    Raises:
        ValueError: non-positive `decay_steps` or `decay_rate`.
    """

    def __init__(self, learning_rate, decay_steps, decay_rate=EXPONENTIAL_DECAY_RATE,
                 warmup_steps=0, staircase=True, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        _check_positive("decay_steps", decay_steps,
                        "Pass the (possibly fractional) number of steps between decays.")
        _check_positive("decay_rate", decay_rate, "Pass the multiplicative factor, e.g. 0.97.")
        self.decay_steps = float(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)

    def _decay(self, step):
        exponent = ops.maximum(step - float(self.warmup_steps), 0.0) / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        return self.learning_rate * ops.power(self.decay_rate, exponent)

    def get_config(self):
        config = super().get_config()
        config.update({"decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                       "staircase": self.staircase})
        return config


@keras.saving.register_keras_serializable(package="supcon_tf")
class WarmupPiecewiseDecay(_WarmupSchedule):
    """Linear warmup, then multiply by `decay_rate` at each boundary step.

    For step >= warmup_steps, with k = the number of boundaries b with b <= step:

        lr(step) = learning_rate * decay_rate ** k

    The paper's CIFAR classifier uses x0.2 at 60, 75 and 90 % of training.

    Args:
        learning_rate: Python float >= 0, the peak rate (end of warmup).
        boundaries: increasing sequence of Python ints, absolute steps (not counted from the end
            of warmup), each >= warmup_steps.
        decay_rate: Python float > 0, the factor applied at each boundary.
        warmup_steps: Python int >= 0.
        name: Optional name.

    Raises:
        ValueError: boundaries empty, not increasing, or inside the warmup.
    """

    def __init__(self, learning_rate, boundaries, decay_rate=PIECEWISE_DECAY_RATE,
                 warmup_steps=0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        boundaries = [int(b) for b in boundaries]
        if not boundaries:
            raise ValueError(
                "boundaries is empty; pass at least one step at which to decay, or use "
                "WarmupConstant for no decay.")
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"boundaries must be strictly increasing; received {boundaries!r}. "
                "Sort them and remove duplicates.")
        if boundaries[0] < warmup_steps:
            raise ValueError(
                f"boundary {boundaries[0]!r} falls inside the warmup "
                f"(warmup_steps={warmup_steps!r}); move the boundary after the warmup or "
                "shorten the warmup.")
        _check_positive("decay_rate", decay_rate, "Pass the multiplicative factor, e.g. 0.2.")
        self.boundaries = boundaries
        self.decay_rate = float(decay_rate)

    def _decay(self, step):
        passed = ops.zeros((), dtype="float32")
        for boundary in self.boundaries:
            passed = passed + ops.cast(step >= float(boundary), "float32")
        return self.learning_rate * ops.power(self.decay_rate, passed)

    def get_config(self):
        config = super().get_config()
        config.update({"boundaries": list(self.boundaries), "decay_rate": self.decay_rate})
        return config


def build_schedule(name, learning_rate, *, steps_per_epoch, epochs, warmup_epochs=0.0,
                   alpha=0.0, decay_rate=None, decay_epochs=EXPONENTIAL_DECAY_EPOCHS,
                   boundary_epochs=None):
    """Builds a step-based schedule from the epoch-based settings of the paper's configurations.

    Epoch quantities become steps with `steps_per_epoch`: warmup and boundaries are rounded to
    whole steps, the exponential `decay_epochs * steps_per_epoch` is kept fractional.

    Examples (learning rates already scaled with `scale_learning_rate`):
        ImageNet SupCon stage 1: `build_schedule("cosine", 9.6, steps_per_epoch=208,
            epochs=350, warmup_epochs=12)`.
        Stage 2 (RMSProp): `build_schedule("exponential", 1.2, steps_per_epoch=208, epochs=90)`
            (x0.97 every 0.5 epoch).
        CIFAR classifier: `build_schedule("piecewise", 40.0, steps_per_epoch=12, epochs=100)`
            (x0.2 at 60/75/90 % of training).

    Args:
        name: one of `SCHEDULES`: "constant", "cosine", "exponential", "piecewise".
        learning_rate: Python float >= 0, the peak rate (after warmup), already scaled to the
            global batch.
        steps_per_epoch: Python int > 0, optimizer steps per epoch.
        epochs: Python float > 0, length of training.
        warmup_epochs: Python float in [0, epochs] (strictly below `epochs` for "cosine").
        alpha: "cosine" only: final rate as a fraction of the peak.
        decay_rate: "exponential" (default 0.97) or "piecewise" (default 0.2) factor.
        decay_epochs: "exponential" only: epochs between decays (default 0.5).
        boundary_epochs: "piecewise" only: epochs at which to decay; default 60, 75 and 90 % of
            `epochs`.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`.

    Raises:
        ValueError: an unknown name, a warmup longer than training, or another bad value (the
            message names the fix).
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}.")
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or (
            steps_per_epoch <= 0):
        raise ValueError(
            f"steps_per_epoch must be a positive int; received {steps_per_epoch!r}. "
            "Pass the number of optimizer steps per epoch (examples // global batch).")
    _check_positive("epochs", epochs, "Pass the length of training in epochs.")
    _check_non_negative("warmup_epochs", warmup_epochs, "Pass 0 for no warmup.")
    if warmup_epochs > epochs:
        raise ValueError(
            f"warmup_epochs={warmup_epochs!r} is longer than training (epochs={epochs!r}); "
            "lower warmup_epochs or raise epochs.")
    total_steps = int(round(epochs * steps_per_epoch))
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if name == "constant":
        return WarmupConstant(learning_rate, warmup_steps=warmup_steps)
    if name == "cosine":
        if warmup_steps >= total_steps:
            raise ValueError(
                f"warmup_epochs={warmup_epochs!r} leaves no steps for the cosine decay "
                f"(epochs={epochs!r}); lower warmup_epochs below epochs.")
        return WarmupCosineDecay(learning_rate, total_steps, warmup_steps=warmup_steps,
                                 alpha=alpha)
    if name == "exponential":
        _check_positive("decay_epochs", decay_epochs, "Pass the epochs between decays, e.g. 0.5.")
        return WarmupExponentialDecay(
            learning_rate, decay_epochs * steps_per_epoch,
            decay_rate=EXPONENTIAL_DECAY_RATE if decay_rate is None else decay_rate,
            warmup_steps=warmup_steps)
    if name == "piecewise":
        if boundary_epochs is None:
            boundary_epochs = [fraction * epochs for fraction in PIECEWISE_BOUNDARY_FRACTIONS]
        for boundary in boundary_epochs:
            if not warmup_epochs <= boundary <= epochs:
                raise ValueError(
                    f"boundary epoch {boundary!r} lies outside the post-warmup training "
                    f"[{warmup_epochs!r}, {epochs!r}]; pass boundary_epochs between "
                    "warmup_epochs and epochs.")
        boundaries = [int(round(b * steps_per_epoch)) for b in boundary_epochs]
        return WarmupPiecewiseDecay(
            learning_rate, boundaries,
            decay_rate=PIECEWISE_DECAY_RATE if decay_rate is None else decay_rate,
            warmup_steps=warmup_steps)
    raise AssertionError(f"unhandled schedule {name!r}")  # Unreachable: name validated above.
