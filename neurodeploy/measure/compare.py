"""Differential runs compared: the same inputs through several backends
(:mod:`neurodeploy.backends`: model, torch, lava, lava-netx, lava-float, onnx).

The report gives, against the first target: prediction agreement, the largest
output difference, per-population spike-count differences (mean absolute
difference per sample, relative to the first target's count) and the first
population, in graph order, where the targets diverge; accuracy and macro-F1
per target where labels exist; synaptic-op totals side by side.
"""
from __future__ import annotations

import numpy as np

from .metrics import accuracy, macro_f1


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Readout: argmax of the output summed over timesteps (the spike count)."""
    return outputs.sum(0).reshape(outputs.shape[1], -1).argmax(1)


def compare(results: dict, labels: np.ndarray | None, population_order: list) -> dict:
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
            entry["accuracy"] = accuracy(labels, pred)
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
