"""``neurodeploy check``: what a NIR graph is, what can run it, and its known pitfalls.

Works on any NIR file, ours or another tool's. The type check runs the graph
once on a zero input with the torch reference backend (which understands
grouped convolutions, unlike NIR 1.0.8's own type inference), so a shape
mismatch on any edge is reported with the node's name. Which backends can run
the graph is asked of the backends themselves (:func:`neurodeploy.backends.supports`),
the same test their ``compile`` applies.
"""
from __future__ import annotations

import nir
import numpy as np

from .errors import NeurodeployError
from .ir.conventions import conventions_of
from .ir.nodes import POPULATIONS, PROJECTIONS, neuron_shape, weights as _weights
from .ir.topology import flatten_graph, is_chain


def summarize(graph: nir.NIRGraph) -> dict:
    """Counts and shapes of a graph (pure: reads the graph only)."""
    nodes, edges = flatten_graph(graph)
    types: dict = {}
    populations, projections = {}, {}
    params = 0
    for name, node in nodes.items():
        types[type(node).__name__] = types.get(type(node).__name__, 0) + 1
        if isinstance(node, POPULATIONS):
            populations[name] = {"type": type(node).__name__, "neurons": int(np.prod(neuron_shape(node)))}
        elif isinstance(node, PROJECTIONS):
            w = _weights(node)
            w = None if w is None else np.asarray(w)
            b = np.asarray(getattr(node, "bias", np.zeros(0)))
            n = int(w.size if w is not None else 0) + int(b.size)
            params += n
            projections[name] = {"type": type(node).__name__, "parameters": n,
                                 "nonzero_weights": int(np.count_nonzero(w)) if w is not None else 0}
    ins = [np.asarray(n.input_type["input"]).tolist() for n in nodes.values() if isinstance(n, nir.Input)]
    outs = [np.asarray(n.output_type["output"]).tolist() for n in nodes.values() if isinstance(n, nir.Output)]
    return {"nodes": len(nodes), "edges": len(edges), "node_types": types,
            "populations": len(populations), "neurons": sum(p["neurons"] for p in populations.values()),
            "projections": len(projections), "parameters": params,
            "synaptic_weights_nonzero": sum(p["nonzero_weights"] for p in projections.values()),
            "input_shape": ins[0] if len(ins) == 1 else ins, "output_shape": outs[0] if len(outs) == 1 else outs,
            "population_table": populations, "projection_table": projections}


def lint(graph: nir.NIRGraph) -> list:
    """Known pitfalls, each one line (docs/design.md: NIR issue #176, snnTorch #410, ...)."""
    nodes, _ = flatten_graph(graph)
    warnings = []
    conv = conventions_of(graph)
    if not conv.from_metadata:
        warnings.append("no neurodeploy metadata: dt, reset and encoding are unknown; backends assume the "
                        f"ecosystem's conventions: LIF at dt={conv.dt} (snnTorch's exporter), IF and I adding r*I "
                        "once per step (Sinabs, snnTorch's importer), reset to v_reset, static inputs presented "
                        "at every step; override dt with --dt")
    for name, node in nodes.items():
        if isinstance(node, POPULATIONS):
            if neuron_shape(node) == ():
                warnings.append(f"{name}: scalar neuron parameters; NIR type inference needs arrays of the "
                                "population shape (NIR issue #176)")
        if isinstance(node, nir.Input):
            shape = np.asarray(node.input_type["input"]).ravel()
            if len(shape) == 4:
                warnings.append(f"{name}: input type {shape.tolist()} has 4 dimensions; a batch dimension "
                                "in the type breaks other tools (types are batch-free)")
        if isinstance(node, nir.Conv2d) and int(node.groups) > 1:
            warnings.append(f"{name}: grouped conv (groups={int(node.groups)}); nir.read needs "
                            "type_check=False for this graph (NIR 1.0.8 infers C_in from weight.shape[1])")
            break
    if conv.population_reset:
        warnings.append(f"{len(conv.population_reset)} population(s) reset otherwise than NIR's reset to "
                        "v_reset (recorded in this graph's metadata, honoured by neurodeploy's backends); "
                        "other NIR tools will reset them to v_reset")
    return warnings


def type_check(graph: nir.NIRGraph) -> None:
    """Run once on zeros with the torch backend; raises NeurodeployError naming the node."""
    from .backends import compile
    program = compile("torch", graph, device="cpu")
    program.run(np.zeros((1,) + program.input_shape, np.float32), timesteps=1, record_populations=False)


def netx_support(graph: nir.NIRGraph, lava_ok: bool, lava_why: str) -> dict:
    """Can ``export --format netx`` write this graph: a chain once parallel projections are
    merged and pooling folded (lava-dl netx loads chains only)?"""
    from .passes import chain_passes
    try:
        chain = is_chain(chain_passes(graph))
    except Exception:  # noqa: BLE001 - a pass that cannot apply means: not a chain for netx
        chain = False
    resets = conventions_of(graph).population_reset
    if resets:
        return {"ok": False, "why": f"netx's neurons reset to zero; {len(resets)} population(s) reset otherwise"}
    if chain and lava_ok:
        return {"ok": True, "why": "a chain of supported layers once parallel projections are merged and pooling folded"}
    return {"ok": False, "why": "lava-dl netx loads chains only; this graph keeps fan-in/fan-out after merging"
            if not chain else lava_why}


def target_support(graph: nir.NIRGraph) -> dict:
    """Which backends can run this graph, and why not (each backend answers for itself)."""
    from . import backends
    out = {}
    for name in ("torch", "lava", "model"):
        s = backends.supports(name, graph)
        out[name] = {"ok": s.ok, "why": s.why}
    out["netx"] = netx_support(graph, out["lava"]["ok"], out["lava"]["why"])
    return out


def check(graph: nir.NIRGraph) -> dict:
    report = summarize(graph)
    try:
        type_check(graph)
        report["type_check"] = "ok"
    except NeurodeployError as e:
        report["type_check"] = f"failed: {e}"
    report["warnings"] = lint(graph)
    report["targets"] = target_support(graph)
    conv = conventions_of(graph)
    report["conventions"] = {k: v for k, v in conv.__dict__.items() if k != "extra"}
    return report
