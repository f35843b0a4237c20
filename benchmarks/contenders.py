"""Time each contender in its own fresh Python process, alternating, best of the rounds.

Why processes: the contenders want different process-wide settings, fixed when torch
loads. neurodeploy runs with OMP_WAIT_POLICY=PASSIVE (see neurodeploy/kernels/process.py),
which speeds its compiled loops up and slows snnTorch's many small ops down; the
alternative a user would otherwise pick is snnTorch with the OpenMP defaults. So
each contender runs in a process configured as its users would run it, under one of
these OpenMP settings:

* ``ours``: ``process.tune_for_cpu()`` first, as the command does (PASSIVE unless the shell set a policy);
* ``default``: ``NEURODEPLOY_PASSIVE_OPENMP=0`` (the OpenMP defaults, or the shell's);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` for another tool, to try it both ways.

The other tools also get neurodeploy's malloc setting
(neurodeploy/kernels/host_memory.py), which speeds them up too.

The rounds alternate the contenders (A B C A B C ...), so slow drifts of the machine
load hit all alike; each process warms up, times ``--repeats`` calls and reports
its best (and whatever else it prints in its JSON line: outputs, kernel choices).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from neurodeploy.kernels import host_threads

SETTINGS = ("ours", "default", "passive")


def race_arguments(description: str, workers: dict, models: str, batch: int,
                   timesteps: int) -> argparse.ArgumentParser:
    """The options every race benchmark takes (``--worker``, hidden, runs one contender in
    this process: what race() starts)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--models", default=models)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--timesteps", type=int, default=timesteps)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=sorted(workers), help=argparse.SUPPRESS)
    return ap


def contender_env(setting: str) -> dict:
    """The environment of a contender's process (setting: one of SETTINGS)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown OpenMP setting {setting!r} (known: {', '.join(SETTINGS)})")
    env = dict(os.environ)
    if setting == "default":
        env["NEURODEPLOY_PASSIVE_OPENMP"] = "0"
        if host_threads.set_here:
            env.pop("OMP_WAIT_POLICY", None)
    elif setting == "passive":
        env["NEURODEPLOY_PASSIVE_OPENMP"] = "0"
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def omp_policy(setting: str) -> str:
    """The OpenMP wait policy the contender's process runs with."""
    env = contender_env(setting)
    if env.get("OMP_WAIT_POLICY"):
        return env["OMP_WAIT_POLICY"]
    return "PASSIVE" if env.get("NEURODEPLOY_PASSIVE_OPENMP", "1") != "0" else "default"


def timeit(fn, repeats, warmup=True):
    """Best of ``repeats`` calls of fn (after one warm-up call), waiting for queued GPU work."""
    import torch

    def call():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    if warmup:
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_in_fresh_process(script: str, worker: str, setting: str, argv: list[str]) -> dict:
    """Run ``python SCRIPT --worker WORKER ARGV`` with the setting's environment; its last
    stdout line is a JSON object. A process that fails gives {"error": its last line}."""
    env = contender_env(setting)
    done = subprocess.run([sys.executable, script, "--worker", worker, *argv], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.abspath(script)))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": f"{worker} failed: {why[:200]}"}
    return json.loads(lines[-1])


def race_reports(script: str, workers: dict[str, str], argv: list[str], rounds: int) -> dict[str, dict]:
    """workers: {worker name: setting}. Per worker, the report of its fastest round
    (with "seconds"), or the first error. A worker that failed once is not run again."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for worker, setting in workers.items():
            if "error" in best.get(worker, {}):
                continue
            report = time_in_fresh_process(script, worker, setting, argv)
            if "error" in report or report["seconds"] < best.get(worker, {}).get("seconds", float("inf")):
                best[worker] = report
    return best


def race(script: str, workers: dict[str, str], argv: list[str], rounds: int) -> dict[str, float]:
    """workers: {worker name: setting}. Best seconds per worker over the rounds; a failure stops."""
    reports = race_reports(script, workers, argv, rounds)
    for report in reports.values():
        if "error" in report:
            raise SystemExit(report["error"])
    return {w: r["seconds"] for w, r in reports.items()}
