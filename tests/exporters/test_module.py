"""The user's own network: ordinary torch / snnTorch modules exported exactly and checked
spike for spike against snnTorch itself (every test compares spikes, not shapes, and
checks the network really spikes)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy as nd
from neurodeploy.errors import NeurodeployError
from neurodeploy.exporters.module import export
from neurodeploy.measure.exactness import verify

snn = pytest.importorskip("snntorch")
KW = dict(init_hidden=True)


class TutorialCSNN(nn.Module):
    """snnTorch's tutorial convolutional SNN (AvgPool variant), one timestep per call,
    snnTorch's defaults: reset by subtraction, one step late."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.5, **KW),
                                 nn.Conv2d(8, 16, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.5, **KW),
                                 nn.Flatten(), nn.Linear(16 * 4 * 4, 10), snn.Leaky(beta=0.5, output=True, **KW))

    def forward(self, x):
        return self.net(x)


class ResidualSNN(nn.Module):
    """Conv + BatchNorm, per-channel learned beta, learned threshold, residual add,
    adaptive average pooling and a view-based flatten."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.l1 = snn.Leaky(beta=torch.full((8, 1, 1), 0.8), learn_beta=True, reset_mechanism="zero", **KW)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding="same"), nn.BatchNorm2d(8)
        self.l2 = snn.Leaky(beta=0.9, threshold=0.7, learn_threshold=True, **KW)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(2), nn.Linear(32, 10)
        self.out = snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        s1 = self.l1(self.b1(self.c1(x)))
        y = self.pool(s1 + self.l2(self.b2(self.c2(s1))))
        return self.out(self.fc(y.view(y.size(0), -1)))


class ConcatShuffleSNN(nn.Module):
    """Two branches concatenated, then a channel shuffle written as reshape-transpose-reshape."""

    def __init__(self):
        super().__init__()
        self.stem, self.l0 = nn.Conv2d(1, 8, 3), snn.Leaky(beta=0.9, **KW)
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3, padding=1)
        self.l1 = snn.Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False, **KW)
        self.fc, self.out = nn.Linear(8 * 6 * 6, 10), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        s = self.l0(self.stem(x))
        y = torch.cat([self.a(s), self.b(s)], dim=1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.out(self.fc(torch.flatten(self.l1(y), 1)))


class RecurrentSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.rec = snn.RLeaky(beta=0.9, linear_features=32, reset_mechanism="zero", reset_delay=False, **KW)
        self.fc2, self.out = nn.Linear(32, 5), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        return self.out(self.fc2(self.rec(self.fc1(x))))


class SubtractSynapticSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.syn = snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="subtract", **KW)
        self.fc2 = nn.Linear(32, 5)
        self.out = snn.Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False, **KW)

    def forward(self, x):
        return self.out(self.fc2(self.syn(self.fc1(x))))


NETWORKS = {"tutorial_csnn": (TutorialCSNN, (1, 28, 28)), "residual": (ResidualSNN, (1, 8, 8)),
            "concat_shuffle": (ConcatShuffleSNN, (1, 8, 8)), "recurrent": (RecurrentSNN, (20,)),
            "subtract_synaptic": (SubtractSynapticSNN, (20,))}


def build(name, seed=0):
    torch.manual_seed(seed)
    net, shape = NETWORKS[name]
    net = net()
    for m in net.modules():
        if name == "tutorial_csnn" and isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 4                # PyTorch's init is too quiet for beta 0.5: every layer must spike
        if isinstance(m, nn.BatchNorm2d):     # non-trivial BatchNorm statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 2.0)
    return net, shape


def inputs(shape, n=24, seed=1):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32) * 3


@pytest.mark.parametrize("name", list(NETWORKS))
def test_graph_reproduces_the_snntorch_module_spike_for_spike(name):
    net, shape = build(name)
    graph = nd.export(net, shape, timesteps=8)
    report = verify(net, graph, inputs(shape))
    vs = report["graph_vs_module"]
    assert report["exact"], vs
    assert vs["identical_outputs"] and vs["identical_populations"] == len(vs["populations"]) >= 2
    rates = [p["spikes_per_sample"] for p in vs["populations"].values()]
    assert all(r > 0 for r in rates), rates                 # every population spikes


def test_reset_modes_are_recorded_per_population():
    conv = nd.conventions_of(nd.export(*build("subtract_synaptic"), timesteps=4))
    assert conv.population_reset == {"syn": "subtract_delayed", "out": "subtract"}
    conv = nd.conventions_of(nd.export(*build("recurrent"), timesteps=4))
    assert conv.population_reset == {"out": "subtract_delayed"}   # rec: zero, no delay: NIR's own reset


def test_reset_by_subtraction_matters():
    """Running the subtractive-reset graph with NIR's reset instead changes the spikes,
    so the recorded mode is what makes it exact."""
    net, shape = build("tutorial_csnn")
    graph = nd.export(net, shape, timesteps=8)
    x = inputs(shape)
    faithful = nd.compile("torch", graph, device="cpu").run(x).outputs
    from neurodeploy.ir.conventions import conventions_of, replace, with_conventions
    nir_reset = copy.deepcopy(graph)
    with_conventions(nir_reset, replace(conventions_of(graph), population_reset={}))
    assert not np.array_equal(nd.compile("torch", nir_reset, device="cpu").run(x).outputs, faithful)


def test_snap_makes_the_deployed_copy_exact_and_reports_what_it_changed():
    net, shape = build("residual")
    graph = export(net, shape, timesteps=8, snap=True)
    report = verify(net, graph, inputs(shape), snap=True)
    assert report["graph_vs_deployed"]["identical_outputs"]
    assert "snap_vs_module" in report and 0.0 <= report["snap_vs_module"]["output_value_agreement"] <= 1.0


def test_export_leaves_the_callers_module_as_it_was():
    net, shape = build("residual")
    net.train()
    net.l1.mem = torch.full((2, 8, 8, 8), 0.25)                 # state the caller holds
    before = {k: v.clone() for k, v in net.state_dict().items()}
    graph = nd.export(net, shape, timesteps=4)
    verify(net, graph, inputs(shape, 4))
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(net.l1.mem, torch.full((2, 8, 8, 8), 0.25))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_graph_records_its_input_shape_and_runs_without_metadata_help(tmp_path):
    net, shape = build("tutorial_csnn")
    path = nd.save(tmp_path / "g.nir", nd.export(net, shape, timesteps=8))
    graph = nd.read(path)
    from neurodeploy.ir.topology import input_shape
    assert input_shape(graph) == shape and nd.conventions_of(graph).timesteps == 8


class _MaxPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.lif = nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        return self.lif(self.pool(self.conv(x)))


class _ReluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act, self.lif = nn.Linear(4, 4), nn.ReLU(), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        return self.lif(self.act(self.fc(x)))


class _ExplicitState(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.lif = nn.Linear(4, 4), snn.Leaky(beta=0.9)

    def forward(self, x, mem):
        return self.lif(self.fc(x), mem)


@pytest.mark.parametrize("net, shape, message", [
    (_MaxPoolNet, (1, 8, 8), r"cannot export pool \(MaxPool2d\): max pooling has no exact spiking form"),
    (_ReluNet, (4,), r"cannot export act \(ReLU\)"),
    (_ExplicitState, (4,), "forward takes 2 arguments; it must take one input"),
    (TutorialCSNN, (1, 12, 12), "does not run on a sample of shape"),
])
def test_refusals_name_the_module_and_the_reason(net, shape, message):
    with pytest.raises(NeurodeployError, match=message):
        nd.export(net(), shape)


def test_bad_timesteps_and_shapes_are_refused():
    net, shape = build("recurrent")
    with pytest.raises(NeurodeployError, match="timesteps must be a positive integer"):
        nd.export(net, shape, timesteps=0)
    with pytest.raises(NeurodeployError, match="every size must be a positive integer"):
        nd.export(net, (0,))
    with pytest.raises(NeurodeployError, match="dt must be a positive"):
        nd.export(net, shape, dt=-1.0)


@pytest.mark.lava
@pytest.mark.parametrize("name", list(NETWORKS))
def test_lava_runs_the_users_network(name, tmp_path):
    """Each of the five networks on Lava against the torch backend: Lava's float models spike
    for spike; Loihi fixed point >= 99 % prediction agreement once the graph's weights,
    decays and thresholds are on Loihi's grid (export --loihi-grid), since these
    float-trained networks are not (the README gives the agreement without it)."""
    from neurodeploy.backends.lava.grid import on_loihi_grid
    from neurodeploy.backends.lava.runtime import runtime_status
    if not runtime_status()["installed"]:
        pytest.skip("the Lava runtime is not installed (neurodeploy setup lava)")
    net, shape = build(name)
    graph = nd.export(net, shape, timesteps=8)
    x = inputs(shape, n=16)
    ref = nd.compile("torch", graph, device="cpu").run(x)
    fl = nd.compile("lava-float", graph).run(x)
    assert np.array_equal(fl.outputs, ref.outputs)
    assert all(np.array_equal(fl.population_spike_counts[k], v) for k, v in ref.population_spike_counts.items())
    # the same spikes give the same counts, to the integer
    for kind in ("populations", "projections"):
        theirs, ours = getattr(fl.counters, kind), getattr(ref.counters, kind)
        assert set(theirs) == set(ours)
        for k in ours:
            assert (theirs[k].spikes, theirs[k].input_events) == (ours[k].spikes, ours[k].input_events) \
                if kind == "populations" else \
                (theirs[k].effective_ops, theirs[k].dense_ops) == (ours[k].effective_ops, ours[k].dense_ops), k
    on_grid, _ = on_loihi_grid(graph)
    ref = nd.compile("torch", on_grid, device="cpu").run(x)
    fixed = nd.compile("lava", on_grid).run(x)
    agree = np.mean(fixed.outputs.sum(0).argmax(-1) == ref.outputs.sum(0).argmax(-1))
    assert agree >= 0.99, agree


class MultiStepNet(nn.Module):
    """Multi-step style: the module sees all T steps at once (neurodeploy's LIF unfolds time)."""

    def __init__(self):
        super().__init__()
        from neurodeploy.architectures.layers import LIF
        self.conv, self.lif1 = nn.Conv2d(1, 6, 3), LIF(beta=0.9)
        self.fc, self.lif2 = nn.Linear(6 * 6 * 6, 5), LIF(beta=0.9, threshold=0.5)

    def forward(self, x):
        return self.lif2(self.fc(self.lif1(self.conv(x)).flatten(1)))


def test_multi_step_module_exports_exactly():
    torch.manual_seed(0)
    net = MultiStepNet()
    net.conv.weight.data *= 3
    graph = nd.export(net, (1, 8, 8), timesteps=6)
    report = verify(net, graph, inputs((1, 8, 8)))
    assert report["exact"] and report["graph_vs_module"]["identical_populations"] == 2
    assert all(p["spikes_per_sample"] > 0 for p in report["graph_vs_module"]["populations"].values())


def test_export_right_after_training_steps():
    """snnTorch leaves the last forward's state (with autograd history) in the neurons; export
    still copies the module without touching it."""
    net, shape = build("residual")
    net.train()
    out = net(torch.rand(2, *shape))
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert not net.l1.mem.is_leaf                     # state with history, as after a training step
    graph = nd.export(net, shape, timesteps=4)
    assert verify(net, graph, inputs(shape, 4))["exact"]
    assert not net.l1.mem.is_leaf                     # the caller's state untouched
