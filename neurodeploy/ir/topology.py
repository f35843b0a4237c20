"""Graph structure, once: neighbours, nested graphs, order and cycles, chains, shapes.

Pure functions over a ``nir.NIRGraph`` (or its ``nodes`` / ``edges``); nothing here
changes a graph. Shapes are batch-free, as in NIR.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import nir
import numpy as np

from .nodes import POOLS, POPULATIONS, neuron_shape


def predecessors(graph) -> Dict[str, List[str]]:
    """node -> the nodes with an edge into it, in edge order (NIR sums them: fan-in)."""
    pred = {n: [] for n in graph.nodes}
    for s, d in graph.edges:
        pred.setdefault(d, []).append(s)
    return pred


def successors(graph) -> Dict[str, List[str]]:
    """node -> the nodes its output goes to, in edge order."""
    succ = {n: [] for n in graph.nodes}
    for s, d in graph.edges:
        succ.setdefault(s, []).append(d)
    return succ


def flatten_graph(graph: nir.NIRGraph, prefix: str = "") -> Tuple[dict, list]:
    """Inline nested NIRGraphs: nodes get 'outer.inner' names; a subgraph's own
    Input/Output nodes stay as pass-through nodes between the outer edges."""
    nodes, edges = {}, []
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = flatten_graph(node, full + ".")
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        s, d = prefix + src, prefix + dst
        if isinstance(graph.nodes.get(src), nir.NIRGraph):
            outs = [k for k, v in graph.nodes[src].nodes.items() if isinstance(v, nir.Output)]
            s = f"{s}.{outs[0]}"
        if isinstance(graph.nodes.get(dst), nir.NIRGraph):
            ins = [k for k, v in graph.nodes[dst].nodes.items() if isinstance(v, nir.Input)]
            d = f"{d}.{ins[0]}"
        edges.append((s, d))
    return nodes, edges


def toposort(nodes: dict, edges: list) -> Tuple[List[str], set]:
    """Nodes in an order where every edge runs forward, except the edges that close a
    cycle (recurrence), which are returned as back edges: depth-first search from the
    Input, reverse postorder."""
    succ = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
    order, state, back = [], {}, set()

    def visit(n):
        stack = [(n, iter(succ[n]))]
        state[n] = 1
        while stack:
            node, it = stack[-1]
            for m in it:
                if state.get(m) == 1:
                    back.add((node, m))
                elif m not in state:
                    state[m] = 1
                    stack.append((m, iter(succ[m])))
                    break
            else:
                state[node] = 2
                order.append(node)
                stack.pop()

    roots = [n for n in nodes if isinstance(nodes[n], nir.Input)] + list(nodes)
    for n in roots:
        if n not in state:
            visit(n)
    return order[::-1], back


def is_chain(graph: nir.NIRGraph) -> bool:
    """Every node has at most one edge in and one edge out (what lava-dl netx loads)."""
    succ, pred = {}, {}
    for s, d in graph.edges:
        succ[s] = succ.get(s, 0) + 1
        pred[d] = pred.get(d, 0) + 1
    return all(v <= 1 for v in succ.values()) and all(v <= 1 for v in pred.values())


def pair(v, n: int = 2) -> tuple:
    """A kernel size / stride / padding as an n-tuple of ints (NIR stores 0-d or 1-d arrays)."""
    a = np.atleast_1d(np.asarray(v)).reshape(-1).astype(int).tolist()
    return tuple(a * n if len(a) == 1 else a[:n])


def conv_output_size(size, kernel, stride, padding, dilation) -> tuple:
    """Output size per spatial dimension of a convolution or pooling (PyTorch's rule):
    floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1."""
    return tuple((size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i in range(len(size)))


def output_shape(node, in_shape: tuple) -> tuple:
    """The batch-free output shape of a stateless node given its input shape."""
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight)
        return (w.shape[0],) + conv_output_size(in_shape[1:], w.shape[2:], pair(node.stride),
                                                pair(node.padding), pair(node.dilation))
    if isinstance(node, POOLS):
        return (in_shape[0],) + conv_output_size(in_shape[1:], pair(node.kernel_size), pair(node.stride),
                                                 pair(node.padding), (1, 1))
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (int(np.asarray(node.weight).shape[0]),)
    if isinstance(node, nir.Flatten):
        nd = len(in_shape)
        a, b = node.start_dim % nd, node.end_dim % nd
        return in_shape[:a] + (int(np.prod(in_shape[a:b + 1])),) + in_shape[b + 1:]
    if isinstance(node, (nir.Output, nir.Scale, nir.Threshold, nir.Delay)):
        return tuple(in_shape)
    raise ValueError(f"no shape rule for {type(node).__name__}")


def input_shape(graph) -> tuple | None:
    """The batch-free shape the graph's (single) Input node declares, or None."""
    ins = [n for n in graph.nodes.values() if isinstance(n, nir.Input)]
    if len(ins) != 1:
        return None
    shape = tuple(int(s) for s in np.asarray(ins[0].input_type["input"]).reshape(-1))
    return shape or None


def infer_shapes(graph) -> Dict[str, tuple]:
    """Batch-free output shape of every node whose shape follows from the Input and the
    populations' parameter arrays; nodes without a rule are left out."""
    pred = predecessors(graph)
    shapes: Dict[str, tuple] = {}
    nodes = graph.nodes

    def shape(n, seen=()):
        if n in shapes:
            return shapes[n]
        node = nodes[n]
        if isinstance(node, nir.Input):
            out = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
        elif isinstance(node, POPULATIONS):
            out = neuron_shape(node)
        else:
            if n in seen or not pred[n]:
                raise ValueError(f"cannot infer the shape of node '{n}'")
            out = output_shape(node, shape(pred[n][0], seen + (n,)))
        shapes[n] = tuple(out)
        return shapes[n]

    for n in nodes:
        try:
            shape(n)
        except ValueError:
            pass
    return shapes


__all__ = ["predecessors", "successors", "flatten_graph", "toposort", "is_chain", "pair", "conv_output_size",
           "output_shape", "input_shape", "infer_shapes"]
