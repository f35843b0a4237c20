"""The LIF recurrence over all T timesteps as one compiled CPU loop (numba).

Per neuron and timestep, the arithmetic of :func:`neurodeploy.dynamics.lif_scan`
in float32, in the same order (no fused multiply-add: numba does not contract
without ``fastmath``):

    v = (decay * v + gain * I[t]) + leak
    s[t] = v > threshold
    v = v_reset  where s[t]

In torch each of these lines is a pass over the whole population per timestep
(the membrane is 25 MB for SqueezeNet's first population at batch 64), so the
recurrence is bound by memory traffic. Here the membrane of one sample stays in
cache across the T steps, and the current and spikes stream through once: 19 ms
against 137 ms for torch's in-place ops on that population (8 x 64 x 96 x 32 x 32).

Arrays are (T or 1, B, M) float32 in memory order (M = the population flattened
as it lies in memory, so a channels-last population is (H, W, C)); a leading 1
is a static current, the same at every timestep. Parameters are (1,) when the
whole population shares them, else (M,) in the same order. Samples run in
parallel on torch's thread count: the compiled loop releases the GIL and a
small thread pool splits the batch (numba's own ``parallel=True`` would start an
OpenMP runtime beside torch's, and that slowed torch's convolutions by 45 %).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import numba
    from numba import njit
except ImportError:    # the torch ops in backends/torch.py do the same arithmetic, slower
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    @njit(cache=True, nogil=True)
    def _scan_uniform(current, decay, gain, leak, threshold, v_reset, spikes, counts, per_position):
        T, B, M = spikes.shape
        static = current.shape[0] == 1
        for b in range(B):
            v = np.zeros(M, np.float32)
            n_spikes, n_inputs = 0, 0
            for t in range(T):
                i_t = current[0, b] if static else current[t, b]
                s_t = spikes[t, b]
                for i in range(M):
                    x = (v[i] * decay + gain * i_t[i]) + leak
                    fired = x > threshold
                    s_t[i] = np.float32(fired)
                    v[i] = v_reset if fired else x
                    per_position[i] += np.float32(fired)
                    n_spikes += fired
                    n_inputs += i_t[i] != 0
            counts[b, 0], counts[b, 1] = n_spikes, n_inputs

    @njit(cache=True, nogil=True)
    def _scan_per_neuron(current, decay, gain, leak, threshold, v_reset, spikes, counts, per_position):
        T, B, M = spikes.shape
        static = current.shape[0] == 1
        for b in range(B):
            v = np.zeros(M, np.float32)
            n_spikes, n_inputs = 0, 0
            for t in range(T):
                i_t = current[0, b] if static else current[t, b]
                s_t = spikes[t, b]
                for i in range(M):
                    x = (v[i] * decay[i] + gain[i] * i_t[i]) + leak[i]
                    fired = x > threshold[i]
                    s_t[i] = np.float32(fired)
                    v[i] = v_reset[i] if fired else x
                    per_position[i] += np.float32(fired)
                    n_spikes += fired
                    n_inputs += i_t[i] != 0
            counts[b, 0], counts[b, 1] = n_spikes, n_inputs


_pool: ThreadPoolExecutor | None = None


def lif_scan(current: np.ndarray, params: dict, spikes: np.ndarray, threads: int):
    """Write the spikes of a LIF population into ``spikes`` (T, B, M) and count them.

    current: (T or 1, B, M) float32; params: decay, gain, leak, threshold, v_reset
    as float32 arrays of shape (1,) or (M,) in the memory order of ``current``.
    Returns (spikes per sample (B,), nonzero input currents per sample summed over
    the T steps (B,), spikes per neuron summed over T and B (M,)): the counters
    come out of the same pass over the data."""
    global _pool
    p = [np.ascontiguousarray(params[k], dtype=np.float32)
         for k in ("decay", "gain", "leak", "threshold", "v_reset")]
    if all(a.size == 1 for a in p):
        kernel, p = _scan_uniform, [np.float32(a[0]) for a in p]
    else:
        m = spikes.shape[2]
        kernel, p = _scan_per_neuron, [np.full(m, a[0], np.float32) if a.size == 1 else a for a in p]
    T, B, M = spikes.shape
    counts = np.zeros((B, 2), np.int64)
    step = -(-B // max(1, threads))     # ceil(B / threads) samples per thread
    chunks = [(lo, min(B, lo + step)) for lo in range(0, B, step)]
    per_position = np.zeros((len(chunks), M), np.float32)
    if len(chunks) == 1:
        kernel(current, *p, spikes, counts, per_position[0])
    else:
        if _pool is None or _pool._max_workers < len(chunks):
            _pool = ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="lif_cpu")
        jobs = [_pool.submit(kernel, current[:, lo:hi], *p, spikes[:, lo:hi], counts[lo:hi], per_position[k])
                for k, (lo, hi) in enumerate(chunks)]
        for job in jobs:
            job.result()
    return counts[:, 0], counts[:, 1], per_position.sum(0)
