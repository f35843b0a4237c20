"""The graph parameters every backend relies on, checked once, the same for all of them.

:func:`neurodeploy.backends.compile` (and ``supports``, so ``check`` says the same)
calls :func:`validate_graph` before handing a graph to any backend, so the torch
reference and the Lava simulation accept and refuse the same graphs: before this,
Lava ran graphs with NaN weights that torch refused, and with dt = 0 torch gave 0
spikes where Lava gave 196,608.

What a graph must satisfy (each problem is one line naming the node and the value):

* dt (the graph's, or ``--dt``) finite and > 0 (the metadata itself is checked when
  it is parsed, :mod:`neurodeploy.ir.conventions`);
* every population parameter finite; tau, tau_mem and tau_syn >= dt, so that the
  forward-Euler decay 1 - dt/tau lies in [0, 1) (a smaller tau makes the membrane
  oscillate in sign, and Loihi's 12-bit decay cannot hold it); a spiking population's
  v_threshold > 0 (Loihi's threshold is unsigned, and a threshold <= 0 fires without input);
* every weight, bias and scale finite; convolution and pooling kernels, strides and
  dilations >= 1, paddings >= 0 (a pooling's at most half its kernel), groups >= 1
  dividing the channels; weight arrays of the rank their node type has;
* Delay values finite and >= 0, Threshold values finite;
* the Input's shape made of integers >= 1; every edge names two nodes of the graph;
* no cycle without a population or a Delay on it (NIR edges have no delay, so such a
  loop of stateless nodes is an equation, not a computation).

Pure numpy + nir (no torch).
"""
from __future__ import annotations

from typing import List, Optional

import nir
import numpy as np

from ..errors import NeurodeployError
from .conventions import conventions_of
from .nodes import POOLS, POPULATIONS, SPIKING
from .topology import flatten_graph, toposort

_TAUS = ("tau", "tau_mem", "tau_syn")
_POPULATION_PARAMETERS = ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in")


def _array(node_name: str, node, field: str, problems: list) -> Optional[np.ndarray]:
    v = getattr(node, field, None)
    if v is None:
        return None
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        problems.append(f"node {node_name} ({type(node).__name__}): {field} is not numeric")
        return None
    return a


def _where(a: np.ndarray, bad: np.ndarray) -> str:
    """'3 of 8 values, e.g. -1.0'."""
    n = int(np.count_nonzero(bad))
    first = float(a[bad].ravel()[0]) if n else None
    return f"{n} of {a.size} values, e.g. {first!r}" if a.size > 1 else f"got {first!r}"


def _ints(v) -> Optional[List[int]]:
    a = np.atleast_1d(np.asarray(v)).ravel()
    if a.size == 0 or not np.all(np.isfinite(a.astype(np.float64, copy=False))) or not np.all(a == np.round(a)):
        return None
    return [int(x) for x in a]


