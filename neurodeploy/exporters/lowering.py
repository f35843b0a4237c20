"""Export a spiking zoo network to NIR: trace it, lower it to populations and projections.

The network's ``body`` is traced with torch.fx (ConvBN, LinearOut, LIF,
pooling and Flatten are leaves). The lowering then walks the traced graph
once, keeping for every intermediate value a *wiring*: which NIR node outputs
it is made of and how their channels are arranged,

    value[c] = sum_j  source_j[select_j[c]]      (select_j[c] = -1: no contribution)

Concatenation, channel split / chunk and channel shuffle only rewrite the
``select`` arrays (wiring is free on hardware), and a residual add joins two
term lists. Nothing becomes a NIR node until a leaf consumes the value:

* a projection (conv / linear) absorbs each term's ``select`` into its
  weights, one NIR projection per source, all summed by fan-in downstream
  (BatchNorm is folded: the module's ``deployed_parameters()``, the very
  numbers its eval-mode forward uses);
* a depthwise conv stays depthwise in the source's channel space (kernels of
  unselected channels are zero), so MixConv's kernel groups become parallel
  depthwise convs whose zero rows make their sum a concatenation;
* a LIF population takes one edge per term; a term that is not the identity
  wiring gets a 0/1 1x1 selection conv first (an exact copy);
* average pooling is per channel, so it is applied per term.

Exactness: the spiking twin's eval arithmetic keeps every weight on a grid on
which sums over spikes are exact in float32 (see ``layers.snap_to_exact_grid``),
so splitting a sum across projections and reordering it changes no bit. Tests
compare spikes, not shapes.

Refused, with the module named: max pooling, squeeze-excitation and gates,
ReLU, and any other op without an exact spiking form.
"""
from __future__ import annotations

import operator
from pathlib import Path
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..architectures.layers import (LIF, ConvBN, LeafTracer, LinearOut, SqueezeExcite, TwinModel, batchnorm64,
                                   channel_shuffle, fold_batchnorm)
from ..errors import NeurodeployError
from ..ir.conventions import GraphConventions, with_conventions

class _Body(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.body(x)


def trace(model: TwinModel, input_shape) -> torch.fx.GraphModule:
    """fx graph of ``model.body`` with per-sample shapes attached (node.meta['tensor_meta']).

    Shapes are propagated in eval mode with one timestep; the caller's model gets back
    exactly the mode, T and per-population time settings it had."""
    body = _Body(model)
    graph = LeafTracer().trace(body)
    gm = torch.fx.GraphModule(body, graph)
    modes = {m: m.training for m in model.modules()}
    lifs = {m: (m.timesteps, m.batch) for m in model.lif_populations()}
    steps = model.timesteps
    model.eval()
    model.timesteps = 1
    model._set_time(1)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    finally:
        model.timesteps = steps
        for m, mode in modes.items():
            m.training = mode
        for m, (t, b) in lifs.items():
            m.timesteps, m.batch = t, b
    return gm


@dataclass
class Term:
    source: str                 # NIR node name
    select: np.ndarray          # per value channel: source channel, or -1


@dataclass
class Wiring:
    terms: list
    shape: tuple                # per-sample shape of the value: (C, H, W) or (F,)

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass
class _Builder:
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)      # node -> per-sample output shape
    zero_channels: dict = field(default_factory=dict)  # node -> bool mask of channels known to be 0
    readers: dict = field(default_factory=dict)   # node -> how many fx values hold a term of it
    resets: dict = field(default_factory=dict)    # population -> reset mode, where not NIR's own

    def add(self, name, node, shape, zero=None):
        base, i = name, 1
        while name in self.nodes:
            i += 1
            name = f"{base}#{i}"
        self.nodes[name] = node
        self.shapes[name] = tuple(int(s) for s in shape)
        self.zero_channels[name] = zero if zero is not None else np.zeros(int(shape[0]), bool)
        return name

    def connect(self, src, dst):
        if (src, dst) in self.edges:
            raise NeurodeployError(f"internal: duplicate edge {src} -> {dst}")
        self.edges.append((src, dst))


def _identity_term(name, channels):
    return Term(name, np.arange(channels))


