"""Lava-DL netx export (neurodeploy/backends/lava/netx.py).

Without the Lava runtime: the file layout netx's loader reads, the quantised integers
(the Lava backend's own), atomic writing, and the error for graphs that are no chain.

With it (marked ``lava``): the written file is loaded by lava-dl's own
``netx.hdf5.Network`` in the runtime, run with ``Loihi2SimCfg(select_tag='fixed_pt')``
(``reset_interval=T``; the input layer's bias carries the real-valued input), and its
spikes are compared with this toolkit's Lava process graph
(``backends.lava.compile(chain.nir, precision='fixed')``) on the same chain graph.
netx fixes the hidden layers' bias exponent at 6 (biases are multiples of 64 state
units; the backend's are finer), so agreement is measured and asserted high; with the
backend's biases put back (``backend_bias=True``, diagnosis) it must be exact, which
shows that everything else (weights, thresholds, decays, delays, resets, input) agrees.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from neurodeploy.architectures.layers import Twin, TwinModel
from neurodeploy.backends.lava import netx
from neurodeploy.backends.lava.runtime import runtime_status
from neurodeploy.errors import NeurodeployError
from neurodeploy.exporters.lowering import export
from neurodeploy.ir.io import write_graph
from neurodeploy.passes import chain_passes

from nets import FireNet, ResidualNet, calibrate  # noqa: E402

SNN = Twin("snn")
_status = runtime_status()
needs_lava = pytest.mark.skipif(not _status["installed"],
                                reason=f"Lava runtime missing ({_status['reason']}); "
                                       "create it with `neurodeploy setup lava`")


class ReadoutNet(TwinModel):
    """stem -> LIF -> avgpool 2 -> Fire (1x1 and 3x3 expand, cat) -> LIF -> classifier 1x1 -> LIF
    -> global AvgPool2d -> Flatten: merge, fold and a host readout, like the zoo's SqueezeNet."""

    def __init__(self):
        super().__init__(SNN, timesteps=4)
        self.arguments = {"num_classes": 5}
        self.stem, self.a0 = SNN.conv(1, 4, 3), SNN.act()
        self.pool = SNN.pool(2)
        self.squeeze, self.a1 = SNN.conv(4, 4, 1), SNN.act()
        self.e1, self.e3, self.a2 = SNN.conv(4, 3, 1), SNN.conv(4, 5, 3), SNN.act()
        self.cls, self.a3 = SNN.conv(8, 5, 1, bn=False), SNN.readout()
        self.gap, self.flat = nn.AvgPool2d(4), nn.Flatten()

    def body(self, x):
        s = self.a1(self.squeeze(self.pool(self.a0(self.stem(x)))))
        y = self.a2(torch.cat([self.e1(s), self.e3(s)], dim=1))
        return self.flat(self.gap(self.a3(self.cls(y))))


def images(n=4, seed=0):
    torch.manual_seed(seed)
    return torch.rand(n, 1, 8, 8) * 2.0


def build(name):
    x = images()
    torch.manual_seed(1)
    if name == "fire":
        model = calibrate(FireNet(), x)
    else:
        model = calibrate(ReadoutNet(), x)
        with torch.no_grad():
            model.cls.conv.weight.mul_(4.0)   # the untrained classifier must spike
    return export(model, (1, 8, 8)), x.numpy()


def read_layers(path):
    with h5py.File(path, "r") as f:
        out = []
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            out.append({k: (g[k][()] if isinstance(g[k], h5py.Dataset) else
                            {kk: g[k][kk][()] for kk in g[k]}) for k in g})
        return out


