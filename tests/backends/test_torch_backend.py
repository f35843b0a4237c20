"""The torch reference backend on hand-built NIR graphs: dynamics and counters against
values computed by hand (or by an independent numpy loop), plus snnTorch interop."""
from __future__ import annotations

from dataclasses import dataclass
import warnings

import nir
import numpy as np
import pytest
import torch

from neurodeploy.backends.torch import compile as torch_compile
from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.io import read_graph, write_graph
from neurodeploy.ir.conventions import GraphConventions, with_conventions

DT = 1e-4


# ---------------------------------------------------------------- builders
def lif(decay, gain=1.0, thr=1.0, v_reset=0.0, v_leak=0.0, shape=(2,)):
    """NIR LIF with the discrete decay/gain wanted at dt = 1e-4 (decay 0.5: tau = 2 dt, exact)."""
    tau = DT / (1.0 - np.asarray(decay, np.float64))
    full = lambda v: np.broadcast_to(np.asarray(v, np.float64), shape).copy()
    return nir.LIF(tau=full(tau), r=full(np.asarray(gain) * tau / DT), v_leak=full(v_leak),
                   v_threshold=full(thr), v_reset=full(v_reset))


def affine(w, b=None):
    w = np.asarray(w, np.float32)
    return nir.Affine(weight=w, bias=np.zeros(w.shape[0], np.float32) if b is None else np.asarray(b, np.float32))


def graph(nodes: dict, edges, in_shape, out_shape=None, metadata=True):
    out_shape = in_shape if out_shape is None else out_shape
    all_nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), **nodes,
                 "output": nir.Output(output_type={"output": np.array(out_shape)})}
    g = nir.NIRGraph(nodes=all_nodes, edges=list(edges), type_check=False)
    return g


def chain(names_nodes, in_shape, out_shape=None):
    names = [n for n, _ in names_nodes]
    seq = ["input"] + names + ["output"]
    return graph(dict(names_nodes), zip(seq[:-1], seq[1:]), in_shape, out_shape)


def run(g, x, **kw):
    return torch_compile(g, device="cpu").run(np.asarray(x, np.float32), **kw)


# ---------------------------------------------------------------- LIF dynamics by hand
def test_lif_hand_computed_strict_threshold_reset_and_leak():
    # decay 0.5, gain 1: v = 0.5 v + I (+ 0.5 v_leak); threshold 1 (strict); reset to v_reset
    node = lif(0.5, 1.0, thr=1.0, v_reset=[0.0, 0.25, 0.0], v_leak=[0.0, 0.0, 1.0], shape=(3,))
    g = chain([("fc", affine(np.eye(3))), ("lif", node)], [3])
    currents = np.array([
        # n0: v = 1.0 (equal: no spike), 1.0 (no), 1.5 spike -> 0, 0, 2.0 spike
        # n1: 1.25 spike -> 0.25, 0.125 + 0.9375 = 1.0625 spike -> 0.25, 0.625, 0.3125, 0.15625
        # n2: leak 0.5 per step: 0.5, 0.75, 0.875, 0.9375, then 0.46875 + 0.25 + 0.5 = 1.21875 spike
        [1.0, 1.25, 0.0], [0.5, 0.9375, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.25]],
        np.float32)[:, None, :]                                   # (T=5, N=1, 3)
    expected = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]], np.float32)[:, None, :]
    res = run(g, currents)
    assert res.outputs.shape == (5, 1, 3)
    np.testing.assert_array_equal(res.outputs, expected)
    # with reset to 0 instead of 0.25, neuron 1 would not fire at t=1: the reset value matters
    node0 = lif(0.5, 1.0, thr=1.0, v_reset=0.0, v_leak=[0.0, 0.0, 1.0], shape=(3,))
    res0 = run(chain([("fc", affine(np.eye(3))), ("lif", node0)], [3]), currents)
    assert res0.outputs[1, 0, 1] == 0 and res.outputs[1, 0, 1] == 1


def numpy_lif(currents, decay, gain, thr, v_reset=0.0, leak=0.0):
    """Independent float32 loop of the LIF update."""
    decay, gain, thr, v_reset, leak = (np.float32(v) for v in (decay, gain, thr, v_reset, leak))
    v = np.zeros(currents.shape[1:], np.float32)
    out = []
    for c in currents.astype(np.float32):
        v = decay * v + gain * c + leak
        s = v > thr
        v = np.where(s, v_reset, v).astype(np.float32)
        out.append(s.astype(np.float32))
    return np.stack(out)


def test_lif_matches_numpy_loop_random():
    rng = np.random.default_rng(0)
    w = rng.integers(-4, 5, (5, 4)) / 4.0
    b = rng.integers(0, 3, 5) / 8.0
    g = chain([("fc", affine(w, b)), ("lif", lif(0.75, 1.0, thr=1.0, shape=(5,)))], [4], [5])
    x = (rng.random((8, 3, 4)) < 0.5).astype(np.float32)
    res = run(g, x)
    expected = numpy_lif(x @ w.T.astype(np.float32) + b.astype(np.float32), 0.75, 1.0, 1.0)
    np.testing.assert_array_equal(res.outputs, expected)
    assert 0.05 < expected.mean() < 0.95


def test_li_outputs_membrane():
    node = nir.LI(tau=np.full(2, 2 * DT), r=np.full(2, 2.0), v_leak=np.zeros(2))   # v = 0.5 v + I
    g = chain([("fc", affine(np.eye(2))), ("li", node)], [2])
    x = np.array([[1.0, 4.0], [0.5, 0.0], [0.0, 2.0]], np.float32)[:, None]
    expected = np.array([[1.0, 4.0], [1.0, 2.0], [0.5, 3.0]], np.float32)[:, None]
    np.testing.assert_array_equal(run(g, x).outputs, expected)


