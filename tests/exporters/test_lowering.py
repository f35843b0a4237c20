"""NIR export: every lowering of the exporter, checked spike for spike.

Each test builds a tiny spiking network from ``neurodeploy.architectures.layers``,
gives its BatchNorms non-trivial affine parameters and running statistics (set by
train-mode forwards), exports it, writes and reads the .nir file, runs it on the
torch reference backend and compares the output bit for bit with the eval-mode
model's ``forward_steps``. The network must actually spike (firing rates of every
population strictly between 1 % and 99 %), or an all-zero comparison would pass.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

import neurodeploy.architectures.layers as layers
from neurodeploy.architectures.layers import (LIF, ConvBN, LinearOut, SqueezeExcite, Twin, TwinModel,
                                              channel_shuffle)
from neurodeploy.architectures.mixnet import MixConv
from neurodeploy.backends.torch import compile as torch_compile
from neurodeploy.errors import NeurodeployError
from neurodeploy.exporters.lowering import export
from neurodeploy.ir.io import read_graph, write_graph

SNN = Twin("snn")


from nets import (ChainBN, FireNet, MixNetTiny, PoolHead, ResidualNet, ShuffleNet, StridedDW, assert_exact_and_spiking,
                  assert_only_nir_types, calibrate, images, into, lif_hook_counts, roundtrip, types)


def test_batchnorm_folded_exactly(tmp_path):
    torch.manual_seed(1)
    x = images(1)
    model = calibrate(ChainBN(), x, seed=1)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert types(g) == {"input": "Input", "stem": "Conv2d", "a0": "LIF", "conv": "Conv2d", "a1": "LIF",
                        "output": "Output"}
    # the exported weights are the folded (and snapped) ones, not the raw conv weights
    for name in ("stem", "conv"):
        mod = getattr(model, name)
        w, b = mod.deployed_parameters()
        np.testing.assert_array_equal(g.nodes[name].weight, w.numpy())
        np.testing.assert_array_equal(g.nodes[name].bias, b.numpy())
        bn = mod.bn
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        folded_w = (mod.conv.weight * scale.view(-1, 1, 1, 1)).detach().numpy()
        folded_b = (bn.bias - bn.running_mean * scale).detach().numpy()
        np.testing.assert_allclose(g.nodes[name].weight, folded_w, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(g.nodes[name].bias, folded_b, rtol=1e-3, atol=1e-4)
        assert not np.allclose(g.nodes[name].weight, mod.conv.weight.detach().numpy(), atol=1e-3)


def test_fire_concatenation_becomes_fan_in(tmp_path):
    x = images(2)
    torch.manual_seed(2)
    model = calibrate(FireNet(), x, seed=2)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert_only_nir_types(g)
    # the two expand convs project straight into one population (no concat node)
    assert into(g, "a1") == ["e1", "e3"]
    assert into(g, "e1") == into(g, "e3") == ["a0"]
    w1, w3 = g.nodes["e1"].weight, g.nodes["e3"].weight
    assert w1.shape == (8, 4, 1, 1) and w3.shape == (8, 4, 3, 3)     # both write the full cat width
    assert not w1[3:].any() and not g.nodes["e1"].bias[3:].any()     # e1 writes channels 0..2
    assert not w3[:3].any() and not g.nodes["e3"].bias[:3].any()     # e3 writes channels 3..7
    assert w1[:3].any() and w3[3:].any()
    e1w, e1b = model.e1.deployed_parameters()
    np.testing.assert_array_equal(w1[:3], e1w.numpy())
    np.testing.assert_array_equal(g.nodes["e1"].bias[:3], e1b.numpy())
    assert g.nodes["a1"].tau.shape == (8, 8, 8)                       # full-shape neuron parameters
    # per-population spike counts agree with the model's own LIF modules
    hooked = lif_hook_counts(model, x)
    for name, counts in hooked.items():
        np.testing.assert_array_equal(res.population_spike_counts[name], counts)


def test_fire_head_pool_flatten_linear(tmp_path):
    x = images(3)
    torch.manual_seed(3)
    model = calibrate(FireNet(), x, seed=3)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert into(g, "pool") == ["a1"] and into(g, "flat") == ["pool"] and into(g, "fc") == ["flat"]
    assert into(g, "a2") == ["fc"] and into(g, "output") == ["a2"]
    assert isinstance(g.nodes["fc"], nir.Affine) and g.nodes["fc"].weight.shape == (5, 128)
    assert ref.shape == (4, 4, 5)


SHUFFLE_BY_NAME_BUG = ("BUG: torch.fx.wrap(channel_shuffle) patches only layers.py's globals; a module that "
                       "imported it by name (shufflenetv2.py, and this test) is traced into view/transpose "
                       "and export fails with 'cannot export the operation getattr'")


@pytest.mark.parametrize("by_name", [False, True])
@pytest.mark.parametrize("head_conv", [True, False])
def test_shufflenet_chunk_cat_shuffle_folded(tmp_path, head_conv, by_name):
    x = images(4)
    torch.manual_seed(4)
    model = calibrate(ShuffleNet(head_conv, by_name), x, seed=4)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert_only_nir_types(g)
    # wiring by hand: after unit 0 the value is [a0_0, u0_0, a0_1, u0_1, a0_2, u0_2, a0_3, u0_3];
    # unit 1's branch reads its second half (a0 channels 2, 3 and u0 channels 2, 3), and its
    # shuffled output is [a0_0, u1_0, u0_0, u1_1, a0_1, u1_2, u0_1, u1_3]
    assert into(g, "units.1.1") == ["units.1.0@a0", "units.1.0@units.0.5"]
    live_cols = lambda n: np.flatnonzero(np.abs(g.nodes[n].weight).sum(axis=(0, 2, 3))).tolist()
    assert live_cols("units.1.0@a0") == [2, 3] and live_cols("units.1.0@units.0.5") == [2, 3]
    # the branch conv sees its input channels in the order (a0_2, u0_2, a0_3, u0_3)
    w = model.units[1][0].deployed_parameters()[0].numpy()
    np.testing.assert_array_equal(g.nodes["units.1.0@a0"].weight[:, [2, 3]], w[:, [0, 2]])
    np.testing.assert_array_equal(g.nodes["units.1.0@units.0.5"].weight[:, [2, 3]], w[:, [1, 3]])
    sources = {"a0": {0: 0, 4: 1}, "units.0.5": {2: 0, 6: 1}, "units.1.5": {1: 0, 3: 1, 5: 2, 7: 3}}
    if head_conv:
        assert into(g, "out") == ["head@a0", "head@units.0.5", "head@units.1.5"]
        assert not [k for k in g.nodes if ".wiring@" in k]
        hw = model.head.deployed_parameters()[0].numpy()
        for src, m in sources.items():
            node = g.nodes[f"head@{src}"]
            for value_ch, src_ch in m.items():
                np.testing.assert_array_equal(node.weight[:, src_ch], hw[:, value_ch])
    else:
        # a population reading a permutation gets exact 0/1 selection convs, one per source
        assert into(g, "out") == ["out.wiring@a0", "out.wiring@units.0.5", "out.wiring@units.1.5"]
        for src, m in sources.items():
            sel = g.nodes[f"out.wiring@{src}"].weight[:, :, 0, 0]
            expected = np.zeros_like(sel)
            for value_ch, src_ch in m.items():
                expected[value_ch, src_ch] = 1
            np.testing.assert_array_equal(sel, expected)


def test_residual_add_is_fan_in(tmp_path):
    x = images(5)
    torch.manual_seed(5)
    model = calibrate(ResidualNet(), x, seed=5)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert_only_nir_types(g)
    assert into(g, "a2") == ["a0", "project"]              # population spikes + projection
    assert into(g, "a3") == ["main", "shortcut"]           # two projections
    assert isinstance(g.nodes["a0"], nir.LIF)


@pytest.mark.parametrize("stride", [1, 2])
def test_mixconv_split_depthwise_cat(tmp_path, stride):
    x = images(6, hw=10 if stride == 1 else 12)
    torch.manual_seed(6)
    model = calibrate(MixNetTiny(stride), x, seed=6)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert_only_nir_types(g)
    branches = into(g, "a1")
    assert len(branches) == 3
    for k, name in zip((3, 5, 7), sorted(branches, key=lambda n: int(n.split(".")[2].split("@")[0]))):
        node = g.nodes[name]
        assert int(node.groups) == 6 and node.weight.shape == (6, 1, k, k)
        assert tuple(np.atleast_1d(node.stride).tolist())[:1] == (stride,)
    # each depthwise conv writes only its own channel group: zero rows elsewhere, disjoint
    live = np.array([np.abs(g.nodes[n].weight).reshape(6, -1).sum(1) > 0 for n in branches])
    assert (live.sum(0) == 1).all()


def test_strided_depthwise(tmp_path):
    x = images(7, hw=12)
    torch.manual_seed(7)
    model = calibrate(StridedDW(), x, seed=7)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    dw = g.nodes["dw"]
    assert int(dw.groups) == 4 and dw.weight.shape == (4, 1, 3, 3)
    assert ref.shape == (4, 4, 4, 6, 6)


def test_avgpool_after_lif_and_global_pool_head(tmp_path):
    x = images(8, hw=16)
    torch.manual_seed(8)
    model = calibrate(PoolHead(), x, seed=8)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert types(g)["pool"] == "AvgPool2d" and types(g)["gap"] == "AvgPool2d"
    assert np.asarray(g.nodes["pool"].kernel_size).ndim == 1           # 1-D arrays, as NIR needs
    assert into(g, "conv") == ["pool"] and into(g, "flat") == ["gap"]


def test_export_metadata_and_static_input(tmp_path):
    x = images(9)
    torch.manual_seed(9)
    model = calibrate(FireNet(), x, seed=9)
    ref, res, g = roundtrip(model, x, tmp_path)
    from neurodeploy.ir.conventions import conventions_of
    c = conventions_of(g)
    assert c.from_metadata and c.timesteps == 4 and c.input_shape == (1, 8, 8) and c.num_classes == 5
    assert c.reset == "zero" and c.twin == "snn"
    # the same input given as an explicit sequence gives the same output
    seq = np.broadcast_to(x.numpy(), (4,) + tuple(x.shape)).copy()
    res2 = torch_compile(g, device="cpu").run(seq, batch_size=3)
    np.testing.assert_array_equal(res2.outputs, ref.numpy())


class _WriteSliceReuse(TwinModel):
    """A projection that feeds the second half of a cat AND is read again on its own."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.z, self.y = SNN.conv(4, 3, 1), SNN.conv(4, 3, 1)
        self.a1, self.a2, self.a3 = SNN.act(), SNN.act(), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        y = self.y(s)
        o1 = self.a1(torch.cat([self.z(s), y], dim=1))
        o2 = self.a2(y)
        return self.a3(torch.cat([o1, o2], dim=1))


