"""What a graph holds, before any run: NeuroBench's static metrics, read from the NIR graph.

NeuroBench 2.3 (``neurobench.metrics.static``) measures a torch module:

* **Footprint**: bytes of the module's parameters and buffers (``numel * element_size``);
* **ConnectionSparsity**: zero weights / all weights of its Linear, Conv and RNN layers
  (weights only, no biases), rounded there to 4 decimals;
* **ParameterCount**: values of its parameters (buffers not counted).

A graph is not a torch module, so the same quantities are taken from what the graph
holds, as a deployed model holds it:

* connection parameters: the weights and biases of Affine / Linear / Conv / Scale, every
  value (an all-zero bias counts as absent: NIR's Conv and Affine cannot omit one, so a
  bias-less torch layer is exported with zeros);
* neuron parameters: each floating-point parameter of a population (tau, r, v_leak,
  v_threshold, v_reset, ...), one value when it is the same for every neuron (NIR
  stores it per neuron; a torch neuron layer holds one scalar), else one per neuron;
* 4 bytes per value: float32, what the torch backend computes in and what a torch model
  holds, whatever dtype the .nir file stores (snnTorch's exporter writes float64).

Pools and Flatten hold only shapes (kernel, stride), which NeuroBench does not count
either. Plain NumPy, no torch.
"""
from __future__ import annotations

import numpy as np

from .nodes import POPULATIONS, WEIGHTED, kind
from .topology import flatten_graph

BYTES_PER_VALUE = 4                                   # float32
CONNECTIONS = ("Affine", "Linear", "Conv1d", "Conv2d")  # NeuroBench's Linear and Conv layers


def _float_arrays(node):
    for name, value in vars(node).items():
        if name in ("input_type", "output_type", "metadata"):
            continue
        a = np.asarray(value) if isinstance(value, (np.ndarray, list, float)) else None
        if a is not None and a.size and np.issubdtype(a.dtype, np.floating):
            yield name, a


def parameter_values(graph) -> dict:
    """{"connections": values of weights and biases, "neurons": values of neuron parameters}."""
    nodes, _ = flatten_graph(graph)
    connections = neurons = 0
    for node in nodes.values():
        if isinstance(node, WEIGHTED):
            for name, a in _float_arrays(node):
                if name == "bias" and not np.any(a):
                    continue
                connections += a.size
        elif isinstance(node, POPULATIONS):
            for _, a in _float_arrays(node):
                neurons += 1 if np.all(a == a.flat[0]) else a.size
    return {"connections": int(connections), "neurons": int(neurons)}


def connection_sparsity(graph) -> float:
    """Zero weights / all weights of the Affine, Linear and Conv nodes (recurrent ones
    included, as NeuroBench counts an RLeaky's recurrent Linear); 0.0 with none."""
    nodes, _ = flatten_graph(graph)
    zeros = total = 0
    for node in nodes.values():
        if kind(node) in CONNECTIONS:
            w = np.asarray(node.weight)
            zeros += int(w.size - np.count_nonzero(w))
            total += int(w.size)
    return zeros / total if total else 0.0


def neurobench_static(graph) -> dict:
    """Footprint (bytes), ConnectionSparsity (unrounded) and ParameterCount, NeuroBench's names."""
    values = parameter_values(graph)
    return {"Footprint": BYTES_PER_VALUE * (values["connections"] + values["neurons"]),
            "ConnectionSparsity": connection_sparsity(graph),
            "ParameterCount": values["connections"]}
