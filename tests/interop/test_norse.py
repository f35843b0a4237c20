"""Graphs written by Norse's own exporter (``norse.torch.to_nir``), run here.

Norse 1.1 writes a LIF's time constant as ``tau = dt / tau_mem_inv`` (norse/norse#411: dt
times the true tau, 1e-5 for Norse's default 10 ms at dt = 1 ms), r = 1, scalar parameters
and the traced batch in the Input type. Its own step ``v += dt tau_mem_inv (v_leak - v + I)``
is NIR's Euler step read at dt = dt_norse^2 (then dt / tau = dt_norse tau_mem_inv): with
``dt=1e-6`` the graph reproduces Norse itself. Its ``LIFCell`` is written as a CubaLIF that
does not mean what Norse simulates (see ``test_norse_cubalif_is_not_what_norse_runs``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neurodeploy as nd

norse = pytest.importorskip("norse.torch")
from plain import run as plain_executor  # noqa: E402  (tests/interop/plain.py)

T, N = 30, 16
DT = 1e-3 ** 2          # Norse's dt = 1 ms, squared: see the module docstring


def norse_net(cell, seed=0):
    torch.manual_seed(seed)
    net = norse.SequentialState(torch.nn.Linear(4, 12), cell(), torch.nn.Linear(12, 5), cell())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(10)
    return net


def norse_run(net, x):
    """Norse's own simulation, one step at a time (x: (T, N, 4))."""
    s, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            z, s = net(torch.as_tensor(x[t]), s)
            outs.append(z.numpy())
    return np.stack(outs)


def spikes_in(seed=0):
    return (np.random.default_rng(seed).random((T, N, 4)) < 0.5).astype(np.float32) * 3


def test_norse_lif_graph_runs_as_norse_and_as_a_plain_executor():
    net = norse_net(norse.LIFBoxCell)
    graph = norse.to_nir(net, torch.rand(1, 4))
    assert {type(n).__name__ for n in graph.nodes.values()} == {"Input", "Affine", "LIF", "Output"}
    x = spikes_in()
    ours = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    assert ours.shape == (T, N, 5) and ours.sum() > 0
    assert np.array_equal(ours, plain_executor(graph, x, T, dt=DT, sequence=True))
    assert np.array_equal(ours, norse_run(net, x))


def test_norse_cubalif_is_not_what_norse_runs():
    """Norse's LIFCell adds its input to the synaptic current unscaled and updates the membrane
    from the previous step's current; the CubaLIF it writes (w_in = 1, r = 1) means, by NIR and
    by Norse's own importer, i += dt/tau_syn (-i + I) with v reading the new i. Here the graph
    runs as NIR says; Norse's simulation of the module differs, and not by rounding."""
    net = norse_net(norse.LIFCell)
    graph = norse.to_nir(net, torch.rand(1, 4))
    assert "CubaLIF" in {type(n).__name__ for n in graph.nodes.values()}
    x = spikes_in()
    ours = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    assert ours.sum() > 0
    assert np.array_equal(ours, plain_executor(graph, x, T, dt=DT, sequence=True))
    theirs = norse_run(net, x)
    assert theirs.sum() > 3 * ours.sum()      # input current 1 / (dt tau_syn_inv) = 5 times larger


@pytest.mark.lava
def test_norse_lif_graph_on_lava_matches_torch():
    graph = norse.to_nir(norse_net(norse.LIFBoxCell), torch.rand(1, 4))
    x = spikes_in(1)
    ref = nd.compile("torch", graph, device="cpu", dt=DT).run(x).outputs
    flt = nd.compile("lava-float", graph, dt=DT).run(x).outputs
    fixed = nd.compile("lava", graph, dt=DT).run(x).outputs
    assert np.array_equal(flt, ref)
    assert np.mean(fixed == ref) > 0.99                               # Loihi's fixed point rounds decay and gain
    assert np.mean(fixed.sum(0).argmax(-1) == ref.sum(0).argmax(-1)) >= 0.9
