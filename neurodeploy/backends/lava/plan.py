"""NIR graph -> a deployment plan for Lava: populations, the paths between them, pipeline depths.

Pure numpy + nir (no Lava): the main side runs it at ``compile()`` to reject what the
backend cannot run with one clear error, and the worker runs it to build processes.

Canonical form. Every node is a *population* (LIF, IF, CubaLIF), a *linear op* (Conv2d, Affine,
Linear, SumPool2d, AvgPool2d, Flatten) or Input/Output. A *path* is a chain of linear
ops from a source (a population, or the Input) to a target population; several paths
into one population are summed (NIR fan-in), and a direct population -> population
edge is a path with an identity projection. Shared linear nodes are duplicated per
path (NIR's fan-in at a projection is a sum, and every op is linear, so
``P(a + b) = P(a) + P(b)``); projection biases are constants, folded per path into the
target's per-step drive, and AvgPool's 1/k^2 is folded into the weights.

Timing. NIR has no synaptic delay; Lava's Dense/Conv models deliver their output one
step later. A population's *depth* d is the number of projection steps on its longest
path from the input; its sample s, step k happens at global step s*T + k + d. Shorter
paths get a ``SpikeDelay`` so that every input of a population is aligned. Paths from
the Input are computed on the host (the real-valued direct-encoding input never
becomes spikes) and enter as the target's drive, with no delay.

Readout. An Output fed by linear ops (say global average pooling of the last
population) is evaluated on the host, in float64 with the biases, from the recorded
spike trains of its source populations.

Layout: populations keep NIR's (C, H, W) layout inside Lava; convolutions run in
Lava's (X, Y, C) layout behind transposing virtual ports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import nir
import numpy as np

from ...ir import neurons
from ...ir.nodes import SPIKING
from ...ir.topology import conv_output_size, pair

# what Lava runs: the spiking populations, and these linear nodes as Dense / Conv processes
POPULATION_TYPES = tuple(t.__name__ for t in SPIKING)
LINEAR_TYPES = tuple(t.__name__ for t in (nir.Conv2d, nir.Affine, nir.Linear, nir.SumPool2d, nir.AvgPool2d,
                                          nir.Flatten))


class PlanError(Exception):
    """A graph this backend cannot run; the message names the node."""


@dataclass
class Op:
    """One linear op in NIR layout (batch-free shapes). kind: conv | dense | reshape."""

    node: str
    nir_type: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    weight: Optional[np.ndarray] = None   # conv: (O, I/g, kh, kw); dense: (O, I)
    bias: Optional[np.ndarray] = None     # per output channel / unit
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    ones: bool = False                    # pooling: weight is all ones (times `scale`)
    scale: float = 1.0

    @property
    def is_projection(self) -> bool:
        return self.kind != "reshape"

    def effective_weight(self) -> Optional[np.ndarray]:
        return None if self.weight is None else self.weight * self.scale


@dataclass
class Path:
    source: str                 # population name, or "__input__"
    target: str
    ops: List[Op]
    delay: int = 0              # SpikeDelay steps inserted at the source side
    recurrent: bool = False     # source == target: the previous step's spikes, through a sample gate

    @property
    def steps(self) -> int:
        return sum(op.is_projection for op in self.ops)


@dataclass
class Pop:
    name: str
    nir_type: str
    shape: tuple
    decay: np.ndarray
    gain: np.ndarray
    leak: np.ndarray
    threshold: np.ndarray
    v_reset: np.ndarray
    depth: int = 0
    record: bool = False
    syn_decay: Optional[np.ndarray] = None   # CubaLIF: i = syn_decay * i + w_in * I
    w_in: Optional[np.ndarray] = None
    reset: str = "to_v_reset"                # ir.neurons.RESET_MODES

    @property
    def cuba(self) -> bool:
        return self.syn_decay is not None


@dataclass
class Plan:
    input_node: str
    input_shape: tuple
    output_node: str
    output_source: str
    pops: Dict[str, Pop] = field(default_factory=dict)
    paths: List[Path] = field(default_factory=list)
    readout: List[Path] = field(default_factory=list)   # linear paths into the Output (host)
    output_shape: tuple = ()
    preds: Dict[str, List[str]] = field(default_factory=dict)   # the NIR graph, for counting
    types: Dict[str, str] = field(default_factory=dict)

    def projection_ops(self) -> Dict[str, "Op"]:
        """Every NIR linear node once (identity edges included), by name."""
        ops = {}
        for p in self.paths + self.readout:
            for op in p.ops:
                ops.setdefault(op.node, op)
        return ops

    def spike_source(self, node: str) -> Optional[str]:
        """The population whose spikes are this node's whole input (through Flattens), if any."""
        if node not in self.preds:      # an identity edge "a->b"
            return node.split("->")[0]
        preds = self.preds[node]
        while len(preds) == 1 and self.types.get(preds[0]) == "Flatten":
            preds = self.preds[preds[0]]
        if len(preds) == 1 and preds[0] in self.pops:
            return preds[0]
        return None

    def train_sources(self) -> set:
        """Populations whose spike trains counting needs (inputs of graded or fan-in nodes)."""
        need, stack = set(), [n for n in self.projection_ops() if self.spike_source(n) is None]
        seen = set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            for p in self.preds.get(n, []):
                if p in self.pops:
                    need.add(p)
                elif self.types.get(p) != "Input":
                    stack.append(p)
        return need

    @property
    def max_depth(self) -> int:
        return max((p.depth for p in self.pops.values()), default=0)

    def order(self) -> List[str]:
        return sorted(self.pops, key=lambda n: self.pops[n].depth)


