"""Interop: snnTorch's NIR importer on graphs this toolkit writes.

It runs conv / LIF chains of ours and reproduces our spikes exactly (this test).
It cannot run graphs with a Flatten: snnTorch's importer (through nirtorch)
flattens the batch dimension too, so a Flatten -> Affine head fails with a shape
error; the README's interoperability table says so, and the second test pins it.
"""
import numpy as np
import pytest
import torch
from torch import nn

from neurodeploy.architectures.layers import Twin, TwinModel
from neurodeploy.exporters.lowering import export

import_nir = pytest.importorskip("snntorch.import_nir")


class Chain(TwinModel):
    def __init__(self, head: bool):
        super().__init__(Twin("snn"), timesteps=4)
        t = self.twin
        self.arguments = dict(num_classes=4)
        layers = [t.conv(1, 4, 3), t.act(), t.conv(4, 4, 3), t.readout()]
        if head:
            layers = [t.conv(1, 4, 3), t.act(), nn.AvgPool2d(2), nn.Flatten(), t.linear(64, 4), t.readout()]
        self.features = nn.Sequential(*layers)

    def body(self, x):
        return self.features(x)


def _calibrated(head):
    torch.manual_seed(0)
    model = Chain(head)
    x = torch.rand(8, 1, 8, 8) * 3
    model.train()
    with torch.no_grad():
        model(x)
        model(x)
    return model.eval(), x


def _run_snntorch(graph, x, steps):
    net = import_nir.import_from_nir(graph)
    outs, state = [], None
    with torch.no_grad():
        for _ in range(steps):
            out, state = net(x, state) if state is not None else net(x)
            outs.append(out)
    return torch.stack(outs).numpy()


def test_snntorch_importer_reproduces_our_conv_chain():
    model, x = _calibrated(head=False)
    with torch.no_grad():
        ref = model.forward_steps(x).numpy()
    out = _run_snntorch(export(model, (1, 8, 8)), x, 4)
    assert ref.mean() > 0
    assert np.array_equal(out, ref)


def test_snntorch_importer_cannot_run_a_flatten_head():
    model, x = _calibrated(head=True)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        _run_snntorch(export(model, (1, 8, 8)), x, 4)
