"""``neurodeploy sweep SPEC.toml``: models x datasets x T x targets, each job run on Ray.

A job is one point of the grid: a zoo model (its checkpoint loaded, or trained when the
spec has a ``[train]`` table) exported to NIR at T timesteps, run on ``samples`` test
inputs of the dataset through the backends named in ``validate`` (a differential run,
:mod:`neurodeploy.measure.compare`), and priced on one hardware target
(:func:`neurodeploy.reports.energy_report.energy_report`, the code behind ``energy``).

What runs where. The jobs that share a model, dataset and T share their first three steps
(load or train, export, run), so they go to Ray as one task (:func:`run_group`, a pure
function of its parameters, no Ray inside); pricing each target from the counts is
arithmetic. Tasks run wherever Ray places them: on a local instance started here by
default, on a cluster's workers with ``--address``. Every file is written by the driver
(this process), from what the task returns: nothing needs a shared file system.

The output folder: ``jobs/KEY.json`` one file per job (KEY = model__dataset__T<T>__target),
written once, atomically, when the job finishes; ``graphs/`` the exported graphs;
``checkpoints/`` what ``[train]`` trained; and the report ``bench`` writes
(sweep.md, sweep.csv, sweep.json, accuracy_energy.png; :mod:`neurodeploy.reports.bench`).
A re-run skips every job whose file is there with the same settings; a job that fails is
reported with its error, in one line, and the others go on.

Ray is an optional dependency (``pip install 'neurodeploy[cluster]'``), imported only
when a sweep has jobs to run.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

from .errors import NeurodeployError, first_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Report columns (sweep.csv; sweep.json holds the same rows)
COLUMNS = ["model", "dataset", "timesteps", "target", "samples", "accuracy", "agreement", "ac_m", "mac_m", "spikes",
           "dynamic_mj", "static_mj", "total_mj", "latency_ms", "edp_mj_ms", "cnn_energy_mj", "cnn_over_snn", "fits",
           "counts_from", "host", "seconds"]
# [train] keys: TrainConfig's fields that a sweep may set (model, dataset, T, device and data_dir come
# from the grid and the spec; init_from names a twin of the zoo: "cnn" = the paper's conversion)
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "limit", "input_size", "augment", "beta",
              "threshold", "surrogate_slope", "init_from", "loihi_aware")
CLUSTER_EXTRA = "Ray is not installed; `sweep` runs its jobs on Ray: pip install 'neurodeploy[cluster]'"


@dataclass(frozen=True)
class Spec:
    models: tuple
    datasets: tuple
    timesteps: tuple
    targets: tuple                   # as written: a name or a .toml path (read where the job runs)
    samples: int = 100               # test samples per job
    validate: tuple = ("model", "torch")   # backends compared, the first the reference; () = none
    batch_size: int = 64
    device: str = "cpu"              # cpu keeps the comparisons bit-exact; cuda: each task asks Ray for a GPU
    data_dir: Optional[str] = None   # CIFAR / TinyImageNet, a folder on the machines that run the jobs
    train: Optional[dict] = None     # [train]: train each model x dataset x T instead of loading the zoo
    target_names: tuple = field(default=(), compare=False)   # the targets' own names (job keys)

    def settings(self) -> dict:
        """What a job's result depends on besides its key: a result written with other
        settings is measured again. (Not data_dir: where the data lies, not what it is.)"""
        return {"samples": self.samples, "validate": list(self.validate), "batch_size": self.batch_size,
                "device": self.device, "train": self.train}

    def jobs(self) -> list:
        return [Job(m, d, t, target, name) for m in self.models for d in self.datasets for t in self.timesteps
                for target, name in zip(self.targets, self.target_names)]


@dataclass(frozen=True)
class Job:
    model: str
    dataset: str
    timesteps: int
    target: str          # as the spec wrote it
    target_name: str

    @property
    def group(self) -> str:
        """The task that runs this job: model, dataset and T."""
        return f"{self.model}__{self.dataset}__T{self.timesteps}"

    @property
    def key(self) -> str:
        return f"{self.group}__{self.target_name}"


# --------------------------------------------------------------------------- the spec
def load_spec(path) -> Spec:
    """Read and check a sweep spec; every problem is one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise NeurodeployError(f"{path}: no such sweep spec")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NeurodeployError(f"{path}: not valid TOML ({e})") from None
    return parse_spec(raw, str(path))


