"""The NIR vocabulary this toolkit speaks, defined once.

NIR 1.0 node types, grouped by what they are on neuromorphic hardware:

* a **population** holds state (a membrane per neuron) and is updated every timestep;
  the *spiking* ones output 0/1 spikes, the others (LI, I, CubaLI) output their membrane;
* a **projection** is stateless and linear (synaptic weights, pooling, scaling);
* **wiring** (Flatten) only re-indexes values, and Input / Output mark the graph's ports.

Every module asks these tuples; none keeps its own list.
"""
from __future__ import annotations

import nir

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF)                      # output: spikes (0/1)
NON_SPIKING = (nir.LI, nir.I, nir.CubaLI)                     # output: the membrane (real-valued)
POPULATIONS = SPIKING + NON_SPIKING
POOLS = (nir.AvgPool2d, nir.SumPool2d)
WEIGHTED = (nir.Affine, nir.Linear, nir.Scale, nir.Conv1d, nir.Conv2d)
PROJECTIONS = WEIGHTED + POOLS
WIRING = (nir.Flatten,)
PORTS = (nir.Input, nir.Output)
OTHER = (nir.Threshold, nir.Delay)                            # stateless spiking / delay nodes


def kind(node) -> str:
    """NIR's own name of a node's type ("LIF", "Conv2d", ...)."""
    return type(node).__name__


def is_population(node) -> bool:
    return isinstance(node, POPULATIONS)


def is_spiking(node) -> bool:
    return isinstance(node, SPIKING)


def is_projection(node) -> bool:
    return isinstance(node, PROJECTIONS)


def neuron_shape(node) -> tuple:
    """A population's shape, from its parameter arrays (NIR stores them full-shape)."""
    import numpy as np
    for key in ("v_threshold", "tau", "tau_mem", "r"):
        if getattr(node, key, None) is not None:
            return tuple(int(s) for s in np.shape(getattr(node, key)))
    return ()


def weights(node):
    """A projection's weight array (``scale`` for Scale), or None (pools)."""
    for key in ("weight", "scale"):
        if getattr(node, key, None) is not None:
            return getattr(node, key)
    return None


__all__ = ["SPIKING", "NON_SPIKING", "POPULATIONS", "POOLS", "WEIGHTED", "PROJECTIONS", "WIRING", "PORTS",
           "OTHER", "kind", "is_population", "is_spiking", "is_projection", "neuron_shape", "weights"]
