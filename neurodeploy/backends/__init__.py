"""The registry of execution backends: the only place that maps a name to code.

``run``, ``validate``, ``energy``, ``check`` and ``bench`` all go through
:func:`compile` / :func:`supports`; adding a backend is one module (the interface of
:mod:`neurodeploy.backends.base`) and one line here. Modules load on first use, so
asking for ``torch`` never imports Lava's side and the other way round.

A *backend* executes a graph. A *hardware target* (``cmos45nm``, ``loihi1``, ...) is a
chip or process whose energy constants live in ``neurodeploy/targets/*.toml``; the two
words are kept apart, and a hardware name given where a backend is wanted gets a hint.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import NeurodeployError
from .base import Program, Support


@dataclass(frozen=True)
class Backend:
    name: str
    module: str                   # implements compile() and supports()
    description: str
    options: dict = field(default_factory=dict)   # fixed compile options of this name

    def load(self):
        return importlib.import_module(self.module)


BACKENDS = {b.name: b for b in (
    Backend("torch", "neurodeploy.backends.torch", "PyTorch reference (CUDA or CPU), exact counters"),
    Backend("lava", "neurodeploy.backends.lava", "Loihi 2 fixed point in Lava's runtime (graded input spikes)",
            {"precision": "fixed", "route": "loihi2"}),
    Backend("lava-netx", "neurodeploy.backends.lava", "Loihi fixed point as lava-dl netx runs it (input as a bias)",
            {"precision": "fixed", "route": "netx"}),
    Backend("lava-float", "neurodeploy.backends.lava", "Lava's floating-point models (tells quantisation apart)",
            {"precision": "float"}),
    Backend("model", "neurodeploy.backends.model", "the torch network the graph was exported from (zoo graphs)"),
    Backend("onnx", "neurodeploy.backends.onnx", "the one-timestep ONNX export in onnxruntime, run T times"),
)}


def names() -> list:
    return list(BACKENDS)


def get(name: str) -> Backend:
    """The backend of that name, or one line saying what the name is and what to use."""
    if name in BACKENDS:
        return BACKENDS[name]
    from .. import targets
    if name in targets.names() or name in targets.ALIASES:
        raise NeurodeployError(f"'{name}' is a hardware target (energy constants), not a backend; backends run "
                               f"graphs: {', '.join(BACKENDS)} (Loihi's simulator is 'lava')")
    raise NeurodeployError(f"unknown backend {name!r}; choose from: {', '.join(BACKENDS)}")


def as_graph(graph, source=None):
    """(graph, source): a graph given as a .nir path is read here (``source`` is then that path)."""
    import nir
    if isinstance(graph, (str, Path)):
        from ..ir.io import read_graph
        source = Path(graph)
        graph = read_graph(source)
    elif not isinstance(graph, nir.NIRGraph):
        raise NeurodeployError(f"expected a nir.NIRGraph or a .nir path, got a {type(graph).__name__}")
    return graph, source


def compile(name: str, graph, *, source: Optional[Path] = None, **options) -> Program:
    """Compile ``graph`` (a ``nir.NIRGraph`` or a .nir path) for backend ``name``; ``source``
    is the .nir file it came from, if any.

    The graph's parameters are checked here, once, for every backend
    (:func:`neurodeploy.ir.validate.validate_graph`): all backends accept and refuse the
    same graphs; a graph this backend cannot run is refused with the reason ``check`` prints."""
    from ..ir.foreign import normalise
    from ..ir.validate import validate_graph
    backend = get(name)
    graph, source = as_graph(graph, source)
    validate_graph(graph, dt=options.get("dt"), where=str(source) if source is not None else None)
    written = normalise(graph)
    if written is not graph:    # the backend runs the graph in NIR's form, not the file as it was written
        graph, source = written, None
    _refuse_unless(name, backend.load().supports(graph))     # validated just above: the backend's own test
    return backend.load().compile(graph, source=source, **{**options, **backend.options})


def require(name: str, graph) -> None:
    """One line, before anything runs, when backend ``name`` cannot run ``graph``."""
    _refuse_unless(name, supports(name, graph))


def _refuse_unless(name: str, s: Support) -> None:
    if not s.ok:
        raise NeurodeployError(f"backend '{name}' cannot run this graph: {s.why}")


def supports(name: str, graph) -> Support:
    """Can backend ``name`` run ``graph``? (What ``check`` prints; ``compile`` refuses the same.)"""
    from ..ir.foreign import normalise
    from ..ir.validate import graph_problems
    backend = get(name)
    graph, _ = as_graph(graph)
    graph = normalise(graph)
    try:
        problems = graph_problems(graph)
    except NeurodeployError as e:
        return Support(False, str(e))
    if problems:
        return Support(False, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return backend.load().supports(graph)


__all__ = ["Backend", "BACKENDS", "names", "get", "compile", "supports", "require", "as_graph", "Program", "Support"]
