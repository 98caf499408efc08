"""LARS and the optimizers of the paper's sweeps (LARS, Momentum, Nesterov, RMSProp, Adam, AdamW).

Weight decay comes in two kinds, and which one an optimizer uses changes what `weight_decay`
means:

* coupled (an L2 penalty `wd/2 * ||w||^2` in the loss): the gradient becomes `g + wd * w` before
  the optimizer's own rule, so the decay goes through momentum, RMS normalisation and, for LARS,
  the trust ratio. This is what the paper's TensorFlow configurations do (LARS, Momentum,
  Nesterov and RMSProp with "wd 1e-4" etc.).
* decoupled (Loshchilov & Hutter; the Keras `weight_decay` argument): after the update,
  `w <- w - lr * wd * w`, outside the optimizer's rule. Only "adamw" uses it here.

Keras 3 optimizers apply their `weight_decay` argument decoupled in the base class, so the
coupled optimizers below never pass `weight_decay` to `super().__init__` (that would decay twice)
and keep it as `l2_weight_decay`.

By default batch-norm parameters and biases, i.e. every variable of rank <= 1, are excluded from
weight decay (and, for LARS, from layer adaptation), as in SimCLR and SupCon. Exclusions can
instead be given as regular expressions searched in the Keras 3 `variable.path`
(e.g. "encoder/conv1_bn/gamma"), never in the short `variable.name`.
"""

import re

import keras
from keras import ops

OPTIMIZERS = ("lars", "momentum", "nesterov", "rmsprop", "adam", "adamw")

# The paper's RMSProp epsilon: 1.0 for the contrastive stage, 1e-3 for the linear classifier.
RMSPROP_EPSILON = {1: 1.0, 2: 1e-3}


def _check_learning_rate(learning_rate):
    """Returns a float learning rate (or the schedule/callable unchanged); rejects negatives."""
    if isinstance(learning_rate, bool):
        raise ValueError(f"learning_rate must be a float >= 0; received {learning_rate!r}.")
    if isinstance(learning_rate, (int, float)):
        if learning_rate < 0:
            raise ValueError(
                f"learning_rate must be >= 0; received {learning_rate!r}. Pass a non-negative "
                "rate (scale a per-256 base rate with schedules.scale_learning_rate).")
        return float(learning_rate)
    return learning_rate


def _check_momentum(momentum):
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0.0 <= momentum < 1.0):
        raise ValueError(
            f"momentum must be a float in [0, 1); received {momentum!r}. Use 0.9 as in the "
            "paper, or 0.0 for no momentum.")
    return float(momentum)


def _check_weight_decay(weight_decay):
    if weight_decay is None:
        return 0.0
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or (
            weight_decay < 0):
        raise ValueError(
            f"weight_decay must be a float >= 0; received {weight_decay!r}. Pass 0.0 for no "
            "weight decay.")
    return float(weight_decay)


def _check_patterns(name, patterns):
    """Validates an exclusion argument: None (rank <= 1 rule) or a sequence of regex strings."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        raise ValueError(
            f"{name} must be a list of regular expressions or None; received the string "
            f"{patterns!r}. Wrap it in a list: [{patterns!r}].")
    patterns = list(patterns)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(
                f"{name} holds {pattern!r}, which is not a regular expression ({error}); pass "
                "regular expressions searched in variable.path.") from error
    return patterns


def _variable_path(variable):
    # Keras 3 variables carry the layer path in `.path`; fall back to a tf.Variable's name.
    return getattr(variable, "path", None) or variable.name


def is_excluded(variable, patterns):
    """Whether `variable` is excluded by an exclusion argument.

    Args:
        variable: a `keras.Variable` (or `tf.Variable`).
        patterns: None, meaning "every variable of rank <= 1" (biases, batch-norm gamma/beta), or
            a sequence of regular expressions, any of which `re.search`es `variable.path`.

    Returns:
        Python bool.
    """
    if patterns is None:
        return len(variable.shape) <= 1
    path = _variable_path(variable)
    return any(re.search(pattern, path) for pattern in patterns)


def _tf_fused_kernels_available():
    """Whether LARS may use TensorFlow's fused training kernels here.

    True on the TensorFlow backend outside XLA. Under `jit_compile=True` XLA fuses the
    `keras.ops` code itself, and the raw training ops lower to slower code there.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.__internal__.get_enclosing_xla_context() is None


