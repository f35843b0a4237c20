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
from ..fsutil import write_bytes
from ..ir.io import file_sha256 as sha256  # noqa: F401 - the checkpoint's identity in graph metadata

FORMAT = "neurodeploy-checkpoint/1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    write_bytes(path, data)


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
    buf = io.BytesIO()          # in memory first: torch.save on a full disk fails without saying why
    torch.save(payload, buf)
    # the checkpoint (which carries its own card) first, then the JSON copy of the card
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
    for key, kind in (("model", str), ("twin", str), ("arguments", dict), ("neuron", dict), ("state_dict", dict),
                      ("timesteps", int)):
        if not isinstance(payload.get(key), kind):
            raise NeurodeployError(f"{path}: a neurodeploy checkpoint without a valid '{key}' entry; was it "
                                   "written by another version? Re-train or re-export it")
    return payload


def describe(payload: dict) -> str:
    """'mixnet (snn, 10 classes, input 1x32x32)': what a checkpoint holds, in a few words."""
    a = payload.get("arguments", {})
    size = a.get("input_size")
    shape = f"{a.get('in_channels', '?')}x{size}x{size}" if size else "?"
    fires = f", fires {','.join(map(str, a['fires']))}" if a.get("fires") else ""
    twin = f"{payload['twin']}, " if payload.get("twin") else ""
    return f"{payload.get('model')} ({twin}{a.get('num_classes', '?')} classes, input {shape}{fires})"


def check_model(path, model: str) -> dict:
    """The checkpoint at ``path``, refused unless it holds zoo model ``model`` (``export
    --model M --checkpoint C`` used to write C's network under M's name)."""
    from ..architectures import check_name, family_of
    check_name(model)
    payload = read(path)
    if payload["model"] != model:
        same_family = payload["model"] in _known() and family_of(payload["model"]) == family_of(model)
        hint = (" (the same family: drop --model, or give the matching name)" if same_family else
                "; give the checkpoint of that model, or drop --model")
        raise NeurodeployError(f"{path} holds {describe(payload)}, not {model}{hint}")
    return payload


def _known() -> set:
    from ..architectures import ARCHITECTURES
    return set(ARCHITECTURES)


def check_weights_finite(path, state_dict: dict) -> None:
    """A checkpoint with NaN or infinite weights is broken (diverged training): refuse it
    here rather than export, prune or fine-tune it."""
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            n = int((~torch.isfinite(t)).sum())
            raise NeurodeployError(f"{path}: tensor {name} holds {n} NaN or infinite values; the checkpoint is "
                                   "broken (did training diverge?): re-train it")


def check_compatible(path, payload: dict, model, what: str = "--init-from") -> int:
    """Refuse to start ``model`` (a built TwinModel) from a checkpoint of another
    architecture, class count or input channels, or whose tensors do not fit: before,
    such a start silently kept no weights and trained from scratch. Returns how many
    tensors carry over."""
    from ..architectures import family_of
    src_model, name = payload["model"], model.name
    src, dst = payload.get("arguments", {}), model.arguments
    here = describe({"model": name, "arguments": dst})
    if src_model not in _known() or family_of(src_model) != family_of(name):
        raise NeurodeployError(f"{what} {path} holds {describe(payload)}, which cannot start {here}: the "
                               "architectures differ")
    diffs = [f"{k} {src.get(k)!r} there, {dst.get(k)!r} here" for k in ("num_classes", "in_channels", "fires")
             if src.get(k) != dst.get(k)]
    state = model.state_dict()
    for k, v in payload["state_dict"].items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            diffs.append(f"tensor {k} is {tuple(v.shape)} there, {tuple(state[k].shape)} here")
            break
    carried = sum(1 for k, v in payload["state_dict"].items() if k in state and tuple(state[k].shape) == tuple(v.shape))
    if not diffs and carried == 0:
        diffs.append("no tensor of the checkpoint fits")
    if diffs:
        raise NeurodeployError(f"{what} {path} holds {describe(payload)}, which cannot start {here}: "
                               + "; ".join(diffs))
    return carried


def load(path, device="cpu", timesteps: int | None = None) -> TwinModel:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    payload = read(path)
    check_weights_finite(path, payload["state_dict"])
    n = payload["neuron"]
    try:
        twin = Twin(payload["twin"], beta=n["beta"], threshold=n["threshold"], surrogate_slope=n["surrogate_slope"])
        model = build(payload["model"], twin, timesteps=timesteps or payload["timesteps"], **payload["arguments"])
    except (KeyError, TypeError, ValueError) as e:
        raise NeurodeployError(f"{path}: the checkpoint's architecture entries do not build a "
                               f"{payload['model']} ({type(e).__name__}: {e})") from None
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
