"""neurodeploy.kernels.dynamics: the LIF discretisation shared by the models and the backends."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch

from neurodeploy.kernels import dynamics
from neurodeploy.architectures.layers import LIF
from neurodeploy.ir.io import read_graph, write_graph


def hand_loop(current, decay, gain, leak, thr, v_reset):
    """float32 numpy loop: v = decay v + gain I + leak; s = v > thr; v = v_reset where s."""
    v = np.zeros(current.shape[1:], np.float32)
    spikes, mems = [], []
    for c in current:
        v = (decay * v + gain * c + leak).astype(np.float32)
        s = v > thr
        v = np.where(s, v_reset, v).astype(np.float32)
        spikes.append(s.astype(np.float32))
        mems.append(v)
    return np.stack(spikes), np.stack(mems)


def test_lif_scan_matches_hand_loop():
    rng = np.random.default_rng(0)
    shape = (2, 5)
    tau = 1e-4 / (1 - rng.uniform(0.5, 0.95, shape))
    r = rng.uniform(0.5, 2.0, shape) * tau / 1e-4
    v_leak = rng.uniform(-0.1, 0.2, shape)
    thr = rng.uniform(0.5, 1.5, shape)
    v_reset = rng.uniform(-0.2, 0.2, shape)
    c = dynamics.lif_coefficients(tau, r, v_leak, thr, v_reset)
    assert all(t.dtype == torch.float32 and tuple(t.shape) == shape
               for t in (c.decay, c.gain, c.leak, c.threshold, c.v_reset))
    current = torch.from_numpy(rng.uniform(-0.5, 1.5, (12, 3) + shape).astype(np.float32))
    spikes, mem = dynamics.lif_scan(current, c, return_membrane=True)
    exp_s, exp_m = hand_loop(current.numpy(), *(t.numpy() for t in (c.decay, c.gain, c.leak, c.threshold,
                                                                       c.v_reset)))
    np.testing.assert_array_equal(spikes.numpy(), exp_s)
    np.testing.assert_array_equal(mem.numpy(), exp_m)
    assert 0.05 < exp_s.mean() < 0.95
    assert torch.equal(dynamics.lif_scan(current, c), spikes)


def test_lif_scan_strict_threshold_and_same_step_reset():
    c = dynamics.lif_coefficients(np.full(1, 2e-4), np.full(1, 2.0), np.zeros(1), np.ones(1), np.full(1, 0.25))
    assert float(c.decay) == 0.5 and float(c.gain) == 1.0
    current = torch.tensor([[1.0], [0.5], [0.5], [0.0]]).unsqueeze(1)      # (T, B=1, 1)
    s, v = dynamics.lif_scan(current, c, return_membrane=True)
    # v: 1.0 (== threshold: no spike), 1.0 (no), 1.0 (no), 0.5
    assert s.flatten().tolist() == [0, 0, 0, 0]
    current = torch.tensor([[1.5], [0.0], [1.0]]).unsqueeze(1)
    s, v = dynamics.lif_scan(current, c, return_membrane=True)
    assert s.flatten().tolist() == [1, 0, 1]
    assert v.flatten().tolist() == [0.25, 0.125, 0.25]       # reset to v_reset in the step it fires


def test_surrogate_gradient():
    x = torch.tensor([-1.0, -0.1, 0.0, 0.05, 1.0], requires_grad=True)
    y = dynamics.spike(x, slope=2.0)
    assert y.tolist() == [0, 0, 0, 1, 1]                      # Heaviside, strict
    y.sum().backward()
    expected = 1.0 / (1 + (math.pi * x.detach()) ** 2)           # (2/2) / (1 + (pi/2 * 2 * x)^2)
    torch.testing.assert_close(x.grad, expected)
    assert x.grad[2] == 1.0 and x.grad[2] > x.grad[1] > x.grad[0] > 0


def test_lif_scan_gradient_nonzero_near_threshold():
    c = dynamics.lif_coefficients(np.full(3, 1e-3), np.full(3, 10.0), np.zeros(3), np.ones(3), np.zeros(3))
    current = torch.tensor([[0.99, 0.5, 1.01]]).reshape(1, 1, 3).requires_grad_(True)
    s = dynamics.lif_scan(current, c)
    s.sum().backward()
    g = current.grad.flatten()
    assert (g > 0).all()
    assert g[0] > g[1] and g[2] > g[1]          # larger close to threshold


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95, 0.875])
def test_beta_roundtrip_is_bit_exact(beta):
    b32 = np.float32(beta)
    tau, r = dynamics.beta_to_nir(b32)
    np.testing.assert_allclose(1e-4 / tau, 1 - float(b32), rtol=1e-12)
    c = dynamics.lif_coefficients(tau, r, 0.0, 1.0, 0.0)
    assert c.decay.item() == float(b32)                    # the same float32 beta
    assert c.gain.item() == 1.0 and c.leak.item() == 0.0


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.95, 0.875])
def test_beta_roundtrip_through_a_nir_file(tmp_path, beta):
    pop = LIF(beta=beta, threshold=1.0)
    p = pop.nir_parameters(shape=(3,))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "lif": nir.LIF(**p),
                            "output": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("input", "lif"), ("lif", "output")], type_check=False)
    n = read_graph(write_graph(tmp_path / "lif.nir", g)).nodes["lif"]
    c = dynamics.lif_coefficients(n.tau, n.r, n.v_leak, n.v_threshold, n.v_reset)
    assert (c.decay.numpy() == np.float32(beta)).all()
    assert (c.gain.numpy() == 1.0).all()
    pop.timesteps, pop.batch = 1, 1
    pop(torch.zeros(1, 3))
    mine = pop.coefficients("cpu")
    assert (mine.decay.numpy() == np.float32(beta)).all() and (mine.gain.numpy() == 1.0).all()


LIF_SHAPE_BUG = ("BUG: LIF.coefficients calls nir_parameters(shape=()), and nir_parameters treats the empty shape "
                 "as 'not given' (`shape or self.population_shape`): coefficients() before a forward raises "
                 "TypeError, and after one they are cached with the first input's shape, so the module fails "
                 "on any other input shape")


def test_lif_coefficients_are_scalars_before_any_forward():
    c = LIF(beta=0.9).coefficients("cpu")
    assert c.decay.shape == () and c.decay.item() == np.float32(0.9)


def test_lif_module_accepts_a_second_input_shape():
    pop = LIF(beta=0.9)
    pop.timesteps, pop.batch = 2, 1
    a = pop(torch.full((2, 4), 0.75))
    b = pop(torch.full((2, 5), 0.75))
    assert torch.equal(b[:, :4], a)


def test_lif_module_static_input_equals_sequence():
    pop = LIF(beta=0.875, threshold=1.0)
    pop.timesteps, pop.batch = 5, 3
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) * 0.75
    static = pop(x)
    seq = pop(x.unsqueeze(0).expand(5, 3, 4).reshape(15, 4))
    assert torch.equal(static, seq) and static.shape == (15, 4)
    exp, _ = hand_loop(np.broadcast_to(x.numpy(), (5, 3, 4)), np.float32(0.875), np.float32(1), np.float32(0),
                       np.float32(1), np.float32(0))
    np.testing.assert_array_equal(static.reshape(5, 3, 4).numpy(), exp)
    assert 0 < exp.mean() < 1


@pytest.mark.parametrize("static", [False, "expanded", "once"])
def test_compiled_cpu_scan_equals_torch_ops_forward_and_backward(monkeypatch, static):
    """The architectures' LIF (shared beta, reset to zero) runs on CPU as compiled
    forward and backward loops (neurodeploy/lif_cpu.py): the same spikes bit for bit
    as the torch ops, and the same gradient (BPTT through the arctan surrogate) to
    float32 rounding, for a time-varying and for a static current, expanded over T or
    given once as (1, B, ...) (its gradient then summed over T inside the loop)."""
    from neurodeploy.kernels import lif_cpu
    lif = LIF(beta=0.9, threshold=1.0, surrogate_slope=2.0)
    c = lif.coefficients("cpu")
    rng = np.random.default_rng(5)
    T, B = 6, 5
    base = torch.from_numpy(rng.normal(0.4, 0.8, (1 if static else T, B, 3, 4, 4)).astype(np.float32))
    weights = torch.from_numpy(rng.normal(size=(T, B, 3, 4, 4)).astype(np.float32))

    def spikes_and_grad():
        x = base.clone().requires_grad_(True)
        if static == "once":
            s = dynamics.lif_scan(x, c, lif.surrogate_slope, timesteps=T)
        else:
            s = dynamics.lif_scan(x.expand(T, *x.shape[1:]) if static else x, c, lif.surrogate_slope)
        (s * weights).sum().backward()
        return s, x.grad, s.grad_fn
    s_compiled, g_compiled, fn = spikes_and_grad()
    assert type(fn).__name__ == "_CompiledLIFScanBackward"
    monkeypatch.setattr(lif_cpu, "AVAILABLE", False)
    s_ops, g_ops, fn = spikes_and_grad()
    assert type(fn).__name__ != "_CompiledLIFScanBackward"
    assert 0.05 < float(s_ops.detach().mean()) < 0.95
    assert torch.equal(s_compiled, s_ops)
    torch.testing.assert_close(g_compiled, g_ops, rtol=1e-5, atol=1e-6)
    assert float(g_ops.abs().max()) > 0.1


# size 12: rows of 12 and channel blocks of 144, so the compiled loops run both their
# vector bodies and their scalar remainders
@pytest.mark.parametrize("static, k, size", [(False, 2, 8), (True, 2, 8), (False, 4, 8), (False, 2, 12),
                                             (True, 4, 12)])
def test_pooled_scan_equals_scan_then_average_pooling(monkeypatch, static, k, size):
    """lif_scan_pooled (one compiled loop that pools each sample's spikes, and spreads the
    pooled gradient back) against lif_scan then F.avg_pool2d: the same values bit for
    bit, the same gradient to float32 rounding; a 3x3 window falls back to the two steps."""
    lif = LIF(beta=0.9, threshold=1.0, surrogate_slope=2.0)
    c = lif.coefficients("cpu")
    rng = np.random.default_rng(7)
    T, B, C, H, W = 5, 3, 2, size, size
    base = torch.from_numpy(rng.normal(0.4, 0.8, (1 if static else T, B, C, H, W)).astype(np.float32))
    weights = torch.from_numpy(rng.normal(size=(T, B, C, H // k, W // k)).astype(np.float32))

    def run(fused):
        x = base.clone().requires_grad_(True)
        current = x.expand(T, *x.shape[1:]) if static else x
        if fused:
            y = dynamics.lif_scan_pooled(current, c, lif.surrogate_slope, k)
        else:
            s = dynamics.lif_scan(current, c, lif.surrogate_slope).reshape(T * B, C, H, W)
            y = torch.nn.functional.avg_pool2d(s, k).reshape(T, B, C, H // k, W // k)
        (y * weights).sum().backward()
        return y, x.grad, y.grad_fn
    y_fused, g_fused, fn = run(True)
    assert type(fn).__name__ == "_CompiledLIFScanBackward"
    y_plain, g_plain, _ = run(False)
    assert 0 < float((y_plain > 0).float().mean()) < 1 and float(g_plain.abs().max()) > 0.1
    assert torch.equal(y_fused, y_plain)
    torch.testing.assert_close(g_fused, g_plain, rtol=1e-5, atol=1e-6)
    odd = torch.ones(T, B, C, 9, 9)
    assert dynamics.lif_scan_pooled(odd, c, lif.surrogate_slope, 3).shape == (T, B, C, 3, 3)


@pytest.mark.parametrize("static, k, parts, size", [(False, 1, 1, 8), (False, 2, 1, 8), (True, 1, 1, 8),
                                                    (True, 2, 1, 8), (False, 2, 2, 8), (True, 1, 2, 8),
                                                    (False, 2, 2, 12), (True, 4, 1, 12)])
def test_normalised_scan_equals_batchnorm_then_scan(static, k, parts, size):
    """lif_scan_normalised (BatchNorm2d in training mode applied inside the compiled LIF
    loop; its backward folded into the BPTT loop and one more pass) against torch's
    BatchNorm2d, then lif_scan (then average pooling): the same spikes; the same
    gradients for the current, gamma and beta, and the same running statistics, to
    float32 rounding; for a sequence and a static (1, B, ...) current, and for a current
    in two parts (a concatenation's branches, each with its own BatchNorm; the
    reference concatenates them)."""
    lif = LIF(beta=0.9, threshold=1.0, surrogate_slope=2.0)
    c = lif.coefficients("cpu")
    torch.manual_seed(0)
    T, B, H, W = 4, 6, size, size
    widths = [5] if parts == 1 else [3, 4]
    C = sum(widths)
    z0 = [torch.randn(1 if static else T, B, w, H, W) * 2 + 0.5 for w in widths]
    weights = torch.randn(T, B, C, H // k, W // k)
    norms = {run: [torch.nn.BatchNorm2d(w) for w in widths] for run in ("fused", "plain")}
    for bns in norms.values():
        for i, bn in enumerate(bns):
            with torch.no_grad():
                bn.weight.copy_(torch.linspace(0.5, 1.5, bn.num_features) + i)
                bn.bias.copy_(torch.linspace(-0.2, 0.6, bn.num_features) - i)
    z = {run: [t.clone().requires_grad_(True) for t in z0] for run in norms}
    fused = dynamics.lif_scan_normalised(z["fused"], norms["fused"], c, lif.surrogate_slope, k, T)
    assert type(fused.grad_fn).__name__ == "_CompiledNormalisedScanBackward"
    y = torch.cat([bn(t.reshape(-1, *t.shape[2:])).reshape(t.shape) for bn, t in zip(norms["plain"], z["plain"])], 2)
    plain = dynamics.lif_scan(y, c, lif.surrogate_slope, timesteps=T)
    if k > 1:
        plain = torch.nn.functional.avg_pool2d(plain.reshape(T * B, C, H, W), k).reshape(fused.shape)
    for out in (fused, plain):
        (out * weights).sum().backward()
    assert 0 < float((plain > 0).float().mean()) < 1
    assert torch.equal(fused, plain)
    pairs = [(a.grad, b.grad) for a, b in zip(z["fused"], z["plain"])]
    for bn_f, bn_p in zip(norms["fused"], norms["plain"]):
        pairs += [(bn_f.weight.grad, bn_p.weight.grad), (bn_f.bias.grad, bn_p.bias.grad),
                  (bn_f.running_mean, bn_p.running_mean), (bn_f.running_var, bn_p.running_var)]
        assert int(bn_f.num_batches_tracked) == 1
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def _channels_last_copy(x: torch.Tensor) -> torch.Tensor:
    """The same (n, B, C, H, W) values lying in memory as channels-last rows."""
    return x.detach().permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("static, k", [(False, 1), (False, 2), (True, 2), (True, 1), (False, 4)])
def test_channels_last_scan_equals_nchw(static, k):
    """A channels-last current (what oneDNN's convolutions return for channels-last input)
    runs the loops on rows: the same spikes and the same gradient, bit for bit, as the
    NCHW loops, and the spikes come back channels-last."""
    lif = LIF(beta=0.9, threshold=1.0, surrogate_slope=2.0)
    c = lif.coefficients("cpu")
    torch.manual_seed(3)
    T, B, C, H, W = 4, 3, 6, 8, 12
    base = torch.randn(1 if static else T, B, C, H, W) * 2 + 0.5
    weights = torch.randn(T, B, C, H // k, W // k)
    results = []
    for x0 in (base, _channels_last_copy(base)):
        x = x0.clone().requires_grad_(True) if x0.is_contiguous() else _channels_last_copy(x0).requires_grad_(True)
        y = (dynamics.lif_scan_pooled(x, c, lif.surrogate_slope, k, T) if k > 1
             else dynamics.lif_scan(x, c, lif.surrogate_slope, timesteps=T))
        (y * weights).sum().backward()
        results.append((y, x.grad, dynamics._channels_last(x)))
    (y_nchw, g_nchw, _), (y_rows, g_rows, rows) = results
    assert rows and dynamics._channels_last(y_rows) and dynamics._channels_last(g_rows)
    assert 0 < float((y_nchw > 0).float().mean()) < 1 and float(g_nchw.abs().max()) > 0.1
    assert torch.equal(y_rows, y_nchw)
    assert torch.equal(g_rows, g_nchw)


@pytest.mark.parametrize("static, k, widths", [(False, 1, [5]), (False, 2, [3, 4]), (True, 2, [5]), (True, 1, [3, 4])])
def test_channels_last_normalised_scan_equals_nchw(static, k, widths):
    """The BatchNorm'd loops on channels-last rows (parts = columns of each row) against
    the NCHW loops: the same spikes bit for bit; gradients and running statistics to
    float32 rounding (the per-channel sums run down the columns, in float64)."""
    lif = LIF(beta=0.9, threshold=1.0, surrogate_slope=2.0)
    c = lif.coefficients("cpu")
    torch.manual_seed(4)
    T, B, H, W = 4, 5, 8, 8
    C = sum(widths)
    z0 = [torch.randn(1 if static else T, B, w, H, W) * 2 + 0.5 for w in widths]
    weights = torch.randn(T, B, C, H // k, W // k)
    runs = {}
    for layout in ("nchw", "rows"):
        norms = [torch.nn.BatchNorm2d(w) for w in widths]
        for i, bn in enumerate(norms):
            with torch.no_grad():
                bn.weight.copy_(torch.linspace(0.5, 1.5, bn.num_features) + i)
                bn.bias.copy_(torch.linspace(-0.2, 0.6, bn.num_features) - i)
        z = [(t.clone() if layout == "nchw" else _channels_last_copy(t)).requires_grad_(True) for t in z0]
        y = dynamics.lif_scan_normalised(z, norms, c, lif.surrogate_slope, k, T)
        (y * weights).sum().backward()
        runs[layout] = (y, z, norms)
    (y_n, z_n, bn_n), (y_r, z_r, bn_r) = runs["nchw"], runs["rows"]
    assert dynamics._channels_last(y_r) and all(dynamics._channels_last(t.grad) for t in z_r)
    assert 0 < float((y_n > 0).float().mean()) < 1
    assert torch.equal(y_r, y_n)
    pairs = [(a.grad, b.grad) for a, b in zip(z_r, z_n)]
    for a, b in zip(bn_r, bn_n):
        pairs += [(a.weight.grad, b.weight.grad), (a.bias.grad, b.bias.grad), (a.running_mean, b.running_mean),
                  (a.running_var, b.running_var)]
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
