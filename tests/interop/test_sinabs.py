"""Graphs written by Sinabs (IF neurons with r = 1, SumPool2d, no metadata) run as Sinabs
means them, with no flags: IF integrates r * I once per step, the ecosystem's convention.

Checked two ways: against a plain step-by-step NumPy executor of NIR's semantics written
here, independently of the backend, and against Sinabs' own simulation of the network.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy as nd

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


def plain_executor(graph, x, steps):
    """NIR's semantics, one step at a time, in NumPy: IF v += r I; s = v > v_th; v = v_reset."""
    order, indeg = [], {n: 0 for n in graph.nodes}
    for _, d in graph.edges:
        indeg[d] += 1
    ready = [n for n, k in indeg.items() if k == 0]
    while ready:
        n = ready.pop()
        order.append(n)
        for s, d in graph.edges:
            if s == n:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    pred = {n: [s for s, d in graph.edges if d == n] for n in graph.nodes}
    state, outs = {}, []
    for _ in range(steps):
        val = {}
        for n in order:
            node = graph.nodes[n]
            inp = x if isinstance(node, nd_nir().Input) else sum(val[p] for p in pred[n])
            kind = type(node).__name__
            if kind in ("Input", "Output"):
                val[n] = inp
            elif kind == "Conv2d":
                val[n] = torch.nn.functional.conv2d(torch.as_tensor(inp), torch.as_tensor(np.asarray(node.weight)),
                                                    torch.as_tensor(np.asarray(node.bias)),
                                                    stride=tuple(np.atleast_1d(node.stride)),
                                                    padding=tuple(np.atleast_1d(node.padding))).numpy()
            elif kind == "SumPool2d":
                k = tuple(np.atleast_1d(node.kernel_size))
                n_, c, h, w = inp.shape
                val[n] = inp.reshape(n_, c, h // k[0], k[0], w // k[1], k[1]).sum(axis=(3, 5))
            elif kind == "Flatten":
                val[n] = inp.reshape(inp.shape[0], -1)
            elif kind == "Affine":
                val[n] = inp @ np.asarray(node.weight).T + np.asarray(node.bias)
            elif kind == "IF":
                v = state.get(n, np.zeros_like(inp)) + np.asarray(node.r) * inp
                s = (v > np.asarray(node.v_threshold)).astype(np.float32)
                state[n] = np.where(s > 0, np.asarray(node.v_reset), v)
                val[n] = s
            else:
                raise AssertionError(kind)
        outs.append(val["output"])
    return np.stack(outs)


def nd_nir():
    import nir
    return nir


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
