"""Energy model: hardware counters x per-event target constants -> joules per inference.

Pure functions over plain data (``RunCounters`` from ``neurodeploy.backends.base`` and
``Target`` specs loaded from ``targets/*.toml``); no torch. Every energy reported here is
*per inference* (per sample): counters are totals over ``samples`` inputs and ``timesteps``
steps, and are divided by ``samples``.

Notation (per sample, summed over timesteps)
--------------------------------------------
For a projection p (Conv2d, Affine, Linear, pooling, ...):

* ``AC_p``  = effective ACs: nonzero (input, weight) pairs whose input is binary (spikes);
* ``MAC_p`` = effective MACs: the same for real-valued input (the first layer under
  direct encoding, or a projection fed by another projection);
* ``D_p``   = dense ops: every pair with a nonzero weight, input zero or not.

For a population n (LIF, IF, LI, ...): ``U_n`` neuron updates (neurons x timesteps),
``S_n`` spikes, ``I_n`` input events (nonzero input values arriving).

Pricing rules (``rule =`` in the target file; the constants are the target's ``[energy]``)
------------------------------------------------------------------------------------------
``ac_mac`` (cmos45nm, the paper's model, arXiv 2602.09717; Horowitz ISSCC 2014)::

    E = sum_p (AC_p * E_ac + MAC_p * E_mac)          E_ac = 0.9 pJ, E_mac = 4.6 pJ

  Neuron updates and spikes are not priced (the paper's convention). The first layer
  under direct encoding has real input, so its operations are MACs.

``loihi`` (Davies et al., IEEE Micro 2018, Table 2)::

    E = sum_p (AC_p * E_synop + MAC_p * E_host_mac)
      + sum_n (A_n * E_upd_active + (U_n - A_n) * E_upd_inactive + S_n * E_spike)
    A_n = min(U_n, max(I_n, S_n))

  E_synop = 23.6 pJ (the table's minimum synaptic spike op), E_upd = 81 pJ active /
  52 pJ inactive, E_spike = 1.7 pJ (spike within a tile). Table 2 does not define
  "active" beyond a neuron whose update does work; we read it as a neuron that received
  synaptic input in that timestep, i.e. the neuron-timesteps with a nonzero input value
  (``input_events``), and never fewer than the spikes it emitted (a neuron that fires was
  active). All other updates are priced as inactive (leak only). Mesh-hop energy
  (3.0/4.0 pJ per hop) is not priced because placement is unknown: a lower bound.

``synop`` (truenorth; Merolla et al., Science 2014)::

    E = sum_p (AC_p * E_synop + MAC_p * E_host_mac)    E_synop = 26 pJ, all-in

  The 26 pJ is chip energy per synaptic event, so neuron updates and spikes are not
  priced separately.

``synop_neuron`` (spinnaker2; Hoeppner et al. 2019)::

    E = sum_p (AC_p * E_synop + MAC_p * E_host_mac) + sum_n U_n * E_neuron_update
    E_synop = 450 pJ, E_neuron_update = 2.19 nJ

``dense_mac`` (gpu; a spec-sheet ESTIMATE)::

    E = sum_p D_p * E_mac       E_mac = TDP / peak MAC rate (H100 SXM5: 700 W / 33.5e12 = 20.9 pJ)

  A GPU computes every synapse every timestep, so dense ops are priced, not events.
  When a GPU run measured its own energy (NVML), pass ``measured_joules`` (for the whole
  run) to :func:`price`: the report's energy per inference is then
  ``measured_joules / samples`` and the estimate stays beside it (only for targets of
  ``kind = "measured"``).

MACs on neuromorphic targets: neuro-cores take spikes, not real values. A projection
with non-binary input (the first layer under direct encoding) is computed off the cores
(host side) and priced with the target's ``host_mac`` constant, which all three
neuromorphic files set to the paper's 45 nm CMOS MAC, 4.6 pJ, so the first layer costs
the same everywhere and the targets differ only in what the spiking hardware does.

The CNN twin (the same network with ReLU, one pass, no timesteps)::

    E_cnn = #MAC * E_mac                              (cmos45nm: 4.6 pJ; paper's Table 2)
    #MAC defaults to sum_p D_p / timesteps            (see cnn_twin_macs)

Memory-aware estimate (Lemaire et al., ICONIP 2022, arXiv 2210.13107)
--------------------------------------------------------------------
Operation counts alone ignore memory traffic, which dominates real chips. Following the
structure of Lemaire et al. (operations + memory reads/writes of weights, membrane
potentials and inputs), with the target's ``[memory]`` constants (cmos45nm: 45 nm SRAM,
5 pJ per 32-bit access, Horowitz 2014)::

    SNN: E = E_ops(ac_mac rule)
           + (sum_p AC_p + MAC_p) * E_weight_read          one weight read per synaptic op
           + sum_n U_n * (E_potential_read + E_potential_write)   per neuron update
           + sum_n S_n * E_input_read                      each spike read once by its consumer
    CNN: E = M * E_mac
           + M * E_weight_read                             one weight read per dense MAC
           + N * (E_input_read + E_output_write)           each activation written once, read once

with M the CNN's MACs and N = sum_n neurons its activations. Both sides use the same
conventions (a weight fetched per operation, no weight reuse; each activation or spike
read once); reading the input image is not counted for either. Neuron-update arithmetic
is not priced (as in the paper), only its memory traffic.

Graph identity: counters carry ``graph_sha256``; :func:`check_graph` (and :func:`price`
when given ``graph_sha256=``) refuses counters recorded for another graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..ir.counters import PopulationCounts, ProjectionCounts, RunCounters
from .. import targets
from ..errors import NeurodeployError

#: energy units accepted in [energy] and [memory], in joules
UNITS_J = {"fJ": 1e-15, "pJ": 1e-12, "nJ": 1e-9, "uJ": 1e-6, "mJ": 1e-3, "J": 1.0}
KINDS = ("analytic", "measured")
HEADER_KEYS = ("name", "description", "backend", "kind", "rule")
#: the [energy] constants each pricing rule needs
RULES: Dict[str, Tuple[str, ...]] = {
    "ac_mac": ("ac", "mac"),
    "loihi": ("synop", "neuron_update_active", "neuron_update_inactive", "spike", "host_mac"),
    "synop": ("synop", "host_mac"),
    "synop_neuron": ("synop", "neuron_update", "host_mac"),
    "dense_mac": ("mac",),
    "none": (),          # a mapping-only target (speck): no per-event energy published; price() refuses it
}
#: the [memory] constants the memory-aware estimate needs (a [memory] table must have all)
MEMORY_KEYS = ("weight_read", "potential_read", "potential_write", "input_read", "output_write")
CONSTANT_FIELDS = ("value", "unit", "source")


# --------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str

    @property
    def joules(self) -> float:
        return self.value * UNITS_J[self.unit]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    backend: str
    kind: str
    rule: str
    energy: Dict[str, Constant]
    memory: Dict[str, Constant] = field(default_factory=dict)
    derivation: Dict[str, Constant] = field(default_factory=dict)
    path: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)   # the whole file ([mapping], [timing], ...)

    def j(self, key: str) -> float:
        """One [energy] constant in joules."""
        return self.energy[key].joules

    def mem_j(self, key: str) -> float:
        """One [memory] constant in joules."""
        return self.memory[key].joules

    def to_dict(self) -> dict:
        def table(d):
            return {k: {"value": c.value, "unit": c.unit, "source": c.source, "joules": c.joules}
                    for k, c in d.items()}
        out = {"name": self.name, "description": self.description, "backend": self.backend,
               "kind": self.kind, "rule": self.rule, "energy": table(self.energy)}
        if self.memory:
            out["memory"] = table(self.memory)
        return out


def targets_dir() -> Path:
    """The folder of target TOML files: ``neurodeploy/targets/``, package data shipped in the wheel."""
    return targets.FOLDER


def target_names() -> List[str]:
    return targets.names()


def _parse_constant(entry, where: str, key: str, energy_unit: bool) -> Constant:
    if not isinstance(entry, dict):
        raise NeurodeployError(
            f"{where}: {key} must be a table like {{value = 0.9, unit = \"pJ\", source = \"...\"}}")
    for f in CONSTANT_FIELDS:
        if f not in entry:
            raise NeurodeployError(
                f"{where}: {key} has no '{f}'; write {{value = ..., unit = \"pJ\", source = \"...\"}}")
    value, unit, source = entry["value"], entry["unit"], entry["source"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise NeurodeployError(f"{where}: {key}.value must be a non-negative number, got {value!r}")
    if energy_unit and unit not in UNITS_J:
        raise NeurodeployError(
            f"{where}: {key}.unit {unit!r} is not an energy unit; use one of {', '.join(UNITS_J)}")
    if not isinstance(source, str) or not source.strip():
        raise NeurodeployError(f"{where}: {key}.source is empty; cite where the number comes from")
    return Constant(float(value), str(unit), source)


def _parse_table(data: dict, table: str, where: str, energy_unit: bool = True) -> Dict[str, Constant]:
    raw = data.get(table, {})
    if not isinstance(raw, dict):
        raise NeurodeployError(f"{where}: [{table}] must be a table")
    return {k: _parse_constant(v, where, f"{table}.{k}", energy_unit) for k, v in raw.items()}


def parse_target(data: dict, where: str = "<target>") -> Target:
    """Validate one target file's parsed TOML; ``where`` names it in errors."""
    for key in HEADER_KEYS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise NeurodeployError(f"{where}: missing top-level key '{key}' (a string); "
                                   f"every target file needs {', '.join(HEADER_KEYS)}")
    if data["kind"] not in KINDS:
        raise NeurodeployError(f"{where}: kind {data['kind']!r} is not one of {', '.join(KINDS)}")
    rule = data["rule"]
    if rule not in RULES:
        raise NeurodeployError(f"{where}: rule {rule!r} is unknown; use one of {', '.join(RULES)}")
    if "energy" not in data:
        raise NeurodeployError(f"{where}: missing table [energy]")
    energy = _parse_table(data, "energy", where)
    for key in RULES[rule]:
        if key not in energy:
            raise NeurodeployError(f"{where}: missing constant energy.{key} "
                                   f"(rule '{rule}' needs {', '.join(RULES[rule])})")
    memory = _parse_table(data, "memory", where)
    if memory:
        for key in MEMORY_KEYS:
            if key not in memory:
                raise NeurodeployError(f"{where}: missing constant memory.{key} "
                                       f"(a [memory] table needs {', '.join(MEMORY_KEYS)})")
    derivation = _parse_table(data, "derivation", where, energy_unit=False)
    return Target(name=data["name"], description=data["description"], backend=data["backend"],
                  kind=data["kind"], rule=rule, energy=energy, memory=memory,
                  derivation=derivation, path=where, raw=data)


