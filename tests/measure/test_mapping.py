"""Hardware mapping (measure/mapping.py): hand-computed placements on small graphs, exact synapse
counts against explicit matrices, split / merge / multi-chip / refusal, time and static energy,
and placement invariants on a zoo model (all six in the slow set)."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapnets import chip, conv, conv_net, dense_chain, graph, lif
from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.counters import PopulationCounts, RunCounters
from neurodeploy.measure import mapping as mp

ZOO = ("squeezenet", "pruned_squeezenet", "shufflenetv2", "mnasnet", "mixnet", "xception")
CHIPS = ("loihi1", "loihi2", "truenorth", "spinnaker2")


# ---------------------------------------------------------------- invariants
def check_invariants(m: mp.Mapping):
    """Every neuron and synapse placed exactly once; no core over any limit; core/chip bounds."""
    placed_neurons = 0
    for p in m.populations:
        if p.unplaceable:
            assert not p.tiles
            continue
        c, h, w = p.shape if len(p.shape) == 3 else (p.neurons, 1, 1)
        cover = np.zeros((c, h, w), dtype=int)
        for t in p.tiles:
            r = t.region
            cover[r.c0:r.c1, r.y0:r.y1, r.x0:r.x1] += 1
            assert t.neurons == r.size and t.core >= 0
        assert (cover == 1).all(), f"{p.name}: neurons placed {cover.min()}..{cover.max()} times"
        assert sum(t.synapses for t in p.tiles) == p.synapses, p.name
        placed_neurons += p.neurons
    for core in m.cores:
        assert core.limits == m.limits or m.target == "speck"
        for res, lim in core.limits.items():
            used = sum(t.usage.get(res, 0.0) for t in core.tiles)
            assert used <= lim + 1e-6, f"core {core.index}: {res} {used} > {lim}"
    if "neurons" in m.limits:
        assert len(m.cores) >= math.ceil(placed_neurons / m.limits["neurons"])
    assert m.chips == math.ceil(len(m.cores) / m.cores_per_chip)


# ---------------------------------------------------------------- hand-computed placements
def test_dense_chain_splits_and_merges(tmp_path):
    g, w1, w2 = dense_chain()
    m = mp.map_graph(g, chip(tmp_path))            # 5 neurons per core
    check_invariants(m)
    p1, p2 = m.populations
    assert [t.neurons for t in p1.tiles] == [5, 5, 5, 1]          # split: ceil(16 / 5) tiles
    assert p1.binding == "neurons" and "neurons per core" in p1.why
    assert p1.host_synapses == np.count_nonzero(w1) and p1.synapses == 0    # the input layer is the host's
    assert p2.synapses == np.count_nonzero(w2) and p2.binding is None
    assert len(m.cores) == 4 and p2.cores == [3] and 3 in p1.cores     # merged: lif2 shares lif1's last core
    assert m.fits and m.chips == 1 and "fits on one tiny chip" in m.verdict


def test_conv_synapse_counts_match_explicit_matrices():
    """The structural count of every chain (padding, stride, groups, pooling composed into the next
    convolution, global pooling -> flatten -> affine) equals the nonzeros of the chain's matrix."""
    g, W = conv_net()
    pops, _ = mp.analyse(g)

    def matrix(src_shape, fn):
        n = int(np.prod(src_shape))
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *src_shape)
        return fn(basis).reshape(n, -1).T                  # (targets, sources)

    def cw(name, **kw):
        return lambda x: F.conv2d(x, torch.tensor(np.abs(W[name])), **kw)
    ones = {"c1": cw("c1", padding=1), "c2": cw("c2", stride=2, padding=1, groups=2),
            "c4": cw("c4", padding=1)}
    expected = {
        "lif1": [(ones["c1"], (1, 8, 8), True)],
        "lif2": [(ones["c2"], (4, 8, 8), False)],
        "lif3": [(lambda x: F.conv2d(F.avg_pool2d(x, 2), torch.tensor(np.abs(W["c3"]))), (4, 8, 8), False),
                 (ones["c4"], (6, 4, 4), False)],
        "lif4": [(lambda x: F.linear(F.avg_pool2d(x, 4).flatten(1), torch.tensor(np.abs(W["fc"]))), (5, 4, 4), False)],
    }
    for name, chains in expected.items():
        got = sorted((p.synapses, p.host) for p in pops[name].paths)
        want = sorted((int((matrix(shape, fn) != 0).sum()), host) for fn, shape, host in chains)
        assert got == want, name
        for p, (fn, shape, host) in zip(pops[name].paths, chains):      # per-neuron fan-in too
            per_neuron = (matrix(shape, fn) != 0).sum(1).numpy()
            assert np.array_equal(p.conn.counts().reshape(-1), per_neuron), name
    assert pops["lif3"].paths[0].conn.kernel == (2, 2)         # pool 2 then 1x1: a 2x2 stride-2 kernel


