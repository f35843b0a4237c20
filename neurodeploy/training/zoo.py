"""The model zoo on disk: ``<zoo>/<name>/`` holds snn.pt, cnn.pt and their JSON cards.

The zoo is ``neurodeploy/models/``, package data shipped inside the wheel (28 MB), so
an installed toolkit finds it where a source checkout does. ``$NEURODEPLOY_ZOO``
names another folder of the same layout (a zoo trained on CIFAR, say); ``train``
and ``train-zoo`` write there by default.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..architectures import ARCHITECTURES, build, count_macs, count_parameters, family_of

ZOO_DATASET = "mnist5k"
ZOO_INPUT = dict(num_classes=10, input_size=32, in_channels=1)


ZOO_VARIABLE = "NEURODEPLOY_ZOO"


def zoo_dir() -> Path:
    if os.environ.get(ZOO_VARIABLE):
        return Path(os.environ[ZOO_VARIABLE])
    return Path(__file__).resolve().parent.parent / "models"


def missing_checkpoint(name: str, twin: str = "snn") -> str:
    """One line for a zoo checkpoint that is not there: where it was looked for, and what to do."""
    where = f"${ZOO_VARIABLE} = {zoo_dir()}" if os.environ.get(ZOO_VARIABLE) else f"the zoo ({zoo_dir()})"
    return (f"{where} has no {twin}.pt for {name}; train it with `neurodeploy train-zoo --models {name}` or "
            f"point ${ZOO_VARIABLE} at a folder holding {name}/{twin}.pt")


def checkpoint_path(name: str, twin: str = "snn") -> Path:
    return zoo_dir() / name / f"{twin}.pt"


def nir_path(name: str) -> Path:
    return zoo_dir() / name / f"{name}.nir"


def read_card(name: str, twin: str) -> dict | None:
    p = checkpoint_path(name, twin).with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else None


def listing() -> list[dict]:
    """One row per zoo model: what ``neurodeploy models`` prints."""
    rows = []
    for name in ARCHITECTURES:
        cnn = build(name, "cnn", **ZOO_INPUT)
        snn_card, cnn_card = read_card(name, "snn"), read_card(name, "cnn")
        rows.append({
            "name": name, "family": family_of(name),
            "classes": ZOO_INPUT["num_classes"], "input": [ZOO_INPUT["in_channels"], 32, 32],
            "parameters": count_parameters(cnn),
            "cnn_macs": count_macs(cnn, (ZOO_INPUT["in_channels"], 32, 32)),
            "snn_checkpoint": checkpoint_path(name, "snn").exists(),
            "cnn_checkpoint": checkpoint_path(name, "cnn").exists(),
            "dataset": (snn_card or {}).get("dataset", ZOO_DATASET),
            "snn_test_accuracy": (snn_card or {}).get("test_accuracy"),
            "cnn_test_accuracy": (cnn_card or {}).get("test_accuracy"),
            "timesteps": (snn_card or {}).get("timesteps"),
        })
    return rows


# How the committed zoo was trained (`neurodeploy train-zoo` reproduces it): everything
# else is TrainConfig's defaults (AdamW, lr 2e-3, one-cycle, batch 64, T=4, seed 0).
# Every spiking twin starts from its trained CNN twin's weights ("cnn": the paper's
# CNN-to-SNN conversion) and is fine-tuned with surrogate gradients: trained from scratch
# for a few epochs, the deeper spiking twins (MnasNet) did not learn at all. The deeper
# twins fine-tune with batch 16: on mnist5k's 3,600 training images a batch of 64 gives
# only 57 optimiser steps per epoch, and ShuffleNetV2's spiking twin went from 0.821
# (2 epochs, batch 64) to 0.925 (4 epochs, batch 16) and 0.946 (6 epochs, batch 16).
# The last stage, "loihi", fine-tunes the spiking twin in place on Loihi's 8-bit weight
# grid with beta on Loihi's 12-bit decay (neurodeploy/loihi_aware.py), so that the Lava
# target runs the trained network; the card keeps the float stage's configuration under
# loihi_aware.started_from.
# Stages run in the order given (CNN first).
LOIHI = {"epochs": 2, "batch_size": 16, "lr": 3e-4, "init_from": "snn", "loihi_aware": True}
RECIPES = {
    "squeezenet": {"cnn": {"epochs": 3}, "snn": {"epochs": 2, "init_from": "cnn"}, "loihi": LOIHI},
    "pruned_squeezenet": {"cnn": {"epochs": 3}, "snn": {"epochs": 2, "init_from": "cnn"}, "loihi": LOIHI},
    # MnasNet's spiking twin trains a second cycle (8 epochs at lr 1e-3 from the first):
    # 0.915 -> 0.945 (float), 0.940 after the Loihi-aware stage (one cycle: 0.924)
    "mnasnet": {"cnn": {"epochs": 3, "batch_size": 16}, "snn": {"epochs": 12, "batch_size": 16, "init_from": "cnn"},
                "snn_again": {"epochs": 8, "batch_size": 16, "lr": 1e-3, "init_from": "snn"},
                "loihi": LOIHI},
    # MixNet's Loihi-aware stage trains on: 4 epochs at lr 1e-3 took it from 0.925 to 0.948
    # (the shared 2 epochs at 3e-4: 0.924)
    "mixnet": {"cnn": {"epochs": 3}, "snn": {"epochs": 10, "batch_size": 16, "init_from": "cnn"},
               "loihi": {**LOIHI, "epochs": 4, "lr": 1e-3}},
    "shufflenetv2": {"cnn": {"epochs": 3}, "snn": {"epochs": 6, "batch_size": 16, "init_from": "cnn"},
                     "loihi": LOIHI},
    "xception": {"cnn": {"epochs": 3}, "snn": {"epochs": 12, "batch_size": 16, "init_from": "cnn"},
                 "loihi": LOIHI},
}


def stage_twin(stage: str) -> str:
    """The twin a recipe stage trains: every stage after "snn" ("snn_again", "loihi")
    fine-tunes the spiking twin in place."""
    return "cnn" if stage == "cnn" else "snn"


def recipe_config(name: str, stage: str, **overrides):
    """The TrainConfig the zoo's recipe gives (``init_from: "cnn"`` / ``"snn"`` -> the zoo's checkpoint)."""
    from .train import TrainConfig
    r = dict(RECIPES[name][stage])
    if r.get("init_from") in ("cnn", "snn"):
        r["init_from"] = str(checkpoint_path(name, r["init_from"]))
    return TrainConfig(model=name, twin=stage_twin(stage), **{**r, **overrides})


def final_stage(name: str, twin: str) -> str:
    """The recipe stage that wrote ``<twin>.pt`` last."""
    return [s for s in RECIPES[name] if stage_twin(s) == twin][-1]