def test_projection_reused_after_concatenation(tmp_path):
    x = images(10)
    torch.manual_seed(10)
    model = calibrate(_WriteSliceReuse(), x, seed=10)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)


class _DepthwiseOfSum(TwinModel):
    """A depthwise conv reading the sum of two projections (no population in between)."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.p, self.q = SNN.conv(4, 4, 1), SNN.conv(4, 4, 1)
        self.dw, self.a1 = SNN.conv(4, 4, 3, groups=4), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        return self.a1(self.dw(self.p(s) + self.q(s)))


def test_depthwise_of_a_sum_adds_bias_once(tmp_path):
    x = images(11)
    torch.manual_seed(11)
    model = calibrate(_DepthwiseOfSum(), x, seed=11)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert np.array_equal(res.outputs, ref.numpy())


class PooledCat(TwinModel):
    """Xception-like: avg pooling of a concatenation of projections, plus a strided shortcut, into a LIF."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.c1, self.c2 = SNN.conv(4, 2, 3), SNN.conv(4, 3, 1)
        self.pool = SNN.pool(2)
        self.shortcut, self.a1 = SNN.conv(4, 5, 1, stride=2), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        return self.a1(self.pool(torch.cat([self.c1(s), self.c2(s)], dim=1)) + self.shortcut(s))


