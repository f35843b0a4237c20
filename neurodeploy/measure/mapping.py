"""Hardware mapping: does a graph fit a chip, on how many cores and chips, how fast, at what cost.

``map_graph(graph, target) -> Mapping`` places every population (its neurons) and its incoming
synapses onto cores under the limits in the target file's ``[mapping]`` table, each limit with
its source (``neurodeploy/targets/*.toml``). Pure functions over the graph and the target (numpy,
scipy.sparse; no torch), nothing is run. ``latency()``, ``cost_of()`` and ``hardware_cost()`` add
time per step / per inference from the ``[timing]`` table and static energy from ``[static]``.

What is placed
--------------
A *population* (LIF, IF, LI, ...) with its *incoming synapses*: every chain of projections
(Conv2d, pooling, Flatten, Affine, Linear, Scale) that ends in it, from a source population. A
chain like ``AvgPool2d -> Conv2d`` is one composite projection on the chip (a pooled spike is a
linear function of spikes): its kernel is the convolution of the two kernels, so a 1x1
convolution after 2x2 pooling stores 2x2 taps per weight. Chains from the graph's Input are
computed by the host (the first layer under direct encoding: real-valued input, priced as host
MACs by ``measure/energy.py``); their result enters the population as its input current, and
those synapses are not placed on cores. Chains that end at the Output (the readout) are the
host's too.

Counting (structural, exact for the graph)
------------------------------------------
For a convolution-shaped projection of composite kernel mask M[o, i, u, v] (nonzero weight),
stride s, padding p and reachable input extent (H, W), the synapses into neuron (o, y, x) are

    n(o, y, x) = sum_{u,v} nz[o, u, v] [0 <= y s - p + u < H] [0 <= x s - p + v < W],
    nz[o, u, v] = #{i : M[o, i, u, v]}.

A dense projection (Affine/Linear, anything after a Flatten) is its nonzero pattern, as a sparse
matrix. Every synapse of the graph is counted once, at the neuron it feeds.

Tiles, encodings, cores
-----------------------
A population is cut into *tiles*: blocks of ``cc`` channels x ``rr`` rows x ``ww`` columns (a dense,
1-D population: index ranges). Populations are tiled destinations first, so that a tile knows
its output axons. For every row block (and, with one row, every column block) the largest
feasible channel block is found by binary search; among these candidates the one with the
fewest tiles plus the cores its sources will need for their fan-out (their (neuron, tile) pairs
over the output-axon limit, or over the neurons per core on TrueNorth) is taken: splitting a
layer by channels spreads every source neuron over all the channel blocks. The limit the next
larger tile breaks is reported as the one that *binds*. A tile needs:

* neurons (compartments): its size (on TrueNorth a neuron reaches one axon of one core: the
  copies its fan-out needs go onto splitter cores, ``fanout_copies``);
* input axons: per source population, the input window its neurons read: used input channels
  x input rows x input columns (``population_axons``: one axon per input pixel, the spike
  carrying its channel, for a weight-shared convolution);
* synaptic memory, in the cheapest encoding the chip has (``encodings``):
  ``sparse`` (weight + index bits per synapse), ``dense`` (a weight for every neuron of the
  tile per axon), ``shared`` (a convolution's kernel stored once per core, one copy per border
  class of input pixels, as NengoLoihi's ``conv2d_loihi_weights``), ``crossbar`` (TrueNorth's
  axon x neuron bits); synapse lists are rounded up to ``word_bits`` with ``list_header_bits``
  per ``synapses_per_list`` where the chip's format has them;
* neuron state bits (``neuron_state_bits``) where state and synapses share ``core_memory``;
* output axons: one per (neuron, destination core) pair (``output_axons_per_core``).

Tiles are then packed first-fit, in graph order, onto the last 64 cores opened (small
populations share a core, resources add up), cores fill chips in order (``cores_per_chip``) and
chips fill boards (``chips_per_board``). On TrueNorth a population whose tiles have P (neuron,
destination core) pairs for N neurons needs at least P - N copy neurons, packed on splitter
cores after it. A population whose single neuron exceeds a limit cannot be placed at all:
it is named with that limit and the verdict is "does not fit". Speck (``model =
"layer_per_core"``) instead gives each population one whole core (a layer) and checks the
sinabs memory formulas against the nine cores' kernel and neuron memories.

Time and energy
---------------
``[timing] model = "event"`` (Loihi): a step takes the busiest core's serial work plus one
barrier synchronisation::

    t_step = max_core sum_tiles (synops t_syn + active t_act + inactive t_inact + spikes t_spike)
             + t_barrier,          t_inference = T t_step,   throughput = 1 / t_inference

with a tile's synops = sum over its sources of (spikes per source neuron per step) x (the
tile's synapses from that source) (uniform firing within a population), and neuron updates / spikes / active updates
per step from the run's counters. Without counters the bound is every source spiking every
step and every update active (an upper bound on time). ``model = "tick"`` (TrueNorth,
SpiNNaker 2): a step is one fixed tick (real-time operation), whatever the activity.
Static energy = ``[static] power`` x (mapped cores for ``scope = "core"``, chips for ``"chip"``)
x t_inference; energy-delay product = (dynamic + static) x t_inference. No pipelining across
inputs is assumed and host I/O is not timed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import nir
import numpy as np

from ..errors import NeurodeployError
from ..ir.nodes import POOLS, POPULATIONS, kind, neuron_shape
from ..ir.topology import flatten_graph, pair, toposort
from . import energy as en

MAPPING_TARGETS = ("loihi1", "loihi2", "truenorth", "spinnaker2", "speck")
ENCODINGS = ("sparse", "dense", "shared", "crossbar")
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
POWER_UNITS = {"uW": 1e-6, "mW": 1e-3, "W": 1.0}
#: refuse to expand a flattened projection into more synapses than this (memory of the analysis)
MAX_DENSE_SYNAPSES = 30_000_000


# ============================================================================ target spec

@dataclass(frozen=True)
class Setting:
    value: object
    unit: str
    source: str


@dataclass(frozen=True)
class HardwareSpec:
    """A target's [mapping], [timing] and [static] tables, every value with its source."""
    name: str
    description: str
    mapping: Dict[str, Setting]
    timing: Dict[str, Setting]
    static: Dict[str, Setting]
    target: en.Target

    def m(self, key, default=None):
        s = self.mapping.get(key)
        return default if s is None else s.value

    @property
    def model(self) -> str:
        return str(self.m("model", "cores"))

    @property
    def encodings(self) -> Tuple[str, ...]:
        return tuple(e.strip() for e in str(self.m("encodings", "sparse")).split(",") if e.strip())

    def seconds(self, key) -> float:
        s = self.timing[key]
        return float(s.value) * TIME_UNITS[s.unit]

    @property
    def timing_model(self) -> str:
        s = self.timing.get("model")
        return "none" if s is None else str(s.value)

    @property
    def static_watts(self) -> float:
        s = self.static.get("power")
        return 0.0 if s is None else float(s.value) * POWER_UNITS[s.unit]

    @property
    def static_scope(self) -> str:
        s = self.static.get("scope")
        return "chip" if s is None else str(s.value)

    def limits(self) -> Dict[str, float]:
        """Per-core limits by resource name (absent = unlimited)."""
        out = {}
        for res, key in (("neurons", "neurons_per_core"), ("in_axons", "input_axons_per_core"),
                         ("out_axons", "output_axons_per_core"), ("syn_bits", "synapse_memory_per_core"),
                         ("mem_bits", "core_memory")):
            v = self.m(key)
            if v is not None:
                out[res] = float(v)
        return out

    def to_dict(self) -> dict:
        def table(d):
            return {k: asdict(v) for k, v in d.items()}
        return {"name": self.name, "description": self.description, "mapping": table(self.mapping),
                "timing": table(self.timing), "static": table(self.static)}


