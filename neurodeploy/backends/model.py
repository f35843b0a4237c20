"""Backend ``model``: the torch network a graph was exported from, run as it was trained.

A graph exported by neurodeploy names its checkpoint (path and sha256) in its
metadata; this backend finds it (at the recorded path, beside the graph, or in the
zoo, whichever has the recorded hash), rebuilds the network and runs its eval-mode,
deployed arithmetic, recording every LIF population's spikes per sample under the
same names the graph uses. It is the reference that ``validate --targets
model,torch`` holds the exported graph to: the one backend that reads an
architecture, because that is what it runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import NeurodeployError
from ..ir.conventions import conventions_of
from ..ir.counters import RunCounters, RunResult
from .base import Support


def find_checkpoint(graph, source: Optional[Path] = None) -> Optional[Path]:
    """The checkpoint a graph of ours names, where its hash matches; None when there is
    none (or the graph has no metadata)."""
    from ..training import checkpoint, zoo
    conv = conventions_of(graph)
    if not conv.from_metadata or not conv.checkpoint:
        return None
    candidates = [Path(conv.checkpoint)]
    if source is not None:
        candidates.append(Path(source).parent / Path(conv.checkpoint).name)
    if conv.model:
        candidates.append(zoo.checkpoint_path(conv.model, "snn"))
    for c in candidates:
        if c.exists() and (conv.checkpoint_sha256 is None or checkpoint.sha256(c) == conv.checkpoint_sha256):
            return c
    return None


def load_network(graph, source: Optional[Path] = None):
    """The torch network the graph was exported from, checked by hash."""
    from ..training import checkpoint
    conv = conventions_of(graph)
    where = source or "the graph"
    if not conv.from_metadata or not conv.checkpoint:
        raise NeurodeployError(f"{where}: the graph names no checkpoint, so backend 'model' cannot rebuild its "
                               "network (only graphs exported by neurodeploy can)")
    found = find_checkpoint(graph, source)
    if found is None:
        raise NeurodeployError(f"{where}: the checkpoint it was exported from ({conv.checkpoint}, sha256 "
                               f"{(conv.checkpoint_sha256 or '?')[:12]}) was not found; pass a graph exported "
                               "from a checkpoint that is present")
    return checkpoint.load(found, timesteps=conv.timesteps)


def run_network(model, x: np.ndarray, batch_size: int = 64, progress=None) -> RunResult:
    """Run a spiking twin, recording per-sample spike counts of every LIF (named as in the graph)."""
    from ..architectures.layers import LIF
    names = {m: n for n, m in model.named_modules() if isinstance(m, LIF)}
    counts: dict = {}

    def hook(mod, inp, out):
        T = model.timesteps
        counts.setdefault(names[mod], []).append(out.reshape(T, -1, out[0].numel()).sum(dim=(0, 2)))

    hooks = [m.register_forward_hook(hook) for m in names]
    outs = []
    task = progress.add_task("model", total=len(x)) if progress else None
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                outs.append(model.forward_steps(torch.as_tensor(x[i:i + batch_size])))
                if progress:
                    progress.update(task, advance=len(outs[-1][0]))
    finally:
        for h in hooks:
            h.remove()
    spikes = {k: torch.cat(v).numpy() for k, v in counts.items()}
    return RunResult(outputs=torch.cat(outs, 1).numpy(),
                     counters=RunCounters(len(x), model.timesteps, backend="model"),
                     population_spike_counts=spikes)


class ModelProgram:
    def __init__(self, network):
        self.network = network

    def run(self, inputs, timesteps=None, batch_size: int = 64, progress=None) -> RunResult:
        from ..validation import run_arguments, samples_in
        run_arguments(timesteps, batch_size)
        x = np.asarray(inputs, np.float32)
        samples_in(len(x) if x.ndim else 0)
        if x.ndim != len(self.network.card.get("input_shape", x.shape[1:])) + 1:
            raise NeurodeployError("backend 'model' takes static inputs (N, ...) only: the zoo's networks "
                                   "see the same image at every timestep")
        if timesteps is not None and int(timesteps) != self.network.timesteps:
            self.network.timesteps = int(timesteps)
        return run_network(self.network, x, batch_size, progress)


def compile(graph, *, source: Optional[Path] = None, device: str = "cpu", dt=None, **_) -> ModelProgram:
    network = load_network(graph, source)
    if device not in ("auto", "cpu"):
        from .torch import resolve_device
        network = network.to(resolve_device(device))
    return ModelProgram(network)


def supports(graph) -> Support:
    conv = conventions_of(graph)
    if not conv.from_metadata or not conv.checkpoint:
        return Support(False, "the graph names no source network (only graphs exported by neurodeploy do)")
    return Support(True, f"rebuilds {conv.model or 'the network'} from {Path(conv.checkpoint).name}")