def load_target(name: Union[str, Path, Target]) -> Target:
    """A target by name (``targets/<name>.toml``), by path to a .toml file, or as given."""
    if isinstance(name, Target):
        return name
    text = str(name)
    if text.endswith(".toml"):
        path = Path(text)
        if not path.is_file():
            raise NeurodeployError(f"target file {text} does not exist")
        where, raw, stem = str(path), path.read_bytes(), path.stem
    else:
        names = target_names()
        text = targets.resolve(text)
        if text not in names:
            from .. import backends
            if text in backends.names():
                raise NeurodeployError(f"'{text}' is a backend (it runs graphs), not a hardware target; "
                                       f"hardware targets are: {', '.join(names)}")
            raise NeurodeployError(f"unknown target {text!r}; valid targets: {', '.join(names)}")
        res = targets_dir() / f"{text}.toml"
        where, raw, stem = f"targets/{text}.toml", res.read_bytes(), text
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NeurodeployError(f"{where}: not valid TOML ({e}); fix the file") from None
    target = parse_target(data, where)
    if target.name != stem:
        raise NeurodeployError(f"{where}: declares name {target.name!r} but the file is "
                               f"{stem}.toml; make them the same")
    return target


# --------------------------------------------------------------------------- graph identity

def check_graph(counters: RunCounters, graph_sha256: str) -> None:
    """Refuse counters that were not recorded for the graph with this SHA-256."""
    if counters.graph_sha256 is None:
        raise NeurodeployError("these counters carry no graph_sha256, so they cannot be matched "
                               "to the graph being priced; re-run the graph to record counters")
    if counters.graph_sha256 != graph_sha256:
        raise NeurodeployError(
            f"counters belong to graph {counters.graph_sha256[:12]}..., not to the graph being "
            f"priced ({graph_sha256[:12]}...); re-run this graph to get its counters")


