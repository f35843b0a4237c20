"""The reference backend: any NIR graph on CUDA or CPU, with exact hardware counters.

Neurons follow the one discretisation of :mod:`neurodeploy.ir.neurons` (forward
Euler at the graph's ``dt``, strict threshold, reset in the same step); Threshold is
s = I > threshold (stateless) and Delay outputs I[t - delay/dt].

Projections (Affine, Linear, Scale, Conv1d, Conv2d with stride / padding /
dilation / groups, SumPool2d, AvgPool2d, Flatten) have no state. Spikes reach
the next node in the same timestep.

Execution. Acyclic graphs run layer-serially: every node processes all T
timesteps of the batch in one call, time folded into the batch (T*B, ...);
neurons unfold time for their recurrence. A static input (direct encoding)
stays (B, ...) until the first neuron, so its projection is computed once,
not T times (the counters still count it at every timestep, as hardware
would). Graphs with cycles run step by step, a back edge carrying the
previous timestep's value (a one-step delay). On CPU a LIF/IF population runs as
one compiled loop (:mod:`neurodeploy.kernels.lif_cpu`); when its only reader is a k x k
pooling with stride k (k*k a power of two), that loop pools the spikes itself and
the population is never written out (``_fusable_pools``): the same values, since
sums of spikes are exact.

Counters (NeuroBench's definitions, exact): for a projection with weight
mask M = (W != 0), each nonzero input element contributes as many synaptic
operations as it has nonzero-weight targets ("fan-out"); the fan-out map of
every input position is computed once per node with autograd (the gradient
of sum(op(x, M)) with respect to x). Effective ops are ACs when every input
value of the run was 0 or 1, otherwise MACs. Dense ops count every fan-out.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..kernels import dynamics
from ..errors import NeurodeployError
from ..validation import run_arguments, samples_in
from ..ir import neurons
from ..ir.conventions import conventions_of
from ..ir.nodes import POPULATIONS, PROJECTIONS
from ..ir.topology import conv_output_size, flatten_graph, pair, toposort
from ..kernels import events, grid, integer, lif_cpu
from ..ir.counters import PopulationCounts, ProjectionCounts, RunCounters, RunResult
from .base import Support



def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NeurodeployError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(device)


def _as_array(inputs) -> np.ndarray:
    """The inputs as float32, or one line saying why they cannot be (strings, objects)."""
    try:
        return np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise NeurodeployError(f"the input is not an array of numbers ({e})") from None


def _as_tensor(a, device):
    return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)


class _Op:
    """One compiled node: ``apply(x)`` on (batch, *shape) tensors, plus its counters."""

    kind = "identity"

    def __init__(self, name, node, device):
        self.name, self.node, self.device = name, node, device

    def apply(self, x):
        return x


class _Projection(_Op):
    def __init__(self, name, node, device):
        super().__init__(name, node, device)
        self.kind = type(node).__name__
        n = node
        if isinstance(n, nir.Conv2d):
            if isinstance(n.padding, str):
                raise NeurodeployError(f"node {name}: string padding {n.padding!r} is not supported; use integers")
            self.w, self.b = _as_tensor(n.weight, device), _as_tensor(n.bias, device)
            self.args = dict(stride=pair(n.stride), padding=pair(n.padding), dilation=pair(n.dilation),
                             groups=int(n.groups))
            self.f = lambda x, w, b: F.conv2d(x, w, b, **self.args)
        elif isinstance(n, nir.Conv1d):
            self.w, self.b = _as_tensor(n.weight, device), _as_tensor(n.bias, device)
            self.args = dict(stride=pair(n.stride, 1)[0], padding=pair(n.padding, 1)[0],
                             dilation=pair(n.dilation, 1)[0], groups=int(n.groups))
            self.f = lambda x, w, b: F.conv1d(x, w, b, **self.args)
        elif isinstance(n, nir.Affine):
            self.w, self.b = _as_tensor(n.weight, device), _as_tensor(n.bias, device)
            self.f = lambda x, w, b: F.linear(x, w, b)
        elif isinstance(n, nir.Linear):
            self.w, self.b = _as_tensor(n.weight, device), None
            self.f = lambda x, w, b: F.linear(x, w)
        elif isinstance(n, nir.Scale):
            self.w, self.b = _as_tensor(n.scale, device), None
            self.f = lambda x, w, b: x * w
        elif isinstance(n, (nir.SumPool2d, nir.AvgPool2d)):
            k, s, p = pair(n.kernel_size), pair(n.stride), pair(n.padding)
            self.w, self.b = None, None
            if isinstance(n, nir.AvgPool2d):
                self.f = lambda x, w, b: F.avg_pool2d(x, k, s, p)
            else:   # sum pooling: average pooling times the window size (exact for power-of-two windows)
                self.f = lambda x, w, b: F.avg_pool2d(x, k, s, p, divisor_override=1)
        for t in (self.w, self.b):
            if t is not None and not torch.isfinite(t).all():
                raise NeurodeployError(f"node {name} ({self.kind}) has NaN or infinite weights; "
                                       "the graph is broken: re-export it")
        self._fanout = {}

        # Slice-writing projections (a concatenation's branches) have zero output rows:
        # compute only the live rows and place them (same numbers, a fraction of the work).
        self.rows, self.row_slice = None, None
        if self.kind in ("Conv2d", "Conv1d", "Affine") and int(getattr(n, "groups", 1)) == 1:
            live = (self.w.reshape(self.w.shape[0], -1) != 0).any(1) | (self.b != 0)
            if int(live.sum()) < 0.75 * len(live):
                self.rows = torch.nonzero(live).flatten()
                self.w_live, self.b_live = self.w[self.rows].contiguous(), self.b[self.rows].contiguous()
                # the same rows as host ints, and as a slice when contiguous (a concatenation branch),
                # so that placing them needs no device round trip per batch
                self.rows_host = self.rows.cpu().tolist()
                lo, hi = self.rows_host[0], self.rows_host[-1] + 1
                self.row_slice = slice(lo, hi) if hi - lo == len(self.rows_host) else None

        self.layout = "nchw"
        self.kernels, self.kernel = None, "dense"    # see use_exact_kernels
        # int8 kernel only: the scale its integer inputs carry (x * input_scale), and whether
        # it hands its sums unscaled to the LIF loop that reads them (TorchProgram._link_integers)
        self.input_scale, self.keeps_sums = None, False

    def use_channels_last(self):
        """Run this Conv2d on channels-last tensors (CPU, spike-fed projections only).

        On CPUs, PyTorch's NCHW kernels for 1x1, depthwise and small convolutions
        and for pooling are several times slower than their channels-last (NHWC)
        ones, and a 1x1 conv on NHWC data is one matrix product,
        (N*H*W, C_in) @ (C_in, C_out). The summation order changes, so this is
        used only where the program knows the inputs are spikes: sums of
        exact-grid weights over binary inputs are exact in any order (see
        ``layers.snap_to_exact_grid``), and for other graphs the result is the same
        sum to float32 rounding.
        """
        if self.kind != "Conv2d":
            return
        a = self.args
        w, b = (self.w_live, self.b_live) if self.rows is not None else (self.w, self.b)
        if (tuple(w.shape[2:]) == (1, 1) and a["stride"] == (1, 1) and a["padding"] == (0, 0)
                and a["groups"] == 1):
            self.layout = "matmul"
            self.w_mat = w.reshape(w.shape[0], -1).t().contiguous()     # (C_in, C_out)
            self.b_mat = b.contiguous()
        else:
            self.layout = "channels_last"
            if self.rows is not None:
                self.w_live = self.w_live.contiguous(memory_format=torch.channels_last)
            else:
                self.w = self.w.contiguous(memory_format=torch.channels_last)

    def sums_exact(self, fraction_bits: int, max_input: float) -> bool:
        """Every partial sum is an exact float32, in any order, for inputs that are multiples
        of 2^-fraction_bits in [0, max_input] (:mod:`neurodeploy.kernels.grid`)."""
        return self.w is not None and grid.exact_in_any_order(
            self.w.cpu().numpy(), None if self.b is None else self.b.cpu().numpy(), fraction_bits, max_input)

    def use_exact_kernels(self, fraction_bits: int, max_input: float, binary: bool, prefer: str = "auto"):
        """Offer the integer and event-driven kernels (CPU) beside the dense one, for a
        projection whose sums are exact in any order (:meth:`sums_exact`, which the caller
        checked): a Conv2d (groups 1), Affine or Linear of inputs that are multiples of
        2^-fraction_bits in [0, max_input] (spikes, pooled spikes). They then give the same
        bits. ``prefer``: "auto" times the candidates on the first batch and keeps the
        fastest; a kernel's name uses that one where it is offered; "dense" none."""
        conv = self.kind == "Conv2d"
        if prefer == "dense" or self.kind not in ("Conv2d", "Affine", "Linear") or (conv and self.args["groups"] != 1):
            return
        w, b = (self.w_live, self.b_live) if self.rows is not None else (self.w, self.b)
        w_np, b_np = w.cpu().numpy(), (b.cpu().numpy() if b is not None else None)
        a = self.args if conv else dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1))
        kernel = tuple(w.shape[2:]) if conv else (1, 1)
        candidates = {"dense": self._dense_output}
        bias = (b_np if b_np is not None else np.zeros(w.shape[0])).astype(np.float32)
        if events.AVAILABLE:
            taps = (w_np.transpose(2, 3, 1, 0) if conv else w_np.T[None, None])     # (KH, KW, C, O)
            taps = np.ascontiguousarray(taps, dtype=np.float32)
            candidates["events"] = lambda x: self._event_output(x, taps, bias, binary, a)
        ints = grid.integer_weights(w_np)
        scale_in = 2.0 ** fraction_bits
        if ints is not None and max_input * scale_in <= 127:
            w8, scale_out = integer.weight_matrix(ints[0]), 2.0 ** (ints[1] - fraction_bits)
            self.input_scale = scale_in
            self._sums = lambda x: integer.accumulate(x, scale_in, w8, scale_out, bias, kernel, a["stride"],
                                                      a["padding"], a["dilation"])
            candidates["int8"] = lambda x: self._sums(x).to_float()
        if prefer in candidates:
            candidates = {prefer: candidates[prefer]}
        self.kernels = candidates
        self.kernel = None if len(candidates) > 1 else next(iter(candidates))

    def _event_output(self, x, taps, bias, binary, a):
        image = x.dim() == 4
        rows = (x.permute(0, 2, 3, 1) if image else x[:, None, None, :]).contiguous()
        n, h, w = rows.shape[:3]
        oh, ow = conv_output_size((h, w), taps.shape[:2], a["stride"], a["padding"], a["dilation"])
        out = torch.empty((n, oh, ow, taps.shape[3]))
        events.conv2d(rows.numpy(), taps, bias, out.numpy(), binary, a["stride"], a["padding"], a["dilation"],
                      torch.get_num_threads())
        return out.permute(0, 3, 1, 2) if image else out.view(n, -1)

    def _tune(self, x) -> str:
        """The fastest of the offered kernels on a quarter of this input: each runs
        once on two samples (compiling or loading it), then twice timed, the kernels
        taking turns so that a burst of load on a shared machine hits them alike. All
        give the same bits, so the choice changes only the speed. The quarter is the
        middle one: x is (T*b, ...) time-major, and the first timesteps, while the
        membranes charge, carry fewer spikes than the run does."""
        size = max(2, x.shape[0] // 4)
        start = (x.shape[0] - size) // 2
        part = x[start:start + size]
        seconds = {}
        for kernel in self.kernels.values():
            kernel(part[:2])
        for _ in range(2):
            for name, kernel in self.kernels.items():
                t0 = time.perf_counter()
                kernel(part)
                seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - t0)
        return min(seconds, key=seconds.get)

    def output(self, x):
        """The projection of x: a tensor, or for a projection that writes only some
        rows of its target (a concatenation branch) those rows as :class:`_Rows`,
        which the fan-in places (see ``TorchProgram._gather``)."""
        if self.kernels is None or x.device.type != "cpu" or x.requires_grad:
            y = self._dense_output(x)
        else:
            if self.kernel is None:
                self.kernel = self._tune(x)
            y = self._sums(x) if self.keeps_sums else self.kernels[self.kernel](x)
        return y if self.rows is None else _Rows(y, self)

    def _dense_output(self, x):
        if self.layout == "matmul":
            n, c, h, w = x.shape
            flat = x.permute(0, 2, 3, 1).reshape(n * h * w, c)    # a view when x is channels-last
            y = torch.addmm(self.b_mat, flat, self.w_mat)
            return y.view(n, h, w, -1).permute(0, 3, 1, 2)              # channels-last memory
        if self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.f(x, self.w, self.b) if self.rows is None else self.f(x, self.w_live, self.b_live)

    def apply(self, x):
        y = self.output(x)
        return y.full() if isinstance(y, _Rows) else y

    def fanout(self, in_shape) -> tuple[torch.Tensor, int]:
        """Synaptic targets with a nonzero weight for each input element (per-sample shape),
        flattened in float64 (counts are integers: exact below 2^53, where float32 loses
        them past 2^24), and their total; kept per shape, as every batch's counters use them."""
        key = tuple(in_shape)
        if key not in self._fanout:
            x = torch.ones(1, *in_shape, device=self.device, requires_grad=True)
            mask_w = (self.w != 0).float() if self.w is not None else None
            with torch.enable_grad():
                y = self.f(x, mask_w, None) if self.kind != "AvgPool2d" else self.f(x, None, None)
                if self.kind == "AvgPool2d":
                    k = pair(self.node.kernel_size)
                    y = y * float(np.prod(k))           # count additions, not the 1/k^2 scaling
                y.sum().backward()
            fan = x.grad[0].detach().double().reshape(-1)
            self._fanout[key] = (fan, int(round(float(fan.sum()))))
        return self._fanout[key]

    @functools.cached_property
    def nonzero_parameters(self) -> int:
        """Nonzero weights and biases (counted once: a pass over the weights per run showed
        in profiles of short runs)."""
        return int(sum(int((t != 0).sum()) for t in (self.w, self.b) if t is not None))


