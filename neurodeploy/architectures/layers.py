"""Building blocks shared by every architecture family, for both twins.

One definition builds two twins. ``Twin("cnn")`` gives ReLU and max pooling;
``Twin("snn")`` gives LIF populations and average pooling, and drops
squeeze-excitation and gates. Everything else (convolutions, BatchNorm,
torch.cat, channel shuffle, residual adds) is the same code for both.

Multi-step execution. A spiking network runs for T timesteps. Tensors flow
with time folded into the batch, shaped (T*B, C, H, W), so every layer that
is not a neuron (conv, BatchNorm, cat, shuffle, pooling) processes all
timesteps in one call. Only :class:`LIF` unfolds time to run its recurrence.
The input image (direct encoding) is static: it flows with batch B until the
first LIF, which presents that current at every timestep, so the first
projection is computed once, not T times.

Deployment arithmetic. In eval mode a :class:`ConvBN` of the spiking twin
computes with its *deployed* parameters: BatchNorm folded into the conv
(w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps))
and then snapped to a per-output-channel power-of-two grid fine enough that
every sum of its weights over binary (or dyadic pooled) inputs is exact in
float32 (:func:`snap_to_exact_grid`). Exact sums do not depend on summation
order, so the lowered NIR graph (branches written into channel slices and
summed by fan-in, permutations folded into weights) reproduces the eval-mode
model bit for bit. The exporter writes exactly these deployed parameters.

Loihi-aware fine-tuning (:mod:`neurodeploy.training.loihi_aware`) sets ``loihi_step`` on each
ConvBN / LinearOut: BatchNorm is then frozen and folded in training too, the folded
weights are rounded to multiples of that power-of-two step (Loihi's 8-bit grid for
the layer's population) with a straight-through gradient, and the deployed
parameters are rounded the same way before the snap (which keeps them on it).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..kernels import dynamics

# Bits of headroom below the weight grid for dyadic pooled inputs: average
# pooling of spikes over k x k gives multiples of 1/k^2; 8 bits covers k <= 16.
POOLED_INPUT_BITS = 8
FLOAT32_MANTISSA_BITS = 24


def snap_to_exact_grid(weight: torch.Tensor, bias: torch.Tensor | None):
    """Round each output channel's weights and bias to a grid 2^e such that
    every partial sum over inputs in [0, 1] with <= POOLED_INPUT_BITS
    fractional bits is an exact float32.

    With S = sum|w| + |b| for the channel, all partial sums are multiples of
    2^(e - POOLED_INPUT_BITS) bounded by S, so they are exact when
    S <= 2^(24 + e - POOLED_INPUT_BITS), i.e. e = ceil(log2 S) - 24 + 8.
    That leaves roughly 16 - log2(fan_in) bits for the largest weight.
    """
    w = weight.detach().double()
    rows = w.reshape(w.shape[0], -1)
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    total = rows.abs().sum(1) + b.abs()
    total = torch.where(total > 0, total, torch.ones_like(total))
    exponent = torch.ceil(torch.log2(total)) - FLOAT32_MANTISSA_BITS + POOLED_INPUT_BITS
    grid = torch.pow(2.0, exponent)
    shape = (-1,) + (1,) * (w.dim() - 1)
    w_snapped = torch.round(w / grid.view(shape)) * grid.view(shape)
    b_snapped = torch.round(b / grid) * grid
    return w_snapped.float(), b_snapped.float()


def fold_batchnorm(w: torch.Tensor, b: torch.Tensor, bn):
    """w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta,
    with BN's running statistics (identity when bn is None)."""
    if bn is None:
        return w, b
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * scale.view((-1,) + (1,) * (w.dim() - 1)), (b - bn.running_mean) * scale + bn.bias


