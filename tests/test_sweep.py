"""``sweep``: the spec's checks (no Ray), one task run in process, and a real sweep on a local
Ray instance (one per module): results, the skip on a re-run, a failing job beside finished ones."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from neurodeploy.errors import NeurodeployError
from neurodeploy.sweep import COLUMNS, Spec, parse_spec, run_group, run_sweep

GOOD = {"models": ["mnasnet", "mixnet"], "datasets": ["mnist5k"], "timesteps": [2, 3],
        "targets": ["cmos45nm", "loihi2"], "samples": 8}


@pytest.fixture
def zoo_env(tiny_zoo, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tiny_zoo))
    return tiny_zoo


@pytest.mark.parametrize("change, message", [
    ({"modells": ["mixnet"]}, "unknown field 'modells'"),
    ({"models": ["resnet"]}, "models: unknown model 'resnet'"),
    ({"models": []}, "models: must be a non-empty list"),
    ({"models": ["mixnet", "mixnet"]}, "models: names 'mixnet' twice"),
    ({"datasets": ["imagenet"]}, "datasets: unknown dataset 'imagenet'"),
    ({"timesteps": [4, 0]}, "timesteps: must be an integer >= 1, got 0"),
    ({"timesteps": [-2]}, "timesteps: must be an integer >= 1, got -2"),
    ({"timesteps": [4.5]}, "timesteps: must be an integer >= 1"),
    ({"timesteps": [4, 4]}, "timesteps: names 4 twice"),
    ({"timesteps": 4}, "timesteps: must be a non-empty list"),
    ({"targets": ["loihi9"]}, "targets: unknown target 'loihi9'"),
    ({"targets": ["lava"]}, "'lava' is a backend"),
    ({"targets": ["loihi", "loihi1"]}, "names one target twice"),
    ({"samples": 0}, "samples: must be an integer >= 1, got 0"),
    ({"batch_size": True}, "batch_size: must be an integer"),
    ({"validate": ["torch"]}, "validate: compares two backends or more"),
    ({"validate": ["torch", "loihi2"]}, "'loihi2' is a hardware target"),
    ({"device": "auto"}, "device: must be cpu or cuda"),
    ({"train": {"epochs": 0}}, r"\[train\]: --epochs must be an integer >= 1"),
    ({"train": {"epoch": 2}}, r"\[train\]: unknown key 'epoch'"),
    ({"train": {"init_from": "x.pt"}}, r"\[train\]: init_from names a twin"),
])
def test_spec_errors_are_one_line(change, message):
    with pytest.raises(NeurodeployError, match=message) as e:
        parse_spec({**GOOD, **change}, "s.toml")
    assert str(e.value).startswith("s.toml: ") and "\n" not in str(e.value)


def test_spec_missing_field_and_bad_files(tmp_path):
    with pytest.raises(NeurodeployError, match="missing field 'targets'"):
        parse_spec({k: v for k, v in GOOD.items() if k != "targets"})
    from neurodeploy.sweep import load_spec
    with pytest.raises(NeurodeployError, match="no such sweep spec"):
        load_spec(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("models = [")
    with pytest.raises(NeurodeployError, match="bad.toml: not valid TOML"):
        load_spec(tmp_path / "bad.toml")


def test_spec_jobs_are_the_grid(zoo_env):
    spec = parse_spec({**GOOD, "targets": ["cmos45nm", "loihi"]})
    jobs = spec.jobs()
    assert len(jobs) == 2 * 1 * 2 * 2 and len({j.key for j in jobs}) == 8
    assert jobs[0].key == "mnasnet__mnist5k__T2__cmos45nm"
    assert jobs[1].target == "loihi" and jobs[1].key == "mnasnet__mnist5k__T2__loihi1"   # the alias's own name


def test_missing_zoo_checkpoint_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path))
    with pytest.raises(NeurodeployError, match="models: .*has no snn.pt for mnasnet"):
        parse_spec(GOOD)


def test_without_ray_one_line(cli, zoo_env, tmp_path, monkeypatch):
    spec = tmp_path / "s.toml"
    spec.write_text('models = ["mixnet"]\ndatasets = ["mnist5k"]\ntimesteps = [2]\ntargets = ["cmos45nm"]\n')
    monkeypatch.setitem(sys.modules, "ray", None)          # what `import ray` meets without the extra
    r = cli("sweep", spec, "-o", tmp_path / "out")
    assert r.code != 0
    assert r.stderr.strip().splitlines()[-1] == ("error: Ray is not installed; `sweep` runs its jobs on Ray: "
                                                 "pip install 'neurodeploy[cluster]'")
    assert not (tmp_path / "out").exists()


def test_ray_is_not_imported_by_the_package_or_other_commands():
    code = ("import sys, neurodeploy, neurodeploy.cli, neurodeploy.sweep\n"
            "from typer.testing import CliRunner\n"
            "CliRunner().invoke(neurodeploy.cli.app, ['targets'])\n"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "False"


def test_run_group_trains_when_the_spec_says_so(zoo_env, small_test_split):
    """[train]: the task trains the spiking twin (from the zoo's CNN twin) and returns it."""
    spec = parse_spec({**GOOD, "models": ["mixnet"], "timesteps": [2], "targets": ["cmos45nm"], "samples": 4,
                       "train": {"epochs": 1, "limit": 32, "batch_size": 16, "input_size": 16, "init_from": "cnn"}})
    r = run_group({"model": "mixnet", "dataset": "mnist5k", "timesteps": 2, "targets": ["cmos45nm"],
                   **spec.settings(), "data_dir": None})
    assert r["error"] is None, r["error"]
    assert r["checkpoint"][:2] == b"PK" and r["card"]["timesteps"] == 2 and r["card"]["epochs"] == 1
    job = r["jobs"]["cmos45nm"]
    assert job["row"]["samples"] == 4 and job["row"]["total_mj"] > 0
    assert job["validation"]["targets"]["torch"]["agreement"] == 1.0


# --------------------------------------------------------------------------- on a local Ray instance
@pytest.fixture(scope="module")
def ray_local(tiny_zoo):
    """One local Ray instance for the module (its start costs seconds); the workers see the tiny zoo."""
    ray = pytest.importorskip("ray")
    import logging
    old = os.environ.get("NEURODEPLOY_ZOO")
    os.environ["NEURODEPLOY_ZOO"] = str(tiny_zoo)      # inherited by the raylet and its workers
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             object_store_memory=128 * 2 ** 20)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("NEURODEPLOY_ZOO")
    else:
        os.environ["NEURODEPLOY_ZOO"] = old


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.slow     # a local Ray instance and 20 jobs: ~35 s here, more on a loaded machine
def test_sweep_on_ray_skips_finished_jobs_and_survives_a_failing_one(ray_local, zoo_env, tmp_path, cli):
    out = tmp_path / "sweep"
    spec = parse_spec(GOOD)
    first = run_sweep(spec, out, log=lambda m: None)
    assert (first["jobs"], first["ran"], first["skipped"], first["finished"], first["failed"]) == (8, 8, 0, 8, [])
    assert sorted(p.name for p in (out / "jobs").iterdir()) == sorted(f"{j.key}.json" for j in spec.jobs())
    assert sorted(p.name for p in (out / "graphs").iterdir()) == [
        "mixnet__mnist5k__T2.nir", "mixnet__mnist5k__T3.nir", "mnasnet__mnist5k__T2.nir", "mnasnet__mnist5k__T3.nir"]
    for row in first["rows"]:
        assert row["samples"] == 8 and row["agreement"] == 1.0      # the graph reproduces its network
        assert row["dynamic_mj"] > 0 and row["total_mj"] >= row["dynamic_mj"] and row["host"]
        stored = json.loads((out / "jobs" / f"{row['model']}__mnist5k__T{row['timesteps']}__{row['target']}.json")
                            .read_text())
        assert stored["row"] == row and stored["energy"]["timesteps"] == row["timesteps"]
        assert stored["energy"]["targets"][0]["target"] == row["target"]
    # T is the graph's: twice the timesteps, more synaptic events
    by = {(r["model"], r["timesteps"], r["target"]): r for r in first["rows"]}
    assert by[("mnasnet", 3, "cmos45nm")]["ac_m"] > by[("mnasnet", 2, "cmos45nm")]["ac_m"]
    assert by[("mixnet", 2, "loihi2")]["latency_ms"] is not None and by[("mixnet", 2, "cmos45nm")]["latency_ms"] is None
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and len(rows) == 8
    assert json.loads((out / "sweep.json").read_text())["rows"] == first["rows"]
    assert (out / "accuracy_energy.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sweep.md").read_text().startswith("# Sweep: 2 models x 1 datasets x 2 T x 2 targets")

    before = _mtimes(out / "jobs")
    again = run_sweep(spec, out, log=lambda m: None)
    assert (again["ran"], again["skipped"], again["finished"]) == (0, 8, 8)
    assert _mtimes(out / "jobs") == before and again["rows"] == first["rows"]

    # another dataset whose files are not where the spec says: those jobs fail, one line each;
    # the finished ones are skipped, a new T runs, and the exit code says it
    spec_file = tmp_path / "grow.toml"
    spec_file.write_text('models = ["mnasnet", "mixnet"]\ndatasets = ["mnist5k", "cifar10"]\ntimesteps = [2, 3, 4]\n'
                         f'targets = ["cmos45nm", "loihi2"]\nsamples = 8\ndata_dir = "{tmp_path / "no-data"}"\n')
    r = cli("sweep", spec_file, "-o", out, "--json")
    assert r.code == 1
    report = json.loads(r.stdout)
    assert (report["jobs"], report["skipped"], report["ran"], report["finished"]) == (24, 8, 16, 12)
    assert len(report["failed"]) == 12 and all("cifar10__" in f["job"] for f in report["failed"])
    assert all(f["error"].startswith("cifar10 not found") and "\n" not in f["error"] for f in report["failed"])
    assert "skipped 8 of 24 jobs" in r.stderr and "failed: mnasnet__cifar10__T2__cmos45nm: cifar10 not found" in r.stderr
    after = _mtimes(out / "jobs")
    assert {k: after[k] for k in before} == before and len(after) == 12      # T=4 on mnist5k: 4 new files
    assert "## Failed jobs (12)" in (out / "sweep.md").read_text()


