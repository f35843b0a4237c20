"""host_threads: OMP_WAIT_POLICY=PASSIVE is set by ``import neurodeploy`` only before torch
loads and only where nobody chose a policy (each case in a fresh interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, {first}; import neurodeploy.host_threads as h; print(os.environ.get('OMP_WAIT_POLICY'), h.set_here)"


def policy_after(first: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NEURODEPLOY_PASSIVE_OPENMP")}
    done = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env={**clean, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("first, env, expected", [
    ("neurodeploy", {}, "PASSIVE True"),                                 # set, before torch
    ("torch", {}, "None False"),                                         # too late: torch loaded first
    ("neurodeploy", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE False"),       # the user's choice stands
    ("neurodeploy", {"NEURODEPLOY_PASSIVE_OPENMP": "0"}, "None False"),   # switched off
])
def test_passive_policy_only_before_torch_and_never_over_the_user(first, env, expected):
    assert policy_after(first, **env) == expected
