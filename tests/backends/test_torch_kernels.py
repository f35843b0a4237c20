"""The torch backend's integer and event-driven projection kernels give the dense
kernel's bits: outputs, every population's spikes and every counter, on hand-built
graphs that exercise each case (stride, padding, dilation, pooled inputs, a
concatenation's row slices, Linear/Affine, a recurrent loop) and on a zoo network."""
from __future__ import annotations

import nir
import numpy as np
import pytest

from neurodeploy.backends.torch import KERNELS, compile as torch_compile
from neurodeploy.errors import NeurodeployError
from neurodeploy.kernels import events, grid

from test_torch_backend import graph, lif   # the hand-built graph helpers, beside this file

KINDS = ("int8", "events", "auto")


def grid_weights(rng, shape, step=2.0 ** -6, k=40):
    """Weights on a power-of-two grid with 8-bit integers, as Loihi-aware training leaves them."""
    return (rng.integers(-k, k + 1, shape) * step).astype(np.float32)


def conv(rng, c_out, c_in, k, stride=1, padding=0, dilation=1, bias_step=2.0 ** -10):
    return nir.Conv2d(input_shape=None, weight=grid_weights(rng, (c_out, c_in, k, k)), stride=stride,
                      padding=padding, dilation=dilation, groups=1,
                      bias=(rng.integers(-200, 200, c_out) * bias_step).astype(np.float32))


def population(shape, decay=0.5, thr=0.5):
    return lif(decay, 1.0, thr=thr, shape=shape)


def run_all(g, x, T=4):
    """{kernels: (result, program)} for every kernel choice: the program's second run,
    after its first batches chose the kernels (one tunes them layer by layer, two time
    whole-network choices) and linked integer projections with LIF loops; under
    "<kernels> first run", the run that did so."""
    out = {}
    for kernels in KERNELS:
        program = torch_compile(g, device="cpu", kernels=kernels)
        first = program.run(x, T, batch_size=2)
        out[kernels] = (program.run(x, T, batch_size=2), program)
        out[kernels + " first run"] = (first, program)
    return out


def links(program):
    """(int8 projections handing their sums to a LIF loop, {population: int8 spike multiplier})."""
    return ({n for n, op in program.ops.items() if getattr(op, "keeps_sums", False)},
            {n: op.int8_multiplier for n, op in program.ops.items() if getattr(op, "int8_multiplier", None)})


def assert_same_bits(results):
    ref = results["dense"][0]
    for kernels, (r, _) in results.items():
        assert np.array_equal(r.outputs, ref.outputs), kernels
        assert r.population_spike_counts.keys() == ref.population_spike_counts.keys()
        for name, counts in ref.population_spike_counts.items():
            assert np.array_equal(r.population_spike_counts[name], counts), (kernels, name)
        assert r.counters.neurobench() == ref.counters.neurobench(), kernels
        for name, c in ref.counters.projections.items():
            assert r.counters.projections[name] == c, (kernels, name)


def used(results, kernels):
    return set(results[kernels][1].kernel_choices().values())


def conv_net(rng, stride, padding, dilation, pool=None):
    """input (2, 12, 12) -> conv -> LIF -> [pool] -> 3x3 conv (stride, padding, dilation) -> LIF -> output."""
    nodes = {"c1": conv(rng, 16, 2, 3, padding=1), "p1": population((16, 12, 12), thr=0.25)}
    edges = [("input", "c1"), ("c1", "p1")]
    hw, src = 12, "p1"
    if pool is not None:
        nodes["pool"], hw, src = pool, 6, "pool"
        edges.append(("p1", "pool"))
    c2 = conv(rng, 24, 16, 3, stride, padding, dilation)
    out_hw = (hw + 2 * padding - dilation * 2 - 1) // stride + 1
    nodes.update({"c2": c2, "p2": population((24, out_hw, out_hw), thr=0.125)})
    edges += [(src, "c2"), ("c2", "p2"), ("p2", "output")]
    return graph(nodes, edges, (2, 12, 12), (24, out_hw, out_hw))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 2)])
def test_convolution_of_spikes_is_bit_identical_on_every_kernel(stride, padding, dilation):
    rng = np.random.default_rng(stride * 10 + padding + dilation)
    x = rng.random((5, 2, 12, 12)).astype(np.float32) * 2
    results = run_all(conv_net(rng, stride, padding, dilation), x)
    assert_same_bits(results)
    # int8 c2: p1 writes int8 spikes for it, and c2 hands p2 its integer sums
    assert links(results["int8"][1]) == ({"c2"}, {"p1": 1})
    assert links(results["dense"][1]) == (set(), {})
    assert results["dense"][0].counters.populations["p2"].spikes > 0       # not a silent, trivial match
    assert used(results, "int8") >= {"int8"} and used(results, "events") >= {"events"}


