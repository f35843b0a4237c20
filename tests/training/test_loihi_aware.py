"""Loihi-aware fine-tuning: the deployed weights land exactly on the grid the Lava compiler uses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.training import checkpoint, loihi_aware
from neurodeploy.architectures.layers import ConvBN, to_grid
from neurodeploy.backends import lava
from neurodeploy.backends import torch as torch_backend
from neurodeploy.backends.lava.compiler import Quantised
from neurodeploy.backends.lava.plan import build_plan
from neurodeploy.errors import NeurodeployError
from neurodeploy.exporters.lowering import export
from neurodeploy.ir.conventions import conventions_of
from neurodeploy.training.train import train

from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("small_test_split")
SHAPE = (1, 16, 16)


def lava_quantisation(model) -> Quantised:
    graph = export(model, SHAPE)
    return Quantised(build_plan(graph, conventions_of(graph)), "fixed")


def test_to_grid_rounds_forward_and_passes_gradient_straight_through():
    w = torch.tensor([0.26, -0.74, 0.1], requires_grad=True)
    q = to_grid(w, 0.25)
    assert q.tolist() == [0.25, -0.75, 0.0]
    (q * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0]


def test_grouping_follows_the_lava_plan(tiny_ckpt, tiny_zoo):
    model = checkpoint.load(tiny_ckpt)
    grids = loihi_aware.population_grids(model, SHAPE)
    convs = {n for n, m in model.named_modules() if isinstance(m, ConvBN)}
    assert {c.module for g in grids for c in g.carriers} == convs       # every conv, once
    # the wide depthwise convs run as Sparse, with their own weight exponent
    assert any(c.exponent_free for g in grids for c in g.carriers)
    # MixNet's residual adds before the neuron: the identity projection (weight 1) shares
    # the block output's scale
    mixnet = checkpoint.load(tiny_zoo / "mixnet" / "snn.pt")
    assert any(g.fixed_peak == 1.0 for g in loihi_aware.population_grids(mixnet, SHAPE))


def test_float_trained_weights_are_off_the_loihi_grid(tiny_ckpt):
    reports = lava_quantisation(checkpoint.load(tiny_ckpt)).report["layers"].values()
    assert max(r["max_abs_error"] for r in reports) > 0
    summary = lava.compile(export(checkpoint.load(tiny_ckpt), SHAPE), precision="fixed").weight_quantisation
    assert summary["exact_layers"] < summary["layers"] and summary["worst_relative_error"] > 0


def test_loihi_aware_training_lands_exactly_on_the_compilers_grid(tmp_path, tiny_ckpt):
    card = train(tiny_config("mnasnet", init_from=str(tiny_ckpt), loihi_aware=True, lr=1e-4), tmp_path)
    assert card["loihi_aware"]["test_accuracy_before"] is not None
    model = checkpoint.load(tmp_path / "snn.pt")
    steps = {n: m.loihi_step for n, m in model.named_modules() if isinstance(m, ConvBN)}
    assert all(s is not None for s in steps.values())          # restored from the checkpoint
    # power-of-two steps: the exact-float snap keeps the weights on them
    assert all(float(np.log2(s)).is_integer() for s in steps.values())
    q = lava_quantisation(model)
    for name, rep in q.report["layers"].items():
        assert rep["max_abs_error"] == 0 and rep["clipped"] == 0, name
    # what `validate --targets torch,lava` reports about it (compiling needs no Lava runtime)
    summary = lava.compile(export(model, SHAPE), precision="fixed").weight_quantisation
    assert summary["exact_layers"] == summary["layers"] == len(q.report["layers"])
    assert summary["worst_relative_error"] == 0
    # and the export is still exact: the model's spikes are the graph's
    x = torch.rand(3, *SHAPE)
    with torch.no_grad():
        expected = model.forward_steps(x).numpy()
    got = torch_backend.compile(export(model, SHAPE), device="cpu").run(x.numpy(), count=False).outputs
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_batchnorm_is_frozen_while_on_the_grid(tiny_ckpt):
    model = checkpoint.load(tiny_ckpt)
    on_grid = loihi_aware.OnTheGrid(model, SHAPE)
    bn = next(m.bn for m in model.modules() if isinstance(m, ConvBN))
    before = bn.running_mean.clone()
    model.train()
    model(torch.rand(4, *SHAPE)).sum().backward()
    on_grid.freeze()
    assert torch.equal(bn.running_mean, before)
    assert bn.weight.grad is not None      # BN's affine parameters still learn, through the folded weights


def test_cnn_twin_is_refused(tmp_path):
    with pytest.raises(NeurodeployError, match="spiking twin"):
        train(tiny_config("mnasnet", twin="cnn", loihi_aware=True), tmp_path)
