"""The discretisation and provenance a NIR graph carries, and its defaults.

NIR stores no dt, reset mode or encoding. Graphs written by this toolkit carry
them in ``graph.metadata["neurodeploy"]`` as one JSON string (HDF5-safe, and
other NIR readers ignore it). Every backend reads a :class:`GraphConventions`
from here; nothing is assumed elsewhere.

Graphs from other tools have no such entry: they get :data:`FOREIGN_DEFAULTS`, the
ecosystem's consensus (README, "Graphs from other tools"): LIF as snnTorch's exporter
writes it (dt = 1e-4, so that dt/tau = 1 - beta), IF and I integrating r * I once per
step (Sinabs' IAF, snnTorch's importer), reset to v_reset, a strict ">" threshold, input
presented as given.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from ..errors import NeurodeployError

METADATA_KEY = "neurodeploy"


@dataclass(frozen=True)
class GraphConventions:
    dt: float = 1e-4
    reset: str = "to_v_reset"           # NIR semantics: v <- v_reset on a spike, same step
    integrator: str = "dt"              # IF / I: "dt" v += r dt I (ours), "step" v += r I (the ecosystem's)
    spike_condition: str = "v > v_threshold"
    encoding: str = "direct"            # direct: a static input is the current at every step
    readout: str = "spike_count"        # prediction = argmax of output spikes summed over T
    timesteps: Optional[int] = None
    input_shape: Optional[tuple] = None  # batch-free
    num_classes: Optional[int] = None
    model: Optional[str] = None
    twin: Optional[str] = None
    dataset: Optional[str] = None
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    toolkit_version: Optional[str] = None
    population_reset: dict = field(default_factory=dict)   # population -> reset mode (ir.neurons.RESET_MODES)
    extra: dict = field(default_factory=dict)
    from_metadata: bool = False         # False: defaults for a foreign graph

    def reset_of(self, population: str) -> str:
        """The reset mode of one population: its own entry, else NIR's reset to v_reset."""
        return self.population_reset.get(population, "to_v_reset")

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("from_metadata")
        return json.dumps(d, sort_keys=True)


FOREIGN_DEFAULTS = GraphConventions(integrator="step")


def conventions_of(graph) -> GraphConventions:
    """Read the conventions of a graph (ours), or the defaults (anyone's). Metadata that is
    not what this toolkit writes is one NeurodeployError line, never a traceback."""
    meta = getattr(graph, "metadata", None)
    if meta is None or (hasattr(meta, "__len__") and len(meta) == 0):
        return FOREIGN_DEFAULTS
    if not isinstance(meta, dict):
        raise NeurodeployError(f"the graph's metadata is a {type(meta).__name__}, not a mapping of names to values")
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return FOREIGN_DEFAULTS
    if hasattr(raw, "item") and getattr(raw, "size", 1) == 1:  # numpy scalar from h5py
        raw = raw.item()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf8")
        except UnicodeDecodeError:
            raise NeurodeployError(f"the graph's '{METADATA_KEY}' metadata is not UTF-8 text") from None
    if not isinstance(raw, str):
        raise NeurodeployError(f"the graph's '{METADATA_KEY}' metadata is a {type(raw).__name__}, "
                               "not the JSON text this toolkit writes")
    return _parse(raw)


def _bad(field_name: str, value, wants: str):
    return NeurodeployError(f"the graph's '{METADATA_KEY}' metadata has {field_name} = {value!r}; "
                            f"it must be {wants}")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@functools.lru_cache(maxsize=64)
def _parse(raw: str) -> GraphConventions:
    """One JSON string -> conventions (memoised: every backend and report asks, the text
    is the same; GraphConventions is frozen, so sharing the result is safe). The values
    every backend relies on are checked here, once: dt finite and > 0, T and the input
    shape positive integers."""
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise NeurodeployError(f"the graph's '{METADATA_KEY}' metadata is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise NeurodeployError(f"the graph's '{METADATA_KEY}' metadata is a JSON {type(d).__name__}, "
                               "not an object")
    if "dt" in d:
        dt = d["dt"]
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
            raise _bad("dt", dt, "a finite number > 0 (seconds per timestep)")
        d["dt"] = float(dt)
    for key in ("timesteps", "num_classes"):
        v = d.get(key)
        if v is not None and (not _int(v) or v < 1):
            raise _bad(key, v, "an integer >= 1 (or absent)")
    shape = d.get("input_shape")
    if shape is not None:
        if not isinstance(shape, list) or not shape or not all(_int(s) and s >= 1 for s in shape):
            raise _bad("input_shape", shape, "a list of integers >= 1 (or absent)")
        d["input_shape"] = tuple(shape)
    for key in ("reset", "spike_condition", "encoding", "readout", "model", "twin", "dataset", "checkpoint",
                "checkpoint_sha256", "toolkit_version"):
        v = d.get(key)
        if v is not None and not isinstance(v, str):
            raise _bad(key, v, "text")
    known = set(GraphConventions.__dataclass_fields__) - {"from_metadata"}
    extra = {k: v for k, v in d.items() if k not in known}
    d = {k: v for k, v in d.items() if k in known}
    if not isinstance(d.get("extra", {}), dict):
        raise _bad("extra", d["extra"], "an object")
    d.setdefault("extra", {}).update(extra)
    return GraphConventions(**d, from_metadata=True)


def with_conventions(graph, conventions: GraphConventions):
    """Store conventions in the graph's metadata (in place) and return the graph."""
    meta = dict(getattr(graph, "metadata", None) or {})
    meta[METADATA_KEY] = conventions.to_json()
    graph.metadata = meta
    return graph


__all__ = ["GraphConventions", "FOREIGN_DEFAULTS", "conventions_of", "with_conventions",
           "METADATA_KEY", "replace"]