@pytest.mark.parametrize("pool", [nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                padding=np.array([0, 0])),
                                  nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                padding=np.array([0, 0]))])
def test_pooled_spikes_are_bit_identical_on_every_kernel(pool):
    rng = np.random.default_rng(3)
    x = rng.random((5, 2, 12, 12)).astype(np.float32) * 2
    results = run_all(conv_net(rng, 1, 1, 1, pool=pool), x)
    assert_same_bits(results)
    assert "c2" in [n for n, k in results["events"][1].kernel_choices().items() if k == "events"]
    # the loop pools p1's spikes: avg writes window counts (x 1/4 x c2's input scale 4), sum the counts
    assert links(results["int8"][1]) == ({"c2"}, {"p1": 1})


def test_auto_times_whole_network_choices_then_keeps_one(monkeypatch):
    """auto: the first batch tunes each projection, the next two time "int8 wherever
    offered" and "as tuned" (when they differ), then one stays; every batch the same bits."""
    from neurodeploy.backends import torch as backend
    monkeypatch.setattr(backend._Projection, "_tune", lambda self, x: "events")   # differs from int8
    rng = np.random.default_rng(17)
    g = conv_net(rng, 1, 1, 1)
    x = rng.random((4, 2, 12, 12)).astype(np.float32) * 2
    ref = torch_compile(g, device="cpu", kernels="dense").run(x, 4, batch_size=1)
    program = torch_compile(g, device="cpu", kernels="auto")
    program.run(x[:1], 4, batch_size=1)
    assert not program.kernels_settled and program.kernel_choices()["c2"] == "int8"   # now timing "integer"
    for _ in range(2):
        program.run(x[:1], 4, batch_size=1)
    assert program.kernels_settled and program.kernel_choices()["c2"] in ("int8", "events")
    r = program.run(x, 4, batch_size=1)
    assert np.array_equal(r.outputs, ref.outputs) and r.counters.to_dict() == ref.counters.to_dict()
    dense = torch_compile(g, device="cpu", kernels="dense")
    dense.run(x[:1], 4, batch_size=1)
    assert dense.kernels_settled            # nothing to choose