def parse_spec(raw: dict, where: str = "<spec>") -> Spec:
    from . import backends
    from .architectures import ARCHITECTURES
    from .measure.energy import load_target
    from .training import zoo
    from .training.data import dataset_names
    from .validation import DEVICES
    allowed = [f.name for f in fields(Spec) if f.name != "target_names"]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise NeurodeployError(f"{where}: unknown field {unknown[0]!r}; a sweep spec has {', '.join(allowed)}")
    for need in ("models", "datasets", "timesteps", "targets"):
        if need not in raw:
            raise NeurodeployError(f"{where}: missing field {need!r} (a list); a sweep is models x datasets x "
                                   "timesteps x targets")

    def fail(name, msg):
        raise NeurodeployError(f"{where}: {name}: {msg}")

    def names(name, choices=None):
        v = raw[name]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
            fail(name, f"must be a non-empty list of names, got {v!r}")
        if len(set(v)) != len(v):
            fail(name, f"names {next(x for x in v if v.count(x) > 1)!r} twice")
        for x in v:
            if choices is not None and x not in choices:
                fail(name, f"unknown {name[:-1]} {x!r}; choose from {', '.join(choices)}")
        return tuple(v)

    def integer(name, v, minimum):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            fail(name, f"must be an integer >= {minimum}, got {v!r}")
        return v

    train = raw.get("train")
    models = names("models", list(ARCHITECTURES))
    datasets = names("datasets", dataset_names())
    ts = raw["timesteps"]
    if not isinstance(ts, list) or not ts:
        fail("timesteps", f"must be a non-empty list of integers, e.g. [4, 8]; got {ts!r}")
    timesteps = tuple(integer("timesteps", t, 1) for t in ts)
    if len(set(timesteps)) != len(timesteps):
        fail("timesteps", f"names {next(t for t in timesteps if timesteps.count(t) > 1)} twice")
    targets = names("targets")
    try:
        target_names = tuple(load_target(t).name for t in targets)
    except NeurodeployError as e:
        fail("targets", str(e))
    if len(set(target_names)) != len(target_names):
        fail("targets", "names one target twice (an alias and its name?)")
    samples = integer("samples", raw.get("samples", Spec.samples), 1)
    batch_size = integer("batch_size", raw.get("batch_size", Spec.batch_size), 1)
    validate = raw.get("validate", list(Spec.validate))
    if not isinstance(validate, list) or not all(isinstance(b, str) for b in validate):
        fail("validate", f"must be a list of backends, e.g. [\"model\", \"torch\"]; got {validate!r}")
    try:
        for b in validate:
            backends.get(b)
    except NeurodeployError as e:
        fail("validate", str(e))
    if len(validate) == 1 or len(set(validate)) != len(validate):
        fail("validate", f"compares two backends or more (the first is the reference), or none ([]); got {validate!r}")
    device = raw.get("device", Spec.device)
    if device not in [d for d in DEVICES if d != "auto"]:
        fail("device", f"must be cpu or cuda (the device of every job), got {device!r}")
    data_dir = raw.get("data_dir")
    if data_dir is not None and not (isinstance(data_dir, str) and data_dir.strip()):
        fail("data_dir", f"must be a folder (a string), got {data_dir!r}")
    if train is not None:
        train = _check_train(train, where, models, datasets, timesteps, device, data_dir)
    else:
        for m in models:       # the zoo's checkpoints, shipped in the package
            if not zoo.checkpoint_path(m, "snn").exists():
                fail("models", zoo.missing_checkpoint(m))
    return Spec(models, datasets, timesteps, targets, samples, tuple(validate), batch_size, device, data_dir, train,
                target_names)