def batchnorm64(bn):
    """A BatchNorm's running statistics and affine parameters in float64, detached, as
    :func:`fold_batchnorm` reads them (gamma 1 and beta 0 without affine parameters): the
    exporters fold users' BatchNorms in float64, then round once to float32."""
    mean = bn.running_mean.detach().double()
    return SimpleNamespace(
        weight=bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean),
        bias=bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean),
        running_mean=mean, running_var=bn.running_var.detach().double(), eps=bn.eps)


def deploy(w: torch.Tensor, b: torch.Tensor, loihi_step: float | None, snap: bool):
    """Folded (weight, bias) -> the deployed ones: rounded to the Loihi grid if the layer
    was trained on it, then (spiking twin) snapped to the exact grid; detached."""
    if loihi_step is not None:
        w = torch.round(w / loihi_step) * loihi_step
    if snap:
        w, b = snap_to_exact_grid(w, b)
    return w.detach(), b.detach()


def to_grid(w: torch.Tensor, step: float) -> torch.Tensor:
    """w rounded to multiples of ``step`` in the forward pass; the gradient passes straight
    through the rounding (the straight-through estimator of quantisation-aware training)."""
    return w + (torch.round(w / step) * step - w).detach()


class LIF(nn.Module):
    """Leaky integrate-and-fire population, reset to zero, arctan surrogate.

        v[t] = beta * v[t-1] + I[t]
        s[t] = v[t] > threshold
        v[t] = 0 where s[t]

    (the NIR LIF with tau = dt/(1-beta), r = tau/dt, v_leak = 0, v_reset = 0;
    see :mod:`neurodeploy.kernels.dynamics`, whose code runs it). beta and threshold
    are fixed hyper-parameters; :meth:`nir_parameters` expands them to arrays
    of the full population shape, as NIR needs. ``timesteps`` and ``batch``
    are set by the owning model before each forward.
    """

    def __init__(self, beta: float = 0.9, threshold: float = 1.0, surrogate_slope: float = 2.0):
        super().__init__()
        self.beta, self.threshold, self.surrogate_slope = beta, threshold, surrogate_slope
        self.timesteps, self.batch = 1, None
        self.population_shape: tuple | None = None
        self.dt = dynamics.DEFAULT_DT
        self._coeffs = None

    def nir_parameters(self, shape=None) -> dict:
        shape = tuple(self.population_shape if shape is None else shape)
        tau, r = dynamics.beta_to_nir(np.full(shape, self.beta, dtype=np.float32), self.dt)
        return {"tau": tau, "r": r, "v_leak": np.zeros(shape), "v_threshold": np.full(shape, float(self.threshold)),
                "v_reset": np.zeros(shape)}

    def coefficients(self, device) -> dynamics.LIFCoefficients:
        if self._coeffs is None or self._coeffs.decay.device != torch.device(device):
            p = self.nir_parameters(shape=())
            self._coeffs = dynamics.lif_coefficients(p["tau"], p["r"], p["v_leak"], p["v_threshold"],
                                                     p["v_reset"], self.dt).to(device)
        return self._coeffs

    def step(self, x: torch.Tensor, v: torch.Tensor):
        """One timestep with explicit membrane state (the ONNX export's form): (spikes, v_next)."""
        c = self.coefficients(x.device)
        v = c.decay * v + c.gain * x + c.leak
        s = (v - c.threshold > 0).to(x.dtype)
        return s, torch.where(s > 0, c.v_reset.expand_as(v), v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "step_state", None) is not None:     # single-step mode (ONNX export)
            s, self.step_next = self.step(x, self.step_state)
            return s
        spikes = dynamics.lif_scan(self.current(x), self.coefficients(x.device), self.surrogate_slope,
                                   timesteps=self.timesteps)
        return spikes.reshape(-1, *x.shape[1:])

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """The input current of x, (T*B, ...) or, when static, (B, ...): (T, B, ...), or
        (1, B, ...) for a static one, which lif_scan presents at each of the T steps."""
        T, B = self.timesteps, self.batch if self.batch is not None else x.shape[0] // self.timesteps
        self.population_shape = tuple(x.shape[1:])
        if x.shape[0] == B and T > 1:        # static input current
            return x.unsqueeze(0)
        return x.reshape(T, B, *x.shape[1:])

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}, surrogate=atan(slope={self.surrogate_slope})"