def test_concatenation_of_integer_sums_into_a_pooled_loop_is_bit_identical():
    """Spikes -> two int8 branches writing channel slices of one population (each hands
    the loop its own sums), which pools its spikes for an int8 convolution."""
    rng = np.random.default_rng(13)
    a, b = conv(rng, 16, 8, 1), conv(rng, 16, 8, 3, padding=1)
    a.weight[8:], a.bias[8:], b.weight[:8], b.bias[:8] = 0, 0, 0, 0
    nodes = {"c0": conv(rng, 8, 2, 3, padding=1), "p0": population((8, 8, 8), thr=0.25), "a": a, "b": b,
             "cat": population((16, 8, 8), thr=0.25),
             "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "c3": conv(rng, 6, 16, 3, padding=1), "p3": population((6, 4, 4), thr=0.125)}
    edges = [("input", "c0"), ("c0", "p0"), ("p0", "a"), ("p0", "b"), ("a", "cat"), ("b", "cat"),
             ("cat", "pool"), ("pool", "c3"), ("c3", "p3"), ("p3", "output")]
    x = rng.random((5, 2, 8, 8)).astype(np.float32) * 2
    results = run_all(graph(nodes, edges, (2, 8, 8), (6, 4, 4)), x)
    assert_same_bits(results)
    assert results["dense"][0].counters.populations["p3"].spikes > 0
    assert links(results["int8"][1]) == ({"a", "b", "c3"}, {"p0": 1, "cat": 1})


def test_concatenation_rows_linear_and_affine_are_bit_identical():
    """Two convolutions writing channel slices of one population (a concatenation),
    then Flatten -> Affine -> LIF -> Linear -> LIF."""
    rng = np.random.default_rng(7)
    a, b = conv(rng, 12, 2, 1), conv(rng, 12, 2, 3, padding=1)
    a.weight[6:], a.bias[6:], b.weight[:6], b.bias[:6] = 0, 0, 0, 0      # disjoint row slices
    nodes = {"a": a, "b": b, "cat": population((12, 6, 6), thr=0.25), "flat": nir.Flatten(
        start_dim=0, end_dim=-1, input_type={"input": np.array([12, 6, 6])}),
        "fc": nir.Affine(weight=grid_weights(rng, (20, 432)), bias=(rng.integers(-9, 9, 20) * 2.0 ** -8)
                         .astype(np.float32)),
        "p": population((20,), thr=0.25), "lin": nir.Linear(weight=grid_weights(rng, (5, 20))),
        "out": population((5,), thr=0.0625)}
    edges = [("input", "a"), ("input", "b"), ("a", "cat"), ("b", "cat"), ("cat", "flat"), ("flat", "fc"),
             ("fc", "p"), ("p", "lin"), ("lin", "out"), ("out", "output")]
    x = rng.random((5, 2, 6, 6)).astype(np.float32) * 3
    results = run_all(graph(nodes, edges, (2, 6, 6), (5,)), x)
    assert_same_bits(results)
    assert results["dense"][0].counters.populations["out"].spikes > 0
    assert {"fc", "lin"} <= {n for n, k in results["events"][1].kernel_choices().items() if k == "events"}


def test_recurrent_loop_is_bit_identical():
    rng = np.random.default_rng(11)
    nodes = {"fc": nir.Affine(weight=grid_weights(rng, (8, 4)), bias=np.zeros(8, np.float32)),
             "p": population((8,), thr=0.25),
             "rec": nir.Linear(weight=grid_weights(rng, (8, 8), k=20)),
             "ro": nir.Linear(weight=grid_weights(rng, (3, 8))), "q": population((3,), thr=0.0625)}
    edges = [("input", "fc"), ("fc", "p"), ("p", "rec"), ("rec", "p"), ("p", "ro"), ("ro", "q"), ("q", "output")]
    x = rng.random((6, 4)).astype(np.float32) * 2
    assert_same_bits(run_all(graph(nodes, edges, (4,), (3,)), x, T=6))


def test_weights_off_any_exact_grid_keep_the_dense_kernel():
    """Float weights whose partial sums round: another summation order could change
    bits, so no other kernel is offered, whatever is asked for."""
    rng = np.random.default_rng(5)
    g = conv_net(rng, 1, 1, 1)
    g.nodes["c2"].weight = rng.normal(size=g.nodes["c2"].weight.shape).astype(np.float32)
    for kernels in KINDS:
        assert torch_compile(g, device="cpu", kernels=kernels).kernel_choices()["c2"] == "dense"


def test_exactness_predicate():
    assert grid.lowest_grid_exponent([0.75, 2.0 ** -9]) == -9
    assert grid.lowest_grid_exponent([0.0]) is None
    w = np.full((1, 2 ** 10), 2.0 ** -6)
    assert grid.exact_in_any_order(w, None, fraction_bits=0, max_input=1)
    assert not grid.exact_in_any_order(w + np.ldexp(1.0, -40), None, fraction_bits=0, max_input=1)
    # 2^10 inputs of 2^-6, 8 fraction bits, max 2^15: the sums need 10 + 6 + 8 + 0 bits... and more
    assert not grid.exact_in_any_order(w, None, fraction_bits=8, max_input=2.0 ** 15)
    assert grid.integer_weights(np.array([[0.5, -127 * 0.5]])) is not None
    assert grid.integer_weights(np.array([[0.5, -128 * 0.5]])) is None


def test_event_kernel_against_a_plain_loop():
    """kernels.events on its own, against the definition y = b + sum over nonzero x of x * W."""
    if not events.AVAILABLE:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(2)
    x = (rng.random((3, 5, 5, 4)) < 0.3).astype(np.float32) * rng.integers(1, 4, (3, 5, 5, 4)) / 4
    w = grid_weights(rng, (3, 3, 4, 6))
    b = np.arange(6, dtype=np.float32) / 8
    out = np.empty((3, 3, 3, 6), np.float32)
    events.conv2d(x, w, b, out, False, stride=(2, 2), padding=(1, 1), dilation=(1, 1), threads=2)
    ref = np.tile(b, (3, 3, 3, 1)).astype(np.float64)
    for n, h, wi, c in zip(*np.nonzero(x)):
        for kh in range(3):
            for kw in range(3):
                oh, ow = h + 1 - kh, wi + 1 - kw
                if oh % 2 == 0 and ow % 2 == 0 and 0 <= oh // 2 < 3 and 0 <= ow // 2 < 3:
                    ref[n, oh // 2, ow // 2] += x[n, h, wi, c] * w[kh, kw, c]
    assert np.array_equal(out, ref.astype(np.float32))


def test_unknown_kernels_is_one_line():
    rng = np.random.default_rng(1)
    with pytest.raises(NeurodeployError, match="unknown kernels 'fast'"):
        torch_compile(conv_net(rng, 1, 1, 1), device="cpu", kernels="fast")


@pytest.mark.slow
def test_zoo_network_is_bit_identical_on_every_kernel():
    from neurodeploy.exporters.lowering import export_checkpoint_model
    from neurodeploy.training import checkpoint, data, zoo
    path = zoo.checkpoint_path("pruned_squeezenet", "snn")
    g = export_checkpoint_model(checkpoint.load(path), path)
    x = data.load_tensors("mnist5k", "test", 32, limit=6)[0].numpy()
    results = run_all(g, x, T=4)
    assert_same_bits(results)
    assert {"int8", "events"} <= used(results, "auto") | used(results, "int8") | used(results, "events")
