"""Graphs written by Rockpool's own exporter (``rockpool.nn.modules.torch.nir.to_nir``), run here.

Rockpool 3.1 writes ``LIFNeuronTorch`` as LIF and ``LIFTorch`` as CubaLIF with r = tau
exp(-dt/tau) / dt, no dt and no reset. Its own neurons are exponential-Euler with a
subtractive reset at v >= threshold (v = exp(-dt/tau) v + I), which NIR's equations at any
dt do not reproduce: the graph runs here as NIR says (checked against a plain executor at
Rockpool's dt = 1 ms), and Rockpool's own simulation differs by its neuron rule only: the
same rule applied to the graph's weights reproduces Rockpool exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neurodeploy as nd

pytest.importorskip("rockpool")
from plain import run as plain_executor  # noqa: E402  (tests/interop/plain.py)
from rockpool.nn.combinators import Sequential  # noqa: E402
from rockpool.nn.modules import LIFNeuronTorch, LIFTorch, LinearTorch  # noqa: E402
from rockpool.nn.modules.torch.nir import to_nir  # noqa: E402

T, N = 30, 16
DT = 1e-3               # Rockpool's default dt, written nowhere in the graph


def rockpool_net(cell, seed=0):
    torch.manual_seed(seed)
    one = dict(max_spikes_per_dt=1.0)     # one spike per step, as NIR's neurons
    return Sequential(LinearTorch((4, 12)), cell(12, **one), LinearTorch((12, 5)), cell(5, **one))


def rockpool_run(net, x):
    """Rockpool's own simulation (it takes (N, T, ...))."""
    net.reset_state()
    with torch.no_grad():
        out, _, _ = net(torch.as_tensor(x).transpose(0, 1))
    return out.numpy().transpose(1, 0, 2)


def spikes_in(seed=0):
    return (np.random.default_rng(seed).random((T, N, 4)) < 0.5).astype(np.float32) * 3


@pytest.mark.parametrize("cell, kind", [(LIFNeuronTorch, "LIF"), (LIFTorch, "CubaLIF")])
def test_rockpool_graph_runs_as_a_plain_executor(cell, kind):
    graph = to_nir(rockpool_net(cell))
    assert kind in {type(n).__name__ for n in graph.nodes.values()}
    x = spikes_in()
    ours = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    assert ours.shape == (T, N, 5) and ours.sum() > 0
    assert np.array_equal(ours, plain_executor(graph, x, T, dt=DT, sequence=True))


def test_rockpool_differs_by_its_neuron_rule_only():
    net = rockpool_net(LIFNeuronTorch)
    graph = to_nir(net)
    x = spikes_in()
    theirs = rockpool_run(net, x)
    ours = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    assert 0.5 < np.mean(ours == theirs) < 1.0          # NIR's reading of the graph is not Rockpool's

    # Rockpool's rule on the graph's own weights and taus: v = exp(-dt/tau) v + I, spike at
    # v >= threshold, subtract it
    layers = [graph.nodes[n] for n in ("0_LinearTorch", "1_LIFNeuronTorch", "2_LinearTorch", "3_LIFNeuronTorch")]
    v = [np.zeros((N, 12), np.float32), np.zeros((N, 5), np.float32)]
    out = []
    for t in range(T):
        s = x[t]
        for i in (0, 1):
            w, lif = layers[2 * i], layers[2 * i + 1]
            alpha = np.exp(-DT / np.asarray(lif.tau, np.float32)).astype(np.float32)
            v[i] = alpha * v[i] + s @ np.asarray(w.weight, np.float32).T
            s = (v[i] >= np.asarray(lif.v_threshold, np.float32)).astype(np.float32)
            v[i] = v[i] - s * np.asarray(lif.v_threshold, np.float32)
        out.append(s)
    assert np.mean(np.stack(out) == theirs) > 0.999


@pytest.mark.lava
def test_rockpool_cubalif_graph_on_lava_matches_torch():
    graph = to_nir(rockpool_net(LIFTorch))
    x = spikes_in(1)
    ref = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    flt = nd.compile("lava-float", graph, dt=DT).run(x).outputs
    fixed = nd.compile("lava", graph, dt=DT).run(x).outputs
    assert ref.sum() > 0
    assert np.array_equal(flt, ref)
    assert np.mean(fixed == ref) > 0.99
    assert np.mean(fixed.sum(0).argmax(-1) == ref.sum(0).argmax(-1)) >= 0.9
