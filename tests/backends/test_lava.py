"""Lava backend: hand-built NIR graphs run on Lava and compared spike for spike.

The reference is a tiny numpy implementation of neurodeploy/dynamics.py's equations
(float32 LIF, no synaptic delay, fan-in summed), written independently of the backend;
when the torch reference backend exists it is compared as well. Tests that need the
Lava runtime are marked ``lava`` and skip (with the command to create it) when it is
missing.
"""
from __future__ import annotations

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from neurodeploy.backends.lava import fixed_point as fx
from neurodeploy.backends.lava.runtime import runtime_status
from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.io import write_graph
from neurodeploy.ir.conventions import GraphConventions, with_conventions

DT = 1e-4
_status = runtime_status()
needs_lava = pytest.mark.skipif(not _status["installed"],
                                reason=f"Lava runtime missing ({_status['reason']}); "
                                       "create it with `neurodeploy setup lava`")


# ---------------------------------------------------------------- graph builders
def lif(shape, beta=0.9, thr=1.0):
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def if_(shape, thr=1.0):
    """dv/dt = R I, stepped as v += R dt I: R = 1/dt makes it v += I."""
    return nir.IF(r=np.full(shape, 1 / DT), v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def conv(rng, cout, cin, k, hw, scale, stride=1, pad=None, groups=1, bias=True):
    pad = k // 2 if pad is None else pad
    w = rng.normal(0, scale, (cout, cin // groups, k, k))
    b = rng.normal(0, scale / 4, cout) if bias else np.zeros(cout)
    return nir.Conv2d(input_shape=hw, weight=w, stride=stride, padding=pad, dilation=1,
                      groups=groups, bias=b)


def save(tmp_path, name, nodes, edges, in_shape, timesteps):
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with_conventions(g, GraphConventions(timesteps=timesteps, input_shape=tuple(in_shape)))
    return write_graph(tmp_path / f"{name}.nir", g)


def chain_graph(tmp_path, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv1": conv(rng, 4, 2, 3, (8, 8), scale),
        "lif1": lif((4, 8, 8)),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "conv2": conv(rng, 6, 4, 3, (4, 4), scale * 0.8, bias=False),
        "lif2": lif((6, 4, 4), beta=0.8),
        "flat": nir.Flatten(input_type={"input": np.array([6, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.3, (5, 96)), bias=rng.normal(0, 0.1, 5)),
        "lif3": if_((5,)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "pool"), ("pool", "conv2"),
             ("conv2", "lif2"), ("lif2", "flat"), ("flat", "fc"), ("fc", "lif3"), ("lif3", "output")]
    return save(tmp_path, "chain", nodes, edges, (2, 8, 8), 6)


def residual_graph(tmp_path, seed=1):
    """Fan-in of three paths of different depth into lif3, one a direct edge."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3, 6, 6])}),
        "conv1": conv(rng, 4, 3, 3, (6, 6), 0.6),
        "lif1": lif((4, 6, 6)),
        "conv2": conv(rng, 4, 4, 3, (6, 6), 0.5),
        "lif2": lif((4, 6, 6)),
        "conv3": conv(rng, 4, 4, 1, (6, 6), 0.5, pad=0),
        "lif3": lif((4, 6, 6), beta=0.95),
        "output": nir.Output(output_type={"output": np.array([4, 6, 6])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "conv2"), ("conv2", "lif2"),
             ("lif2", "conv3"), ("conv3", "lif3"), ("lif1", "lif3"), ("lif3", "output")]
    return save(tmp_path, "residual", nodes, edges, (3, 6, 6), 7)


def depthwise_graph(tmp_path, seed=2):
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3, 8, 8])}),
        "conv1": conv(rng, 6, 3, 3, (8, 8), 0.6),
        "lif1": lif((6, 8, 8)),
        "dw": conv(rng, 6, 6, 3, (8, 8), 0.8, groups=6),
        "lif2": lif((6, 8, 8)),
        "avg": nir.AvgPool2d(kernel_size=np.array([2]), stride=np.array([2]), padding=np.array([0])),
        "lif3": if_((6, 4, 4), thr=0.5),
        "output": nir.Output(output_type={"output": np.array([6, 4, 4])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "dw"), ("dw", "lif2"),
             ("lif2", "avg"), ("avg", "lif3"), ("lif3", "output")]
    return save(tmp_path, "depthwise", nodes, edges, (3, 8, 8), 6)


def readout_graph(tmp_path, seed=3):
    """Output fed by global average pooling + flatten (read out on the host)."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 4, 4])}),
        "conv1": conv(rng, 5, 2, 3, (4, 4), 0.7),
        "lif1": lif((5, 4, 4)),
        "gap": nir.AvgPool2d(kernel_size=np.array([4, 4]), stride=np.array([4, 4]),
                             padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([5, 1, 1])}, start_dim=0, end_dim=-1),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "gap"), ("gap", "flat"),
             ("flat", "output")]
    return save(tmp_path, "readout", nodes, edges, (2, 4, 4), 4)


def wide_graph(tmp_path, seed=4):
    """A 160-channel pooling: more groups than lava's int8 Conv.groups holds (-> Sparse)."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4, 4, 4])}),
        "conv1": conv(rng, 160, 4, 1, (4, 4), 0.8, pad=0),
        "lif1": lif((160, 4, 4)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2]), stride=np.array([2]), padding=np.array([0])),
        "lif2": if_((160, 2, 2), thr=0.4),
        "output": nir.Output(output_type={"output": np.array([160, 2, 2])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "pool"), ("pool", "lif2"),
             ("lif2", "output")]
    return save(tmp_path, "wide", nodes, edges, (4, 4, 4), 4)


def cuba_graph(tmp_path, seed=5):
    """CubaLIF populations (synaptic filter) fed by the input and by spikes."""
    rng = np.random.default_rng(seed)
    tau_syn, tau_mem = DT / 0.4, DT / 0.15      # syn decay 0.6, membrane decay 0.85

    def cuba(shape, w_in=1.0):
        return nir.CubaLIF(tau_syn=np.full(shape, tau_syn), tau_mem=np.full(shape, tau_mem),
                           r=np.full(shape, tau_mem / DT), v_leak=np.zeros(shape),
                           v_threshold=np.ones(shape), v_reset=np.zeros(shape),
                           w_in=np.full(shape, w_in))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 5, 5])}),
        "conv1": conv(rng, 4, 2, 3, (5, 5), 1.2),
        "cuba1": cuba((4, 5, 5), w_in=2.0),
        "flat": nir.Flatten(input_type={"input": np.array([4, 5, 5])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.8, (6, 100)), bias=np.zeros(6)),
        "cuba2": cuba((6,), w_in=2.5),
        "output": nir.Output(output_type={"output": np.array([6])}),
    }
    edges = [("input", "conv1"), ("conv1", "cuba1"), ("cuba1", "flat"), ("flat", "fc"),
             ("fc", "cuba2"), ("cuba2", "output")]
    return save(tmp_path, "cuba", nodes, edges, (2, 5, 5), 8)


# ---------------------------------------------------------------- numpy reference
def _conv_ref(x, w, stride, pad, groups):
    """Direct cross-correlation (N, C, H, W), independent of the backend's im2col."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + stride[0] * oh:stride[0],
                           j:j + stride[1] * ow:stride[1]]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    return out


def _two(v):
    v = np.asarray(v).reshape(-1)
    return (int(v[0]), int(v[-1]))


def reference_run(path, x, timesteps):
    """Step every node in topological order each timestep (no delay); returns (T, N, *out)."""
    g = nir.read(str(path), type_check=False)
    preds = {n: [] for n in g.nodes}
    for s, d in g.edges:
        preds[d].append(s)
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for p in preds[n]:
            visit(p)
        order.append(n)

    for n in g.nodes:
        visit(n)
    state, outs = {}, []
    for t in range(timesteps):
        val = {}
        for n in order:
            node = g.nodes[n]
            kind = type(node).__name__
            inp = sum(val[p] for p in preds[n]) if preds[n] else None
            if kind == "Input":
                val[n] = (x[t] if x.ndim == 5 else x).astype(np.float64)
            elif kind == "Output":
                val[n] = inp
            elif kind == "Conv2d":
                val[n] = _conv_ref(inp, node.weight, _two(node.stride), _two(node.padding),
                                   node.groups) + np.asarray(node.bias)[None, :, None, None]
            elif kind in ("SumPool2d", "AvgPool2d"):
                k = _two(node.kernel_size)
                c = inp.shape[1]
                y = _conv_ref(inp, np.ones((c, 1, *k)), _two(node.stride), _two(node.padding), c)
                val[n] = y / (k[0] * k[1]) if kind == "AvgPool2d" else y
            elif kind == "Flatten":
                val[n] = inp.reshape(inp.shape[0], -1)
            elif kind == "Affine":
                val[n] = inp @ np.asarray(node.weight).T + node.bias
            elif kind in ("LIF", "IF", "CubaLIF"):
                f32 = lambda a: np.asarray(a, np.float64).astype(np.float32)
                cur = inp.astype(np.float32)
                if kind == "CubaLIF":
                    i = state.get(n + ".i", np.zeros(inp.shape, np.float32))
                    a_syn = DT / np.asarray(node.tau_syn, np.float64)   # NIR: tau di/dt = -i + w I
                    cur = f32(1 - a_syn) * i + f32(node.w_in * a_syn) * cur
                    state[n + ".i"] = cur
                if kind in ("LIF", "CubaLIF"):
                    a = DT / np.asarray(node.tau if kind == "LIF" else node.tau_mem, np.float64)
                    decay, gain, leak = f32(1 - a), f32(node.r * a), f32(node.v_leak * a)
                else:
                    decay, gain, leak = f32(np.ones_like(node.r)), f32(node.r * DT), f32(0 * node.r)
                v = state.get(n, np.zeros(inp.shape, np.float32))
                v = decay * v + gain * cur + leak
                s = v > f32(node.v_threshold)
                state[n] = np.where(s, f32(node.v_reset), v).astype(np.float32)
                val[n] = s.astype(np.float64)
        outs.append(val[[n for n in g.nodes if type(g.nodes[n]).__name__ == "Output"][0]])
    return np.stack(outs).astype(np.float32)


def torch_reference(path, x, timesteps):
    """The lead's torch backend, when it is importable (None otherwise)."""
    try:
        from neurodeploy.backends import torch as torch_backend
        from neurodeploy.ir.io import read_graph
    except ImportError:
        return None
    return torch_backend.compile(read_graph(path), device="cpu").run(x, timesteps)


# ---------------------------------------------------------------- fixed point (no runtime)
def test_weight_round_trip_bound_and_range():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (64, 32))
    mant, exp, rep = fx.quantise_weights(w * 40.0)
    assert mant.dtype == np.int32 and np.all(mant % 2 == 0)
    assert mant.min() >= -256 and mant.max() <= 254
    assert np.abs(mant).max() > 127                     # the range is used
    err = np.abs(mant * 2.0 ** exp - w * 40.0).max()
    assert err <= 2.0 ** exp + 1e-9                     # half an even step
    assert rep["clipped"] == 0 and rep["max_rel_error"] < 0.01