def test_if_integrates_without_leak():
    """A graph without metadata: IF adds r * I once per step (Sinabs, snnTorch's importer)."""
    node = nir.IF(r=np.ones(2), v_threshold=np.array([1.0, 2.0]), v_reset=np.array([0.0, 0.5]))
    g = chain([("fc", affine(np.eye(2))), ("if", node)], [2])
    x = np.full((5, 1, 2), 0.5, np.float32)
    # n0: 0.5, 1.0 (equal), 1.5 spike -> 0, 0.5, 1.0;  n1: 0.5, 1, 1.5, 2.0 (equal), 2.5 spike
    expected = np.array([[0, 0], [0, 0], [1, 0], [0, 0], [0, 1]], np.float32)[:, None]
    np.testing.assert_array_equal(run(g, x).outputs, expected)


def test_integrator_i_node():
    node = nir.I(r=np.ones(2))
    g = chain([("i", node)], [2])
    x = np.array([[1.0, 0.5], [2.0, 0.25], [0.0, 0.25]], np.float32)[:, None]
    np.testing.assert_array_equal(run(g, x).outputs, np.cumsum(x, axis=0))


def test_if_of_our_graphs_scales_by_dt():
    """Graphs with this toolkit's metadata keep v += r dt I (integrator "dt"): r = 1/dt is one per step."""
    from neurodeploy.ir.conventions import GraphConventions, with_conventions
    node = nir.I(r=np.full(2, 1 / DT))
    g = with_conventions(chain([("i", node)], [2]), GraphConventions(dt=DT))
    x = np.array([[1.0, 0.5], [2.0, 0.25], [0.0, 0.25]], np.float32)[:, None]
    np.testing.assert_allclose(run(g, x).outputs, np.cumsum(x, axis=0), rtol=1e-6)


def cuba(alpha, beta, thr, w_in=None, shape=(2,)):
    """snnTorch's export convention: tau_syn = dt/(1-alpha), tau_mem = dt/(1-beta), r = tau_mem/dt,
    w_in = tau_syn/dt, so that NIR's ODE gives i = alpha i + I, v = beta v + i."""
    tau_syn = DT / (1 - np.full(shape, alpha))
    tau_mem = DT / (1 - np.full(shape, beta))
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / DT, v_leak=np.zeros(shape),
                       v_threshold=np.full(shape, thr), v_reset=np.zeros(shape),
                       w_in=tau_syn / DT if w_in is None else np.full(shape, w_in))


def test_cubalif_without_synaptic_memory():
    # tau_syn = dt: the synaptic stage is i = w_in I under any reading of NIR's ODE
    node = cuba(0.0, 0.5, 1.0, w_in=2.0)
    g = chain([("fc", affine(np.eye(2))), ("cuba", node)], [2])
    x = np.array([[0.5, 0.25], [0.25, 0.5], [0.25, 0.0]], np.float32)[:, None]
    # i = 2 I; v = 0.5 v + i: n0 1.0 (no), 1.0 (no), 1.0 (no); n1 0.5, 1.25 spike, 0
    expected = np.array([[0, 0], [0, 1], [0, 0]], np.float32)[:, None]
    np.testing.assert_array_equal(run(g, x).outputs, expected)


CUBA_BUG = ("BUG: torch backend (and dynamics docstring) steps CubaLIF's current as i = (1-dt/tau_syn) i + w_in I; "
            "NIR's ODE tau_syn di/dt = -i + w_in I gives i = (1-dt/tau_syn) i + (dt/tau_syn) w_in I, which is "
            "what snnTorch's export (w_in = tau_syn/dt) relies on; the input is 1/(1-alpha) times too large")


def test_cubalif_follows_nir_ode():
    node = cuba(0.5, 0.5, 1.0)         # w_in = tau_syn/dt = 2: i = 0.5 i + I, v = 0.5 v + i
    g = chain([("fc", affine(np.eye(2))), ("cuba", node)], [2])
    x = np.array([[0.5, 0.75], [0.0, 0.0], [0.0, 0.0]], np.float32)[:, None]
    # n0: i .5 .25 .125, v .5 .5 .375 -> no spike; n1: i .75 .375, v .75, .75 -> no spike ...
    # n1 at t=2: i .1875, v .5625 -> never
    expected = np.zeros((3, 1, 2), np.float32)
    np.testing.assert_array_equal(run(g, x).outputs, expected)


def test_delay_shifts_by_whole_steps():
    g = chain([("d", nir.Delay(delay=np.full(2, 2 * DT)))], [2])
    x = np.arange(1, 11, dtype=np.float32).reshape(5, 1, 2)
    out = run(g, x).outputs
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(out[2:], x[:3])


def test_delay_not_a_whole_number_of_steps():
    g = chain([("d", nir.Delay(delay=np.full(2, 1.5 * DT)))], [2])
    with pytest.raises(NeurodeployError, match="d"):
        torch_compile(g, device="cpu")