def test_pool_of_concatenated_projections_plus_shortcut(tmp_path):
    x = images(12)
    torch.manual_seed(12)
    model = calibrate(PooledCat(), x, seed=12)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert "shortcut" in into(g, "a1") and len(into(g, "a1")) == 3
    assert_only_nir_types(g)


@pytest.mark.parametrize("beta, threshold", [(0.5, 0.75), (0.95, 1.5)])
def test_neuron_hyper_parameters_exported(tmp_path, beta, threshold):
    twin = Twin("snn", beta=beta, threshold=threshold)

    class M(TwinModel):
        def __init__(self):
            super().__init__(twin, timesteps=6)
            self.stem, self.a0 = twin.conv(1, 4, 3), twin.act()
            self.conv, self.a1 = twin.conv(4, 4, 3), twin.act()

        def body(self, x):
            return self.a1(self.conv(self.a0(self.stem(x))))

    x = images(13)
    torch.manual_seed(13)
    model = calibrate(M(), x, seed=13)
    ref, res, g = roundtrip(model, x, tmp_path)
    assert_exact_and_spiking(model, ref, res)
    assert (g.nodes["a0"].v_threshold == threshold).all()
    np.testing.assert_allclose(1e-4 / g.nodes["a0"].tau, 1 - np.float32(beta), rtol=1e-9)
    assert res.outputs.shape[0] == 6


