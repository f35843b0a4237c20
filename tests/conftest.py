"""Shared fixtures: tiny trained checkpoints in a temporary zoo, and an in-process CLI runner.

Everything is kept tiny (32 training samples, 16x16 inputs, T=2, one epoch, the
test split cut to 16 samples) so that the CLI/train/prune/bench tests run in
seconds on a loaded CPU.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from neurodeploy.training import data

# two training jobs share this machine: one thread keeps the tests from crowding them
torch.set_num_threads(1)

TEST_LIMIT = 16
_orig_load_tensors = data.load_tensors


def _small_load_tensors(name, split, input_size=None, data_dir=None, limit=None, **kw):
    if split == "test":
        limit = TEST_LIMIT if limit is None else min(limit, TEST_LIMIT)
    return _orig_load_tensors(name, split, input_size, data_dir, limit=limit, **kw)


def tiny_config(model="mnasnet", **changes):
    from neurodeploy.training.train import TrainConfig
    kw = dict(model=model, limit=32, epochs=1, batch_size=16, timesteps=2, input_size=16, device="cpu")
    kw.update(changes)
    return TrainConfig(**kw)


@pytest.fixture
def small_test_split(monkeypatch):
    """The test split evaluated for model cards is cut to 16 samples (training speed)."""
    monkeypatch.setattr(data, "load_tensors", _small_load_tensors)


def save_untrained(path, name, twin="snn", seed=0, card_extra=None, **config):
    """A checkpoint of an untrained (seeded) network with a card shaped like train()'s."""
    from dataclasses import asdict
    from neurodeploy.training import checkpoint
    from neurodeploy.architectures import count_macs, count_parameters
    from neurodeploy.training.train import build_from_config
    cfg = tiny_config(name, twin=twin, seed=seed, **config)
    torch.manual_seed(seed)
    model = build_from_config(cfg, 10, 1, cfg.input_size).eval()
    model.name = name
    cnn = build_from_config(tiny_config(name, twin="cnn", **config), 10, 1, cfg.input_size)
    card = {"model": name, "twin": twin, "dataset": "mnist5k", "input_shape": [1, cfg.input_size, cfg.input_size],
            "timesteps": cfg.timesteps, "test_accuracy": 0.25 if twin == "snn" else 0.5,
            "test_macro_f1": 0.2 if twin == "snn" else 0.4, "parameters": count_parameters(model),
            "cnn_macs": count_macs(cnn, (1, cfg.input_size, cfg.input_size)), "config": asdict(cfg),
            **(card_extra or {})}
    checkpoint.save(path, model, card)
    return path


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """A zoo folder: mnasnet's spiking twin trained for one tiny epoch; mnasnet's CNN twin and
    both mixnet twins untrained (seeded) with cards of the same shape."""
    from neurodeploy.training.train import train
    zoo = tmp_path_factory.mktemp("zoo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_tensors", _small_load_tensors)
        train(tiny_config("mnasnet"), zoo / "mnasnet")
    save_untrained(zoo / "mnasnet" / "cnn.pt", "mnasnet", "cnn")
    save_untrained(zoo / "mixnet" / "snn.pt", "mixnet", "snn")
    save_untrained(zoo / "mixnet" / "cnn.pt", "mixnet", "cnn")
    return zoo


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_zoo) -> Path:
    """A tiny trained spiking mnasnet checkpoint (16x16 input, T=2)."""
    return tiny_zoo / "mnasnet" / "snn.pt"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``neurodeploy ARGS`` in process through the console entry (``cli.entry``)."""
    from neurodeploy import cli as cli_mod

    def invoke(*args) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["neurodeploy", *map(str, args)])
        code = 0
        try:
            cli_mod.entry()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            cli_mod.STATE["debug"] = False
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return invoke
