"""Time each contender in its own fresh Python process, alternating, best of the rounds.

Why processes: the contenders want different process-wide settings, fixed when torch
loads. neurodeploy runs with OMP_WAIT_POLICY=PASSIVE (see neurodeploy/kernels/process.py),
which speeds its compiled loops up and slows snnTorch's many small ops down; the
alternative a user would otherwise pick is snnTorch with the OpenMP defaults. So
each contender runs in a process configured as its users would run it:

* ours: ``process.tune_for_cpu()`` first, as the command does (PASSIVE unless the shell set a policy);
* snnTorch: ``NEURODEPLOY_PASSIVE_OPENMP=0`` (the OpenMP defaults, or the shell's).
  Its best settings otherwise: the benchmarks give it neurodeploy's malloc setting
  (neurodeploy/kernels/host_memory.py), which speeds it up too.

The rounds alternate the contenders (A B A B ...), so slow drifts of the machine
load hit both alike; each process warms up, times ``--repeats`` calls and reports
its best.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from neurodeploy.kernels import host_threads


def contender_env(contender: str) -> dict:
    """The environment of a contender's process: this one's, for snnTorch without
    what neurodeploy set in it."""
    env = dict(os.environ)
    if contender == "snntorch":
        env["NEURODEPLOY_PASSIVE_OPENMP"] = "0"
        if host_threads.set_here:
            env.pop("OMP_WAIT_POLICY", None)
    return env


def omp_policy(contender: str) -> str:
    """The OpenMP wait policy the contender's process runs with."""
    env = contender_env(contender)
    if env.get("OMP_WAIT_POLICY"):
        return env["OMP_WAIT_POLICY"]
    return "PASSIVE" if env.get("NEURODEPLOY_PASSIVE_OPENMP", "1") != "0" else "default"


def time_in_fresh_process(script: str, worker: str, contender: str, argv: list[str]) -> dict:
    """Run ``python SCRIPT --worker WORKER ARGV`` with the contender's settings; its last
    stdout line is a JSON object."""
    env = contender_env(contender)
    done = subprocess.run([sys.executable, script, "--worker", worker, *argv], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.abspath(script)))
    if done.returncode != 0:
        raise SystemExit(f"{worker} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def race(script: str, workers: dict[str, str], argv: list[str], rounds: int) -> dict[str, float]:
    """workers: {worker name: contender}. Best seconds per worker over the rounds."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for worker, contender in workers.items():
            seconds = time_in_fresh_process(script, worker, contender, argv)["seconds"]
            best[worker] = min(seconds, best.get(worker, float("inf")))
    return best
