"""Small spiking networks and helpers shared by the exporter, pass, ONNX and netx tests.

Each network is built from ``neurodeploy.architectures.layers``; ``calibrate`` gives its
BatchNorms non-trivial statistics so that every population spikes.
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



# ---------------------------------------------------------------- helpers
def calibrate(model: TwinModel, x: torch.Tensor, seed: int = 0, fc_gain: float = 6.0) -> TwinModel:
    """Non-trivial BN affine parameters, running stats from 2 train-mode forwards, then eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None            # cumulative average of the train-mode batches
                m.weight.copy_(0.8 + 0.8 * torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.3 + 0.6 * torch.rand(m.bias.shape, generator=g))
            if isinstance(m, LinearOut):
                m.fc.weight.mul_(fc_gain)
                m.fc.bias.add_(0.4)
        model.train()
        model.forward_steps(x)
        model.forward_steps(x * 0.9)
    model.eval()
    for m in model.modules():                # the statistics really are non-trivial
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
    return model


def roundtrip(model: TwinModel, x: torch.Tensor, tmp_path, name="g.nir"):
    """(reference output, backend result, graph read back)."""
    model.eval()
    with torch.no_grad():
        ref = model.forward_steps(x)
    graph = export(model, tuple(x.shape[1:]))
    path = write_graph(tmp_path / name, graph)
    back = read_graph(path)
    result = torch_compile(back, device="cpu").run(x.numpy(), batch_size=len(x))
    return ref, result, back


def assert_exact_and_spiking(model, ref, result, lo=0.01, hi=0.99):
    out = result.outputs
    assert out.shape == tuple(ref.shape)
    assert np.array_equal(out, ref.numpy()), f"max |diff| {np.abs(out - ref.numpy()).max()}"
    assert float(ref.abs().mean()) > 0, "the network's output never spikes"
    pops = result.counters.populations
    lif_names = [n for n, m in model.named_modules() if isinstance(m, LIF)]
    assert set(lif_names) == set(pops), (lif_names, list(pops))
    for name, c in pops.items():
        assert c.kind == "LIF"
        assert lo < c.firing_rate() < hi, f"{name}: firing rate {c.firing_rate():.4f}"


def types(graph):
    return {k: type(v).__name__ for k, v in graph.nodes.items()}


def into(graph, node):
    return sorted(s for s, d in graph.edges if d == node)


def assert_only_nir_types(graph):
    allowed = {"Input", "Output", "Conv2d", "Affine", "LIF", "AvgPool2d", "Flatten"}
    assert set(types(graph).values()) <= allowed, types(graph)


def lif_hook_counts(model, x):
    """Per-sample spike counts of every LIF module of the eval-mode model."""
    counts, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            def hook(mod, inp, out, name=name):
                T = mod.timesteps
                counts[name] = out.reshape(T, -1, *out.shape[1:]).sum(dim=tuple(
                    i for i in range(out.dim() + 1) if i != 1)).numpy()
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.forward_steps(x)
    finally:
        for h in hooks:
            h.remove()
    return counts


# ---------------------------------------------------------------- tiny networks
class ChainBN(TwinModel):
    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.conv, self.a1 = SNN.conv(4, 6, 3), SNN.act()

    def body(self, x):
        return self.a1(self.conv(self.a0(self.stem(x))))


class FireNet(TwinModel):
    """stem -> LIF -> Fire-like (1x1 and 3x3 expand, torch.cat) -> LIF -> avgpool -> flatten -> linear -> LIF."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.arguments = {"num_classes": 5}
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.e1, self.e3, self.a1 = SNN.conv(4, 3, 1), SNN.conv(4, 5, 3), SNN.act()
        self.pool, self.flat = SNN.pool(2), nn.Flatten()
        self.fc, self.a2 = SNN.linear(8 * 4 * 4, 5), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        y = self.a1(torch.cat([self.e1(s), self.e3(s)], dim=1))
        return self.a2(self.fc(self.flat(self.pool(y))))


class ShuffleNet(TwinModel):
    """Two ShuffleNet stride-1 units (chunk, branch, cat, shuffle), then a 1x1 conv or directly a LIF."""

    def __init__(self, head_conv=True, by_name=False):
        super().__init__(SNN, timesteps=4)
        self.head_conv, self.by_name = head_conv, by_name
        self.stem, self.a0 = SNN.conv(1, 8, 3), SNN.act()
        self.units = nn.ModuleList(nn.Sequential(SNN.conv(4, 4, 1), SNN.act(), SNN.conv(4, 4, 3, groups=4),
                                                 SNN.act(), SNN.conv(4, 4, 1), SNN.act()) for _ in range(2))
        self.head = SNN.conv(8, 6, 1) if head_conv else None
        self.out = SNN.act()

    def body(self, x):
        x = self.a0(self.stem(x))
        for unit in self.units:
            passed, x2 = x.chunk(2, dim=1)
            cat = torch.cat([passed, unit(x2)], dim=1)
            # by_name: called as shufflenetv2.py calls it (imported by name); otherwise through the
            # layers module, whose global torch.fx.wrap patches
            x = channel_shuffle(cat, 2) if self.by_name else layers.channel_shuffle(cat, 2)
        return self.out(self.head(x) if self.head_conv else x)


class ResidualNet(TwinModel):
    """MBConv-like: LIF spikes + projection summed into one LIF; Xception-like: main + 1x1 shortcut."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.expand, self.a1 = SNN.conv(4, 8, 1), SNN.act()
        self.project, self.a2 = SNN.conv(8, 4, 1), SNN.act()
        self.main, self.shortcut, self.a3 = SNN.conv(4, 6, 3), SNN.conv(4, 6, 1), SNN.act()

    def body(self, x):
        s = self.a0(self.stem(x))
        r = self.a2(self.project(self.a1(self.expand(s))) + s)
        return self.a3(self.main(r) + self.shortcut(r))


class MixNetTiny(TwinModel):
    """expand -> LIF -> MixConv (split into 3 groups, depthwise 3/5/7, cat) -> LIF -> 1x1 -> LIF."""

    def __init__(self, stride=1):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 6, 3), SNN.act()
        self.mix, self.a1 = MixConv(SNN, 6, (3, 5, 7), stride), SNN.act()
        self.proj, self.a2 = SNN.conv(6, 4, 1), SNN.act()

    def body(self, x):
        return self.a2(self.proj(self.a1(self.mix(self.a0(self.stem(x))))))


class StridedDW(TwinModel):
    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.dw, self.a1 = SNN.conv(4, 4, 3, stride=2, groups=4), SNN.act()

    def body(self, x):
        return self.a1(self.dw(self.a0(self.stem(x))))


class PoolHead(TwinModel):
    """LIF -> AvgPool2d -> conv -> LIF -> AvgPool2d (global) -> Flatten -> LinearOut -> LIF."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.arguments = {"num_classes": 3}
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.pool = SNN.pool(2)
        self.conv, self.a1 = SNN.conv(4, 8, 3), SNN.act()
        self.gap, self.flat = nn.AvgPool2d(8), nn.Flatten()
        self.fc, self.a2 = SNN.linear(8, 3), SNN.act()

    def body(self, x):
        y = self.a1(self.conv(self.pool(self.a0(self.stem(x)))))
        return self.a2(self.fc(self.flat(self.gap(y))))


def images(seed=0, n=4, hw=8, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, hw, hw, generator=g) * scale


# ---------------------------------------------------------------- exactness
