"""``neurodeploy map`` end to end on small hand-built graphs, and ``energy``'s time / static / EDP columns."""
from __future__ import annotations

import json

import numpy as np
import pytest

from neurodeploy.ir.conventions import GraphConventions, with_conventions
from neurodeploy.ir.io import write_graph
from mapnets import chip, conv_net, dense_chain


def js(res) -> dict:
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    g, _ = conv_net()
    return write_graph(tmp_path_factory.mktemp("map") / "conv.nir",
                       with_conventions(g, GraphConventions(timesteps=4, input_shape=(1, 8, 8))))


def test_map_json_placement_and_plot(cli, conv_file, tmp_path):
    png = tmp_path / "placement.png"
    rep = js(cli("map", conv_file, "--target", "loihi2", "--plot", png, "--cores", "--json"))
    assert rep["target"] == "loihi2" and rep["fits"] and "fits on one loihi2 chip" in rep["verdict"]
    assert rep["totals"]["cores"] == len(rep["cores"]) >= 1 and rep["totals"]["chips"] == 1
    pops = {p["name"]: p for p in rep["populations"]}
    assert set(pops) == {"lif1", "lif2", "lif3", "lif4"}
    assert pops["lif1"]["synapses"] == 0 and pops["lif1"]["host_synapses"] > 0      # the input layer: host
    assert rep["latency"]["inference_s"] == pytest.approx(4 * rep["latency"]["step_s"])
    assert "upper bound" in rep["latency"]["basis"] and rep["energy"] is None
    assert rep["constants"]["mapping"]["neurons_per_core"]["source"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rep["plot"] == str(png)


def test_map_human_output_names_the_binding_limit(cli, conv_file, tmp_path):
    res = cli("map", conv_file, "--target", chip(tmp_path, neurons_per_core=20))
    assert res.code == 0, res.stderr
    assert "neurons per core" in res.stdout and "fits on one tiny chip" in res.stdout


def test_map_refuses_an_unplaceable_layer_by_name(cli, tmp_path):
    g, *_ = dense_chain(n1=30)
    f = write_graph(tmp_path / "wide.nir", g)
    res = cli("map", f, "--target", chip(tmp_path, neurons_per_core=64, input_axons_per_core=20), "--json")
    assert res.code == 1
    rep = json.loads(res.stdout)
    assert not rep["fits"] and rep["unplaceable"] == [{"population": "lif2", "limit": "in_axons"}]
    assert "DOES NOT FIT" in rep["verdict"] and "lif2 cannot be placed" in rep["verdict"]


def test_map_with_measured_counts_gives_time_and_energy(cli, conv_file, tmp_path):
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32) * 3
    np.save(tmp_path / "x.npy", x)
    counts = tmp_path / "c.json"
    js(cli("run", conv_file, "--input", tmp_path / "x.npy", "--device", "cpu", "--save-counts", counts, "--json"))
    rep = js(cli("map", conv_file, "--target", "loihi1", "--counts", counts, "--json"))
    bound = js(cli("map", conv_file, "--target", "loihi1", "--json"))
    assert rep["latency"]["basis"] == "measured counts"
    assert rep["latency"]["step_s"] <= bound["latency"]["step_s"]
    e = rep["energy"]
    assert e["dynamic_j"] > 0 and e["static_j"] == 0.0 and "NOT PUBLISHED" in e["static_source"]
    assert e["edp_js"] == pytest.approx(e["total_j"] * rep["latency"]["inference_s"])


def test_map_errors_are_one_line(cli, conv_file):
    for target, words in (("cmos45nm", "has no [mapping] table"), ("lava", "is a backend"),
                          ("loihi9", "unknown target")):
        res = cli("map", conv_file, "--target", target)
        assert res.code != 0 and words in res.stderr
        assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1


def test_energy_columns_static_latency_edp(cli, conv_file, tmp_path):
    x = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32) * 3
    np.save(tmp_path / "x.npy", x)
    rep = js(cli("energy", conv_file, "--targets", "cmos45nm,loihi,loihi2,spinnaker2", "--input", tmp_path / "x.npy",
                 "--device", "cpu", "--json"))
    rows = {t["target"]: t for t in rep["targets"]}
    assert list(rows) == ["cmos45nm", "loihi1", "loihi2", "spinnaker2"]
    assert rows["cmos45nm"]["latency_s"] is None and rows["cmos45nm"]["memory_aware"] is not None
    for name in ("loihi1", "loihi2", "spinnaker2"):
        r = rows[name]
        assert r["memory_aware"] is None                      # not repeated from cmos45nm
        assert r["latency_s"] > 0 and r["total_j"] == pytest.approx(r["dynamic_j"] + r["static_j"])
        assert r["edp_js"] == pytest.approx(r["total_j"] * r["latency_s"])
    assert rows["loihi2"]["latency_s"] < rows["loihi1"]["latency_s"] or rows["loihi2"]["mapping"]["cores"] < \
        rows["loihi1"]["mapping"]["cores"]
    assert rep["cnn_twin_j"]["gpu"] > rep["cnn_twin_j"]["cmos45nm"] > 0
    human = cli("energy", conv_file, "--targets", "cmos45nm,loihi2", "--input", tmp_path / "x.npy", "--device", "cpu")
    assert human.code == 0 and "GPU" in human.stdout and "EDP" in human.stdout