def test_threshold_node_is_strict():
    g = chain([("th", nir.Threshold(threshold=np.array([0.5, 1.0])))], [2])
    x = np.array([[0.5, 0.7], [0.6, 1.5], [0.4, 1.0]], np.float32)
    out = run(g, x, timesteps=2).outputs
    np.testing.assert_array_equal(out[0], [[0, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(out[1], out[0])


def test_nested_graph_equals_flat():
    rng = np.random.default_rng(1)
    w = rng.integers(-2, 5, (3, 4)) / 2.0
    flat = chain([("fc", affine(w)), ("lif", lif(0.5, shape=(3,)))], [4], [3])
    inner = chain([("fc", affine(w)), ("lif", lif(0.5, shape=(3,)))], [4], [3])
    outer = graph({"sub": inner}, [("input", "sub"), ("sub", "output")], [4], [3])
    x = (rng.random((6, 4, 4)) < 0.5).astype(np.float32)
    a, b = run(flat, x), run(outer, x)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.outputs.sum() > 0
    assert "sub.lif" in b.counters.populations
    assert b.counters.populations["sub.lif"].spikes == a.counters.populations["lif"].spikes


def test_recurrent_graph_one_step_delay_on_back_edge():
    rng = np.random.default_rng(2)
    w_in = (rng.integers(0, 5, (3, 2)) / 4.0).astype(np.float32)
    w_rec = (rng.integers(-4, 5, (3, 3)) / 4.0).astype(np.float32)
    nodes = {"fc": affine(w_in), "lif": lif(0.5, shape=(3,)), "rec": affine(w_rec)}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    g = graph(nodes, edges, [2], [3])
    x = (rng.random((8, 3, 2)) < 0.6).astype(np.float32)
    res = run(g, x)
    # hand loop: the back edge carries the previous step's projection of the spikes (zero at t=0)
    v = np.zeros((3, 3), np.float32)
    s = np.zeros((3, 3), np.float32)
    expected = []
    for t in range(8):
        current = x[t] @ w_in.T + s @ w_rec.T
        v = np.float32(0.5) * v + current
        s = (v > 1.0).astype(np.float32)
        v = np.where(s > 0, np.float32(0), v)
        expected.append(s)
    expected = np.stack(expected)
    np.testing.assert_array_equal(res.outputs, expected)
    assert 0.05 < expected.mean() < 0.95
    # the recurrence matters: without the back edge the output differs
    ff = graph({"fc": affine(w_in), "lif": lif(0.5, shape=(3,))},
               [("input", "fc"), ("fc", "lif"), ("lif", "output")], [2], [3])
    assert not np.array_equal(run(ff, x).outputs, expected)
    assert res.counters.populations["lif"].spikes == expected.sum()


def test_recurrent_graph_static_input_equals_sequence():
    w_in = np.array([[1.0, 0.25], [0.5, 0.5]], np.float32)
    w_rec = np.array([[0.0, -0.5], [0.75, 0.0]], np.float32)
    nodes = {"fc": affine(w_in), "lif": lif(0.5, shape=(2,)), "rec": affine(w_rec)}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    g = graph(nodes, edges, [2], [2])
    x = np.array([[0.75, 0.5], [1.0, 1.0], [0.0, 0.5]], np.float32)
    a = run(g, x, timesteps=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # a read-only input (a broadcast view) runs without torch's warning
        b = run(g, np.broadcast_to(x, (6, 3, 2)))
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.outputs.sum() > 0
    assert a.counters.projections["fc"].effective_ops == b.counters.projections["fc"].effective_ops == 5 * 2 * 6


def test_fan_in_of_static_and_time_varying_paths():
    # input -> a1 -> lif1 -> a2 -> lif2  and  input -> a3 -> lif2 (a static current joins spikes)
    w1 = np.array([[1.0, 0.5], [0.25, 1.0]], np.float32)
    w2 = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    w3 = np.array([[0.25, 0.0], [0.0, 0.125]], np.float32)
    nodes = {"a1": affine(w1), "lif1": lif(0.5, shape=(2,)), "a2": affine(w2), "a3": affine(w3),
             "lif2": lif(0.5, shape=(2,))}
    edges = [("input", "a1"), ("a1", "lif1"), ("lif1", "a2"), ("a2", "lif2"), ("input", "a3"),
             ("a3", "lif2"), ("lif2", "output")]
    g = graph(nodes, edges, [2], [2])
    x = np.array([[0.75, 0.5], [1.5, 2.0]], np.float32)
    res = run(g, x, timesteps=5)
    s1 = numpy_lif(np.broadcast_to(x @ w1.T, (5, 2, 2)), 0.5, 1.0, 1.0)
    expected = numpy_lif(s1 @ w2.T + x @ w3.T, 0.5, 1.0, 1.0)
    np.testing.assert_array_equal(res.outputs, expected)
    assert 0 < expected.mean() < 1


def test_static_input_equals_repeated_sequence():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    g = with_conventions(chain([("fc", affine(w)), ("lif", lif(0.75, shape=(3,)))], [4], [3]),
                         GraphConventions(timesteps=5))
    x = rng.random((4, 4)).astype(np.float32) * 2
    static = run(g, x)                                   # T from the metadata
    assert static.outputs.shape == (5, 4, 3) and static.counters.timesteps == 5
    seq = run(g, np.broadcast_to(x, (5, 4, 4)))
    np.testing.assert_array_equal(static.outputs, seq.outputs)
    assert static.outputs.sum() > 0
    assert run(g, x, timesteps=3).outputs.shape == (3, 4, 3)
    c1, c2 = static.counters.projections["fc"], seq.counters.projections["fc"]
    assert c1.effective_ops == c2.effective_ops and c1.dense_ops == c2.dense_ops
    assert not c1.binary_input


def test_batches_do_not_change_results_or_counters():
    rng = np.random.default_rng(4)
    g = chain([("fc", affine(rng.integers(-2, 4, (3, 4)) / 2.0)), ("lif", lif(0.5, shape=(3,)))], [4], [3])
    x = (rng.random((6, 5, 4)) < 0.5).astype(np.float32)
    a, b = run(g, x, batch_size=5), run(g, x, batch_size=2)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.counters.to_dict()["totals_per_sample"] == b.counters.to_dict()["totals_per_sample"]
    np.testing.assert_array_equal(a.population_spike_counts["lif"], b.population_spike_counts["lif"])


# ---------------------------------------------------------------- errors
def test_wrong_input_shape():
    g = chain([("fc", affine(np.eye(2))), ("lif", lif(0.5))], [2])
    prog = torch_compile(g, device="cpu")
    for bad in (np.zeros((3, 5)), np.zeros((4, 3, 3)), np.zeros((2,))):
        with pytest.raises(NeurodeployError, match="does not fit"):
            prog.run(bad)


def test_sequence_length_disagrees_with_timesteps():
    g = chain([("fc", affine(np.eye(2))), ("lif", lif(0.5))], [2])
    with pytest.raises(NeurodeployError, match="timesteps"):
        run(g, np.zeros((4, 1, 2)), timesteps=3)


def test_nan_input_refused():
    g = chain([("fc", affine(np.eye(2))), ("lif", lif(0.5))], [2])
    with pytest.raises(NeurodeployError, match="NaN"):
        run(g, np.array([[np.nan, 0.0]]))


def test_nan_weight_names_the_node():
    w = np.eye(2, dtype=np.float32)
    w[0, 1] = np.nan
    g = chain([("badfc", affine(w)), ("lif", lif(0.5))], [2])
    with pytest.raises(NeurodeployError, match="badfc"):
        torch_compile(g, device="cpu")


def test_nan_neuron_parameter_names_the_node():
    node = lif(0.5)
    node.v_threshold[1] = np.nan
    g = chain([("fc", affine(np.eye(2))), ("badlif", node)], [2])
    with pytest.raises(NeurodeployError, match="badlif"):
        torch_compile(g, device="cpu")


@dataclass(eq=False)
class Mystery(nir.NIRNode):
    k: np.ndarray

    def __post_init__(self):
        self.input_type = {"input": np.array([2])}
        self.output_type = {"output": np.array([2])}


def test_unsupported_node_names_the_node():
    g = chain([("weird", Mystery(k=np.ones(2)))], [2])
    with pytest.raises(NeurodeployError) as e:
        torch_compile(g, device="cpu")
    assert "weird" in str(e.value) and "Mystery" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(NeurodeployError, match="CUDA"):
        torch_compile(chain([("fc", affine(np.eye(2)))], [2]), device="cuda")


def test_edge_to_missing_node():
    g = chain([("fc", affine(np.eye(2)))], [2])
    g.edges.append(("fc", "ghost"))
    with pytest.raises(NeurodeployError, match="ghost"):
        torch_compile(g, device="cpu")


# ---------------------------------------------------------------- counters by hand
KERNEL = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [4.0, 0.0, 5.0]], np.float32)


def conv_graph():
    conv = nir.Conv2d(input_shape=(4, 4), weight=KERNEL[None, None], stride=(1, 1), padding=(1, 1),
                      dilation=(1, 1), groups=1, bias=np.zeros(1, np.float32))
    return chain([("conv", conv), ("lif", lif(0.5, shape=(1, 4, 4)))], [1, 4, 4])


def brute_fanout(kernel, h, w, pad):
    """Targets with a nonzero weight for each input pixel, by enumerating the (output, tap) pairs."""
    k = kernel.shape[0]
    fan = np.zeros((h, w))
    for o in range(h + 2 * pad - k + 1):
        for p in range(w + 2 * pad - k + 1):
            for ki in range(k):
                for kj in range(k):
                    i, j = o - pad + ki, p - pad + kj
                    if 0 <= i < h and 0 <= j < w and kernel[ki, kj] != 0:
                        fan[i, j] += 1
    return fan


def test_conv_counters_by_hand_binary_sequence():
    fan = brute_fanout(KERNEL, 4, 4, 1)
    # corner (0,0): taps (1,1)=3 and (0,0)=1 -> 2; interior: all 5 nonzero taps; edge (0,2): 3
    assert fan[0, 0] == 2 and fan[1, 1] == 5 and fan[3, 3] == 2 and fan[0, 2] == 3 and fan.sum() == 52
    x = np.zeros((3, 2, 1, 4, 4), np.float32)             # T=3, N=2
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 1, 1] = 1               # 2 + 5
    x[2, 0, 0, 3, 3] = x[2, 0, 0, 0, 2] = 1               # 2 + 3
    x[1, 1] = 1                                           # every pixel: 52
    res = run(conv_graph(), x)
    c = res.counters.projections["conv"]
    assert c.kind == "Conv2d" and c.binary_input
    assert c.effective_ops == 7 + 5 + 52 == 64
    assert c.effective_acs == 64 and c.effective_macs == 0
    assert c.dense_ops == 52 * 3 * 2                      # 16 outputs x 5 taps minus the 28 in the padding
    assert c.parameters == 5
    totals = res.counters.totals(per_sample=False)
    assert totals["effective_acs"] == 64 and totals["dense_ops"] == 312
    assert res.counters.totals()["effective_acs"] == 32


def test_conv_counters_static_real_input_counted_every_step():
    x = np.zeros((2, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = 0.5
    x[0, 0, 1, 1] = 0.25
    x[1, 0, 0, 2] = 3.0
    res = run(conv_graph(), x, timesteps=3)
    c = res.counters.projections["conv"]
    assert not c.binary_input
    assert c.effective_ops == (2 + 5 + 3) * 3             # a static input is presented T = 3 times
    assert c.effective_macs == 30 and c.effective_acs == 0
    assert c.dense_ops == 52 * 2 * 3


def test_sumpool_values_and_counters():
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    g = chain([("pool", pool)], [1, 4, 4], [1, 2, 2])
    x = np.zeros((2, 1, 1, 4, 4), np.float32)            # T=2, N=1
    x[0, 0, 0, 0, 0] = x[0, 0, 0, 1, 1] = x[0, 0, 0, 3, 0] = 1
    x[1, 0, 0, 2:, 2:] = 1
    res = run(g, x)
    np.testing.assert_array_equal(res.outputs[0, 0, 0], [[2, 0], [1, 0]])
    np.testing.assert_array_equal(res.outputs[1, 0, 0], [[0, 0], [0, 4]])
    c = res.counters.projections["pool"]
    assert c.effective_ops == 3 + 4 and c.dense_ops == 16 * 2 and c.binary_input


def test_avgpool_padded_values_and_counters():
    pool = nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([1, 1]), padding=np.array([1, 1]))
    g = chain([("pool", pool)], [1, 4, 4], [1, 4, 4])
    x = np.zeros((1, 1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0, 0] = 1          # corner: in 4 windows
    x[0, 0, 0, 0, 2] = 1          # edge: 6 windows
    x[0, 0, 0, 2, 1] = 1          # interior: 9 windows
    res = run(g, x)
    c = res.counters.projections["pool"]
    assert c.effective_ops == 4 + 6 + 9
    assert c.dense_ops == 100     # coverage per axis (2, 3, 3, 2): 10 x 10
    out = res.outputs[0, 0, 0]
    assert out[0, 0] == np.float32(1 / 9) and out[1, 1] == np.float32(3 / 9)   # zero padding counted
    np.testing.assert_allclose(out.sum() * 9, 19, rtol=1e-6)


def test_fan_in_of_two_affines_into_one_lif():
    w1 = [[1.0, 0.0, 0.5], [0.0, 0.0, 2.0]]            # column nonzeros 1, 0, 2
    w2 = [[0.25, 0.5, 0.0], [0.0, 1.0, 0.0]]           # column nonzeros 1, 2, 0
    nodes = {"a1": affine(w1), "a2": affine(w2), "lif": lif(0.5, shape=(2,))}
    edges = [("input", "a1"), ("input", "a2"), ("a1", "lif"), ("a2", "lif"), ("lif", "output")]
    g = graph(nodes, edges, [3], [2])
    x = np.array([[1, 1, 0], [0, 1, 1]], np.float32)[:, None]       # T=2, N=1
    res = run(g, x)
    # t0: I = [1, 0] + [0.75, 1] = [1.75, 1] -> s [1, 0], v [0, 1]
    # t1: I = [0.5, 2] + [0.5, 1] = [1, 3]; v = [1, 3.5] -> s [0, 1]
    np.testing.assert_array_equal(res.outputs[:, 0], [[1, 0], [0, 1]])
    p = res.counters.projections
    assert p["a1"].effective_ops == 1 + 2 and p["a2"].effective_ops == 3 + 2
    assert p["a1"].dense_ops == 3 * 2 and p["a2"].dense_ops == 3 * 2
    pop = res.counters.populations["lif"]
    assert pop.neurons == 2 and pop.neuron_updates == 4 and pop.spikes == 2
    assert pop.input_events == 4


def test_affine_macs_for_real_input_acs_for_spikes():
    w = [[1.0, 0.0, 0.5], [0.0, 0.0, 2.0]]
    g = chain([("fc", affine(w)), ("lif", lif(0.5, shape=(2,)))], [3], [2])
    real = run(g, np.array([[0.5, 0.0, 1.5]], np.float32), timesteps=4).counters.projections["fc"]
    assert not real.binary_input and real.effective_macs == (1 + 2) * 4 and real.effective_acs == 0
    spikes = run(g, np.array([[[1.0, 1.0, 0.0]]] * 4, np.float32)).counters.projections["fc"]
    assert spikes.binary_input and spikes.effective_acs == 1 * 4 and spikes.effective_macs == 0
    assert spikes.dense_ops == real.dense_ops == 3 * 4
    assert spikes.parameters == 3


def test_population_counters():
    rng = np.random.default_rng(5)
    g = chain([("fc", affine(rng.integers(-1, 4, (6, 3)) / 2.0)), ("lif", lif(0.5, shape=(6,)))], [3], [6])
    x = rng.random((3, 3)).astype(np.float32) * 2                  # N = 3 static
    res = run(g, x, timesteps=4)
    pop = res.counters.populations["lif"]
    assert pop.kind == "LIF" and pop.neurons == 6
    assert pop.neuron_updates == 6 * 4 * 3
    assert pop.spikes == res.outputs.sum() > 0
    np.testing.assert_array_equal(res.population_spike_counts["lif"], res.outputs.sum(axis=(0, 2)))
    assert pop.firing_rate() == pytest.approx(res.outputs.mean())
    assert res.counters.totals()["spikes"] == pytest.approx(res.outputs.sum() / 3)


def test_counters_dict_roundtrip():
    from neurodeploy.ir.counters import RunCounters
    res = run(conv_graph(), np.ones((2, 1, 4, 4), np.float32), timesteps=2)
    d = res.counters.to_dict()
    back = RunCounters.from_dict(d)
    assert back.to_dict() == d


# ---------------------------------------------------------------- through a file
def test_runs_the_same_after_write_and_read(tmp_path):
    rng = np.random.default_rng(6)
    g = chain([("fc", affine(rng.integers(-2, 5, (3, 4)) / 2.0)), ("lif", lif(0.5, shape=(3,)))], [4], [3])
    x = (rng.random((5, 2, 4)) < 0.5).astype(np.float32)
    back = read_graph(write_graph(tmp_path / "g.nir", g))
    np.testing.assert_array_equal(run(g, x).outputs, run(back, x).outputs)


# ---------------------------------------------------------------- snnTorch interop
snntorch = pytest.importorskip("snntorch")


def _snntorch_net(kind):
    import snntorch as snn
    torch.manual_seed(0)
    fc = torch.nn.Linear(4, 3)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.5, -0.25, 0.75], [0.5, 1.0, 0.25, -0.5], [-0.25, 0.5, 1.0, 1.0]]))
        fc.bias.copy_(torch.tensor([0.125, 0.0, 0.25]))
    kw = dict(threshold=torch.full((3,), 1.0), reset_mechanism="zero", reset_delay=False, init_hidden=True)
    if kind == "leaky":
        neuron = snn.Leaky(beta=torch.full((3,), 0.9), **kw)
    else:
        neuron = snn.Synaptic(alpha=torch.full((3,), 0.5), beta=torch.full((3,), 0.9), **kw)
    return torch.nn.Sequential(fc, neuron)