def test_conv_weights_have_no_exponent_and_outlier_layer_is_reported():
    w = np.full((8, 8), 0.01)
    w[0, 0] = 100.0                                      # one huge outlier
    s = fx.population_scale([np.abs(w).max()], np.ones(8))
    mant, exp, rep = fx.quantise_weights(w * s / 64.0, allow_exponent=False)
    assert exp == 0 and mant[0, 0] == 254
    assert rep["zeroed"] == 63                           # everything small rounds to 0, reported
    assert rep["values"] == 64
    vth, rth = fx.threshold_mantissa(np.ones(8), s)
    assert vth[0] == 3 and rth["max_rel_error"] > 0.1    # threshold 2.54 units -> 3: reported


def test_dyadic_scale_has_a_power_of_two_step_and_is_chosen_only_when_lossless():
    s = fx.dyadic_scale([0.3], np.ones(4))
    step = 128.0 / s                                     # float weight per even mantissa step
    assert np.log2(step).is_integer()
    assert 127 < 0.3 * s / 64.0 <= 254                   # uses the top bit of the range, never clips
    assert fx.population_scale([0.3], np.ones(4)) >= s   # at most one bit coarser than the default
    assert fx.dyadic_scale([0.3], np.array([1.0, 2.0])) is None
    # a population whose weights are integers at the dyadic scale gets it; others keep the default
    from neurodeploy.backends.lava.compiler import Quantised
    from neurodeploy.backends.lava.plan import Op, Path, Plan, Pop
    def plan_with(w):
        pop = Pop("p", "LIF", (2,), np.full(2, 0.9), np.ones(2), np.zeros(2), np.ones(2), np.zeros(2))
        op = Op("fc", "Affine", "dense", (2,), (2,), weight=w, bias=np.zeros(2))
        plan = Plan("in", (2,), "out", "p", pops={"p": pop})
        plan.paths = [Path("q", "p", [op])]
        return plan
    on_grid = np.array([[0.3, -0.1], [0.05, 0.2]])
    on_grid = np.round(on_grid / step) * step
    assert Quantised(plan_with(on_grid), "fixed", "netx").scale["p"] == fx.dyadic_scale([np.abs(on_grid).max()],
                                                                                        np.ones(2))
    off_grid = on_grid + step / 3
    q = Quantised(plan_with(off_grid), "fixed", "netx")
    assert q.scale["p"] == fx.population_scale([np.abs(off_grid).max()], np.ones(2))


