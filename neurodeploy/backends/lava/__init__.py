"""The Lava (Loihi simulation) backend: ``compile(graph_path, precision) -> LavaProgram``.

Lava needs Python 3.10 (see runtime.py), so this side only checks the graph (plan.py,
pure numpy + nir: an unsupported node fails here, by name) and runs the worker
(worker.py) in the Lava runtime with files: the .nir graph and an inputs .npy go in,
outputs.npy and result.json come back. A worker failure becomes one
NeurodeployError line (the last ``error:`` line of its stderr, or how it died: "killed
with SIGKILL"); whatever ends a run (success, failure, a crash or kill of the worker, a
timeout, Ctrl-C or SIGTERM of this process) the worker's whole process group is killed,
so no Lava process outlives it, and the run's temporary folder is removed.

Precision: 'fixed' = Loihi 2 fixed point (Loihi2SimCfg(select_tag='fixed_pt'), 8-bit
weights, 12-bit decays, 24-bit state; see fixed_point.py); 'float' = Lava's
floating-point models with unquantised weights (tells quantisation error apart from
semantic error: its spikes match the torch reference).

Inputs are (N, *input_shape) presented every step (direct encoding) or a sequence
(T, N, *input_shape). Outputs are (T, N, *output_shape), aligned step by step with the
reference despite Lava's one-step delay per projection (plan.py explains how). Runs go
in chunks of ``batch_size`` samples, one worker (one Lava network) per chunk.
``LavaProgram.last`` holds the last worker's result.json: seconds per timestep / per
sample, the fixed-point quantisation report, pipeline depths.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import NeurodeployError
from ...ir.counters import RunCounters, RunResult, merge_counters
from ..base import Support
from . import procfs
from .runtime import ensure_runtime, install_runtime, runtime_path, runtime_status

PRECISIONS = ("fixed", "float")
# the folder a program's graph object is written to; its worker removes it if the program dies
GRAPH_FOLDER_PREFIX = "neurodeploy-lava-graph-"


def repo_root() -> Path:
    """The folder that holds the ``neurodeploy`` package (the worker's PYTHONPATH)."""
    import neurodeploy
    files = list(getattr(neurodeploy, "__path__", []))
    return Path(files[0]).resolve().parent


@dataclass
class LavaProgram:
    graph_path: Path
    precision: str = "fixed"
    timeout: float = 1800.0
    fast_conv: bool = True
    input_shape: tuple = ()
    route: str = "loihi2"                       # fixed point: graded input and shifted state, or netx's form
    weight_quantisation: dict = None           # fixed point: how far the weights move (weight_summary)
    default_timesteps: int = 1                  # the graph's T, when run() is given none
    last: dict = field(default_factory=dict)   # the worker's result.json of the last run
    _tmp: object = field(default=None, repr=False)   # keeps a graph given as an object on disk

    def run(self, inputs: np.ndarray, timesteps: int | None = None, batch_size: int = 64,
            progress=None) -> RunResult:
        """Run in chunks of ``batch_size`` samples (one worker, one Lava network each)."""
        from ...validation import run_arguments, samples_in
        run_arguments(timesteps, batch_size)
        python = ensure_runtime()
        x = np.asarray(inputs, dtype=np.float32)
        shape = tuple(self.input_shape)
        sequence = bool(shape) and x.ndim == len(shape) + 2 and tuple(x.shape[2:]) == shape
        if sequence and timesteps is not None and int(timesteps) != x.shape[0]:
            raise NeurodeployError(f"the input sequence has {x.shape[0]} timesteps but --timesteps is {timesteps}")
        timesteps = int(x.shape[0] if sequence else (timesteps or self.default_timesteps))
        if shape and tuple(x.shape[1:]) != shape and not sequence:
            raise NeurodeployError(f"input shape {tuple(x.shape)} does not fit the graph's input {shape}: "
                                   f"give (N, {', '.join(map(str, shape))}) static inputs or (T, N, ...) sequences")
        if not np.isfinite(x).all():
            raise NeurodeployError("the input holds NaN or infinite values")
        n = samples_in(x.shape[1] if sequence else x.shape[0]) if x.ndim else samples_in(0)
        task = progress.add_task(f"lava-{self.precision}", total=int(n)) if progress else None
        parts, t0 = [], time.perf_counter()
        for i in range(0, n, int(batch_size)):
            chunk = x[:, i:i + batch_size] if sequence else x[i:i + batch_size]
            done = (lambda k, i=i: progress.update(task, completed=i + k)) if progress else None
            parts.append(self._run_chunk(python, chunk, timesteps, done))
            if progress:
                progress.update(task, completed=i + (chunk.shape[1] if sequence else chunk.shape[0]))
        outputs = np.concatenate([o for o, _ in parts], axis=1)
        results = [r for _, r in parts]
        overflows = {}
        for r in results:
            for k, v in r.get("overflows", {}).items():
                overflows[k] = overflows.get(k, 0) + v
        self.last = {**results[-1], "chunks": len(results), "overflows": overflows,
                     "seconds": {**results[-1]["seconds"],
                                 "run": sum(r["seconds"]["run"] for r in results),
                                 "total": sum(r["seconds"]["total"] for r in results)}}
        counters = merge_counters([RunCounters.from_dict(r["counters"]) for r in results])
        counters.graph_sha256 = results[0]["counters"].get("graph_sha256")
        counters.backend = f"lava-{self.precision}"
        spikes = {k: np.concatenate([np.asarray(r["population_spike_counts"][k]) for r in results])
                  for k in results[0]["population_spike_counts"]}
        return RunResult(outputs=outputs, counters=counters, population_spike_counts=spikes,
                         seconds=time.perf_counter() - t0, weight_quantisation=self.weight_quantisation,
                         overflows=overflows if self.precision == "fixed" else None)

    def _run_chunk(self, python, x: np.ndarray, timesteps: int, done=None):
        """One worker, one Lava network for the samples of ``x``; ``done(samples finished)``
        is called while it runs."""
        with tempfile.TemporaryDirectory(prefix="neurodeploy-lava-", dir=_short_temp_root(),
                                         ignore_cleanup_errors=True) as tmp:
            tmp = Path(tmp)
            np.save(tmp / "inputs.npy", x)
            req = {"graph": str(self.graph_path), "inputs": str(tmp / "inputs.npy"),
                   "timesteps": int(timesteps), "precision": self.precision,
                   "out_dir": str(tmp / "out"), "fast_conv": self.fast_conv, "route": self.route,
                   "progress": str(tmp / "progress")}
            (tmp / "request.json").write_text(json.dumps(req))
            poll = (lambda: done(_read_progress(tmp / "progress"))) if done else None
            _run_worker(python, tmp / "request.json", self.timeout, poll=poll)
            outputs = np.load(tmp / "out" / "outputs.npy")
            result = json.loads((tmp / "out" / "result.json").read_text())
        return outputs, result


def _read_progress(path: Path) -> int:
    """The samples the worker reports done (0 before its first report)."""
    try:
        return int(path.read_bytes().strip() or 0)
    except (OSError, ValueError):
        return 0


def _short_temp_root() -> str:
    """Where a run's folder goes: the usual temporary folder, unless its path is so long that
    the Unix sockets Lava's multiprocessing makes inside it (``pymp-*/listener-*``, at most
    107 bytes) would not fit; then /tmp."""
    root = tempfile.gettempdir()
    if len(root) > 48 and os.path.isdir("/tmp") and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return root


def worker_path_dir(tmp: Path) -> Path:
    """A folder holding only ``neurodeploy`` (a symlink), for the worker's PYTHONPATH.

    In a source checkout the repository root would do; in an installed toolkit that
    folder is the main environment's site-packages, whose numpy/torch (built for the
    main Python) must not shadow the Lava runtime's own.
    """
    d = tmp / "pythonpath"
    d.mkdir(exist_ok=True)
    link = d / "neurodeploy"
    if not link.exists():
        link.symlink_to(repo_root() / "neurodeploy", target_is_directory=True)
    return d


def _run_worker(python: Path, request: Path, timeout: float, module: str = "neurodeploy.backends.lava.worker",
                what: str = "the Lava worker", failed: str = "Lava run failed", poll=None) -> None:
    """Run ``python -m module request`` in the Lava runtime, in its own process group, and
    watch it: however it ends (an error, a crash, a kill, a timeout, Ctrl-C or SIGTERM here)
    its whole process group goes, Lava's model processes included, and anything but
    success is one NeurodeployError line.

    The worker writes its stdout / stderr to files beside the request, not to pipes:
    Lava's model processes inherit the worker's descriptors and outlive it when it is
    killed, so a pipe would stay open and a read of it (``communicate``) never return.
    Waiting on the worker's own pid notices its death at once; ``poll()`` is called
    twice a second while it runs (progress)."""
    env = dict(os.environ)
    root = str(worker_path_dir(request.parent))
    env["PYTHONPATH"] = root   # nothing of the main environment's path
    env.pop("PYTHONHOME", None)
    # Lava's multiprocessing keeps its own temporary folders (pymp-*); a killed process
    # cannot remove them, so they go inside the run's folder, which this side removes
    env["TMPDIR"] = str(request.parent)
    cmd = [str(python), "-m", module, str(request)]
    out_log, err_log = request.parent / "worker.stdout", request.parent / "worker.stderr"
    with open(out_log, "wb") as out_f, open(err_log, "wb") as err_f:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, env=env, cwd=root,
                                    start_new_session=True)
        except OSError as e:
            raise NeurodeployError(f"cannot start the Lava runtime's Python {python} ({e.strerror}); "
                                   "delete the runtime and run `neurodeploy setup lava`") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                rc = proc.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())) if poll else timeout)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline or not poll:
                    raise NeurodeployError(f"{what} (pid {proc.pid}) did not finish within {timeout:.0f} s "
                                           "(killed)") from None
                poll()
    finally:   # success, failure, timeout, Ctrl-C, SIGTERM: no Lava process outlives this call
        _stop_group(proc)
    if rc != 0:
        raise NeurodeployError(f"{failed}: {_failure(proc.pid, rc, err_log, what)}")