def _snntorch_compare(kind, tmp_path):
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    net = _snntorch_net(kind)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 3, 4, generator=g)
    utils.reset(net)
    with torch.no_grad():
        ref = torch.stack([net(x[t]) for t in range(len(x))]).numpy()
    graph_ = export_to_nir(net, x[0], ignore_dims=[0])
    back = read_graph(write_graph(tmp_path / "snntorch.nir", graph_))
    out = run(back, x.numpy()).outputs
    return ref, out


def test_snntorch_leaky_export_runs_exactly(tmp_path):
    ref, out = _snntorch_compare("leaky", tmp_path)
    assert 0.05 < ref.mean() < 0.95
    np.testing.assert_array_equal(out, ref)


def test_snntorch_synaptic_export_runs_exactly(tmp_path):
    ref, out = _snntorch_compare("synaptic", tmp_path)
    assert 0.05 < ref.mean() < 0.95
    np.testing.assert_array_equal(out, ref)


def test_snntorch_recurrent_leaky_export_runs_exactly(tmp_path):
    import snntorch as snn
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    fc = torch.nn.Linear(4, 3)
    rl = snn.RLeaky(beta=torch.full((3,), 0.9), linear_features=3, threshold=torch.full((3,), 1.0),
                    reset_mechanism="zero", reset_delay=False, init_hidden=True)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.5, -0.25, 0.75], [0.5, 1.0, 0.25, -0.5], [-0.25, 0.5, 1.0, 1.0]]))
        fc.bias.copy_(torch.tensor([0.125, 0.0, 0.25]))
        rl.recurrent.weight.copy_(torch.tensor([[0.0, -0.5, 0.25], [0.5, 0.0, -0.25], [-0.5, 0.25, 0.0]]))
        rl.recurrent.bias.zero_()
    net = torch.nn.Sequential(fc, rl)
    x = torch.rand(10, 3, 4, generator=torch.Generator().manual_seed(1))
    utils.reset(net)
    with torch.no_grad():
        ref = torch.stack([net(x[t]) for t in range(10)]).numpy()
    g = read_graph(write_graph(tmp_path / "rleaky.nir", export_to_nir(net, x[0], ignore_dims=[0])))
    prog = torch_compile(g, device="cpu")
    assert prog.back_edges                               # it really is run step by step
    out = prog.run(x.numpy()).outputs
    assert 0.05 < ref.mean() < 0.95
    np.testing.assert_array_equal(out, ref)