class FusedPopulation(nn.Module):
    """A LIF population as one step for training, with what feeds it and what alone
    reads it: ``pool(lif(cat([s(x) for s in sources])))``, the same computation.

    * ``sources``: ConvBN modules (BatchNorm in training mode) whose outputs, side by
      side, are the population's current; their BatchNorm then runs inside the LIF
      loop (:func:`neurodeploy.kernels.dynamics.lif_scan_normalised`), and the normalised
      current is never written out (the same values to float32 rounding);
    * ``splits``: where the sources read consecutive channel groups of the input of
      these sizes rather than all of it (MixNet's MixConv:
      ``cat([s(xi) for s, xi in zip(sources, x.split(splits, 1))])``);
    * ``pool``: the k x k average pooling (stride k) that is the population's only
      reader; the loop pools the spikes itself (:func:`neurodeploy.kernels.dynamics.lif_scan_pooled`,
      the same values).

    Holds the model's own modules; built by :func:`fuse_populations`. Where the fused
    loops do not apply (GPU, Loihi-aware ConvBNs, no numba) it runs the modules as they are.
    """

    def __init__(self, lif: LIF, pool: nn.AvgPool2d | None = None, sources: tuple = (),
                 splits: tuple | None = None):
        super().__init__()
        self.lif, self.pool, self.sources = lif, pool, nn.ModuleList(sources)
        self.splits = splits

    def source_inputs(self, x) -> list:
        """What each source reads: all of ``x``, or its channel group."""
        return list(x.split(list(self.splits), 1)) if self.splits else [x] * len(self.sources)

    def _normalise_here(self, x) -> bool:
        # BatchNorm2d, or the CPU's BatchNorm across the ranks of data-parallel training
        # (training.distributed.CrossRankBatchNorm: the loop sums the statistics over the ranks)
        return (bool(self.sources) and dynamics.compiled_scan_fits(x, self.lif.coefficients(x.device))
                and all(s.training and s.loihi_step is None and s.bn.training and s.bn.affine
                        and s.bn.track_running_stats
                        and (type(s.bn) is nn.BatchNorm2d or hasattr(s.bn, "sum_across_ranks"))
                        for s in self.sources))

    def forward(self, x):
        lif, k = self.lif, _window(self.pool) if self.pool is not None else 1
        if self._normalise_here(x):
            parts = [lif.current(_as_trained(s.conv(xi)))                          # a concatenation, never built
                     for s, xi in zip(self.sources, self.source_inputs(x))]
            lif.population_shape = (sum(p.shape[2] for p in parts),) + tuple(parts[0].shape[3:])
            y = dynamics.lif_scan_normalised(parts, [s.bn for s in self.sources], lif.coefficients(x.device),
                                             lif.surrogate_slope, k, lif.timesteps)
            return y.reshape(-1, *y.shape[2:])
        if self.sources:
            x = [s(xi) for s, xi in zip(self.sources, self.source_inputs(x))]
            x = torch.cat(x, 1) if len(x) > 1 else x[0]
        if self.pool is None:
            return lif(x)
        y = dynamics.lif_scan_pooled(lif.current(x), lif.coefficients(x.device), lif.surrogate_slope, k,
                                     lif.timesteps)
        return y.reshape(-1, *y.shape[2:])


def _window(pool: nn.Module) -> int | None:
    """k for an average pooling a LIF loop can run itself (dynamics.pooling_window); else None."""
    if not isinstance(pool, nn.AvgPool2d) or pool.ceil_mode or pool.divisor_override is not None:
        return None
    return dynamics.pooling_window(pool.kernel_size, pool.stride, pool.padding)