def _descendants(pid: int) -> dict:
    """pid -> command of every process below ``pid`` (from ps: raylet, GCS, agents, workers)."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    children: dict = {}
    for line in ps.splitlines():
        p, pp, *cmd = line.split(None, 2)
        children.setdefault(int(pp), []).append((int(p), cmd[0] if cmd else ""))
    found, todo = {}, [pid]
    while todo:
        for c, cmd in children.get(todo.pop(), []):
            found[c] = cmd
            todo.append(c)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow     # starts its own local Ray instance from the command: ~30 s each
@pytest.mark.parametrize("signal_name, code, last_line", [("SIGINT", 130, "interrupted"),
                                                          ("SIGTERM", 143, "terminated by SIGTERM")])
def test_interrupted_sweep_leaves_no_ray_process(tmp_path, signal_name, code, last_line):
    """Ctrl-C (or SIGTERM, whose handler ray.init replaces) while tasks run: the command's exit
    code, and the raylet, the GCS and every worker are gone."""
    import signal
    import time
    pytest.importorskip("ray")
    spec = tmp_path / "s.toml"     # the shipped zoo, enough samples that the tasks run for a while
    spec.write_text('models = ["pruned_squeezenet"]\ndatasets = ["mnist5k"]\ntimesteps = [8, 16]\n'
                    'targets = ["cmos45nm"]\nsamples = 1000\n')
    env = {k: v for k, v in os.environ.items() if k != "NEURODEPLOY_ZOO"}
    proc = subprocess.Popen([sys.executable, "-m", "neurodeploy", "sweep", str(spec), "-o", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: dict = {}
        deadline = time.time() + 120
        while time.time() < deadline and not any("run_group" in c for c in seen.values()):
            assert proc.poll() is None, proc.communicate()
            seen.update(_descendants(proc.pid))
            time.sleep(0.5)
        assert any("run_group" in c for c in seen.values()), seen
        seen.update(_descendants(proc.pid))
        proc.send_signal(getattr(signal, signal_name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == last_line
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.5)
    assert not [c for p, c in seen.items() if _alive(p)]
    assert not (tmp_path / "out" / "jobs").exists()