def _is_identity(b: _Builder, term: Term, channels: int) -> bool:
    src_shape = b.shapes[term.source]
    if src_shape[0] != channels:
        return False
    idx = np.arange(channels)
    ok = (term.select == idx) | ((term.select == -1) & b.zero_channels[term.source])
    return bool(ok.all())


def _merge_terms(terms):
    """Terms from the same source (e.g. x + x) combine if they do not overlap."""
    merged = {}
    for t in terms:
        if t.source in merged:
            prev = merged[t.source]
            if np.any((prev.select >= 0) & (t.select >= 0)):
                raise NeurodeployError(f"a value adds {t.source} to itself; that needs a weight of 2, "
                                       "which has no exact lowering here")
            merged[t.source] = Term(t.source, np.where(prev.select >= 0, prev.select, t.select))
        else:
            merged[t.source] = t
    return list(merged.values())


def _conv_node(weight, bias, conv, in_shape):
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=weight.astype(np.float32),
                      stride=tuple(conv.stride), padding=tuple(conv.padding), dilation=tuple(conv.dilation),
                      groups=int(conv.groups), bias=bias.astype(np.float32))


@dataclass
class ConvGeometry:
    """What a Conv2d lowering needs besides its weights (an nn.Conv2d has the same fields)."""
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    in_channels: int


def _geometry(conv: nn.Conv2d, name: str) -> ConvGeometry:
    if conv.padding_mode != "zeros":
        raise NeurodeployError(f"{name}: padding_mode {conv.padding_mode!r} has no NIR form (zero padding only)")
    padding = conv.padding
    if isinstance(padding, str):       # "same" / "valid" (stride 1): the symmetric integer padding
        k = conv.kernel_size
        total = [conv.dilation[i] * (k[i] - 1) for i in range(2)]
        if padding == "same" and any(t % 2 for t in total):
            raise NeurodeployError(f"{name}: padding='same' with an even kernel is asymmetric; NIR pads "
                                   "symmetrically")
        padding = (0, 0) if padding == "valid" else (total[0] // 2, total[1] // 2)
    return ConvGeometry(tuple(conv.stride), tuple(padding), tuple(conv.dilation), int(conv.groups),
                        int(conv.in_channels))


def _lower_conv(b: _Builder, name: str, w: np.ndarray, bias: np.ndarray, conv: ConvGeometry, value: Wiring,
                out_shape) -> Wiring:
    """A Conv2d (weights w, bias, geometry) applied to ``value``: one NIR projection per source term."""
    c_out = w.shape[0]
    terms = []
    bias_done = np.zeros(c_out, bool)
    for j, term in enumerate(value.terms):
        src_c = b.shapes[term.source][0]
        in_shape = b.shapes[term.source]
        tb = bias if j == 0 else np.zeros_like(bias)   # the bias enters once
        used = term.select >= 0
        if conv.groups == 1:
            if len(set(term.select[used].tolist())) != int(used.sum()):
                raise NeurodeployError(f"{name}: a source channel feeds two input channels; no exact lowering")
            wj = np.zeros((c_out, src_c) + w.shape[2:], np.float32)
            wj[:, term.select[used]] = w[:, used]
            node = _conv_node(wj, tb, conv, in_shape)
            nm = b.add(name if len(value.terms) == 1 else f"{name}@{term.source}", node, (c_out,) + out_shape[1:])
            b.connect(term.source, nm)
            terms.append(_identity_term(nm, c_out))
        elif conv.groups == conv.in_channels == c_out:
            # depthwise: stay depthwise in the source's channel space
            if len(set(term.select[used].tolist())) != int(used.sum()):
                raise NeurodeployError(f"{name}: a source channel feeds two depthwise channels; no exact lowering")
            wj = np.zeros((src_c, 1) + w.shape[2:], np.float32)
            bj = np.zeros(src_c, np.float32)
            wj[term.select[used]] = w[used]
            take = used & ~bias_done                # a channel's bias enters with its first term only
            bj[term.select[take]] = bias[take]
            bias_done |= used
            zero = np.ones(src_c, bool)
            zero[term.select[used]] = False
            node = nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=wj,
                              stride=tuple(conv.stride), padding=tuple(conv.padding),
                              dilation=tuple(conv.dilation), groups=src_c, bias=bj)
            nm = b.add(name if len(value.terms) == 1 else f"{name}@{term.source}", node,
                       (src_c,) + out_shape[1:], zero)
            b.connect(term.source, nm)
            terms.append(Term(nm, term.select.copy()))
        else:
            raise NeurodeployError(f"{name}: grouped convolution with {conv.groups} groups "
                                   "(neither dense nor depthwise) is not supported by the exporter")
    return Wiring(terms, tuple(out_shape))


