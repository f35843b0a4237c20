"""ir/foreign.py: graphs as nirtorch-traced producers write them, put in NIR's form."""
from __future__ import annotations

import nir
import numpy as np
import torch

import neurodeploy as nd
from neurodeploy.ir.foreign import normalise


def traced_graph():
    """As Norse 1.1 writes one: torch tensors, scalar neuron parameters, the batch in the Input type."""
    w = torch.full((3, 4), 0.5)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([1, 4])),
        "0": nir.Affine(weight=w, bias=torch.zeros(3)),
        "1": nir.LIF(tau=torch.tensor(0.01), r=torch.tensor(1.0), v_leak=torch.tensor(0.0),
                     v_threshold=torch.tensor(1.0)),
        "output": nir.Output(output_type=np.array([1, 3])),
    }, edges=[("input", "0"), ("0", "1"), ("1", "output")], type_check=False)


def test_traced_graph_is_put_in_nir_form():
    g = normalise(traced_graph())
    assert tuple(g.nodes["input"].input_type["input"]) == (4,)
    lif = g.nodes["1"]
    for k in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
        assert isinstance(getattr(lif, k), np.ndarray) and getattr(lif, k).shape == (3,), k
    assert isinstance(g.nodes["0"].weight, np.ndarray)
    assert traced_graph().nodes["1"].tau.ndim == 0               # the caller's graph is not changed


def test_a_graph_in_nir_form_is_left_alone(tmp_path):
    g = normalise(traced_graph())
    assert normalise(g) is g


def test_traced_graph_runs_on_the_torch_backend_with_batch_free_inputs():
    x = np.ones((20, 2, 4), np.float32)                          # (T, N, 4)
    out = nd.compile("torch", traced_graph(), device="cpu", dt=1e-3).run(x).outputs
    assert out.shape == (20, 2, 3) and out.sum() > 0
    from neurodeploy.backends import supports
    assert supports("lava", traced_graph()).ok                   # check's answer: the same graph, the same form