def test_input_shift_refines_the_state_and_keeps_the_weights():
    """Route loihi2: the population's state scale, threshold and drive grow by 2**e, the
    weight mantissas stay, and e stops where the threshold passes 1/16 of the state range."""
    assert fx.input_shift(512) == 4 and (512 << 4) <= fx.VTH_MANT_ROOM < (512 << 5)
    assert fx.input_shift(fx.VTH_MANT_ROOM) == 0 and fx.input_shift(20000) == 0
    assert fx.input_shift(1) == fx.SHIFT_MAX
    assert (fx.VTH_MANT_ROOM << 6) * 16 == 1 << (fx.STATE_BITS - 1)     # 16 thresholds of headroom
    from neurodeploy.backends.lava.compiler import Quantised
    from neurodeploy.backends.lava.plan import Op, Path, Plan, Pop
    pop = lambda: Pop("p", "LIF", (2,), np.full(2, 0.9), np.ones(2), np.zeros(2), np.ones(2), np.zeros(2))
    w = np.array([[0.3, -0.1], [0.05, 0.2]])
    qs = {}
    for route in ("netx", "loihi2"):
        plan = Plan("in", (2,), "out", "p", pops={"p": pop()})
        plan.paths = [Path("q", "p", [Op("fc", "Affine", "dense", (2,), (2,), weight=w, bias=np.zeros(2))])]
        qs[route] = (Quantised(plan, "fixed", route), plan)
    (netx, plan_n), (loihi2, plan_l) = qs["netx"], qs["loihi2"]
    e = loihi2.report["populations"]["p"]["input_shift"]
    assert netx.report["populations"]["p"]["input_shift"] == 0
    assert e == fx.input_shift(int(plan_n.pops["p"].vth_mant.max())) > 0
    assert loihi2.scale["p"] == netx.scale["p"] * 2 ** e
    assert np.array_equal(plan_l.pops["p"].vth_mant, plan_n.pops["p"].vth_mant * 2 ** e)
    [(pid_n, wn)], [(pid_l, wl)] = netx.weights.items(), loihi2.weights.items()
    assert np.array_equal(wn[0], wl[0]) and netx.exps[pid_n] == loihi2.exps[pid_l]
    with pytest.raises(Exception, match="route must be one of"):
        Quantised(plan_l, "fixed", "loihi1")


