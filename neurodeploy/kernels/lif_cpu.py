"""The LIF recurrence over all T timesteps as one compiled CPU loop (numba), for
the torch backend's inference and, with its backward pass, for training.

Per neuron and timestep, the arithmetic of :func:`neurodeploy.kernels.dynamics.lif_scan`
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
small thread pool splits the batch (:mod:`~neurodeploy.kernels.sample_threads`;
numba's own ``parallel=True`` would start an OpenMP runtime beside torch's, and
that slowed torch's convolutions by 45 %).

A population whose only reader is a k x k average (or sum) pooling with stride k
can pool its own spikes in the same loop (``pool``): each sample's spikes are summed
into their windows while in cache and the population itself is never written out
(inference: :func:`lif_scan`; training: :func:`lif_scan_train` and its backward pass,
which spreads the pooled gradient back). Sums of spikes are exact, so the values are
those of the two separate steps.

Two process-wide settings make them faster (:mod:`neurodeploy.kernels.process`, applied
by the ``neurodeploy`` command, opt-in for library users): glibc keeping freed memory
(the T x B tensors around these loops are otherwise page-faulted in on every batch) and
torch's idle OpenMP workers sleeping rather than spinning beside these loops.
"""
from __future__ import annotations

import numpy as np

from .sample_threads import over_samples, split_batch


try:
    import numba
    from numba import njit
