"""What the binaries share: user mistakes end as one `error:` line and exit status 2."""

import sys

from absl import flags
from absl import logging


def fail(message, status=2):
    """Prints `error: message` as one line on stderr and exits with `status` (2: user mistake;
    1: the run failed, e.g. non-finite values or a failed write; 128 + N: stopped by signal N)."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(status)


def parse_flags(flag_values, argv):
    """Parses `argv` into `flag_values`; a bad flag ends as one `error:` line (absl prints
    several)."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        fail(error)


def start(argv, model_dir, what):
    """The binaries' common first checks: no positional arguments and a `--model_dir`.

    Also quiets absl's INFO logging. `what` says what the directory is for (shown when missing).
    """
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}: pass options as --flags.")
    logging.set_verbosity(logging.WARNING)
    if not model_dir:
        fail(f"--model_dir is required ({what}).")


def check_strategy_name(flag_values):
    """Raises a one-line ValueError for an unknown `--strategy` (no TensorFlow op)."""
    from supcon_tf import distribute

    if flag_values.strategy not in distribute.STRATEGIES:
        raise ValueError(f"--strategy={flag_values.strategy!r} is unknown; use one of "
                         f"{', '.join(distribute.STRATEGIES)}.")


def make_strategy(flag_values):
    """The binaries' `tf.distribute.Strategy` from `--strategy`, `--tpu` and `--cpu_devices`.

    Called first in `main`, before any other TensorFlow op: multi-worker collectives and
    logical CPU devices must be configured at program start-up. A bad value is one line.
    """
    from supcon_tf import distribute

    try:
        check_strategy_name(flag_values)
        devices = distribute.configure_cpu_devices(flag_values.cpu_devices)
        if flag_values.cpu_devices > 1 and flag_values.strategy != "mirrored":
            raise ValueError(f"--cpu_devices={flag_values.cpu_devices} only makes sense with "
                             "--strategy=mirrored (it makes one replica per device).")
        return distribute.make_strategy(
            flag_values.strategy, tpu=flag_values.tpu,
            devices=devices if flag_values.cpu_devices > 1 else None)
    except ValueError as e:
        fail(e)