def _settings(data: dict, table: str, where: str) -> Dict[str, Setting]:
    raw = data.get(table, {})
    if not isinstance(raw, dict):
        raise NeurodeployError(f"{where}: [{table}] must be a table")
    out = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or any(f not in entry for f in ("value", "unit", "source")):
            raise NeurodeployError(f"{where}: {table}.{key} must be a table like "
                                   f"{{value = ..., unit = \"...\", source = \"...\"}}")
        if not isinstance(entry["source"], str) or not entry["source"].strip():
            raise NeurodeployError(f"{where}: {table}.{key}.source is empty; cite where the number comes from")
        value = entry["value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise NeurodeployError(f"{where}: {table}.{key}.value must not be negative, got {value!r}")
        out[key] = Setting(value, str(entry["unit"]), entry["source"])
    return out


def load_spec(target: Union[str, Path, en.Target, HardwareSpec]) -> HardwareSpec:
    """A hardware target with a [mapping] table, by name, .toml path or Target."""
    if isinstance(target, HardwareSpec):
        return target
    t = en.load_target(target)
    where = t.path or t.name
    if "mapping" not in t.raw:
        have = [n for n in en.target_names() if "mapping" in en.load_target(n).raw]
        raise NeurodeployError(f"target {t.name} has no [mapping] table (it prices operations, it is not a "
                               f"chip with cores); map onto: {', '.join(have)}")
    spec = HardwareSpec(t.name, t.description, _settings(t.raw, "mapping", where),
                        _settings(t.raw, "timing", where), _settings(t.raw, "static", where), t)
    need = ("cores_per_chip",) if spec.model == "layer_per_core" else ("neurons_per_core", "cores_per_chip")
    for key in need:
        if key not in spec.mapping:
            raise NeurodeployError(f"{where}: [mapping] needs {key}")
    for e in spec.encodings:
        if e not in ENCODINGS:
            raise NeurodeployError(f"{where}: mapping.encodings has {e!r}; use some of {', '.join(ENCODINGS)}")
    for key in ("synop", "neuron_update_active", "neuron_update_inactive", "spike", "barrier", "tick"):
        s = spec.timing.get(key)
        if s is not None and s.unit not in TIME_UNITS:
            raise NeurodeployError(f"{where}: timing.{key}.unit {s.unit!r} is not one of {', '.join(TIME_UNITS)}")
    if spec.timing_model == "event":
        for key in ("synop", "neuron_update_active", "neuron_update_inactive", "spike", "barrier"):
            if key not in spec.timing:
                raise NeurodeployError(f"{where}: [timing] model 'event' needs timing.{key}")
    if spec.timing_model == "tick" and "tick" not in spec.timing:
        raise NeurodeployError(f"{where}: [timing] model 'tick' needs timing.tick")
    s = spec.static.get("power")
    if s is not None and s.unit not in POWER_UNITS:
        raise NeurodeployError(f"{where}: static.power.unit {s.unit!r} is not one of {', '.join(POWER_UNITS)}")
    return spec


def mapping_target_names() -> List[str]:
    return [n for n in en.target_names() if "mapping" in en.load_target(n).raw]


# ============================================================================ projections as connectivity

@dataclass
class ConvConn:
    """A convolution-shaped projection: composite kernel mask over full channels."""
    in_shape: tuple          # (C0, H0, W0) of the source
    out_shape: tuple         # (C1, H1, W1)
    kernel: tuple
    stride: tuple
    padding: tuple
    mask: np.ndarray         # bool (C1, C0, kh, kw)
    extent: tuple            # input rows/cols a chain can reach (<= H0, W0)
    diag: bool = False       # mask[:, :, u, v] is diagonal for every tap (identity, pooling)

    def valid(self, axis: int) -> np.ndarray:
        """(out positions, taps) bool: output y reads input y s - p + u inside the reachable extent."""
        n_out, k, s, p, ext = self.out_shape[1 + axis], self.kernel[axis], self.stride[axis], \
            self.padding[axis], self.extent[axis]
        r = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :]
        return (r >= 0) & (r < ext)

    def counts(self) -> np.ndarray:
        """Synapses into every output neuron, (C1, H1, W1)."""
        nz = self.mask.sum(axis=1).astype(np.int64)                          # (C1, kh, kw)
        return np.einsum("ouv,yu,xv->oyx", nz, self.valid(0).astype(np.int64), self.valid(1).astype(np.int64))


@dataclass
class DenseConn:
    """A projection as its nonzero pattern (rows: target neurons, flat; columns: source neurons, flat)."""
    in_shape: tuple
    out_shape: tuple
    csr: object              # scipy.sparse.csr_matrix, bool

    def counts(self) -> np.ndarray:
        return np.diff(self.csr.indptr).astype(np.int64).reshape(self.out_shape)


def _sparse():
    import scipy.sparse as sp
    return sp


def _identity(shape: tuple):
    if len(shape) == 3:
        c, h, w = shape
        return ConvConn(shape, shape, (1, 1), (1, 1), (0, 0), np.eye(c, dtype=bool)[:, :, None, None], (h, w), True)
    n = int(np.prod(shape)) if shape else 1
    return DenseConn(shape, shape, _sparse().identity(n, dtype=bool, format="csr"))