class _DepthwiseOfDuplicatedChannels(TwinModel):
    """A depthwise conv over cat([s, s]): two different kernels on each source channel."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.dw, self.a1 = SNN.conv(8, 8, 3, groups=8), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        return self.a1(self.dw(torch.cat([s, s], dim=1)))


def test_depthwise_of_duplicated_channels_is_exact_or_refused(tmp_path):
    x = images(14)
    torch.manual_seed(14)
    model = calibrate(_DepthwiseOfDuplicatedChannels(), x, seed=14)
    try:
        ref, res, g = roundtrip(model, x, tmp_path)
    except NeurodeployError:
        return                                   # a refusal is an acceptable outcome
    assert np.array_equal(res.outputs, ref.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_matches_cpu_model(tmp_path):
    x = images(2)
    torch.manual_seed(2)
    model = calibrate(FireNet(), x, seed=2)
    with torch.no_grad():
        ref = model.forward_steps(x)
    g = read_graph(write_graph(tmp_path / "g.nir", export(model, (1, 8, 8))))
    out = torch_compile(g, device="cuda").run(x.numpy(), batch_size=len(x)).outputs
    assert np.array_equal(out, ref.numpy())


# ---------------------------------------------------------------- refusals
def test_refuses_adding_a_value_to_itself():
    class M(TwinModel):
        def __init__(self):
            super().__init__(SNN, timesteps=2)
            self.stem, self.a0, self.a1 = SNN.conv(1, 4, 3), SNN.act(), SNN.act()

        def body(self, x):
            s = self.a0(self.stem(x))
            return self.a1(s + s)

    with pytest.raises(NeurodeployError, match="to itself"):
        export(M(), (1, 8, 8))


def test_refuses_grouped_conv_and_odd_pooling():
    class M(TwinModel):
        def __init__(self, layer):
            super().__init__(SNN, timesteps=2)
            self.stem, self.a0, self.layer = SNN.conv(1, 4, 3), SNN.act(), layer

        def body(self, x):
            return self.layer(self.a0(self.stem(x)))

    with pytest.raises(NeurodeployError, match="layer.*groups"):
        export(M(SNN.conv(4, 4, 3, groups=2)), (1, 8, 8))
    with pytest.raises(NeurodeployError, match="layer.*ceil_mode"):
        export(M(nn.AvgPool2d(3, 2, ceil_mode=True)), (1, 8, 8))
    with pytest.raises(NeurodeployError, match="layer.*count_include_pad"):
        export(M(nn.AvgPool2d(3, 1, 1, count_include_pad=False)), (1, 8, 8))
    with pytest.raises(NeurodeployError, match="layer.*AdaptiveAvgPool2d"):
        export(M(nn.AdaptiveAvgPool2d(5)), (1, 8, 8))     # not an average over fixed windows


class _WithMaxPool(TwinModel):
    def __init__(self):
        super().__init__(SNN, timesteps=2)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.maxpool = Twin("cnn").pool(2)

    def body(self, x):
        return self.maxpool(self.a0(self.stem(x)))


class _WithSE(TwinModel):
    def __init__(self):
        super().__init__(SNN, timesteps=2)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.gate = SqueezeExcite(4, 2)
        self.a1 = SNN.act()

    def body(self, x):
        return self.a1(self.gate(self.a0(self.stem(x))))


class _WithReLU(TwinModel):
    def __init__(self):
        super().__init__(SNN, timesteps=2)
        self.stem, self.relu = SNN.conv(1, 4, 3), nn.ReLU()

    def body(self, x):
        return self.relu(self.stem(x))


@pytest.mark.parametrize("cls, module, kind", [(_WithMaxPool, "maxpool", "MaxPool2d"),
                                               (_WithSE, "gate", "SqueezeExcite"),
                                               (_WithReLU, "relu", "ReLU")])
def test_refuses_layers_without_spiking_form(cls, module, kind):
    with pytest.raises(NeurodeployError) as e:
        export(cls(), (1, 8, 8))
    msg = str(e.value)
    assert module in msg and kind in msg and "\n" not in msg


def test_refuses_cnn_twin():
    from neurodeploy.architectures import build
    model = build("squeezenet", "cnn", in_channels=1, input_size=16)
    with pytest.raises(NeurodeployError, match="spiking twin"):
        export(model, (1, 16, 16))


def test_refuses_non_channel_cat():
    class M(TwinModel):
        def __init__(self):
            super().__init__(SNN, timesteps=2)
            self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()

        def body(self, x):
            s = self.a0(self.stem(x))
            return torch.cat([s, s], dim=2)

    with pytest.raises(NeurodeployError, match="concatenation"):
        export(M(), (1, 8, 8))


# ---------------------------------------------------------------- the whole zoo
def _zoo_names():
    from neurodeploy.architectures import ARCHITECTURES
    return list(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_exports_exactly(tmp_path, name):
    from neurodeploy.architectures import build
    from neurodeploy.training.data import load_tensors
    x, _ = load_tensors("mnist5k", "test", 32, limit=4)
    torch.manual_seed(0)
    model = build(name, "snn", in_channels=1)
    model.train()
    with torch.no_grad():
        model.forward_steps(x)
        model.forward_steps(x)
    model.eval()
    ref, res, g = roundtrip(model, x, tmp_path)
    assert np.array_equal(res.outputs, ref.numpy()), f"{name}: max |diff| {np.abs(res.outputs - ref.numpy()).max()}"
    assert_only_nir_types(g)
    hooked = lif_hook_counts(model, x)
    assert set(hooked) == set(res.population_spike_counts)
    total = 0
    for pop, counts in hooked.items():
        np.testing.assert_array_equal(res.population_spike_counts[pop], counts, err_msg=pop)
        total += counts.sum()
    assert total > 0, f"{name}: no population spiked"