class LeafTracer(torch.fx.Tracer):
    """Traces through containers (Sequential, Fire, residual blocks) down to these leaves."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, TRACE_LEAVES) or super().is_leaf_module(m, qualname)


def _sources(node: torch.fx.Node, modules: dict):
    """The ConvBN nodes (with BatchNorm) that alone make this node's value, side by side:
    (input node, [ConvBN nodes], cat node or None, split) where they all read one input
    (split None), or each its channel group of one ``torch.split(input, sizes, 1)`` in
    order (split: (split node, its getitem nodes, sizes)); else None."""
    def convbn(n):
        return (isinstance(n, torch.fx.Node) and n.op == "call_module" and isinstance(modules[n.target], ConvBN)
                and modules[n.target].bn is not None and len(n.users) == 1)
    if convbn(node):
        return node.args[0], [node], None, None
    if not (node.op == "call_function" and node.target is torch.cat and len(node.users) == 1
            and _argument(node, 1, "dim", 0) == 1):
        return None
    parts = list(node.args[0])
    if not parts or not all(convbn(n) for n in parts):
        return None
    inputs = [n.args[0] for n in parts]
    if len(set(inputs)) == 1:
        return inputs[0], parts, node, None
    split = inputs[0].args[0] if isinstance(inputs[0], torch.fx.Node) and inputs[0].op == "call_function" else None
    if (isinstance(split, torch.fx.Node) and split.op == "call_function" and split.target is torch.split
            and _argument(split, 2, "dim", 0) == 1 and len(split.users) == len(parts)
            and all(i.op == "call_function" and i.target is operator.getitem and i.args == (split, k)
                    and len(i.users) == 1 for k, i in enumerate(inputs))):
        sizes = _argument(split, 1, "split_size_or_sections", None)
        if isinstance(sizes, (list, tuple)) and len(sizes) == len(parts):
            return split.args[0], parts, node, (split, inputs, tuple(sizes))
    return None


def _argument(node: torch.fx.Node, index: int, name: str, default):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _interleave_shuffles(gm: torch.fx.GraphModule) -> int:
    """Replace each ``channel_shuffle(torch.cat(parts, 1), g)`` of g parts, the concatenation
    read by nothing else, by one :func:`interleave_channels` call (the same
    values, one copy instead of two). Returns how many."""
    replaced = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target is channel_shuffle):
            continue
        cat, groups = node.args[0], _argument(node, 1, "groups", None)
        if not (isinstance(cat, torch.fx.Node) and cat.op == "call_function" and cat.target is torch.cat
                and len(cat.users) == 1 and _argument(cat, 1, "dim", 0) == 1 and len(cat.args[0]) == groups):
            continue
        with gm.graph.inserting_before(node):
            merged = gm.graph.call_function(interleave_channels, (list(cat.args[0]),))
        node.replace_all_uses_with(merged)
        gm.graph.erase_node(node)
        gm.graph.erase_node(cat)
        replaced += 1
    return replaced


def fuse_populations(features: nn.Module) -> nn.Module:
    """The graph of ``features`` with every LIF that has a BatchNorm'd current (one
    ConvBN, or a concatenation of ConvBNs of one input or of its split's channel groups)
    or whose only reader is a fusable average pooling (see :func:`_window`) replaced,
    with those modules, by a :class:`FusedPopulation`, and every shuffle of a
    concatenation made one copy (:func:`_interleave_shuffles`): torch.fx passes.
    ``features`` itself is left as it is (its modules are shared); with nothing to
    fuse, or when it cannot be traced (other neuron modules swapped in), it is
    returned unchanged."""
    if not any(isinstance(m, LIF) for m in features.modules()):
        return features
    try:
        gm = torch.fx.GraphModule(features, LeafTracer().trace(features))
    except torch.fx.proxy.TraceError:
        return features
    modules = dict(gm.named_modules())
    shuffles, fused = _interleave_shuffles(gm), 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], LIF):
            continue
        found = _sources(node.args[0], modules)
        reader = next(iter(node.users)) if len(node.users) == 1 else None
        pool = (reader if reader is not None and reader.op == "call_module"
                and _window(modules[reader.target]) is not None else None)
        if found is None and pool is None:
            continue
        x, parts, cat, split = found if found is not None else (node.args[0], [], None, None)
        split_node, groups, sizes = split if split is not None else (None, [], None)
        name = f"population_{fused}"
        gm.add_submodule(name, FusedPopulation(modules[node.target], modules[pool.target] if pool else None,
                                               tuple(modules[n.target] for n in parts), sizes))
        last = pool or node
        with gm.graph.inserting_before(last):
            replacement = gm.graph.call_module(name, (x,))
        last.replace_all_uses_with(replacement)
        for dead in [pool, node, cat, *parts, *groups, split_node]:
            if dead is not None:
                gm.graph.erase_node(dead)
        fused += 1
    if not fused and not shuffles:
        return features
    gm.graph.lint()
    gm.recompile()
    return gm


class ConvBN(nn.Module):
    """Conv2d (or a 1x1 'linear' conv) followed by BatchNorm.

    Training: conv then BN with batch statistics (Loihi-aware: folded with the
    running statistics and rounded to ``loihi_step``). Eval: the spiking twin uses
    the deployed (folded, snapped) parameters; the CNN twin runs conv + BN.
    """

    def __init__(self, cin, cout, kernel=1, stride=1, padding=None, groups=1, bn=True, snap=False,
                 bias=None):
        super().__init__()
        padding = kernel // 2 if padding is None else padding
        bias = (not bn) if bias is None else bias
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.snap = snap
        self.loihi_step: float | None = None   # set during and after Loihi-aware training (loihi_aware.py)

    def folded(self):
        """(weight, bias) with BatchNorm folded in (running statistics); differentiable."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
        return fold_batchnorm(w, b, self.bn)

    def deployed_parameters(self):
        """(weight, bias) with BN folded, on the Loihi grid if trained on it, and for the
        spiking twin snapped."""
        return deploy(*self.folded(), self.loihi_step, self.snap)

    def forward(self, x):
        c = self.conv
        if self.training and self.loihi_step is not None:   # Loihi-aware fine-tuning
            w, b = self.folded()
            return _as_trained(F.conv2d(x, to_grid(w, self.loihi_step), b, c.stride, c.padding, c.dilation, c.groups))
        if self.training or not self.snap:
            y = _as_trained(self.conv(x)) if self.training else self.conv(x)
            return self.bn(y) if self.bn is not None else y
        w, b = self.deployed_parameters()
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)


