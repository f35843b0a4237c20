"""Surrogate-gradient training of the zoo's twins, with checkpoints, cards and resume.

Loss: rate-coded cross-entropy. The spiking twin's score for class k is its
output summed over the T timesteps (the spike count of the last population,
averaged over space where the architecture pools it), and the loss is
cross-entropy on those counts; the CNN twin uses its logits. Gradients through
spikes use the arctan surrogate (:mod:`neurodeploy.kernels.dynamics`).

Model selection: the best epoch on a held-out validation slice of the
training split (seeded, never the test split); test accuracy and macro-F1
are measured once on the test split for the card. Everything is seeded; on
the CPU two runs with the same arguments give the same weights.

Resume: after every epoch ``<twin>.last.pt`` in the output folder holds the
model, optimiser, schedule, the best so far and the random generators' states
(written atomically); a new run with the same arguments continues from it and ends
with the same weights as a run that was never interrupted (tested with a real
SIGTERM). A failed run that got through no epoch leaves no output folder behind.

Data-parallel: started by torchrun, every process runs this loop on its share of each
batch under DistributedDataParallel (:mod:`neurodeploy.training.distributed`); the steps
are those of one process with the same (global) ``batch_size``, rank 0 alone writes,
and a resume state of any number of processes resumes with any other.
"""
from __future__ import annotations

import io
import math
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, data, distributed
from ..architectures import Twin, TwinModel, build, count_macs, count_parameters
from ..errors import NeurodeployError
from ..fsutil import write_bytes
from ..measure.metrics import macro_f1


@dataclass
class TrainConfig:
    model: str
    dataset: str = "mnist5k"
    twin: str = "snn"
    timesteps: int = 4
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    input_size: int | None = None
    val_fraction: float = 0.1
    augment: bool = False
    beta: float = 0.9
    threshold: float = 1.0
    surrogate_slope: float = 2.0
    arguments: dict = field(default_factory=dict)   # architecture extras, e.g. fires
    limit: int | None = None                         # train on the first N samples (quick runs, tests)
    init_from: str | None = None                     # start from this checkpoint's weights (e.g. the CNN twin)
    loihi_aware: bool = False                        # BatchNorm frozen, weights on Loihi's grid (loihi_aware.py)


def check_config(cfg: TrainConfig) -> None:
    """The options of a training run, checked before any data is read (the command checks
    the same options with the same messages)."""
    from ..architectures import check_name, family_of
    from ..validation import DEVICES, TWINS, at_least, choice, fraction, optional_at_least, positive
    check_name(cfg.model)
    choice("--twin", cfg.twin, TWINS)
    choice("--device", cfg.device, DEVICES)
    at_least("--timesteps", cfg.timesteps)
    at_least("--epochs", cfg.epochs)
    at_least("--batch-size", cfg.batch_size)
    optional_at_least("--limit", cfg.limit)
    at_least("--seed", cfg.seed, 0)
    optional_at_least("input_size", cfg.input_size)
    positive("--lr", cfg.lr)
    fraction("weight_decay", cfg.weight_decay)
    fraction("val_fraction", cfg.val_fraction, low_open=True, high_open=True)
    fraction("beta", cfg.beta, high_open=True)
    positive("threshold", cfg.threshold)
    positive("surrogate_slope", cfg.surrogate_slope)
    if not isinstance(cfg.arguments, dict):
        raise NeurodeployError(f"arguments must be a mapping, got {type(cfg.arguments).__name__}")
    if "fires" in cfg.arguments:
        if family_of(cfg.model) != "squeezenet":
            raise NeurodeployError(f"--fires chooses SqueezeNet's Fire modules; {cfg.model} has none")
        fires = cfg.arguments["fires"]
        if (not isinstance(fires, (list, tuple)) or not fires or len(set(fires)) != len(fires)
                or not all(isinstance(f, int) and 2 <= f <= 9 for f in fires)):
            raise NeurodeployError(f"--fires must name distinct Fire modules among 2..9, got {fires!r}")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NeurodeployError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise NeurodeployError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def evaluate(model: TwinModel, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100,
             device="cpu", world: distributed.World | None = None) -> dict:
    """Accuracy and macro-F1 on (x, y); with ``world``, each rank predicts its share and
    all get every prediction."""
    model.eval()
    mine = world.share(x) if world is not None else x
    preds = [torch.zeros(0, dtype=torch.int64)]
    for i in range(0, len(mine), batch_size):
        preds.append(model(mine[i:i + batch_size].to(device)).argmax(1).cpu())
    pred = torch.cat(preds)
    pred = (world.gather_shares(pred, len(x)) if world is not None else pred).numpy()
    truth = y.numpy()
    return {"accuracy": float((pred == truth).mean()),
            "macro_f1": macro_f1(truth, pred, int(model.arguments["num_classes"])),
            "samples": int(len(truth))}