INPUT = "__input__"
OUTPUT = "__output__"


# ---------------------------------------------------------------- shapes and ops
def _conv_padding(node, kernel, dilation):
    p = node.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        total = [dilation[i] * (kernel[i] - 1) for i in range(2)]
        if any(t % 2 for t in total):
            raise PlanError("asymmetric 'same' padding (even kernel) is not supported by Lava's Conv")
        return (total[0] // 2, total[1] // 2)
    return pair(p)


def make_op(name: str, node, in_shape: tuple) -> Op:
    t = type(node).__name__
    if t == "Conv2d":
        w = np.asarray(node.weight, np.float64)
        if len(in_shape) != 3:
            raise PlanError(f"node '{name}' (Conv2d) gets input of shape {in_shape}, needs (C, H, W)")
        kernel = w.shape[2:]
        stride, dilation = pair(node.stride), pair(node.dilation)
        padding = _conv_padding(node, kernel, dilation)
        groups = int(node.groups)
        if w.shape[1] * groups != in_shape[0]:
            raise PlanError(f"node '{name}' (Conv2d): weight expects {w.shape[1] * groups} input "
                            f"channels, gets {in_shape[0]}")
        hw = conv_output_size(in_shape[1:], kernel, stride, padding, dilation)
        bias = None if node.bias is None else np.broadcast_to(np.asarray(node.bias, np.float64),
                                                               (w.shape[0],)).copy()
        return Op(name, t, "conv", in_shape, (w.shape[0], *hw), w, bias, stride, padding,
                  dilation, groups)
    if t in ("SumPool2d", "AvgPool2d"):
        if len(in_shape) != 3:
            raise PlanError(f"node '{name}' ({t}) gets input of shape {in_shape}, needs (C, H, W)")
        k, s, p = pair(node.kernel_size), pair(node.stride), pair(node.padding)
        c = in_shape[0]
        w = np.ones((c, 1, k[0], k[1]))
        hw = conv_output_size(in_shape[1:], k, s, p, (1, 1))
        scale = 1.0 if t == "SumPool2d" else 1.0 / (k[0] * k[1])
        return Op(name, t, "conv", in_shape, (c, *hw), w, None, s, p, (1, 1), c, ones=True,
                  scale=scale)
    if t in ("Affine", "Linear"):
        w = np.asarray(node.weight, np.float64)
        if w.ndim != 2 or in_shape != (w.shape[1],):
            raise PlanError(f"node '{name}' ({t}): weight {w.shape} does not fit input {in_shape} "
                            "(flatten before a dense projection)")
        bias = None
        if t == "Affine" and node.bias is not None:
            bias = np.broadcast_to(np.asarray(node.bias, np.float64), (w.shape[0],)).copy()
        return Op(name, t, "dense", in_shape, (w.shape[0],), w, bias)
    if t == "Flatten":
        nd = len(in_shape)
        start = node.start_dim % nd if nd else 0
        end = node.end_dim % nd if nd else 0
        out = in_shape[:start] + (int(np.prod(in_shape[start:end + 1])),) + in_shape[end + 1:]
        return Op(name, t, "reshape", in_shape, tuple(out))
    raise PlanError(f"node '{name}' ({t}) is not a linear op")


def identity_op(name: str, shape: tuple) -> Op:
    """A direct population -> population edge: a 1x1 depthwise conv or an identity matrix."""
    if len(shape) == 3:
        c = shape[0]
        return Op(name, "Identity", "conv", shape, shape, np.ones((c, 1, 1, 1)), groups=c, ones=True)
    n = int(np.prod(shape))
    return Op(name, "Identity", "dense", shape, shape, np.eye(n), ones=True)


# ---------------------------------------------------------------- populations
def make_pop(name: str, node, dt: float, integrator: str = "dt") -> Pop:
    """A population with the coefficients every backend uses (:func:`neurodeploy.ir.neurons.coefficients`),
    broadcast to its full shape, in float64 (exactly the float32 values)."""
    t = type(node).__name__
    shape = np.shape(node.v_threshold)
    if shape == ():
        raise PlanError(f"node '{name}' ({t}): neuron parameters are scalars; NIR needs arrays of "
                        "the full population shape")
    c = neurons.coefficients(node, dt, integrator)
    full = lambda a: np.broadcast_to(a, shape).astype(np.float64)
    pop = Pop(name, t, tuple(int(s) for s in shape), *(full(a) for a in c.arrays()))
    if c.syn_decay is not None:
        pop.syn_decay, pop.w_in = full(c.syn_decay), full(c.w_in)
    return pop


# ---------------------------------------------------------------- the plan
def build_plan(graph, conventions) -> Plan:
    nodes = graph.nodes
    preds: Dict[str, List[str]] = {n: [] for n in nodes}
    for src, dst in graph.edges:
        if src not in nodes or dst not in nodes:
            raise PlanError(f"edge {src} -> {dst} names a node that does not exist")
        preds[dst].append(src)

    types = {n: type(v).__name__ for n, v in nodes.items()}
    for n, t in types.items():
        if t not in POPULATION_TYPES + LINEAR_TYPES + ("Input", "Output"):
            hint = " (LI, I, CubaLI, Delay, Scale, Threshold and subgraphs are not mapped yet)"
            raise PlanError(f"node '{n}' ({t}) is not supported by the Lava backend{hint}")
    inputs = [n for n, t in types.items() if t == "Input"]
    outputs = [n for n, t in types.items() if t == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise PlanError(f"the Lava backend needs exactly one Input and one Output node "
                        f"(found {len(inputs)} and {len(outputs)})")
    inp, out = inputs[0], outputs[0]
    in_shape = tuple(int(s) for s in np.asarray(nodes[inp].input_type["input"]).reshape(-1))
    if not in_shape and conventions.input_shape is not None:
        in_shape = tuple(int(s) for s in conventions.input_shape)
    if conventions.encoding not in ("direct",):
        raise PlanError(f"encoding '{conventions.encoding}' is not supported (direct only)")
    if conventions.reset not in ("to_v_reset", "zero"):
        raise PlanError(f"reset '{conventions.reset}' is not supported (to_v_reset or zero)")

    pops = {n: make_pop(n, nodes[n], conventions.dt, conventions.integrator) for n, t in types.items()
            if t in POPULATION_TYPES}
    for n, p in pops.items():
        p.reset = conventions.reset_of(n)
        if p.reset not in neurons.RESET_MODES:
            raise PlanError(f"population '{n}': unknown reset mode {p.reset!r}")
    if conventions.reset == "zero":
        for p in pops.values():
            p.v_reset = np.zeros_like(p.v_reset)

    # output shape of every node, memoised, walking backwards
    shapes: Dict[str, tuple] = {inp: in_shape}
    for n, p in pops.items():
        shapes[n] = p.shape
    visiting = set()

    def shape_of(n: str) -> tuple:
        if n in shapes:
            return shapes[n]
        if n in visiting:
            raise PlanError(f"a cycle through linear node '{n}' (recurrence) is not supported")
        visiting.add(n)
        if not preds[n]:
            raise PlanError(f"node '{n}' ({types[n]}) has no input edge")
        ins = {shape_of(p) for p in preds[n]}
        if len(ins) != 1:
            raise PlanError(f"node '{n}' receives inputs of different shapes {sorted(ins)}")
        shapes[n] = make_op(n, nodes[n], ins.pop()).out_shape
        return shapes[n]

    def paths_into(n: str, suffix: List[Op], target: str, seen: tuple) -> List[Path]:
        found = []
        for p in preds[n]:
            t = types[p]
            if t == "Input" or t in POPULATION_TYPES:
                found.append(Path(INPUT if t == "Input" else p, target, list(suffix)))
            elif t in LINEAR_TYPES:
                if p in seen:
                    raise PlanError(f"a cycle through linear node '{p}' is not supported")
                op = make_op(p, nodes[p], shape_of(preds[p][0]) if preds[p] else ())
                found += paths_into(p, [op] + suffix, target, seen + (p,))
            else:
                raise PlanError(f"node '{p}' ({t}) cannot feed '{n}'")
        return found

    plan = Plan(inp, in_shape, out, "")
    plan.pops = pops
    plan.preds = preds
    plan.types = types
    for n, pop in pops.items():
        if not preds[n]:
            raise PlanError(f"population '{n}' has no input edge")
        for path in paths_into(n, [], n, ()):
            if path.source != INPUT and not any(op.is_projection for op in path.ops):
                # a direct edge (maybe through Flatten): an identity projection on the target side
                path.ops.append(identity_op(f"{path.source}->{n}", pop.shape))
            got = path.ops[-1].out_shape if path.ops else (in_shape if path.source == INPUT
                                                           else pops[path.source].shape)
            if tuple(got) != pop.shape:
                raise PlanError(f"population '{n}' has shape {pop.shape} but a path from "
                                f"'{path.source}' delivers {tuple(got)}")
            plan.paths.append(path)

    src = preds[out]
    if not src:
        raise PlanError(f"the Output node '{out}' has no input edge")
    if len(src) == 1 and types[src[0]] in POPULATION_TYPES:
        plan.output_source = src[0]
        pops[src[0]].record = True
    else:   # a linear readout (e.g. global average pooling of the last population's spikes)
        plan.readout = paths_into(out, [], OUTPUT, ())
        for path in plan.readout:
            if path.source == INPUT:
                raise PlanError(f"the Output node '{out}' reads the Input through linear ops only; "
                                "there is nothing to run on Lava")
            pops[path.source].record = True
        shapes_out = {tuple(p.ops[-1].out_shape) if p.ops else pops[p.source].shape
                      for p in plan.readout}
        if len(shapes_out) != 1:
            raise PlanError(f"the Output node '{out}' receives inputs of different shapes {sorted(shapes_out)}")
        plan.output_shape = shapes_out.pop()
    if plan.output_source:
        plan.output_shape = pops[plan.output_source].shape
    _assign_depths(plan)
    return plan


def _assign_depths(plan: Plan) -> None:
    incoming: Dict[str, List[Path]] = {n: [] for n in plan.pops}
    for p in plan.paths:
        incoming[p.target].append(p)
    depth: Dict[str, int] = {}
    state: Dict[str, int] = {}

    for p in plan.paths:
        if p.source == p.target:
            # a population's projection onto itself: Lava's Dense delivers one step later, which is
            # exactly NIR's back edge (the previous step's spikes); it does not set the depth
            if p.steps != 1:
                raise PlanError(f"the recurrent path of population '{p.target}' goes through {p.steps} "
                                "projections; Lava maps a recurrent projection of one step")
            p.recurrent = True

    def visit(n: str) -> int:
        if n in depth:
            return depth[n]
        if state.get(n) == 1:
            raise PlanError(f"population '{n}' is part of a recurrent loop through other populations; the "
                            "Lava backend maps self-recurrence (a projection from a population onto itself, "
                            "as snnTorch's RLeaky) but not longer loops")
        state[n] = 1
        arrivals = [0 if p.source == INPUT else visit(p.source) + p.steps for p in incoming[n] if not p.recurrent]
        depth[n] = max(arrivals) if arrivals else 0
        state[n] = 2
        return depth[n]

    for n in plan.pops:
        plan.pops[n].depth = visit(n)
    for p in plan.paths:
        if p.source != INPUT and not p.recurrent:
            p.delay = plan.pops[p.target].depth - (plan.pops[p.source].depth + p.steps)


# ---------------------------------------------------------------- host arithmetic (NCHW)
def conv2d_nchw(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups) -> np.ndarray:
    """Cross-correlation as torch.nn.functional.conv2d, x (N, C, H, W), float64 im2col."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    oh, ow = conv_output_size((h, wd), (kh, kw), stride, padding, dilation)
    cols = np.empty((n, c, kh, kw, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            a, b = i * dilation[0], j * dilation[1]
            cols[:, :, i, j] = xp[:, :, a:a + stride[0] * (oh - 1) + 1:stride[0],
                                  b:b + stride[1] * (ow - 1) + 1:stride[1]]
    og = o // groups
    out = np.empty((n, o, oh, ow), np.float64)
    for g in range(groups):
        cg_cols = cols[:, g * cg:(g + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        wg = w[g * og:(g + 1) * og].reshape(og, cg * kh * kw)
        out[:, g * og:(g + 1) * og] = np.einsum("ok,nkp->nop", wg, cg_cols).reshape(n, og, oh, ow)
    return out


def apply_op(op: Op, x: np.ndarray, weight: Optional[np.ndarray] = None,
             with_bias: bool = True) -> np.ndarray:
    """One op on a batch (N, *in_shape) in float64; `weight` overrides the effective weight."""
    w = op.effective_weight() if weight is None else weight
    if op.kind == "reshape":
        return x.reshape((x.shape[0],) + tuple(op.out_shape))
    if op.kind == "conv":
        y = conv2d_nchw(x, w, op.stride, op.padding, op.dilation, op.groups)
        if with_bias and op.bias is not None:
            y = y + op.bias[None, :, None, None]
        return y
    y = x.reshape(x.shape[0], -1) @ w.T
    if with_bias and op.bias is not None:
        y = y + op.bias
    return y


def path_constant(path: Path) -> np.ndarray:
    """The current a path delivers every step from its biases alone (zero input)."""
    x = np.zeros((1,) + tuple(path.ops[0].in_shape)) if path.ops else None
    if x is None:
        return np.zeros(())
    for op in path.ops:
        x = apply_op(op, x)
    return x[0]


def path_linear(path: Path, x: np.ndarray, weights=None) -> np.ndarray:
    """The path without its biases (the part that scales with the input)."""
    for i, op in enumerate(path.ops):
        x = apply_op(op, x, None if weights is None else weights[i], with_bias=False)
    return x


def fanout_nonzero(op: Op) -> np.ndarray:
    """For every input element, how many nonzero weights it meets (in_shape array)."""
    w = op.effective_weight()
    if op.kind == "dense":
        return np.count_nonzero(w, axis=0).reshape(op.in_shape).astype(np.float64)
    c, h, wd = op.in_shape
    o, cg, kh, kw = w.shape
    og = o // op.groups
    nz = (w != 0).reshape(op.groups, og, cg, kh, kw).sum(axis=1).reshape(c, kh, kw)
    oh, ow = op.out_shape[1:]

    def valid(size, k, s, p, d, osize):
        pos = np.arange(size)[None, :] + p - np.arange(k)[:, None] * d
        return ((pos % s == 0) & (pos // s >= 0) & (pos // s < osize)).astype(np.float64)

    vy = valid(h, kh, op.stride[0], op.padding[0], op.dilation[0], oh)
    vx = valid(wd, kw, op.stride[1], op.padding[1], op.dilation[1], ow)
    return np.einsum("cij,iy,jx->cyx", nz.astype(np.float64), vy, vx)


__all__ = ["build_plan", "Plan", "Pop", "Path", "Op", "PlanError", "INPUT", "OUTPUT", "apply_op",
           "path_constant", "path_linear", "fanout_nonzero", "conv2d_nchw"]