def _lower_linear(b: _Builder, name, w: np.ndarray, bias: np.ndarray, value: Wiring, out_shape) -> Wiring:
    """A linear layer on a flat value: one Affine per source term (its columns placed where the
    term's features come from), summed by fan-in; the bias enters once."""
    if len(value.shape) != 1:
        raise NeurodeployError(f"{name}: a linear layer needs a flat input (flatten before it)")
    terms = []
    for j, term in enumerate(value.terms):
        used = term.select >= 0
        if len(value.terms) == 1 and _is_identity(b, term, value.channels):
            wj = w
        else:
            wj = np.zeros((w.shape[0], b.shapes[term.source][0]), np.float32)
            if len(set(term.select[used].tolist())) != int(used.sum()):
                raise NeurodeployError(f"{name}: a source feature feeds two inputs; no exact lowering")
            wj[:, term.select[used]] = w[:, used]
        node = nir.Affine(weight=wj.astype(np.float32), bias=(bias if j == 0 else np.zeros_like(bias)).astype(np.float32))
        nm = b.add(name if len(value.terms) == 1 else f"{name}@{term.source}", node, out_shape)
        b.connect(term.source, nm)
        terms.append(_identity_term(nm, w.shape[0]))
    return Wiring(terms, tuple(out_shape))


def _selection_conv(b: _Builder, name, term: Term, channels, spatial):
    """A 0/1 1x1 conv that copies the selected source channels (exact)."""
    src_shape = b.shapes[term.source]
    w = np.zeros((channels, src_shape[0], 1, 1), np.float32)
    used = term.select >= 0
    w[np.flatnonzero(used), term.select[used], 0, 0] = 1.0
    node = nir.Conv2d(input_shape=tuple(spatial), weight=w, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1, bias=np.zeros(channels, np.float32))
    nm = b.add(f"{name}.wiring@{term.source}", node, (channels,) + tuple(spatial))
    b.connect(term.source, nm)
    return nm


def _write_slice(b: _Builder, term: Term, channels: int) -> bool:
    """Make a dense projection write its output channels where the value wants them.

    The branch convs of a concatenation become projections whose output is the
    full concatenated width, with zero rows outside their own slice; summed by
    fan-in, they give the concatenation exactly (x + 0 = x). Only a projection
    that nothing reads yet is rewritten.
    """
    node = b.nodes[term.source]
    dense_conv = isinstance(node, nir.Conv2d) and int(node.groups) == 1
    if (not (dense_conv or isinstance(node, nir.Affine)) or any(s == term.source for s, _ in b.edges)
            or b.readers.get(term.source, 0) > 1):
        return False
    used = term.select >= 0
    if len(set(term.select[used].tolist())) != int(used.sum()):
        return False
    w = np.zeros((channels,) + node.weight.shape[1:], np.float32)
    bias = np.zeros(channels, np.float32)
    w[used], bias[used] = node.weight[term.select[used]], node.bias[term.select[used]]
    if dense_conv:
        b.nodes[term.source] = nir.Conv2d(input_shape=tuple(node.input_shape), weight=w, stride=node.stride,
                                          padding=node.padding, dilation=node.dilation, groups=1, bias=bias)
    else:
        b.nodes[term.source] = nir.Affine(weight=w, bias=bias)
    b.shapes[term.source] = (channels,) + b.shapes[term.source][1:]
    b.zero_channels[term.source] = ~used
    return True