# --------------------------------------------------------------------------- pricing

@dataclass
class LayerEnergy:
    """Energy of one node per inference: ``events`` priced and ``joules`` per component."""
    name: str
    role: str                      # "projection" | "population"
    kind: str                      # NIR node type
    events: Dict[str, float]
    joules: Dict[str, float]

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "kind": self.kind,
                "events": dict(self.events), "joules": dict(self.joules), "total_j": self.total_j}


@dataclass
class EnergyReport:
    """Energy per inference (joules per sample) of one run on one target."""
    target: str
    rule: str
    samples: int
    timesteps: int
    layers: List[LayerEnergy]
    graph_sha256: Optional[str] = None
    measured_j: Optional[float] = None   # measured energy per inference, when given

    @property
    def estimated_j(self) -> float:
        return sum(layer.total_j for layer in self.layers)

    @property
    def joules(self) -> float:
        """The energy per inference: measured where a run measured it, else the estimate."""
        return self.measured_j if self.measured_j is not None else self.estimated_j

    def role_totals(self) -> Dict[str, float]:
        """Estimated joules per inference of all projections and of all populations."""
        out = {"projection": 0.0, "population": 0.0}
        for layer in self.layers:
            out[layer.role] += layer.total_j
        return out

    def component_totals(self) -> Dict[str, float]:
        """Estimated joules per inference by component (ac, mac, synop, spike, ...)."""
        out: Dict[str, float] = {}
        for layer in self.layers:
            for key, j in layer.joules.items():
                out[key] = out.get(key, 0.0) + j
        return out

    def to_dict(self) -> dict:
        return {"target": self.target, "rule": self.rule, "samples": self.samples,
                "timesteps": self.timesteps, "graph_sha256": self.graph_sha256,
                "joules_per_inference": self.joules, "estimated_j": self.estimated_j,
                "measured_j": self.measured_j, "role_totals": self.role_totals(),
                "component_totals": self.component_totals(),
                "layers": [layer.to_dict() for layer in self.layers]}


