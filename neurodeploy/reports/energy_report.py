"""``neurodeploy energy``: measure counts on real inputs, price them per target, CNN twin beside it.

Counts come from running the graph (torch reference by default, or inside the
Lava simulation with ``--backend lava``) or from a counters JSON written by
``neurodeploy run --save-counts`` (refused if it belongs to another graph).
The CNN twin's MACs come from the architecture named in the graph's metadata
(the very CNN the spiking twin was made from); for graphs of other tools,
from the dense op count of the graph (every synapse, one timestep).
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import backends
from ..backends.model import find_checkpoint
from ..errors import NeurodeployError
from ..ir.conventions import conventions_of
from ..ir.counters import RunCounters, neurobench_report
from ..ir.io import file_sha256, read_graph
from ..measure import energy as en
from ..measure.inputs import Inputs


def cnn_twin_macs_for(graph, counters: RunCounters, graph_path=None) -> tuple[float, str]:
    conv = conventions_of(graph)
    found = find_checkpoint(graph, graph_path)
    if found is not None and conv.model:
        from ..architectures import build, count_macs
        from ..training.checkpoint import read
        cnn = build(conv.model, "cnn", **read(found)["arguments"])
        return float(count_macs(cnn, tuple(conv.input_shape))), f"CNN twin of {conv.model} (architecture)"
    return float(en.cnn_twin_macs(counters)), "dense synaptic ops of the graph per timestep"


def energy_report(file: Path, targets: list, inputs: Inputs | None = None, counts_file=None, backend="torch",
                  device="auto", timesteps=None, dt=None, graph=None, counters: RunCounters | None = None) -> dict:
    """Price the counts of a run of ``file`` on ``backend`` with ``inputs`` (or the counts
    saved in ``counts_file``) on each hardware target. ``graph``: the file's graph, when the
    caller has read it already; ``counters``: the counts of a run of it on ``backend`` that
    the caller made already (a sweep's validation run), instead of running it again."""
    file = Path(file)
    gpu_energy = None
    graph = read_graph(file) if graph is None else graph
    sha = file_sha256(file)
    names = targets or ["cmos45nm"]
    loaded = [en.load_target(t) for t in names]
    if counts_file:
        try:
            counters = RunCounters.from_dict(json.loads(Path(counts_file).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise NeurodeployError(f"{counts_file}: not a counters JSON written by `neurodeploy run "
                                   f"--save-counts` ({type(e).__name__}: {e})") from e
        en.check_graph(counters, sha)
        source = str(counts_file)
    elif counters is not None:
        counters.graph_sha256 = sha
        source = f"measured on {backend}"
    else:
        program = backends.compile(backend, graph, source=file, device=device, dt=dt)
        gpu = getattr(program, "device", None)
        if any(t.name == "gpu" for t in loaded) and gpu is not None and gpu.type == "cuda":
            # the GPU row becomes a measurement: NVML's energy counter around this very run
            import torch
            from ..measure.gpu_energy import measure
            result, gpu_energy = measure(lambda: program.run(inputs.x, timesteps), gpu.index or 0,
                                         synchronize=torch.cuda.synchronize)
            counters = result.counters
        else:
            counters = program.run(inputs.x, timesteps).counters
        counters.graph_sha256 = sha
        source = f"measured on {backend}"
    cnn_macs, cnn_source = cnn_twin_macs_for(graph, counters, file)
    # the CNN twin runs on hardware that runs CNNs: the 45 nm MAC model and the GPU estimate
    cnn_j = en.cnn_energy(cnn_macs, "cmos45nm")
    cnn_twin = {"cmos45nm": cnn_j, "gpu": en.cnn_energy(cnn_macs, "gpu")}
    rows = []
    for t in loaded:
        measured = gpu_energy.above_idle_j if gpu_energy is not None and t.name == "gpu" else None
        rep = en.price(counters, t, graph_sha256=sha, measured_joules=measured)
        # memory-aware estimate only where the target prices memory ([memory]), not repeated per row
        mem = en.memory_aware(counters, t, cnn_macs=cnn_macs).to_dict() if t.memory else None
        rows.append({"target": t.name, "description": t.description, "kind": t.kind,
                     "energy_per_inference_j": rep.joules, "dynamic_j": rep.joules, "cnn_energy_j": cnn_j,
                     "cnn_over_snn": en.energy_ratio(cnn_j, rep.joules),
                     "cnn_gpu_over_snn": en.energy_ratio(cnn_twin["gpu"], rep.joules),
                     **hardware_columns(graph, t, counters, rep.joules),
                     "breakdown": rep.to_dict(), "memory_aware": mem})
    return {"file": str(file), "graph_sha256": sha, "backend": backend, "counts": source,
            "inputs": inputs.source if inputs is not None and not counts_file else source,
            "samples": counters.samples,
            "timesteps": counters.timesteps, "counts_per_sample": counters.totals(),
            "neurobench": neurobench_report(counters, graph),
            "cnn_macs": cnn_macs, "cnn_macs_source": cnn_source, "cnn_twin_j": cnn_twin, "targets": rows,
            "gpu_energy_measured": gpu_energy.to_dict() if gpu_energy is not None else None}


def hardware_columns(graph, target, counters, dynamic_j: float) -> dict:
    """Static energy, total, latency and EDP of one inference on a chip target (measure/mapping.py);
    None where the target is an operation-count model without cores (cmos45nm, gpu)."""
    from ..measure import mapping
    blank = {"static_j": None, "total_j": dynamic_j, "latency_s": None, "edp_js": None, "mapping": None}
    if "mapping" not in target.raw:
        return blank
    try:
        cost = mapping.hardware_cost(graph, target, counters, dynamic_j)
    except NeurodeployError as e:
        return {**blank, "mapping": {"error": str(e)}}
    lat = cost["latency"]
    return {"static_j": cost["static_j"], "total_j": cost["total_j"], "latency_s": lat["inference_s"],
            "edp_js": cost["edp_js"],
            "mapping": {"fits": cost["fits"], "verdict": cost["verdict"], "cores": cost["cores"],
                        "chips": cost["chips"], "latency": lat, "static_power_w": cost["static_power_w"],
                        "static_scope": cost["static_scope"], "static_source": cost["static_source"]}}