def _lower_population(b: _Builder, name, pop, value: Wiring) -> Wiring:
    """A neuron population (:class:`neurodeploy.exporters.neurons.Population`) fed by ``value``,
    with its recurrent projection, if any, as an edge back onto itself."""
    shape = value.shape
    nm = b.add(name, pop.node, shape)
    if pop.reset != "to_v_reset":
        b.resets[nm] = pop.reset
    for term in value.terms:
        if _is_identity(b, term, value.channels) or _write_slice(b, term, value.channels):
            b.connect(term.source, nm)
        elif len(shape) == 3:
            b.connect(_selection_conv(b, name, term, shape[0], shape[1:]), nm)
        else:
            raise NeurodeployError(f"{name}: cannot wire a permuted flat input into a population")
    if pop.recurrent is not None:
        rec = _recurrent_node(name, pop.recurrent, shape)
        rn = b.add(f"{name}.recurrent", rec, shape)
        b.connect(nm, rn)
        b.connect(rn, nm)
    return Wiring([_identity_term(nm, shape[0])], shape)


def _recurrent_node(name, rec, shape):
    """The projection from a population's spikes back onto its input (applied one step late)."""
    if isinstance(rec, nn.Linear):
        return nir.Linear(weight=rec.weight.detach().cpu().float().numpy())
    if isinstance(rec, nn.Conv2d):
        g = _geometry(rec, name)
        w = rec.weight.detach().cpu().float().numpy()
        return _conv_node(w, np.zeros(w.shape[0], np.float32), g, (None,) + tuple(shape))
    v = rec.V.detach().cpu().float().numpy() if torch.is_tensor(rec.V) else np.asarray(rec.V, np.float32)
    return nir.Scale(scale=np.ascontiguousarray(np.broadcast_to(v.astype(np.float32), shape)))


def _lower_pool(b: _Builder, name, module: nn.AvgPool2d, value: Wiring, out_shape) -> Wiring:
    k, s, p = (np.atleast_1d(np.asarray(v)).repeat(2)[:2] if np.ndim(v) == 0 else np.asarray(v)
               for v in (module.kernel_size, module.stride, module.padding))
    if module.ceil_mode or (np.any(p > 0) and module.count_include_pad is False):
        raise NeurodeployError(f"{name}: AvgPool2d with ceil_mode or count_include_pad=False has no NIR form")
    terms = []
    for term in value.terms:
        src_shape = b.shapes[term.source]
        node = nir.AvgPool2d(kernel_size=k.astype(np.int64), stride=s.astype(np.int64), padding=p.astype(np.int64))
        nm = b.add(name if len(value.terms) == 1 else f"{name}@{term.source}", node,
                   (src_shape[0],) + tuple(out_shape[1:]), b.zero_channels[term.source].copy())
        b.connect(term.source, nm)
        terms.append(Term(nm, term.select.copy()))
    return Wiring(terms, tuple(out_shape))


def _lower_flatten(b: _Builder, name, value: Wiring, out_shape, start_dim=1, end_dim=-1) -> Wiring:
    """Flatten every per-sample dimension (NIR Flatten of the batch-free shape)."""
    if start_dim not in (1, -len(value.shape)) or end_dim not in (-1, len(value.shape)):
        raise NeurodeployError(f"{name}: only a flatten of all per-sample dimensions (start_dim=1) can be "
                               "lowered")
    if len(value.shape) == 1:
        return value
    terms = []
    for term in value.terms:      # one Flatten per source; a term's channel selection becomes a feature selection
        src_shape = b.shapes[term.source]
        node = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1)
        nm = b.add(name if len(value.terms) == 1 else f"{name}@{term.source}", node, (int(np.prod(src_shape)),))
        b.connect(term.source, nm)
        per_channel = int(np.prod(src_shape[1:]))
        within = np.arange(per_channel)
        select = np.where(term.select[:, None] >= 0, term.select[:, None] * per_channel + within[None, :], -1)
        terms.append(Term(nm, select.reshape(-1)))
    return Wiring(terms, tuple(out_shape))


REFUSED = {
    nn.MaxPool2d: "max pooling has no exact spiking form (average pooling does: use nn.AvgPool2d)",
    nn.MaxPool1d: "max pooling has no exact spiking form (average pooling does)",
    SqueezeExcite: "squeeze-excitation multiplies activations by a sigmoid gate, which has no exact spiking form",
    nn.ReLU: "a ReLU between spiking layers has no spiking form; the spiking twin uses LIF populations",
    nn.Sigmoid: "a sigmoid gate has no exact spiking form", nn.SiLU: "swish has no exact spiking form",
    nn.Tanh: "tanh has no exact spiking form", nn.Softmax: "softmax has no spiking form; read out spike counts",
    nn.GELU: "GELU has no exact spiking form", nn.LeakyReLU: "leaky ReLU has no exact spiking form",
}
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)   # in eval mode


