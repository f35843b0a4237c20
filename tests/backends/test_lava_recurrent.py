"""Recurrent graphs on Lava: a CubaLIF population with a projection back onto itself (NIR's
showcase), driven by a spike sequence (T, N, ...), through the same command users type."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest

import neurodeploy as nd
from neurodeploy.ir.conventions import GraphConventions, with_conventions

pytestmark = pytest.mark.lava
T, N = 20, 12


def recurrent_cuba(seed=0):
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out, dt = 6, 10, 3, 1e-4
    full = lambda v, n: np.full(n, v, np.float64)
    hidden = nir.CubaLIF(tau_syn=full(dt / 0.2, n_h), tau_mem=full(dt / 0.1, n_h), r=full(10.0, n_h),
                         v_leak=full(0.0, n_h), v_threshold=full(1.0, n_h), v_reset=full(0.0, n_h),
                         w_in=full(5.0, n_h))
    out = nir.LIF(tau=full(dt / 0.1, n_out), r=full(10.0, n_out), v_leak=full(0.0, n_out),
                  v_threshold=full(1.0, n_out), v_reset=full(0.0, n_out))
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc_in": nir.Affine(weight=rng.normal(0, 1.5, (n_h, n_in)).astype(np.float32), bias=np.zeros(n_h, np.float32)),
             "hidden": hidden,
             "rec": nir.Linear(weight=rng.normal(0, 0.6, (n_h, n_h)).astype(np.float32)),
             "fc_out": nir.Affine(weight=rng.normal(0, 1.5, (n_out, n_h)).astype(np.float32), bias=np.zeros(n_out, np.float32)),
             "out": out, "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc_in"), ("fc_in", "hidden"), ("hidden", "rec"), ("rec", "hidden"), ("hidden", "fc_out"),
             ("fc_out", "out"), ("out", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    return with_conventions(graph, GraphConventions(dt=dt, timesteps=T, input_shape=(n_in,)))


def spikes(seed=1):
    return (np.random.default_rng(seed).random((T, N, 6)) < 0.3).astype(np.float32)


@pytest.fixture(autouse=True)
def _runtime():
    from neurodeploy.backends.lava.runtime import runtime_status
    if not runtime_status()["installed"]:
        pytest.skip("the Lava runtime is not installed (neurodeploy setup lava)")


def test_recurrent_cubalif_on_lava_from_a_sequence():
    graph = recurrent_cuba()
    x = spikes()
    ref = nd.compile("torch", graph, device="cpu").run(x)
    assert ref.outputs.shape == (T, N, 3) and ref.population_spike_counts["hidden"].sum() > 0
    fl = nd.compile("lava-float", graph).run(x)
    assert np.array_equal(fl.outputs, ref.outputs)
    from neurodeploy.backends.lava.grid import on_loihi_grid
    on_grid, _ = on_loihi_grid(graph)
    ref_grid = nd.compile("torch", on_grid, device="cpu").run(x)
    fixed = nd.compile("lava", on_grid).run(x)
    agree = np.mean(fixed.outputs.sum(0).argmax(-1) == ref_grid.outputs.sum(0).argmax(-1))
    assert agree >= 0.99, agree


def test_validate_takes_a_sequence_for_a_recurrent_graph(cli, tmp_path):
    path = nd.save(tmp_path / "rec.nir", recurrent_cuba())
    np.save(tmp_path / "seq.npy", spikes())
    res = cli("validate", path, "--targets", "torch,lava-float", "--input", tmp_path / "seq.npy", "--json")
    assert res.code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["samples"] == N and rep["inputs"] == f"{N} samples of seq.npy"
    assert rep["targets"]["lava-float"]["identical_outputs"]


def test_longer_loops_are_refused_by_name():
    from neurodeploy import backends
    graph = recurrent_cuba()
    nodes = {k: v for k, v in graph.nodes.items() if k != "rec"}
    nodes["back"] = nir.Linear(weight=np.ones((10, 3), np.float32))     # out -> hidden: a loop of two
    edges = [e for e in graph.edges if "rec" not in e] + [("out", "back"), ("back", "hidden")]
    looped = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    looped.metadata = graph.metadata
    s = backends.supports("lava", looped)
    assert not s.ok and "recurrent loop through other populations" in s.why


def test_recurrent_samples_back_to_back_equal_one_sample_runs():
    """Samples share one network (SampleGate drops the recurrent spikes of a sample's last
    step): each one's outputs and spike counts are exactly those of a network of its own."""
    from neurodeploy.backends.lava.grid import on_loihi_grid
    on_grid, _ = on_loihi_grid(recurrent_cuba())
    x = spikes(seed=2)[:, :3]
    prog = nd.compile("lava", on_grid)
    together = prog.run(x, batch_size=3)
    alone = [prog.run(x[:, i:i + 1], batch_size=1) for i in range(3)]
    assert together.population_spike_counts["hidden"].min() > 0     # the loop carries spikes in every sample
    np.testing.assert_array_equal(together.outputs, np.concatenate([a.outputs for a in alone], axis=1))
    for name, counts in together.population_spike_counts.items():
        np.testing.assert_array_equal(counts, np.concatenate([a.population_spike_counts[name] for a in alone]))
    from neurodeploy.ir.counters import merge_counters
    assert together.counters.to_dict()["projections"] == merge_counters([a.counters for a in alone]).to_dict()[
        "projections"]