def test_conv_net_placement_invariants_on_the_real_chips(tmp_path):
    g, _ = conv_net()
    for name in CHIPS + ("speck",):
        m = mp.map_graph(g, name)
        check_invariants(m)
        assert m.fits and len(m.cores) >= 1, name


def test_multi_chip_and_boards(tmp_path):
    g, *_ = dense_chain(n1=40, n2=12)
    m = mp.map_graph(g, chip(tmp_path, neurons_per_core=4, cores_per_chip=3, chips_per_board=2))
    check_invariants(m)
    assert len(m.cores) == math.ceil(52 / 4) == 13
    assert m.chips == 5 and m.boards == 3                     # ceil(13 / 3), ceil(5 / 2)
    assert {c.chip for c in m.cores} == set(range(5))
    assert m.fits and "needs 5 tiny chips" in m.verdict and "3 boards" in m.verdict


def test_unplaceable_layer_is_refused_by_name(tmp_path):
    g, *_ = dense_chain(n_in=8, n1=30, n2=4)
    m = mp.map_graph(g, chip(tmp_path, neurons_per_core=64, input_axons_per_core=20))
    assert not m.fits
    [bad] = m.unplaceable
    assert bad.name == "lif2" and bad.unplaceable == "in_axons"            # fan-in 30 > 20 axons
    assert "lif2 cannot be placed" in m.verdict and "input axons per core" in m.verdict
    assert m.to_dict()["unplaceable"] == [{"population": "lif2", "limit": "in_axons"}]
    check_invariants(m)                                       # what could be placed still is, correctly


def test_memory_and_axon_limits_bind_and_hold(tmp_path):
    g, _ = conv_net()
    m = mp.map_graph(g, chip(tmp_path, neurons_per_core=256, synapse_memory_per_core=2048,
                             input_axons_per_core=64, output_axons_per_core=96))
    check_invariants(m)
    bindings = {p.name: p.binding for p in m.populations}
    assert "syn_bits" in bindings.values() or "in_axons" in bindings.values()
    assert all(c.usage.get("out_axons", 0) <= 96 for c in m.cores)


def test_shared_convolution_is_chosen_where_it_is_cheaper(tmp_path):
    g, _ = conv_net()
    sparse = mp.map_graph(g, chip(tmp_path, "sp", neurons_per_core=1024))
    shared = mp.map_graph(g, chip(tmp_path, "sh", neurons_per_core=1024, encodings="sparse,shared"))
    bits = {m.target: {p.name: sum(t.usage["syn_bits"] for t in p.tiles) for p in m.populations}
            for m in (sparse, shared)}
    assert bits["sh"]["lif2"] < bits["sp"]["lif2"]            # kernel once per core, not per synapse
    assert {e for t in shared.populations[1].tiles for e in t.encodings.values()} == {"shared"}


def test_truenorth_fan_out_needs_neuron_copies():
    g, _ = conv_net()
    m = mp.map_graph(g, "truenorth")
    check_invariants(m)
    lif1 = m.populations[0]
    pairs = sum(t.usage["out_axons"] for t in lif1.tiles)
    assert lif1.copies == max(0, int(pairs) - lif1.neurons)
    assert sum(t.neurons for t in lif1.copy_tiles) == lif1.copies


def test_speck_one_layer_per_core_and_its_refusals():
    g, _ = conv_net()
    m = mp.map_graph(g, "speck")
    assert m.fits and len(m.cores) == 4 and sorted(t.core for p in m.populations for t in p.tiles) == \
        sorted({t.core for p in m.populations for t in p.tiles})
    # a chain of 12 layers: 9 cores
    nodes, edges, prev = {"input": nir.Input(np.array([2, 4, 4]))}, [], "input"
    for i in range(12):
        nodes[f"c{i}"], nodes[f"l{i}"] = conv(np.ones((2, 2, 1, 1)), (4, 4)), lif((2, 4, 4))
        edges += [(prev, f"c{i}"), (f"c{i}", f"l{i}")]
        prev = f"l{i}"
    m = mp.map_graph(graph(nodes, edges), "speck")
    assert not m.fits and len(m.cores) == 9 and "no core left" in m.verdict


