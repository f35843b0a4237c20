"""kernels.integer and its link with the LIF loop: an int8 projection's sums read by the
loop, scaled as they are read, and int8 spikes written by the loop, give the bits of
the float32 path (the rescale written out, then read)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.kernels import integer, lif_cpu

PARAMS = dict(decay=np.float32([0.875]), gain=np.float32([1.0]), leak=np.float32([0.0]),
              threshold=np.float32([1.0]), v_reset=np.float32([0.0]))


def test_accumulate_is_the_exact_projection():
    rng = np.random.default_rng(0)
    x = (rng.random((3, 4, 6, 6)) < 0.4).astype(np.float32) * rng.integers(1, 5, (3, 4, 6, 6)) / 4  # pooled spikes
    k = rng.integers(-127, 128, (5, 4, 3, 3))
    bias = torch.from_numpy((rng.integers(-50, 50, 5) * 2.0 ** -9).astype(np.float32))
    x_cl = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    sums = integer.accumulate(x_cl, 4.0, integer.weight_matrix(k), 2.0 ** -8, bias.numpy(),
                              (3, 3), (2, 2), (1, 1), (1, 1))
    assert sums.shape == (3, 5, 3, 3) and sums.acc.dtype == torch.int32
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(k * 2.0 ** -6), bias.double(),
                                     stride=2, padding=1)
    assert torch.equal(sums.to_float(), ref.float())
    # int8 inputs (x * 4 already) give the same sums
    x8 = (x_cl * 4).to(torch.int8)
    again = integer.accumulate(x8, 4.0, integer.weight_matrix(k), 2.0 ** -8, bias.numpy(),
                               (3, 3), (2, 2), (1, 1), (1, 1))
    assert torch.equal(again.acc, sums.acc)


@pytest.mark.skipif(not lif_cpu.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("pool", [None, (2, 8, 0.25)])
def test_loop_reading_sums_and_writing_int8_equals_the_float_path(pool):
    rng = np.random.default_rng(1)
    T, B, R, K = 6, 5, 64, 24
    acc = rng.integers(-300, 300, (T * B, 8, 8, K)).astype(np.int32)
    bias = (rng.integers(-100, 100, K) * 2.0 ** -8).astype(np.float32)
    sums = integer.IntegerSums(torch.from_numpy(acc), 2.0 ** -7, bias)
    as_float = sums.to_float().permute(0, 2, 3, 1).contiguous().numpy().reshape(T, B, R, K)
    k = pool[0] if pool else 1
    runs = []
    for current, given, dtype, multiplier in ((as_float, None, np.float32, 1),
                                              (acc.reshape(T, B, R, K), (sums.scale, bias), np.int8, 4)):
        out = np.empty((T, B, R // k ** 2, K), dtype)
        counts, per = np.zeros((B, 3), np.int64), np.zeros((R, K), np.float32)
        active = np.zeros((R // 4, K), np.float32) if pool else None
        lif_cpu.lif_scan(current, PARAMS, out, counts, per, 2, pool=pool, active=active, sums=given,
                         multiplier=multiplier)
        runs.append((out, counts, per, active))
    (f_out, *f_counts), (i_out, *i_counts) = runs
    assert 0 < f_counts[0][:, 0].sum() < T * B * R * K / 2      # some spikes, not all
    assert np.array_equal(i_out, (f_out * 4 * (k * k if pool else 1)).astype(np.int8))   # int8 = multiplier x count
    for a, b in zip(f_counts, i_counts):
        assert (a is None and b is None) or np.array_equal(a, b)