def test_thresholds_decays_biases():
    s = fx.population_scale([0.5], np.ones(4))
    vth, rep = fx.threshold_mantissa(np.ones(4), s)
    assert np.all(vth == vth[0]) and rep["max_abs_error"] == 0   # exact with a uniform threshold
    dv, rep = fx.decay_to_dv(np.array([1.0, 0.9, 0.5, 0.0]))
    assert list(dv) == [0, 410, 2048, 4095] and rep["clipped"] == 1
    eff, rep = fx.quantise_bias(np.array([3.0, -4096.0, 1e5, 1e9]))
    assert eff[0] == 3 and eff[1] == -4096 and abs(eff[2] - 1e5) <= 8
    assert rep["clipped"] == 1                                   # 1e9 exceeds 4095 << 7
    assert list(fx.decay_state(np.array([100, -100]), np.array([2048, 2048]))) == [50, -50]
    assert list(fx.shift_accumulated(np.array([-5, 5]), -1)) == [-3, 2]


def test_cuba_step_is_loihi_arithmetic():
    u, v = fx.cuba_step(np.zeros(2), np.array([1000, -1000]), np.array([3, -3]),
                        du=np.array([4095, 4095]), dv=np.array([2048, 2048]), drive_u=0, bias_v=5)
    assert list(u) == [192, -192] and list(v) == [500 + 192 + 5, -500 - 192 + 5]
    du, rep = fx.syn_decay_to_du(np.array([0.6, 1.0]))
    assert list(du) == [1637, 0] and rep["clipped"] == 1    # lava's u can never hold exactly
    u, _ = fx.cuba_step(np.array([4096]), np.zeros(1), np.zeros(1), du, np.zeros(1), 0, 0)
    assert u[0] == (4096 * (4096 - 1638)) >> 12             # decays by (4096 - du - 1) / 4096
    assert fx.wrap_state(np.array([(1 << 23) + 5]))[0] == -(1 << 23) + 5