# ---------------------------------------------------------------- time and energy
def test_event_latency_hand_computed(tmp_path):
    g, w1, w2 = dense_chain(n1=4, n2=4)
    m = mp.map_graph(g, chip(tmp_path, neurons_per_core=8))
    assert len(m.cores) == 1
    c = RunCounters(samples=2, timesteps=4, populations={
        "lif1": PopulationCounts("LIF", 4, spikes=16.0, neuron_updates=32.0, input_events=24.0),
        "lif2": PopulationCounts("LIF", 4, spikes=8.0, neuron_updates=32.0, input_events=8.0)})
    lat = mp.latency(m, 4, c)
    # per step and sample: lif1 fires 16 / (2 * 4) = 2 spikes -> rate 0.5 per neuron; lif2 0.25
    syn2 = np.count_nonzero(w2)
    synops = 0.5 * syn2
    upd = 4 * (0.75 * 10 + 0.25 * 5) + 4 * (0.25 * 10 + 0.75 * 5)       # active fraction 24/32 and 8/32
    spikes = 4 * 0.5 * 3 + 4 * 0.25 * 3
    step = (synops * 2 + upd + spikes) * 1e-9 + 100e-9
    assert lat.step_s == pytest.approx(step) and lat.inference_s == pytest.approx(4 * step)
    assert lat.throughput == pytest.approx(1 / (4 * step)) and lat.basis == "measured counts"
    bound = mp.latency(m, 4)
    assert bound.step_s > lat.step_s and "upper bound" in bound.basis
    cost = mp.hardware_cost(g, chip(tmp_path, neurons_per_core=8), c, dynamic_j=1e-9)
    assert cost["static_j"] == pytest.approx(1e-3 * 1 * 4 * step)       # 1 mW x 1 core x latency
    assert cost["total_j"] == pytest.approx(1e-9 + cost["static_j"])
    assert cost["edp_js"] == pytest.approx(cost["total_j"] * 4 * step)


def test_tick_latency_and_targets_without_mapping():
    g, *_ = dense_chain()
    lat = mp.latency(mp.map_graph(g, "spinnaker2"), 8)
    assert lat.step_s == pytest.approx(1e-3) and lat.inference_s == pytest.approx(8e-3)
    with pytest.raises(NeurodeployError, match="cmos45nm has no \\[mapping\\] table.*loihi2"):
        mp.map_graph(g, "cmos45nm")
    with pytest.raises(NeurodeployError, match="'lava' is a backend"):
        mp.map_graph(g, "lava")


def test_every_mapping_constant_is_sourced():
    for name in mp.mapping_target_names():
        spec = mp.load_spec(name)
        for table in (spec.mapping, spec.timing, spec.static):
            for key, s in table.items():
                assert s.source.strip(), (name, key)
    assert set(mp.MAPPING_TARGETS) <= set(mp.mapping_target_names())
    assert mp.load_spec("loihi").name == "loihi1"


# ---------------------------------------------------------------- the zoo
@pytest.fixture(scope="module")
def zoo_graphs(tmp_path_factory):
    from neurodeploy.exporters.lowering import export_checkpoint_model
    from neurodeploy.training import checkpoint, zoo

    def load(name):
        ck = zoo.checkpoint_path(name, "snn")
        if not ck.exists():
            pytest.skip(f"no zoo checkpoint for {name}")
        return export_checkpoint_model(checkpoint.load(ck), ck)
    return load


def _check_zoo(g, name):
    out = {}
    for target in CHIPS:
        m = mp.map_graph(g, target)
        check_invariants(m)
        neurons = sum(p.neurons for p in m.populations if not p.unplaceable)
        assert len(m.cores) >= math.ceil(neurons / m.limits["neurons"]), (name, target)
        if target == "truenorth" and not m.fits:         # fan-in beyond 256 axons: refused by name
            assert all(p.unplaceable == "in_axons" and p.max_fan_in > 256 for p in m.unplaceable)
            assert m.unplaceable[0].name in m.verdict
        else:
            assert m.fits, (name, target, m.verdict)
        out[target] = (len(m.cores), m.chips)
    return out


def test_zoo_model_maps_within_bounds(zoo_graphs):
    g = zoo_graphs("pruned_squeezenet")
    got = _check_zoo(g, "pruned_squeezenet")
    assert got["loihi2"][1] == 1 and got["loihi1"][1] > 1      # one Loihi 2 chip; Loihi 1 spans chips


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_maps_within_bounds(zoo_graphs, name):
    _check_zoo(zoo_graphs(name), name)
