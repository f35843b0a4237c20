"""Loihi fixed point, as lava-nc's bit-accurate LIF/Dense/Conv models and lava-dl netx use it.

Pure numpy; used by the Lava worker and tested in the main environment.

The integer state of one population is its float state times a scale ``S``
(integer units per float unit, chosen per population)::

    v_int = S * v                                  24-bit signed state
    u_int = a_in << 6                              (du = 4095: no current memory)
    vth_int = vth_mant << 6,  vth_mant = round(theta * S / 64)   (17-bit, unsigned)
    v_int[t] = sign-magnitude((v_int[t-1] * (4096 - dv)) >> 12) + u_int + bias_int
    dv = round((1 - decay) * 4096)                 12-bit, 0..4095
    bias_int = bias_mant << bias_exp               13-bit signed mantissa, exp 0..7

A projection delivers ``a_in = (sum_j m_ij x_j) shifted by weight_exp`` per step, so its
float weights ``W`` (gain and pooling factors folded in) must satisfy
``m * 2**weight_exp ~= W * S / 64``. Mantissas are 8-bit with the sign taking the
lowest bit, i.e. even integers in [-256, 254] (Loihi's mixed-sign weights, netx's
``optimize_weight_bits``), and ``weight_exp`` is picked per layer so that the largest
weight uses the range. lava-nc's stock fixed-point Conv model ignores ``weight_exp``,
so convolutions always get exponent 0 and the population scale absorbs the range.

With the integer scale set by the weights, a threshold is a few hundred units of 64:
the membrane's resolution is then ~1e-4 of the threshold, and its truncating decay
and the input's rounding seed spike differences that grow with depth (MnasNet's
readout: 3 % of its spikes). ``input_shift`` gives a population e more bits of state:
every incoming projection delivers ``a_in << (6 + e)`` (its weight exponent raised by
e, the same mantissas) and the state scale, threshold, drive and biases are 2**e
larger. e stops where the threshold would exceed 1/16 of the 24-bit state range,
which leaves room for 16 thresholds' worth of input current in one step.

Every quantiser returns a report (max/rms error relative to the largest value,
how many values were clipped, how many nonzero values became zero).
"""
from __future__ import annotations

import math

import numpy as np

W_MIN, W_MAX = -256, 254          # even 8-bit mantissas
DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS     # 4096
DV_MAX = DECAY_UNITY - 1          # 4095
STATE_BITS = 24
STATE_MAX = (1 << (STATE_BITS - 1)) - 1
VTH_SHIFT = 6                     # threshold and synaptic input are MSB-aligned by 6 bits
VTH_MANT_MAX = (1 << 17) - 1      # 131071
BIAS_MANT_MIN, BIAS_MANT_MAX = -(1 << 12), (1 << 12) - 1   # 13-bit signed
BIAS_EXP_MAX = 7                  # 3-bit unsigned
SHIFT_MAX = 7                     # the largest weight exponent
VTH_MANT_ROOM = 1 << 13           # threshold (mant << 6) <= 2**19 = 1/16 of the state range


def _report(ideal: np.ndarray, got: np.ndarray, clipped: int) -> dict:
    ideal = np.asarray(ideal, np.float64)
    got = np.asarray(got, np.float64)
    peak = float(np.max(np.abs(ideal))) if ideal.size else 0.0
    err = np.abs(got - ideal)
    return {
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "max_rel_error": float(err.max() / peak) if peak and err.size else 0.0,
        "rms_rel_error": float(np.sqrt(np.mean(err ** 2)) / peak) if peak and err.size else 0.0,
        "clipped": int(clipped),
        "zeroed": int(np.count_nonzero((ideal != 0) & (got == 0))),
        "values": int(ideal.size),
    }


def round_even(x: np.ndarray) -> np.ndarray:
    """Nearest even integer (ties to even of x/2)."""
    return 2.0 * np.round(np.asarray(x, np.float64) / 2.0)


def weight_exponent(peak_units: float, allow_exponent: bool = True) -> int:
    """The weight exponent for a layer whose largest integer-unit weight is ``peak_units``:
    the most negative shift (most precision) at which it still fits 254, within Loihi's -8..7."""
    if not allow_exponent or peak_units <= 0:
        return 0
    exp = -int(math.floor(math.log2(W_MAX / peak_units)))
    return int(np.clip(exp, -8, 7))