class LinearOut(nn.Module):
    """Fully connected classifier followed by BatchNorm; folded and snapped like ConvBN.

    The BatchNorm matters for the spiking twin: it scales the output
    population's input current to O(threshold) from the first step, so the
    output neurons spike (and the loss has a gradient) from the start.
    """

    def __init__(self, cin, cout, snap=False, bn=True):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.bn = nn.BatchNorm1d(cout) if bn else None
        self.snap = snap
        self.loihi_step: float | None = None

    def folded(self):
        return fold_batchnorm(self.fc.weight, self.fc.bias, self.bn)

    def deployed_parameters(self):
        return deploy(*self.folded(), self.loihi_step, self.snap)

    def forward(self, x):
        if self.training and self.loihi_step is not None:   # Loihi-aware fine-tuning
            w, b = self.folded()
            return F.linear(x, to_grid(w, self.loihi_step), b)
        if self.training or not self.snap:
            y = self.fc(x)
            return self.bn(y) if self.bn is not None else y
        return F.linear(x, *self.deployed_parameters())


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (CNN twin only: no exact spiking form)."""

    def __init__(self, channels, reduced):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


# Training on CPU feeds the layers channels-last: oneDNN's convolutions (and their
# backward passes) take 12-43 % less time on channels-last activations than on NCHW for
# the zoo's spiking twins (25 % less per step for the MixNet and Xception CNN twins), and
# the LIF loops run on those rows as they lie (dynamics._channels_last).
_CHANNELS_LAST_TRAINING = True


def _as_trained(y: torch.Tensor) -> torch.Tensor:
    """A conv output in training on CPU, channels-last. A 1-channel input (mnist5k) is
    NCHW and channels-last at once, and oneDNN then returns NCHW: converting here once
    keeps the layers after it channels-last."""
    if (_CHANNELS_LAST_TRAINING and y.dim() == 4 and y.device.type == "cpu" and y.shape[1] > 1
            and y.shape[2] * y.shape[3] > 1 and not y.is_contiguous(memory_format=torch.channels_last)):
        return y.contiguous(memory_format=torch.channels_last)
    return y


# What torch.fx traces stop at (the NIR export's nodes and the fusion pass's)
TRACE_LEAVES = (ConvBN, LinearOut, LIF, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, SqueezeExcite, nn.ReLU,
                nn.Identity, nn.AdaptiveAvgPool2d, nn.Sigmoid, nn.SiLU)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (g, C/g) -> transpose -> (C/g, g).

    Under torch.fx tracing it records itself as one ``channel_shuffle`` call
    (a permutation the exporter folds into the consumers) rather than
    view/transpose, however it was imported.
    """
    if isinstance(x, torch.fx.Proxy):
        return x.tracer.create_proxy("call_function", channel_shuffle, (x, groups), {})
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # channels-last (training on CPU): shuffle within each position's row, keeping the layout
        rows = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4)
        return rows.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def interleave_channels(parts: list) -> torch.Tensor:
    """``channel_shuffle(torch.cat(parts, 1), len(parts))``, for parts of one shape as one
    copy: channel i*g + j of the result is channel i of parts[j]. Training runs ShuffleNetV2's
    concatenate-and-shuffle as this (:func:`fuse_populations`); the concatenation and the
    shuffle were two copies forward and two backward (7.3 ms against 3.3 ms for a unit's
    (128, 116, 16, 16) channels-last output and its gradient on this CPU)."""
    n, m, h, w = parts[0].shape
    if any(p.shape != parts[0].shape for p in parts):
        return channel_shuffle(torch.cat(parts, 1), len(parts))
    # channels innermost (channels-last, or a channel group of it), as torch.cat would keep them
    if all(p.stride(1) == 1 and p.stride(3) >= m for p in parts):
        rows = torch.stack([p.permute(0, 2, 3, 1) for p in parts], 4)     # (n, h, w, m, g): channels-last
        return rows.reshape(n, h, w, m * len(parts)).permute(0, 3, 1, 2)
    return torch.stack(parts, 2).reshape(n, m * len(parts), h, w)


