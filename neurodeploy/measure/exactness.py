"""Is the exported graph the network it came from? Outputs and every population's spikes,
the graph on the torch backend against the user's module (``export --module`` runs this on
every export; ``neurodeploy.verify`` from Python)."""
from __future__ import annotations

from typing import Optional

import nir
import numpy as np
import torch
from torch import nn

from .. import backends
from ..exporters.module import deploy, private_copy, run
from ..ir.conventions import conventions_of
from .compare import predictions
from .metrics import accuracy


def _compare(a_out, a_spikes, b_out, b_spikes) -> dict:
    pops = {}
    for k in b_spikes:
        if k in a_spikes:
            pops[k] = {"identical": bool(np.array_equal(a_spikes[k], b_spikes[k])),
                       "spike_count_agreement": float(np.mean(a_spikes[k] == b_spikes[k])),
                       "spikes_per_sample": float(np.mean(b_spikes[k]))}
    same_shape = a_out.shape == b_out.shape
    return {"identical_outputs": bool(same_shape and np.array_equal(a_out, b_out)),
            "output_value_agreement": float(np.mean(a_out == b_out)) if same_shape else 0.0,
            "prediction_agreement": accuracy(predictions(a_out), predictions(b_out)),
            "identical_populations": sum(p["identical"] for p in pops.values()), "populations": pops}


def verify(module: nn.Module, graph: nir.NIRGraph, x: np.ndarray, timesteps: Optional[int] = None,
           snap: bool = False) -> dict:
    """The exported graph (torch backend, CPU) against the module it came from, on inputs x
    (N, *input_shape): outputs and every population's spikes per sample.

    ``graph_vs_module`` compares with the user's module as it is; ``graph_vs_deployed``
    with its deployed copy (BatchNorm folded, snapped if ``snap``), the arithmetic the
    graph was made to reproduce; with ``snap`` also ``snap_vs_module``, what the snap
    changed."""
    T = int(timesteps or conventions_of(graph).timesteps or 1)
    x = np.asarray(x, np.float32)
    result = backends.compile("torch", graph, device="cpu").run(x, T)
    g_out, g_spikes = result.outputs, result.population_spike_counts
    original = private_copy(module).cpu().eval()
    m_out, m_spikes = run(original, x, T)
    deployed = deploy(module, torch.as_tensor(x[:1]), snap)
    d_out, d_spikes = run(deployed, x, T)
    report = {"samples": int(len(x)), "timesteps": T,
              "graph_vs_module": _compare(m_out, m_spikes, g_out, g_spikes),
              "graph_vs_deployed": _compare(d_out, d_spikes, g_out, g_spikes)}
    if snap:
        report["snap_vs_module"] = _compare(m_out, m_spikes, d_out, d_spikes)
    report["exact"] = report["graph_vs_module"]["identical_outputs"] and all(
        p["identical"] for p in report["graph_vs_module"]["populations"].values())
    return report
