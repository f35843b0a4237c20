"""What every backend returns: the run result and the hardware counters.

Counters are what neuromorphic hardware would do
for the inputs that were run, counted exactly (not sampled), as totals over
all samples and timesteps; ``per_sample()`` divides by the sample count.

Synaptic operations follow NeuroBench (Yik et al., 2024): a projection's
*effective* operations are the (input, weight) pairs with a nonzero input and
a nonzero weight, summed over timesteps. They are ACs (accumulates) when the
projection's input is binary (spikes) and MACs when it is real-valued (the
first layer under direct encoding, or a projection fed by another
projection). ``dense_ops`` counts every pair with a nonzero weight, as a
clock-driven accelerator (or the CNN twin) would.

Plain Python (no torch): the Lava worker uses it too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional


@dataclass
class PopulationCounts:
    kind: str                 # NIR node type: LIF, IF, LI, CubaLIF, ...
    neurons: int              # population size
    spikes: int = 0           # output spikes, summed over samples and timesteps
    neuron_updates: int = 0   # neurons x timesteps x samples
    input_events: int = 0     # nonzero input values arriving (spikes in, or currents)

    def firing_rate(self) -> float:
        return self.spikes / self.neuron_updates if self.neuron_updates else 0.0


@dataclass
class ProjectionCounts:
    kind: str                 # Conv2d, Affine, Linear, AvgPool2d, SumPool2d, Scale, ...
    binary_input: bool = True     # every input value was 0 or 1 during the run
    effective_ops: int = 0        # nonzero input x nonzero weight pairs (an exact integer count)
    dense_ops: int = 0            # nonzero-weight pairs regardless of input
    parameters: int = 0

    @property
    def effective_acs(self) -> float:
        return self.effective_ops if self.binary_input else 0.0

    @property
    def effective_macs(self) -> float:
        return 0.0 if self.binary_input else self.effective_ops


@dataclass
class RunCounters:
    samples: int
    timesteps: int
    populations: Dict[str, PopulationCounts] = field(default_factory=dict)
    projections: Dict[str, ProjectionCounts] = field(default_factory=dict)
    graph_sha256: Optional[str] = None   # which graph these counts belong to
    backend: Optional[str] = None

    def totals(self, per_sample: bool = True) -> dict:
        n = max(self.samples, 1) if per_sample else 1
        return {
            "spikes": sum(p.spikes for p in self.populations.values()) / n,
            "neuron_updates": sum(p.neuron_updates for p in self.populations.values()) / n,
            "effective_acs": sum(p.effective_acs for p in self.projections.values()) / n,
            "effective_macs": sum(p.effective_macs for p in self.projections.values()) / n,
            "dense_ops": sum(p.dense_ops for p in self.projections.values()) / n,
        }

    def neurobench(self) -> dict:
        """The same run in NeuroBench's names and definitions (per sample, NeuroBench 2.3):

        * SynapticOperations: Effective_ACs / Effective_MACs / Dense of the weighted layers
          only. NeuroBench hooks Conv and Linear modules; pooling is not a layer it counts,
          while this toolkit counts a pool's additions as synaptic operations (a pool is a
          projection on hardware). That is the one difference, and it is all of it (tested
          against the neurobench package itself).
        * ActivationSparsity: 1 - spikes / neuron updates, over every population.
        * MembraneUpdates: neuron updates (neurons x timesteps).

        NeuroBench's static metrics (Footprint, ConnectionSparsity) belong to the graph,
        not to a run: ``ir.static.neurobench_static``; ``neurobench_report`` joins both.
        """
        n = max(self.samples, 1)
        weighted = [p for p in self.projections.values() if p.kind not in ("AvgPool2d", "SumPool2d")]
        spikes = sum(p.spikes for p in self.populations.values())
        updates = sum(p.neuron_updates for p in self.populations.values())
        return {"SynapticOperations": {"Effective_MACs": sum(p.effective_macs for p in weighted) / n,
                                       "Effective_ACs": sum(p.effective_acs for p in weighted) / n,
                                       "Dense": sum(p.dense_ops for p in weighted) / n},
                "ActivationSparsity": 1.0 - spikes / updates if updates else 0.0,
                "MembraneUpdates": updates / n}

    def to_dict(self) -> dict:
        d = {
            "samples": self.samples, "timesteps": self.timesteps,
            "graph_sha256": self.graph_sha256, "backend": self.backend,
            "populations": {k: {**asdict(v), "firing_rate": v.firing_rate()}
                            for k, v in self.populations.items()},
            "projections": {k: {**asdict(v), "effective_acs": v.effective_acs,
                                "effective_macs": v.effective_macs}
                            for k, v in self.projections.items()},
            "totals_per_sample": self.totals(),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunCounters":
        """Counters from ``to_dict()``'s JSON; ValueError when it is not that (wrong types,
        no samples, counts that are negative or not finite)."""
        if not isinstance(d, dict) or not isinstance(d.get("populations"), dict) \
                or not isinstance(d.get("projections"), dict):
            raise ValueError("expected an object with 'populations' and 'projections' objects")
        for key in ("samples", "timesteps"):
            if isinstance(d.get(key), bool) or not isinstance(d.get(key), int) or d[key] < 1:
                raise ValueError(f"'{key}' must be an integer >= 1, got {d.get(key)!r}")
        for group in ("populations", "projections"):
            for name, v in d[group].items():
                if not isinstance(v, dict):
                    raise ValueError(f"{group} entry {name!r} is not an object")
                for f, x in v.items():
                    if isinstance(x, (int, float)) and not isinstance(x, bool) and not (0 <= x < float("inf")):
                        raise ValueError(f"{group} entry {name!r}: {f} = {x!r} is not a count")
        pops = {k: PopulationCounts(**{f: v[f] for f in PopulationCounts.__dataclass_fields__})
                for k, v in d["populations"].items()}
        projs = {k: ProjectionCounts(**{f: v[f] for f in ProjectionCounts.__dataclass_fields__})
                 for k, v in d["projections"].items()}
        return cls(samples=d["samples"], timesteps=d["timesteps"], populations=pops,
                   projections=projs, graph_sha256=d.get("graph_sha256"), backend=d.get("backend"))


@dataclass
class RunResult:
    """outputs: the Output node's values, shaped (T, N, *output_shape) (numpy).

    spikes: optional per-population spike counts per sample, {name: (N,) array},
    used by validation to find where two targets diverge.
    """
    outputs: object
    counters: RunCounters
    population_spike_counts: Dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    weight_quantisation: Optional[dict] = None   # targets that quantise: how far the weights moved
    overflows: Optional[dict] = None             # fixed-width targets: input currents wrapped, per population


def neurobench_report(counters: RunCounters, graph) -> dict:
    """All NeuroBench metrics of one run of ``graph``: the workload ones per sample, the static ones."""
    from .static import neurobench_static
    return {**counters.neurobench(), **neurobench_static(graph)}


def merge_counters(parts) -> RunCounters:
    """Counters of consecutive chunks of samples -> one (totals add up; flags AND)."""
    total = RunCounters(samples=0, timesteps=parts[0].timesteps)
    for c in parts:
        total.samples += c.samples
        for k, p in c.populations.items():
            t = total.populations.setdefault(k, PopulationCounts(kind=p.kind, neurons=p.neurons))
            t.spikes += p.spikes
            t.neuron_updates += p.neuron_updates
            t.input_events += p.input_events
        for k, p in c.projections.items():
            t = total.projections.setdefault(k, ProjectionCounts(kind=p.kind, parameters=p.parameters))
            t.binary_input = t.binary_input and p.binary_input
            t.effective_ops += p.effective_ops
            t.dense_ops += p.dense_ops
    return total
