"""The LIF update in torch: the spiking twins' training and evaluation run it.

The discretisation itself (forward Euler at ``dt``, strict threshold, reset in the
same step, the coefficients' float32 rounding) is defined once, in
:mod:`neurodeploy.ir.neurons`; this module turns those coefficients into tensors and
scans them over time, with an arctan surrogate gradient for training and, on CPU,
the compiled loops of :mod:`neurodeploy.kernels.lif_cpu`. The torch reference
backend uses the same coefficients, so a twin and its exported graph run the same
arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import neurons
from ..ir.neurons import DEFAULT_DT, beta_to_nir  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class LIFCoefficients:
    """Per-neuron float32 coefficients of the discrete LIF update."""

    decay: torch.Tensor
    gain: torch.Tensor
    leak: torch.Tensor
    threshold: torch.Tensor
    v_reset: torch.Tensor

    def to(self, device) -> "LIFCoefficients":
        return LIFCoefficients(*(t.to(device) for t in (self.decay, self.gain, self.leak,
                                                          self.threshold, self.v_reset)))


def lif_coefficients(tau, r, v_leak, v_threshold, v_reset, dt: float = DEFAULT_DT) -> LIFCoefficients:
    """NIR LIF parameters -> float32 coefficient tensors (:func:`neurodeploy.ir.neurons.lif`)."""
    return LIFCoefficients(*(torch.from_numpy(a) for a in neurons.lif(tau, r, v_leak, v_threshold, v_reset,
                                                                       dt).arrays()))


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward (v - threshold > 0); arctan surrogate backward.

    dS/dv ~= (slope / 2) / (1 + (pi/2 * slope * (v - threshold))^2)
    (Fang et al. 2021, as snnTorch's ``surrogate.atan``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = ctx.slope
        return grad * (s / 2) / (1 + (torch.pi / 2 * s * x) ** 2), None


def spike(x: torch.Tensor, slope: float = 2.0) -> torch.Tensor:
    return _SpikeFn.apply(x, slope)


def _channels_last(x: torch.Tensor) -> bool:
    """x (n, B, C, H, W) lies in memory as channels-last rows (what oneDNN's convolutions
    return for channels-last input), and that differs from NCHW."""
    return x.dim() == 5 and not x.is_contiguous() and x.permute(0, 1, 3, 4, 2).is_contiguous()


def _memory(x: torch.Tensor, rows: bool) -> torch.Tensor:
    """x (n, B, ...) as the lif_cpu loops read it: (n, B, M) in memory order (NCHW for a
    conv population) or, with ``rows``, x (n, B, C, H, W) as (n, B, H*W, C) channels-last
    rows (views when x lies so)."""
    n, B = x.shape[:2]
    if rows:
        return x.permute(0, 1, 3, 4, 2).contiguous().reshape(n, B, -1, x.shape[2])
    return x.contiguous().reshape(n, B, -1)


def _tensor(a: np.ndarray, shape: tuple, rows: bool) -> torch.Tensor:
    """The inverse of _memory: array ``a`` as a tensor of ``shape`` (n, B, ...)."""
    t = torch.from_numpy(a)
    if rows:
        n, B, C = shape[:3]
        return t.view(n, B, *shape[3:], C).permute(0, 1, 4, 2, 3)
    return t.view(shape)


class _CompiledLIFScan(torch.autograd.Function):
    """lif_scan on CPU as two compiled loops (:mod:`neurodeploy.kernels.lif_cpu`): the forward
    pass (the same float32 arithmetic, so the same spikes) and its backpropagation
    through time. In torch ops the scan is four passes over the membrane per
    timestep, and indexing current[t] costs a zero-filled (T, B, ...) tensor per
    step in the backward pass. ``pool`` = k: the k x k average pooling (stride k) of
    the spikes, fused (see :func:`lif_scan_pooled`)."""

    @staticmethod
    def forward(ctx, current, c: LIFCoefficients, slope: float, pool: int = 1, timesteps: int | None = None):
        from . import lif_cpu
        T = timesteps or current.shape[0]
        expanded = current.shape[0] > 1 and current.stride(0) == 0     # a static input expanded over T
        static = expanded or current.shape[0] < T                      # ... or given once, (1, B, ...)
        given = current[:1] if static else current
        rows = _channels_last(given)                                   # channels-last: the loops on rows
        flat = _memory(given, rows)
        decay, gain, leak, threshold = (float(t) for t in (c.decay, c.gain, c.leak, c.threshold))
        threads = torch.get_num_threads()
        fused = (tuple(current.shape[2:]), pool, 1.0 / pool ** 2) if pool > 1 else None
        out, membrane = lif_cpu.lif_scan_train(flat.numpy(), T, decay, gain, leak, threshold, threads, fused)
        ctx.save_for_backward(torch.from_numpy(membrane))
        # a current given once gets its gradient summed over T in the loop (1, B, ...)
        ctx.shape, ctx.summed, ctx.rows = current.shape, static and not expanded, rows
        ctx.args = (decay, gain, threshold, slope, threads, fused)
        shape = (T,) + current.shape[1:]
        shape = shape if pool == 1 else shape[:3] + tuple(n // pool for n in shape[3:])
        return _tensor(out, shape, rows)

    @staticmethod
    def backward(ctx, grad_out):
        from . import lif_cpu
        (membrane,) = ctx.saved_tensors
        decay, gain, threshold, slope, threads, fused = ctx.args
        g = _memory(grad_out, ctx.rows)
        grad = lif_cpu.lif_scan_backward(g.numpy(), membrane.numpy(), decay, gain, threshold, slope, threads, fused,
                                         summed=ctx.summed)
        # an expanded static current gets (T, B, ...): expand()'s backward sums it over T
        return _tensor(grad, ctx.shape, ctx.rows), None, None, None, None


class _CompiledNormalisedScan(torch.autograd.Function):
    """_CompiledLIFScan of a batch-normalised current (BatchNorm2d in training mode), given
    as parts side by side in channel order (a concatenation's branches, never built),
    each with its own BatchNorm: inputs (parts..., gammas..., betas...). The loop
    normalises each part per channel as it reads it; the backward pass gives each part
    its own gradient (see lif_scan_normalised)."""

    @staticmethod
    def forward(ctx, c: LIFCoefficients, slope: float, pool: int, timesteps: int | None, norms, *tensors):
        from . import lif_cpu
        n = len(norms)
        parts, gammas, betas = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
        T, B = (timesteps or parts[0].shape[0]), parts[0].shape[1]
        static = parts[0].shape[0] < T                               # given once, (1, B, ...)
        rows = _channels_last(parts[0])                              # channels-last: the loops on rows
        hw = tuple(parts[0].shape[3:])
        size = int(np.prod(hw))
        C = sum(p.shape[2] for p in parts)
        decay, gain, leak, threshold = (float(t) for t in (c.decay, c.gain, c.leak, c.threshold))
        threads = torch.get_num_threads()
        if rows:
            out = np.empty((T, B, size // pool ** 2, C), np.float32)
            membrane = np.empty((T, B, size, C), np.float32)
        else:
            out = np.empty((T, B, C * size // pool ** 2), np.float32)
            membrane = np.empty((T, B, C * size), np.float32)
        saved, m0 = [], 0   # the part's first neuron (NCHW) or channel (rows): z's last axis counts them
        for part, gamma, beta, bn in zip(parts, gammas, betas, norms):
            z = _memory(part, rows)
            mean, invstd, count = _batch_statistics(z, part.shape[2], bn)
            a = gamma.detach() * invstd
            fused = ((part.shape[2],) + hw, pool, 1.0 / pool ** 2)
            lif_cpu.lif_scan_train(z.numpy(), T, decay, gain, leak, threshold, threads, fused,
                                   (a.numpy(), (beta.detach() - mean * a).numpy()), into=(out, membrane, m0))
            saved.append((z, mean, invstd, a, m0, fused, part.shape, count, _across_ranks(bn)))
            m0 += z.shape[-1]
        ctx.save_for_backward(torch.from_numpy(membrane))
        ctx.parts, ctx.summed, ctx.rows = saved, static, rows
        ctx.args = (decay, gain, threshold, slope, threads)
        return _tensor(out, (T, B, C) + tuple(n // pool for n in hw), rows)

    @staticmethod
    def backward(ctx, grad_out):
        from . import lif_cpu
        (membrane,) = ctx.saved_tensors
        decay, gain, threshold, slope, threads = ctx.args
        g = _memory(grad_out, ctx.rows).numpy()
        grads, dgammas, dbetas = [], [], []
        for z, mean, invstd, a, m0, fused, shape, n, across_ranks in ctx.parts:
            # BatchNorm's backward, y = a (z - mean) + beta with a = gamma invstd: the loop gives
            # dL/dy and per channel S_g = sum dL/dy, S_x = sum dL/dy (z - mean); with N values
            # per channel, dL/dz = a (dL/dy - S_g / N - (z - mean) invstd^2 S_x / N),
            # dL/dgamma = invstd S_x and dL/dbeta = S_g. Across ranks, N, S_g and S_x in dL/dz
            # are the whole batch's; dL/dgamma and dL/dbeta stay this rank's (DDP sums them)
            grad, sums = lif_cpu.lif_scan_backward(g, membrane.numpy(), decay, gain, threshold, slope, threads,
                                                   fused, summed=ctx.summed, norm=(z.numpy(), mean.numpy()),
                                                   part=(m0, z.shape[-1]))
            s_g, s_x = torch.from_numpy(sums[:, 0]), torch.from_numpy(sums[:, 1])
            total_g, total_x = across_ranks(torch.stack([s_g, s_x])) if across_ranks else (s_g, s_x)
            a64, inv64, mean64 = a.double(), invstd.double(), mean.double()
            coef_x = -a64 * inv64 ** 2 * total_x / n
            coef_1 = -a64 * total_g / n - mean64 * coef_x
            lif_cpu.normalise_backward(grad, z.numpy(), a.numpy(), coef_x.float().numpy(),
                                       coef_1.float().numpy(), threads)
            grads.append(_tensor(grad, shape, ctx.rows))
            dgammas.append((inv64 * s_x).float())
            dbetas.append(s_g.float())
        return (None, None, None, None, None, *grads, *dgammas, *dbetas)


def _across_ranks(bn):
    """The BatchNorm's sum over the ranks of data-parallel training, where it normalises with
    the whole batch's statistics (``training.distributed.CrossRankBatchNorm``); else None."""
    return getattr(bn, "sum_across_ranks", None)


def _batch_statistics(z: torch.Tensor, channels: int, bn) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-channel batch mean, 1/sqrt(var + eps) and the count of values of z (rows, B,
    channels * H*W), or of channels-last rows (rows, B, H*W, channels): the statistics
    BatchNorm2d ``bn`` normalises with in training (computed in one pass,
    lif_cpu.channel_statistics), and its running statistics updated as it updates them.
    A BatchNorm of the whole batch across ranks (:func:`_across_ranks`) sums each rank's
    count, sum and sum of squares (float64), as ``_GlobalBatchNorm`` does."""
    from . import lif_cpu
    with torch.no_grad():
        mean, var = (torch.from_numpy(v) for v in lif_cpu.channel_statistics(z.numpy(), channels,
                                                                             torch.get_num_threads()))
        n = float(z.numel() // channels)
        across_ranks = _across_ranks(bn)
        if across_ranks is not None:
            sums = across_ranks(torch.stack([torch.full_like(mean, n), n * mean, n * (var + mean ** 2)]))
            n = float(sums[0, 0])
            mean = sums[1] / n
            var = (sums[2] / n - mean ** 2).clamp_min(0)
        mean, var = mean.float(), var.float()
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
        bn.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
        return mean, torch.rsqrt(var + bn.eps), n


def compiled_scan_fits(current: torch.Tensor, c: LIFCoefficients) -> bool:
    """The compiled CPU loops can run this population: numba present, a float32 CPU
    current, parameters shared by the population, reset to zero."""
    from . import lif_cpu
    return (lif_cpu.AVAILABLE and current.device.type == "cpu" and current.dtype == torch.float32
            and all(t.numel() == 1 for t in (c.decay, c.gain, c.leak, c.threshold, c.v_reset))
            and float(c.v_reset) == 0.0)


def lif_scan(current: torch.Tensor, c: LIFCoefficients, surrogate_slope: float = 2.0,
             return_membrane: bool = False, timesteps: int | None = None):
    """Run the LIF recurrence over the leading time axis.

    current: (T, B, *population_shape) input current, already summed over fan-in, or
    (1, B, ...) with ``timesteps`` = T for a static one (the same at every step).
    Returns spikes (T, B, *shape) and, if asked, the membrane after reset.
    Differentiable (arctan surrogate) when autograd is on. On CPU, a population with
    shared parameters and reset to zero runs as compiled loops (_CompiledLIFScan).
    """
    if not return_membrane and compiled_scan_fits(current, c):
        return _CompiledLIFScan.apply(current, c, surrogate_slope, 1, timesteps)
    if timesteps is not None and current.shape[0] != timesteps:
        current = current.expand(timesteps, *current.shape[1:])
    v = torch.zeros_like(current[0])
    spikes, membranes = [], []
    zero_reset = bool((c.v_reset == 0).all())
    for t in range(current.shape[0]):
        v = c.decay * v + c.gain * current[t] + c.leak
        s = spike(v - c.threshold, surrogate_slope)
        if zero_reset:
            # v * (1 - s): the same values and gradient as where(s, 0, v) (no gradient
            # through the reset), without where's zero-filled tensors in the backward pass
            v = v * (1.0 - s.detach())
        else:
            v = torch.where(s > 0, c.v_reset.expand_as(v), v)
        spikes.append(s)
        if return_membrane:
            membranes.append(v)
    out = torch.stack(spikes)
    return (out, torch.stack(membranes)) if return_membrane else out


def pooling_window(kernel, stride, padding) -> int | None:
    """k for a pooling over k x k windows with stride k and no padding, k*k a power of
    two: the pooling a LIF loop can run itself, its average of spikes (a count times
    1/k^2) being exact; else None. Arguments as NIR or torch give them (ints or pairs)."""
    k, s, p = (tuple(np.broadcast_to(np.asarray(v, int).ravel(), (2,))) for v in (kernel, stride, padding))
    if k[0] != k[1] or s != k or p != (0, 0) or k[0] < 2 or k[0] & (k[0] - 1):
        return None
    return int(k[0])


def _pools_in_loop(current: torch.Tensor, k: int) -> bool:
    """The compiled loop can pool this (T or 1, B, C, H, W) current's spikes over k x k."""
    return current.dim() == 5 and k > 1 and not k & (k - 1) and current.shape[3] % k == 0 and current.shape[4] % k == 0


def lif_scan_normalised(parts: list, norms: list, c: LIFCoefficients, surrogate_slope: float,
                        k: int = 1, timesteps: int | None = None) -> torch.Tensor:
    """lif_scan (then, k > 1, the k x k average pooling) of a batch-normalised current:
    ``parts`` (T or 1, B, C_i, H, W) side by side in channel order (a concatenation's
    branches, or one current), each normalised by its BatchNorm2d in ``norms`` in
    training mode (batch statistics; running statistics updated). On CPU the compiled
    loop normalises each part as it reads it, and the backward pass folds the
    normalisation into the BPTT loop and one more pass: neither the normalised current
    nor the concatenation is ever written out, and each part gets its own gradient.
    Same values as BatchNorm2d then lif_scan up to float32 rounding of the statistics."""
    T, B = (timesteps or parts[0].shape[0]), parts[0].shape[1]
    fits = _pools_in_loop(parts[0], k)
    tensors = (*parts, *(bn.weight for bn in norms), *(bn.bias for bn in norms))
    y = _CompiledNormalisedScan.apply(c, surrogate_slope, k if fits else 1, timesteps, tuple(norms), *tensors)
    if k > 1 and not fits:
        pooled = F.avg_pool2d(y.reshape(T * B, *y.shape[2:]), k)
        y = pooled.reshape(T, B, *pooled.shape[1:])
    return y


def lif_scan_pooled(current: torch.Tensor, c: LIFCoefficients, surrogate_slope: float, k: int,
                    timesteps: int | None = None) -> torch.Tensor:
    """F.avg_pool2d(lif_scan(current), k) for a (T or 1, B, C, H, W) current (see
    :func:`lif_scan`), as (T, B, C, H/k, W/k).

    On CPU, where lif_scan runs as compiled loops, k*k is a power of two and H, W are
    multiples of k, one loop makes each sample's spikes and pools them while they are
    in cache, and its backward pass spreads the pooled gradient back (the population's
    spikes are never written out; the same values and gradients as the two steps)."""
    T, B = (timesteps or current.shape[0]), current.shape[1]
    if _pools_in_loop(current, k) and compiled_scan_fits(current, c):
        return _CompiledLIFScan.apply(current, c, surrogate_slope, k, timesteps)
    spikes = lif_scan(current, c, surrogate_slope, timesteps=timesteps).reshape(T * B, *current.shape[2:])
    pooled = F.avg_pool2d(spikes, k)
    return pooled.reshape(T, B, *pooled.shape[1:])