def graph_problems(graph, dt: Optional[float] = None) -> List[str]:
    """Every problem of the graph's parameters, one line each (empty: the graph is fine).
    ``dt`` overrides the graph's own (``--dt``)."""
    if not isinstance(graph, nir.NIRGraph):
        return [f"not a NIR graph but a {type(graph).__name__}"]
    problems: List[str] = []
    conv = conventions_of(graph)      # malformed metadata: NeurodeployError from the parser
    if dt is not None:
        try:
            dt_value = float(dt)
        except (TypeError, ValueError):
            dt_value = float("nan")
        if not np.isfinite(dt_value) or dt_value <= 0:
            return [f"dt must be a finite number > 0, got {dt!r} (from --dt)"]
    else:
        dt_value = conv.dt
    nodes, edges = flatten_graph(graph)
    for s, d in edges:
        for x in (s, d):
            if x not in nodes:
                problems.append(f"edge {s} -> {d} names a node {x!r} that the graph does not have")
    if problems:
        return problems
    for name, node in nodes.items():
        kind = type(node).__name__
        if isinstance(node, POPULATIONS):
            arrays = {f: _array(name, node, f, problems) for f in _POPULATION_PARAMETERS}
            for f, a in arrays.items():
                if a is None:
                    continue
                bad = ~np.isfinite(a)
                if bad.any():
                    problems.append(f"node {name} ({kind}): {f} must be finite ({_where(a, bad)})")
                    continue
                if f in _TAUS:
                    small = a < dt_value * (1 - 1e-9)
                    if small.any():
                        problems.append(f"node {name} ({kind}): {f} must be > 0 and at least dt = {dt_value:g}, so "
                                        f"that the decay 1 - dt/{f} lies in [0, 1) ({_where(a, small)}); a graph made for "
                                        "another dt needs --dt")
                if f == "v_threshold" and isinstance(node, SPIKING):
                    low = a <= 0
                    if low.any():
                        problems.append(f"node {name} ({kind}): v_threshold must be > 0 ({_where(a, low)})")
        elif isinstance(node, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.Scale)):
            w = _array(name, node, "scale" if isinstance(node, nir.Scale) else "weight", problems)
            b = _array(name, node, "bias", problems)
            for f, a in (("weight", w), ("bias", b)):
                if a is not None and not np.isfinite(a).all():
                    problems.append(f"node {name} ({kind}): {f} must be finite ({_where(a, ~np.isfinite(a))})")
            if w is None:
                continue
            rank = {nir.Affine: 2, nir.Linear: 2, nir.Conv1d: 3, nir.Conv2d: 4}.get(type(node))
            if rank is not None and w.ndim != rank:
                problems.append(f"node {name} ({kind}): weight must have {rank} dimensions, it has shape "
                                f"{tuple(w.shape)}")
                continue
            if rank is not None and 0 in w.shape:
                problems.append(f"node {name} ({kind}): weight has an empty dimension {tuple(w.shape)}")
                continue
            if b is not None and rank is not None and b.size not in (0, 1, w.shape[0]) and b.ndim <= 1:
                problems.append(f"node {name} ({kind}): bias has {b.size} values for {w.shape[0]} outputs")
            if isinstance(node, (nir.Conv1d, nir.Conv2d)):
                for f, low in (("stride", 1), ("dilation", 1)):
                    v = _ints(getattr(node, f))
                    if v is None or min(v) < low:
                        problems.append(f"node {name} ({kind}): {f} must be integers >= {low}, got "
                                        f"{np.asarray(getattr(node, f)).tolist()!r}")
                if not isinstance(node.padding, str):
                    v = _ints(node.padding)
                    if v is None or min(v) < 0:
                        problems.append(f"node {name} ({kind}): padding must be integers >= 0, got "
                                        f"{np.asarray(node.padding).tolist()!r}")
                g = _ints(node.groups)
                if g is None or len(g) != 1 or g[0] < 1 or w.shape[0] % g[0]:
                    problems.append(f"node {name} ({kind}): groups must be an integer >= 1 dividing the "
                                    f"{w.shape[0]} output channels, got {np.asarray(node.groups).tolist()!r}")
        elif isinstance(node, POOLS):
            k, s, p = (_ints(getattr(node, f)) for f in ("kernel_size", "stride", "padding"))
            if k is None or min(k) < 1:
                problems.append(f"node {name} ({kind}): kernel_size must be integers >= 1, got "
                                f"{np.asarray(node.kernel_size).tolist()!r}")
            if s is None or min(s) < 1:
                problems.append(f"node {name} ({kind}): stride must be integers >= 1, got "
                                f"{np.asarray(node.stride).tolist()!r}")
            if p is None or min(p) < 0:
                problems.append(f"node {name} ({kind}): padding must be integers >= 0, got "
                                f"{np.asarray(node.padding).tolist()!r}")
            elif k is not None and min(k) >= 1:
                kk = k * 2 if len(k) == 1 else k
                pp = p * 2 if len(p) == 1 else p
                if any(2 * pi > ki for pi, ki in zip(pp, kk)):
                    problems.append(f"node {name} ({kind}): padding {p} is more than half the kernel {k}")
        elif isinstance(node, nir.Threshold):
            a = _array(name, node, "threshold", problems)
            if a is not None and not np.isfinite(a).all():
                problems.append(f"node {name} (Threshold): threshold must be finite ({_where(a, ~np.isfinite(a))})")
        elif isinstance(node, nir.Delay):
            a = _array(name, node, "delay", problems)
            if a is not None and (~np.isfinite(a) | (a < 0)).any():
                problems.append(f"node {name} (Delay): delay must be finite and >= 0 "
                                f"({_where(a, ~np.isfinite(a) | (a < 0))})")
        elif isinstance(node, nir.Input):
            shape = _ints(node.input_type.get("input", [])) if isinstance(node.input_type, dict) else None
            raw = np.asarray(node.input_type.get("input", [])) if isinstance(node.input_type, dict) else None
            if raw is not None and raw.size and (shape is None or min(shape) < 1):
                problems.append(f"node {name} (Input): its shape must be integers >= 1, got {raw.tolist()!r}")
    problems += _stateless_cycles(nodes, edges)
    return problems


def _stateless_cycles(nodes: dict, edges: list) -> List[str]:
    """Cycles that pass through no population and no Delay (algebraic loops)."""
    keep = {n: v for n, v in nodes.items() if not isinstance(v, POPULATIONS + (nir.Delay,))}
    sub = [(s, d) for s, d in edges if s in keep and d in keep]
    _, back = toposort(keep, sub)
    return [f"the edge {s} -> {d} closes a cycle with no neuron population or Delay on it (NIR edges have no "
            "delay, so the loop has no defined value)" for s, d in sorted(back)]


def validate_graph(graph, dt: Optional[float] = None, where: Optional[str] = None) -> None:
    """Raise one NeurodeployError line for the first problem (and how many more there are)."""
    problems = graph_problems(graph, dt)
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise NeurodeployError(f"{where + ': ' if where else ''}{problems[0]}{more}")


__all__ = ["graph_problems", "validate_graph"]
