"""A graph -> the same graph with its numbers where Loihi's fixed point puts them.

The Lava target rounds a population's incoming weights to 8-bit mantissas with a shared
exponent, its decay to 12 bits and its threshold to a 17-bit mantissa
(:mod:`.fixed_point`, grouped as :class:`.compiler.Quantised` groups them). A network
trained in float (a user's snnTorch network, say) therefore runs slightly differently on
Lava than on the torch backend, and the difference is rounding, not semantics.
:func:`on_loihi_grid` rewrites the NIR graph with the float values those integers stand
for: the torch backend then simulates Loihi's weights, decays and thresholds, and what
is left between the two is the integer membrane (24-bit state, rounded decays of v).
It is what ``export --loihi-grid`` writes; the zoo gets the same by Loihi-aware training.

Pure numpy + nir: a pass graph -> graph, the input graph unchanged.
"""
from __future__ import annotations

import nir
import numpy as np

from ...errors import NeurodeployError
from ...ir.conventions import conventions_of
from . import fixed_point as fx
from .compiler import Quantised, population_gain
from .plan import INPUT, PlanError, build_plan


def _on_decay_grid(decay: np.ndarray) -> np.ndarray:
    dv, _ = fx.decay_to_dv(decay)
    return 1.0 - dv.astype(np.float64) / fx.DECAY_UNITY


def _on_syn_grid(syn_decay: np.ndarray) -> np.ndarray:
    du, _ = fx.syn_decay_to_du(syn_decay)
    return 1.0 - (du.astype(np.float64) + 1.0) / fx.DECAY_UNITY


def on_loihi_grid(graph: nir.NIRGraph, route: str = "loihi2") -> tuple:
    """(graph on Loihi's grid, report {node: max relative change}). Refuses, by name, a
    weight node shared by populations whose grids differ."""
    conv = conventions_of(graph)
    try:
        plan = build_plan(graph, conv)
        q = Quantised(plan, "fixed", route)
    except PlanError as e:
        raise NeurodeployError(f"cannot put the graph on Loihi's grid: {e}") from None
    dt = conv.dt
    weights, report = {}, {}
    for p in plan.paths:
        for op, hw in zip(p.ops, q.host_weights.get(id(p), [])):
            if op.weight is None or op.ones or op.node not in graph.nodes:
                continue
            w = np.asarray(hw, np.float64) / op.scale
            if op.node in weights and not np.array_equal(weights[op.node], w):
                raise NeurodeployError(f"cannot put the graph on Loihi's grid: projection '{op.node}' feeds "
                                       "populations whose weight grids differ")
            weights[op.node] = w
    nodes = dict(graph.nodes)
    for name, w in weights.items():
        node = nodes[name]
        old = np.asarray(node.weight, np.float64)
        report[name] = float(np.max(np.abs(w - old)) / max(np.max(np.abs(old)), 1e-30))
        if isinstance(node, nir.Conv2d):
            nodes[name] = nir.Conv2d(input_shape=node.input_shape, weight=w.astype(np.float32), stride=node.stride,
                                     padding=node.padding, dilation=node.dilation, groups=node.groups,
                                     bias=node.bias)
        elif isinstance(node, nir.Affine):
            nodes[name] = nir.Affine(weight=w.astype(np.float32), bias=node.bias)
        elif isinstance(node, nir.Linear):
            nodes[name] = nir.Linear(weight=w.astype(np.float32))
    for name, pop in plan.pops.items():
        node, s = nodes[name], q.scale.get(name)
        if s is None:
            continue
        vth_mant, _ = fx.threshold_mantissa(pop.threshold, s)
        threshold = vth_mant.astype(np.float64) * (1 << fx.VTH_SHIFT) / s
        gain = population_gain(pop)
        if isinstance(node, nir.LIF):
            decay = _on_decay_grid(pop.decay)
            tau = dt / (1.0 - decay)
            # the same gain (r dt / tau) and constant drive (v_leak dt / tau) at the new tau
            nodes[name] = nir.LIF(tau=tau, r=gain * tau / dt, v_leak=np.asarray(node.v_leak, np.float64) *
                                  (tau / np.asarray(node.tau, np.float64)), v_threshold=threshold,
                                  v_reset=node.v_reset)
        elif isinstance(node, nir.IF):
            nodes[name] = nir.IF(r=node.r, v_threshold=threshold, v_reset=node.v_reset)
        elif isinstance(node, nir.CubaLIF):
            decay, syn = _on_decay_grid(pop.decay), _on_syn_grid(pop.syn_decay)
            tau_mem, tau_syn = dt / (1.0 - decay), dt / (1.0 - syn)
            w_in = np.asarray(pop.w_in, np.float64) * tau_syn / dt          # keeps w_in dt / tau_syn
            r = np.asarray(node.r, np.float64) * tau_mem / np.asarray(node.tau_mem, np.float64)   # keeps r dt / tau_mem
            nodes[name] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=node.v_leak,
                                      v_threshold=threshold, v_reset=node.v_reset, w_in=w_in)
    out = nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}), type_check=False)
    return out, report


__all__ = ["on_loihi_grid", "INPUT"]