# ---------------------------------------------------------------- error paths (no runtime)
def test_missing_runtime_names_the_fix(tmp_path, monkeypatch):
    from neurodeploy.backends import lava
    monkeypatch.setenv("NEURODEPLOY_LAVA_ENV", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    prog = lava.compile(chain_graph(tmp_path), precision="float")
    with pytest.raises(NeurodeployError, match="neurodeploy setup lava") as e:
        prog.run(np.zeros((1, 2, 8, 8), np.float32), 2)
    assert "\n" not in str(e.value)


def test_unsupported_node_is_named(tmp_path):
    from neurodeploy.backends import lava
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "d": nir.Delay(delay=np.ones(3)), "lif": lif((3,)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    path = save(tmp_path, "delay", nodes, [("input", "d"), ("d", "lif"), ("lif", "output")], (3,), 2)
    with pytest.raises(NeurodeployError, match=r"'d' \(Delay\)"):
        lava.compile(path)


# ---------------------------------------------------------------- on Lava
@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("builder", [chain_graph, residual_graph, depthwise_graph, readout_graph,
                                     wide_graph, cuba_graph])
def test_float_mode_matches_reference_spike_for_spike(tmp_path, builder):
    from neurodeploy.backends import lava
    path = builder(tmp_path)
    g = nir.read(str(path), type_check=False)
    shape = tuple(np.asarray(g.nodes["input"].input_type["input"]))
    x = np.random.default_rng(5).uniform(0, 1, (3, *shape)).astype(np.float32)
    t = 6
    ref = reference_run(path, x, t)
    res = lava.compile(path, precision="float").run(x, t)
    assert res.outputs.shape == ref.shape
    assert ref.sum() > 0                                  # the graph does spike
    np.testing.assert_array_equal(res.outputs, ref)
    tref = torch_reference(path, x, t)
    if tref is not None:
        np.testing.assert_array_equal(np.asarray(tref.outputs), res.outputs)
        for name, pc in tref.counters.populations.items():
            lc = res.counters.populations[name]
            assert (lc.spikes, lc.neuron_updates, lc.input_events) == (
                pc.spikes, pc.neuron_updates, pc.input_events), name
        for name, pc in tref.counters.projections.items():
            lc = res.counters.projections[name]
            assert (lc.binary_input, lc.parameters, lc.dense_ops) == (
                pc.binary_input, pc.parameters, pc.dense_ops), name
            assert lc.effective_ops == pytest.approx(pc.effective_ops), name
    c = res.counters
    assert c.samples == 3 and c.timesteps == t
    first = c.projections["conv1"]
    assert not first.binary_input and first.effective_macs > 0   # direct encoding: MACs
    assert sum(p.binary_input for p in c.projections.values()) >= 1   # spikes in: ACs
    assert sum(p.spikes for p in c.populations.values()) == sum(
        np.sum(v) for v in res.population_spike_counts.values())


@pytest.mark.lava
@needs_lava
def test_float_mode_sequence_input(tmp_path):
    from neurodeploy.backends import lava
    path = chain_graph(tmp_path)
    x = np.random.default_rng(6).uniform(0, 1.5, (5, 2, 2, 8, 8)).astype(np.float32)
    ref = reference_run(path, x, 5)
    res = lava.compile(path, precision="float").run(x, 5)
    np.testing.assert_array_equal(res.outputs, ref)


@pytest.mark.lava
@needs_lava
def test_fixed_mode_agreement_is_reported_and_high(tmp_path):
    from neurodeploy.backends import lava
    path = chain_graph(tmp_path, seed=3)
    x = np.random.default_rng(7).uniform(0, 1, (4, 2, 8, 8)).astype(np.float32)
    ref = reference_run(path, x, 6)
    prog = lava.compile(path, precision="fixed")
    res = prog.run(x, 6)
    agreement = float((res.outputs == ref).mean())
    print(f"fixed-point spike agreement with the float reference: {agreement:.4f}")
    assert agreement > 0.9
    q = prog.last["quantisation"]
    assert set(q["layers"]) >= {"conv1", "conv2->lif2", "fc->lif3"}
    for rep in q["layers"].values():
        assert rep["clipped"] == 0 and rep["max_rel_error"] < 0.01
    counts = {k: v.sum() for k, v in res.population_spike_counts.items()}
    ref_counts = reference_counts(path, x, 6)
    for k in counts:
        assert abs(counts[k] - ref_counts[k]) <= 0.1 * max(ref_counts[k], 10)


@pytest.mark.lava
@needs_lava
def test_loihi2_route_is_closer_to_the_reference_and_wrapped_currents_are_counted(tmp_path):
    """Route loihi2 (graded input, finer state) against route netx (bias input, the weights'
    scale) on the same network: at least as close to the float reference, no current
    wrapped. A layer whose weights dwarf its threshold gets the full shift, and the
    currents that then pass 24 bits are counted, not hidden."""
    from neurodeploy.backends import lava
    path = chain_graph(tmp_path, seed=3)
    x = np.random.default_rng(7).uniform(0, 1, (4, 2, 8, 8)).astype(np.float32)
    ref = reference_run(path, x, 6)
    loihi2 = lava.compile(path, precision="fixed").run(x, 6)
    netx = lava.compile(path, precision="fixed", route="netx").run(x, 6)
    agree = {name: float((r.outputs == ref).mean()) for name, r in (("loihi2", loihi2), ("netx", netx))}
    print(f"spike agreement with the float reference: {agree}")
    assert agree["loihi2"] >= agree["netx"] and agree["loihi2"] > 0.95
    assert loihi2.overflows == {} and netx.overflows == {}

    nodes = {"input": nir.Input(input_type={"input": np.array([8])}),
             "fc1": nir.Affine(weight=np.eye(8) * 2.0, bias=np.zeros(8)), "lif1": lif((8,)),
             "fc2": nir.Affine(weight=np.full((2, 8), 100.0), bias=np.zeros(2)), "lif2": lif((2,)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    seq = ["input", "fc1", "lif1", "fc2", "lif2", "output"]
    path = save(tmp_path, "loud", nodes, list(zip(seq[:-1], seq[1:])), (8,), 3)
    res = lava.compile(path, precision="fixed").run(np.ones((1, 8), np.float32), 3)
    assert res.overflows.get("lif2", 0) > 0          # 8 spikes x mantissa 254 << 13 > 2**23


def reference_counts(path, x, t):
    """Spike totals per population from the reference (re-run with every LIF as output)."""
    g = nir.read(str(path), type_check=False)
    out = {}
    for n, node in g.nodes.items():
        if type(node).__name__ in ("LIF", "IF", "CubaLIF"):
            edges = [e for e in g.edges if e[1] != "output"] + [(n, "output")]
            nodes = dict(g.nodes)
            nodes["output"] = nir.Output(output_type={"output": np.asarray(node.v_threshold.shape)})
            h = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
            p = write_graph(path.parent / f"_{n}.nir", h)
            out[n] = float(reference_run(p, x, t).sum())
    return out


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("builder", [chain_graph, residual_graph, depthwise_graph, wide_graph,
                                     cuba_graph])
def test_fast_conv_model_is_bit_exact_with_stock_fixed_pt(tmp_path, builder):
    """Binary and graded (pool -> conv) inputs, depthwise groups, delays, fan-in."""
    from neurodeploy.backends import lava
    path = builder(tmp_path)
    g = nir.read(str(path), type_check=False)
    shape = tuple(np.asarray(g.nodes["input"].input_type["input"]))
    x = np.random.default_rng(8).uniform(0, 1, (2, *shape)).astype(np.float32)
    fast = lava.compile(path, precision="fixed", fast_conv=True).run(x, 5)
    stock = lava.compile(path, precision="fixed", fast_conv=False).run(x, 5)
    assert fast.outputs.sum() > 0
    np.testing.assert_array_equal(fast.outputs, stock.outputs)
    for k, v in stock.population_spike_counts.items():
        np.testing.assert_array_equal(fast.population_spike_counts[k], v)
    ref = reference_run(path, x, 5)
    print(f"{builder.__name__}: fixed-point agreement {float((fast.outputs == ref).mean()):.4f}")


@pytest.mark.lava
@needs_lava
def test_worker_failure_is_one_line(tmp_path):
    from neurodeploy.backends import lava
    prog = lava.compile(chain_graph(tmp_path), precision="float")
    x = np.zeros((3, 1, 2, 8, 8), np.float32)          # a 3-step sequence, 5 steps asked
    with pytest.raises(NeurodeployError, match="sequence has 3 timesteps but --timesteps is 5") as e:
        prog.run(x, 5)
    assert "\n" not in str(e.value)
    prog.timeout = 0.5                                   # killed, with its process group
    with pytest.raises(NeurodeployError, match="did not finish"):
        prog.run(np.zeros((1, 2, 8, 8), np.float32), 2)


def test_bad_input_shape_and_broken_runtime(tmp_path, monkeypatch):
    from neurodeploy.backends import lava
    from neurodeploy.backends.lava import runtime
    env = tmp_path / "rt"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    monkeypatch.setenv("NEURODEPLOY_LAVA_ENV", str(env))
    st = runtime.runtime_status()
    assert not st["installed"] and "setup lava" in st["reason"]
    with pytest.raises(NeurodeployError, match="neurodeploy setup lava"):
        runtime.ensure_runtime()
    prog = lava.compile(chain_graph(tmp_path), precision="fixed")
    monkeypatch.setattr(runtime, "runtime_status", lambda: {"installed": True})
    monkeypatch.setattr(lava, "ensure_runtime", lambda: env / "bin" / "python")
    with pytest.raises(NeurodeployError, match="does not fit the graph's input"):
        prog.run(np.zeros((1, 3, 8, 8), np.float32), 2)


def test_fixed_point_restrictions_fail_at_compile(tmp_path):
    from neurodeploy.backends import lava
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
             "conv1": conv(rng, 3, 2, 3, (6, 6), 0.5), "lif1": lif((3, 6, 6)),
             "conv2": conv(rng, 3, 3, 3, (6, 6), 0.5), "conv3": conv(rng, 3, 3, 3, (6, 6), 0.5),
             "lif2": lif((3, 6, 6)), "output": nir.Output(output_type={"output": np.array([3, 6, 6])})}
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "conv2"), ("conv2", "conv3"),
             ("conv3", "lif2"), ("lif2", "output")]
    path = save(tmp_path, "convconv", nodes, edges, (2, 6, 6), 3)
    lava.compile(path, precision="float")               # fine in float
    with pytest.raises(NeurodeployError, match="conv2, conv3 follow each other"):
        lava.compile(path, precision="fixed")


@pytest.mark.lava
@needs_lava
def test_chunked_run_equals_one_run(tmp_path):
    from neurodeploy.backends import lava
    path = chain_graph(tmp_path)
    x = np.random.default_rng(9).uniform(0, 1, (3, 2, 8, 8)).astype(np.float32)
    prog = lava.compile(path, precision="fixed")
    one, two = prog.run(x, 4), prog.run(x, 4, batch_size=2)
    three = lava.compile(nir.read(str(path), type_check=False), precision="fixed").run(x, 4)
    np.testing.assert_array_equal(one.outputs, three.outputs)   # a graph object works too
    np.testing.assert_array_equal(one.outputs, two.outputs)
    assert one.counters.to_dict()["totals_per_sample"] == two.counters.to_dict()["totals_per_sample"]
    assert two.counters.samples == 3 and prog.last["chunks"] == 2


@pytest.mark.lava
@pytest.mark.slow
@needs_lava
def test_exported_zoo_model_matches_torch_backend(tmp_path):
    """The real thing: an exported (untrained) pruned SqueezeNet, float mode, vs the torch backend."""
    try:
        from neurodeploy.architectures import build
        from neurodeploy.exporters.lowering import export
    except ImportError as e:
        pytest.skip(f"exporter not importable: {e}")
    from neurodeploy.backends import lava
    model = build("pruned_squeezenet", "snn", num_classes=10, timesteps=2).eval()
    path = write_graph(tmp_path / "sq.nir", export(model, (3, 32, 32)))
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    res = lava.compile(path, precision="float").run(x, 2)
    ref = torch_reference(path, x, 2)
    np.testing.assert_array_equal(res.outputs, np.asarray(ref.outputs))
    assert res.counters.totals() == pytest.approx(ref.counters.totals())


def test_install_is_atomic_and_python310_is_required(tmp_path, monkeypatch):
    """A failed install leaves nothing at the runtime path; no 3.10 gives the fix."""
    import sys
    from neurodeploy.backends.lava import runtime
    target = tmp_path / "cache" / "rt"
    monkeypatch.setenv("NEURODEPLOY_LAVA_ENV", str(target))
    monkeypatch.setattr(runtime, "find_python310", lambda: sys.executable)

    def failing(cmd, log):
        if "install" in cmd and "lava-dl==0.6.0" in cmd:
            raise NeurodeployError("pip install failed (simulated)")

    monkeypatch.setattr(runtime, "_run", failing)
    monkeypatch.setattr(runtime.subprocess, "run", lambda *a, **k: None)   # no real venv
    with pytest.raises(NeurodeployError, match="simulated"):
        runtime.install_runtime(log=lambda *_: None)
    assert not target.exists() and list(target.parent.iterdir()) == []

    monkeypatch.undo()
    monkeypatch.setenv("NEURODEPLOY_PYTHON310", sys.executable if sys.version_info[:2] != (3, 10)
                       else "/nonexistent/python")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(NeurodeployError, match="no Python 3.10 interpreter found"):
        runtime.find_python310()


@pytest.mark.lava
@needs_lava
def test_flatten_only_edges_and_input_straight_into_a_population(tmp_path):
    """Input -> LIF (the image is the current) and LIF -> Flatten -> LIF (an identity edge)."""
    from neurodeploy.backends import lava
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 3, 3])}),
             "lif1": lif((2, 3, 3), beta=0.5),
             "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1),
             "lif2": if_((18,), thr=0.5),
             "output": nir.Output(output_type={"output": np.array([18])})}
    edges = [("input", "lif1"), ("lif1", "flat"), ("flat", "lif2"), ("lif2", "output")]
    path = save(tmp_path, "flatonly", nodes, edges, (2, 3, 3), 5)
    x = np.random.default_rng(2).uniform(0, 1.5, (2, 2, 3, 3)).astype(np.float32)
    ref = reference_run(path, x, 5)
    assert ref.sum() > 0
    np.testing.assert_array_equal(lava.compile(path, precision="float").run(x, 5).outputs, ref)
    fixed = lava.compile(path, precision="fixed").run(x, 5).outputs
    assert (fixed == ref).mean() > 0.95


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_samples_back_to_back_equal_one_sample_runs(tmp_path, precision):
    """Many samples in one Lava network (how validation at scale runs) give every sample
    exactly what a network of its own gives: outputs, per-sample spike counts, counters.
    The graph has paths of different depth into one population (SpikeDelay), a pooled
    input (whose source's spike train streams out for counting) and a host readout."""
    from neurodeploy.backends import lava
    rng = np.random.default_rng(12)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv1": conv(rng, 4, 2, 3, (8, 8), 0.7),
        "lif1": lif((4, 8, 8)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2]), stride=np.array([2]), padding=np.array([0])),
        "conv2": conv(rng, 6, 4, 3, (4, 4), 1.2),                 # fed pooled spikes: lif1 is traced
        "down": conv(rng, 6, 4, 3, (8, 8), 0.6, stride=2, pad=1),  # one step shorter: a SpikeDelay
        "lif2": lif((6, 4, 4)),
        "gap": nir.AvgPool2d(kernel_size=np.array([4]), stride=np.array([4]), padding=np.array([0])),
        "flat": nir.Flatten(input_type={"input": np.array([6, 1, 1])}, start_dim=0, end_dim=-1),
        "output": nir.Output(output_type={"output": np.array([6])}),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "pool"), ("pool", "conv2"), ("conv2", "lif2"),
             ("lif1", "down"), ("down", "lif2"), ("lif2", "gap"), ("gap", "flat"), ("flat", "output")]
    path = save(tmp_path, "mixed", nodes, edges, (2, 8, 8), 5)
    x = np.random.default_rng(11).uniform(0, 1, (3, 2, 8, 8)).astype(np.float32)
    prog = lava.compile(path, precision=precision)
    together = prog.run(x, 5, batch_size=3)
    assert prog.last["chunks"] == 1
    alone = [prog.run(x[i:i + 1], 5, batch_size=1) for i in range(len(x))]
    assert together.outputs.sum() > 0
    np.testing.assert_array_equal(together.outputs, np.concatenate([a.outputs for a in alone], axis=1))
    for name, counts in together.population_spike_counts.items():
        assert counts.sum() > 0, name
        np.testing.assert_array_equal(counts, np.concatenate([a.population_spike_counts[name] for a in alone]))
    merged = lava.merge_counters([a.counters for a in alone]).to_dict()
    mine = together.counters.to_dict()
    for key in ("populations", "projections", "totals_per_sample", "samples"):
        assert mine[key] == merged[key], key
