"""``bench``: the re-measured tables from a tiny temporary zoo, the row cache, the Pareto front, --paper."""
from __future__ import annotations

import csv
import json

import pytest

from neurodeploy.measure import energy as en
from neurodeploy.errors import NeurodeployError
from neurodeploy.reports import bench
from neurodeploy.reports.bench import COLUMNS, pareto_front, run_bench

MODELS = ["mnasnet", "mixnet"]


@pytest.fixture
def zoo_env(tiny_zoo, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tiny_zoo))
    return tiny_zoo


@pytest.fixture
def first_bench(zoo_env, tmp_path):
    return run_bench(MODELS, "mnist5k", 8, tmp_path / "b", device="cpu"), tmp_path / "b"


def test_run_bench_writes_tables_and_plot(first_bench, zoo_env):
    rep, out = first_bench
    assert set(rep["files"]) == {"markdown", "csv", "json", "plot"}
    png = (out / "accuracy_energy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    md = (out / "bench.md").read_text()
    assert md.startswith("# Tables 1 and 2 re-measured (mnist5k, counts on 8 test samples)")
    assert all(f"| {m} |" in md for m in MODELS)
    with open(out / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == MODELS and list(rows[0]) == COLUMNS
    assert json.loads((out / "bench.json").read_text())["rows"] == rep["rows"]
    assert sorted(p.name for p in (out / "graphs").iterdir()) == ["mixnet.nir", "mnasnet.nir"]
    for row in rep["rows"]:
        snn = json.loads((zoo_env / row["model"] / "snn.json").read_text())
        cnn = json.loads((zoo_env / row["model"] / "cnn.json").read_text())
        assert row["samples"] == 8 and row["dataset"] == "mnist5k" and row["timesteps"] == 2
        assert row["snn_acc"] == snn["test_accuracy"] and row["snn_f1"] == snn["test_macro_f1"]
        assert row["cnn_acc"] == cnn["test_accuracy"] and row["cnn_f1"] == cnn["test_macro_f1"]
        assert row["params_k"] == snn["parameters"] / 1e3
        assert row["cnn_macs_m"] == pytest.approx(snn["cnn_macs"] / 1e6)
        assert row["cnn_energy_mj"] == pytest.approx(snn["cnn_macs"] * 4.6e-12 * 1e3, rel=1e-12)
        assert row["mac_m"] > 0 and row["snn_energy_mj"] > 0
        assert row["cnn_over_snn"] == pytest.approx(row["cnn_energy_mj"] / row["snn_energy_mj"])
        for col in COLUMNS:
            if col.startswith("paper_"):
                assert row[col] is not None, (row["model"], col)       # the paper's CIFAR-10 figures
        assert (out / "rows" / f"{row['model']}.json").exists()


def test_second_run_uses_cache(first_bench, monkeypatch):
    rep, out = first_bench

    def boom(*a, **k):
        raise AssertionError("measure_model called despite the cache")

    monkeypatch.setattr(bench, "measure_model", boom)
    again = run_bench(MODELS, "mnist5k", 8, out, device="cpu")
    assert again["rows"] == rep["rows"]
    with pytest.raises(AssertionError, match="despite the cache"):      # another sample count re-measures
        run_bench(MODELS, "mnist5k", 4, out, device="cpu")


def test_missing_zoo_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "empty"))
    with pytest.raises(NeurodeployError, match="has no snn.pt for mnasnet.*NEURODEPLOY_ZOO"):
        run_bench(["mnasnet"], "mnist5k", 8, tmp_path / "b", device="cpu")


def test_pareto_front():
    #        (energy, accuracy)
    pts = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (0.5, 0.4), (4.0, 0.9), (1.0, 0.5)]
    # (2,0.6) is dominated by (2,0.7); (3,0.7) by (2,0.7); duplicates do not dominate each other
    assert pareto_front(pts) == [0, 1, 4, 5, 6]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.1)]) == [0]


def test_bench_paper_json(cli):
    res = cli("bench", "--paper", "--json")
    assert res.code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert set(rep) == {"table1_formula", "table2_ratios", "headline_saving"}
    missed = [(r["dataset"], r["model"]) for r in rep["table1_formula"] if not r["reproduced"]]
    assert sorted(missed) == [("cifar100", "mixnet"), ("tinyimagenet", "mixnet")]
    assert len(rep["table1_formula"]) == 18


def test_cache_is_invalidated_when_the_checkpoint_changes(tiny_zoo, tmp_path, monkeypatch):
    import shutil
    from conftest import save_untrained
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo / "mixnet", zoo / "mixnet")
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(zoo))
    first = run_bench(["mixnet"], "mnist5k", 4, tmp_path / "b", device="cpu")
    assert first["rows"][0]["snn_acc"] == 0.25
    save_untrained(zoo / "mixnet" / "snn.pt", "mixnet", seed=7, card_extra={"test_accuracy": 0.875})  # re-trained
    again = run_bench(["mixnet"], "mnist5k", 4, tmp_path / "b", device="cpu")
    assert again["rows"][0]["snn_acc"] == 0.875