except ImportError:    # the torch ops in backends/torch.py do the same arithmetic, slower
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    # Every loop takes whole C-contiguous arrays plus the sample range [lo, hi) it owns
    # (and a channel offset c0). Its innermost loops run over 1-D views made inside it,
    # from index 0 (``for i in range(n): view[i]``), which LLVM vectorises; passed-in
    # slices, 2-D indexing with an offset, or ``range(first, last)`` over a whole row
    # stayed scalar (3-4x slower). So did a float division under numba's
    # ZeroDivisionError check and a float sum in a fixed order (see the kernels below).
    # inline="always": called as a function it cost the channels-last training loop 20 %
    @njit(cache=True, nogil=True, inline="always")
    def _pooled_row(r, width, k):
        """The row of a k x k pooling's output that row r (a position of a ``width``-wide
        image, row-major) falls into."""
        return (r // width // k) * (width // k) + (r % width) // k

    @njit(cache=True, nogil=True)
    def _scan_uniform(lo, hi, c0, width, pool, scale, current, channels_first, decay, gain, leak, threshold,
                      v_reset, out, counts, per_position, active, sums, sum_scale, sum_bias, multiplier):
        # sums: current holds a projection's integer sums, I = float32(acc) * sum_scale + sum_bias
        # (the rescale of kernels.integer, the same two float32 operations); multiplier > 0: out
        # is int8 and gets multiplier * (spike or window count), the integer its readers take
        T = out.shape[0]
        int_out = multiplier > 0
        R, K = (current.shape[3], current.shape[2]) if channels_first else (current.shape[2], current.shape[3])
        static = current.shape[0] == 1
        pooled = pool > 1
        rows = np.empty((R if channels_first else 0, K), current.dtype)
        v_r = np.empty(K, np.float32)
        for b in range(lo, hi):
            if channels_first:   # a static (K, R) current: into memory order once per sample, in cache
                for k in range(K):
                    src = current[0, b, k]
                    for r in range(R):
                        rows[r, k] = src[r]
            n_spikes, n_inputs, n_graded = 0, 0, 0
            if pooled:
                for t in range(T):
                    out[t, b, :, c0:c0 + K] = 0
            # One row of K neurons through all T steps: its membrane and spike counts stay
            # in L1 (the whole population's, T times over, came from L2: 40 % slower).
            # Each neuron's arithmetic is the same, in the same order.
            for r in range(R):
                r_out = _pooled_row(r, width, pool) if pooled else r
                p_r = per_position[r, c0:c0 + K]
                for k in range(K):
                    v_r[k] = 0
                for t in range(T):       # 1-D views the loop below vectorises
                    i_r = rows[r] if channels_first else current[0 if static else t, b, r]
                    s_r = out[t, b, r_out, c0:c0 + K]
                    for k in range(K):
                        i = np.float32(i_r[k]) * sum_scale + sum_bias[k] if sums else np.float32(i_r[k])
                        x = (v_r[k] * decay + gain * i) + leak
                        fired = x > threshold
                        if pooled and int_out:
                            s_r[k] += fired                 # the window's spike count
                        elif pooled:
                            s_r[k] += np.float32(fired)
                        elif int_out:
                            s_r[k] = fired * multiplier
                        else:
                            s_r[k] = np.float32(fired)
                        v_r[k] = v_reset if fired else x
                        p_r[k] += np.float32(fired)
                        n_spikes += fired
                        n_inputs += i != 0
            if pooled:                   # count -> pooled value; count the nonzero and non-binary ones
                for t in range(T):
                    for r_out in range(out.shape[2]):
                        o_r, a_r = out[t, b, r_out, c0:c0 + K], active[r_out, c0:c0 + K]
                        for k in range(K):
                            y = np.float32(o_r[k]) * scale
                            if int_out:
                                o_r[k] = o_r[k] * multiplier
                            else:
                                o_r[k] = y
                            a_r[k] += np.float32(y != 0)
                            n_graded += (y != 0) & (y != 1)
            counts[b, 0] += n_spikes
            counts[b, 1] += n_inputs
            counts[b, 2] += n_graded

    # The same loop with per-neuron parameters, (R, C) arrays. It is kept apart because
    # the common case (every zoo population shares its parameters) then reads five
    # scalars, not five more arrays per neuron: 23 ms against 46 ms for 8 x 64 x 96 x 32 x 32.
    @njit(cache=True, nogil=True)
    def _scan_per_neuron(lo, hi, c0, current, decay, gain, leak, threshold, v_reset, spikes, counts, per_position):
        T, R, K = spikes.shape[0], current.shape[2], current.shape[3]
        static = current.shape[0] == 1
        for b in range(lo, hi):
            v = np.zeros((R, K), np.float32)
            n_spikes, n_inputs = 0, 0
            for t in range(T):
                for r in range(R):
                    i_r, v_r = current[0 if static else t, b, r], v[r]
                    s_r, p_r = spikes[t, b, r, c0:c0 + K], per_position[r, c0:c0 + K]
                    d_r, g_r, l_r = decay[r, c0:c0 + K], gain[r, c0:c0 + K], leak[r, c0:c0 + K]
                    th_r, vr_r = threshold[r, c0:c0 + K], v_reset[r, c0:c0 + K]
                    for k in range(K):
                        x = (v_r[k] * d_r[k] + g_r[k] * i_r[k]) + l_r[k]
                        fired = x > th_r[k]
                        s_r[k] = np.float32(fired)
                        v_r[k] = vr_r[k] if fired else x
                        p_r[k] += np.float32(fired)
                        n_spikes += fired
                        n_inputs += i_r[k] != 0
            counts[b, 0] += n_spikes
            counts[b, 1] += n_inputs

    # Pooling and its adjoint in two passes, each a loop the compiler vectorises: k
    # horizontal neighbours (interleaved loads: a long loop over the whole sample), then
    # k rows of Wo (contiguous). One pass over each k x k window was scalar: 7x slower.
    @njit(cache=True, nogil=True)
    def _window_sums(src, dst, shape, k, scale, rows):
        """dst (C*Ho*Wo) = scale * (sum of each k x k window of src (C*H*W)), NCHW order;
        ``rows`` is scratch of C*H*Wo. Sums of spikes are exact in any order."""
        C, H, W = shape
        Wo = W // k
        if k == 2:
            for j in range(rows.shape[0]):
                rows[j] = src[2 * j] + src[2 * j + 1]
        else:
            for j in range(rows.shape[0]):
                total = src[k * j]
                for dx in range(1, k):
                    total += src[k * j + dx]
                rows[j] = total
        windows = rows.reshape(C * (H // k), k, Wo)
        out = dst.reshape(C * (H // k), Wo)
        for q in range(out.shape[0]):
            d, first = out[q], windows[q, 0]
            if k == 2:
                second = windows[q, 1]
                for x in range(Wo):
                    d[x] = (first[x] + second[x]) * scale
            else:
                for x in range(Wo):
                    d[x] = first[x]
                for dy in range(1, k):
                    row = windows[q, dy]
                    for x in range(Wo):
                        d[x] += row[x]
                for x in range(Wo):
                    d[x] *= scale

    @njit(cache=True, nogil=True)
    def _spread_windows(src, dst, shape, k, scale, rows):
        """The adjoint of _window_sums: dst (C*H*W) = scale * src at each position's
        window; ``rows`` is scratch of C*H*Wo."""
        C, H, W = shape
        Wo = W // k
        windows = rows.reshape(C * (H // k), k, Wo)
        pooled = src.reshape(C * (H // k), Wo)
        for q in range(pooled.shape[0]):
            s = pooled[q]
            for dy in range(k):
                row = windows[q, dy]
                for x in range(Wo):
                    row[x] = s[x] * scale
        if k == 2:
            for j in range(rows.shape[0]):
                dst[2 * j] = rows[j]
                dst[2 * j + 1] = rows[j]
        else:
            for j in range(rows.shape[0]):
                for dx in range(k):
                    dst[k * j + dx] = rows[j]

    @njit(cache=True, nogil=True)
    def _train_forward(lo, hi, current, decay, gain, leak, threshold, out, membrane, shape, k, scale,
                       norm_a, norm_b, m0):
        """Zero reset; keeps the membrane before reset for the surrogate gradient. With
        k > 1, ``out`` receives scale * (each k x k window's spike count) instead of the
        spikes. The current is norm_a[c] * I + norm_b[c] per channel block (the batch
        normalisation; (1,) arrays 1 and 0 for none: I * 1 + 0 is I). The current may be
        one part of the population: its neurons start at m0 in membrane's rows, its
        outputs at m0 / k^2 in out's."""
        T, M = membrane.shape[0], current.shape[2]
        m_out, o0 = M // (k * k), m0 // (k * k)
        blocks = norm_a.shape[0]
        block = M // blocks
        static = current.shape[0] == 1
        pooled = k > 1
        spikes = np.empty(M if pooled else 0, np.float32)
        rows = np.empty(M // k if pooled else 0, np.float32)     # _window_sums' scratch
        v = np.empty(M, np.float32)
        for b in range(lo, hi):
            v[:] = 0
            for t in range(T):
                for c in range(blocks):
                    first = c * block
                    i_c = current[0 if static else t, b, first:first + block]
                    m_c = membrane[t, b, m0 + first:m0 + first + block]
                    s_c = spikes[first:first + block] if pooled else out[t, b, o0 + first:o0 + first + block]
                    v_c = v[first:first + block]
                    a_c, b_c = norm_a[c], norm_b[c]
                    for i in range(block):
                        x = (v_c[i] * decay + gain * (i_c[i] * a_c + b_c)) + leak
                        m_c[i] = x
                        fired = x > threshold
                        s_c[i] = np.float32(fired)
                        v_c[i] = np.float32(0.0) if fired else x
                if pooled:
                    _window_sums(spikes, out[t, b, o0:o0 + m_out], shape, k, scale, rows)

    # error_model="numpy": IEEE division, no ZeroDivisionError check (1 + z^2 >= 1); the
    # check's branch kept the loop scalar (4x slower).
    @njit(cache=True, nogil=True, error_model="numpy")
    def _train_backward(lo, hi, grad_out, membrane, decay, gain, threshold, slope, grad_current, shape, k, scale,
                        current, norm_mean, sums, m0):
        """Backpropagation through time of _train_forward (see lif_scan_backward), for the
        part of the population whose neurons start at m0 (outputs at m0 / k^2). With a
        batch normalisation (norm_mean has C entries), also adds to ``sums`` (C, 2) each
        channel's sum of dL/dy and of dL/dy * (I - mean) (float32 within a sample, see _channel_sums)."""
        T, M = membrane.shape[0], grad_current.shape[2]
        m_out, o0 = M // (k * k), m0 // (k * k)
        half_pi_slope = np.float32(np.pi / 2 * slope)
        half_slope = np.float32(slope / 2)
        pooled = k > 1
        summed = grad_current.shape[0] == 1 and T > 1     # a static current: sum over t here
        spread = np.empty(M if pooled else 0, np.float32)
        rows = np.empty(M // k if pooled else 0, np.float32)     # _spread_windows' scratch
        dv_later = np.empty(M, np.float32)       # dL/dv[t+1]
        for b in range(lo, hi):
            dv_later[:] = 0
            if summed:
                grad_current[0, b, :] = 0
            for t in range(T - 1, -1, -1):
                if pooled:                       # dL/ds[t] of every neuron from its window's
                    _spread_windows(grad_out[t, b, o0:o0 + m_out], spread, shape, k, scale, rows)
                g_t = spread if pooled else grad_out[t, b, o0:o0 + m_out]
                m_t, out = membrane[t, b, m0:m0 + M], grad_current[0 if summed else t, b]
                for i in range(M):
                    x = m_t[i] - threshold
                    z = half_pi_slope * x
                    kept = np.float32(not x > 0)        # 1 - s[t]: no reset, the membrane carries on
                    dv = g_t[i] * (half_slope / (np.float32(1.0) + z * z)) + kept * (decay * dv_later[i])
                    dv_later[i] = dv
                    if summed:
                        out[i] += gain * dv
                    else:
                        out[i] = gain * dv
            if norm_mean.shape[0] > 0:
                _channel_sums(grad_current, current, b, norm_mean, sums)

    # The two per-channel reductions below run with fastmath={"reassoc"} (and nothing else
    # of fastmath): it lets LLVM split each float32 sum into vector lanes in an order of its
    # choosing, fixed for a given CPU. Written with explicit 16-float32 lanes they stayed
    # scalar (6x slower). Each sample's sums are float32, the sums across samples float64.
    @njit(cache=True, nogil=True, fastmath={"reassoc"})
    def _channel_sums(grad, current, b, mean, sums):
        """sums[c] += (sum of grad, sum of grad * (current - mean[c])) over sample b's block
        c, every row."""
        C, M = mean.shape[0], grad.shape[2]
        block = M // C
        static = current.shape[0] == 1
        for c in range(C):
            first, m_c = c * block, mean[c]
            sum_g, sum_x = np.float32(0.0), np.float32(0.0)
            for row in range(grad.shape[0]):
                g_c = grad[row, b, first:first + block]
                x_c = current[0 if static else row, b, first:first + block]
                for i in range(block):
                    sum_g += g_c[i]
                    sum_x += g_c[i] * (x_c[i] - m_c)
            sums[c, 0] += sum_g
            sums[c, 1] += sum_x

    # The same reduction as _channel_sums, over other terms: written once as a kernel on
    # generic terms it needs a materialised (current - shift) or gives up the shift that
    # keeps a large mean from cancelling the variance.
    @njit(cache=True, nogil=True, fastmath={"reassoc"})
    def _channel_moments(lo, hi, current, shift, sums):
        """Per channel block c over samples [lo, hi), every row: sums[c] += (sum of d, sum
        of d^2) with d = current - shift[c]."""
        C, M = shift.shape[0], current.shape[2]
        block = M // C
        for b in range(lo, hi):
            for c in range(C):
                first, k_c = c * block, shift[c]
                sum_1, sum_2 = np.float32(0.0), np.float32(0.0)
                for row in range(current.shape[0]):
                    x_c = current[row, b, first:first + block]
                    for i in range(block):
                        d = x_c[i] - k_c
                        sum_1 += d
                        sum_2 += d * d
                sums[c, 0] += sum_1
                sums[c, 1] += sum_2

    @njit(cache=True, nogil=True)
    def _normalise_backward(lo, hi, grad, current, coef_g, coef_x, coef_1):
        """In place: grad = grad * coef_g[c] + current * coef_x[c] + coef_1[c] per channel block."""
        C, M = coef_g.shape[0], grad.shape[2]
        block = M // C
        for row in range(grad.shape[0]):
            for b in range(lo, hi):
                for c in range(C):
                    first = c * block
                    g_c = grad[row, b, first:first + block]
                    x_c = current[row if current.shape[0] > 1 else 0, b, first:first + block]
                    p, q, r = coef_g[c], coef_x[c], coef_1[c]
                    for i in range(block):
                        g_c[i] = g_c[i] * p + x_c[i] * q + r


    # The training loops again, for channels-last populations (what oneDNN's convolutions
    # return for channels-last input, 20-40 % faster than NCHW): per sample, R = H*W rows
    # of C channels; a part of the population (one branch of a concatenation, K channels)
    # is the columns [c0, c0 + K) of each row. The arithmetic per neuron is the NCHW
    # loops', so the spikes and the gradients are the same; the per-channel sums run
    # down the columns in float64.
    @njit(cache=True, nogil=True)
    def _train_forward_rows(lo, hi, current, decay, gain, leak, threshold, out, membrane, width, k, scale,
                            norm_a, norm_b, c0):
        """_train_forward on rows: current (T or 1, B, R, K), membrane (T, B, R, C), out
        (T, B, R / k^2, C) (k > 1: scale * each k x k window's spike count, the rows being
        positions of a ``width``-wide image), norm_a, norm_b (K,)."""
        T, R, K = membrane.shape[0], current.shape[2], current.shape[3]
        static = current.shape[0] == 1
        pooled = k > 1
        v = np.empty((R, K), np.float32)
        for b in range(lo, hi):
            v[:] = 0
            for t in range(T):
                if pooled:
                    out[t, b, :, c0:c0 + K] = 0
                for r in range(R):
                    i_r, v_r = current[0 if static else t, b, r], v[r]
                    m_r = membrane[t, b, r, c0:c0 + K]
                    s_r = out[t, b, _pooled_row(r, width, k) if pooled else r, c0:c0 + K]
                    for j in range(K):
                        x = (v_r[j] * decay + gain * (i_r[j] * norm_a[j] + norm_b[j])) + leak
                        m_r[j] = x
                        fired = x > threshold
                        if pooled:
                            s_r[j] += np.float32(fired)
                        else:
                            s_r[j] = np.float32(fired)
                        v_r[j] = np.float32(0.0) if fired else x
                if pooled:
                    for r_out in range(out.shape[2]):
                        o_r = out[t, b, r_out, c0:c0 + K]
                        for j in range(K):
                            o_r[j] *= scale

    @njit(cache=True, nogil=True, error_model="numpy")
    def _train_backward_rows(lo, hi, grad_out, membrane, decay, gain, threshold, slope, grad_current, width, k,
                             scale, current, norm_mean, sums, c0):
        """_train_backward on rows (see _train_forward_rows): grad_current (T or 1, B, R, K);
        with norm_mean (K,), sums (2, K) += per channel sum of dL/dy and dL/dy * (I - mean)."""
        T, R, K = membrane.shape[0], grad_current.shape[2], grad_current.shape[3]
        half_pi_slope = np.float32(np.pi / 2 * slope)
        half_slope = np.float32(slope / 2)
        pooled = k > 1
        summed = grad_current.shape[0] == 1 and T > 1
        normalised = norm_mean.shape[0] > 0
        static = current.shape[0] == 1
        sum_g, sum_x = sums[0], sums[1]
        dv_later = np.empty((R, K), np.float32)
        for b in range(lo, hi):
            dv_later[:] = 0
            if summed:
                grad_current[0, b] = 0
            for t in range(T - 1, -1, -1):
                for r in range(R):
                    r_out = _pooled_row(r, width, k) if pooled else r
                    g_r, m_r = grad_out[t, b, r_out, c0:c0 + K], membrane[t, b, r, c0:c0 + K]
                    o_r, d_r = grad_current[0 if summed else t, b, r], dv_later[r]
                    for j in range(K):
                        x = m_r[j] - threshold
                        z = half_pi_slope * x
                        kept = np.float32(not x > 0)
                        g = g_r[j] * scale if pooled else g_r[j]
                        dv = g * (half_slope / (np.float32(1.0) + z * z)) + kept * (decay * d_r[j])
                        d_r[j] = dv
                        if summed:
                            o_r[j] += gain * dv
                        else:
                            o_r[j] = gain * dv
            if normalised:
                for row in range(grad_current.shape[0]):
                    for r in range(R):
                        g_r = grad_current[row, b, r]
                        x_r = current[0 if static else row, b, r]
                        for j in range(K):
                            sum_g[j] += g_r[j]
                            sum_x[j] += g_r[j] * (x_r[j] - norm_mean[j])

    @njit(cache=True, nogil=True)
    def _channel_moments_rows(lo, hi, current, shift, sums):
        """_channel_moments on rows (rows, B, R, K): sums (2, K) += per channel sum of d and
        d^2, d = current - shift, in float64."""
        sum_1, sum_2 = sums[0], sums[1]
        for b in range(lo, hi):
            for row in range(current.shape[0]):
                for r in range(current.shape[2]):
                    x_r = current[row, b, r]
                    for j in range(current.shape[3]):
                        d = x_r[j] - shift[j]
                        sum_1[j] += d
                        sum_2[j] += d * d

    @njit(cache=True, nogil=True)
    def _normalise_backward_rows(lo, hi, grad, current, coef_g, coef_x, coef_1):
        """_normalise_backward on rows: grad (rows, B, R, K), per channel coefficients (K,)."""
        static = current.shape[0] == 1
        for row in range(grad.shape[0]):
            for b in range(lo, hi):
                for r in range(grad.shape[2]):
                    g_r, x_r = grad[row, b, r], current[0 if static else row, b, r]
                    for j in range(grad.shape[3]):
                        g_r[j] = g_r[j] * coef_g[j] + x_r[j] * coef_x[j] + coef_1[j]


def lif_scan(current: np.ndarray, params: dict, out: np.ndarray, counts: np.ndarray,
             per_position: np.ndarray, threads: int, channel_offset: int = 0,
             pool: tuple[int, int, float] | None = None, active: np.ndarray | None = None,
             channels_first: bool = False, sums: tuple[float, np.ndarray] | None = None,
             multiplier: int = 1) -> None:
    """Write the spikes of a LIF population into ``out`` and count them.

    The neurons are laid out as (R, C) per sample, in memory order: (1, M) for a
    vector or (H*W, C) for a channels-last population. ``current`` (T or 1, B, R, K)
    drives the channels [channel_offset, channel_offset + K): all of them, or the
    slice that one branch of a concatenation writes (its spikes go straight into
    their place). out: (T, B, R, C); params: decay, gain, leak, threshold,
    v_reset as float32 (1,) when the population shares them, else (R, C). The
    counters are added to in the same pass: ``counts`` (B, 3) spikes, nonzero
    input currents and (pooled) graded outputs per sample, over the T steps;
    ``per_position`` (R, C) spikes per neuron over T and B. All arrays C-contiguous.

    ``pool`` = (k, W, scale) fuses the k x k pooling (stride k, no padding) that is
    the population's only consumer: ``out`` is then (T, B, R/k^2, C) and receives
    scale * (spikes in each window), the population of width W never being written
    out; ``active`` (R/k^2, C) counts the nonzero pooled values over T and B. Only
    for populations sharing their parameters. ``channels_first``: a static current
    given as (1, B, K, R), the (C, H*W) order of the convolution that made it; each
    sample is put into memory order in cache, not in a pass over the whole tensor.

    ``sums`` = (scale, bias): ``current`` is int32, an integer projection's sums
    (:class:`neurodeploy.kernels.integer.IntegerSums`), and each neuron's current is
    float32(sum) * scale + bias[channel], bias (K,) float32: the float32 values the
    projection would have written, made in cache. An int8 ``out`` receives
    ``multiplier`` * each spike (or window's spike count): the integer input of the
    int8 projections that read it. Both only for populations sharing their parameters."""
    p = [np.asarray(params[k], dtype=np.float32) for k in ("decay", "gain", "leak", "threshold", "v_reset")]
    chunks = split_batch(out.shape[1], threads)
    per_chunk = np.zeros((len(chunks),) + per_position.shape, np.float32)
    if channels_first and not all(a.size == 1 for a in p):
        current, channels_first = np.ascontiguousarray(current.transpose(0, 1, 3, 2)), False
    if all(a.size == 1 for a in p):
        k, width, scale = pool if pool is not None else (1, 1, 1.0)
        active_chunk = np.zeros((len(chunks),) + (active.shape if pool is not None else (1, 1)), np.float32)
        p = [np.float32(a.reshape(-1)[0]) for a in p]
        sum_scale, sum_bias = sums if sums is not None else (1.0, _NO_BIAS)
        over_samples(lambda i, lo, hi: _scan_uniform(lo, hi, channel_offset, width, k, np.float32(scale),
                                                     current, channels_first, *p, out, counts, per_chunk[i],
                                                     active_chunk[i], sums is not None, np.float32(sum_scale),
                                                     sum_bias, np.int64(multiplier if out.dtype == np.int8 else 0)),
                     chunks)
        if pool is not None:
            active += active_chunk.sum(0)
    else:
        if pool is not None or sums is not None or out.dtype != np.float32:
            raise ValueError("a fused pooling, integer sums and int8 spikes need parameters shared by the population")
        p = [np.ascontiguousarray(np.broadcast_to(a if a.size > 1 else a.reshape(1, 1), out.shape[2:])) for a in p]
        over_samples(lambda i, lo, hi: _scan_per_neuron(lo, hi, channel_offset, current, *p, out, counts,
                                                        per_chunk[i]), chunks)
    per_position += per_chunk.sum(0)


_NO_NORM = (np.ones(1, np.float32), np.zeros(1, np.float32))
_NO_BIAS = np.zeros(1, np.float32)


def lif_scan_train(current: np.ndarray, T: int, decay: float, gain: float, leak: float, threshold: float,
                   threads: int, pool: tuple | None = None, norm: tuple | None = None,
                   into: tuple | None = None):
    """Forward pass for training (zero reset, parameters shared by the population).

    current: (T or 1, B, M) float32 (1: static). Returns the spikes (T, B, M) and the
    membrane before reset (T, B, M), which :func:`lif_scan_backward` needs.
    ``pool`` = ((C, H, W), k, scale) fuses the k x k pooling (stride k) that reads the
    population (M = C*H*W in NCHW order): the first result is then (T, B, C*H/k*W/k),
    scale * the spikes in each window, and the spikes are never written out.
    ``norm`` = (a, b), (C,) float32: the population's current is a[c] * current + b[c]
    for the C channel blocks of M (a batch normalisation, fused; see
    :func:`normalise_backward`). ``into`` = (out, membrane, m0): ``current`` is the
    part of a population whose neurons start at m0 (channels side by side); it is
    written into these arrays (pooled outputs at m0 / k^2) and they are returned.

    A channels-last population comes as rows: current (T or 1, B, R, K), R = H*W
    positions of K channels; the results are (T, B, R / k^2, K) and (T, B, R, K), or
    with ``into`` = (out, membrane, c0) the part is the channels [c0, c0 + K) of arrays
    of C channels."""
    d, g, l, th = (np.float32(v) for v in (decay, gain, leak, threshold))
    rows = current.ndim == 4
    B = current.shape[1]
    M = current.shape[3] if rows else current.shape[2]              # K channels, or M neurons
    shape, k, scale = pool if pool is not None else ((M, 1, 1), 1, 1.0)
    shape = tuple(int(n) for n in shape)
    if into is not None:
        out, membrane, m0 = into
    elif rows:
        R = current.shape[2]
        out, membrane, m0 = np.empty((T, B, R // (k * k), M), np.float32), np.empty((T, B, R, M), np.float32), 0
    else:
        out, membrane, m0 = np.empty((T, B, M // (k * k)), np.float32), np.empty((T, B, M), np.float32), 0
    if rows:
        a, b = norm if norm is not None else (np.ones(M, np.float32), np.zeros(M, np.float32))
        def work(i, lo, hi):
            _train_forward_rows(lo, hi, current, d, g, l, th, out, membrane, shape[2], k, np.float32(scale), a, b, m0)
    else:
        a, b = norm if norm is not None else _NO_NORM
        def work(i, lo, hi):
            _train_forward(lo, hi, current, d, g, l, th, out, membrane, shape, k, np.float32(scale), a, b, m0)
    over_samples(work, split_batch(B, threads))
    return out, membrane


def lif_scan_backward(grad_out: np.ndarray, membrane: np.ndarray, decay: float, gain: float,
                      threshold: float, slope: float, threads: int, pool: tuple | None = None,
                      summed: bool = False, norm: tuple | None = None, part: tuple | None = None):
    """dL/dcurrent (T, B, M) from dL/dspikes (or, with ``pool``, dL/d of the pooled
    output, each neuron's spike getting scale * its window's), backpropagated through
    time; ``summed``: (1, B, M), summed over the T steps (for a static current).
    ``norm`` = (current, mean): the population normalises ``current`` (see
    lif_scan_train); the result is then (dL/dy, sums) with dL/dy for its normalised
    current y and sums (C, 2) float64 per channel: sum dL/dy, sum dL/dy * (current - mean).
    ``part`` = (m0, M_part): only the neurons [m0, m0 + M_part) (see lif_scan_train's into).
    Channels-last rows (membrane (T, B, R, C)): the result is (T or 1, B, R, K) and
    ``part`` = (c0, K) the part's channels.

    With x[t] = v[t] - threshold (membrane before reset) and the arctan surrogate
    sigma'(x) = (slope/2) / (1 + (pi/2 * slope * x)^2):

        dL/dv[t] = dL/ds[t] * sigma'(x[t]) + (1 - s[t]) * decay * dL/dv[t+1]
        dL/dI[t] = gain * dL/dv[t]

    the gradient of :func:`neurodeploy.kernels.dynamics.lif_scan`, whose reset
    v * (1 - s) passes no gradient through s."""
    rows = membrane.ndim == 4
    T, B = membrane.shape[:2]
    m0, M = part if part is not None else (0, membrane.shape[-1] if rows else membrane.shape[2])
    shape, k, scale = pool if pool is not None else ((M, 1, 1), 1, 1.0)
    shape = tuple(int(n) for n in shape)
    grad = np.empty((1 if summed else T, B) + ((membrane.shape[2], M) if rows else (M,)), np.float32)
    d, g, th, sl = (np.float32(v) for v in (decay, gain, threshold, slope))
    empty = np.zeros((1, 1, 1, 1) if rows else (1, 1, 1), np.float32)
    current, mean = norm if norm is not None else (empty, np.zeros(0, np.float32))
    chunks = split_batch(B, threads)
    if rows:
        sums = np.zeros((len(chunks), 2, mean.shape[0]), np.float64)
        def work(i, lo, hi):
            _train_backward_rows(lo, hi, grad_out, membrane, d, g, th, sl, grad, shape[2], k, np.float32(scale),
                                 current, mean, sums[i], m0)
    else:
        sums = np.zeros((len(chunks), mean.shape[0], 2), np.float64)
        def work(i, lo, hi):
            _train_backward(lo, hi, grad_out, membrane, d, g, th, sl, grad, shape, k, np.float32(scale),
                            current, mean, sums[i], m0)
    over_samples(work, chunks)
    if norm is None:
        return grad
    return grad, (sums.sum(0).T if rows else sums.sum(0))


def channel_statistics(current: np.ndarray, channels: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance (float64) of each of the ``channels`` blocks of M in
    current (rows, B, M), over rows, samples and the block, in one pass: sums of
    d = x - x0 and d^2, x0 the block's first value (so that a large mean does not
    cancel the variance away), float32 within a sample (vector lanes, see _channel_sums),
    float64 across samples. Channels-last rows (rows, B, R, K): per channel (column), in
    float64, x0 the first row's value."""
    chunks = split_batch(current.shape[1], threads)
    if current.ndim == 4:
        n = current.shape[0] * current.shape[1] * current.shape[2]
        shift = np.ascontiguousarray(current[0, 0, 0])
        sums = np.zeros((len(chunks), 2, channels), np.float64)
        over_samples(lambda i, lo, hi: _channel_moments_rows(lo, hi, current, shift, sums[i]), chunks)
        s1, s2 = sums.sum(0)
    else:
        n = current.shape[0] * current.shape[1] * (current.shape[2] // channels)
        shift = np.ascontiguousarray(current[0, 0].reshape(channels, -1)[:, 0])
        sums = np.zeros((len(chunks), channels, 2), np.float64)
        over_samples(lambda i, lo, hi: _channel_moments(lo, hi, current, shift, sums[i]), chunks)
        s1, s2 = sums.sum(0).T
    mean_d = s1 / n
    return shift + mean_d, np.maximum(s2 / n - mean_d ** 2, 0.0)


def normalise_backward(grad: np.ndarray, current: np.ndarray, coef_g, coef_x, coef_1, threads: int) -> None:
    """In place, per channel block c: grad = grad * coef_g[c] + current * coef_x[c] + coef_1[c]
    (the last pass of a batch normalisation's backward, see dynamics._CompiledNormalisedScan)."""
    coefs = [np.ascontiguousarray(v, dtype=np.float32) for v in (coef_g, coef_x, coef_1)]
    kernel = _normalise_backward_rows if grad.ndim == 4 else _normalise_backward    # channels-last rows
    over_samples(lambda i, lo, hi: kernel(lo, hi, grad, current, *coefs), split_batch(grad.shape[1], threads))