def _check_train(train, where, models, datasets, timesteps, device, data_dir) -> dict:
    """[train]: TrainConfig's own checks, for every model x dataset x T, before anything runs."""
    from .training.train import TrainConfig, check_config
    if not isinstance(train, dict):
        raise NeurodeployError(f"{where}: train must be a table [train], got {train!r}")
    unknown = [k for k in train if k not in TRAIN_KEYS]
    if unknown:
        raise NeurodeployError(f"{where}: [train]: unknown key {unknown[0]!r}; choose from {', '.join(TRAIN_KEYS)}")
    if train.get("init_from") not in (None, "cnn", "snn"):
        raise NeurodeployError(f"{where}: [train]: init_from names a twin of the zoo model, \"cnn\" or \"snn\"; "
                               f"got {train['init_from']!r}")
    for m in models:
        for d in datasets:
            for t in timesteps:
                try:
                    check_config(TrainConfig(model=m, dataset=d, timesteps=t, device=device, data_dir=data_dir,
                                             **{k: v for k, v in train.items() if k != "init_from"}))
                except (NeurodeployError, TypeError) as e:
                    raise NeurodeployError(f"{where}: [train]: {e}") from None
    return dict(train)


# --------------------------------------------------------------------------- one task (on a worker)
def run_group(params: dict) -> dict:
    """Load (or train), export, validate and price one model x dataset x T on every target in
    ``params["targets"]``: what a Ray task runs, a pure function of its parameters.

    Returns the graph's bytes, what was trained (bytes and card), and per target either the
    job's result or its error (one line); an error before pricing fails every target."""
    import socket
    import tempfile
    import time
    t0 = time.time()
    out = {"host": socket.gethostname(), "jobs": {}, "graph": None, "checkpoint": None, "card": None,
           "error": None}
    try:
        with tempfile.TemporaryDirectory(prefix="neurodeploy-sweep-") as tmp:
            ckpt = _checkpoint(params, Path(tmp), out)
            graph, gpath, inputs, results, validation = _run(params, ckpt, Path(tmp))
            out["graph"] = gpath.read_bytes()
            for target in params["targets"]:
                try:
                    out["jobs"][target] = _price(params, target, graph, gpath, inputs, results, validation)
                except Exception as e:  # noqa: BLE001 - one target's failure is that job's result
                    out["jobs"][target] = {"error": one_line(e)}
    except Exception as e:  # noqa: BLE001 - the task reports, the driver decides
        out["error"] = one_line(e)
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _checkpoint(params: dict, tmp: Path, out: dict) -> Path:
    """The spiking twin's checkpoint: the zoo's, the one trained in an earlier run of this
    sweep (its bytes come with the task), or one trained now."""
    from .training import zoo
    if params.get("train") is None:
        path = zoo.checkpoint_path(params["model"], "snn")
        if not path.exists():
            raise NeurodeployError(zoo.missing_checkpoint(params["model"]))
        return path
    path = tmp / "snn.pt"
    if params.get("checkpoint") is not None:
        path.write_bytes(params["checkpoint"])
        return path
    from .training.train import TrainConfig, train
    cfg = dict(params["train"])
    if cfg.get("init_from"):
        cfg["init_from"] = str(zoo.checkpoint_path(params["model"], cfg["init_from"]))
    out["card"] = train(TrainConfig(model=params["model"], dataset=params["dataset"], twin="snn",
                                    timesteps=params["timesteps"], device=params["device"],
                                    data_dir=params["data_dir"], **cfg), tmp)
    out["checkpoint"] = path.read_bytes()
    return path


def _run(params: dict, ckpt: Path, tmp: Path):
    """Export at T, read the inputs, run every backend once: validate's runs, whose counts
    the targets are priced from (torch always runs: its counters are exact)."""
    from . import backends
    from .exporters.lowering import export_checkpoint_model
    from .ir.io import write_graph
    from .ir.nodes import POPULATIONS
    from .ir.topology import flatten_graph
    from .measure.compare import compare
    from .measure.inputs import load_inputs
    from .training import checkpoint
    t = params["timesteps"]
    graph = export_checkpoint_model(checkpoint.load(ckpt, timesteps=t), ckpt)
    gpath = tmp / f"{params['model']}.nir"
    write_graph(gpath, graph)
    inputs = load_inputs(graph, params["dataset"], samples=params["samples"], data_dir=params["data_dir"])
    runs = list(dict.fromkeys([*params["validate"], "torch"]))
    for b in runs:                  # refused before anything runs
        backends.require(b, graph)
    results = {b: backends.compile(b, graph, source=gpath, device=params["device"]).run(
        inputs.x, t, params["batch_size"]) for b in runs}
    validation = None
    if params["validate"]:
        order = [k for k, v in flatten_graph(graph)[0].items() if isinstance(v, POPULATIONS)]
        validation = compare({b: results[b] for b in params["validate"]}, inputs.labels, order)
    return graph, gpath, inputs, results, validation