def _shape(node) -> tuple:
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape"):     # a neuron returning (spikes, membrane): the spikes
        meta = meta[0]
    return tuple(int(s) for s in meta.shape[1:])


def _deployed(module) -> tuple:
    """(weight, bias) as numpy float32, the numbers the lowering writes: a zoo twin's deployed
    parameters (BatchNorm folded, snapped), or an ordinary layer's own (after fold_batchnorm)."""
    if isinstance(module, (ConvBN, LinearOut)):
        return tuple(t.cpu().numpy() for t in module.deployed_parameters())
    w = module.weight.detach().cpu().float().numpy()
    bias = module.bias.detach().cpu().float().numpy() if module.bias is not None else np.zeros(w.shape[0],
                                                                                                 np.float32)
    return w, bias


def _check_finite(name, *arrays):
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise NeurodeployError(f"{name}: NaN or infinite weights; the network is broken (retrain or reload it)")


def _lower_module(b: _Builder, name: str, mod, arg, node, dt) -> Wiring:
    """One traced module call (a leaf) -> NIR nodes; the value it produces."""
    from .neurons import is_neuron, population
    if isinstance(mod, PASS_THROUGH):
        return arg
    if type(mod) in REFUSED:
        raise NeurodeployError(f"cannot export {name} ({type(mod).__name__}): {REFUSED[type(mod)]}")
    if isinstance(mod, (ConvBN, nn.Conv2d)):
        w, bias = _deployed(mod)
        _check_finite(name, w, bias)
        return _lower_conv(b, name, w, bias, _geometry(mod.conv if isinstance(mod, ConvBN) else mod, name), arg,
                           _shape(node))
    if isinstance(mod, (LinearOut, nn.Linear)):
        w, bias = _deployed(mod)
        _check_finite(name, w, bias)
        return _lower_linear(b, name, w, bias, arg, _shape(node))
    if isinstance(mod, nn.BatchNorm2d):       # not after a conv: a per-channel affine map, a depthwise 1x1 conv
        c = int(mod.num_features)             # folded into an identity kernel, as a conv's BatchNorm is folded
        w, bias = fold_batchnorm(torch.ones(c, 1, 1, 1, dtype=torch.float64), torch.zeros(c, dtype=torch.float64),
                                 batchnorm64(mod))
        return _lower_conv(b, name, w.float().numpy(), bias.float().numpy(), ConvGeometry((1, 1), (0, 0), (1, 1), c, c),
                           arg, _shape(node))
    if is_neuron(mod):
        spikes = _lower_population(b, name, population(mod, arg.shape, name, dt), arg)
        meta = node.meta.get("tensor_meta")
        # a neuron that returns (spikes, membrane[, ...]): only the spikes exist on hardware
        return spikes if hasattr(meta, "shape") else (spikes,) + tuple(_Membrane(name) for _ in meta[1:])
    if isinstance(mod, nn.AvgPool2d):
        return _lower_pool(b, name, mod, arg, _shape(node))
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        out = _shape(node)
        ins = arg.shape
        if any(ins[1 + i] % out[1 + i] for i in range(2)):
            raise NeurodeployError(f"cannot export {name} (AdaptiveAvgPool2d): {ins[1:]} -> {out[1:]} is not an "
                                   "exact average over fixed windows; use sizes that divide")
        k = tuple(ins[1 + i] // out[1 + i] for i in range(2))
        return _lower_pool(b, name, nn.AvgPool2d(k, k), arg, out)
    if isinstance(mod, nn.Flatten):
        return _lower_flatten(b, name, arg, _shape(node), mod.start_dim, mod.end_dim)
    raise NeurodeployError(f"cannot export {name} ({type(mod).__name__}): no lowering for this layer")


def lower_traced(gm: torch.fx.GraphModule, input_shape, dt=None) -> tuple:
    """The lowering pass: a traced network (leaves: layers and neuron modules; shapes attached
    by ShapeProp) -> (a NIR graph of populations and projections, {population: reset mode} for
    the resets NIR cannot express)."""
    b = _Builder()
    values = {}
    modules = dict(gm.named_modules())
    processed = set()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise NeurodeployError(f"the network's forward takes {len(placeholders)} arguments; it must take one "
                               "input (one timestep; neuron state kept in the modules, e.g. snnTorch's "
                               "init_hidden=True)")
    for node in gm.graph.nodes:
        processed.add(node)
        if node.op == "placeholder":
            nm = b.add("input", nir.Input(input_type={"input": np.array(input_shape)}), input_shape)
            values[node] = Wiring([_identity_term(nm, input_shape[0])], tuple(input_shape))
        elif node.op == "call_module":
            mod = modules[node.target]
            name = node.target.removeprefix("m.")
            b.readers = _sources_still_needed(values, processed, node)
            values[node] = _lower_module(b, name, mod, values[node.args[0]], node, dt)
        elif node.op in ("call_function", "call_method"):
            values[node] = _lower_wiring(node, values, b)
        elif node.op == "output":
            out = node.args[0]
            while isinstance(out, (tuple, list)):    # (spikes, membrane, ...): the readout is the spikes
                out = out[0]
            out = values[out]
            while isinstance(out, tuple):
                out = out[0]
            if not isinstance(out, Wiring) or len(out.terms) != 1 or not _is_identity(b, out.terms[0],
                                                                                       out.channels):
                raise NeurodeployError("the network's output must be one population, pool or projection as it is")
            nm = b.add("output", nir.Output(output_type={"output": np.array(out.shape)}), out.shape)
            b.connect(out.terms[0].source, nm)
        elif node.op == "get_attr":
            raise NeurodeployError(f"cannot export: the network reads a tensor attribute ({node.target}) directly")
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, type_check=False), dict(b.resets)


