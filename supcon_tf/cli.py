"""What the binaries share: user mistakes end as one `error:` line and exit status 2."""

import sys

from absl import flags


def fail(message):
    """Prints `error: message` as one line on stderr and exits with status 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def parse_flags(flag_values, argv):
    """Parses `argv` into `flag_values`; a bad flag ends as one `error:` line (absl prints
    several)."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        fail(error)