def _price(params, target, graph, gpath, inputs, results, validation) -> dict:
    """One job's result: the energy report of one target and the job's row. Counts come from
    the target's own backend when the sweep ran it (lava for Loihi), else from torch."""
    import copy
    from .measure.compare import predictions
    from .measure.energy import load_target
    from .measure.metrics import accuracy
    from .reports.energy_report import energy_report
    t = load_target(target)
    backend = t.backend if t.backend in results else "torch"
    rep = energy_report(gpath, [target], inputs=inputs, backend=backend, device=params["device"],
                        timesteps=params["timesteps"], graph=graph,
                        counters=copy.deepcopy(results[backend].counters))
    e = rep["targets"][0]
    tot = rep["counts_per_sample"]

    def milli(v, scale=1e3):
        return None if v is None else v * scale
    row = {"model": params["model"], "dataset": params["dataset"], "timesteps": params["timesteps"],
           "target": t.name, "samples": int(rep["samples"]),
           "accuracy": accuracy(inputs.labels, predictions(results[backend].outputs)),
           "agreement": (min(v["agreement"] for v in validation["targets"].values()) if validation else None),
           "ac_m": tot["effective_acs"] / 1e6, "mac_m": tot["effective_macs"] / 1e6, "spikes": tot["spikes"],
           "dynamic_mj": milli(e["dynamic_j"]), "static_mj": milli(e["static_j"]), "total_mj": milli(e["total_j"]),
           "latency_ms": milli(e["latency_s"]), "edp_mj_ms": milli(e["edp_js"], 1e6),
           "cnn_energy_mj": milli(e["cnn_energy_j"]), "cnn_over_snn": e["cnn_over_snn"],
           "fits": (e["mapping"] or {}).get("fits"), "counts_from": backend}
    return {"row": row, "validation": validation, "energy": rep}


def one_line(e: BaseException) -> str:
    text = first_line(e)
    return text if isinstance(e, NeurodeployError) else f"{type(e).__name__}: {text}".rstrip(": ")


# --------------------------------------------------------------------------- the driver
def finished(spec: Spec, out_dir: Path) -> dict:
    """job key -> its stored result, for the jobs done with this spec's settings."""
    done = {}
    for job in spec.jobs():
        p = out_dir / "jobs" / f"{job.key}.json"
        try:
            stored = json.loads(p.read_text()) if p.exists() else None
        except (OSError, ValueError):
            stored = None            # unreadable: measured again
        if isinstance(stored, dict) and stored.get("settings") == spec.settings() and "row" in stored:
            done[job.key] = stored
    return done


def run_sweep(spec: Spec, out_dir, address: Optional[str] = None, cpus: Optional[int] = None, progress=None,
              log: Callable[[str], None] = print) -> dict:
    """Run the jobs that are not finished on Ray, write each result as it comes, then the report."""
    from .validation import optional_at_least, output_folder
    out_dir = Path(out_dir)
    output_folder("--output", out_dir)
    optional_at_least("--cpus", cpus, 1)
    if address and cpus:
        raise NeurodeployError("--cpus sizes the local Ray instance; a cluster (--address) has its own")
    jobs = spec.jobs()
    done = finished(spec, out_dir)
    todo = [j for j in jobs if j.key not in done]
    if done:
        log(f"skipped {len(done)} of {len(jobs)} jobs: finished in {out_dir / 'jobs'} with these settings")
    failures = {}
    if todo:
        failures = _run_on_ray(spec, todo, out_dir, address, cpus, progress, log)
    results = finished(spec, out_dir)
    rows = [results[j.key]["row"] for j in jobs if j.key in results]
    files = write_report(spec, out_dir, rows, failures)
    return {"jobs": len(jobs), "skipped": len(done), "ran": len(todo), "finished": len(rows),
            "failed": [{"job": k, "error": v} for k, v in failures.items()], "rows": rows, "files": files}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NeurodeployError(CLUSTER_EXTRA) from None
    return ray


