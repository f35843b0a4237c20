"""Process settings: ``import neurodeploy`` changes nothing in the caller's process; the
command (and a library user who asks, :func:`neurodeploy.kernels.process.tune_for_cpu`) sets
OMP_WAIT_POLICY=PASSIVE only before torch loads and never over the user's choice (each case
in a fresh interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

IMPORT_ONLY = "import os, neurodeploy, neurodeploy.ir.io; print(os.environ.get('OMP_WAIT_POLICY'))"
TUNE = ("import os, {first}; from neurodeploy.kernels import host_threads as h, process; process.tune_for_cpu(); "
        "print(os.environ.get('OMP_WAIT_POLICY'), h.set_here)")


def run_probe(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NEURODEPLOY_PASSIVE_OPENMP")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_importing_the_library_sets_nothing():
    assert run_probe(IMPORT_ONLY) == "None"


@pytest.mark.parametrize("first, env, expected", [
    ("neurodeploy", {}, "PASSIVE True"),                                 # set, before torch
    ("torch", {}, "None False"),                                         # too late: torch loaded first
    ("neurodeploy", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE False"),       # the user's choice stands
    ("neurodeploy", {"NEURODEPLOY_PASSIVE_OPENMP": "0"}, "None False"),   # switched off
])
def test_passive_policy_only_before_torch_and_never_over_the_user(first, env, expected):
    assert run_probe(TUNE.format(first=first), **env) == expected


def test_the_command_applies_the_settings():
    code = ("import os, sys; sys.argv = ['neurodeploy', 'targets', '--json']\n"
            "from neurodeploy.cli import entry\n"
            "try:\n    entry()\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    assert run_probe(code).splitlines()[-1] == "PASSIVE"
