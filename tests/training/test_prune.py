"""Fire-module pruning (SqueezeNet) and L1 channel pruning, on tiny seeded checkpoints."""
from __future__ import annotations

import pytest
import torch

from neurodeploy.training import checkpoint
from neurodeploy.architectures import build, count_parameters
from neurodeploy.errors import NeurodeployError
from neurodeploy.training.prune import (_fire_named_state, carry_weights, l1_channel_masks, nonzero_parameters,
                               prune_channels, prune_fires)
from neurodeploy.training.train import TrainConfig

from conftest import save_untrained

KEEP = [4, 6, 8, 9]
ARGS = dict(num_classes=10, input_size=16, in_channels=1)

pytestmark = pytest.mark.usefixtures("small_test_split")


@pytest.fixture
def squeeze_ckpt(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "zoo"))
    return save_untrained(tmp_path / "src" / "snn.pt", "squeezenet", seed=3)


def test_carry_weights_maps_kept_fires(squeeze_ckpt):
    src = checkpoint.load(squeeze_ckpt)
    pruned = build("squeezenet", "snn", timesteps=2, fires=KEEP, **ARGS)
    src_named, dst_named = _fire_named_state(src), _fire_named_state(pruned)
    assert any(k.startswith("fire9.") for k in dst_named) and not any(k.startswith("fire2.") for k in dst_named)
    filled, carried, skipped = carry_weights(src_named, dst_named)
    for f in KEEP:
        for conv in ("expand1x1", "expand3x3"):
            keys = [k for k in carried if k.startswith(f"fire{f}.{conv}.")]
            assert keys, (f, conv)
            for k in keys:
                assert torch.equal(filled[k], src_named[k])
    # fire4's squeeze now reads the stem's 96 channels instead of fire3's 128: not carried
    assert any(k.startswith("fire4.squeeze.") and "weight" in k for k in skipped)
    # fire6's squeeze reads fire4's output (256) in both models: carried
    assert any(k.startswith("fire6.squeeze.") for k in carried)
    assert set(carried) | set(skipped) == set(dst_named) and not set(carried) & set(skipped)


def test_prune_fires(squeeze_ckpt, tmp_path):
    rep = prune_fires("squeezenet", KEEP, squeeze_ckpt, tmp_path / "out", epochs=1, device="cpu", limit=32)
    full = count_parameters(build("squeezenet", "snn", **ARGS))
    expect = count_parameters(build("squeezenet", "snn", fires=KEEP, **ARGS))
    assert rep["before"]["parameters"] == full and rep["before"]["fires"] == list(range(2, 10))
    assert rep["after"]["parameters"] == expect < full
    assert rep["kept_fires"] == KEEP and rep["carried_tensors"] > 0
    assert not any(".expand" in k for k in rep["reinitialised_tensors"])
    net = checkpoint.load(rep["checkpoint"])
    assert net.arguments["fires"] == KEEP and count_parameters(net) == expect
    assert net.card["config"]["arguments"] == {"fires": KEEP}


@pytest.mark.parametrize("keep", [[1, 4], [4, 10], []])
def test_prune_fires_rejects_bad_keep_sets(squeeze_ckpt, tmp_path, keep):
    with pytest.raises((NeurodeployError, ValueError), match="2..9"):
        prune_fires("squeezenet", keep, squeeze_ckpt, tmp_path / "out", epochs=1, device="cpu", limit=32)
    assert not (tmp_path / "out" / "snn.pt").exists()


def test_prune_fires_refuses_other_models(tmp_path):
    with pytest.raises(NeurodeployError, match="channel-ratio"):
        prune_fires("mnasnet", KEEP, None, tmp_path / "out")


def test_prune_without_source_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "zoo"))
    with pytest.raises(NeurodeployError, match="no checkpoint to prune"):
        prune_fires("squeezenet", KEEP, None, tmp_path / "out")


def test_prune_channels(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "zoo"))
    src_path = save_untrained(tmp_path / "src" / "snn.pt", "mnasnet", seed=1)
    src = checkpoint.load(src_path)
    masks = l1_channel_masks(src, 0.5)
    assert masks and all(m.sum() < len(m) for m in masks.values() if len(m) > 1)
    rep = prune_channels("mnasnet", 0.5, src_path, tmp_path / "out", epochs=1, device="cpu", limit=32)
    assert rep["before"]["parameters"] == nonzero_parameters(src)
    assert rep["after"]["parameters"] < rep["before"]["parameters"]
    assert rep["pruned_convs"] == len(masks)
    pruned = checkpoint.load(rep["checkpoint"])
    modules = dict(pruned.named_modules())
    for name, mask in masks.items():
        m = modules[name]
        dropped = mask == 0
        assert torch.all(m.conv.weight[dropped] == 0), name
        if m.bn is not None:
            assert torch.all(m.bn.weight[dropped] == 0) and torch.all(m.bn.bias[dropped] == 0), name
        assert torch.any(m.conv.weight[~dropped] != 0), name      # the kept channels were fine-tuned, not zeroed
    assert TrainConfig(**rep["config"]).model == "mnasnet"


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_prune_channels_invalid_ratio(tmp_path, monkeypatch, ratio):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "zoo"))
    src_path = save_untrained(tmp_path / "src" / "snn.pt", "mnasnet")
    with pytest.raises(NeurodeployError, match="channel-ratio"):
        prune_channels("mnasnet", ratio, src_path, tmp_path / "out", epochs=1, device="cpu", limit=32)
    assert not (tmp_path / "out").exists()