def _run_on_ray(spec: Spec, todo: list, out_dir: Path, address, cpus, progress, log) -> dict:
    ray = _import_ray()
    groups: dict = {}
    for job in todo:
        groups.setdefault(job.group, []).append(job)
    failures = {}
    with ray_session(ray, address, cpus or min(os.cpu_count() or 1, len(groups))):
        task = progress.add_task("sweep", total=len(todo), status="") if progress else None
        options = {"num_cpus": 1, "max_retries": 1}     # one retry: a worker lost with its node, not a bug
        if spec.device == "cuda":
            options["num_gpus"] = 1
        remote = ray.remote(**options)(run_group)
        refs = {remote.remote(_params(spec, members, out_dir)): members for members in groups.values()}
        try:
            while refs:
                # a short wait: Ctrl-C is handled between waits (Python runs handlers in its own loop)
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in ready:
                    members = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a worker that died, a task Ray could not run
                        result = {"error": one_line(e), "jobs": {}}
                    for key, error in _store(spec, members, result, out_dir).items():
                        failures[key] = error
                        (progress.console.print if progress else log)(f"failed: {key}: {error}")
                    if progress:
                        progress.update(task, advance=len(members),
                                        status=f"{len(failures)} failed" if failures else members[0].group)
        except BaseException:
            for ref in refs:            # Ctrl-C, SIGTERM: nothing left running on the cluster
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished meanwhile, or the connection is gone
                    pass
            raise
    return failures


def _params(spec: Spec, members: list, out_dir: Path) -> dict:
    job = members[0]
    params = {"model": job.model, "dataset": job.dataset, "timesteps": job.timesteps,
              "targets": [j.target for j in members], **spec.settings(), "data_dir": spec.data_dir}
    if spec.train is not None:        # trained by an earlier run of this sweep: not trained again
        ck, card = out_dir / "checkpoints" / f"{job.group}.pt", out_dir / "checkpoints" / f"{job.group}.json"
        try:
            if ck.exists() and json.loads(card.read_text()).get("train") == spec.train:
                params["checkpoint"] = ck.read_bytes()
        except (OSError, ValueError):
            pass
    return params


def _store(spec: Spec, members: list, result: dict, out_dir: Path) -> dict:
    """Write what a task returned (graph, checkpoint, one file per finished job); the failures."""
    from .fsutil import write_bytes, write_text
    group = members[0].group
    if result.get("checkpoint") is not None:
        write_bytes(out_dir / "checkpoints" / f"{group}.pt", result["checkpoint"])
        write_text(out_dir / "checkpoints" / f"{group}.json",
                   json.dumps({"train": spec.train, "card": result["card"]}, indent=2))
    if result.get("graph") is not None:
        write_bytes(out_dir / "graphs" / f"{group}.nir", result["graph"])
    failures = {}
    for job in members:
        r = result["jobs"].get(job.target)
        if result.get("error") or r is None or "error" in r:
            failures[job.key] = result.get("error") or (r or {}).get("error") or "no result"
            continue
        r["row"].update(host=result["host"], seconds=result["seconds"])
        stored = {"job": {**asdict(job), "key": job.key}, "settings": spec.settings(), **r}
        write_text(out_dir / "jobs" / f"{job.key}.json", json.dumps(stored, indent=2, default=_jsonable))
    return failures


