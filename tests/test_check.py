"""``check``: summarize counts, lint warnings, target support on hand-built graphs."""
from __future__ import annotations

import nir
import numpy as np

from neurodeploy.check import check, is_chain, lint, summarize, target_support
from neurodeploy.ir.conventions import GraphConventions, with_conventions


def lif(n, scalar=False):
    if scalar:
        return nir.LIF(tau=np.array(0.01), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(1.0))
    return nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))


def chain(scalar=False, input_shape=(3,)):
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 3))
    w1[0, 0] = 0.0
    nodes = {"input": nir.Input(np.array(input_shape)), "fc1": nir.Affine(w1, np.zeros(4)),
             "lif1": lif(4, scalar), "fc2": nir.Affine(rng.normal(size=(2, 4)), np.ones(2)), "lif2": lif(2, scalar),
             "output": nir.Output(np.array([2]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def fan_in():
    g = chain()
    nodes = dict(g.nodes)
    nodes["skip"] = nir.Linear(np.ones((4, 3)))
    return nir.NIRGraph(nodes=nodes, edges=list(g.edges) + [("input", "skip"), ("skip", "lif1")], type_check=False)


def test_summarize_counts_exactly():
    s = summarize(chain())
    assert s["nodes"] == 6 and s["edges"] == 5
    assert s["populations"] == 2 and s["neurons"] == 6
    assert s["projections"] == 2 and s["parameters"] == (12 + 4) + (8 + 2)
    assert s["synaptic_weights_nonzero"] == 11 + 8
    assert s["node_types"] == {"Input": 1, "Affine": 2, "LIF": 2, "Output": 1}
    assert s["input_shape"] == [3] and s["output_shape"] == [2]
    assert s["population_table"]["lif1"] == {"type": "LIF", "neurons": 4}
    assert s["projection_table"]["fc2"]["parameters"] == 10
    f = summarize(fan_in())
    assert f["parameters"] == 26 + 12 and f["edges"] == 7 and f["projections"] == 3


def test_target_support_chain_vs_fan_in():
    assert is_chain(chain()) and not is_chain(fan_in())
    c = target_support(chain())
    assert c["torch"]["ok"] and c["lava"]["ok"] and c["netx"]["ok"]
    f = target_support(fan_in())
    assert f["torch"]["ok"] and f["lava"]["ok"]
    assert not f["netx"]["ok"] and "fan-in" in f["netx"]["why"]


def test_target_support_unsupported_node():
    g = chain()
    nodes = dict(g.nodes)
    nodes["lif2"] = nir.LI(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2))
    s = target_support(nir.NIRGraph(nodes=nodes, edges=g.edges, type_check=False))
    assert s["torch"]["ok"]
    assert not s["lava"]["ok"] and "LI" in s["lava"]["why"]
    assert not s["netx"]["ok"]


def test_lint_warnings():
    plain = lint(chain())
    assert len(plain) == 1 and "no neurodeploy metadata" in plain[0]
    scalar = lint(chain(scalar=True))
    assert sum("scalar neuron parameters" in w for w in scalar) == 2
    assert any(w.startswith("lif1:") for w in scalar)
    four_d = lint(chain(input_shape=(1, 3, 4, 4)))
    assert any("input:" in w and "4 dimensions" in w for w in four_d)
    ours = with_conventions(chain(), GraphConventions(timesteps=2, reset="zero"))
    assert lint(ours) == []
    subtractive = with_conventions(chain(), GraphConventions(population_reset={"lif1": "subtract_delayed"}))
    assert any("1 population(s) reset otherwise" in w for w in lint(subtractive))
    assert not check(subtractive)["targets"]["netx"]["ok"]               # netx's neurons reset to zero


def test_check_type_checks_and_reports():
    rep = check(chain())
    assert rep["type_check"] == "ok" and rep["targets"]["netx"]["ok"]
    assert rep["conventions"]["dt"] == 1e-4
    g = chain()
    nodes = dict(g.nodes)
    nodes["fc2"] = nir.Affine(np.ones((2, 5)), np.zeros(2))       # wants 5 inputs, gets 4
    bad = check(nir.NIRGraph(nodes=nodes, edges=g.edges, type_check=False))
    assert bad["type_check"].startswith("failed")