def test_dt_from_metadata_and_override():
    # tau = 4e-4: decay 0.5 at dt = 2e-4 (from the metadata), 0.75 at the default dt = 1e-4
    node = nir.LI(tau=np.full(1, 4e-4), r=np.full(1, 2.0), v_leak=np.zeros(1))
    g = chain([("li", node)], [1])
    x = np.array([[[1.0]], [[0.0]], [[0.0]]], np.float32)
    # default dt 1e-4: gain = r dt/tau = 0.5, decay 0.75
    np.testing.assert_array_equal(run(g, x).outputs.ravel(), [0.5, 0.375, 0.28125])
    with_conventions(g, GraphConventions(dt=2e-4))
    np.testing.assert_array_equal(run(g, x).outputs.ravel(), [1.0, 0.5, 0.25])
    out = torch_compile(g, device="cpu", dt=1e-4).run(x).outputs
    np.testing.assert_array_equal(out.ravel(), [0.5, 0.375, 0.28125])


# ---------------------------------------------------------------- CPU fast paths
def _conv(w, b, stride=1, padding=0, groups=1, in_hw=(6, 6)):
    w = np.asarray(w, np.float32)
    return nir.Conv2d(input_shape=in_hw, weight=w, stride=stride, padding=padding, dilation=1, groups=groups,
                      bias=np.asarray(b, np.float32))