def _fusable_pools(nodes: dict, edges: list) -> dict:
    """{population: (pooling node, k, scale)} for every k x k pooling (stride k, no
    padding) that reads one LIF/IF population and nothing else, and is that
    population's only consumer: the compiled loop can then pool the spikes as they
    are made and never write the population out. k*k is a power of two
    (dynamics.pooling_window), so the average scale * (spike count) is exact, as
    avg_pool2d's sum / k^2 is."""
    fused = {}
    for q, node in nodes.items():
        if not isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            continue
        k = dynamics.pooling_window(node.kernel_size, node.stride, node.padding)
        preds = [s for s, d in edges if d == q]
        if k is None or len(preds) != 1 or not isinstance(nodes[preds[0]], (nir.LIF, nir.IF)):
            continue
        if [d for s, d in edges if s == preds[0]] == [q]:
            fused[preds[0]] = (q, k, 1.0 / k ** 2 if isinstance(node, nir.AvgPool2d) else 1.0)
    return fused


def _is_uniform(a: torch.Tensor) -> bool:
    """One value shared by the whole population."""
    return bool((a == a.reshape(-1)[0]).all())


def _param_like(a: torch.Tensor, v: torch.Tensor):
    """A per-neuron parameter for elementwise ops on the state v (B, *shape): a Python
    float when uniform (float32 value, exactly), else laid out as v is (channels-last)."""
    if _is_uniform(a):
        return float(a.reshape(-1)[0])
    if _channels_last(v) and a.dim() == 3:
        return a.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    return a


