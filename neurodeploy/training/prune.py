"""Pruning: whole Fire modules out of SqueezeNet (the paper's method), or L1-norm channels.

Fire pruning builds the SqueezeNet with only the kept Fire modules, carries
over every tensor whose name and shape still fit (a kept Fire's expand convs
always fit; its squeeze conv fits when its input width did not change), and
fine-tunes. This is how the paper's pruned SqueezeNet (F4, F6, F8, F9) is made.

Channel pruning works on any model: for every convolution it zeroes the
output channels with the smallest L1 norm of their (BatchNorm-scaled)
weights, then fine-tunes with the mask held. Zeroed channels stay in the
tensors (no architecture surgery through concatenations, shuffles and
residual adds) but are zero in the exported graph, so the counters, which
count only nonzero weights, see the saving.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoint, distributed, zoo
from ..architectures import ARCHITECTURES, count_parameters, family_of
from ..architectures.layers import ConvBN
from ..errors import NeurodeployError
from .train import TrainConfig, train


def _source(model_name: str, from_checkpoint) -> dict:
    path = Path(from_checkpoint) if from_checkpoint else zoo.checkpoint_path(model_name, "snn")
    if not path.exists():
        raise NeurodeployError(f"no checkpoint to prune at {path}; train one with "
                               f"`neurodeploy train --model {model_name}` or pass --from")
    payload = checkpoint.read(path)
    if payload["model"] not in ARCHITECTURES or family_of(payload["model"]) != family_of(model_name):
        raise NeurodeployError(f"--from {path} holds {checkpoint.describe(payload)}, not a {model_name}: give "
                               f"--model {payload['model']} or a {model_name} checkpoint")
    return {"path": path, "payload": payload, "model": checkpoint.load(path)}


def _config_from_card(payload, **changes) -> TrainConfig:
    cfg = dict(payload["card"].get("config") or {})
    cfg.update(changes)
    return TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})


def carry_weights(src_state: dict, dst_state: dict) -> tuple[dict, list, list]:
    """dst state with every src tensor whose name and shape fit; (state, carried, skipped)."""
    dst = dict(dst_state)
    carried, skipped = [], []
    for k, v in dst.items():
        if k in src_state and src_state[k].shape == v.shape:
            dst[k] = src_state[k].clone()
            carried.append(k)
        else:
            skipped.append(k)
    return dst, carried, skipped


def _fire_named_state(model) -> dict:
    """State dict keyed by Fire number instead of Sequential position, so pruned and full models line up."""
    from ..architectures.squeezenet import Fire
    names = {}
    fire_numbers = sorted(model.arguments["fires"])
    fires = [n for n, m in model.named_modules() if isinstance(m, Fire)]
    for number, prefix in zip(fire_numbers, fires):
        names[prefix + "."] = f"fire{number}."
    state = {}
    for k, v in model.state_dict().items():
        for prefix, new in names.items():
            if k.startswith(prefix):
                k = new + k[len(prefix):]
                break
        state[k] = v
    return state


def prune_fires(model_name: str, keep, from_checkpoint, out_dir, epochs=3, lr=1e-3, device="auto", limit=None,
                progress=None, sync_bn=False) -> dict:
    if model_name not in ("squeezenet", "pruned_squeezenet"):
        raise NeurodeployError(f"--keep-fires prunes SqueezeNet's Fire modules; {model_name} has none "
                               "(use --channel-ratio)")
    src = _source(model_name, from_checkpoint)
    before_model = src["model"]
    before = {"parameters": count_parameters(before_model), "test_accuracy": src["payload"]["card"].get("test_accuracy"),
              "fires": before_model.arguments["fires"]}
    cfg = _config_from_card(src["payload"], model="squeezenet", epochs=epochs, lr=lr, device=device, limit=limit,
                            arguments={"fires": sorted(int(k) for k in keep)})
    from .train import build_from_config
    info_args = before_model.arguments
    pruned = build_from_config(cfg, info_args["num_classes"], info_args["in_channels"], info_args["input_size"])
    src_named = _fire_named_state(before_model)
    dst_named = _fire_named_state(pruned)
    back = dict(zip(dst_named.keys(), pruned.state_dict().keys()))
    filled, carried, skipped = carry_weights(src_named, dst_named)
    init_state = {back[k]: v for k, v in filled.items()}
    card = train(cfg, out_dir, progress=progress, init_state=init_state, sync_bn=sync_bn)
    return {"method": "fire", "kept_fires": cfg.arguments["fires"], "source": str(src["path"]),
            "before": before, "after": {"parameters": card["parameters"], "test_accuracy": card["test_accuracy"],
                                        "test_macro_f1": card["test_macro_f1"]},
            "carried_tensors": len(carried), "reinitialised_tensors": skipped,
            "checkpoint": str(Path(out_dir) / f"{cfg.twin}.pt")}


def l1_channel_masks(model, ratio: float) -> dict:
    """Per ConvBN: a 0/1 mask over output channels dropping the ``ratio`` smallest by L1 norm.

    The norm is taken on the deployed (BatchNorm-folded) weights, because that
    is what each channel contributes at inference. Depthwise convs are left
    whole (one channel per group: dropping one breaks its consumer's input).
    """
    if not 0.0 < ratio < 1.0:
        raise NeurodeployError(f"--channel-ratio must be between 0 and 1, got {ratio}")
    masks = {}
    for name, m in model.named_modules():
        if isinstance(m, ConvBN) and m.conv.groups == 1 and m.conv.out_channels > 1:
            w, _ = m.deployed_parameters()
            norms = w.abs().reshape(w.shape[0], -1).sum(1)
            drop = int(round(ratio * len(norms)))
            mask = torch.ones(len(norms))
            if drop:
                mask[torch.argsort(norms)[:drop]] = 0.0
            masks[name] = mask
    return masks


def apply_masks(model, masks: dict):
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            m = modules[name]
            mask = mask.to(m.conv.weight.device)
            m.conv.weight.mul_(mask.view(-1, 1, 1, 1))
            if m.conv.bias is not None:
                m.conv.bias.mul_(mask)
            if m.bn is not None:
                m.bn.weight.mul_(mask)
                m.bn.bias.mul_(mask)


def nonzero_parameters(model) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def prune_channels(model_name: str, ratio: float, from_checkpoint, out_dir, epochs=3, lr=1e-3, device="auto",
                   limit=None, progress=None, sync_bn=False) -> dict:
    src = _source(model_name, from_checkpoint)
    model = src["model"]
    before = {"parameters": nonzero_parameters(model), "test_accuracy": src["payload"]["card"].get("test_accuracy")}
    masks = l1_channel_masks(model, ratio)
    apply_masks(model, masks)
    cfg = _config_from_card(src["payload"], epochs=epochs, lr=lr, device=device, limit=limit)
    card = train(cfg, out_dir, progress=progress, init_state=model.state_dict(),
                 after_step=lambda m: apply_masks(m, masks), sync_bn=sync_bn)
    # (under torchrun the checkpoint is rank 0's: it counts, and tells the others)
    after = distributed.from_main(lambda: nonzero_parameters(checkpoint.load(Path(out_dir) / f"{cfg.twin}.pt")))
    return {"method": "l1-channels", "ratio": ratio, "source": str(src["path"]), "before": before,
            "after": {"parameters": after, "test_accuracy": card["test_accuracy"],
                      "test_macro_f1": card["test_macro_f1"]},
            "pruned_convs": len(masks), "checkpoint": str(Path(out_dir) / f"{cfg.twin}.pt"),
            "config": asdict(cfg)}