def test_spike_fed_convs_run_channels_last_and_match_plain_nchw(monkeypatch):
    """A spike-fed 1x1 conv (one matmul), a depthwise 3x3 conv and two concatenation
    branches (live rows written into one tensor) give the spikes of a plain NCHW
    evaluation, bit for bit, with dyadic weights (the exporter's exact grid)."""
    rng = np.random.default_rng(3)
    dyadic = lambda *s: (rng.integers(-64, 65, size=s) / 64.0).astype(np.float32)
    c, hw = 4, (6, 6)
    w_in, w_1x1, w_dw = dyadic(c, 1, 3, 3), dyadic(c, c, 1, 1), dyadic(c, 1, 3, 3)
    w_a = np.zeros((2 * c, c, 1, 1), np.float32); w_a[:c] = dyadic(c, c, 1, 1)       # writes rows 0..c-1
    w_b = np.zeros((2 * c, c, 3, 3), np.float32); w_b[c:] = dyadic(c, c, 3, 3)       # writes rows c..2c-1
    b = lambda n: (rng.integers(-8, 9, size=n) / 16.0).astype(np.float32)
    b_a, b_b = np.r_[b(c), np.zeros(c, np.float32)], np.r_[np.zeros(c, np.float32), b(c)]
    nodes = {"conv_in": _conv(w_in, b(c), padding=1, in_hw=(6, 6)), "l0": lif(0.5, shape=(c, *hw)),
             "pw": _conv(w_1x1, b(c)), "l1": lif(0.5, shape=(c, *hw)),
             "dw": _conv(w_dw, b(c), padding=1, groups=c), "l2": lif(0.5, shape=(c, *hw)),
             "cat_a": _conv(w_a, b_a), "cat_b": _conv(w_b, b_b, padding=1), "l3": lif(0.5, shape=(2 * c, *hw))}
    edges = [("input", "conv_in"), ("conv_in", "l0"), ("l0", "pw"), ("pw", "l1"), ("l1", "dw"), ("dw", "l2"),
             ("l2", "cat_a"), ("l2", "cat_b"), ("cat_a", "l3"), ("cat_b", "l3"), ("l3", "output")]
    g = graph(nodes, edges, [1, *hw], [2 * c, *hw])
    program = torch_compile(g, device="cpu")
    assert program.ops["pw"].layout == "matmul" and program.ops["dw"].layout == "channels_last"
    assert program.ops["conv_in"].layout == "nchw"        # real-valued input: the model's own kernel
    assert program.ops["cat_a"].rows is not None
    x = rng.random((5, 1, *hw)).astype(np.float32)
    T = 6
    res = program.run(x, timesteps=T)

    def step(v, current):
        v = 0.5 * v + current
        s = (v > 1.0).float()
        return s, v * (1 - s)

    conv = lambda x, w, bias, **kw: torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(bias), **kw)
    i0 = conv(torch.from_numpy(x), w_in, nodes["conv_in"].bias, padding=1)
    v = [torch.zeros(5, c, *hw), torch.zeros(5, c, *hw), torch.zeros(5, c, *hw), torch.zeros(5, 2 * c, *hw)]
    outs = []
    for _ in range(T):
        s0, v[0] = step(v[0], i0)
        s1, v[1] = step(v[1], conv(s0, w_1x1, nodes["pw"].bias))
        s2, v[2] = step(v[2], conv(s1, w_dw, nodes["dw"].bias, padding=1, groups=c))
        s3, v[3] = step(v[3], conv(s2, w_a, b_a) + conv(s2, w_b, b_b, padding=1))
        outs.append(s3)
    expected = torch.stack(outs).numpy()
    assert expected.sum() > 0 and (1 - expected).sum() > 0      # spikes and silences both happen
    np.testing.assert_array_equal(res.outputs, expected)
    assert res.counters.populations["l3"].spikes == expected.sum()
    # l3's current is a concatenation: the compiled loop runs each branch into its channel
    # slice; the torch ops (no numba) build the concatenated current. Same counters.
    from neurodeploy.kernels import lif_cpu
    calls = []
    monkeypatch.setattr(program.ops["l3"], "scan_concatenation",
                        lambda *a, f=program.ops["l3"].scan_concatenation: calls.append(1) or f(*a))
    res = program.run(x, timesteps=T)
    monkeypatch.setattr(lif_cpu, "AVAILABLE", False)
    plain = torch_compile(g, device="cpu").run(x, timesteps=T)
    assert calls == [1]
    np.testing.assert_array_equal(plain.outputs, expected)
    assert res.counters.to_dict() == plain.counters.to_dict()