def code_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def build_from_config(cfg: TrainConfig, num_classes: int, channels: int, size: int) -> TwinModel:
    twin = Twin(cfg.twin, beta=cfg.beta, threshold=cfg.threshold, surrogate_slope=cfg.surrogate_slope)
    return build(cfg.model, twin, num_classes=num_classes, input_size=size, in_channels=channels,
                 timesteps=cfg.timesteps, **cfg.arguments)


def _transfer_state(source: dict, model: TwinModel) -> dict:
    """The model's state with every tensor of ``source`` whose name and shape fit.

    This is how a spiking twin starts from its trained CNN twin (the paper's
    CNN-to-SNN conversion, then surrogate-gradient fine-tuning): both twins come
    from one definition, so their weights line up by name; layers that exist in
    one twin only (squeeze-excitation) are skipped.
    """
    state = model.state_dict()
    for k, v in source.items():
        if k in state and state[k].shape == v.shape:
            state[k] = v.clone()
    return state


def _split_train_val(n: int, fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train(cfg: TrainConfig, out_dir, progress=None, init_state: dict | None = None,
          after_step=None, sync_bn: bool = False) -> dict:
    """Train one twin; writes ``<out>/<twin>.pt`` (+ .json card) and returns the card.

    progress: an optional ``rich.progress.Progress``. init_state: weights to
    start from (pruning carries weights over this way). after_step: called
    with the model after every optimiser step (pruning re-applies its masks).
    sync_bn: started by torchrun, normalise with the statistics of the whole
    batch rather than of each process's share (no effect in one process).
    """
    out_dir = Path(out_dir)
    check_config(cfg)
    created = not out_dir.exists()
    try:
        with distributed.failing_together():
            return _train(cfg, out_dir, progress, init_state, after_step, sync_bn)
    except BaseException:
        if distributed.is_main() and created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()      # nothing to resume from: leave no empty folder behind
        raise


def _read_resume_state(path: Path) -> bytes | None:
    """The bytes of the resume state at ``path`` (rank 0's, sent to the other ranks), if any."""
    if not path.exists():
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise NeurodeployError(f"{path}: cannot read the resume state ({e.strerror or type(e).__name__}); "
                               "delete it to start over") from None


def _train(cfg: TrainConfig, out_dir: Path, progress, init_state, after_step, sync_bn) -> dict:
    if cfg.loihi_aware:     # the decay goes on Loihi's 12-bit grid with the weights (loihi_aware.py)
        from .loihi_aware import loihi_decay
        cfg = replace(cfg, beta=loihi_decay(cfg.beta))
    device = resolve_device(cfg.device)
    world = distributed.join(device)      # None: one process, as without torchrun
    if world is not None:
        device = world.device
        if cfg.batch_size < 2 * world.size:
            raise NeurodeployError(f"--batch-size {cfg.batch_size} is the batch of all {world.size} processes "
                                   f"together; give at least {2 * world.size} (two samples per process)")
    info = data.get_info(cfg.dataset)
    size = cfg.input_size or (32 if cfg.dataset == "mnist5k" else info.image_size)
    start_from = None
    if cfg.init_from and init_state is None:    # refused before any data is read
        start_from = checkpoint.read(cfg.init_from)
        checkpoint.check_weights_finite(cfg.init_from, start_from["state_dict"])
        with torch.random.fork_rng(devices=[]):  # a probe: the run's own initialisation is unchanged
            checkpoint.check_compatible(cfg.init_from, start_from,
                                        build_from_config(cfg, info.num_classes, info.channels, size))
    torch.manual_seed(cfg.seed)
    x_all, y_all = data.load_tensors(cfg.dataset, "train", size, cfg.data_dir, limit=cfg.limit)
    x_test, y_test = data.load_tensors(cfg.dataset, "test", size, cfg.data_dir)
    tr, va = _split_train_val(len(y_all), cfg.val_fraction, cfg.seed)
    if len(tr) == 0 or len(va) == 0:
        raise NeurodeployError(f"{len(y_all)} training samples (--limit {cfg.limit}) leave {len(tr)} to train on and "
                               f"{len(va)} to validate on; give at least {math.ceil(1.5 / cfg.val_fraction)}")
    if world is not None and len(tr) < 2 * world.size:
        raise NeurodeployError(f"{len(tr)} samples to train on cannot be shared by {world.size} processes "
                               "(two each at least); train on more (--limit) or with fewer processes")
    x_tr, y_tr, x_va, y_va = x_all[tr], y_all[tr], x_all[va], y_all[va]

    model = build_from_config(cfg, info.num_classes, info.channels, size).to(device)
    init_card = None
    if cfg.init_from and init_state is None:
        init_state, init_card = _transfer_state(start_from["state_dict"], model), start_from["card"]
    if init_state is not None:
        model.load_state_dict(init_state)
    if cfg.loihi_aware:
        if cfg.twin != "snn":
            raise NeurodeployError("--loihi-aware fine-tunes a spiking twin; it has no meaning for the CNN twin")
        from . import loihi_aware
        accuracy_before = (evaluate(model, x_test, y_test, device=device, world=world)["accuracy"]
                           if cfg.init_from else None)
        on_grid = loihi_aware.OnTheGrid(model, (info.channels, size, size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(y_tr) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    main = world is None or world.main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / f"{cfg.twin}.last.pt"
    start_epoch, best, history, gen_state = 0, {"val_accuracy": -1.0}, [], None
    saved = distributed.from_main(lambda: _read_resume_state(last_path))
    if saved is not None:
        try:   # weights_only: tensors, numbers, strings and containers; no code from the file runs
            state = torch.load(io.BytesIO(saved), map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch.load raises many types on foreign files
            raise NeurodeployError(f"{last_path}: not a resume state this toolkit wrote ({type(e).__name__}); "
                                   "delete it to start over") from None
        if not isinstance(state, dict):
            raise NeurodeployError(f"{last_path}: not a resume state this toolkit wrote; delete it to start over")
        if state.get("config") == asdict(cfg):
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                start_epoch, best, history = int(state["epoch"]), state["best"], state["history"]
                torch.set_rng_state(state["rng"])
                if device.type == "cuda" and state.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state_all(state["cuda_rng"])
                gen_state = state.get("generator")
            except (KeyError, RuntimeError, ValueError, TypeError) as e:
                raise NeurodeployError(f"{last_path}: an incomplete or foreign resume state ({type(e).__name__}); "
                                       "delete it to start over") from None

    gen = torch.Generator().manual_seed(cfg.seed)
    if start_epoch and gen_state is not None:
        gen.set_state(gen_state)            # data order and augmentation draws continue exactly
    else:
        for _ in range(start_epoch):        # (resume states without it) replay the data order
            torch.randperm(len(y_tr), generator=gen)
    net = model                           # what the steps run: the model, or DDP around it
    if world is not None:
        if sync_bn:
            model = distributed.synchronise_batchnorm(model, world)
        net = distributed.parallel(model, world)
    task = progress.add_task(f"{cfg.model}/{cfg.twin}", total=cfg.epochs * steps_per_epoch,
                             completed=start_epoch * steps_per_epoch, status="") if progress else None
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        order = torch.randperm(len(y_tr), generator=gen)
        seen, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            if cfg.augment:     # (every rank draws the whole batch's crops: the generator stays the run's)
                xb = data.augment_batch(xb, padding=size // 8, flip=info.flip, generator=gen,
                                        fill=info.zero_level)
            if world is not None:
                batch = len(yb)
                if batch < 2 * world.size:   # an epoch's last few samples: too few to share
                    if progress:
                        progress.update(task, advance=1)
                    continue
                xb, yb = world.share(xb), world.share(yb)
            xb, yb = xb.to(device), yb.to(device)
            scores = net(xb)
            loss = F.cross_entropy(scores, yb)
            step_loss, step_correct, step_seen = loss.item() * len(yb), int((scores.argmax(1) == yb).sum()), len(yb)
            if world is not None:   # the whole batch's figures; DDP averages the shares' gradients
                step_loss, step_correct, step_seen = world.sum([step_loss, step_correct, step_seen])
                loss = loss * (len(yb) * world.size / batch)
            if not math.isfinite(step_loss):
                raise NeurodeployError(f"training {cfg.model}/{cfg.twin} diverged: loss is {step_loss / step_seen} "
                                       f"at epoch {epoch + 1}; lower --lr (now {cfg.lr}) or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            seen += int(step_seen)
            correct += int(step_correct)
            loss_sum += step_loss
            if progress:
                progress.update(task, advance=1, status=f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} "
                                                         f"acc {correct / seen:.3f}")
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:   # a spiking twin's loss can stay finite while its weights are NaN (NaN never spikes)
            raise NeurodeployError(f"training {cfg.model}/{cfg.twin} diverged: {len(bad)} weight tensors hold "
                                   f"NaN/inf after epoch {epoch + 1} (first: {bad[0]}); lower --lr (now {cfg.lr})")
        val = evaluate(model, x_va, y_va, device=device, world=world)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "val_accuracy": val["accuracy"]})
        if val["accuracy"] > best["val_accuracy"]:
            best = {"val_accuracy": val["accuracy"], "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if main:
            buf = io.BytesIO()   # in memory, then one atomic write: a crash, a signal or a full disk
            torch.save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1, "best": best, "history": history,
                        "rng": torch.get_rng_state(), "generator": gen.get_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}, buf)
            write_bytes(last_path, buf.getvalue())   # mid-write leaves the previous resume state
        if progress:
            progress.update(task, status=f"epoch {epoch + 1}/{cfg.epochs} val acc {val['accuracy']:.3f}")

    model.load_state_dict(best["state"])
    if cfg.loihi_aware:
        on_grid.freeze()
    test = evaluate(model, x_test, y_test, device=device, world=world)
    cnn_twin = build_from_config(TrainConfig(**{**asdict(cfg), "twin": "cnn"}), info.num_classes, info.channels, size)
    card = {
        "model": cfg.model, "twin": cfg.twin, "architecture": model.arguments,
        "dataset": cfg.dataset, "input_shape": [info.channels, size, size],
        "split": {"train": int(len(tr)), "validation": int(len(va)), "test": int(len(y_test)),
                  "validation_rule": f"seeded {cfg.val_fraction:.0%} of the train split (numpy default_rng({cfg.seed}))"},
        "timesteps": model.timesteps,
        "neuron": ({"type": "LIF", "beta": cfg.beta, "threshold": cfg.threshold, "reset": "zero",
                    "surrogate": f"atan(slope={cfg.surrogate_slope})", "encoding": "direct",
                    "readout": "output summed over timesteps (spike count of the last population)"}
                   if cfg.twin == "snn" else {"type": "ReLU"}),
        "optimiser": {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size},
        "schedule": "one-cycle (15% warm-up, cosine decay)", "epochs": cfg.epochs, "best_epoch": best["epoch"],
        "augment": cfg.augment, "seed": cfg.seed, "device": str(device),
        "validation_accuracy": best["val_accuracy"],
        "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
        "parameters": count_parameters(model), "cnn_macs": count_macs(cnn_twin, (info.channels, size, size)),
        "history": history, "train_seconds": round(time.time() - t0, 1), "code_commit": code_commit(),
        "notes": ("evaluated with deployed arithmetic: BatchNorm folded, weights snapped to the exact grid"
                  if cfg.twin == "snn" else "standard eval-mode BatchNorm"),
        "config": asdict(cfg),
    }
    if cfg.loihi_aware:
        card["loihi_aware"] = {
            "weights": "on the Loihi 8-bit grid of their population, BatchNorm frozen (neurodeploy/loihi_aware.py)",
            "test_accuracy_before": accuracy_before,
            "started_from": init_card.get("config") if init_card else None}
    if world is not None:
        card["distributed"] = {"processes": world.size, "backend": world.backend,
                               "batch_per_process": -(-cfg.batch_size // world.size),
                               "batchnorm": ("frozen (Loihi-aware)" if cfg.loihi_aware else
                                             "synchronised across processes" if sync_bn else "per process")}
    model.name = cfg.model
    if main:
        checkpoint.save(out_dir / f"{cfg.twin}.pt", model, card)
        last_path.unlink(missing_ok=True)
    distributed.barrier()     # no rank returns before the checkpoint exists
    return card