def _failure(pid: int, rc: int, err_log: Path, what: str) -> str:
    """What went wrong in the worker, in one line: its own last ``error:`` line, or how it died."""
    try:
        text = err_log.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    if errors:      # the worker said what went wrong (then took its process group down itself)
        last = errors[-1][len("error: "):]
    elif rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        how = "crashed" if -rc in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT) \
            else "was killed"
        return f"{what} (pid {pid}) {how} with {name} (exit status {rc}); its Lava processes were stopped"
    else:
        last = f"{what} (pid {pid}) exited with status {rc}" + (f": {lines[-1]}" if lines else "")
    if "ModuleNotFoundError" in last or "ImportError" in last:
        last += (f" (the Lava runtime at {runtime_path()} looks broken: delete it and run "
                 "`neurodeploy setup lava`)")
    return last


def _stop_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGKILL the worker's process group (the worker and every Lava process it started),
    reap the worker, and give the others a moment to go (bounded)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Does a process of the group still run (zombies, which hold no files, do not count)?"""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return bool(procfs.live_in_group(pgid))
    except OSError:        # no /proc: trust kill(0)
        return True


def weight_summary(layers: dict) -> dict:
    """One line's worth of the per-layer weight quantisation report: how many layers the
    8-bit grid leaves exactly as they were (weights trained on it, ``--loihi-aware``), the
    worst error relative to a layer's largest weight, and clipped weights."""
    worst = max(layers.items(), key=lambda kv: kv[1]["max_rel_error"], default=(None, {"max_rel_error": 0.0}))
    return {"layers": len(layers), "exact_layers": sum(r["max_abs_error"] == 0 for r in layers.values()),
            "worst_relative_error": worst[1]["max_rel_error"], "worst_layer": worst[0],
            "clipped": sum(r["clipped"] for r in layers.values())}