@pytest.mark.parametrize("static_input", [True, False])
def test_compiled_lif_loop_equals_torch_ops_and_counts_the_same(monkeypatch, static_input):
    """The compiled CPU loop (neurodeploy/lif_cpu.py) against the torch ops it replaces, on
    a conv -> LIF (per-neuron decay, threshold, reset and leak; channels-last) -> conv ->
    LIF (uniform) graph, an odd batch split over two threads: identical spikes and counters."""
    from neurodeploy.kernels import lif_cpu
    rng = np.random.default_rng(11)
    c, hw = 3, (5, 5)
    shape = (c, *hw)
    first = lif(rng.choice([0.5, 0.75, 0.875], size=shape), 1.0, thr=rng.choice([0.5, 1.0], size=shape),
                v_reset=rng.choice([0.0, 0.125], size=shape), v_leak=rng.choice([0.0, 0.25], size=shape), shape=shape)
    w1 = (rng.integers(-8, 9, size=(c, 1, 3, 3)) / 8.0).astype(np.float32)
    w2 = (rng.integers(-8, 9, size=(c, c, 3, 3)) / 8.0).astype(np.float32)
    nodes = {"conv1": _conv(w1, np.zeros(c), padding=1, in_hw=hw), "lif1": first,
             "conv2": _conv(w2, np.full(c, 0.25), padding=1, in_hw=hw), "lif2": lif(0.9, shape=shape)}
    g = chain(list(nodes.items()), [1, *hw], list(shape))
    T, n = 7, 9
    # dyadic inputs, so that membranes land exactly on a threshold (strict ">" is tested)
    x = (rng.integers(0, 9, size=(n, 1, *hw) if static_input else (T, n, 1, *hw)) / 8.0).astype(np.float32)
    calls = []
    scan = lif_cpu.lif_scan
    monkeypatch.setattr(lif_cpu, "lif_scan", lambda *a, **kw: calls.append(a[5]) or scan(*a, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled = torch_compile(g, device="cpu").run(x, timesteps=T, batch_size=n)
    finally:
        torch.set_num_threads(threads)
    assert calls == [2, 2]                     # both populations ran in the compiled loop, on two threads
    monkeypatch.setattr(lif_cpu, "AVAILABLE", False)
    plain = torch_compile(g, device="cpu").run(x, timesteps=T, batch_size=n)
    assert 0 < compiled.outputs.mean() < 1
    np.testing.assert_array_equal(compiled.outputs, plain.outputs)
    assert compiled.counters.to_dict() == plain.counters.to_dict()
    for name in ("lif1", "lif2"):
        np.testing.assert_array_equal(compiled.population_spike_counts[name], plain.population_spike_counts[name])


def _pool(kind, k, stride=None, padding=0):
    stride = k if stride is None else stride
    return kind(kernel_size=np.array([k, k]), stride=np.array([stride, stride]), padding=np.array([padding, padding]))


def test_population_pools_its_own_spikes_with_the_same_outputs_and_counters(monkeypatch):
    """A LIF whose only consumer is a k x k pooling (stride k, k*k a power of two) pools its
    spikes inside the compiled loop and never writes them out. Against the torch ops
    (which run the population and the pooling apart): identical outputs, population
    spike counts and counters, for average and sum pooling, a concatenation's population
    and a static input; the k=3 pooling and the population with two consumers are not fused."""
    from neurodeploy.kernels import lif_cpu
    rng = np.random.default_rng(5)
    c, hw = 4, (8, 8)
    w = lambda *s: (rng.integers(-8, 9, size=s) / 8.0).astype(np.float32)
    conv = lambda wt, b, pad, in_hw: _conv(wt, np.full(wt.shape[0], b, np.float32), padding=pad, in_hw=in_hw)
    nodes = {"conv0": conv(w(c, 1, 3, 3), 0.25, 1, hw), "lif0": lif(0.75, shape=(c, *hw)),
             "avg": _pool(nir.AvgPool2d, 2),                                          # fused: (4, 4, 4)
             "cat_a": conv(np.concatenate([w(c, c, 1, 1), np.zeros((c, c, 1, 1), np.float32)]), 0.5, 0, (4, 4)),
             "cat_b": conv(np.concatenate([np.zeros((c, c, 3, 3), np.float32), w(c, c, 3, 3)]), 0.5, 1, (4, 4)),
             "lif1": lif(0.5, shape=(2 * c, 4, 4)),
             "sum": _pool(nir.SumPool2d, 4),                                          # fused: (2c, 1, 1)
             "fc": nir.Affine(weight=w(2 * c, 2 * c), bias=np.zeros(2 * c, np.float32)),
             "lif2": lif(0.5, shape=(2 * c,)), "side": lif(0.5, shape=(2 * c,)),
             "fc2": nir.Affine(weight=w(3, 2 * c), bias=np.zeros(3, np.float32)),
             "odd_in": conv(w(c, 1, 3, 3), 0.0, 1, hw), "lif_odd": lif(0.75, shape=(c, *hw)),
             "avg3": _pool(nir.AvgPool2d, 3, stride=3, padding=1),                   # 3x3: not fused
             "fc3": nir.Affine(weight=w(3, c * 9), bias=np.zeros(3, np.float32)), "flat": nir.Flatten(
                 start_dim=0, end_dim=-1, input_type={"input": np.array([c, 3, 3])}),
             "avg2b": _pool(nir.AvgPool2d, 2),                                       # lif_odd has two readers
             "flat2": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([c, 4, 4])}),
             "fc4": nir.Affine(weight=w(3, c * 16), bias=np.zeros(3, np.float32)),
             "lif3": lif(0.5, shape=(3,))}
    edges = [("input", "conv0"), ("conv0", "lif0"), ("lif0", "avg"), ("avg", "cat_a"), ("avg", "cat_b"),
             ("cat_a", "lif1"), ("cat_b", "lif1"), ("lif1", "sum"), ("sum", "fc_flat"), ("fc_flat", "fc"),
             ("fc", "lif2"), ("fc", "side"), ("lif2", "fc2"), ("side", "fc2"), ("fc2", "lif3"),
             ("input", "odd_in"), ("odd_in", "lif_odd"), ("lif_odd", "avg3"), ("avg3", "flat"), ("flat", "fc3"),
             ("fc3", "lif3"), ("lif_odd", "avg2b"), ("avg2b", "flat2"), ("flat2", "fc4"), ("fc4", "lif3"),
             ("lif3", "output")]
    nodes["fc_flat"] = nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([2 * c, 1, 1])})
    g = graph(nodes, edges, [1, *hw], [3])
    T, n = 6, 7
    for static in (True, False):
        x = (rng.integers(0, 9, size=(n, 1, *hw) if static else (T, n, 1, *hw)) / 8.0).astype(np.float32)
        program = torch_compile(g, device="cpu")
        assert {p: q for p, (q, _, _) in program.fused_pools.items()} == {"lif0": "avg", "lif1": "sum"}
        torch_pooled = []
        for q in ("avg", "sum", "avg3", "avg2b"):
            op = program.ops[q]
            monkeypatch.setattr(op, "output", lambda x, q=q, f=op.output: torch_pooled.append(q) or f(x))
        fused = program.run(x, timesteps=T, batch_size=n)
        assert sorted(torch_pooled) == ["avg2b", "avg3"]      # the other two ran inside their population's loop
        with monkeypatch.context() as m:
            m.setattr(lif_cpu, "AVAILABLE", False)
            plain = torch_compile(g, device="cpu").run(x, timesteps=T, batch_size=n)
        assert 0 < fused.outputs.mean() < 1
        np.testing.assert_array_equal(fused.outputs, plain.outputs)
        assert fused.counters.to_dict() == plain.counters.to_dict()
        assert fused.counters.projections["cat_a"].binary_input is False     # pooled: graded values
        for name in plain.population_spike_counts:
            np.testing.assert_array_equal(fused.population_spike_counts[name], plain.population_spike_counts[name])


