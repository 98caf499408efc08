"""Macros for the supcon_tf BUILD file: one py_test per pytest module, one py_binary per script.

Only native py_* rules are used (Bazel 4.2.3 has them built in). On a Bazel whose py_* rules
come from rules_python (Bazel 8+), load py_test / py_binary from rules_python here and
py_library in //:BUILD instead.
"""

_PYTEST_MAIN = "//third_party/bazel:pytest_main.py"

def _strip_py(src):
    if not src.endswith(".py"):
        fail("expected a .py file, got " + src)
    return src[:-len(".py")]

def supcon_pytest_tests(name, srcs, deps = [], data = [], size = "medium", timeout = "long", **kwargs):
    """One py_test per pytest module in `srcs`, plus a test_suite `name` over all of them.

    Each test is named after its file without `.py` (tests/models/heads_test.py becomes
    //:tests/models/heads_test) and runs `pytest <its file>` through pytest_main.py.

    Args:
      name: name of the test_suite over the generated tests.
      srcs: the pytest modules (usually a glob of tests/**/*_test.py).
      deps: py_library targets every test needs (the library, conftest.py, helpers).
      data: files every test needs at run time (pytest.ini).
      size: Bazel test size (resource estimate).
      timeout: "long" (15 min): TensorFlow tests are slow on 2 shared CPU cores.
      **kwargs: passed to every py_test (tags, timeout, env, ...).
    """
    tests = []
    for src in srcs:
        test_name = _strip_py(src)
        native.py_test(
            name = test_name,
            srcs = [_PYTEST_MAIN, src],
            main = _PYTEST_MAIN,
            args = ["$(rootpath %s)" % src],
            deps = deps,
            data = data,
            size = size,
            timeout = timeout,
            python_version = "PY3",
            srcs_version = "PY3",
            legacy_create_init = False,
            **kwargs
        )
        tests.append(":" + test_name)
    native.test_suite(name = name, tests = tests)

def supcon_py_binaries(srcs, deps = [], **kwargs):
    """One py_binary per script in `srcs`, named after its file without `.py`."""
    for src in srcs:
        native.py_binary(
            name = _strip_py(src),
            srcs = [src],
            main = src,
            deps = deps,
            python_version = "PY3",
            srcs_version = "PY3",
            legacy_create_init = False,
            **kwargs
        )