def quantise_weights(w_units: np.ndarray, allow_exponent: bool = True):
    """Integer-unit weights (W * S / 64, float) -> (mantissa int32, weight_exp, report).

    The effective integer weight is ``mantissa * 2**weight_exp``; with
    ``allow_exponent`` the exponent is the most negative one (most precision) at
    which the largest weight still fits in [-256, 254]. Values beyond the range clip.
    """
    w = np.asarray(w_units, np.float64)
    exp = weight_exponent(float(np.max(np.abs(w))) if w.size else 0.0, allow_exponent)
    scaled = w / (2.0 ** exp)
    mant = round_even(scaled)
    clipped = int(np.count_nonzero((mant < W_MIN) | (mant > W_MAX)))
    mant = np.clip(mant, W_MIN, W_MAX)
    report = _report(w, mant * 2.0 ** exp, clipped)
    report["weight_exp"] = exp
    return mant.astype(np.int32), exp, report


def population_scale(max_abs_weights, thresholds) -> float:
    """Integer units per float unit of a population's membrane.

    The largest incoming weight maps to the top of the mantissa range (254), unless
    that would push a threshold mantissa beyond 17 bits; with a uniform threshold
    the scale is nudged down so that the threshold mantissa is an exact integer
    (when that mantissa is >= 64, i.e. the nudge costs the weights < 1.6 %).
    """
    peaks = [float(m) for m in max_abs_weights if m > 0]
    theta = np.asarray(thresholds, np.float64)
    theta_max = float(theta.max()) if theta.size else 1.0
    s = 64.0 * W_MAX / max(peaks) if peaks else 64.0 * 64
    if theta_max > 0:
        s = min(s, 64.0 * VTH_MANT_MAX / theta_max)
        if theta.size and np.all(theta == theta.flat[0]):
            mant = math.floor(theta_max * s / 64.0)
            if mant >= 64:   # costs the weights < 1.6 % of their range
                s = 64.0 * mant / theta_max
    return s


def dyadic_scale(max_abs_weights, thresholds):
    """The population scale whose weight step is a power of two, or None.

    With a uniform threshold theta, s = 64 * M / theta for the threshold mantissa
    M = 2**n, the largest with peak * M / theta <= 254: a float weight W is then the
    integer W * M / theta, on a grid of step 2 * theta / M. Up to one bit coarser than
    :func:`population_scale`, but a power-of-two step survives the exact-float snap of the
    deployed weights (``layers.snap_to_exact_grid``), so weights trained on this grid
    (Loihi-aware training, ``neurodeploy.training.loihi_aware``) arrive on it exactly.
    """
    peaks = [float(m) for m in max_abs_weights if m > 0]
    theta = np.asarray(thresholds, np.float64)
    if not peaks or not theta.size or not np.all(theta == theta.flat[0]) or theta.flat[0] <= 0:
        return None
    t = float(theta.flat[0])
    n = math.floor(math.log2(W_MAX * t / max(peaks)))
    return 64.0 * 2.0 ** min(max(n, 0), 16) / t


def threshold_mantissa(theta: np.ndarray, scale: float):
    """Float thresholds -> (17-bit mantissas, report). Loihi compares v > vth_mant << 6."""
    ideal = np.asarray(theta, np.float64) * scale / 64.0
    mant = np.round(ideal)
    clipped = int(np.count_nonzero((mant < 0) | (mant > VTH_MANT_MAX)))
    mant = np.clip(mant, 0, VTH_MANT_MAX)
    return mant.astype(np.int32), _report(ideal, mant, clipped)


def decay_to_dv(decay: np.ndarray):
    """Float membrane decay (v <- decay * v) -> (12-bit dv, report): v <- v * (4096 - dv) / 4096."""
    d = np.asarray(decay, np.float64)
    ideal = (1.0 - d) * DECAY_UNITY
    dv = np.round(ideal)
    clipped = int(np.count_nonzero((dv < 0) | (dv > DV_MAX)))
    dv = np.clip(dv, 0, DV_MAX)
    rep = _report(d, 1.0 - dv / DECAY_UNITY, clipped)
    return dv.astype(np.int32), rep