def _conv_of(node, in_shape: tuple) -> ConvConn:
    """One Conv2d or pooling node as a ConvConn (groups expanded to full channels)."""
    c0, h0, w0 = in_shape
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight)
        groups = int(node.groups)
        dil = pair(node.dilation)
        if dil != (1, 1):
            raise NeurodeployError(f"map: dilated convolutions are not supported (dilation {dil})")
        c1, cg, kh, kw = w.shape
        mask = np.zeros((c1, c0, kh, kw), dtype=bool)
        per_out = c1 // groups
        for g in range(groups):
            mask[g * per_out:(g + 1) * per_out, g * cg:(g + 1) * cg] = w[g * per_out:(g + 1) * per_out] != 0
        stride, padding, kernel = pair(node.stride), pair(node.padding), (kh, kw)
        diag = groups == c0 == c1 and cg == 1
    else:   # AvgPool2d / SumPool2d: a depthwise ones kernel
        kernel, stride, padding = pair(node.kernel_size), pair(node.stride), pair(node.padding)
        c1 = c0
        mask = np.zeros((c0, c0) + kernel, dtype=bool)
        mask[np.arange(c0), np.arange(c0)] = True
        diag = True
    h1 = (h0 + 2 * padding[0] - kernel[0]) // stride[0] + 1
    w1 = (w0 + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return ConvConn(in_shape, (c1, h1, w1), kernel, stride, padding, mask, (h0, w0), diag)


def _compose(a: ConvConn, b: ConvConn) -> ConvConn:
    """b after a, as one convolution from a's input (kernels convolved, strides multiplied)."""
    if tuple(a.out_shape) != tuple(b.in_shape):
        raise NeurodeployError(f"map: shapes do not chain ({a.out_shape} -> {b.in_shape})")
    sa, sb = a.stride, b.stride
    kernel = tuple(a.kernel[i] + (b.kernel[i] - 1) * sa[i] for i in range(2))
    stride = tuple(sa[i] * sb[i] for i in range(2))
    padding = tuple(a.padding[i] + b.padding[i] * sa[i] for i in range(2))
    extent = tuple(min(a.extent[i], (a.out_shape[1 + i] - 1) * sa[i] - a.padding[i] + a.kernel[i])
                   for i in range(2))
    c2, c0 = b.mask.shape[0], a.mask.shape[1]
    mask = np.zeros((c2, c0) + kernel, dtype=bool)
    for u in range(b.kernel[0]):
        for v in range(b.kernel[1]):
            bm = b.mask[:, :, u, v]
            if not bm.any():
                continue
            for uu in range(a.kernel[0]):
                for vv in range(a.kernel[1]):
                    am = a.mask[:, :, uu, vv]
                    if a.diag:
                        part = bm & np.diagonal(am)[None, :]
                    elif b.diag:
                        part = np.diagonal(bm)[:, None] & am
                    else:
                        part = (bm.astype(np.float32) @ am.astype(np.float32)) > 0
                    mask[:, :, u * sa[0] + uu, v * sa[1] + vv] |= part
    return ConvConn(a.in_shape, b.out_shape, kernel, stride, padding, mask, extent, a.diag and b.diag)


def _to_dense(c: ConvConn) -> DenseConn:
    """Expand a convolution into its synapse pattern (for a Flatten; heads are small)."""
    total = int(c.counts().sum())
    if total > MAX_DENSE_SYNAPSES:
        raise NeurodeployError(f"map: a flattened projection with {total:,} synapses is too large to analyse "
                               f"(limit {MAX_DENSE_SYNAPSES:,})")
    c0, h0, w0 = c.in_shape
    c1, h1, w1 = c.out_shape
    vr, vc = c.valid(0), c.valid(1)
    rows, cols = [], []
    for u in range(c.kernel[0]):
        ys = np.nonzero(vr[:, u])[0]
        for v in range(c.kernel[1]):
            xs = np.nonzero(vc[:, v])[0]
            oi = np.argwhere(c.mask[:, :, u, v])
            if not len(oi) or not len(ys) or not len(xs):
                continue
            yy, xx = np.meshgrid(ys, xs, indexing="ij")
            yy, xx = yy.ravel(), xx.ravel()
            r_in = yy * c.stride[0] - c.padding[0] + u
            c_in = xx * c.stride[1] - c.padding[1] + v
            rows.append((oi[:, 0:1] * h1 * w1 + (yy * w1 + xx)[None, :]).ravel())
            cols.append((oi[:, 1:2] * h0 * w0 + (r_in * w0 + c_in)[None, :]).ravel())
    sp = _sparse()
    n_out, n_in = c1 * h1 * w1, c0 * h0 * w0
    if rows:
        r, cc = np.concatenate(rows), np.concatenate(cols)
        m = sp.csr_matrix((np.ones(len(r), dtype=bool), (r, cc)), shape=(n_out, n_in))
    else:
        m = sp.csr_matrix((n_out, n_in), dtype=bool)
    m.sum_duplicates()
    return DenseConn(c.in_shape, c.out_shape, m.astype(bool))


def _apply(conn, node, name: str):
    """conn followed by one stateless node."""
    if isinstance(node, (nir.Conv2d,) + POOLS):
        if not isinstance(conn, ConvConn):
            raise NeurodeployError(f"map: {kind(node)} node '{name}' follows a flattened projection")
        return _compose(conn, _conv_of(node, conn.out_shape))
    if isinstance(node, nir.Flatten):
        d = _to_dense(conn) if isinstance(conn, ConvConn) else conn
        n = int(np.prod(d.out_shape))
        return DenseConn(d.in_shape, (n,), d.csr)
    if isinstance(node, (nir.Affine, nir.Linear)):
        d = _to_dense(conn) if isinstance(conn, ConvConn) else conn
        w = _sparse().csr_matrix(np.asarray(node.weight) != 0)
        if w.shape[1] != d.csr.shape[0]:
            raise NeurodeployError(f"map: {kind(node)} node '{name}' takes {w.shape[1]} inputs, gets "
                                   f"{d.csr.shape[0]}")
        m = (w.astype(np.int64) @ d.csr.astype(np.int64)).astype(bool).tocsr()
        return DenseConn(d.in_shape, (w.shape[0],), m)
    if isinstance(node, (nir.Scale, nir.Delay, nir.Input, nir.Output)):
        return conn             # elementwise / pass-through (a zero scale would only remove synapses)
    if isinstance(node, nir.Conv1d):
        raise NeurodeployError(f"map: Conv1d node '{name}' is not supported; map handles Conv2d, pooling, "
                               f"Flatten, Affine, Linear and Scale")
    raise NeurodeployError(f"map: node '{name}' ({kind(node)}) has no mapping rule")


# ============================================================================ graph analysis

@dataclass
class Path:
    """One chain of stateless nodes from a source population (or the host's Input) into a population."""
    source: str              # population name, or the Input node's name for host chains
    nodes: List[str]         # source side first
    conn: object             # ConvConn | DenseConn
    host: bool
    synapses: int = 0
    weight_values: int = 0   # most distinct nonzero weights any target neuron sees (last weighted node)
    weight_shape: tuple = ()  # the last weighted node's weight shape
    weight_input: tuple = ()  # the shape that node reads (before a Flatten right in front of it)


@dataclass
class Population:
    name: str
    kind: str
    shape: tuple
    neurons: int
    paths: List[Path] = field(default_factory=list)

    @property
    def grid(self) -> tuple:
        """(C, H, W): a 1-D population is (N, 1, 1)."""
        if len(self.shape) == 3:
            return tuple(self.shape)
        return (self.neurons, 1, 1)

    @property
    def synapses(self) -> int:
        return sum(p.synapses for p in self.paths if not p.host)

    @property
    def host_synapses(self) -> int:
        return sum(p.synapses for p in self.paths if p.host)


def _weight_values(node) -> int:
    w = getattr(node, "weight", None)
    if w is None:
        return 1
    w = np.asarray(w)
    w = w.reshape(w.shape[0], -1)
    return max((len(np.unique(r[r != 0])) for r in w), default=0)


def analyse(graph) -> Tuple[Dict[str, Population], List[str]]:
    """Populations in graph order with their incoming chains, and notes (host readout, ...)."""
    nodes, edges = flatten_graph(graph)
    order, _ = toposort(nodes, edges)
    pred: Dict[str, List[str]] = {n: [] for n in nodes}
    succ: Dict[str, List[str]] = {n: [] for n in nodes}
    for s, d in edges:
        pred[d].append(s)
        succ[s].append(d)
    pops: Dict[str, Population] = {}
    for n in order:
        node = nodes[n]
        if isinstance(node, POPULATIONS):
            shape = neuron_shape(node) or (1,)
            pops[n] = Population(n, kind(node), tuple(shape), int(np.prod(shape)))
    if not pops:
        raise NeurodeployError("map: the graph has no neuron populations to place")

    def shape_of(n):
        node = nodes[n]
        if isinstance(node, POPULATIONS):
            return pops[n].shape
        return tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))

    def chains(n, seen=()):
        """(source, [nodes from source side]) for every chain ending at n's input."""
        out = []
        for p in pred[n]:
            node = nodes[p]
            if isinstance(node, POPULATIONS):
                out.append((p, []))
            elif isinstance(node, nir.Input) and not pred[p]:
                out.append((p, []))
            elif p in seen:
                raise NeurodeployError(f"map: a cycle without a population through '{p}'")
            else:
                out.extend((src, rest + [p]) for src, rest in chains(p, seen + (p,)))
        return out

    for name, pop in pops.items():
        for src, chain in chains(name):
            host = not isinstance(nodes[src], POPULATIONS)
            conn = _identity(shape_of(src))
            weighted, w_in, unflat = None, (), None
            for n in chain:
                before = tuple(conn.out_shape)
                if isinstance(nodes[n], (nir.Conv2d, nir.Affine, nir.Linear)):
                    weighted, w_in = nodes[n], unflat or before
                unflat = before if isinstance(nodes[n], nir.Flatten) else None
                conn = _apply(conn, nodes[n], n)
            out = tuple(conn.out_shape)
            if int(np.prod(out)) != pop.neurons:
                raise NeurodeployError(f"map: chain {' -> '.join([src] + chain + [name])} delivers shape {out}, "
                                       f"population '{name}' has {pop.shape}")
            if len(pop.shape) == 3 and isinstance(conn, DenseConn):
                conn = DenseConn(conn.in_shape, pop.shape, conn.csr)
            if len(pop.shape) != 3 and isinstance(conn, ConvConn):
                conn = _to_dense(conn)
                conn = DenseConn(conn.in_shape, (pop.neurons,), conn.csr)
            syn = int(conn.counts().sum())
            pop.paths.append(Path(src, chain, conn, host, syn, _weight_values(weighted) if weighted is not None else 1,
                                  tuple(np.shape(weighted.weight)) if weighted is not None else (), w_in))
    notes = []
    readout = [n for n in order if isinstance(nodes[n], nir.Output)]
    for name in pops:
        if not any(isinstance(nodes[d], POPULATIONS) or _reaches_population(d, succ, nodes) for d in succ[name]):
            if readout:
                notes.append(f"{name} is read out by the host (its spikes leave the chip)")
    return pops, notes