def _plan(graph):
    from ...ir.conventions import conventions_of
    from .plan import build_plan
    return build_plan(graph, conventions_of(graph))


def supports(graph) -> Support:
    """What compile() checks before the runtime is involved: the graph maps onto Lava processes."""
    from .plan import PlanError
    try:
        _plan(graph)
    except PlanError as e:
        return Support(False, str(e))
    return Support(True, "populations and projections map to Lava processes")


def compile(graph, *, source=None, precision: str = "fixed", route: str = "loihi2", dt: float | None = None,
            timeout: float = 1800.0, fast_conv: bool = True, device=None, **_) -> LavaProgram:
    """Check that the graph maps onto Lava (here, without the runtime) and return a program.

    ``route`` (fixed point): "loihi2" feeds the input current as 24-bit graded spikes
    and gives every population the finest integer state its 24 bits allow; "netx"
    feeds it as a bias and keeps the weights' scale, as lava-dl netx networks do
    (see ``compiler.ROUTES``). ``dt`` overrides the graph's.

    ``graph``: a ``nir.NIRGraph`` or a .nir path. The worker reads files: ``source``
    (the file the graph came from) is handed to it as it is; otherwise, or with ``dt``,
    the graph is written to a temporary file that lives as long as the program.
    """
    import nir
    from .. import as_graph
    from ...ir.conventions import conventions_of, replace, with_conventions
    from ...ir.io import write_graph
    from .plan import PlanError

    if precision not in PRECISIONS:
        raise NeurodeployError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    graph, source = as_graph(graph, source)
    keep = None
    if source is None or dt is not None:
        if dt is not None:
            graph = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata=dict(graph.metadata or {}),
                                 type_check=False)
            with_conventions(graph, replace(conventions_of(graph), dt=float(dt)))
        keep = tempfile.TemporaryDirectory(prefix=GRAPH_FOLDER_PREFIX)
        source = write_graph(Path(keep.name) / "graph.nir", graph)
    try:
        plan = _plan(graph)
        weights = None
        if precision == "fixed":
            from .compiler import Quantised
            # fixed-point restrictions fail here, not in the worker
            weights = weight_summary(Quantised(plan, "fixed", route).report["layers"])
    except PlanError as e:
        raise NeurodeployError(f"{source if keep is None else 'graph'}: {e}") from None
    prog = LavaProgram(Path(source).resolve(), precision, timeout, fast_conv, tuple(plan.input_shape), route,
                       weights, default_timesteps=conventions_of(graph).timesteps or 1)
    prog._tmp = keep
    return prog


__all__ = ["compile", "supports", "LavaProgram", "merge_counters", "runtime_status", "install_runtime", "ensure_runtime",
           "runtime_path", "repo_root"]