def lower(model: TwinModel, input_shape) -> nir.NIRGraph:
    """A spiking zoo twin -> a NIR graph of populations and projections."""
    if not model.twin.spiking:
        raise NeurodeployError("NIR export takes the spiking twin (--twin snn); "
                               "export the CNN twin with --format onnx")
    graph, _ = lower_traced(trace(model, input_shape), input_shape)     # the twins reset as NIR does
    return graph


def _sources_still_needed(values, processed, current) -> dict:
    """NIR node -> how many traced values other than ``current``'s input still to be read hold a term of it.

    A projection may be rewritten to write a concatenation's slice only if
    nothing else will read its original channels.
    """
    counts: dict = {}
    for fx_node, value in values.items():
        if fx_node is current.args[0] or not any(u not in processed for u in fx_node.users):
            continue
        for v in (value if isinstance(value, tuple) else (value,)):
            for term in v.terms:
                counts[term.source] = counts.get(term.source, 0) + 1
    return {k: c + 1 for k, c in counts.items()}


def _split_sizes(node, channels):
    if node.target in (torch.chunk, "chunk"):
        chunks = node.args[1] if len(node.args) > 1 else node.kwargs["chunks"]
        size = -(-channels // chunks)
        return [min(size, channels - i) for i in range(0, channels, size)]
    sizes = node.args[1] if len(node.args) > 1 else node.kwargs["split_size_or_sections"]
    if isinstance(sizes, int):
        return [min(sizes, channels - i) for i in range(0, channels, sizes)]
    return list(sizes)


def _channel_dim_ok(node, default=0):
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else default)
    return dim in (1, -3)


class _Membrane:
    """A neuron's membrane potential: returned by snnTorch neurons, but not a value the
    deployed network has (only spikes leave a population)."""

    def __init__(self, name):
        self.name = name


class _Batch:
    """The batch size (x.size(0)): free in a view's shape, never a channel count."""


@dataclass
class _Sizes:
    shape: tuple          # per-sample


@dataclass
class _Regrouped:
    """A (C, H, W) value viewed with its channels split into several dimensions
    (ShuffleNet's reshape-transpose-reshape): ``grid`` holds, at each position of the
    channel dimensions, the channel of ``value`` found there."""
    value: Wiring
    grid: np.ndarray
    spatial: tuple

    @property
    def shape(self):
        return tuple(self.grid.shape) + tuple(self.spatial)


def _arg(a, values):
    if isinstance(a, torch.fx.Node):
        return values[a]
    if isinstance(a, (tuple, list)):
        return type(a)(_arg(x, values) for x in a)
    return a


