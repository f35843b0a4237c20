"""Checkpoints and model cards: what a trained network is, and how to rebuild it.

A checkpoint is one ``torch.save`` file holding a plain dict:

    format       "neurodeploy-checkpoint/1"
    model        zoo name (e.g. "pruned_squeezenet")
    twin         "snn" | "cnn"
    arguments    the architecture's keyword arguments (num_classes, input_size, ...)
    neuron       beta, threshold, surrogate slope (spiking twin)
    timesteps    T the network was trained with
    state_dict   the weights
    card         the model card (dataset, split, training set-up, accuracy, ...)
    loihi_steps  (Loihi-aware models only) module name -> step of its weight grid

The card is also written beside it as JSON, so people and ``neurodeploy models``
can read it without torch.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from ..architectures import Twin, TwinModel, build
from ..errors import NeurodeployError
from ..fsutil import atomic_output
from ..ir.io import file_sha256 as sha256  # noqa: F401 - the checkpoint's identity in graph metadata

FORMAT = "neurodeploy-checkpoint/1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def save(path, model: TwinModel, card: dict, extra: dict | None = None) -> Path:
    path = Path(path)
    payload = {
        "format": FORMAT, "model": model.name, "twin": model.twin.kind, "arguments": model.arguments,
        "neuron": {"beta": model.twin.beta, "threshold": model.twin.threshold,
                   "surrogate_slope": model.twin.surrogate_slope},
        "timesteps": model.timesteps, "state_dict": model.state_dict(), "card": card, **(extra or {}),
    }
    steps = {n: m.loihi_step for n, m in model.named_modules() if getattr(m, "loihi_step", None) is not None}
    if steps:
        payload["loihi_steps"] = steps
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return path


def read(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise NeurodeployError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NeurodeployError(f"{path}: not a readable checkpoint ({type(e).__name__}); "
                               "was it truncated? Re-train or re-download it") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NeurodeployError(f"{path}: not a neurodeploy checkpoint (expected format {FORMAT})")
    return payload


def load(path, device="cpu", timesteps: int | None = None) -> TwinModel:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    payload = read(path)
    n = payload["neuron"]
    twin = Twin(payload["twin"], beta=n["beta"], threshold=n["threshold"], surrogate_slope=n["surrogate_slope"])
    model = build(payload["model"], twin, timesteps=timesteps or payload["timesteps"], **payload["arguments"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise NeurodeployError(f"{path}: weights do not match the {payload['model']} architecture "
                               f"it names ({detail})") from e
    modules = dict(model.named_modules())
    for name, step in payload.get("loihi_steps", {}).items():
        modules[name].loihi_step = float(step)
    model.card = payload.get("card", {})
    model.checkpoint_path = str(path)
    return model.to(device).eval()
