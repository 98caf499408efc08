"""Repository rules that let Debian's offline Bazel (bazel-bootstrap 4.2.3) build this repo.

Two things live here, both called from the clearly marked section of //:WORKSPACE:

* `supcon_offline_stub_repositories()`: Bazel 4.2.3 fetches `rules_cc`, `rules_java`,
  `rules_proto` and `remote_coverage_tools` from the network before it runs any py_* rule,
  because `@bazel_tools` loads them. Offline, tiny stub repositories that forward to Bazel's
  built-in (native) rules are enough; the stub files are written at fetch time, so no nested
  WORKSPACE sits in the source tree. The stubs are declared only on Bazel < 5 (or on a
  distribution build that reports no version, as Debian's does), and only for names nobody
  declared earlier in WORKSPACE, so a newer Bazel, or a WORKSPACE that declares the real
  repositories above the offline section, is left alone.

* `supcon_python_toolchain()`: registers the project's virtualenv Python (`.venv/bin/python`, or
  `$PYTHON_BIN_PATH` when set) as the py_runtime for py_binary/py_test. Bazel 4.2's default
  launcher runs `#!/usr/bin/env python`, and Debian 12 has no `python` command; the virtualenv
  also holds every third-party dependency (tensorflow, keras, numpy, pytest, ...), which the
  BUILD file does not declare as Bazel targets.
"""

_CC_RULES = [
    "cc_binary",
    "cc_import",
    "cc_library",
    "cc_proto_library",
    "cc_test",
    "cc_toolchain",
    "cc_toolchain_suite",
    "fdo_prefetch_hints",
    "fdo_profile",
    "objc_import",
    "objc_library",
]

_JAVA_RULES = [
    "java_binary",
    "java_import",
    "java_library",
    "java_lite_proto_library",
    "java_package_configuration",
    "java_plugin",
    "java_proto_library",
    "java_runtime",
    "java_test",
    "java_toolchain",
]

_PROTO_RULES = [
    "proto_lang_toolchain",
    "proto_library",
]

def _forwarding_defs(rules):
    lines = ['"""Offline stub: forwards to Bazel\'s built-in rules."""', ""]
    for rule in rules:
        lines.append("def {0}(**kwargs):\n    native.{0}(**kwargs)\n".format(rule))
    return "\n".join(lines)

_STUBS = {
    "rules_cc": {
        "BUILD": "",
        "cc/BUILD": "\n".join([
            'package(default_visibility = ["//visibility:public"])',
            "",
            "alias(",
            '    name = "toolchain_type",',
            '    actual = "@bazel_tools//tools/cpp:toolchain_type",',
            ")",
            "",
        ]),
        "cc/defs.bzl": _forwarding_defs(_CC_RULES),
    },
    "rules_java": {
        "BUILD": "",
        "java/BUILD": "",
        "java/defs.bzl": _forwarding_defs(_JAVA_RULES),
    },
    "rules_proto": {
        "BUILD": "",
        "proto/BUILD": "",
        "proto/defs.bzl": _forwarding_defs(_PROTO_RULES) + "\nProtoInfo = ProtoInfo\n",
    },
    "remote_coverage_tools": {
        # Only named by @bazel_tools//tools/test; used by `bazel coverage`, which the offline
        # set-up does not support.
        "BUILD": "\n".join([
            'package(default_visibility = ["//visibility:public"])',
            "",
            'filegroup(name = "coverage_report_generator")',
            "",
            'filegroup(name = "lcov_merger")',
            "",
        ]),
    },
}

def _stub_repository_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.attr.stub)
    for path, content in _STUBS[ctx.attr.stub].items():
        ctx.file(path, content)

_stub_repository = repository_rule(
    implementation = _stub_repository_impl,
    attrs = {"stub": attr.string(mandatory = True, values = _STUBS.keys())},
    local = True,
)

def _needs_stubs():
    version = native.bazel_version
    if not version or not version[0].isdigit():
        return True  # Distribution builds (Debian's bazel-bootstrap says "no_version").
    return int(version.split(".")[0]) < 5

def supcon_offline_stub_repositories():
    """Declares the offline stubs on Bazel < 5, for names not declared earlier in WORKSPACE."""
    if not _needs_stubs():
        return
    for name in _STUBS.keys():
        if not native.existing_rule(name):
            _stub_repository(name = name, stub = name)

def _venv_python_impl(ctx):
    python = ctx.os.environ.get("PYTHON_BIN_PATH", "")
    if not python:
        workspace_root = ctx.path(ctx.attr.workspace_file).dirname
        venv_python = workspace_root.get_child(".venv").get_child("bin").get_child("python")
        if venv_python.exists:
            # Not resolved through its symlink: the virtualenv is found from this path.
            python = str(venv_python)
    if not python:
        found = ctx.which("python3")
        if not found:
            fail("No Python found: create .venv (make venv) or set PYTHON_BIN_PATH.")
        python = str(found)
    result = ctx.execute([python, "-c", "import sys; print(sys.version_info[0])"])
    if result.return_code != 0 or result.stdout.strip() != "3":
        fail("%s is not a working Python 3 interpreter: %s" % (python, result.stderr))

    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = python))

_venv_python = repository_rule(
    implementation = _venv_python_impl,
    attrs = {"workspace_file": attr.label(default = "@//:WORKSPACE")},
    environ = ["PYTHON_BIN_PATH"],
    local = True,
)

def supcon_python_toolchain(name = "supcon_venv_python"):
    """Declares @supcon_venv_python and registers its Python 3 toolchain."""
    _venv_python(name = name)
    native.register_toolchains("@%s//:toolchain" % name)