def _jsonable(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


class ray_session:
    """A Ray connection for one sweep: a local instance (``cpus`` CPUs, no dashboard, quiet)
    or the cluster at ``address``; shut down on the way out however the sweep ends, so no
    raylet or worker outlives the command. A caller already connected to Ray (a notebook,
    a test) keeps its connection: the sweep runs on it and leaves it open."""

    def __init__(self, ray, address: Optional[str], cpus: int):
        self.ray, self.address, self.cpus, self.owned = ray, address, cpus, False

    def __enter__(self):
        import logging
        import signal
        import threading
        ray = self.ray
        if ray.is_initialized():
            return ray
        if self.address:
            _reachable(self.address)
        self.owned = True
        env = {k: os.environ[k] for k in ("NEURODEPLOY_ZOO",) if os.environ.get(k)}
        local = not self.address
        # ray.init replaces SIGTERM's handler with one that exits without clean-up: keep ours
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            # "local": a new instance even where `ray start` left one running (None would join it)
            ray.init(address=self.address or "local", num_cpus=self.cpus if local else None,
                     # the results are small (a graph, a row): a small object store leaves memory to the jobs
                     object_store_memory=256 * 2 ** 20 if local else None,
                     include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        except BaseException as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
            ray.shutdown()          # what started before the failure (or Ctrl-C) stops here
            if not isinstance(e, Exception):
                raise
            where = f"connect to the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
            raise NeurodeployError(f"could not {where}: {one_line(e)}") from None
        finally:
            for s, h in saved.items():
                signal.signal(s, h)
        return ray

    def __exit__(self, *exc):
        if self.owned:
            self.ray.shutdown()
        return False


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers at is one line here: ray.init
    would retry it for minutes. ("auto" finds the cluster this machine belongs to, or says so.)"""
    import socket
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise NeurodeployError(f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__}); start one "
                               "there with `ray start --head`, or leave out --address for a local instance") from None


# --------------------------------------------------------------------------- the report
def markdown(spec: Spec, rows: list, failures: dict) -> str:
    from .reports.bench import markdown_table
    grid = (f"{len(spec.models)} models x {len(spec.datasets)} datasets x {len(spec.timesteps)} T x "
            f"{len(spec.targets)} targets")
    lines = [f"# Sweep: {grid}, counts on {spec.samples} test samples", "",
             f"Validated: {' vs '.join(spec.validate) or 'no differential run'}; accuracy on the samples at "
             "that T, of the backend the counts come from; agreement: the lowest prediction agreement of a "
             "validated backend with the first; energy per inference on the target "
             "(neurodeploy/targets/TARGET.toml; static and latency where the target has cores).", ""]
    lines += markdown_table(
        ["model", "dataset", "T", "target", "accuracy", "agreement", "ACs (M)", "MACs (M)", "dynamic mJ",
         "static mJ", "total mJ", "latency ms", "CNN mJ (45 nm)", "CNN/SNN", "fits", "counts", "host", "s"],
        [[r["model"], r["dataset"], r["timesteps"], r["target"], r["accuracy"], r["agreement"], r["ac_m"],
          r["mac_m"], r["dynamic_mj"], r["static_mj"], r["total_mj"], r["latency_ms"], r["cnn_energy_mj"],
          r["cnn_over_snn"], r["fits"], r["counts_from"], r["host"], r["seconds"]] for r in rows])
    if failures:
        lines += ["", f"## Failed jobs ({len(failures)})", ""] + [f"- `{k}`: {v}" for k, v in failures.items()]
    return "\n".join(lines) + "\n"


def write_report(spec: Spec, out_dir: Path, rows: list, failures: dict) -> dict:
    from .reports.bench import write_report as write
    points = [(r["total_mj"], r["accuracy"], f"{r['model']} T{r['timesteps']}", r["target"]) for r in rows
              if r["total_mj"] is not None and r["accuracy"] is not None]
    meta = {"grid": {"models": list(spec.models), "datasets": list(spec.datasets), "timesteps": list(spec.timesteps),
                     "targets": list(spec.target_names)}, "settings": spec.settings(), "data_dir": spec.data_dir,
            "failed": [{"job": k, "error": v} for k, v in failures.items()]}
    return write(out_dir, "sweep", meta, rows, COLUMNS, markdown(spec, rows, failures), points,
                 xlabel="energy per inference on the target (mJ)",
                 title="accuracy vs energy per inference: one marker per target")


__all__ = ["Spec", "Job", "load_spec", "parse_spec", "run_group", "run_sweep", "finished", "COLUMNS"]