def active_updates(pop: PopulationCounts) -> float:
    """Loihi 'active' neuron updates: neuron-timesteps with input, at least the spikes, at most all."""
    return min(pop.neuron_updates, max(pop.input_events, pop.spikes))


def price_projection(proj: ProjectionCounts, target: Target, samples: int
                     ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(events, joules) per inference of one projection under the target's rule."""
    acs = proj.effective_acs / samples
    macs = proj.effective_macs / samples
    dense = proj.dense_ops / samples
    if target.rule == "ac_mac":
        return ({"acs": acs, "macs": macs},
                {"ac": acs * target.j("ac"), "mac": macs * target.j("mac")})
    if target.rule == "dense_mac":
        return {"dense_ops": dense}, {"dense_mac": dense * target.j("mac")}
    # neuromorphic rules: spike-driven ops are synaptic ops, real-input ops run host-side
    return ({"synops": acs, "host_macs": macs},
            {"synop": acs * target.j("synop"), "host_mac": macs * target.j("host_mac")})


def price_population(pop: PopulationCounts, target: Target, samples: int
                     ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(events, joules) per inference of one neuron population under the target's rule."""
    updates = pop.neuron_updates / samples
    spikes = pop.spikes / samples
    events = {"neuron_updates": updates, "spikes": spikes}
    if target.rule == "synop_neuron":
        return events, {"neuron_update": updates * target.j("neuron_update")}
    if target.rule == "loihi":
        active = active_updates(pop) / samples
        events["active_updates"] = active
        return events, {
            "neuron_update_active": active * target.j("neuron_update_active"),
            "neuron_update_inactive": (updates - active) * target.j("neuron_update_inactive"),
            "spike": spikes * target.j("spike"),
        }
    return events, {}   # ac_mac (paper), synop (all-in), dense_mac: neurons not priced


def _samples(counters: RunCounters) -> int:
    if counters.samples < 1:
        raise NeurodeployError(f"counters cover {counters.samples} samples; run at least one input")
    return counters.samples


def price(counters: RunCounters, target: Union[str, Path, Target] = "cmos45nm", *,
          measured_joules: Optional[float] = None,
          graph_sha256: Optional[str] = None) -> EnergyReport:
    """Price one run's counters on one target: energy per inference with a per-layer breakdown.

    measured_joules: energy the run measured for all its samples (e.g. NVML on a GPU);
    accepted only for targets of kind "measured". graph_sha256: when given, the counters
    must have been recorded for that graph (see check_graph).
    """
    t = load_target(target)
    if t.rule == "none":
        raise NeurodeployError(f"target {t.name} publishes no per-event energy (rule 'none'): it is for "
                               f"`neurodeploy map` only")
    if graph_sha256 is not None:
        check_graph(counters, graph_sha256)
    n = _samples(counters)
    layers = []
    for name, proj in counters.projections.items():
        events, joules = price_projection(proj, t, n)
        layers.append(LayerEnergy(name, "projection", proj.kind, events, joules))
    for name, pop in counters.populations.items():
        events, joules = price_population(pop, t, n)
        layers.append(LayerEnergy(name, "population", pop.kind, events, joules))
    measured = None
    if measured_joules is not None:
        if t.kind != "measured":
            raise NeurodeployError(f"target {t.name} is analytic; measured energy applies only to "
                                   f"targets of kind 'measured' (e.g. gpu)")
        if measured_joules < 0:
            raise NeurodeployError(f"measured energy {measured_joules} J is negative; check the meter")
        measured = measured_joules / n
    return EnergyReport(target=t.name, rule=t.rule, samples=counters.samples,
                        timesteps=counters.timesteps, layers=layers,
                        graph_sha256=counters.graph_sha256, measured_j=measured)


# --------------------------------------------------------------------------- CNN twin

def cnn_twin_macs(counters: RunCounters) -> float:
    """MACs per inference of the CNN twin: the SNN's dense ops of one timestep.

    Assumes, as RunCounters documents, that dense_ops are summed over timesteps and
    samples; the CNN runs each projection once.
    """
    n = _samples(counters)
    steps = max(counters.timesteps, 1)
    return sum(p.dense_ops for p in counters.projections.values()) / (n * steps)


def cnn_energy(cnn_macs: float, target: Union[str, Path, Target] = "cmos45nm") -> float:
    """Joules of a CNN inference: #MAC x E_mac (cmos45nm: 4.6 pJ)."""
    t = load_target(target)
    if "mac" not in t.energy:
        raise NeurodeployError(f"target {t.name} has no dense MAC energy (energy.mac); "
                               f"price the CNN twin on cmos45nm or gpu")
    if cnn_macs < 0:
        raise NeurodeployError(f"CNN MAC count {cnn_macs} is negative")
    return cnn_macs * t.j("mac")


def energy_ratio(cnn_joules: float, snn_joules: float) -> float:
    """CNN energy / SNN energy (> 1 means the SNN uses less)."""
    if snn_joules <= 0:
        raise NeurodeployError("SNN energy is zero or negative, so no CNN/SNN ratio exists; "
                               "check that the run produced counters")
    return cnn_joules / snn_joules


# --------------------------------------------------------------------------- memory-aware

@dataclass
class MemoryAwareReport:
    """Joules per inference by term, SNN and CNN twin, with and without memory traffic."""
    target: str
    snn: Dict[str, float]
    cnn: Dict[str, float]

    @property
    def ratio_ops_only(self) -> float:
        return energy_ratio(self.cnn["ops"], self.snn["ops"])

    @property
    def ratio_with_memory(self) -> float:
        return energy_ratio(self.cnn["total"], self.snn["total"])

    def to_dict(self) -> dict:
        return {"target": self.target, "snn": dict(self.snn), "cnn": dict(self.cnn),
                "ratio_ops_only": self.ratio_ops_only,
                "ratio_with_memory": self.ratio_with_memory}


def memory_aware(counters: RunCounters, target: Union[str, Path, Target] = "cmos45nm",
                 cnn_macs: Optional[float] = None) -> MemoryAwareReport:
    """The Lemaire et al. (2022) style estimate: operations plus memory traffic (see module doc).

    cnn_macs: the CNN twin's MACs per inference; default cnn_twin_macs(counters).
    """
    t = load_target(target)
    if not t.memory or "ac" not in t.energy or "mac" not in t.energy:
        raise NeurodeployError(f"target {t.name} has no [memory] table with ac/mac energies; "
                               f"use cmos45nm for the memory-aware estimate")
    _samples(counters)   # refuses empty runs
    tot = counters.totals(per_sample=True)
    synops = tot["effective_acs"] + tot["effective_macs"]
    snn = {
        "ops": tot["effective_acs"] * t.j("ac") + tot["effective_macs"] * t.j("mac"),
        "weight_reads": synops * t.mem_j("weight_read"),
        "potentials": tot["neuron_updates"] * (t.mem_j("potential_read") + t.mem_j("potential_write")),
        "input_reads": tot["spikes"] * t.mem_j("input_read"),
    }
    snn["total"] = sum(snn.values())
    macs = cnn_twin_macs(counters) if cnn_macs is None else float(cnn_macs)
    activations = float(sum(p.neurons for p in counters.populations.values()))
    cnn = {
        "ops": macs * t.j("mac"),
        "weight_reads": macs * t.mem_j("weight_read"),
        "input_reads": activations * t.mem_j("input_read"),
        "output_writes": activations * t.mem_j("output_write"),
    }
    cnn["total"] = sum(cnn.values())
    return MemoryAwareReport(target=t.name, snn=snn, cnn=cnn)
