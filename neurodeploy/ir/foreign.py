"""Graphs as other tools write them, put in the form NIR specifies before any backend sees them.

Three habits of producers that build their graph by tracing a torch module (nirtorch's
``extract_nir_graph``: Norse 1.1, Rockpool 3.1; Sinabs hands over torch tensors too):

* parameters are torch tensors, not NumPy arrays (NIR's writer refuses them);
* neuron parameters are scalars (Norse writes ``tau``, ``v_threshold``, ... as 0-d
  tensors), where NIR stores one value per neuron: they are broadcast to the shape the
  population receives;
* the Input type is the traced sample's shape, batch included: ``(1, 4)`` for a layer
  of 4 inputs. A leading 1 that the next node does not take (an Affine / Linear of 4
  inputs, a Conv2d on (C, H, W)) is dropped, so the graph takes (N, 4) like any other.

Nothing else changes: values, names, edges and metadata stay as written. Pure NumPy.
"""
from __future__ import annotations

import nir
import numpy as np

from .nodes import POPULATIONS
from .topology import output_shape, predecessors, toposort


def _numpy(v):
    if hasattr(v, "detach") and hasattr(v, "numpy"):     # a torch tensor, without importing torch
        return v.detach().cpu().numpy()
    return v


def _batch_free_input(graph) -> tuple | None:
    """The Input's shape less a leading traced batch of 1, when that is what the next nodes take."""
    ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(ins) != 1:
        return None
    shape = tuple(int(s) for s in np.asarray(_numpy(graph.nodes[ins[0]].input_type["input"])).reshape(-1))
    if len(shape) < 2 or shape[0] != 1:
        return None
    succ = [d for s, d in graph.edges if s == ins[0]]
    rest = shape[1:]
    for d in succ:
        node = graph.nodes[d]
        if isinstance(node, (nir.Affine, nir.Linear)) and rest == (int(np.shape(_numpy(node.weight))[1]),):
            continue
        if isinstance(node, nir.Conv2d) and len(rest) == 3:
            continue
        return None
    return rest if succ else None


def _first(node):
    """A population's first parameter (its shape is the population's, when written per neuron)."""
    return next(getattr(node, k) for k in ("v_threshold", "tau", "tau_mem", "r") if getattr(node, k, None) is not None)


def normalise(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` itself when it needs nothing, else a copy in NIR's own form (see the module)."""
    tensors = any(hasattr(v, "detach") for node in graph.nodes.values() for v in vars(node).values())
    scalars = [n for n, v in graph.nodes.items() if isinstance(v, POPULATIONS) and np.ndim(_numpy(_first(v))) == 0]
    batch_free = _batch_free_input(graph)
    if not (tensors or scalars or batch_free):
        return graph
    nodes = {}
    for name, node in graph.nodes.items():
        fields = {k: _numpy(v) for k, v in vars(node).items()}
        nodes[name] = type(node).__new__(type(node))
        nodes[name].__dict__.update(fields)
    if batch_free:
        inp = next(n for n, v in nodes.items() if isinstance(v, nir.Input))
        nodes[inp].input_type = {"input": np.array(batch_free)}
        nodes[inp].output_type = {"output": np.array(batch_free)}
    if scalars:
        _broadcast_scalars(nodes, graph.edges, set(scalars), batch_free)
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata or {}), type_check=False)


def _broadcast_scalars(nodes: dict, edges: list, scalars: set, batch_free) -> None:
    """Scalar neuron parameters -> arrays of the shape the population receives (forward edges)."""
    order, back = toposort(nodes, edges)
    pred = predecessors(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    shapes = {}
    for n in order:
        node = nodes[n]
        ins = [shapes[p] for p in pred[n] if (p, n) not in back and p in shapes]
        if isinstance(node, nir.Input):
            shapes[n] = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
        elif isinstance(node, POPULATIONS):
            if n in scalars and ins:
                for k, v in vars(node).items():
                    if k not in ("input_type", "output_type", "metadata") and isinstance(v, (np.ndarray, float, int)) \
                            and np.ndim(v) == 0:
                        setattr(node, k, np.full(ins[0], float(v)))
                node.input_type = {"input": np.array(ins[0])}
                node.output_type = {"output": np.array(ins[0])}
            shapes[n] = ins[0] if n in scalars and ins else tuple(np.shape(_first(node)))
        elif ins:
            try:
                shapes[n] = tuple(output_shape(node, ins[0]))
            except (ValueError, IndexError, TypeError):
                pass
