"""Tests of `supcon_tf.flag_groups`: the binaries share their flag groups from one module.

Each binary's flags live in its own `FlagValues`, so all of them import into one fresh process
(they used to collide in absl's global `FLAGS`: `DuplicateFlagError`), each keeps its own
defaults, and every flag of a shared group is defined by `flag_groups` (absl records the module
that defined each flag), never restated by a binary.
"""

import json
import os
import subprocess
import sys

from helpers import REPO

BINARIES = ("pretrain", "linear_eval", "retrieval", "transfer", "quickstart")
# Group -> its flags; binary -> the groups it uses (what the module docstrings promise).
GROUPS = {
    "run_directory": {"model_dir", "overwrite", "seed"},
    "pretrained": {"model_dir", "checkpoint"},
    "saved_model": {"saved_model"},  # define_pretrained(saved_model=True)
    "data": {"dataset", "split", "data_dir", "manual_dir", "image_size"},
    "eval_images": {"center_crop_fraction", "batch_size"},
    "output": {"output_dir", "overwrite"},
    "distribution": {"strategy", "tpu", "cpu_devices"},
}
USES = {
    "pretrain": ("run_directory", "data", "distribution"),
    "linear_eval": ("pretrained", "saved_model", "data", "eval_images", "distribution"),
    "retrieval": ("pretrained", "saved_model", "data", "eval_images", "output"),
    "transfer": ("pretrained", "output"),
    "quickstart": (),
}

_DRIVER = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module("supcon_tf." + name)
    flag_values = module.FLAGS
    out[name] = {flag: [flag_values.find_module_defining_flag(flag),
                        flag_values[flag].default]
                 for flag in flag_values}
print(json.dumps(out, default=str))
"""


def _flags_of_all_binaries():
    result = subprocess.run([sys.executable, "-c", _DRIVER, *BINARIES], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_binaries_import_together_and_share_their_groups():
    import dataclasses

    from supcon_tf import config as config_lib

    flags_of = _flags_of_all_binaries()
    absl_own = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok"}
    for binary, uses in USES.items():
        defined = flags_of[binary]
        shared = set().union(*(GROUPS[group] for group in uses))
        assert shared <= set(defined), (binary, shared - set(defined))
        for flag in shared:
            assert defined[flag][0] == "supcon_tf.flag_groups", (binary, flag)
        # Everything else is the binary's own.
        for flag, (module, _) in defined.items():
            if flag not in shared and flag not in absl_own:
                assert module == f"supcon_tf.{binary}", (binary, flag, module)
    # Own FlagValues, own defaults: pretraining reads its defaults from PretrainConfig.
    defaults = {field.name: field.default for field in dataclasses.fields(config_lib.PretrainConfig)
                if field.default is not dataclasses.MISSING}
    pretrain = flags_of["pretrain"]
    for name in ("batch_size", "dataset", "split", "image_size", "strategy", "seed"):
        assert pretrain[name][1] == defaults[name], name
    assert flags_of["linear_eval"]["batch_size"][1] == 256
    assert flags_of["linear_eval"]["split"][1] == "train"
    assert flags_of["retrieval"]["split"][1] is None  # the benchmark's standard split


def test_help_prints_the_binarys_docstring_and_flags():
    result = subprocess.run([sys.executable, "-m", "supcon_tf.retrieval", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    from supcon_tf import retrieval

    assert retrieval.__doc__.strip().splitlines()[0] in result.stdout
    for flag in ("--model_dir", "--center_crop_fraction", "--ks", "--output_dir"):
        assert flag in result.stdout
