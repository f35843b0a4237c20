"""When a projection's sums are exact in float32 whatever their order.

A weight grid 2^e (every weight and the bias a multiple of it) and inputs with few
fractional bits (spikes: 0 or 1; k x k average-pooled spikes: multiples of 1/k^2)
make every partial sum of y = b + sum_i w_i x_i a multiple of 2^(e - f). Float32
holds such a number exactly while it is below 2^(24 + e - f) in magnitude, so when

    S = max_input * sum_i |w_i| + |b|  <=  2^(24 + e - f)      for every output,

every partial sum, in any order, is exact: a dense kernel, an integer kernel and an
event-driven one then give the same bits (the zoo's weights are snapped to such a
grid, ``architectures.layers.snap_to_exact_grid``; Loihi-aware ones sit on Loihi's
8-bit grid). The other kernels of the torch backend are used only where this holds.
"""
from __future__ import annotations

import numpy as np

FLOAT32_MANTISSA_BITS = 24


def lowest_grid_exponent(values) -> int | None:
    """The largest e such that every value is a multiple of 2^e (None if all are zero)."""
    v = np.asarray(values, np.float64).ravel()
    v = np.abs(v[v != 0])
    if v.size == 0:
        return None
    mantissa, exponent = np.frexp(v)                        # v = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = np.round(np.ldexp(mantissa, 53)).astype(np.int64)  # the 53-bit integer mantissa, exactly
    lowest_bit = np.log2((m & -m).astype(np.float64)).astype(np.int64)
    return int((exponent - 53 + lowest_bit).min())


def exact_in_any_order(weight, bias, fraction_bits: int, max_input: float) -> bool:
    """Every partial sum of b + sum_i w_i x_i is an exact float32 for inputs that are
    multiples of 2^-fraction_bits in [0, max_input] (see the module docstring)."""
    w = np.asarray(weight, np.float64)
    rows = np.abs(w.reshape(w.shape[0], -1)).sum(1)
    b = np.zeros(w.shape[0]) if bias is None else np.abs(np.asarray(bias, np.float64)).reshape(-1)
    e = lowest_grid_exponent(np.concatenate([w.ravel(), b]))
    if e is None:
        return True
    if not (np.isfinite(rows).all() and np.isfinite(b).all()):
        return False
    return bool((max_input * rows + b <= 2.0 ** (FLOAT32_MANTISSA_BITS + e - fraction_bits)).all())


def integer_weights(weight, bits: int = 8):
    """(integers, exponent) with weight = integers * 2^exponent and every integer in the
    signed ``bits``-bit range, or None (Loihi-aware weights: 8 bits)."""
    w = np.asarray(weight, np.float64)
    e = lowest_grid_exponent(w)
    if e is None:
        return np.zeros(w.shape, np.int64), 0
    k = np.ldexp(w, -e)
    if np.abs(k).max() > 2 ** (bits - 1) - 1:
        return None
    return np.round(k).astype(np.int64), e
