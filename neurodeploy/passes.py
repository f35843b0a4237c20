"""Exact graph -> graph rewrites that turn exported graphs into chains (for lava-dl netx).

Every pass is a pure function ``nir.NIRGraph -> nir.NIRGraph``: the input graph is
not modified, the result is a new graph with the same metadata (conventions).
Untouched nodes are shared, not copied (NIR nodes are treated as immutable here).

* :func:`merge_parallel_projections` -- several Conv2d (or Affine) projections
  from the SAME source into the SAME target (a Fire module's expand1x1 and
  expand3x3 slice-writers, summed by NIR fan-in) become one projection: smaller
  kernels are zero-padded around their centre to the largest, biases and
  weights are summed.
* :func:`fold_pooling_into_projection` -- an AvgPool2d / SumPool2d with
  kernel == stride and no padding whose only consumer is a Conv2d (or a
  Flatten -> Affine) becomes part of that projection: a KxK conv (stride s,
  padding p, dilation d) after a kxk pool is one conv with kernel
  k*d*(K-1) + k, stride k*s, padding k*p, weights w/k^2 (AvgPool) or w (SumPool)
  spread over each kxk block.
* :func:`pool_as_depthwise_conv` -- a remaining pool that feeds a population
  becomes a depthwise Conv2d with a ones (SumPool) or 1/k^2 (AvgPool) kernel.

Exactness. The exported spiking twins keep every weight on a power-of-two grid on
which all sums over spikes (or pooled spikes, POOLED_INPUT_BITS fractional bits) are
exact in float32 (``architectures.layers.snap_to_exact_grid``), so re-associating a
sum changes no bit. The passes only rewrite where that argument holds:

* merging is exact where the merged kernels do not overlap (slice-writers) and in
  general whenever the merged sums stay on the grid (weights that overlap are added);
* folding a pool needs its input to be binary (a population's spikes) and 1/k^2
  to be a power of two (k = 1, 2, 4, ...), so ``w / k^2`` is exact and every partial
  sum of the composed conv is a partial sum of the original one, re-ordered;
* a pool whose input is not a population, with padding, or whose size does not
  divide its input is left alone (the result is then maybe not a chain; netx export
  says so, naming the node).

Tests compare spikes on the torch backend before and after each pass.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import nir
import numpy as np

from .ir.nodes import POOLS, POPULATIONS, SPIKING
from .ir.topology import infer_shapes, is_chain, pair, predecessors, successors

__all__ = ["merge_parallel_projections", "fold_pooling_into_projection", "pool_as_depthwise_conv",
           "chain_passes", "run_passes", "invariants", "PassError", "CHAIN_PASSES"]


# ---------------------------------------------------------------- helpers
def _new_graph(graph: nir.NIRGraph, nodes: Dict[str, object], edges: List[Tuple[str, str]]) -> nir.NIRGraph:
    meta = dict(getattr(graph, "metadata", None) or {})
    return nir.NIRGraph(nodes=dict(nodes), edges=list(edges), metadata=meta, type_check=False)


def _conv(like, weight, bias, stride, padding, dilation, groups, input_shape=None):
    ins = input_shape if input_shape is not None else like.input_shape
    return nir.Conv2d(input_shape=None if ins is None else tuple(int(s) for s in np.asarray(ins).reshape(-1)),
                      weight=np.ascontiguousarray(weight, np.float32), stride=tuple(stride),
                      padding=tuple(padding), dilation=tuple(dilation), groups=int(groups),
                      bias=np.ascontiguousarray(bias, np.float32))


def _bias(node, n_out):
    b = getattr(node, "bias", None)
    if b is None:
        return np.zeros(n_out, np.float64)
    return np.broadcast_to(np.asarray(b, np.float64), (n_out,)).copy()


# ---------------------------------------------------------------- merge
def _merge_group(names, nodes):
    """One Conv2d / Affine for parallel projections `names` (same source, same target), or None."""
    group = [nodes[n] for n in names]
    if all(isinstance(g, nir.Affine) for g in group):
        shapes = {np.asarray(g.weight).shape for g in group}
        if len(shapes) != 1:
            return None
        w = sum(np.asarray(g.weight, np.float64) for g in group)
        b = sum(_bias(g, w.shape[0]) for g in group)
        return nir.Affine(weight=w.astype(np.float32), bias=b.astype(np.float32))
    if not all(isinstance(g, nir.Conv2d) for g in group):
        return None
    if any(isinstance(g.padding, str) for g in group):
        return None
    strides = {pair(g.stride) for g in group}
    dils = {pair(g.dilation) for g in group}
    groups = {int(g.groups) for g in group}
    couts = {np.asarray(g.weight).shape[:2] for g in group}
    if len(strides) != 1 or len(dils) != 1 or len(groups) != 1 or len(couts) != 1:
        return None
    d = dils.pop()
    kmax = tuple(max(np.asarray(g.weight).shape[2 + i] for g in group) for i in range(2))
    pad = []
    for i in range(2):
        # a kernel k padded by (kmax - k)/2 on each side needs padding p + d (kmax - k)/2
        want = set()
        for g in group:
            k = np.asarray(g.weight).shape[2 + i]
            if (kmax[i] - k) % 2:
                return None
            want.add(pair(g.padding)[i] + d[i] * (kmax[i] - k) // 2)
        if len(want) != 1:
            return None
        pad.append(want.pop())
    o, ci = couts.pop()
    w = np.zeros((o, ci) + kmax, np.float64)
    for g in group:
        gw = np.asarray(g.weight, np.float64)
        a, c = (kmax[0] - gw.shape[2]) // 2, (kmax[1] - gw.shape[3]) // 2
        w[:, :, a:a + gw.shape[2], c:c + gw.shape[3]] += gw
    b = sum(_bias(g, o) for g in group)
    return _conv(group[0], w, b, strides.pop(), pad, d, groups.pop())


def merge_parallel_projections(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Parallel projections (same single source, same single target) -> one projection."""
    pred, succ = predecessors(graph), successors(graph)
    groups: Dict[Tuple[str, str], List[str]] = {}
    for n, node in graph.nodes.items():
        if isinstance(node, (nir.Conv2d, nir.Affine)) and len(pred[n]) == 1 and len(succ[n]) == 1:
            groups.setdefault((pred[n][0], succ[n][0]), []).append(n)
    nodes, edges = dict(graph.nodes), list(graph.edges)
    for (src, dst), names in groups.items():
        if len(names) < 2:
            continue
        merged = _merge_group(names, graph.nodes)
        if merged is None:
            continue
        name = "+".join(names)
        pos = list(nodes).index(names[0])
        items = [(k, v) for k, v in nodes.items() if k not in names]
        items.insert(min(pos, len(items)), (name, merged))
        nodes = dict(items)
        edges = [e for e in edges if e[0] not in names and e[1] not in names]
        edges += [(src, name), (name, dst)]
    return _new_graph(graph, nodes, edges)


