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
from ..ir.counters import RunCounters
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
                  device="auto", timesteps=None, dt=None) -> dict:
    """Price the counts of a run of ``file`` on ``backend`` with ``inputs`` (or the counts
    saved in ``counts_file``) on each hardware target."""
    file = Path(file)
    graph = read_graph(file)
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
    else:
        program = backends.compile(backend, graph, source=file, device=device, dt=dt)
        counters = program.run(inputs.x, timesteps).counters
        counters.graph_sha256 = sha
        source = f"measured on {backend}"
    cnn_macs, cnn_source = cnn_twin_macs_for(graph, counters, file)
    cnn_j = en.cnn_energy(cnn_macs, "cmos45nm")
    rows = []
    for t in loaded:
        rep = en.price(counters, t, graph_sha256=sha)
        mem = en.memory_aware(counters, "cmos45nm", cnn_macs=cnn_macs)
        rows.append({"target": t.name, "description": t.description, "kind": t.kind,
                     "energy_per_inference_j": rep.joules, "cnn_energy_j": cnn_j,
                     "cnn_over_snn": en.energy_ratio(cnn_j, rep.joules),
                     "breakdown": rep.to_dict(), "memory_aware": mem.to_dict()})
    return {"file": str(file), "graph_sha256": sha, "backend": backend, "counts": source,
            "inputs": inputs.source if inputs is not None and not counts_file else source,
            "samples": counters.samples,
            "timesteps": counters.timesteps, "counts_per_sample": counters.totals(),
            "cnn_macs": cnn_macs, "cnn_macs_source": cnn_source, "targets": rows}
