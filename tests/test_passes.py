"""Graph passes (neurodeploy/graph/passes.py): every pass must leave the spikes bit-identical.

Each test exports a tiny spiking network (helpers of test_export.py), runs the graph on
the torch reference backend before and after the pass and compares the outputs and
every population's spike counts exactly; the networks must spike.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

from neurodeploy.architectures.layers import Twin, TwinModel
from neurodeploy.backends.torch import compile as torch_compile
from neurodeploy.ir.topology import is_chain
from neurodeploy.exporters.lowering import export
from neurodeploy.ir.io import read_graph, write_graph
from neurodeploy.ir.conventions import conventions_of
from neurodeploy.passes import (chain_passes, fold_pooling_into_projection, merge_parallel_projections,
                                      pool_as_depthwise_conv)

from nets import FireNet, calibrate

SNN = Twin("snn")


def run(graph, x):
    return torch_compile(graph, device="cpu").run(x, batch_size=len(x))


def assert_same(a, b, output_spikes=True):
    assert np.array_equal(a.outputs, b.outputs), f"max |diff| {np.abs(a.outputs - b.outputs).max()}"
    assert not output_spikes or float(np.abs(a.outputs).sum()) > 0, "the output never spikes"
    for pop, counts in a.population_spike_counts.items():
        np.testing.assert_array_equal(b.population_spike_counts[pop], counts, err_msg=pop)
    assert sum(float(np.sum(c)) for c in a.population_spike_counts.values()) > 0


def types(g):
    return sorted(type(n).__name__ for n in g.nodes.values())


class PoolConvNet(TwinModel):
    """stem -> LIF -> avgpool 2 -> conv KxK (padding) -> LIF -> sumpool-free readout; and pool -> LIF."""

    def __init__(self, k=3, dilation=1):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.pool = SNN.pool(2)
        self.conv, self.a1 = SNN.conv(4, 6, k), SNN.act()
        if dilation != 1:
            c = self.conv.conv
            c.dilation, c.padding = (dilation, dilation), (dilation * (k // 2),) * 2
        self.pool2, self.a2 = SNN.pool(2), SNN.act()

    def body(self, x):
        return self.a2(self.pool2(self.a1(self.conv(self.pool(self.a0(self.stem(x)))))))


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(3, 1, 8, 8) * 2.0


@pytest.fixture(scope="module")
def fire_graph(images):
    torch.manual_seed(1)
    model = calibrate(FireNet(), images)
    return export(model, (1, 8, 8))


def test_merge_fire_expands(fire_graph, images, tmp_path):
    g = fire_graph
    x = images.numpy()
    before = run(g, x)
    merged = merge_parallel_projections(g)
    assert merged is not g and len(g.nodes) == len(merged.nodes) + 1   # input graph untouched
    convs = [n for n, v in merged.nodes.items() if isinstance(v, nir.Conv2d)]
    fused = [n for n in convs if "+" in n]
    assert len(fused) == 1 and np.asarray(merged.nodes[fused[0]].weight).shape[2:] == (3, 3)
    assert merged.metadata == g.metadata and conventions_of(merged).from_metadata
    assert_same(before, run(merged, x))
    # and it survives a write / read
    back = read_graph(write_graph(tmp_path / "m.nir", merged))
    assert_same(before, run(back, x))


def test_fold_pool_into_affine_makes_fire_net_a_chain(fire_graph, images):
    x = images.numpy()
    before = run(fire_graph, x)
    assert not is_chain(fire_graph)
    g = chain_passes(fire_graph)
    assert is_chain(g)
    assert "AvgPool2d" not in types(g)
    assert_same(before, run(g, x))


@pytest.mark.parametrize("k,dilation", [(1, 1), (3, 1), (3, 2)])
def test_fold_pool_into_conv(images, k, dilation):
    torch.manual_seed(2)
    model = calibrate(PoolConvNet(k, dilation), images)
    g = export(model, (1, 8, 8))
    x = images.numpy()
    before = run(g, x)
    folded = fold_pooling_into_projection(g)
    assert types(folded).count("AvgPool2d") == 1       # the pool before a LIF stays
    conv = folded.nodes["conv"]
    assert tuple(np.asarray(conv.stride).reshape(-1)) == (2, 2)
    assert np.asarray(conv.weight).shape[2] == 2 * dilation * (k - 1) + 2
    assert_same(before, run(folded, x))
    dw = pool_as_depthwise_conv(folded)
    assert "AvgPool2d" not in types(dw) and int(dw.nodes["pool2"].groups) == 6
    assert_same(before, run(dw, x))


def test_sumpool_as_depthwise_conv_on_hand_graph():
    rng = np.random.default_rng(0)
    dt, shape = 1e-4, (2, 4, 4)
    tau = dt / 0.1

    def lif(s):
        return nir.LIF(tau=np.full(s, tau), r=np.full(s, tau / dt), v_leak=np.zeros(s),
                       v_threshold=np.full(s, 1.0), v_reset=np.zeros(s))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.5, 0.5, (2, 1, 3, 3)).astype(np.float32),
                                stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2, np.float32)),
             "lif1": lif((2, 8, 8)),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "lif2": lif(shape), "output": nir.Output(output_type={"output": np.array(shape)})}
    edges = [("input", "conv"), ("conv", "lif1"), ("lif1", "pool"), ("pool", "lif2"), ("lif2", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = rng.random((2, 1, 8, 8)).astype(np.float32) * 2
    before = run(g, x)
    after = pool_as_depthwise_conv(g)
    assert isinstance(after.nodes["pool"], nir.Conv2d) and np.all(np.asarray(after.nodes["pool"].weight) == 1)
    assert_same(before, run(after, x))


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["stats", "calibrated"])
def test_pruned_squeezenet_becomes_a_chain_exactly(bn):
    """The zoo's pruned SqueezeNet (untrained). bn='stats': BatchNorm statistics from two
    train-mode forwards on 4 mnist5k images (as test_zoo_exports_exactly) -- only the first
    three populations spike then; bn='calibrated': test_export.calibrate's non-trivial BN
    affine parameters too, so that every population spikes and every merged / folded
    projection is exercised."""
    from neurodeploy.architectures import build
    from neurodeploy.training.data import load_tensors
    x, _ = load_tensors("mnist5k", "test", 32, limit=4)
    torch.manual_seed(0)
    model = build("pruned_squeezenet", "snn", in_channels=1)
    if bn == "stats":
        model.train()
        with torch.no_grad():
            model.forward_steps(x)
            model.forward_steps(x)
        model.eval()
    else:
        model = calibrate(model, x)
    g = export(model, tuple(x.shape[1:]))
    assert not is_chain(g)
    before = run(g, x.numpy())
    c = chain_passes(g)
    assert is_chain(c)
    t = types(c)
    assert t.count("LIF") == 10 and t.count("Conv2d") == 10    # stem, 4 x (squeeze, merged expand), classifier
    # what is left of pooling is the readout after the last population (AvgPool2d + Flatten),
    # which netx export evaluates on the host
    pools = [n for n, v in c.nodes.items() if isinstance(v, nir.AvgPool2d)]
    assert len(pools) == 1 and [d for s, d in c.edges if s == pools[0]] != []
    after = run(c, x.numpy())
    assert_same(before, after, output_spikes=bn == "calibrated")
    spiking = [p for p, n in before.population_spike_counts.items() if float(np.sum(n)) > 0]
    assert len(spiking) == (10 if bn == "calibrated" else 3), spiking
