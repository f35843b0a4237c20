"""The installed package, not the checkout: a wheel built from the repository carries its
data (targets, the zoo, the paper's tables) and works from anywhere.

The wheel is installed (not editable) into a folder of its own and run with this
environment's dependencies from a working directory outside the repository, so nothing
of the source tree can stand in for what the wheel lacks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy of what the repository tracks: no build/ left over from an earlier build
    # (setuptools reuses it) and no untracked file can slip into the wheel
    src = tmp / "src"
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("neurodeploy-*.whl"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel, site


def _run(site: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("NEURODEPLOY_ZOO", None)
    return subprocess.run([sys.executable, "-m", "neurodeploy", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_wheel_carries_its_data(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("neurodeploy/targets/cmos45nm.toml", "neurodeploy/targets/loihi1.toml",
                 "neurodeploy/models/pruned_squeezenet/snn.pt", "neurodeploy/models/pruned_squeezenet/snn.json",
                 "neurodeploy/paper_tables.csv", "neurodeploy/backends/lava/worker.py"):
        assert need in names, need


def test_installed_commands_work_outside_the_checkout(installed, tmp_path):
    _, site = installed
    where = subprocess.run([sys.executable, "-c", "import neurodeploy; print(neurodeploy.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(str(site)), where          # the wheel's copy, not the source tree

    version = _run(site, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("neurodeploy ")
    targets = json.loads(_run(site, tmp_path, "targets", "--json").stdout)
    assert {"cmos45nm", "loihi1", "loihi2"} <= {t["name"] for t in targets["targets"]}
    assert {"torch", "lava"} <= {b["name"] for b in targets["backends"]}
    models = json.loads(_run(site, tmp_path, "models", "--json").stdout)
    row = next(m for m in models["models"] if m["name"] == "pruned_squeezenet")
    assert row["snn_checkpoint"] and Path(models["zoo"]).is_relative_to(site)

    exported = _run(site, tmp_path, "export", "--model", "pruned_squeezenet", "-o", "p.nir")
    assert exported.returncode == 0, exported.stderr
    energy = _run(site, tmp_path, "energy", "p.nir", "--targets", "cmos45nm,loihi", "--samples", "4", "--json")
    assert energy.returncode == 0, energy.stderr
    report = json.loads(energy.stdout)
    assert [t["target"] for t in report["targets"]] == ["cmos45nm", "loihi1"]
    assert all(t["energy_per_inference_j"] > 0 for t in report["targets"])