# ---------------------------------------------------------------- pooling
def _pool_params(pool):
    k, s, p = pair(pool.kernel_size), pair(pool.stride), pair(pool.padding)
    return k, s, p


def _pool_scale(pool, k) -> float | None:
    """The pool's weight, or None if not exact (AvgPool with 1/k^2 not a power of two)."""
    if isinstance(pool, nir.SumPool2d):
        return 1.0
    n = k[0] * k[1]
    return 1.0 / n if n & (n - 1) == 0 else None


def _foldable_pool(n, graph, pred, shapes):
    pool = graph.nodes[n]
    if not isinstance(pool, POOLS) or len(pred[n]) != 1:
        return None
    k, s, p = _pool_params(pool)
    scale = _pool_scale(pool, k)
    if k != s or p != (0, 0) or scale is None:
        return None
    if not isinstance(graph.nodes[pred[n][0]], SPIKING):     # binary input only (exactness)
        return None
    ins = shapes.get(pred[n][0])
    if ins is None or len(ins) != 3:
        return None
    return k, scale, ins


def fold_pooling_into_projection(graph: nir.NIRGraph) -> nir.NIRGraph:
    """pool(k, stride k) -> Conv2d, or pool -> Flatten -> Affine, with the pool read by
    nothing else, becomes one projection reading the pool's input (see module docstring)."""
    pred, succ = predecessors(graph), successors(graph)
    shapes = infer_shapes(graph)
    nodes, edges = dict(graph.nodes), list(graph.edges)
    for n in list(graph.nodes):
        info = _foldable_pool(n, graph, pred, shapes)
        if info is None or len(succ[n]) != 1:
            continue
        (kh, kw), scale, ins = info
        src, nxt = pred[n][0], succ[n][0]
        cons = graph.nodes[nxt]
        if isinstance(cons, nir.Conv2d) and len(pred[nxt]) == 1 and not isinstance(cons.padding, str):
            w = np.asarray(cons.weight, np.float64)
            (sy, sx), (py, px), (dy, dx) = pair(cons.stride), pair(cons.padding), pair(cons.dilation)
            if (py or px) and (ins[1] % kh or ins[2] % kw):
                continue    # the conv's zero padding would meet rows the pool dropped
            K0, K1 = w.shape[2:]
            big = np.zeros(w.shape[:2] + (kh * dy * (K0 - 1) + kh, kw * dx * (K1 - 1) + kw), np.float64)
            for u in range(K0):
                for v in range(K1):
                    big[:, :, kh * dy * u:kh * dy * u + kh, kw * dx * v:kw * dx * v + kw] = \
                        (w[:, :, u, v] * scale)[:, :, None, None]
            new = _conv(cons, big, _bias(cons, w.shape[0]), (kh * sy, kw * sx), (kh * py, kw * px), (1, 1),
                        cons.groups, input_shape=ins[1:])
            edges = [e for e in edges if e != (src, n) and e != (n, nxt)] + [(src, nxt)]
            nodes.pop(n)
            nodes[nxt] = new
        elif (isinstance(cons, nir.Flatten) and len(succ[nxt]) == 1 and len(pred[nxt]) == 1
              and isinstance(graph.nodes[succ[nxt][0]], (nir.Affine, nir.Linear))
              and len(pred[succ[nxt][0]]) == 1 and ins[1] % kh == 0 and ins[2] % kw == 0
              and cons.start_dim % 3 == 0 and cons.end_dim % 3 == 2):
            aff_name = succ[nxt][0]
            aff = graph.nodes[aff_name]
            w = np.asarray(aff.weight, np.float64)
            c, h, wd = ins
            w4 = w.reshape(w.shape[0], c, h // kh, wd // kw)
            big = np.repeat(np.repeat(w4, kh, axis=2), kw, axis=3) * scale
            flat = nir.Flatten(input_type={"input": np.array(ins)}, start_dim=0, end_dim=-1)
            new = (nir.Affine(weight=big.reshape(w.shape[0], -1).astype(np.float32),
                              bias=_bias(aff, w.shape[0]).astype(np.float32)) if isinstance(aff, nir.Affine)
                   else nir.Linear(weight=big.reshape(w.shape[0], -1).astype(np.float32)))
            edges = [e for e in edges if e != (src, n) and e != (n, nxt)] + [(src, nxt)]
            nodes.pop(n)
            nodes[nxt] = flat
            nodes[aff_name] = new
        # anything else: leave the pool where it is
    return _new_graph(graph, nodes, edges)


def pool_as_depthwise_conv(graph: nir.NIRGraph, readout: bool = False) -> nir.NIRGraph:
    """SumPool2d / AvgPool2d -> depthwise Conv2d with a ones (or 1/k^2) kernel.

    Only pools whose 1/k^2 is a power of two are rewritten (exactness). With
    ``readout=False`` a pool from which no population can be reached (the readout
    after the last population, e.g. global average pooling) is left alone.
    """
    succ = successors(graph)
    shapes = infer_shapes(graph)
    pred = predecessors(graph)

    def reaches_population(n, seen=()):
        for m in succ.get(n, []):
            if isinstance(graph.nodes[m], POPULATIONS):
                return True
            if m not in seen and reaches_population(m, seen + (m,)):
                return True
        return False

    nodes = dict(graph.nodes)
    for n, node in graph.nodes.items():
        if not isinstance(node, POOLS) or not pred[n]:
            continue
        k, s, p = _pool_params(node)
        scale = _pool_scale(node, k)
        ins = shapes.get(pred[n][0])
        if scale is None or ins is None or len(ins) != 3:
            continue
        if not readout and not reaches_population(n):
            continue
        c = ins[0]
        w = np.full((c, 1) + k, scale, np.float64)
        nodes[n] = _conv(node, w, np.zeros(c), s, p, (1, 1), c, input_shape=ins[1:])
    return _new_graph(graph, nodes, list(graph.edges))


class PassError(Exception):
    """A pass broke an invariant of the graph; the message names the pass."""


def invariants(graph: nir.NIRGraph) -> dict:
    """What no pass may change or break: every edge joins existing nodes, every node but
    the Input has an incoming edge, and the Input/Output shapes and the populations (names
    and shapes) stay as they were. Returns the part that must stay equal."""
    for s, d in graph.edges:
        if s not in graph.nodes or d not in graph.nodes:
            raise ValueError(f"edge {s} -> {d} names a node that is not in the graph")
    pred = predecessors(graph)
    orphans = [n for n, v in graph.nodes.items() if not isinstance(v, nir.Input) and not pred[n]]
    if orphans:
        raise ValueError(f"node(s) without an incoming edge: {', '.join(orphans)}")
    shapes = infer_shapes(graph)
    ports = {n: shapes.get(n) for n, v in graph.nodes.items() if isinstance(v, (nir.Input, nir.Output))}
    pops = {n: shapes.get(n) for n, v in graph.nodes.items() if isinstance(v, POPULATIONS)}
    return {"ports": ports, "populations": pops}


def run_passes(graph: nir.NIRGraph, passes) -> nir.NIRGraph:
    """Apply ``passes`` (functions graph -> graph) in order, checking the invariants after
    each one (torch.fx's PassManager does the same): a pass that breaks one is named."""
    before = invariants(graph)
    for p in passes:
        graph = p(graph)
        try:
            after = invariants(graph)
        except ValueError as e:
            raise PassError(f"pass {p.__name__} broke the graph: {e}") from None
        if after != before:
            raise PassError(f"pass {p.__name__} changed the graph's ports or populations")
    return graph


CHAIN_PASSES = (merge_parallel_projections, fold_pooling_into_projection, pool_as_depthwise_conv)


def chain_passes(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The passes netx export runs, in order: merge, fold pooling, remaining pools as depthwise convs."""
    return run_passes(graph, CHAIN_PASSES)