def _reaches_population(n, succ, nodes, seen=()) -> bool:
    if isinstance(nodes[n], POPULATIONS):
        return True
    return any(d not in seen and _reaches_population(d, succ, nodes, seen + (n,)) for d in succ[n])


# ============================================================================ tiles

@dataclass(frozen=True)
class Region:
    """A block of a population's (C, H, W) grid: channels [c0, c1) x rows [y0, y1) x columns [x0, x1)."""
    c0: int
    c1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def size(self) -> int:
        return (self.c1 - self.c0) * (self.y1 - self.y0) * (self.x1 - self.x0)

    def flat(self, grid) -> np.ndarray:
        _, h, w = grid
        c, y, x = np.meshgrid(np.arange(self.c0, self.c1), np.arange(self.y0, self.y1),
                              np.arange(self.x0, self.x1), indexing="ij")
        return (c * h * w + y * w + x).ravel()

    def as_list(self) -> list:
        return [self.c0, self.c1, self.y0, self.y1, self.x0, self.x1]


def _blocks(n: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, size, n)
    return starts, np.minimum(starts + n, size)


def _indicator(n: int, size: int) -> np.ndarray:
    """(size, blocks) 0/1: which block of n an index falls in."""
    m = np.zeros((size, -(-size // n)), dtype=np.int64)
    m[np.arange(size), np.arange(size) // n] = 1
    return m


class _ConvPath:
    """One convolution-shaped chain into a population: per-tile sums for whole tilings at once."""

    def __init__(self, path: Path):
        self.path = path
        conn = path.conn
        self.conn = conn
        counts = conn.counts().astype(np.int64)
        self.cum = np.zeros(tuple(s + 1 for s in counts.shape), dtype=np.int64)
        self.cum[1:, 1:, 1:] = counts.cumsum(0).cumsum(1).cumsum(2)
        ch = conn.mask.any(axis=(2, 3)).astype(np.int64)                          # (C, C0)
        self.ch_cum = np.vstack([np.zeros((1, ch.shape[1]), np.int64), ch.cumsum(0)])
        taps = conn.mask.any(axis=1).astype(np.int64)                             # (C, kh, kw)
        self.tap_cum = np.concatenate([np.zeros((1,) + taps.shape[1:], np.int64), taps.cumsum(0)])
        kern = conn.mask.sum(axis=(1, 2, 3)).astype(np.int64)
        self.kern_cum = np.concatenate([[0], kern.cumsum()])
        self._cover_cache: Dict[tuple, np.ndarray] = {}
        self._class_cache: Dict[tuple, Tuple[int, float]] = {}

    def _cover(self, axis: int, taps: tuple, n: int) -> np.ndarray:
        """(blocks, input size) bool: input positions read by each block of n outputs with these taps."""
        key = (axis, taps, n)
        if key not in self._cover_cache:
            c = self.conn
            s, p, ext, size = c.stride[axis], c.padding[axis], c.extent[axis], c.in_shape[1 + axis]
            n_out = c.out_shape[1 + axis]
            starts, ends = _blocks(n, n_out)
            cov = np.zeros((len(starts), size), dtype=bool)
            t = np.array(taps, dtype=np.int64)
            if len(t):
                y = np.arange(n_out)
                r = y[:, None] * s - p + t[None, :]                              # (n_out, taps)
                ok = (r >= 0) & (r < ext)
                blk = np.repeat(np.arange(len(starts)), ends - starts)          # block of each output
                bi = np.broadcast_to(blk[:, None], r.shape)[ok]
                cov[bi, r[ok]] = True
            self._cover_cache[key] = cov
        return self._cover_cache[key]

    def _covers(self, axis: int, used: np.ndarray, n: int) -> np.ndarray:
        """_cover for every channel group's taps (groups share the few distinct tap sets)."""
        codes = used.astype(np.int64) @ (np.int64(1) << np.arange(used.shape[1], dtype=np.int64))
        uniq, inv = np.unique(codes, return_inverse=True)
        bits = np.arange(used.shape[1])
        cov = np.stack([self._cover(axis, tuple(int(i) for i in np.nonzero((int(c) >> bits) & 1)[0]), n)
                        for c in uniq])
        return cov[inv]

    def _classes(self, axis: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per block of n outputs: (distinct valid-tap patterns over the inputs it reads, their taps / k)."""
        key = (axis, n)
        if key not in self._class_cache:
            c = self.conn
            s, p, ext, k = c.stride[axis], c.padding[axis], c.extent[axis], c.kernel[axis]
            starts, ends = _blocks(n, c.out_shape[1 + axis])
            pats, fac = [], []
            for lo, hi in zip(starts, ends):
                u = np.arange(ext)[:, None] + p - np.arange(lo, hi)[None, :] * s
                valid = np.zeros((ext, k), dtype=bool)
                ii, oo = np.nonzero((u >= 0) & (u < k))
                valid[ii, u[ii, oo]] = True
                q = np.unique(valid[valid.any(axis=1)], axis=0)
                pats.append(len(q))
                fac.append(float(q.sum()) / k)
            self._class_cache[key] = (np.array(pats, dtype=np.float64), np.array(fac))
        return self._class_cache[key]

    def evaluate(self, shape) -> dict:
        """Per-tile arrays (G, B, E) for tiles of shape (channels, rows, columns)."""
        cc, rr, ww = shape
        C, H, W = self.conn.out_shape
        c0, c1 = _blocks(cc, C)
        y0, y1 = _blocks(rr, H)
        x0, x1 = _blocks(ww, W)
        cum = self.cum
        C1, Y1, X1 = c1[:, None, None], y1[None, :, None], x1[None, None, :]
        C0, Y0, X0 = c0[:, None, None], y0[None, :, None], x0[None, None, :]
        syn = (cum[C1, Y1, X1] - cum[C0, Y1, X1] - cum[C1, Y0, X1] - cum[C1, Y1, X0]
               + cum[C0, Y0, X1] + cum[C0, Y1, X0] + cum[C1, Y0, X0] - cum[C0, Y0, X0])
        chans = (self.ch_cum[c1] - self.ch_cum[c0]) > 0                           # (G, C0)
        taps = (self.tap_cum[c1] - self.tap_cum[c0]) > 0                          # (G, kh, kw)
        rows = self._covers(0, taps.any(axis=2), rr)                             # (G, B, H0)
        cols = self._covers(1, taps.any(axis=1), ww)                             # (G, E, W0)
        nch = chans.sum(axis=1).astype(np.float64)
        nrow, ncol = rows.sum(axis=2).astype(np.float64), cols.sum(axis=2).astype(np.float64)
        pr, fr = self._classes(0, rr)
        pc, fc = self._classes(1, ww)
        kern = (self.kern_cum[c1] - self.kern_cum[c0]).astype(np.float64)
        syn = syn.astype(np.float64)
        return {"syn": syn,        # no tile reads more distinct source neurons than it has synapses
                "axons": np.minimum(nch[:, None, None] * nrow[:, :, None] * ncol[:, None, :], syn),
                "pixels": nrow[:, :, None] * ncol[:, None, :],
                "shared_lists": nch[:, None, None] * pr[None, :, None] * pc[None, None, :],
                "shared_entries": kern[:, None, None] * fr[None, :, None] * fc[None, None, :],
                "window": (chans, rows, cols)}


class _DensePath:
    """One chain into a population given as a sparse synapse pattern: per-tile loops (heads are small)."""

    def __init__(self, path: Path, grid):
        self.path, self.grid = path, grid
        self.csr = path.conn.csr

    def evaluate(self, shape) -> dict:
        regions = _regions(self.grid, shape)
        G, B, E = _counts(self.grid, shape)
        syn = np.zeros(len(regions))
        axons = np.zeros(len(regions))
        cols = []
        for i, r in enumerate(regions):
            sub = self.csr[r.flat(self.grid)]
            syn[i] = sub.nnz
            u = np.unique(sub.indices)
            axons[i] = len(u)
            cols.append(u)
        shp = (G, B, E)
        return {"syn": syn.reshape(shp), "axons": axons.reshape(shp), "pixels": axons.reshape(shp),
                "shared_lists": None, "shared_entries": None, "window": cols}


def _counts(grid, shape) -> Tuple[int, int, int]:
    return tuple(-(-g // s) for g, s in zip(grid, shape))


def _regions(grid, shape) -> List["Region"]:
    (c0, c1), (y0, y1), (x0, x1) = (_blocks(s, g) for s, g in zip(shape, grid))
    return [Region(int(a), int(b), int(c), int(d), int(e), int(f))
            for a, b in zip(c0, c1) for c, d in zip(y0, y1) for e, f in zip(x0, x1)]


def _list_bits(spec: HardwareSpec, lists, entries, bits_per_entry: float):
    """Bits of `lists` synapse lists holding `entries` entries in all, with the chip's list layout
    (arrays broadcast)."""
    lists = np.asarray(lists, dtype=np.float64)
    entries = np.asarray(entries, dtype=np.float64)
    per = np.divide(entries, lists, out=np.zeros_like(entries), where=lists > 0)
    chunk = spec.m("synapses_per_list")
    header = float(spec.m("list_header_bits", 0))
    word = float(spec.m("word_bits", 1))
    n_chunks = np.ceil(per / chunk) if chunk else np.ones_like(per)
    one = per * bits_per_entry + n_chunks * header
    bits = lists * np.ceil(one / word) * word
    return np.where((lists > 0) & (entries > 0), bits, 0.0)


# ============================================================================ results

@dataclass
class Tile:
    population: str
    region: Region
    neurons: int
    synapses: int
    usage: Dict[str, float]              # resource -> amount (neurons, in_axons, syn_bits, mem_bits, out_axons)
    encodings: Dict[str, str]            # source -> encoding chosen
    core: int = -1
    by_source: Dict[str, int] = field(default_factory=dict)   # synapses from each source population
    copy: bool = False                   # TrueNorth fan-out copies (splitter neurons), not the population's own

    def to_dict(self) -> dict:
        return {"population": self.population, "region": self.region.as_list(), "neurons": self.neurons,
                "synapses": self.synapses, "usage": dict(self.usage), "encodings": dict(self.encodings),
                "core": self.core, "by_source": dict(self.by_source), "copy": self.copy}


@dataclass
class PopulationPlacement:
    name: str
    kind: str
    shape: tuple
    neurons: int
    synapses: int                         # placed on cores (chains from populations)
    host_synapses: int                    # computed by the host (chains from the Input)
    max_fan_in: int
    tiles: List[Tile]
    binding: Optional[str]                # the limit that stops a larger tile (None: one tile holds it all)
    why: str
    cores: List[int] = field(default_factory=list)
    unplaceable: Optional[str] = None     # the limit a single neuron already breaks
    sources: List[str] = field(default_factory=list)
    copies: int = 0                       # TrueNorth: splitter neurons its fan-out needs (on extra cores)
    copy_tiles: List[Tile] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "neurons": self.neurons,
                "synapses": self.synapses, "host_synapses": self.host_synapses, "max_fan_in": self.max_fan_in,
                "tiles": len(self.tiles), "cores": self.cores, "binding": self.binding, "why": self.why,
                "unplaceable": self.unplaceable, "sources": self.sources, "copies": self.copies,
                "copy_cores": sorted({t.core for t in self.copy_tiles}),
                "encodings": sorted({e for t in self.tiles for e in t.encodings.values()})}


@dataclass
class Core:
    index: int
    chip: int
    tiles: List[Tile]
    usage: Dict[str, float]
    limits: Dict[str, float] = field(default_factory=dict)     # this core's limits (Speck's differ per core)

    def populations(self) -> List[str]:
        return list(dict.fromkeys(t.population for t in self.tiles))

    def utilisation(self) -> Dict[str, float]:
        return {k: (self.usage.get(k, 0.0) / v if v else 0.0) for k, v in self.limits.items()}

    def to_dict(self) -> dict:
        return {"index": self.index, "chip": self.chip, "populations": self.populations(),
                "usage": dict(self.usage), "limits": dict(self.limits), "utilisation": self.utilisation()}


@dataclass
class Mapping:
    target: str
    description: str
    fits: bool
    verdict: str
    populations: List[PopulationPlacement]
    cores: List[Core]
    chips: int
    boards: int
    limits: Dict[str, float]
    cores_per_chip: int
    chips_per_board: Optional[int]
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    spec: Optional[HardwareSpec] = None

    @property
    def unplaceable(self) -> List[PopulationPlacement]:
        return [p for p in self.populations if p.unplaceable]

    def utilisation(self) -> Dict[str, float]:
        """Used / available over the mapped cores, per limited resource."""
        out = {}
        for res in sorted({r for c in self.cores for r in c.limits}):
            used = sum(c.usage.get(res, 0.0) for c in self.cores)
            have = sum(c.limits.get(res, 0.0) for c in self.cores)
            out[res] = used / have if have else 0.0
        return out

    def totals(self) -> dict:
        return {"cores": len(self.cores), "chips": self.chips, "boards": self.boards,
                "neurons": sum(p.neurons for p in self.populations),
                "synapses": sum(p.synapses for p in self.populations),
                "host_synapses": sum(p.host_synapses for p in self.populations),
                "utilisation": self.utilisation()}

    def to_dict(self, cores: bool = True) -> dict:
        d = {"target": self.target, "description": self.description, "fits": self.fits, "verdict": self.verdict,
             "totals": self.totals(), "limits": dict(self.limits), "cores_per_chip": self.cores_per_chip,
             "chips_per_board": self.chips_per_board,
             "populations": [p.to_dict() for p in self.populations],
             "unplaceable": [{"population": p.name, "limit": p.unplaceable} for p in self.unplaceable],
             "notes": list(self.notes), "warnings": list(self.warnings)}
        if cores:
            d["cores"] = [c.to_dict() for c in self.cores]
        if self.spec is not None:
            d["constants"] = self.spec.to_dict()
        return d


RESOURCE_WORDS = {"neurons": "neurons per core", "in_axons": "input axons per core",
                  "out_axons": "output axons per core", "syn_bits": "synaptic memory per core",
                  "mem_bits": "core memory (state + synapses)"}


# ============================================================================ the mapper

def _sizes(n: int) -> List[int]:
    """Block sizes giving distinct block counts, largest first (n, ceil(n/2), ceil(n/3), ...)."""
    return sorted({-(-n // k) for k in range(1, n + 1)}, reverse=True)


@dataclass
class _Choice:
    shape: Optional[tuple]
    tiles: List[Tile]
    binding: Optional[str]
    why: str
    unplaceable: Optional[str] = None


class _PopTiler:
    """Tile search for one population under the per-core limits (module docstring, "Tiles")."""

    def __init__(self, pop: Population, spec: HardwareSpec):
        self.pop, self.spec = pop, spec
        self.limits = spec.limits()
        self.grid = pop.grid
        self.paths = []
        for pa in pop.paths:
            if pa.host:
                continue
            if isinstance(pa.conn, ConvConn) and tuple(pa.conn.out_shape) == tuple(self.grid):
                self.paths.append(_ConvPath(pa))
            else:
                self.paths.append(_DensePath(pa, self.grid))
        self.state_bits = float(spec.m("neuron_state_bits", 0))
        self.copies = bool(spec.m("fanout_copies", False))
        self.encodings = spec.encodings
        self.out_windows: list = []          # windows of destination tiles that read this population
        self._cache: Dict[tuple, dict] = {}
        if "out_axons" in self.limits:
            self.fan_cap = self.limits["out_axons"]
        elif self.copies:
            self.fan_cap = self.limits.get("neurons")
        else:
            self.fan_cap = None

    # ------------------------------------------------------------ one tiling, all tiles at once
    def evaluate(self, shape) -> dict:
        if shape in self._cache:
            return self._cache[shape]
        spec = self.spec
        G, B, E = _counts(self.grid, shape)
        (c0, c1), (y0, y1), (x0, x1) = (_blocks(sz, g) for sz, g in zip(shape, self.grid))
        neurons = ((c1 - c0)[:, None, None] * (y1 - y0)[None, :, None] * (x1 - x0)[None, None, :]).astype(np.float64)
        wb = float(spec.m("weight_bits", 8))
        ib = float(spec.m("sparse_index_bits", 0))
        pix_axons = bool(spec.m("population_axons", False))
        bits = np.zeros((G, B, E))
        axons_by: Dict[Tuple[str, str], np.ndarray] = {}
        syn_by: Dict[str, np.ndarray] = {}
        chosen: Dict[str, np.ndarray] = {}
        pairs: Dict[str, float] = {}
        lim = self.limits
        for pt in self.paths:
            ev = pt.evaluate(shape)
            src = pt.path.source
            options = []
            for e in self.encodings:
                if e == "sparse":
                    options.append((e, ev["axons"], _list_bits(spec, ev["axons"], ev["syn"], wb + ib)))
                elif e == "dense":
                    options.append((e, ev["axons"], _list_bits(spec, ev["axons"], ev["axons"] * neurons, wb)))
                elif e == "crossbar":
                    options.append((e, ev["axons"], ev["axons"] * neurons * wb))
                elif e == "shared" and ev["shared_lists"] is not None:
                    options.append((e, ev["pixels"] if pix_axons else ev["axons"],
                                    _list_bits(spec, ev["shared_lists"], ev["shared_entries"], wb + ib)))
            scores = []
            for _, ax, bt in options:
                sc = np.zeros((G, B, E))
                if "in_axons" in lim:
                    sc = np.maximum(sc, ax / lim["in_axons"])
                if "syn_bits" in lim:
                    sc = np.maximum(sc, bt / lim["syn_bits"])
                if "mem_bits" in lim:
                    sc = np.maximum(sc, (bt + neurons * self.state_bits) / lim["mem_bits"])
                scores.append(sc + 1e-12 * bt)
            best = np.argmin(np.stack(scores), axis=0)
            ax = np.choose(best, [o[1] for o in options])
            bt = np.choose(best, [o[2] for o in options])
            empty = ev["syn"] == 0
            ax, bt = np.where(empty, 0.0, ax), np.where(empty, 0.0, bt)
            bits += bt
            for i, (e, _, _) in enumerate(options):
                key = (src, e)
                here = np.where(best == i, ax, 0.0)
                axons_by[key] = np.maximum(axons_by.get(key, 0.0), here)
            syn_by[src] = syn_by.get(src, 0.0) + ev["syn"]
            chosen.setdefault(src, np.array([o[0] for o in options], dtype=object)[best])
            pairs[src] = pairs.get(src, 0.0) + float(ev["axons"].sum())
        in_axons = sum(axons_by.values()) if axons_by else np.zeros((G, B, E))
        usage = {"neurons": neurons, "in_axons": in_axons * np.ones((G, B, E)), "syn_bits": bits,
                 "mem_bits": bits + neurons * self.state_bits}
        if self.out_windows:
            usage["out_axons"] = self.out_pairs(shape)
        res = {"shape": shape, "usage": usage, "syn_by": syn_by, "chosen": chosen, "pairs": pairs,
               "n_tiles": G * B * E, "groups": G}
        worst = None
        for r, limit in lim.items():
            u = usage.get(r)
            if u is None:
                continue
            m = float(u.max())
            if m > limit + 1e-9 and (worst is None or m / limit > worst[1] / worst[2]):
                worst = (r, m, limit)
        res["fail"] = worst
        self._cache[shape] = res
        return res

    def out_pairs(self, shape) -> np.ndarray:
        """(G, B, E): (neuron, destination tile) pairs of each tile of this population, i.e. its output
        axons (or, on TrueNorth, the neuron copies it needs)."""
        cc, rr, ww = shape
        C0, H0, W0 = self.grid
        G, B, E = _counts(self.grid, shape)
        out = np.zeros((G, B, E))
        for w in self.out_windows:
            if w[0] == "conv":
                _, chans, rowsum, colsum = w
                co = chans.astype(np.int64) @ _indicator(cc, C0)
                ro = rowsum @ _indicator(rr, H0)
                lo = colsum @ _indicator(ww, W0)
                out += np.einsum("gs,gb,ge->sbe", co, ro, lo)
            else:
                f = w[1]
                c, y, x = f // (H0 * W0), (f // W0) % H0, f % W0
                tid = ((c // cc) * B + y // rr) * E + x // ww
                out += np.bincount(tid, minlength=G * B * E).reshape(G, B, E)
        return out

    def windows_for(self, shape, source: str) -> list:
        """This population's tiles' input windows in `source` (for the source's output axons)."""
        out = []
        for pt in self.paths:
            if pt.path.source != source:
                continue
            ev = pt.evaluate(shape)
            if isinstance(pt, _ConvPath):
                chans, rows, cols = ev["window"]
                out.append(("conv", chans, rows.sum(axis=1).astype(np.int64), cols.sum(axis=1).astype(np.int64)))
            else:
                cols = ev["window"]
                out.append(("dense", np.concatenate(cols) if cols else np.zeros(0, np.int64)))
        return out

    # ------------------------------------------------------------ search
    def _ok(self, shape) -> bool:
        return self.evaluate(shape)["fail"] is None

    def _objective(self, ev) -> float:
        cost = float(ev["n_tiles"])
        if self.fan_cap:
            cost += sum(ev["pairs"].values()) / self.fan_cap
        return cost + 1e-3 * ev["groups"]

    def search(self) -> _Choice:
        C, H, W = self.grid
        whole = (C, H, W)
        if self._ok(whole):
            return self._choice(whole, None, "fits in one tile")
        cands = []
        ch = list(range(C, 0, -1))                  # whole channels per tile: fill cores, a remainder may merge
        spatial = [(rr, W) for rr in _sizes(H)] + [(1, ww) for ww in _sizes(W)[1:]]
        for rr, ww in spatial:
            if not self._ok((1, rr, ww)):
                continue
            lo, hi = len(ch) - 1, 0                 # ch[lo] = 1 is feasible; find the largest feasible
            while lo - hi > 1:
                mid = (lo + hi) // 2
                if self._ok((ch[mid], rr, ww)):
                    lo = mid
                else:
                    hi = mid
            cc = ch[hi] if self._ok((ch[hi], rr, ww)) else ch[lo]
            cands.append((cc, rr, ww))
            if cc == C and ww == W:
                break
        if not cands:
            res, need, lim = self.evaluate((1, 1, 1))["fail"]
            why = f"one neuron alone needs {_amount(res, need)} > {_amount(res, lim)} {RESOURCE_WORDS.get(res, res)}"
            return _Choice(None, [], res, why, res)
        best = min(cands, key=lambda sh: self._objective(self.evaluate(sh)))
        return self._choice(best, *self._binding(best))

    def _binding(self, shape) -> Tuple[Optional[str], str]:
        cc, rr, ww = shape
        C, H, W = self.grid
        words = f"tiles of {cc} neurons" if H == W == 1 else f"tiles of {cc} ch x {rr} rows x {ww} cols"
        bigger = None
        if cc < C:
            bigger = (cc + 1, rr, ww)
        elif ww < W:
            bigger = (cc, rr, ww + 1)
        elif rr < H:
            bigger = (cc, rr + 1, ww)
        if bigger is None:
            return None, words
        fail = self.evaluate(bigger)["fail"]
        if fail is None:
            return "fan-out", words + " (larger tiles fit, but would spread each source neuron over more cores)"
        res, need, lim = fail
        return res, (words + f"; one more needs {_amount(res, need)} > {_amount(res, lim)} "
                     f"{RESOURCE_WORDS.get(res, res)}")

    def _choice(self, shape, binding, why) -> _Choice:
        ev = self.evaluate(shape)
        regions = _regions(self.grid, shape)
        G, B, E = _counts(self.grid, shape)
        tiles = []
        for i, r in enumerate(regions):
            g, b, e = i // (B * E), (i // E) % B, i % E
            usage = {k: float(v[g, b, e]) for k, v in ev["usage"].items()}
            by = {src: int(round(float(a[g, b, e]))) for src, a in ev["syn_by"].items()}
            enc = {src: str(a[g, b, e]) for src, a in ev["chosen"].items() if by.get(src)}
            tiles.append(Tile(self.pop.name, r, r.size, sum(by.values()), usage, enc, by_source=by))
        return _Choice(shape, tiles, binding, why)


def _max_fan_in(pop: Population) -> int:
    """The most synapses any neuron of the population receives from other populations (all chains summed)."""
    total = np.zeros(pop.neurons, dtype=np.int64)
    for pa in pop.paths:
        if not pa.host:
            total += pa.conn.counts().reshape(-1)
    return int(total.max()) if pop.neurons else 0


def _amount(res: str, v: float) -> str:
    if res in ("syn_bits", "mem_bits"):
        return f"{v / 8192:.1f} KiB"
    return f"{v:,.0f}"


def map_graph(graph, target: Union[str, Path, en.Target, HardwareSpec]) -> Mapping:
    """Place `graph` on `target`'s cores and chips (see the module docstring for the model)."""
    spec = load_spec(target)
    pops, notes = analyse(graph)
    if spec.model == "layer_per_core":
        return _map_layers(pops, spec, notes)
    limits = spec.limits()
    tilers = {name: _PopTiler(p, spec) for name, p in pops.items()}
    order = list(pops)
    found: Dict[str, _Choice] = {}
    for name in reversed(order):                 # destinations first: a tile knows its output axons
        tiler = tilers[name]
        for d in order:
            if d in found and found[d].shape is not None and any(
                    pa.source == name and not pa.host for pa in pops[d].paths):
                tiler.out_windows.extend(tilers[d].windows_for(found[d].shape, name))
        found[name] = tiler.search()
    placements = []
    for name, p in pops.items():
        ch = found[name]
        placements.append(PopulationPlacement(name, p.kind, p.shape, p.neurons, p.synapses, p.host_synapses,
                                              _max_fan_in(p), ch.tiles, ch.binding, ch.why, unplaceable=ch.unplaceable,
                                              sources=list(dict.fromkeys(pa.source for pa in p.paths))))
    if spec.m("fanout_copies", False):
        _add_copies(placements, limits)
    cores = _pack([t for pl in placements for t in pl.tiles + pl.copy_tiles], limits)
    for pl in placements:
        pl.cores = sorted({t.core for t in pl.tiles})
    per_chip = int(spec.m("cores_per_chip"))
    for c in cores:
        c.chip = c.index // per_chip
    chips = math.ceil(len(cores) / per_chip) if cores else 0
    per_board = spec.m("chips_per_board")
    boards = math.ceil(chips / int(per_board)) if per_board and chips else (1 if chips else 0)
    warnings = _precision_warnings(pops, spec)
    bad = [pl for pl in placements if pl.unplaceable]
    if bad:
        verdict = ("DOES NOT FIT " + spec.name + ": " + "; ".join(
            f"{pl.name} cannot be placed: {pl.why}" for pl in bad[:3]) +
            (f"; and {len(bad) - 3} more layers" if len(bad) > 3 else "") +
            f" (the other {len(placements) - len(bad)} populations take {len(cores)} cores)")
    elif chips <= 1:
        verdict = f"fits on one {spec.name} chip: {len(cores)} of {per_chip} cores"
    else:
        verdict = (f"needs {chips} {spec.name} chips ({len(cores)} cores at {per_chip} per chip)"
                   + (f", {boards} board{'s' if boards > 1 else ''} of {per_board} chips" if per_board else ""))
    return Mapping(spec.name, spec.description, not bad, verdict, placements, cores, chips, boards, limits, per_chip,
                   int(per_board) if per_board else None, notes, warnings, spec)


def _add_copies(placements: List[PopulationPlacement], limits: Dict[str, float]) -> None:
    """TrueNorth: a neuron reaches one axon of one core, so a neuron whose spikes are needed on k cores
    is copied by splitter neurons. A population whose tiles have P (neuron, destination core) pairs
    for N neurons needs at least P - N copies (each neuron serves one destination itself); they sit
    on splitter cores of `neurons_per_core` neurons, each copy on its own axon."""
    per = int(limits["neurons"])
    for pl in placements:
        pairs = sum(t.usage.get("out_axons", 0.0) for t in pl.tiles)
        extra = int(round(pairs)) - pl.neurons
        if extra <= 0:
            continue
        pl.copies = extra
        for start in range(0, extra, per):
            n = min(per, extra - start)
            pl.copy_tiles.append(Tile(pl.name, Region(0, 0, 0, 0, 0, 0), n, 0,
                                      {"neurons": float(n), "in_axons": float(min(n, limits.get("in_axons", n)))},
                                      {}, copy=True))


#: first fit looks back over this many most recently opened cores (a compiler places layer by layer)
PACK_WINDOW = 64


def _pack(tiles: List[Tile], limits: Dict[str, float]) -> List[Core]:
    """First fit, in graph order: a tile goes to the first of the last PACK_WINDOW open cores where
    every resource still fits, else to a new core."""
    keys = sorted(limits)
    cap = np.array([limits[k] for k in keys], dtype=np.float64) + 1e-9
    used = np.zeros((PACK_WINDOW, len(keys)))
    ids = np.full(PACK_WINDOW, -1)
    cores: List[Core] = []
    for t in tiles:
        need = np.array([t.usage.get(k, 0.0) for k in keys])
        ok = np.nonzero((ids >= 0) & np.all(used + need <= cap, axis=1))[0]
        if len(ok):
            slot = int(ok[np.argmin(ids[ok])])
        else:                                       # an unused slot (-1), else the oldest core's
            slot = int(np.argmin(ids))
            cores.append(Core(len(cores), 0, [], {}))
            ids[slot], used[slot] = len(cores) - 1, 0.0
        used[slot] += need
        i = int(ids[slot])
        cores[i].tiles.append(t)
        t.core = i
    for c in cores:
        c.usage = {k: float(sum(t.usage.get(k, 0.0) for t in c.tiles)) for k in set(keys) | {"neurons"}}
        c.limits = dict(limits)
    return cores


def _precision_warnings(pops: Dict[str, Population], spec: HardwareSpec) -> List[str]:
    out = []
    limit = spec.m("weight_values_per_neuron")
    if limit:
        worst = [(p.name, max(pa.weight_values for pa in p.paths)) for p in pops.values() if p.paths]
        worst = [(n, v) for n, v in worst if v > limit]
        if worst:
            n, v = max(worst, key=lambda x: x[1])
            out.append(f"{spec.name} neurons have {limit} weight values (axon types); {len(worst)} populations "
                       f"need more (most: {n}, {v} distinct weights per neuron): the weights would have to be "
                       f"retrained, the mapping counts places only")
    return out


# ---------------------------------------------------------------------------- Speck: one layer per core

def _pow2(x) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def _map_layers(pops: Dict[str, Population], spec: HardwareSpec, notes) -> Mapping:
    kernel_mem = [int(v) for v in str(spec.m("kernel_memory")).split(",")]
    neuron_mem = [int(v) for v in str(spec.m("neuron_memory")).split(",")]
    per_chip = int(spec.m("cores_per_chip"))
    dest_limit = int(spec.m("destinations", 2))
    needs = {}
    for name, p in pops.items():
        c1, h, w = p.grid
        kernel = 0
        for pa in p.paths:          # sinabs DynapcnnLayer.memory_summary: c 2^(ceil log2(kh kw) + ceil log2 f)
            if len(pa.weight_shape) == 4:
                _, c0, kh, kw = pa.weight_shape
            elif len(pa.weight_shape) == 2:          # a Linear layer becomes a convolution over its input map
                shp = pa.weight_input if len(pa.weight_input) == 3 else (pa.weight_shape[1], 1, 1)
                c0, kh, kw = shp
            else:                                    # pooling only: no kernel stored
                continue
            kernel += c0 * _pow2(kh * kw) * _pow2(c1)
        neurons = c1 * _pow2(h) * _pow2(w)
        needs[name] = (kernel, neurons)
    # destinations per layer
    dests = {n: [d for d, p in pops.items() if any(pa.source == n and not pa.host for pa in p.paths)] for n in pops}
    # bipartite matching of layers to cores (augmenting paths)
    names = list(pops)
    match_core: Dict[int, str] = {}

    def fits(n, c):
        k, nn = needs[n]
        return k <= kernel_mem[c] and nn <= neuron_mem[c]

    def assign(n, seen):
        for c in range(per_chip):
            if fits(n, c) and c not in seen:
                seen.add(c)
                if c not in match_core or assign(match_core[c], seen):
                    match_core[c] = n
                    return True
        return False

    unplaceable = {}
    for n in names:
        k, nn = needs[n]
        if not any(fits(n, c) for c in range(per_chip)):
            res = "kernel memory" if k > max(kernel_mem) else "neuron memory"
            have = max(kernel_mem) if res == "kernel memory" else max(neuron_mem)
            unplaceable[n] = f"needs {k if res == 'kernel memory' else nn:,} {res} entries > {have:,} on any core"
        elif len(dests[n]) > dest_limit:
            unplaceable[n] = f"sends to {len(dests[n])} layers > {dest_limit} destinations per layer"
    assigned = {}
    for n in names:
        if n in unplaceable:
            continue
        if assign(n, set()):
            pass
    for c, n in match_core.items():
        assigned[n] = c
    placements, cores = [], []
    for n in names:
        p = pops[n]
        k, nn = needs[n]
        region = Region(0, p.grid[0], 0, p.grid[1], 0, p.grid[2])
        tile = Tile(n, region, p.neurons, p.synapses, {"kernel": float(k), "neuron_memory": float(nn)}, {})
        why, bad = "one layer per core", unplaceable.get(n)
        if bad:
            why = bad
        elif n not in assigned:
            bad = why = f"no core left: {len(pops)} layers > {per_chip} cores"
        if bad:
            tiles = []
        else:
            tile.core = assigned[n]
            tiles = [tile]
        placements.append(PopulationPlacement(n, p.kind, p.shape, p.neurons, p.synapses, p.host_synapses,
                                              _max_fan_in(p), tiles, None if not bad else "layer", why,
                                              [tile.core] if tiles else [],
                                              bad, list(dict.fromkeys(pa.source for pa in p.paths))))
    for c in sorted(set(assigned.values())):
        tl = [pl.tiles[0] for pl in placements if pl.tiles and pl.tiles[0].core == c]
        cores.append(Core(c, 0, tl, dict(tl[0].usage), {"kernel": float(kernel_mem[c]),
                                                        "neuron_memory": float(neuron_mem[c])}))
    bad = [pl for pl in placements if pl.unplaceable]
    if bad:
        verdict = (f"DOES NOT FIT {spec.name}: {len(bad)} of {len(placements)} layers cannot be placed "
                   f"(first: {bad[0].name}: {bad[0].why})")
    else:
        verdict = f"fits on one {spec.name}: {len(cores)} of {per_chip} cores (one layer each)"
    notes = list(notes) + ["Speck takes events: a real-valued (direct-encoded) input must be turned into events "
                           "first; its pooling happens on a layer's output, counted here with the next layer"]
    return Mapping(spec.name, spec.description, not bad, verdict, placements, cores, 1 if cores else 0,
                   1 if cores else 0, {}, per_chip, 1, notes, [], spec)


# ============================================================================ time and energy

@dataclass
class Latency:
    target: str
    model: str                       # event | tick | none
    step_s: Optional[float]
    inference_s: Optional[float]
    timesteps: int
    basis: str                       # "measured counts" | "upper bound: every synapse active every step" | ...
    busiest_core: Optional[int] = None
    barrier_s: float = 0.0

    @property
    def throughput(self) -> Optional[float]:
        return 1.0 / self.inference_s if self.inference_s else None

    def to_dict(self) -> dict:
        return {"target": self.target, "model": self.model, "step_s": self.step_s, "inference_s": self.inference_s,
                "timesteps": self.timesteps, "inferences_per_s": self.throughput, "basis": self.basis,
                "busiest_core": self.busiest_core, "barrier_s": self.barrier_s}


def latency(mapping: Mapping, timesteps: int, counters=None) -> Latency:
    """Time per step and per inference on the mapped cores (module docstring, "Time and energy")."""
    spec = mapping.spec
    model = spec.timing_model
    if model not in ("event", "tick") or not mapping.fits:
        why = "the network does not fit" if model in ("event", "tick") else "no published timing model"
        return Latency(spec.name, model, None, None, timesteps, why)
    if model == "tick":
        tick = spec.seconds("tick")
        return Latency(spec.name, model, tick, tick * timesteps, timesteps, "fixed tick (real-time operation)")
    t_syn, t_act, t_in, t_sp = (spec.seconds(k) for k in ("synop", "neuron_update_active",
                                                            "neuron_update_inactive", "spike"))
    barrier = spec.seconds("barrier")
    pops = {p.name: p for p in mapping.populations}
    steps = max(timesteps, 1)
    rate = {}                                              # per population: spikes, active fraction per neuron-step
    if counters is not None:
        n = max(counters.samples, 1)
        for name, p in pops.items():
            pc = counters.populations.get(name)
            if pc is None or not pc.neuron_updates:
                rate[name] = (0.0, 0.0)
                continue
            active = en.active_updates(pc) / pc.neuron_updates
            rate[name] = (pc.spikes / (n * steps * p.neurons), active)
        basis = "measured counts"
    else:
        rate = {name: (1.0, 1.0) for name in pops}
        basis = "upper bound: every neuron spikes and every synapse is active every step"
    work = np.zeros(len(mapping.cores))
    for p in mapping.populations:
        fire, active = rate[p.name]
        for t in p.tiles:
            synops = sum(rate.get(src, (0.0, 0.0))[0] * n for src, n in t.by_source.items())
            work[t.core] += (synops * t_syn + t.neurons * (active * t_act + (1 - active) * t_in)
                             + t.neurons * fire * t_sp)
    busiest = int(np.argmax(work)) if len(work) else None
    step = (float(work.max()) if len(work) else 0.0) + barrier
    return Latency(spec.name, model, step, step * timesteps, timesteps, basis, busiest, barrier)


def cost_of(mapping: Mapping, lat: Latency, dynamic_j: float) -> dict:
    """Static energy, total and energy-delay product of one inference (module docstring)."""
    spec = mapping.spec
    units = len(mapping.cores) if spec.static_scope == "core" else mapping.chips
    static_j = spec.static_watts * units * lat.inference_s if lat.inference_s is not None else None
    total = dynamic_j + (static_j or 0.0)
    power = spec.static.get("power")
    return {"dynamic_j": dynamic_j, "static_j": static_j, "total_j": total,
            "edp_js": total * lat.inference_s if lat.inference_s is not None else None,
            "static_power_w": spec.static_watts, "static_scope": spec.static_scope,
            "static_units": units, "static_source": power.source if power else None}


def hardware_cost(graph, target, counters, dynamic_j: float) -> dict:
    """Mapping summary, latency, static energy, total and energy-delay product of one inference."""
    mapping = map_graph(graph, target)
    from ..ir.conventions import conventions_of
    steps = counters.timesteps if counters is not None else (conventions_of(graph).timesteps or 1)
    lat = latency(mapping, steps, counters)
    return {"fits": mapping.fits, "verdict": mapping.verdict, "cores": len(mapping.cores), "chips": mapping.chips,
            "latency": lat.to_dict(), **cost_of(mapping, lat, dynamic_j)}


__all__ = ["HardwareSpec", "load_spec", "mapping_target_names", "analyse", "map_graph", "Mapping",
           "PopulationPlacement", "Tile", "Core", "Region", "Latency", "latency", "cost_of", "hardware_cost"]