@dataclass(frozen=True)
class Twin:
    """Which twin a definition builds, and its neuron hyper-parameters."""

    kind: str = "snn"            # "snn" | "cnn"
    beta: float = 0.9
    threshold: float = 1.0
    surrogate_slope: float = 2.0

    @property
    def spiking(self) -> bool:
        return self.kind == "snn"

    def act(self) -> nn.Module:
        if self.spiking:
            return LIF(self.beta, self.threshold, self.surrogate_slope)
        return nn.ReLU(inplace=False)

    def pool(self, kernel: int, stride: int | None = None) -> nn.Module:
        stride = stride or kernel
        return nn.AvgPool2d(kernel, stride) if self.spiking else nn.MaxPool2d(kernel, stride)

    def conv(self, cin, cout, kernel=1, stride=1, padding=None, groups=1, bn=True, bias=None) -> ConvBN:
        return ConvBN(cin, cout, kernel, stride, padding, groups, bn=bn, snap=self.spiking, bias=bias)

    def linear(self, cin, cout) -> LinearOut:
        return LinearOut(cin, cout, snap=self.spiking)

    def readout(self) -> nn.Module:
        """After the classifier: the spiking twin's output population (its spike
        count is the class score); the CNN twin's logits stay linear."""
        if self.spiking:
            return LIF(self.beta, self.threshold, self.surrogate_slope)
        return nn.Identity()

    def se(self, channels, reduced) -> nn.Module:
        return nn.Identity() if self.spiking else SqueezeExcite(channels, max(1, reduced))