def quantise_bias(values: np.ndarray):
    """Float biases in integer state units -> (effective ints = mant << exp, report).

    Each value gets the smallest exponent (0..7) at which its mantissa fits 13 bits.
    """
    v = np.asarray(values, np.float64)
    mag = np.abs(v)
    with np.errstate(divide="ignore"):
        need = np.where(mag > BIAS_MANT_MAX, np.ceil(np.log2(np.maximum(mag, 1) / BIAS_MANT_MAX)), 0)
    exp = np.clip(need, 0, BIAS_EXP_MAX).astype(np.int64)
    mant = np.round(v / 2.0 ** exp)
    # rounding can land one above the mantissa range: bump the exponent there
    over = (mant > BIAS_MANT_MAX) | (mant < BIAS_MANT_MIN)
    exp = np.where(over & (exp < BIAS_EXP_MAX), exp + 1, exp)
    mant = np.round(v / 2.0 ** exp)
    clipped = int(np.count_nonzero((mant > BIAS_MANT_MAX) | (mant < BIAS_MANT_MIN)))
    mant = np.clip(mant, BIAS_MANT_MIN, BIAS_MANT_MAX)
    eff = (mant.astype(np.int64) << exp)
    return eff.astype(np.int32), _report(v, eff, clipped)


def decay_state(v: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Loihi's decay of a 24-bit state: sign(v) * ((|v| * (4096 - dv)) >> 12)."""
    prod = np.asarray(v, np.int64) * (DECAY_UNITY - np.asarray(dv, np.int64))
    return (np.sign(prod) * np.right_shift(np.abs(prod), DECAY_BITS)).astype(np.int64)


def input_shift(vth_mant_max: int) -> int:
    """The population's extra weight exponent e (0..7): the largest with its threshold
    mantissa times 2**e within VTH_MANT_ROOM (see the module docstring)."""
    e = 0
    while e < SHIFT_MAX and vth_mant_max << (e + 1) <= VTH_MANT_ROOM:
        e += 1
    return e


def wrap_state(x: np.ndarray) -> np.ndarray:
    """lava's 24-bit wrap of the current u (as AbstractPyLifModelFixed.subthr_dynamics)."""
    m = 1 << (STATE_BITS - 1)
    x = np.asarray(x, np.int64)
    y = np.where(x > m, x - 2 * m, x)
    return np.where(y <= -m, x + 2 * m, y)


def cuba_step(u, v, a_in, du, dv, drive_u, bias_v):
    """One CUBA step in Loihi arithmetic, with a host drive entering the current:

        u <- wrap24(decay(u, du + 1) + (a_in << 6) + drive_u)
        v <- clip24(decay(v, dv) + u + bias_v)

    i.e. lava's bit-accurate LIF update (du + 1 because of its ds_offset) plus drive_u.
    """
    u = wrap_state(decay_state(u, np.asarray(du) + 1) + (np.asarray(a_in, np.int64) << VTH_SHIFT)
                   + np.asarray(drive_u, np.int64))
    v = np.clip(decay_state(v, dv) + u + np.asarray(bias_v, np.int64), -STATE_MAX, STATE_MAX)
    return u.astype(np.int32), v.astype(np.int32)


def syn_decay_to_du(syn_decay: np.ndarray):
    """Float synaptic decay -> (12-bit du, report); lava decays u by (4096 - du - 1) / 4096."""
    d = np.asarray(syn_decay, np.float64)
    ideal = (1.0 - d) * DECAY_UNITY - 1.0
    du = np.round(ideal)
    clipped = int(np.count_nonzero((du < 0) | (du > DV_MAX)))
    du = np.clip(du, 0, DV_MAX)
    return du.astype(np.int32), _report(d, 1.0 - (du + 1) / DECAY_UNITY, clipped)


def quantise_state(values: np.ndarray):
    """Float values in state units -> (24-bit ints, report)."""
    v = np.asarray(values, np.float64)
    q = np.round(v)
    clipped = int(np.count_nonzero(np.abs(q) > STATE_MAX))
    q = np.clip(q, -STATE_MAX, STATE_MAX)
    return q.astype(np.int32), _report(v, q, clipped)


def shift_accumulated(a: np.ndarray, weight_exp: int) -> np.ndarray:
    """What lava's bit-accurate Dense does with its accumulated input: << exp or >> -exp."""
    a = np.asarray(a, np.int64)
    return np.left_shift(a, weight_exp) if weight_exp > 0 else np.right_shift(a, -weight_exp)


__all__ = ["quantise_weights", "weight_exponent", "input_shift", "dyadic_scale", "population_scale", "threshold_mantissa", "decay_to_dv",
           "quantise_bias", "decay_state", "shift_accumulated", "round_even", "cuba_step",
           "syn_decay_to_du", "quantise_state", "wrap_state",
           "W_MIN", "W_MAX", "VTH_SHIFT", "STATE_MAX", "VTH_MANT_MAX"]