def test_summed_spike_trains_are_counted_as_neurobench_counts_them():
    """Two populations feeding one projection (a spike-element-wise residual): its input
    is their sum, 2 where both spike. NeuroBench counts such an input by its nonzero
    values, as MACs (not every value is 0 or 1); it is not a spike train."""
    w = np.array([[1.0, 0.5], [0.25, 1.0], [1.0, 1.0]], np.float32)
    nodes = {"fa": affine(w), "pa": lif(0.5, shape=(3,)), "fb": affine(w), "pb": lif(0.5, shape=(3,)),
             "sum": affine(np.ones((2, 3))), "out": lif(0.5, shape=(2,))}
    edges = [("input", "fa"), ("input", "fb"), ("fa", "pa"), ("fb", "pb"), ("pa", "sum"), ("pb", "sum"),
             ("sum", "out"), ("out", "output")]
    x = np.random.default_rng(0).random((5, 2)).astype(np.float32) * 2
    r = run(graph(nodes, edges, [2], [2]), x, timesteps=6)
    spikes = r.counters.populations["pa"].spikes      # pa and pb spike alike: every nonzero input is a 2
    assert spikes > 0 and r.counters.populations["pb"].spikes == spikes
    c = r.counters.projections["sum"]
    assert not c.binary_input
    assert c.effective_ops == spikes * 2                 # each nonzero input reaches 2 outputs, once