@keras.saving.register_keras_serializable(package="supcon_tf")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), the SimCLR/SupCon variant.

    For each variable w with gradient g, learning rate lr, momentum m and slot v (zeros at
    first):

        g     <- g + weight_decay * w                  (coupled decay; unless w is excluded)
        trust  = eta * ||w|| / ||g||                   (1 when either norm is 0, or when w is
                                                         excluded from layer adaptation)
        v     <- m * v + lr * trust * g
        w     <- w - v                                 (classic momentum)
        w     <- w - (m * v + lr * trust * g)          (nesterov=True, v already updated)

    Decay is added to the gradient before the trust ratio, so it is scaled by it and carried by
    momentum. `weight_decay` is therefore NOT the Keras (decoupled) `weight_decay` of the base
    class, which stays None.

    Args:
        learning_rate: Python float >= 0 or a `LearningRateSchedule`.
        momentum: Python float in [0, 1).
        weight_decay: Python float >= 0, the coupled (L2) decay.
        eta: Python float > 0, the trust coefficient.
        nesterov: Python bool, use the Nesterov update.
        exclude_from_weight_decay: None (default: every variable of rank <= 1, i.e. biases and
            batch-norm gamma/beta) or a list of regular expressions searched in `variable.path`;
            matching variables get no decay.
        exclude_from_layer_adaptation: same form; matching variables use trust = 1. None (the
            default) means "the same as `exclude_from_weight_decay`".
        epsilon: Python float >= 0 added to ||g|| in the trust-ratio denominator (0 = the
            paper's formula; the zero-norm guard does not depend on it).
        name: Optional name.
        **kwargs: the base optimizer's keywords (`clipnorm`, `global_clipnorm`, `use_ema`,
            `loss_scale_factor`, `gradient_accumulation_steps`, ...), except `weight_decay`.

    Attributes:
        use_fused_kernels: Python bool, True by default. On the TensorFlow backend outside XLA,
            run the update through TensorFlow's fused training kernels (same math, about half
            the memory traffic); False always runs the backend-agnostic `keras.ops` code. Not
            part of the config.

    Raises:
        ValueError: a negative learning rate or weight decay, momentum outside [0, 1),
            eta <= 0, a negative epsilon, or exclusions that are not regular expressions.
    """

    use_fused_kernels = True

    def __init__(self, learning_rate=0.001, momentum=0.9, weight_decay=0.0, eta=0.001,
                 nesterov=False, exclude_from_weight_decay=None,
                 exclude_from_layer_adaptation=None, epsilon=0.0, name=None, **kwargs):
        learning_rate = _check_learning_rate(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = _check_momentum(momentum)
        self.l2_weight_decay = _check_weight_decay(weight_decay)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta <= 0:
            raise ValueError(
                f"eta must be a float > 0; received {eta!r}. Use 0.001 as in the paper.")
        self.eta = float(eta)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(
                f"epsilon must be a float >= 0; received {epsilon!r}. Use 0.0 (the paper's "
                "formula) or a small positive number.")
        self.epsilon = float(epsilon)
        self.nesterov = bool(nesterov)
        # Not `self.exclude_from_weight_decay`: that is a method of the base class.
        self.decay_exclusions = _check_patterns(
            "exclude_from_weight_decay", exclude_from_weight_decay)
        self.adaptation_exclusions = _check_patterns(
            "exclude_from_layer_adaptation", exclude_from_layer_adaptation)

    def build(self, variables):
        """Creates the momentum slots and fixes each variable's decay/adaptation exclusions.

        Args:
            variables: list of the model's trainable `keras.Variable`s.
        """
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum > 0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")
        adaptation = self.adaptation_exclusions
        if adaptation is None:
            adaptation = self.decay_exclusions
        # Python-level flags, looked up by `_get_variable_index` in `update_step` (where the
        # TensorFlow backend hands over a bare tf.Variable without `.path`).
        self._uses_decay = [not is_excluded(v, self.decay_exclusions) for v in variables]
        self._uses_adaptation = [not is_excluded(v, adaptation) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        """Applies one LARS update (see the class docstring) to `variable`.

        On the TensorFlow backend, outside XLA, the update runs through TensorFlow's fused
        training kernels (`_update_step_tf`); everywhere else (other backends, `jit_compile=True`,
        or `use_fused_kernels=False`) it runs the `keras.ops` code (`_update_step_ops`). Both
        compute the same update; tests check one against the other.

        Args:
            gradient: float tensor shaped like `variable` (IndexedSlices are densified).
            variable: the model variable to update.
            learning_rate: float scalar, the current learning rate.
        """
        if self.use_fused_kernels and _tf_fused_kernels_available():
            self._update_step_tf(gradient, variable, learning_rate)
        else:
            self._update_step_ops(gradient, variable, learning_rate)

    def _trust(self, weight_norm, gradient_norm):
        # trust = eta * ||w|| / ||g||, and 1 when either norm is 0 (Lamb's nested `where`).
        ratio = self.eta * weight_norm / (gradient_norm + self.epsilon)
        return ops.where(weight_norm > 0, ops.where(gradient_norm > 0, ratio, 1.0), 1.0)

    def _update_step_ops(self, gradient, variable, learning_rate):
        """The backend-agnostic update, written with `keras.ops`."""
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        gradient = ops.cast(ops.convert_to_tensor(gradient), dtype)
        learning_rate = ops.cast(learning_rate, dtype)
        if self.l2_weight_decay > 0 and self._uses_decay[index]:
            gradient = gradient + ops.cast(self.l2_weight_decay, dtype) * variable
        if self._uses_adaptation[index]:
            weight_norm = ops.sqrt(ops.sum(ops.square(variable)))
            gradient_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            scaled_lr = learning_rate * ops.cast(self._trust(weight_norm, gradient_norm), dtype)
        else:
            scaled_lr = learning_rate
        step = scaled_lr * gradient  # lr * trust * g
        if self.momentum > 0:
            velocity = self.momentums[index]
            momentum = ops.cast(self.momentum, dtype)
            new_velocity = momentum * velocity + step
            self.assign(velocity, new_velocity)
            if self.nesterov:
                self.assign_sub(variable, momentum * new_velocity + step)
            else:
                self.assign_sub(variable, new_velocity)
        else:
            # With m = 0, v = lr * trust * g and both updates reduce to w <- w - v.
            self.assign_sub(variable, step)

    def _update_step_tf(self, gradient, variable, learning_rate):
        """The same update through TensorFlow's fused kernels (TensorFlow backend, no XLA).

        Identical to `_update_step_ops` term by term:

        * squared norms: `2 * tf.nn.l2_loss(x)` is sum(x^2) (L2Loss sums x^2 / 2 in one pass
          over x, without materialising x^2; the halving and doubling are exact);
        * `ResourceApplyMomentum(lr=1, grad=step)` does `accum <- accum * m + step;
          var <- var - 1 * accum`, i.e. v <- m * v + lr * trust * g; w <- w - v, in one pass
          (Nesterov: `var <- var - (step * 1 + accum * m * 1)` = w - (m * v + lr * trust * g)).
          Its lr is the constant 1, so a learning rate or trust ratio that changes between
          steps stays inside `step`, exactly as in the classic-momentum rule;
        * without momentum, `ResourceApplyGradientDescent(alpha=lr * trust, delta=g)` does
          w <- w - lr * trust * g.
        """
        import tensorflow as tf

        if isinstance(variable, keras.Variable):
            variable = variable.value
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        gradient = tf.convert_to_tensor(gradient)  # Densifies IndexedSlices, as ops does.
        if gradient.dtype != dtype:
            gradient = tf.cast(gradient, dtype)
        learning_rate = tf.cast(learning_rate, dtype)
        if self.l2_weight_decay > 0 and self._uses_decay[index]:
            gradient = gradient + tf.constant(self.l2_weight_decay, dtype) * variable
        if self._uses_adaptation[index]:
            weight_norm = tf.sqrt(2.0 * tf.nn.l2_loss(variable))
            gradient_norm = tf.sqrt(2.0 * tf.nn.l2_loss(gradient))
            scaled_lr = learning_rate * tf.cast(self._trust(weight_norm, gradient_norm), dtype)
        else:
            scaled_lr = learning_rate
        if self.momentum > 0:
            velocity = self.momentums[index].value
            tf.raw_ops.ResourceApplyMomentum(
                var=variable.handle, accum=velocity.handle, lr=tf.constant(1, dtype),
                grad=scaled_lr * gradient, momentum=tf.constant(self.momentum, dtype),
                use_locking=False, use_nesterov=self.nesterov)
        else:
            tf.raw_ops.ResourceApplyGradientDescent(
                var=variable.handle, alpha=scaled_lr, delta=gradient, use_locking=False)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.l2_weight_decay,
            "eta": self.eta,
            "nesterov": self.nesterov,
            "exclude_from_weight_decay": self.decay_exclusions,
            "exclude_from_layer_adaptation": self.adaptation_exclusions,
            "epsilon": self.epsilon,
        })
        return config


class _DecayExclusions:
    """Mixin: which variables get weight decay, decided once per variable in `build()`.

    `exclude_from_weight_decay` is None (rank <= 1 variables excluded) or regexes searched in
    `variable.path` (`is_excluded`); it is validated here and round-trips through `get_config`.
    """

    def __init__(self, *args, exclude_from_weight_decay=None, **kwargs):
        if "learning_rate" in kwargs:
            kwargs["learning_rate"] = _check_learning_rate(kwargs["learning_rate"])
        super().__init__(*args, **kwargs)
        self.decay_exclusions = _check_patterns(
            "exclude_from_weight_decay", exclude_from_weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._uses_decay = [not is_excluded(v, self.decay_exclusions) for v in variables]

    def get_config(self):
        config = super().get_config()
        config["exclude_from_weight_decay"] = self.decay_exclusions
        return config


class _CoupledWeightDecay(_DecayExclusions):
    """Mixin: adds `l2_weight_decay * w` to the gradient before the parent's `update_step`.

    Subclasses list the mixin before a Keras optimizer; `weight_decay` is taken here and never
    reaches the base class, so it is applied once, coupled.
    """

    def __init__(self, *args, weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2_weight_decay = _check_weight_decay(weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2_weight_decay > 0 and self._uses_decay[self._get_variable_index(variable)]:
            gradient = ops.cast(ops.convert_to_tensor(gradient), variable.dtype)
            gradient = gradient + ops.cast(self.l2_weight_decay, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.l2_weight_decay
        return config


@keras.saving.register_keras_serializable(package="supcon_tf")
class SGDWithL2(_CoupledWeightDecay, keras.optimizers.SGD):
    """Keras SGD (momentum / Nesterov) with coupled L2 weight decay.

    g <- g + weight_decay * w (unless excluded); v <- m * v - lr * g; w <- w + v
    (Nesterov: w <- w + m * v - lr * g). Arguments: those of `keras.optimizers.SGD`, with
    `weight_decay` coupled and `exclude_from_weight_decay` as in `LARS`.
    """


@keras.saving.register_keras_serializable(package="supcon_tf")
class RMSpropWithL2(_CoupledWeightDecay, keras.optimizers.RMSprop):
    """Keras RMSprop with coupled L2 weight decay.

    g <- g + weight_decay * w (unless excluded); s <- rho * s + (1 - rho) * g^2;
    v <- m * v + lr * g / sqrt(s + epsilon); w <- w - v. (TF1's RMSProp started s at 1, Keras
    at 0; with the paper's epsilon 1.0 the difference fades within a few steps.) Arguments: those
    of `keras.optimizers.RMSprop`, with `weight_decay` coupled and `exclude_from_weight_decay` as
    in `LARS`.
    """


@keras.saving.register_keras_serializable(package="supcon_tf")
class AdamWithL2(_CoupledWeightDecay, keras.optimizers.Adam):
    """Keras Adam with coupled L2 weight decay (classic "Adam + L2", not AdamW).

    g <- g + weight_decay * w (unless excluded), then the Adam update. Arguments: those of
    `keras.optimizers.Adam`, with `weight_decay` coupled and `exclude_from_weight_decay` as in
    `LARS`.
    """


@keras.saving.register_keras_serializable(package="supcon_tf")
class AdamWWithExclusions(_DecayExclusions, keras.optimizers.AdamW):
    """Keras AdamW (decoupled decay) whose exclusions follow `LARS`'s rule and are serialised.

    Adam update on g, then w <- w - lr * weight_decay * w (unless excluded). Keras' own
    `exclude_from_weight_decay()` matches the short `variable.name` and is not saved in the
    config; here `exclude_from_weight_decay` is None (rank <= 1 excluded) or regexes searched in
    `variable.path`, and round-trips through `get_config`.
    """

    def __init__(self, *args, **kwargs):
        if "weight_decay" in kwargs:
            kwargs["weight_decay"] = _check_weight_decay(kwargs["weight_decay"])
        super().__init__(*args, **kwargs)

    def _use_weight_decay(self, variable):
        # The TensorFlow backend passes a bare (per-replica) tf.Variable without `.path`, so the
        # decision is made in `build` and looked up by index.
        return self._uses_decay[self._get_variable_index(variable)]


def build_optimizer(name, learning_rate, weight_decay=0.0, *, momentum=0.9, stage=1,
                    epsilon=None, eta=0.001, exclude_from_weight_decay=None,
                    exclude_from_layer_adaptation=None, **kwargs):
    """Builds one of the paper's optimizers by name.

    | name       | class                 | rule                                  | weight decay |
    |------------|-----------------------|---------------------------------------|--------------|
    | "lars"     | `LARS`                | trust-ratio momentum (m = momentum)   | coupled      |
    | "momentum" | `SGDWithL2`           | v <- m v - lr g; w <- w + v           | coupled      |
    | "nesterov" | `SGDWithL2`           | w <- w + m v - lr g                   | coupled      |
    | "rmsprop"  | `RMSpropWithL2`       | rho 0.9, momentum, epsilon by stage   | coupled      |
    | "adam"     | `AdamWithL2`          | Adam (beta 0.9 / 0.999)               | coupled      |
    | "adamw"    | `AdamWWithExclusions` | Adam, then w <- w - lr wd w           | decoupled    |

    Coupled means g <- g + weight_decay * w before the rule (an L2 penalty in the loss, as in the
    paper's TensorFlow configurations); decoupled means Keras' `w <- w - lr * wd * w` after it.
    Either way variables of rank <= 1 (biases, batch-norm gamma/beta) are excluded by default.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: Python float >= 0 or a `LearningRateSchedule` (already scaled to the
            global batch, see `schedules.scale_learning_rate`).
        weight_decay: Python float >= 0 (semantics per the table).
        momentum: Python float in [0, 1), for "lars", "momentum", "nesterov" and "rmsprop"
            (TF1's RMSProp momentum, 0.9 in the official code).
        stage: 1 (contrastive pretraining) or 2 (linear classifier); picks the paper's RMSProp
            epsilon (1.0 or 1e-3) when `epsilon` is None.
        epsilon: overrides the RMSProp/Adam/LARS epsilon when given.
        eta: LARS trust coefficient.
        exclude_from_weight_decay: None (rank <= 1) or regexes searched in `variable.path`.
        exclude_from_layer_adaptation: LARS only; None = same as `exclude_from_weight_decay`.
        **kwargs: further keywords of the optimizer class (`clipnorm`, `name`, ...).

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: an unknown name or stage, or a bad hyperparameter (the message names the fix).
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}.")
    if stage not in RMSPROP_EPSILON:
        raise ValueError(
            f"stage must be 1 (pretraining) or 2 (linear classifier); received {stage!r}.")
    learning_rate = _check_learning_rate(learning_rate)
    momentum = _check_momentum(momentum)
    weight_decay = _check_weight_decay(weight_decay)
    if name == "lars":
        if epsilon is not None:
            kwargs["epsilon"] = epsilon
        return LARS(learning_rate, momentum=momentum, weight_decay=weight_decay, eta=eta,
                    exclude_from_weight_decay=exclude_from_weight_decay,
                    exclude_from_layer_adaptation=exclude_from_layer_adaptation, **kwargs)
    if exclude_from_layer_adaptation is not None:
        raise ValueError(
            f"exclude_from_layer_adaptation applies to 'lars' only; received it for {name!r}. "
            "Drop the argument or use name='lars'.")
    if name in ("momentum", "nesterov"):
        return SGDWithL2(learning_rate=learning_rate, momentum=momentum,
                         nesterov=name == "nesterov", weight_decay=weight_decay,
                         exclude_from_weight_decay=exclude_from_weight_decay, **kwargs)
    if name == "rmsprop":
        return RMSpropWithL2(
            learning_rate=learning_rate, rho=0.9, momentum=momentum,
            epsilon=RMSPROP_EPSILON[stage] if epsilon is None else epsilon,
            weight_decay=weight_decay, exclude_from_weight_decay=exclude_from_weight_decay,
            **kwargs)
    if epsilon is not None:
        kwargs["epsilon"] = epsilon
    if name == "adam":
        return AdamWithL2(learning_rate=learning_rate, weight_decay=weight_decay,
                          exclude_from_weight_decay=exclude_from_weight_decay, **kwargs)
    if name == "adamw":
        return AdamWWithExclusions(learning_rate=learning_rate, weight_decay=weight_decay,
                                   exclude_from_weight_decay=exclude_from_weight_decay, **kwargs)
    raise AssertionError(f"unhandled optimizer {name!r}")  # Unreachable: name validated above.