# ---------------------------------------------------------------- no runtime needed
def test_layout_and_integers(tmp_path):
    g, _ = build("fire")
    path = tmp_path / "fire.netx.h5"
    summary = netx.write_netx(g, path)
    assert path.exists() and not list(tmp_path.glob("*.part"))
    layers = read_layers(path)
    assert [l["type"][0].decode() for l in layers] == ["input", "conv", "flatten", "dense"]
    assert summary["populations"] == ["a0", "a1", "a2"] and summary["layers"] == 4
    assert tuple(layers[0]["shape"]) == (4, 8, 8) and "weight" not in layers[0]
    conv, dense = layers[1], layers[3]
    assert conv["weight"].shape == (8, 4, 3, 3) and tuple(conv["shape"]) == (8, 8, 8)
    assert dense["weight"].shape == (5, 8 * 8 * 8)   # the 2x2 pool folded into fc and tuple(dense["shape"]) == (5,)
    for l in (layers[0], conv, dense):
        n = l["neuron"]
        assert n["type"][0].decode() == "CUBA" and int(n["iDecay"]) == 4096
        assert 0 <= int(n["vDecay"]) <= 4095 and 0 < int(n["vThMant"]) < (1 << 17)
    for l in (conv, dense):
        w = l["weight"]
        assert w.dtype.kind == "i" and w.min() >= -256 and w.max() <= 254 and np.all(w % 2 == 0)
        assert np.abs(l["bias"]).max() <= 4095
    # the same integers as the Lava backend's quantiser
    _, plan, q, order = netx.prepare(g)
    p = next(p for p in plan.paths if p.target == "a1")
    np.testing.assert_array_equal(conv["weight"], q.weights[id(p)][0])
    # and the input bias reproduces the backend's drive arithmetic
    mant, exp, eff = netx.input_bias(path, images(2).numpy())
    assert mant.shape == (2, 4, 8, 8) and np.all((mant >= -4096) & (mant <= 4095))
    np.testing.assert_array_equal(mant.astype(np.int64) << exp, eff)
    json.dumps(summary)   # the CLI prints it


def test_non_chain_is_refused(tmp_path):
    x = images()
    torch.manual_seed(2)
    g = export(calibrate(ResidualNet(), x), (1, 8, 8))
    with pytest.raises(NeurodeployError, match=r"lava-dl netx loads chains only; node '.+' has fan-(in|out)"):
        netx.write_netx(g, tmp_path / "res.netx.h5")
    assert not list(tmp_path.iterdir())     # nothing half-written


# ---------------------------------------------------------------- netx in the Lava runtime
@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("name", ["fire", "readout"])
def test_netx_agrees_with_lava_backend(tmp_path, name, record_property):
    from neurodeploy.backends.lava import compile as lava_compile
    g, x = build(name)
    T = 6
    path = tmp_path / f"{name}.netx.h5"
    summary = netx.write_netx(g, path)
    chain = write_graph(tmp_path / f"{name}.chain.nir", chain_passes(g))
    ours = lava_compile(chain, precision="fixed", route="netx").run(x, T)
    got = netx.run_netx(path, x, T)
    exact = netx.run_netx(path, x, T, backend_bias=True)

    pops = summary["populations"]
    assert ours.outputs.shape == got["outputs"].shape
    last = pops[-1]
    counts = {p: got["spikes"][p].reshape(T, len(x), -1).sum(axis=(0, 2)) for p in pops}
    assert all(counts[p].sum() > 0 for p in pops), counts    # every layer spikes
    out_agree = float(np.mean(ours.outputs == got["outputs"]))
    total_ours = sum(float(np.sum(ours.population_spike_counts[p])) for p in pops)
    count_diff = sum(float(np.abs(counts[p] - ours.population_spike_counts[p]).sum()) for p in pops)
    count_agree = 1.0 - count_diff / total_ours
    pred_agree = float(np.mean(ours.outputs.sum(0).reshape(len(x), -1).argmax(1)
                               == got["outputs"].sum(0).reshape(len(x), -1).argmax(1)))
    report = {"net": name, "output_agreement": out_agree, "spike_count_agreement": count_agree,
              "prediction_agreement": pred_agree, "netx_seconds": got["seconds"],
              "per_layer_counts_netx": {p: counts[p].tolist() for p in pops},
              "per_layer_counts_lava": {p: np.asarray(ours.population_spike_counts[p]).tolist() for p in pops},
              "bias_rounding": summary["bias_rounding"]}
    print(json.dumps(report))
    record_property("netx_agreement", json.dumps(report))
    # a readout entry is a spike count / positions: one differing spike changes it, hence 0.9
    assert out_agree >= 0.9 and count_agree >= 0.99, report
    # with the backend's finer hidden biases, netx reproduces the backend exactly
    np.testing.assert_array_equal(exact["outputs"], ours.outputs)
    for p in pops:
        np.testing.assert_array_equal(exact["spikes"][p].reshape(T, len(x), -1).sum(axis=(0, 2)),
                                      ours.population_spike_counts[p], err_msg=p)
    assert last == pops[-1]
