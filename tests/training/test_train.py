"""train(): seeded determinism, resume after an interruption, divergence, the model card, macro-F1."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neurodeploy.training import checkpoint
from neurodeploy.architectures import build, count_macs, count_parameters
from neurodeploy.errors import NeurodeployError
from neurodeploy.training.train import TrainConfig, macro_f1, resolve_device, train

from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("small_test_split")


def weights(path):
    return checkpoint.read(path)["state_dict"]


def assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_runs_are_identical(tmp_path):
    cfg = tiny_config("mnasnet")
    c1 = train(cfg, tmp_path / "a")
    c2 = train(cfg, tmp_path / "b")
    assert_same_state(weights(tmp_path / "a" / "snn.pt"), weights(tmp_path / "b" / "snn.pt"))
    assert c1["history"] == c2["history"]
    # and the weights did move away from the seeded initialisation
    torch.manual_seed(cfg.seed)
    init = build("mnasnet", "snn", num_classes=10, input_size=16, in_channels=1, timesteps=2).state_dict()
    trained = weights(tmp_path / "a" / "snn.pt")
    assert any(not torch.equal(init[k], trained[k]) for k in init if init[k].is_floating_point())


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, augment):
    """With augmentation the crops of epoch 2 are drawn from the data generator after epoch 1's:
    the resume state carries that generator's state (replaying only the shuffles diverged)."""
    cfg = tiny_config("mnasnet", epochs=2, augment=augment)
    steps_per_epoch = math.ceil(round(32 * 0.9) / cfg.batch_size)
    assert steps_per_epoch == 2
    full = train(cfg, tmp_path / "full")
    assert not (tmp_path / "full" / "snn.last.pt").exists()      # removed once finished

    calls = {"n": 0}

    def interrupt(model):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 1:       # one step into epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resume", after_step=interrupt)
    last = tmp_path / "resume" / "snn.last.pt"
    assert last.exists() and not (tmp_path / "resume" / "snn.pt").exists()
    assert torch.load(last, weights_only=False)["epoch"] == 1

    resumed = train(cfg, tmp_path / "resume")
    assert_same_state(weights(tmp_path / "full" / "snn.pt"), weights(tmp_path / "resume" / "snn.pt"))
    assert resumed["history"] == full["history"] and len(full["history"]) == 2
    assert not last.exists()


def test_changed_config_does_not_resume(tmp_path):
    """A leftover .last.pt of another configuration is ignored (fresh start)."""
    cfg = tiny_config("mnasnet")
    torch.save({"config": {"model": "other"}, "epoch": 99}, tmp_path / "snn.last.pt")
    card = train(cfg, tmp_path)
    assert [h["epoch"] for h in card["history"]] == [1]


def _poison(model):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def test_nan_loss_raises_with_lr(tmp_path):
    """The CNN twin's logits carry the NaN into the loss: a one-line error naming --lr."""
    cfg = tiny_config("mnasnet", twin="cnn", lr=0.0123)
    with pytest.raises(NeurodeployError, match=r"diverged: loss is nan at epoch 1; lower --lr \(now 0\.0123\)"):
        train(cfg, tmp_path, after_step=_poison)
    assert not (tmp_path / "cnn.pt").exists()


def test_nan_weights_in_spiking_twin_are_detected(tmp_path):
    cfg = tiny_config("mnasnet", lr=0.0123)
    with pytest.raises(NeurodeployError, match="lr"):
        train(cfg, tmp_path, after_step=_poison)
    assert not (tmp_path / "snn.pt").exists()


def test_card_fields(tiny_zoo):
    card = json.loads((tiny_zoo / "mnasnet" / "snn.json").read_text())
    for key in ("dataset", "split", "timesteps", "neuron", "optimiser", "schedule", "epochs", "test_accuracy",
                "test_macro_f1", "parameters", "cnn_macs", "code_commit", "config", "history", "input_shape"):
        assert key in card, key
    assert card["dataset"] == "mnist5k" and card["timesteps"] == 2 and card["epochs"] == 1
    assert card["split"]["train"] + card["split"]["validation"] == 32 and card["split"]["test"] == 16
    assert card["neuron"]["type"] == "LIF" and card["neuron"]["surrogate"].startswith("atan")
    assert card["optimiser"]["name"] == "AdamW" and card["optimiser"]["lr"] == 2e-3
    assert "one-cycle" in card["schedule"]
    assert 0 <= card["test_accuracy"] <= 1 and 0 <= card["test_macro_f1"] <= 1
    args = dict(num_classes=10, input_size=16, in_channels=1)
    assert card["parameters"] == count_parameters(build("mnasnet", "snn", **args))
    assert card["cnn_macs"] == count_macs(build("mnasnet", "cnn", **args), (1, 16, 16))
    assert TrainConfig(**card["config"]) == tiny_config("mnasnet")
    # the checkpoint carries the same card and rebuilds the network
    net = checkpoint.load(tiny_zoo / "mnasnet" / "snn.pt")
    assert net.card == card and net.timesteps == 2 and not net.training


def test_macro_f1_hand_computed():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0; class 3 absent -> 0
    assert macro_f1(y_true, y_pred, 4) == pytest.approx((0.5 + 0.8 + 0 + 0) / 4)
    assert macro_f1(y_true, y_true, 3) == 1.0


def test_resolve_device_errors():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(NeurodeployError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NeurodeployError, match="no CUDA"):
            resolve_device("cuda")


def test_hostile_resume_state_runs_nothing(tmp_path):
    """The resume state is read with weights_only: a pickle that would run code is refused, by name."""
    import pickle

    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    out = tmp_path / "run"
    out.mkdir()
    (out / "snn.last.pt").write_bytes(pickle.dumps({"config": Hostile()}))
    cfg = TrainConfig(model="mnasnet", epochs=1, limit=64, batch_size=32, timesteps=2)
    with pytest.raises(NeurodeployError, match="snn.last.pt: not a resume state this toolkit wrote"):
        train(cfg, out)
    assert not marker.exists()
