"""The Lava worker: ``python -m neurodeploy.backends.lava.worker REQUEST.json`` in the runtime.

Runs with the Lava runtime's Python 3.10 and PYTHONPATH = the repository root; imports
only numpy, nir, h5py, lava and the plain modules of this package. The request::

    {"graph": "model.nir", "inputs": "x.npy", "timesteps": 8, "precision": "fixed"|"float",
     "out_dir": "folder", "fast_conv": true, "route": "loihi2"|"netx", "progress": "file"}

``inputs`` is (N, *input_shape) (static, presented every step: direct encoding) or
(T, N, *input_shape) (a sequence). ``progress`` (optional): a file that holds the number of
samples done so far, rewritten as they finish. Writes ``outputs.npy`` (T, N, *output_shape),
``spike_counts.npz`` (per population, per sample) and ``result.json`` (counters in
``RunCounters.to_dict()`` form, seconds, quantisation report). A failure prints one
line ``error: ...`` as the last line of stderr and exits 2.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ...ir.io import file_sha256


def main(request_path: str) -> int:
    import warnings
    # Lava imports every module beside a Process's file looking for models; ours are
    # given explicitly (compiler.run_config), so its "Cannot import module" notes are noise
    warnings.filterwarnings("ignore", message="Cannot import module")
    import nir
    from neurodeploy.ir.conventions import conventions_of
    from .compiler import counters, run_plan
    from .plan import build_plan

    req = json.loads(Path(request_path).read_text())
    out_dir = Path(req["out_dir"])
    t0 = time.perf_counter()
    graph = nir.read(req["graph"], type_check=False)   # grouped convs fail NIR's own check
    conv = conventions_of(graph)
    plan = build_plan(graph, conv)
    x = np.load(req["inputs"])
    if x.ndim == 0 or 0 in x.shape:   # Lava would wait forever for a first sample
        raise ValueError(f"the inputs hold no samples (shape {x.shape})")
    precision = req.get("precision", "fixed")
    if precision not in ("fixed", "float"):
        raise ValueError(f"precision must be 'fixed' or 'float', not {precision!r}")
    watch = _watch_children()
    r = run_plan(plan, x, int(req["timesteps"]), precision, bool(req.get("fast_conv", True)),
                 req.get("route", "loihi2"), before_stop=watch.set, progress=_progress_file(req.get("progress")))
    r["precision"] = precision
    c = counters(plan, r)
    c["graph_sha256"] = file_sha256(req["graph"])
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "outputs.npy", r["outputs"])
    np.savez(out_dir / "spike_counts.npz", **{k: v for k, v in r["per_sample"].items()})
    result = {
        "counters": c,
        "population_spike_counts": {k: v.tolist() for k, v in r["per_sample"].items()},
        "seconds": {**r["seconds"], "total": time.perf_counter() - t0},
        "quantisation": r["quantisation"] if precision == "fixed" else {},
        "overflows": r["overflows"],          # input currents wrapped by the 24-bit u, per population
        "precision": precision, "route": req.get("route", "loihi2"),
        "depths": {n: p.depth for n, p in plan.pops.items()},
        "processes": r["processes"],
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=1, default=float))
    return 0


def _progress_file(path):
    """``progress(n)``: the samples done so far, written over the file's first bytes (the
    caller polls it for its progress bar); None without a path."""
    if not path:
        return None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def progress(n: int) -> None:
        os.pwrite(fd, f"{int(n):>20d}".encode(), 0)
    return progress


def _children(pid: int) -> list:
    """(pid, state, exit code) of the processes whose parent is ``pid``, from /proc (the exit
    code, field 52 of stat, is what waitpid would report; it is read here because Lava's own
    threads may reap a dead process before we could ask the kernel)."""
    from .procfs import stats
    return [(child, stat[0].decode(), int(stat[49]) if len(stat) > 49 else None)
            for child, stat in stats() if int(stat[1]) == pid]


def _how_it_ended(pid: int, code) -> str:
    """'was killed with SIGKILL' / 'exited with status 1', from a wait status."""
    import signal
    if code is None:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (ChildProcessError, OSError, AttributeError):
            info = None
        if info is None:
            return "died"
        code = {os.CLD_EXITED: info.si_status << 8, os.CLD_DUMPED: info.si_status | 0x80}.get(
            info.si_code, info.si_status)
    if code & 0x7F:
        try:
            name = signal.Signals(code & 0x7F).name
        except ValueError:
            name = f"signal {code & 0x7F}"
        return f"crashed with {name}" if code & 0x80 or name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE",
                                                                  "SIGABRT") else f"was killed with {name}"
    return f"exited with status {code >> 8}"


def _watch_children(interval: float = 0.5):
    """While the network runs, watch Lava's model processes (our children): if one dies
    (killed, crashed), Lava's runtime would wait for it forever, so say which one died
    and how, in the one ``error:`` line the caller reads, and take the group down.
    Returns an Event; setting it (before Lava stops its processes, which may end them
    with a signal) stops the watch."""
    import signal
    import threading

    done = threading.Event()
    me = os.getpid()

    def watch():
        while not done.wait(interval):
            for pid, state, code in _children(me):
                if state in ("Z", "X") and not done.is_set():
                    how = _how_it_ended(pid, code)
                    print(f"error: a Lava runtime process (pid {pid}, started by the worker {me}) {how} while "
                          "the network ran; the run was stopped", file=sys.stderr, flush=True)
                    try:
                        if os.getpgrp() == me:
                            os.killpg(me, signal.SIGKILL)
                    finally:
                        os._exit(2)

    threading.Thread(target=watch, daemon=True).start()
    return done


def _die_with_parent(request: Path) -> None:
    """If the process that started us goes away (killed, crashed, or a program using the
    library ended by a signal it does not handle), exit; and where we lead our own
    process group, as the main side starts us, first take the group (Lava's model
    processes) down and remove what that process would have removed: the run's folder
    (the request's) and a graph folder made for its program (``GRAPH_FOLDER_PREFIX*``)."""
    import shutil
    import signal
    import threading
    from . import GRAPH_FOLDER_PREFIX

    parent = os.getppid()
    try:
        graph = Path(json.loads(request.read_text())["graph"])
    except (OSError, ValueError, KeyError, TypeError):   # main() says what is wrong with the request
        graph = None
    folders = [request.parent] + ([graph.parent] if graph is not None
                                  and graph.parent.name.startswith(GRAPH_FOLDER_PREFIX) else [])

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                try:
                    if os.getpgrp() == os.getpid():      # our own group, as the main side starts us
                        _stop_group_but_us()
                        for folder in folders:           # nothing writes into them any more
                            shutil.rmtree(folder, ignore_errors=True)
                        os.killpg(os.getpgrp(), signal.SIGKILL)
                finally:
                    os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _stop_group_but_us(grace: float = 2.0) -> None:
    """SIGKILL every other process of our group and wait (bounded) until none runs."""
    import signal
    from .procfs import live_in_group
    me, group = os.getpid(), os.getpgrp()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [pid for pid in live_in_group(group) if pid != me]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m neurodeploy.backends.lava.worker REQUEST.json", file=sys.stderr)
        sys.exit(2)
    _die_with_parent(Path(sys.argv[1]))
    try:
        code = main(sys.argv[1])
    except Exception as e:  # one line for the caller, the traceback above it for --debug
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        from .plan import PlanError
        prefix = "" if isinstance(e, PlanError) else f"{type(e).__name__}: "
        print(f"error: {prefix}{msg}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if os.getpgrp() == os.getpid():   # our own group (as started by the main side):
            import signal                 # Lava's model processes go with us
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(2)   # Lava's runtime threads must not keep the process alive
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