def _sizes(t, args, node):
    v = args[0]
    if t is getattr:
        if args[1] != "shape":
            raise NeurodeployError(f"{node.name}: reads attribute {args[1]!r} of a tensor; no lowering")
        return _Sizes(tuple(v.shape))
    if t == "size" and len(args) == 1:
        return _Sizes(tuple(v.shape))
    i = args[1]                                   # x.size(i) or x.shape[i]; v.shape is per-sample
    return _Batch() if i == 0 else int(v.shape[i - 1] if i > 0 else v.shape[i])


def _per_sample(node, dims) -> tuple:
    """A view's target shape without its batch dimension (which must come first)."""
    dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else list(dims)
    if not dims or not (isinstance(dims[0], _Batch) or dims[0] == -1):
        raise NeurodeployError(f"{node.name}: a view must keep the batch dimension first (x.view(x.size(0), ...))")
    return tuple(dims[1:])


def _reshape(b: _Builder, node, args):
    v = args[0]
    t = node.target
    if t in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
        if start != 1 or end != -1:
            raise NeurodeployError(f"{node.name}: only flatten(x, 1) (all per-sample dimensions) can be lowered")
        target = (int(np.prod(v.shape)),)
    else:
        target = _per_sample(node, args[1:] if t in ("view", "reshape") else args[1])
        total = int(np.prod(v.shape))
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target = tuple(total // known if d == -1 else d for d in target)
        if int(np.prod(target)) != total:
            raise NeurodeployError(f"{node.name}: cannot view {v.shape} as {target}")
    if tuple(target) == tuple(v.shape):
        return v
    if len(target) == 1:                                   # a flatten
        if isinstance(v, _Regrouped):
            v = _ungroup(v)
        return _lower_flatten(b, node.name, v, target)
    spatial = v.spatial if isinstance(v, _Regrouped) else v.shape[1:]
    if len(spatial) != 2 or tuple(target[-2:]) != tuple(spatial):
        raise NeurodeployError(f"{node.name}: a view from {v.shape} to {target} mixes channels and positions; "
                               "only regrouping the channels can be lowered")
    base = v.value if isinstance(v, _Regrouped) else v
    grid = v.grid.reshape(-1) if isinstance(v, _Regrouped) else np.arange(v.shape[0])
    regrouped = _Regrouped(base, grid.reshape(target[:-2]), tuple(spatial))
    return _ungroup(regrouped) if len(target) == 3 else regrouped


def _ungroup(r: _Regrouped) -> Wiring:
    perm = r.grid.reshape(-1)                 # new channel i <- channel perm[i] of the value
    return Wiring([Term(tm.source, tm.select[perm]) for tm in r.value.terms], (len(perm),) + tuple(r.spatial))


def _permute(node, args):
    r = args[0]
    if not isinstance(r, _Regrouped):
        raise NeurodeployError(f"{node.name}: transposing a feature map's channels with its positions has no "
                               "lowering (only a channel regrouping, as in a channel shuffle)")
    nd = r.grid.ndim
    if node.target in ("transpose", torch.transpose):
        a, c = (d % (nd + 3) for d in args[1:3])
        order = list(range(nd + 3))
        order[a], order[c] = order[c], order[a]
    else:
        order = list(args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:])
        order = [d % (nd + 3) for d in order]
    if order[0] != 0 or sorted(order[1:nd + 1]) != list(range(1, nd + 1)) or order[nd + 1:] != [nd + 1, nd + 2]:
        raise NeurodeployError(f"{node.name}: only the channel dimensions may be permuted")
    return _Regrouped(r.value, r.grid.transpose([d - 1 for d in order[1:nd + 1]]), r.spatial)


