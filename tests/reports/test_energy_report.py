"""energy_report(): counts measured or loaded (and matched to their graph), the CNN twin beside them."""
from __future__ import annotations

import json

import pytest

from neurodeploy.training import checkpoint
from neurodeploy.measure import energy as en
from neurodeploy.errors import NeurodeployError
from neurodeploy.exporters.lowering import export, export_checkpoint_model
from neurodeploy.ir.io import file_sha256, write_graph
from neurodeploy.reports.energy_report import cnn_twin_macs_for, energy_report


@pytest.fixture(scope="module")
def graph_file(tiny_ckpt, tmp_path_factory):
    net = checkpoint.load(tiny_ckpt)
    return write_graph(tmp_path_factory.mktemp("er") / "g.nir", export_checkpoint_model(net, tiny_ckpt))


def _inputs(n=4):
    import torch
    from neurodeploy.measure.inputs import Inputs
    x = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0)).numpy()
    return Inputs(x, None, f"{n} random images")


def test_measured_report(graph_file, tiny_ckpt):
    rep = energy_report(graph_file, ["cmos45nm", "spinnaker2"], device="cpu", inputs=_inputs())
    assert rep["graph_sha256"] == file_sha256(graph_file) and rep["samples"] == 4 and rep["timesteps"] == 2
    assert rep["cnn_macs_source"] == "CNN twin of mnasnet (architecture)"
    assert rep["cnn_macs"] == checkpoint.read(tiny_ckpt)["card"]["cnn_macs"]
    assert [t["target"] for t in rep["targets"]] == ["cmos45nm", "spinnaker2"]
    for t in rep["targets"]:
        assert t["energy_per_inference_j"] > 0
        assert t["cnn_energy_j"] == pytest.approx(rep["cnn_macs"] * 4.6e-12)
    cmos, tn = rep["targets"]
    assert "ratio_with_memory" in cmos["memory_aware"] and tn["memory_aware"] is None   # only where priced
    assert rep["cnn_twin_j"]["gpu"] == pytest.approx(rep["cnn_macs"] * 20.9e-12)
    assert cmos["latency_s"] is None and cmos["total_j"] == cmos["dynamic_j"]          # no chip, no time
    assert tn["mapping"]["fits"] and tn["latency_s"] == pytest.approx(rep["timesteps"] * 1e-3)   # 1 ms tick
    assert tn["edp_js"] == pytest.approx(tn["total_j"] * tn["latency_s"])
    assert tn["mapping"]["cores"] >= 1


def test_counts_file_roundtrip_and_refusals(graph_file, tmp_path):
    from neurodeploy.backends import torch as tb
    from neurodeploy.ir.io import read_graph
    counters = tb.compile(read_graph(graph_file), device="cpu").run(_inputs().x).counters
    counters.graph_sha256 = file_sha256(graph_file)
    good = tmp_path / "c.json"
    good.write_text(json.dumps(counters.to_dict()))
    rep = energy_report(graph_file, ["cmos45nm"], counts_file=good)
    assert rep["counts"] == str(good)
    assert rep["targets"][0]["energy_per_inference_j"] == pytest.approx(en.price(counters, "cmos45nm").joules)

    d = counters.to_dict()
    d["graph_sha256"] = None
    (tmp_path / "nosha.json").write_text(json.dumps(d))
    with pytest.raises(NeurodeployError, match="carry no graph_sha256"):
        energy_report(graph_file, ["cmos45nm"], counts_file=tmp_path / "nosha.json")
    d["graph_sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(d))
    with pytest.raises(NeurodeployError, match="counters belong to graph 000000000000"):
        energy_report(graph_file, ["cmos45nm"], counts_file=tmp_path / "other.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(NeurodeployError, match="not a counters JSON"):
        energy_report(graph_file, ["cmos45nm"], counts_file=tmp_path / "junk.json")
    with pytest.raises(NeurodeployError):
        energy_report(graph_file, ["nosuchtarget"], counts_file=good)


def test_cnn_macs_fall_back_to_dense_ops_without_checkpoint(tiny_ckpt, tmp_path):
    """A graph without a readable checkpoint prices the CNN side from the graph's dense ops."""
    net = checkpoint.load(tiny_ckpt)
    graph = export(net, (1, 16, 16))               # metadata, but no checkpoint recorded
    from neurodeploy.ir.counters import RunCounters, ProjectionCounts
    counters = RunCounters(samples=2, timesteps=2, projections={"p": ProjectionCounts("Conv2d", dense_ops=400.0)})
    macs, source = cnn_twin_macs_for(graph, counters)
    assert source == "dense synaptic ops of the graph per timestep"
    assert macs == en.cnn_twin_macs(counters)


def test_cnn_macs_for_graph_moved_with_its_checkpoint(tmp_path):
    import shutil
    from conftest import save_untrained
    from neurodeploy.ir.io import read_graph
    from neurodeploy.backends.model import load_network
    ck = save_untrained(tmp_path / "a" / "snn.pt", "mnasnet")
    net = checkpoint.load(ck)
    write_graph(tmp_path / "a" / "g.nir", export_checkpoint_model(net, ck))
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = tmp_path / "b" / "g.nir"
    assert load_network(read_graph(moved), moved) is not None      # validate finds it beside the graph
    rep = energy_report(moved, ["cmos45nm"], device="cpu", inputs=_inputs(2))
    assert rep["cnn_macs_source"] == "CNN twin of mnasnet (architecture)"
    assert rep["cnn_macs"] == checkpoint.read(tmp_path / "b" / "snn.pt")["card"]["cnn_macs"]
