"""Graphs written by Sinabs (IF neurons with r = 1, SumPool2d, no metadata) run as Sinabs
means them, with no flags: IF integrates r * I once per step, the ecosystem's convention.

Checked two ways: against a plain step-by-step NumPy executor of NIR's semantics
(tests/interop/plain.py), independently of the backend, and against Sinabs' own simulation of the network.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy as nd

from plain import run as plain_executor  # noqa: E402  (tests/interop/plain.py)

sinabs = pytest.importorskip("sinabs")
sl = pytest.importorskip("sinabs.layers")
from sinabs.activation import MembraneReset, SingleSpike  # noqa: E402

T, B = 6, 8


def sinabs_net(seed=0):
    torch.manual_seed(seed)
    iaf = lambda: sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, reset_fn=MembraneReset())
    net = nn.Sequential(nn.Conv2d(1, 4, 3), iaf(), sl.SumPool2d(2), nn.Conv2d(4, 8, 3), iaf(), nn.Flatten(),
                        nn.Linear(8 * 2 * 2, 5), iaf())
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 3
    return net.eval()


@pytest.fixture
def sinabs_graph():
    """Sinabs' own graph object (Sinabs 3.1.3 fills it with torch tensors and empty input types,
    which NIR 1.0.8's writer refuses, so it is handed over in memory): no metadata."""
    net = sinabs_net()
    return net, sinabs.to_nir(net, torch.rand(B, 1, 10, 10))


def test_sinabs_graph_runs_as_a_plain_step_executor_with_no_flags(sinabs_graph):
    _, graph = sinabs_graph
    assert not nd.conventions_of(graph).from_metadata
    x = np.random.default_rng(0).random((B, 1, 10, 10), dtype=np.float32)
    got = nd.compile("torch", graph, device="cpu").run(x, timesteps=T)
    want = plain_executor(graph, x, T)
    assert got.outputs.sum() > 0                                   # not silent
    assert np.array_equal(got.outputs, want)


def test_sinabs_graph_reproduces_sinabs_itself(sinabs_graph):
    net, graph = sinabs_graph
    x = np.random.default_rng(1).random((B, 1, 10, 10), dtype=np.float32)
    xt = torch.as_tensor(x)[:, None].expand(B, T, 1, 10, 10).reshape(B * T, 1, 10, 10)
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()
    with torch.no_grad():
        theirs = net(xt).reshape(B, T, -1).transpose(0, 1).numpy()
    ours = nd.compile("torch", graph, device="cpu").run(x, timesteps=T).outputs
    assert theirs.sum() > 0
    # Sinabs fires at v >= threshold, NIR at v > threshold: identical unless v lands exactly on it
    assert np.mean(ours == theirs) > 0.999
