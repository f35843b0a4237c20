"""Differential runs: the same inputs through several targets, compared.

Targets:
  model  the original torch network, rebuilt from the checkpoint named in the
         graph's metadata (its eval-mode, deployed arithmetic)
  torch  the reference backend executing the NIR graph
  lava   the Lava / Loihi simulation (fixed point, input as 24-bit graded spikes and the
         finest integer state; ``lava-netx``: input as a bias and the weights' scale, as
         lava-dl netx runs it; ``lava-float`` for floats)
  onnx   the one-timestep ONNX export run T times in onnxruntime (zoo graphs)

The report gives, against the first target: prediction agreement, the largest
output difference, per-population spike-count differences (mean absolute
difference per sample, relative to the first target's count) and the first
population, in graph order, where the targets diverge; accuracy and macro-F1
per target where labels exist; synaptic-op totals side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .backends.base import RunResult
from .errors import NeurodeployError
from .graph.metadata import conventions_of

TARGET_NAMES = ("model", "torch", "lava", "lava-netx", "lava-float", "onnx")


def find_checkpoint_for_graph(graph, graph_path=None) -> Path | None:
    """The checkpoint a graph of ours names: at its recorded path, beside the graph, or in
    the zoo, whichever has the recorded sha256. None when there is none (or no metadata)."""
    from . import checkpoint, zoo
    conv = conventions_of(graph)
    if not conv.from_metadata or not conv.checkpoint:
        return None
    candidates = [Path(conv.checkpoint)]
    if graph_path is not None:
        candidates.append(Path(graph_path).parent / Path(conv.checkpoint).name)
    if conv.model:
        candidates.append(zoo.checkpoint_path(conv.model, "snn"))
    for c in candidates:
        if c.exists() and (conv.checkpoint_sha256 is None or checkpoint.sha256(c) == conv.checkpoint_sha256):
            return c
    return None


def load_model_for_graph(graph, graph_path: Path):
    """The torch network a graph of ours was exported from, checked by hash."""
    from . import checkpoint
    conv = conventions_of(graph)
    if not conv.from_metadata or not conv.checkpoint:
        raise NeurodeployError(f"{graph_path}: the graph names no checkpoint, so target 'model' cannot be "
                               "rebuilt (only graphs exported by neurodeploy can)")
    found = find_checkpoint_for_graph(graph, graph_path)
    if found is not None:
        return checkpoint.load(found, timesteps=conv.timesteps)
    raise NeurodeployError(f"{graph_path}: the checkpoint it was exported from ({conv.checkpoint}, sha256 "
                           f"{(conv.checkpoint_sha256 or '?')[:12]}) was not found; pass a graph exported from "
                           "a checkpoint that is present")


def run_model(model, x: np.ndarray, batch_size: int = 64) -> RunResult:
    """Run the torch network, recording per-sample spike counts of every LIF (named as in the graph)."""
    from .architectures.layers import LIF
    from .backends.base import RunCounters
    names = {m: n for n, m in model.named_modules() if isinstance(m, LIF)}
    counts: dict = {}

    def hook(mod, inp, out):
        T = model.timesteps
        counts.setdefault(names[mod], []).append(out.reshape(T, -1, out[0].numel()).sum(dim=(0, 2)))

    hooks = [m.register_forward_hook(hook) for m in names]
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                outs.append(model.forward_steps(torch.as_tensor(x[i:i + batch_size])))
    finally:
        for h in hooks:
            h.remove()
    spikes = {k: torch.cat(v).numpy() for k, v in counts.items()}
    return RunResult(outputs=torch.cat(outs, 1).numpy(), counters=RunCounters(len(x), model.timesteps, backend="model"),
                     population_spike_counts=spikes)


def run_target(target: str, graph, graph_path: Path, x: np.ndarray, timesteps=None, batch_size=64,
               device="auto", progress=None) -> RunResult:
    if target == "torch":
        from .backends import torch as torch_backend
        return torch_backend.compile(graph, device=device).run(x, timesteps, batch_size, progress=progress)
    if target == "model":
        return run_model(load_model_for_graph(graph, graph_path), x, batch_size)
    if target in ("lava", "lava-netx", "lava-float"):
        from .backends import lava
        program = lava.compile(graph_path, precision="float" if target == "lava-float" else "fixed",
                               route="netx" if target == "lava-netx" else "loihi2")
        return program.run(x, timesteps or conventions_of(graph).timesteps or 1)
    if target == "onnx":
        from .graph import onnx_export
        return onnx_export.run_onnx_for_graph(graph, graph_path, x, timesteps)
    raise NeurodeployError(f"unknown target {target!r}; choose from: {', '.join(TARGET_NAMES)}")


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Readout: argmax of the output summed over timesteps (the spike count)."""
    return outputs.sum(0).reshape(outputs.shape[1], -1).argmax(1)


def compare(results: dict, labels: np.ndarray | None, population_order: list) -> dict:
    from .train import macro_f1
    names = list(results)
    ref_name, ref = names[0], results[names[0]]
    ref_pred = predictions(ref.outputs)
    report = {"reference": ref_name, "samples": int(ref.outputs.shape[1]), "targets": {}}
    for name in names:
        r = results[name]
        pred = predictions(r.outputs)
        entry = {"agreement": float((pred == ref_pred).mean()),
                 "max_output_difference": float(np.abs(r.outputs - ref.outputs).max()),
                 "identical_outputs": bool(np.array_equal(r.outputs, ref.outputs)),
                 "seconds": round(float(r.seconds), 3)}
        if labels is not None:
            entry["accuracy"] = float((pred == labels).mean())
            num_classes = int(r.outputs.shape[-1])
            entry["macro_f1"] = macro_f1(labels, pred, num_classes)
        pops, first = {}, None
        for pop in population_order:
            a, b = ref.population_spike_counts.get(pop), r.population_spike_counts.get(pop)
            if a is None or b is None:
                continue
            diff = np.abs(np.asarray(b, float) - np.asarray(a, float))
            pops[pop] = {"reference_spikes_per_sample": float(np.mean(a)), "spikes_per_sample": float(np.mean(b)),
                         "mean_abs_difference": float(diff.mean()),
                         "relative_difference": float(diff.sum() / max(np.sum(a), 1.0)),
                         "max_difference": float(diff.max())}
            if first is None and diff.max() > 0:
                first = pop
        entry["populations"] = pops
        entry["first_divergent_population"] = first
        if r.counters.projections:
            entry["synaptic_ops_per_sample"] = r.counters.totals()
        if r.weight_quantisation is not None:
            entry["weight_quantisation"] = r.weight_quantisation
        if r.overflows is not None:
            entry["current_overflows"] = r.overflows
        report["targets"][name] = entry
    return report