def _lower_wiring(node, values, b: _Builder):
    """cat / split / chunk / getitem / shuffle / add / view: rewrite select arrays; only a
    flatten makes a node."""
    t = node.target
    args = [_arg(a, values) for a in node.args]
    if any(isinstance(a, _Membrane) for a in args):
        raise NeurodeployError(f"{node.name}: uses the membrane of {next(a for a in args if isinstance(a, _Membrane)).name}"
                               "; hardware passes spikes only (read the spikes, or use an LI population)")
    if t is getattr or t == "size" or (t is operator.getitem and isinstance(args[0], _Sizes)):
        return _sizes(t, args, node)
    if t in (operator.floordiv, operator.mul, operator.add, operator.sub) and all(
            isinstance(a, (int, _Batch)) for a in args):
        return _Batch() if any(isinstance(a, _Batch) for a in args) else t(*args)
    if t in ("view", "reshape", torch.reshape, torch.flatten, "flatten"):
        return _reshape(b, node, args)
    if t in ("transpose", "permute", torch.transpose, torch.permute):
        return _permute(node, args)
    if t == "contiguous":
        return args[0]
    if t is torch.cat:
        parts = [values[a] for a in node.args[0]]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if dim not in (1, -3) or any(len(p.shape) != 3 for p in parts):
            raise NeurodeployError(f"{node.name}: only channel concatenation of feature maps can be lowered")
        total = sum(p.channels for p in parts)
        terms, offset = [], 0
        for p in parts:
            for term in p.terms:
                sel = np.full(total, -1)
                sel[offset:offset + p.channels] = term.select
                terms.append(Term(term.source, sel))
            offset += p.channels
        return Wiring(_merge_terms(terms), (total,) + parts[0].shape[1:])
    if t in (torch.split, torch.chunk, "split", "chunk"):
        v = values[node.args[0]]
        if not _channel_dim_ok(node):
            raise NeurodeployError(f"{node.name}: only channel splits can be lowered")
        out, offset = [], 0
        for size in _split_sizes(node, v.channels):
            terms = [Term(tm.source, tm.select[offset:offset + size]) for tm in v.terms]
            terms = [tm for tm in terms if np.any(tm.select >= 0)]
            out.append(Wiring(terms, (size,) + v.shape[1:]))
            offset += size
        return tuple(out)
    if t is operator.getitem:
        return args[0][args[1]]
    if t is channel_shuffle:
        v = values[node.args[0]]
        groups = node.args[1] if len(node.args) > 1 else node.kwargs["groups"]
        c = v.channels
        perm = np.arange(c).reshape(groups, c // groups).T.reshape(-1)   # new channel i <- old perm[i]
        return Wiring([Term(tm.source, tm.select[perm]) for tm in v.terms], v.shape)
    if t in (operator.add, torch.add, "add"):
        a, c = values[node.args[0]], values[node.args[1]]
        if a.shape != c.shape:
            raise NeurodeployError(f"{node.name}: residual add of different shapes {a.shape} and {c.shape}")
        return Wiring(_merge_terms(a.terms + c.terms), a.shape)
    name = getattr(t, "__name__", str(t))
    raise NeurodeployError(f"cannot export the operation {name} ({node.name}): it has no exact lowering to NIR "
                           "populations and projections")


def export(model: TwinModel, input_shape, conventions: GraphConventions | None = None) -> nir.NIRGraph:
    """Lower a spiking model and attach its conventions (dt, reset, T, ...) as metadata."""
    graph = lower(model, tuple(input_shape))
    lif = model.lif_populations()
    conventions = conventions or GraphConventions()
    conventions = GraphConventions(**{**conventions.__dict__,
                                      "dt": lif[0].dt if lif else conventions.dt,
                                      "reset": "zero", "timesteps": model.timesteps,
                                      "input_shape": tuple(int(s) for s in input_shape),
                                      "num_classes": model.arguments.get("num_classes"),
                                      "model": getattr(model, "name", None), "twin": "snn",
                                      "from_metadata": False})
    return with_conventions(graph, conventions)


def export_checkpoint_model(model: TwinModel, checkpoint_path) -> nir.NIRGraph:
    """Export a network loaded from a checkpoint, recording the checkpoint and its hash."""
    from .. import __version__
    from ..training.checkpoint import sha256
    card = getattr(model, "card", {}) or {}
    shape = tuple(card.get("input_shape") or (model.arguments["in_channels"], model.arguments["input_size"],
                                              model.arguments["input_size"]))
    conventions = GraphConventions(dataset=card.get("dataset"), checkpoint=str(Path(checkpoint_path).resolve()),
                                   checkpoint_sha256=sha256(checkpoint_path), toolkit_version=__version__)
    return export(model, shape, conventions)