class _Flatten(_Op):
    kind = "Flatten"

    def apply(self, x):
        n = self.node
        start = int(n.start_dim) + 1 if int(n.start_dim) >= 0 else int(n.start_dim)
        end = int(n.end_dim) + 1 if int(n.end_dim) >= 0 else int(n.end_dim)
        return torch.flatten(x, start, end)


@dataclass
class _NeuronParams:
    decay: torch.Tensor
    gain: torch.Tensor
    leak: torch.Tensor
    threshold: torch.Tensor | None
    v_reset: torch.Tensor | None
    syn_decay: torch.Tensor | None = None
    w_in: torch.Tensor | None = None


class _Population(_Op):
    def __init__(self, name, node, device, dt, reset: str = "to_v_reset", integrator: str = "dt"):
        super().__init__(name, node, device)
        self.kind = type(node).__name__
        if reset not in neurons.RESET_MODES:
            raise NeurodeployError(f"population {name}: unknown reset mode {reset!r} in the graph's metadata "
                                   f"(known: {', '.join(neurons.RESET_MODES)})")
        self.reset = reset
        c = neurons.coefficients(node, dt, integrator)
        t = lambda a: None if a is None else _as_tensor(a, device)
        self.p = _NeuronParams(t(c.decay), t(c.gain), t(c.leak), t(c.threshold) if c.spiking else None,
                               t(c.v_reset),
                               t(c.syn_decay), t(c.w_in))
        self.spiking = self.p.threshold is not None
        self._flat_params = {}
        # one value of each parameter for the whole population (the compiled loop's fast case,
        # the only one that reads integer sums or writes int8 spikes: TorchProgram._link_integers)
        self.shares_params = self.spiking and all(
            _is_uniform(getattr(self.p, k)) for k in ("decay", "gain", "leak", "threshold", "v_reset"))
        self.int8_multiplier = None     # write int8 spikes times this, for int8 readers
        for t in (self.p.decay, self.p.gain, self.p.threshold):
            if t is not None and torch.isnan(t).any():
                raise NeurodeployError(f"node {name} ({self.kind}) has NaN parameters; re-export the graph")

    def _fast_scan(self, current):
        """LIF/IF without a synaptic stage, in place: the same float operations in the
        same order as dynamics.lif_scan (v = decay*v + gain*I + leak), fewer allocations.
        A gain of exactly 1 and a leak of exactly 0 are skipped (x*1 = x, x+0 = x).
        Parameters shared by the whole population become scalars, others take the
        state's memory layout: elementwise kernels over mixed layouts are not vectorised."""
        p = self.p
        unit_gain = bool((p.gain == 1).all())
        no_leak = bool((p.leak == 0).all())
        zero_reset = bool((p.v_reset == 0).all())
        v = torch.zeros_like(current[0])
        decay, gain, leak, threshold = (_param_like(a, v) for a in (p.decay, p.gain, p.leak, p.threshold))
        out = torch.empty_like(current)
        for t in range(current.shape[0]):
            v.mul_(decay)
            v.add_(current[t] if unit_gain else gain * current[t])
            if not no_leak:
                v.add_(leak)
            fired = out[t]
            torch.gt(v, threshold, out=fired)             # spikes as 0.0 / 1.0 straight into the output
            if zero_reset:
                v.addcmul_(v, fired, value=-1.0)          # v - v*s: exactly 0 where s = 1, v where s = 0
            else:
                v = torch.where(fired > 0, p.v_reset.expand_as(v), v)
        return out, {"v": v, "i": None}

    def scan_layer(self, x, static, T, b, pool=None):
        """The layer-serial step: x is the summed current, (b, ...) when static (the same
        at every timestep) or (T*b, ...). Returns the output (T, b, ...) and, when the
        compiled loop ran, its counts (:class:`_LoopCounts`), else None.

        On CPU a spiking population without a synaptic stage runs as one compiled loop
        (:mod:`neurodeploy.kernels.lif_cpu`, the same float32 arithmetic); a 4-D population is kept
        channels-last there, the layout the spike-fed convolutions after it want.
        ``pool`` (k, scale): the k x k pooling that alone reads this population, run in
        the same loop where it fits (see :meth:`pool_fits`); the output is then the
        pooled one and ``_LoopCounts.pooled`` says so."""
        if not self.compiled_loop_fits(x):
            current = x.unsqueeze(0).expand(T, *x.shape) if static else x.reshape(T, b, *x.shape[1:])
            return self.scan(current)[0], None
        if isinstance(x, integer.IntegerSums):
            return self._compiled_scan([(x, slice(None))], x.shape[1:], static, T, b, pool)
        if x.dim() == 4 and not _channels_last(x) and not (static and x.is_contiguous()):
            x = x.contiguous(memory_format=torch.channels_last)     # (a static NCHW one is read as it is)
        return self._compiled_scan([(x, slice(None))], x.shape[1:], static, T, b, pool)

    def scan_concatenation(self, parts: list, shape, T, b, pool=None):
        """scan_layer for a current that is a concatenation: ``parts`` are the branches'
        (T*b, C_part, ...) currents with their channel slices, which tile the population
        of per-sample ``shape``. Each branch's neurons run on their own (a neuron only
        sees its own current), so the concatenated current is never built."""
        parts = [(y.contiguous(memory_format=torch.channels_last)
                  if isinstance(y, torch.Tensor) and y.dim() == 4 and not _channels_last(y) else y, span)
                 for y, span in parts]
        return self._compiled_scan(parts, shape, False, T, b, pool)

    def pool_fits(self, shape, pool) -> bool:
        """The compiled loop can pool this population's spikes itself: a (C, H, W)
        population sharing its parameters, H and W multiples of the window."""
        if pool is None or len(shape) != 3 or shape[1] % pool[0] or shape[2] % pool[0]:
            return False
        return all(a.size == 1 for a in self._memory_order_params(tuple(shape), True).values())

    def _compiled_scan(self, parts, shape, static, T, b, pool=None):
        """Run the compiled loop on each (current, channel slice) part. Memory order per
        sample is (rows, channels): (H*W, C) channels-last, (1, C) for a vector. A part
        may be an integer projection's unscaled sums (:class:`~neurodeploy.kernels.integer.IntegerSums`);
        with ``int8_multiplier`` set, the output is int8 (see TorchProgram._link_integers)."""
        shape = tuple(shape)
        rows = int(np.prod(shape[1:])) if len(shape) == 3 else 1
        channels_last = len(shape) == 3
        pool = pool if self.pool_fits(shape, pool) else None
        k, scale = pool if pool is not None else (1, 1.0)
        out_shape = (shape[0], shape[1] // k, shape[2] // k) if pool is not None else shape
        params = self._memory_order_params(shape, channels_last)
        int8 = self.int8_multiplier is not None
        out = torch.empty((T * b,) + out_shape, dtype=torch.int8 if int8 else torch.float32,
                          memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out_rows = rows // (k * k)
        values = _as_matrix(out).numpy().reshape(T, b, out_rows, -1)
        counts = np.zeros((b, 3), np.int64)
        per_neuron = np.zeros((rows, shape[0]), np.float32)
        active = np.zeros((out_rows, shape[0]), np.float32) if pool is not None else None
        for current, span in parts:
            sums = None
            if isinstance(current, integer.IntegerSums):
                sums, current = (current.scale, current.bias), current.acc
                channels_first = False      # (N, OH, OW, O) or (N, O): memory order already
            else:
                channels_first = (static and channels_last and current.is_contiguous()    # a static NCHW current
                                  and not current.is_contiguous(memory_format=torch.channels_last))
            current = (current.reshape(1, b, current.shape[1], rows).numpy() if channels_first else
                       (current if sums else _as_matrix(current)).contiguous().numpy()
                       .reshape(1 if static else T, b, rows, -1))
            lif_cpu.lif_scan(current, params, values, counts, per_neuron, torch.get_num_threads(),
                             channel_offset=span.start or 0, pool=(k, shape[2], scale) if pool is not None else None,
                             active=active, channels_first=channels_first, sums=sums,
                             multiplier=self.int8_multiplier if int8 else 1)
        pooled = None
        if pool is not None:
            pooled = _Activity(_population_order(torch.from_numpy(active), out_shape), int(counts[:, 2].sum()) == 0)
        counts = _LoopCounts(torch.from_numpy(counts[:, 0]).float(), float(counts[:, 1].sum()),
                             _population_order(torch.from_numpy(per_neuron), shape), pooled)
        return out.view((T, b) + out_shape), counts

    def compiled_loop_fits(self, x) -> bool:
        if isinstance(x, integer.IntegerSums):     # planned only where the loop takes them
            return True
        return (lif_cpu.AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32 and self.spiking
                and self.reset == "to_v_reset" and self.p.syn_decay is None and not x.requires_grad
                and x.dim() in (2, 4))

    def _memory_order_params(self, shape, channels_last) -> dict:
        """The LIF coefficients as (1,) when uniform, else (rows, channels) in memory order."""
        key = (tuple(shape), channels_last)
        if key not in self._flat_params:
            flat = {}
            for k in ("decay", "gain", "leak", "threshold", "v_reset"):
                a = getattr(self.p, k).expand(shape)
                if _is_uniform(a):
                    flat[k] = a.reshape(-1)[:1].numpy()
                elif channels_last:
                    flat[k] = a.permute(1, 2, 0).reshape(-1, shape[0]).contiguous().numpy()
                else:
                    flat[k] = a.reshape(1, -1).contiguous().numpy()
            self._flat_params[key] = flat
        return self._flat_params[key]

    def scan(self, current, state=None):
        """current: (T, B, *shape) -> output (T, B, *shape); state carried for step-by-step runs."""
        p = self.p
        if (state is None and self.spiking and self.reset == "to_v_reset" and p.syn_decay is None
                and not current.requires_grad):
            return self._fast_scan(current)
        v = state["v"] if state else torch.zeros_like(current[0])
        i_syn = state.get("i") if state else None
        if p.syn_decay is not None and i_syn is None:
            i_syn = torch.zeros_like(current[0])
        outs = []
        for t in range(current.shape[0]):
            drive = current[t]
            if p.syn_decay is not None:
                i_syn = p.syn_decay * i_syn + p.w_in * drive
                drive = i_syn
            u = p.decay * v + p.gain * drive + p.leak
            if self.spiking:
                s, v = self._fire_and_reset(u, v)
                outs.append(s)
            else:
                v = u
                outs.append(v)
        return torch.stack(outs), {"v": v, "i": i_syn}

    def _fire_and_reset(self, u, v):
        """Spikes and the new state from the update u and the previous state v, in the
        population's reset mode (ir/neurons.py gives the equations; the operations are
        snnTorch's own, in its order, so that float32 results are identical)."""
        thr = self.p.threshold
        if self.reset == "to_v_reset":
            s = (u - thr > 0).to(u.dtype)
            return s, torch.where(s > 0, self.p.v_reset.expand_as(u), u)
        if self.reset == "none":
            return (u - thr > 0).to(u.dtype), u
        r = (v - thr > 0).to(u.dtype)        # the reset carried over from the previous step
        if self.reset == "zero_delayed":
            v = u - r * u
            return (v - thr > 0).to(u.dtype), v
        m = u - r * thr
        s = (m - thr > 0).to(u.dtype)
        return s, (m if self.reset == "subtract_delayed" else m - (s - r) * thr)


@dataclass
class _Activity:
    """What a node sent on, summed over T and b: per position of its output, how many
    values were nonzero (for spikes, their count), and whether all were 0 or 1. The
    next projection's synaptic operations follow from it (see _count_projection)."""
    nonzero: torch.Tensor
    binary: bool


@dataclass
class _LoopCounts:
    """What the compiled LIF loop counted in its pass: spikes per sample (b,), nonzero
    input currents (all samples and timesteps), spikes per neuron summed over T and b,
    and, when it pooled its spikes itself, the pooled output's activity."""
    spikes_per_sample: torch.Tensor
    input_events: float
    spikes_per_neuron: torch.Tensor
    pooled: _Activity | None = None


def _population_order(per_position: torch.Tensor, shape) -> torch.Tensor:
    """(rows, C) in the compiled loop's memory order -> the population's shape."""
    if len(shape) == 3:    # (H*W, C) -> (C, H, W)
        per_position = per_position.t()
    return per_position.reshape(shape)


class _Threshold(_Op):
    kind = "Threshold"

    def __init__(self, name, node, device):
        super().__init__(name, node, device)
        self.th = _as_tensor(node.threshold, device)

    def apply(self, x):
        return (x - self.th > 0).to(x.dtype)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _as_matrix(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> an (N, M) view in memory order (NHWC for channels-last x); a copy only when neither."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) if _channels_last(x) else x.reshape(x.shape[0], -1)


def _all_binary(x: torch.Tensor) -> bool:
    """Every value is 0 or 1. Looks at the first 64 Ki values first: real-valued inputs
    (pooled spikes, images) show it there, without a pass over the whole tensor."""
    flat = _as_matrix(x).reshape(-1)
    for part in (flat[:1 << 16], flat):
        if not bool(((part == 0) | (part == 1)).all()):
            return False
    return True


def _sum_over_batch(x: torch.Tensor) -> torch.Tensor:
    """x.sum(0) as one matrix-vector product: on CPU a reduction over the outermost
    axis is several times slower than BLAS's gemv. Exact for spike counts (< 2^24)."""
    col = _as_matrix(x).t() @ torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    if _channels_last(x):
        return col.view(x.shape[2], x.shape[3], x.shape[1]).permute(2, 0, 1)
    return col.view(x.shape[1:])


def _sum_per_row(x: torch.Tensor) -> torch.Tensor:
    """x.reshape(N, -1).sum(1) without copying a channels-last x (gemv)."""
    m = _as_matrix(x)
    return m @ torch.ones(m.shape[1], dtype=x.dtype, device=x.device)


def _place_rows(parts: list) -> torch.Tensor:
    """Sum row-sliced projection outputs (:class:`_Rows` of one target) into one tensor.
    Disjoint rows that cover every channel (a concatenation's branches) are copied
    into an uninitialised tensor; anything else is added onto zeros."""
    parts = [_Rows(p.y.to_float(), p.op) if isinstance(p.y, integer.IntegerSums) else p for p in parts]
    y0, channels = parts[0].y, parts[0].channels
    fmt = torch.channels_last if _channels_last(y0) else torch.contiguous_format
    out = torch.empty((y0.shape[0], channels) + tuple(y0.shape[2:]), dtype=y0.dtype, device=y0.device,
                      memory_format=fmt)
    rows = sorted(r for part in parts for r in part.op.rows_host)
    tiling = rows == list(range(channels))
    if not tiling:
        out.zero_()
    for part in parts:
        y, span = part.y, part.op.row_slice
        if span is not None and tiling:
            out[:, span].copy_(y)
        elif span is not None:
            out[:, span].add_(y)
        elif tiling:
            out.index_copy_(1, part.op.rows, y)
        else:
            out.index_add_(1, part.op.rows, y)
    return out


class _Rows:
    """A projection's live output rows, kept apart until the fan-in sums them (see _gather)."""

    def __init__(self, y: torch.Tensor, op: "_Projection"):
        self.y, self.op, self.channels = y, op, op.w.shape[0]

    @property
    def shape(self):
        return (self.y.shape[0], self.channels) + tuple(self.y.shape[2:])

    def full(self) -> torch.Tensor:
        return _place_rows([self])


class TorchProgram:
    """A compiled NIR graph. ``run(inputs, timesteps)`` -> RunResult."""

    def __init__(self, graph: nir.NIRGraph, device="auto", dt: float | None = None, kernels: str = "auto"):
        if kernels not in KERNELS:
            raise NeurodeployError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
        self.device = resolve_device(device)
        if self.device.type == "cuda":  # TF32 would round weights to 10 bits and break exactness
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.conventions = conventions_of(graph)
        self.dt = float(dt if dt is not None else self.conventions.dt)
        self.nodes, self.edges = flatten_graph(graph)
        for s, d in self.edges:
            for x in (s, d):
                if x not in self.nodes:
                    raise NeurodeployError(f"edge {s} -> {d} names a node {x!r} that the graph does not have")
        self.inputs = [k for k, v in self.nodes.items() if isinstance(v, nir.Input) and "." not in k]
        self.outputs = [k for k, v in self.nodes.items() if isinstance(v, nir.Output) and "." not in k]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise NeurodeployError(f"the graph needs exactly one Input and one Output node at top level, "
                                   f"it has {len(self.inputs)} and {len(self.outputs)}")
        self.order, self.back_edges = toposort(self.nodes, self.edges)
        self.preds = {n: [s for s, d in self.edges if d == n] for n in self.nodes}
        self.readers = {n: [d for s, d in self.edges if s == n] for n in self.nodes}
        self.ops = {name: self._compile_node(name, node) for name, node in self.nodes.items()}
        # inputs that are spikes (0/1) by construction: one spiking population, or a Flatten
        # or 1x1 pooling of one. Two or more incoming edges sum their values (2 where two
        # spikes meet, as in a spike-element-wise residual): such an input is counted from
        # its values, as NeuroBench does (nonzero inputs, MACs unless every value is 0 or 1).
        self.spike_fed = {name: self._input_grid(name) == SPIKES for name in self.nodes}
        # population -> (pooling node, window, scale) that its compiled loop may run itself
        self.fused_pools = _fusable_pools(self.nodes, self.edges) if self.device.type == "cpu" else {}
        if self.device.type == "cpu":
            for name, op in self.ops.items():
                if not isinstance(op, _Projection):
                    continue
                values = self._input_grid(name)
                exact = values is not None and op.sums_exact(*values[:2])
                if self.spike_fed[name] or exact:
                    op.use_channels_last()
                if exact:   # (the live rows of a concatenation branch are exact when all rows are)
                    op.use_exact_kernels(*values, prefer=kernels)
        self.input_shape = tuple(int(s) for s in np.asarray(self.nodes[self.inputs[0]].input_type["input"]).ravel())
        # see _choose_kernels and _link_integers
        self._loop_output, self._choosing = {}, ("first" if self.device.type == "cpu" else None)

    def _input_grid(self, name, seen=()) -> tuple[int, float, bool] | None:
        """What this node's input values are known to be, by construction: (fraction
        bits f, largest value, binary) for spikes (0, 1, True), sums of n spike
        trains (0, n, False) and k x k pooled spikes, k*k a power of two (average:
        multiples of 1/k^2 in [0, 1]; sum: integers up to k^2); else None."""
        preds = self.preds[name]
        if not preds or name in seen:
            return None
        if len(preds) > 1:
            known = [self._input_grid_of(src, seen + (name,)) for src in preds]
            return (0, float(len(preds)), False) if all(k == SPIKES for k in known) else None
        return self._input_grid_of(preds[0], seen + (name,))

    def _input_grid_of(self, src, seen):
        node = self.nodes[src]
        if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)):
            return SPIKES
        if isinstance(node, nir.Flatten):
            return self._input_grid(src, seen)
        if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)) and self._input_grid(src, seen) == SPIKES:
            window = int(np.prod(pair(node.kernel_size)))
            if window & (window - 1):
                return None
            if isinstance(node, nir.AvgPool2d):
                return (window.bit_length() - 1, 1.0, window == 1)
            return (0, float(window), window == 1)
        return None

    def _choose_kernels(self, seconds_per_sample: float):
        """Called after each of the first batches. The first chose each projection's
        kernel on its own (``_Projection._tune``); but int8 projections and LIF loops
        side by side also skip conversions (:meth:`_link_integers`), which a kernel timed
        alone does not see. So two whole-network choices are then timed, a batch each:
        "integer" (int8 wherever offered, the others as tuned) and "tuned" (as chosen);
        the faster per sample stays. All choices give the same bits."""
        projections = {n: op for n, op in self.ops.items() if isinstance(op, _Projection) and op.kernels}
        if self._choosing == "first":
            tuned = {n: op.kernel for n, op in projections.items()}
            integer = {n: "int8" if "int8" in op.kernels else tuned[n] for n, op in projections.items()}
            self._candidates = {"integer": integer, "tuned": tuned} if integer != tuned else {"tuned": tuned}
            self._timed = {} if integer != tuned else {"tuned": 0.0}     # (one choice: nothing to time)
        else:
            self._timed[self._trying] = seconds_per_sample
        waiting = [c for c in self._candidates if c not in self._timed]
        self._trying = waiting[0] if waiting else min(self._timed, key=self._timed.get)
        self._choosing = "timing" if waiting else None
        for n, kernel in self._candidates[self._trying].items():
            projections[n].kernel = kernel
        self._link_integers()

    def _link_integers(self):
        """After the first batch (every projection has chosen its kernel, every compiled
        LIF loop has run): keep the values between int8 projections and LIF loops as
        integers. A population whose every reader is an int8 projection gets int8
        spikes written (times the readers' input scale: pooled spikes are multiples of
        1/k^2), not float32 ones that each reader converts; an int8 projection read only
        by a LIF loop hands it its int32 sums, which the loop scales as it reads them,
        not a float32 current written out and read back. Both are the same float32
        arithmetic in another place: spikes and counters stay bit-identical. Measured
        on pruned_squeezenet (batch 64, T = 8), the conversions took 37 of 154 ms."""
        for op in self.ops.values():
            if isinstance(op, _Projection):
                op.keeps_sums = False
            elif isinstance(op, _Population):
                op.int8_multiplier = None
        int8 = lambda q: (isinstance(self.ops[q], _Projection) and self.ops[q].kernel == "int8"
                          and len(self.preds[q]) == 1)
        for name, value in self._loop_output.items():
            op = self.ops[name]
            qs = self.readers[value]
            if not op.shares_params or not qs or not all(int8(q) for q in qs):
                continue
            scales = {self.ops[q].input_scale for q in qs}
            if len(scales) != 1:
                continue
            # the loop writes m * (spike or window count); a reader's integer input is value * scale
            _, k, pool_scale = self.fused_pools[name] if value != name else (None, 1, 1.0)
            m = pool_scale * scales.pop()
            if m == int(m) and 1 <= m * k * k <= 127:
                op.int8_multiplier = int(m)
        for name, op in self.ops.items():
            if not isinstance(op, _Projection) or op.kernel != "int8" or len(self.readers[name]) != 1:
                continue
            pop = self.readers[name][0]
            if pop in self._loop_output and self.ops[pop].shares_params and (
                    self.preds[pop] == [name] or op.row_slice is not None):
                op.keeps_sums = True

    @property
    def kernels_settled(self) -> bool:
        """The first batches' choice of kernels is over (:meth:`_choose_kernels`); until
        then batches may run other, equally exact kernels."""
        return self._choosing is None

    def kernel_choices(self) -> dict:
        """{projection: the kernel it runs ("dense", "int8", "events"; None until its first batch)}."""
        return {name: op.kernel for name, op in self.ops.items() if isinstance(op, _Projection)}

    def _compile_node(self, name, node):
        if isinstance(node, PROJECTIONS):
            return _Projection(name, node, self.device)
        if isinstance(node, POPULATIONS):
            return _Population(name, node, self.device, self.dt, self.conventions.reset_of(name),
                               self.conventions.integrator)
        if isinstance(node, nir.Flatten):
            return _Flatten(name, node, self.device)
        if isinstance(node, nir.Threshold):
            return _Threshold(name, node, self.device)
        if isinstance(node, (nir.Input, nir.Output)):
            return _Op(name, node, self.device)
        if isinstance(node, nir.Delay):
            op = _Op(name, node, self.device)
            op.kind = "Delay"
            op.steps = np.asarray(node.delay, float) / self.dt
            if not np.allclose(op.steps, np.round(op.steps)) or len(np.unique(op.steps)) != 1:
                raise NeurodeployError(f"node {name}: Delay must be one whole number of timesteps (dt={self.dt})")
            op.steps = int(round(float(np.unique(op.steps)[0])))
            return op
        raise NeurodeployError(f"node {name}: the torch backend cannot run NIR node type {type(node).__name__}")

    # ------------------------------------------------------------------ running
    def run(self, inputs, timesteps: int | None = None, batch_size: int = 64, progress=None,
            record_populations: bool = True, count: bool = True) -> RunResult:
        """inputs: (N, *input) static or (T, N, *input) sequences. count=False skips the
        counters (for pure speed); outputs are the same either way."""
        run_arguments(timesteps, batch_size)
        x = _as_array(inputs)
        # torch warns on read-only arrays (np.load's memory maps, broadcast views); the run
        # never writes its inputs, but a copy keeps the warning from users
        x = torch.as_tensor(x if x.flags.writeable else x.copy())
        T = int(timesteps or self.conventions.timesteps or 1)
        shape = self.input_shape
        if tuple(x.shape[1:]) == shape:
            static, n = True, x.shape[0]
        elif x.dim() == len(shape) + 2 and tuple(x.shape[2:]) == shape:
            static, n = False, x.shape[1]
            if x.shape[0] != T:
                if timesteps is not None:
                    raise NeurodeployError(f"the input sequence has {x.shape[0]} timesteps but --timesteps is {T}")
                T = x.shape[0]
        else:
            raise NeurodeployError(f"input shape {tuple(x.shape)} does not fit the graph's input {shape}: give "
                                   f"(N, {', '.join(map(str, shape))}) static inputs or (T, N, ...) sequences")
        samples_in(n)
        if not torch.isfinite(x).all():
            raise NeurodeployError("the input holds NaN or infinite values")
        counters = RunCounters(samples=int(n), timesteps=T, backend="torch")
        pop_counts, outputs = {}, []
        t0 = time.perf_counter()
        task = progress.add_task("torch", total=int(n)) if progress else None
        with torch.no_grad():
            for i in range(0, n, batch_size):
                xb = (x[i:i + batch_size] if static else x[:, i:i + batch_size]).to(self.device)
                b = xb.shape[0] if static else xb.shape[1]
                t_batch = time.perf_counter()
                out, pops = (self._run_layer_serial(xb, static, T, b, counters if count else None)
                             if not self.back_edges else self._run_stepwise(xb, static, T, b, counters))
                if self._choosing:
                    self._choose_kernels((time.perf_counter() - t_batch) / b)
                outputs.append(out.cpu())
                for k, v in pops.items():
                    pop_counts.setdefault(k, []).append(v.cpu())
                if progress:
                    progress.update(task, advance=b)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out = torch.cat(outputs, dim=1).numpy()
        spikes = {k: torch.cat(v).numpy() for k, v in pop_counts.items()} if record_populations else {}
        return RunResult(outputs=out, counters=counters, population_spike_counts=spikes, seconds=seconds)

    def _count_projection(self, op: _Projection, x, static, T, counters, activity: _Activity | None = None,
                          in_shape=None):
        """x: the projection's input, (b, ...) if static, else (T*b, ...). activity: what
        its input node already counted (then x may be None and ``in_shape`` is
        (T*b, *per-sample shape)); else it is counted here from x."""
        c = counters.projections.get(op.name)
        if c is None:
            c = counters.projections[op.name] = ProjectionCounts(kind=op.kind, binary_input=True,
                                                                 parameters=op.nonzero_parameters)
        in_shape = tuple(x.shape) if in_shape is None else tuple(in_shape)
        fan, fan_total = op.fanout(in_shape[1:])
        repeat = T if static else 1          # a static input is presented at every timestep
        spike_fed = self.spike_fed[op.name]
        # per input position, how many samples/steps had a nonzero value there (spikes: their sum)
        if activity is not None:
            active, binary = activity.nonzero, activity.binary
        else:
            active = _sum_over_batch(x if spike_fed else (x != 0).float())
            binary = spike_fed or not c.binary_input or _all_binary(x)
        c.binary_input = c.binary_input and binary
        c.effective_ops += int(round(float(torch.dot(active.reshape(-1).double(), fan)))) * repeat
        c.dense_ops += fan_total * in_shape[0] * repeat

    def _count_population(self, op: _Population, shape, T, b, counters, loop_counts=None, x=None,
                          static=False, out=None):
        """shape: the population's; loop_counts: what its compiled loop counted, else they
        are counted here from x, its summed input current ((b, ...) if static (every
        timestep), else (T*b, ...)), and out, its (T, b, ...) output."""
        c = counters.populations.get(op.name)
        if c is None:
            c = counters.populations[op.name] = PopulationCounts(kind=op.kind, neurons=int(np.prod(shape)))
        c.neuron_updates += int(c.neurons * T * b)
        if loop_counts is not None:
            c.input_events += int(loop_counts.input_events)
            c.spikes += int(round(float(loop_counts.spikes_per_sample.double().sum())))
            return loop_counts.spikes_per_sample
        c.input_events += int(torch.count_nonzero(x)) * (T if static else 1)
        per_sample = _sum_per_row(out.reshape(T * b, *out.shape[2:])).view(T, b).sum(0) if op.spiking \
            else torch.zeros(b)
        c.spikes += int(round(float(per_sample.double().sum())))
        return per_sample

    def _concatenation(self, name, values):
        """The (current, channel slice) branches of a population fed only by a
        concatenation (projections writing disjoint contiguous channel slices that
        cover it), when the compiled loop can take them one by one; else None."""
        ins = [values[src] for src in self.preds[name]]
        if not all(isinstance(v, _Rows) and not static and v.op.row_slice is not None for v, static in ins):
            return None
        spans = sorted((v.op.row_slice.start, v.op.row_slice.stop) for v, _ in ins)
        covered = [lo for lo, _ in spans] == [0] + [hi for _, hi in spans[:-1]] and spans[-1][1] == ins[0][0].channels
        if not covered or not self.ops[name].compiled_loop_fits(ins[0][0].y):
            return None
        return [(v.y, v.op.row_slice) for v, _ in ins]

    def _gather(self, name, values, T, b):
        """Sum the incoming edges (fan-in); broadcast static values when mixed with time-varying ones."""
        ins = [values[s] for s in self.preds[name]]
        if not ins:
            raise NeurodeployError(f"node {name} has no incoming edge")
        parts = [(v, s) for v, s in ins if isinstance(v, _Rows)]
        if parts and len({s for _, s in parts}) == 1:
            # concatenation branches: write each into its channel slice of one tensor
            placed = _place_rows([v for v, _ in parts])
            ins = [(placed, parts[0][1])] + [(v, s) for v, s in ins if not isinstance(v, _Rows)]
        ins = [(v.full(), s) if isinstance(v, _Rows) else (v, s) for v, s in ins]
        if len(ins) > 1:      # a sum of several: as float32 tensors
            ins = [(v.to_float(), s) if isinstance(v, integer.IntegerSums) else (v, s) for v, s in ins]
        if all(s for _, s in ins) or len(ins) == 1:
            total = ins[0][0]
            for v, _ in ins[1:]:
                total = total + v
            return total, ins[0][1] if len(ins) == 1 else True
        total = None
        for v, s in ins:
            v = v.unsqueeze(0).expand(T, *v.shape).reshape(T * b, *v.shape[1:]) if s else v
            total = v if total is None else total + v
        return total, False

    def _run_layer_serial(self, xb, static, T, b, counters):
        values = {}   # node -> (tensor, static?) ; static tensors are (b, ...), others (T*b, ...)
        pops = {}
        activity = {}   # node -> _Activity of its output, where the compiled loop counted it
        for name in self.order:
            op = self.ops[name]
            if name == self.inputs[0]:
                values[name] = (xb if static else xb.reshape(T * b, *xb.shape[2:]), static)
                continue
            if name in values:     # a pooling that its population's compiled loop ran
                continue
            if isinstance(op, _Population):
                pool_name, window, scale = self.fused_pools.get(name, (None, None, None))
                pool = (window, scale) if pool_name else None
                parts = self._concatenation(name, values)
                if parts:
                    shape = (sum(y.shape[1] for y, _ in parts),) + tuple(parts[0][0].shape[2:])
                    self._check_shape(name, shape)
                    out, loop_counts = op.scan_concatenation(parts, shape, T, b, pool)
                    x, s = None, False      # the compiled loop counted everything
                else:
                    x, s = self._gather(name, values, T, b)
                    shape = tuple(x.shape[1:])
                    self._check_shape(name, shape)
                    out, loop_counts = op.scan_layer(x, s, T, b, pool)
                if loop_counts is not None:
                    activity[name] = _Activity(loop_counts.spikes_per_neuron, True)
                    self._loop_output[name] = pool_name if loop_counts.pooled is not None else name
                if counters is not None:
                    pops[name] = self._count_population(op, shape, T, b, counters, loop_counts, x, s, out)
                y = out.reshape(T * b, *out.shape[2:])
                if loop_counts is not None and loop_counts.pooled is not None:
                    # the loop wrote the pooling's output; the population's spikes exist only as counts
                    if counters is not None:
                        self._count_projection(self.ops[pool_name], None, False, T, counters, activity[name],
                                               in_shape=(T * b,) + shape)
                    values[pool_name], activity[pool_name] = (y, False), loop_counts.pooled
                    values[name] = (None, False)
                else:
                    values[name] = (y, False)
                continue
            x, s = self._gather(name, values, T, b)
            self._check_shape(name, tuple(x.shape[1:]))
            if getattr(op, "kind", None) == "Delay":
                seq = x.unsqueeze(0).expand(T, *x.shape) if s else x.reshape(T, b, *x.shape[1:])
                shifted = torch.cat([torch.zeros_like(seq[:op.steps]), seq[:T - op.steps]]) if op.steps else seq
                values[name] = (shifted.reshape(T * b, *seq.shape[2:]), False)
            else:
                preds = self.preds[name]
                known = activity.get(preds[0]) if len(preds) == 1 else None
                if isinstance(op, _Flatten) and known is not None:
                    activity[name] = _Activity(known.nonzero.reshape(-1), known.binary)
                if isinstance(op, _Projection) and counters is not None:
                    self._count_projection(op, x, s, T, counters, known)
                try:
                    values[name] = (op.output(x) if isinstance(op, _Projection) else op.apply(x), s)
                except RuntimeError as e:
                    raise NeurodeployError(f"node {name} ({op.kind}) cannot take its input of shape "
                                           f"{tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from e
        out, s = values[self.outputs[0]]
        out = out.unsqueeze(0).expand(T, *out.shape) if s else out.reshape(T, b, *out.shape[1:])
        return out, pops

    def _run_stepwise(self, xb, static, T, b, counters):
        """Graphs with cycles: one timestep at a time; back edges read the previous step."""
        state, prev, pops, outs = {}, {}, {}, []
        for t in range(T):
            values = {}
            for name in self.order:
                op = self.ops[name]
                if name == self.inputs[0]:
                    values[name] = ((xb if static else xb[t]), False)
                    continue
                ins = []
                for src in self.preds[name]:
                    if (src, name) in self.back_edges:
                        ins.append(prev.get(src, torch.zeros_like(values.get(src, (xb,))[0])) if src in prev else None)
                    else:
                        ins.append(values[src][0])
                ins = [v for v in ins if v is not None]
                x = ins[0]
                for v in ins[1:]:
                    x = x + v
                if isinstance(op, _Population):
                    out, state[name] = op.scan(x.unsqueeze(0), state.get(name))
                    pops[name] = pops.get(name, 0) + self._count_population(op, tuple(out.shape[2:]), 1, b, counters,
                                                                            x=x, out=out)
                    values[name] = (out[0], False)
                elif getattr(op, "kind", None) == "Delay":
                    raise NeurodeployError(f"node {name}: Delay inside a recurrent graph is not supported")
                else:
                    if isinstance(op, _Projection):
                        self._count_projection(op, x, False, 1, counters)
                    values[name] = (op.apply(x), False)
            prev = {k: v[0] for k, v in values.items()}
            outs.append(values[self.outputs[0]][0])
        return torch.stack(outs), pops

    def _check_shape(self, name, got: tuple):
        """got: the per-sample shape that the node's incoming edges carry."""
        node = self.nodes[name]
        want = getattr(node, "input_type", None) or {}
        want = want.get("input") if isinstance(want, dict) else None
        if want is None or isinstance(node, (nir.Conv2d, nir.Conv1d)):
            return
        want = tuple(int(s) for s in np.asarray(want).ravel())
        if want and got != want and np.prod(want) == np.prod(got) and len(want) != len(got):
            return
        if want and got != want:
            raise NeurodeployError(f"node {name} ({type(node).__name__}) expects input of shape {want} "
                                   f"but its incoming edges carry {got}")


# the projection kernels (see _Projection.use_exact_kernels)
KERNELS = ("auto", "dense", "int8", "events")

# TorchProgram._input_grid of spikes: no fraction bits, largest value 1, binary
SPIKES = (0, 1.0, True)

# node types this backend runs
RUNS = POPULATIONS + PROJECTIONS + (nir.Input, nir.Output, nir.Flatten, nir.Threshold, nir.Delay, nir.NIRGraph)


def supports(graph: nir.NIRGraph) -> Support:
    nodes, _ = flatten_graph(graph)
    bad = sorted({type(n).__name__ for n in nodes.values() if not isinstance(n, RUNS)})
    return Support(not bad, f"unsupported node types: {', '.join(bad)}" if bad else "all node types run")


def compile(graph: nir.NIRGraph, *, source=None, device: str = "auto", dt: float | None = None,
            kernels: str = "auto", **_) -> TorchProgram:
    """Compile a NIR graph (ours or any tool's) for the torch backend. ``kernels``: "auto"
    (on CPU, the fastest of the exact kernels per projection), "dense", "int8" or
    "events" (that kernel wherever it gives the same bits, dense elsewhere)."""
    return TorchProgram(graph, device=device, dt=dt, kernels=kernels)
