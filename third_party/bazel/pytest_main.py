"""Bazel py_test entry point: runs pytest on the test files given as arguments.

The test modules are plain pytest files without a `__main__` block, so every py_test made by
`supcon_pytest_tests` (//third_party/bazel:defs.bzl) uses this file as `main` and passes its own
test file in `args`. It runs in the test's runfiles directory, where pytest.ini (the rootdir, with
`pythonpath = . tests` and `--import-mode=importlib`) and tests/conftest.py sit as in the source
tree.
"""

import os
import sys

import pytest


def main(argv):
    args = list(argv)
    tmpdir = os.environ.get("TEST_TMPDIR")
    if tmpdir:
        # Hypothesis writes its example database under the working directory by default, which
        # is Bazel's read-only runfiles tree here.
        os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tmpdir, "hypothesis"))
        args.append("--basetemp=" + os.path.join(tmpdir, "pytest"))
    xml_output = os.environ.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append("--junitxml=" + xml_output)
    test_filter = os.environ.get("TESTBRIDGE_TEST_ONLY")  # bazel test --test_filter=...
    if test_filter:
        args += ["-k", test_filter]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