class TwinModel(nn.Module):
    """Base class of every zoo network.

    ``forward(x)`` takes images (B, C, H, W) and returns class scores (B, K):
    for the CNN twin the logits; for the spiking twin the output summed over
    T timesteps (the readout is the spike count of the last population,
    averaged over space where the architecture pools it). ``forward_steps``
    returns the per-timestep output (T, B, K) that the NIR graph's Output
    node produces.
    """

    def __init__(self, twin: Twin, timesteps: int = 4):
        super().__init__()
        self.twin = twin
        self.timesteps = timesteps if twin.spiking else 1
        self.arguments: dict = {}

    def body(self, x):
        """One pass through the layers, time folded into the batch (families set ``features``).
        Training on CPU feeds the layers channels-last (see _CHANNELS_LAST_TRAINING), and a
        spiking twin runs each LIF population fused with the BatchNorm before it and the
        pooling after it (:func:`fuse_populations`): the same computation, less memory
        traffic."""
        if self.training and isinstance(x, torch.Tensor) and x.device.type == "cpu":
            if x.dim() == 4 and _CHANNELS_LAST_TRAINING:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.twin.spiking:
                # kept outside _modules (no state_dict entries); rebuilt when any module was swapped
                modules = tuple(self.features.modules())
                cached = self.__dict__.get("_training_features")
                if (cached is None or len(cached[0]) != len(modules)
                        or any(a is not b for a, b in zip(cached[0], modules))):
                    cached = self.__dict__["_training_features"] = (modules, fuse_populations(self.features))
                return cached[1](x)
        return self.features(x)

    def _set_time(self, batch):
        for m in self.modules():
            if isinstance(m, LIF):
                m.timesteps, m.batch = self.timesteps, batch

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        self._set_time(x.shape[0])
        y = self.body(x)
        if y.shape[0] == x.shape[0] and self.timesteps > 1:   # never reached a neuron
            y = y.unsqueeze(0).expand(self.timesteps, *y.shape)
        return y.reshape(self.timesteps, x.shape[0], *y.shape[1:])

    def forward(self, x):
        return self.forward_steps(x).sum(0)

    def lif_populations(self):
        return [m for m in self.modules() if isinstance(m, LIF)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: TwinModel, input_shape, device="cpu") -> int:
    """Multiply-accumulates of one inference of a twin (conv + linear layers, one timestep)."""
    macs = 0

    def conv_macs(conv: nn.Conv2d, out):
        return out[0].numel() * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, ConvBN):
            macs += conv_macs(m.conv, out)
        elif isinstance(m, nn.Conv2d):
            macs += conv_macs(m, out)
        else:
            fc = m.fc if isinstance(m, LinearOut) else m
            macs += fc.in_features * fc.out_features

    inner = {id(m.conv) for m in model.modules() if isinstance(m, ConvBN)}
    inner |= {id(m.fc) for m in model.modules() if isinstance(m, LinearOut)}
    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (ConvBN, LinearOut)) or (isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in inner)]
    was_training, steps = model.training, model.timesteps
    model.eval()
    model.timesteps = 1
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.timesteps = steps
        model.train(was_training)
        for h in hooks:
            h.remove()
    return int(macs)
