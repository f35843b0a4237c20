"""Integer projections on the CPU: int8 x int8 -> int32, rescaled exactly.

Spikes are 0 or 1 and Loihi-aware weights are 8-bit integers times one
power-of-two step, w = k * 2^e with |k| <= 127. So a projection of spikes is

    y = b + 2^e * sum_i k_i s_i

and the sum is an integer: int8 inputs times int8 weights, accumulated in int32
(VNNI on this CPU: 64 multiply-adds per instruction against 16 for float32 FMA;
``torch._int_mm`` measured 2.6-5x the float32 matrix product here for the zoo's
shapes with 288-576 inputs per output). Pooled spikes are multiples of 2^-f (1/k^2
for a k x k average), so x * 2^f is a small integer too, and the scale becomes
2^(e - f). Converting the int32 sum to float32 and scaling by a power of two is
exact while the sum stays below 2^24, and adding b is then the exact float32 sum
that any other order gives too: the backend uses this kernel only where
:func:`neurodeploy.kernels.grid.exact_in_any_order` holds, so the outputs are
bit-identical to the float32 kernels'.

A k x k convolution becomes one matrix product over im2col rows
(N*OH*OW, KH*KW*C), built from the channels-last int8 input with one strided copy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ir.topology import conv_output_size
from .lif_cpu import AVAILABLE
from .sample_threads import over_samples, split_batch

if AVAILABLE:
    from numba import njit

    @njit(cache=True, nogil=True)
    def _rescale_rows(lo, hi, acc, scale, bias, out):
        """out[r] = float32(acc[r]) * scale + bias for rows [lo, hi): one pass, where
        torch's conversion, scaling and bias are three passes over the output."""
        for r in range(lo, hi):
            a, o = acc[r], out[r]
            for j in range(a.shape[0]):
                o[j] = np.float32(a[j]) * scale + bias[j]


def weight_matrix(k: np.ndarray) -> torch.Tensor:
    """Integer weights (O, C[, KH, KW]) -> the int8 (KH*KW*C, O) matrix the im2col rows multiply."""
    k = np.asarray(k)
    if k.ndim == 4:
        k = k.transpose(2, 3, 1, 0)        # (KH, KW, C, O): the order of an im2col row's entries
    else:
        k = k.T
    return torch.from_numpy(np.ascontiguousarray(k.reshape(-1, k.shape[-1])).astype(np.int8))


def im2col(x8: torch.Tensor, kernel, stride, padding, dilation) -> torch.Tensor:
    """(N, H, W, C) int8 -> (N*OH*OW, KH*KW*C): the input under each output's window."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
        return x8.reshape(-1, x8.shape[-1])
    if ph or pw:
        x8 = F.pad(x8, (0, 0, pw, pw, ph, ph))
    n, h, w, c = x8.shape
    oh, ow = conv_output_size((h, w), kernel, stride, (0, 0), dilation)     # padded already
    s = x8.stride()
    windows = x8.as_strided((n, oh, ow, kh, kw, c), (s[0], sh * s[1], sw * s[2], dh * s[1], dw * s[2], s[3]))
    return windows.reshape(n * oh * ow, kh * kw * c)


class IntegerSums:
    """A projection's output still as its exact integer sums: the value is
    ``float32(acc) * scale + bias``, computed where it is read. The LIF loop that a
    projection feeds reads these directly (:func:`neurodeploy.kernels.lif_cpu.lif_scan`),
    so the float32 currents are never written out and read back.

    acc: (N, OH, OW, O) int32 (channels-last memory) or (N, O); bias: (O,) float32."""

    def __init__(self, acc: torch.Tensor, scale: float, bias: np.ndarray):
        self.acc, self.scale, self.bias = acc, np.float32(scale), bias

    @property
    def shape(self) -> tuple:
        """The float tensor's shape: (N, O, OH, OW) or (N, O)."""
        s = tuple(self.acc.shape)
        return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s

    def to_float(self) -> torch.Tensor:
        """float32(acc) * scale + bias, (N, O, OH, OW) channels-last (or (N, O))."""
        acc = self.acc.reshape(-1, self.acc.shape[-1])
        y = torch.empty(acc.shape, dtype=torch.float32)
        if AVAILABLE:
            acc_np, y_np = acc.numpy(), y.numpy()
            over_samples(lambda i, lo, hi: _rescale_rows(lo, hi, acc_np, self.scale, self.bias, y_np),
                         split_batch(acc.shape[0], torch.get_num_threads()))
        else:
            y.copy_(acc).mul_(float(self.scale)).add_(torch.from_numpy(self.bias))
        return y.view(self.acc.shape).permute(0, 3, 1, 2) if self.acc.dim() == 4 else y


def accumulate(x: torch.Tensor, input_scale: float, weights8: torch.Tensor, output_scale: float,
               bias: np.ndarray, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1)) -> IntegerSums:
    """x: (N, C, H, W) channels-last or (N, C): float32 whose values times ``input_scale``
    are integers in [-128, 127], or those integers already as int8 (a LIF loop that
    feeds only integer projections writes them so); bias: (O,) float32. Returns the sums
    b + output_scale * (x * input_scale) @ k as :class:`IntegerSums`."""
    image = x.dim() == 4
    rows = x.permute(0, 2, 3, 1) if image else x
    if x.dtype != torch.int8:
        rows = (rows if input_scale == 1 else rows * input_scale).to(torch.int8)
    cols = im2col(rows.contiguous(), kernel, stride, padding, dilation) if image else rows.contiguous()
    acc = torch._int_mm(cols, weights8)
    if image:
        acc = acc.view(x.shape[0], *conv_output_size(x.shape[2:], kernel, stride, padding, dilation), -1)
    return IntegerSums(acc, output_scale, bias)
