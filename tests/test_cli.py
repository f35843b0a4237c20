"""The ``neurodeploy`` command end to end on a tiny trained checkpoint, and its error contract.

Most calls go through ``neurodeploy.cli.entry`` in process (the ``cli`` fixture: real
exit codes, real stdout/stderr); a few go through the installed console script in a
subprocess to check the process-level behaviour (exit status, one-line errors,
``--debug`` tracebacks).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.training import checkpoint
from neurodeploy.exporters.lowering import export_checkpoint_model
from neurodeploy.ir.io import file_sha256, write_graph

EXE = str(Path(sys.executable).parent / "neurodeploy")
CLASSES = 10


@pytest.fixture(scope="module")
def graph_file(tiny_ckpt, tmp_path_factory) -> Path:
    net = checkpoint.load(tiny_ckpt)
    return write_graph(tmp_path_factory.mktemp("graph") / "g.nir", export_checkpoint_model(net, tiny_ckpt))


@pytest.fixture(scope="module")
def other_graph_file(tiny_zoo, tmp_path_factory) -> Path:
    ck = tiny_zoo / "mixnet" / "snn.pt"
    net = checkpoint.load(ck)
    return write_graph(tmp_path_factory.mktemp("graph2") / "other.nir", export_checkpoint_model(net, ck))


def js(res) -> dict:
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def assert_one_line_error(res):
    assert res.code != 0
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert "error" in lines[0].lower()
    assert "Traceback" not in res.stderr + res.stdout


def sh(*args, cwd=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


# ------------------------------------------------------------------ happy paths
def test_export_then_check(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "g.nir"
    res = cli("export", "--checkpoint", tiny_ckpt, "-o", out, "--json")
    summary = js(res)
    assert out.exists() and summary["output"] == str(out) and summary["populations"] > 0
    rep = js(cli("check", out, "--json"))
    assert rep["populations"] > 0 and rep["neurons"] > 0 and rep["parameters"] > 0
    assert rep["type_check"] == "ok"
    assert rep["targets"]["torch"]["ok"] is True
    assert rep["input_shape"] == [1, 16, 16]
    assert rep["conventions"]["model"] == "mnasnet" and rep["conventions"]["timesteps"] == 2


def test_run_json(cli, graph_file):
    rep = js(cli("run", graph_file, "--samples", 8, "--device", "cpu", "--json"))
    assert rep["samples"] == 8 and rep["timesteps"] == 2
    assert 0.0 <= rep["accuracy"] <= 1.0 and 0.0 <= rep["macro_f1"] <= 1.0
    assert len(rep["predictions"]) == 8 and all(0 <= p < CLASSES for p in rep["predictions"])
    tot = rep["counters"]["totals_per_sample"]
    for k in ("spikes", "neuron_updates", "effective_acs", "effective_macs", "dense_ops"):
        assert k in tot
    assert tot["neuron_updates"] > 0 and tot["effective_macs"] > 0   # the first layer sees real-valued input
    assert rep["counters"]["graph_sha256"] == file_sha256(graph_file)


def test_run_kernels_give_the_same_outputs_and_say_which_ran(cli, graph_file):
    runs = {k: js(cli("run", graph_file, "--samples", 8, "--device", "cpu", "--kernels", k, "--json"))
            for k in ("dense", "int8", "events", "auto")}
    assert runs["dense"]["kernels"] == {}
    assert set(runs["events"]["kernels"].values()) == {"events"}     # the tiny zoo's weights are on the grid
    for k, rep in runs.items():
        assert rep["predictions"] == runs["dense"]["predictions"], k
        assert rep["counters"]["totals_per_sample"] == runs["dense"]["counters"]["totals_per_sample"], k
    assert_one_line_error(cli("run", graph_file, "--samples", 8, "--kernels", "fast"))


@pytest.mark.parametrize("sequence", [False, True])
def test_run_input_file_and_save_output(cli, graph_file, tmp_path, sequence):
    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 1, 16, 16) if sequence else (4, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    y = tmp_path / "y.npy"
    rep = js(cli("run", graph_file, "--input", tmp_path / "x.npy", "--save-output", y, "--device", "cpu", "--json"))
    assert "accuracy" not in rep and len(rep["predictions"]) == 4
    out = np.load(y)
    assert out.shape == (2, 4, CLASSES)
    assert rep["predictions"] == out.sum(0).argmax(1).tolist()


def test_run_sequence_input_with_samples_limits_samples_not_timesteps(cli, graph_file, tmp_path):
    x = np.random.default_rng(0).random((4, 3, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rep = js(cli("run", graph_file, "--input", tmp_path / "x.npy", "--samples", 2, "--device", "cpu", "--json"))
    assert (rep["timesteps"], rep["samples"]) == (4, 2)


def test_validate_model_vs_torch_identical(cli, graph_file):
    rep = js(cli("validate", graph_file, "--targets", "model,torch", "--samples", 8, "--min-agreement", "1.0",
                 "--json"))
    assert rep["reference"] == "model" and rep["samples"] == 8
    t = rep["targets"]["torch"]
    assert t["agreement"] == 1.0 and t["identical_outputs"] is True and t["max_output_difference"] == 0.0
    assert t["populations"] and t["first_divergent_population"] is None


def test_validate_model_vs_onnx(cli, graph_file):
    rep = js(cli("validate", graph_file, "--targets", "model,onnx", "--samples", 8, "--json"))
    assert rep["targets"]["onnx"]["agreement"] == 1.0


def test_energy_measured(cli, graph_file, tiny_ckpt):
    from neurodeploy.architectures import build, count_macs
    rep = js(cli("energy", graph_file, "--targets", "cmos45nm,loihi", "--samples", 8, "--device", "cpu", "--json"))
    assert [t["target"] for t in rep["targets"]] == ["cmos45nm", "loihi1"]      # "loihi" is Loihi 1's alias
    assert rep["samples"] == 8
    args = checkpoint.read(tiny_ckpt)["arguments"]
    assert rep["cnn_macs"] == count_macs(build("mnasnet", "cnn", **args), (1, 16, 16))
    for t in rep["targets"]:
        assert t["energy_per_inference_j"] > 0
        assert t["cnn_energy_j"] == pytest.approx(rep["cnn_macs"] * 4.6e-12, rel=1e-12)
        assert t["cnn_over_snn"] == pytest.approx(t["cnn_energy_j"] / t["energy_per_inference_j"])


def test_energy_from_saved_counts_matches_measured(cli, graph_file, other_graph_file, tmp_path):
    counts = tmp_path / "c.json"
    js(cli("run", graph_file, "--samples", 8, "--device", "cpu", "--save-counts", counts, "--json"))
    assert json.loads(counts.read_text())["graph_sha256"] == file_sha256(graph_file)
    measured = js(cli("energy", graph_file, "--samples", 8, "--device", "cpu", "--json"))
    from_file = js(cli("energy", graph_file, "--counts", counts, "--json"))
    assert from_file["counts"] == str(counts)
    assert [t["energy_per_inference_j"] for t in from_file["targets"]] == \
        pytest.approx([t["energy_per_inference_j"] for t in measured["targets"]], rel=1e-12)
    assert from_file["counts_per_sample"] == pytest.approx(measured["counts_per_sample"])
    # counts recorded on another graph are refused
    res = cli("energy", other_graph_file, "--counts", counts)
    assert_one_line_error(res)
    assert "counters belong to graph" in res.stderr


def test_models_and_targets_json(cli, tiny_zoo, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tiny_zoo))
    rep = js(cli("models", "--json"))
    assert rep["zoo"] == str(tiny_zoo)
    names = [r["name"] for r in rep["models"]]
    assert sorted(names) == sorted(["squeezenet", "pruned_squeezenet", "shufflenetv2", "mnasnet", "mixnet",
                                    "xception"])
    row = {r["name"]: r for r in rep["models"]}
    assert row["mnasnet"]["snn_checkpoint"] and row["mnasnet"]["cnn_checkpoint"]
    assert row["mnasnet"]["timesteps"] == 2 and row["mnasnet"]["snn_test_accuracy"] is not None
    assert not row["xception"]["snn_checkpoint"] and row["xception"]["snn_test_accuracy"] is None
    tg = js(cli("targets", "--json"))
    assert sorted(t["name"] for t in tg["targets"]) == ["cmos45nm", "gpu", "loihi1", "loihi2", "speck", "spinnaker2",
                                                        "truenorth"]
    assert "installed" in tg["lava_runtime"]


@pytest.mark.parametrize("twin", ["snn", "cnn"])
def test_export_onnx_loads_in_onnxruntime(cli, tiny_zoo, tmp_path, twin):
    import onnxruntime as ort
    out = tmp_path / "m.onnx"
    rep = js(cli("export", "--checkpoint", tiny_zoo / "mnasnet" / f"{twin}.pt", "--format", "onnx", "-o", out,
                 "--json"))
    assert rep["format"] == "onnx" and rep["twin"] == twin
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names[0] == "x"
    assert (len(names) > 1) == (twin == "snn")
    assert not list(tmp_path.glob("*.part"))


# ------------------------------------------------------------------ errors
def test_error_not_hdf5(cli, tmp_path):
    p = tmp_path / "bad.nir"
    p.write_text("hello, not a graph\n")
    for cmd in ("check", "run", "energy"):
        res = cli(cmd, p)
        assert_one_line_error(res)
        assert "not an HDF5 file" in res.stderr


def test_error_truncated_nir(cli, graph_file, tmp_path):
    p = tmp_path / "cut.nir"
    p.write_bytes(graph_file.read_bytes()[: graph_file.stat().st_size // 2])
    assert_one_line_error(cli("check", p))
    assert_one_line_error(cli("run", p, "--samples", 2))


def test_error_missing_file(cli, tmp_path):
    res = cli("check", tmp_path / "nope.nir")
    assert_one_line_error(res)
    assert "no such file" in res.stderr


def test_error_unknown_targets(cli, graph_file):
    res = cli("validate", graph_file, "--targets", "model,fpga")
    assert_one_line_error(res)
    assert "fpga" in res.stderr
    res = cli("energy", graph_file, "--targets", "cmos45nm,fpga", "--samples", 2)
    assert_one_line_error(res)
    assert "fpga" in res.stderr


@pytest.mark.usefixtures("small_test_split")
def test_train_loihi_aware_from_a_spiking_checkpoint(cli, tiny_ckpt, tmp_path):
    res = cli("train", "--model", "mnasnet", "--epochs", "1", "--limit", "32", "--batch-size", "16", "-T", "2",
              "--init-from", tiny_ckpt, "--loihi-aware", "--lr", "1e-4", "-o", tmp_path / "q", "--json")
    assert res.code == 0, res.stderr
    card = js(res)
    assert card["config"]["loihi_aware"] and card["loihi_aware"]["test_accuracy_before"] is not None
    assert card["loihi_aware"]["started_from"]["model"] == "mnasnet"
    assert checkpoint.read(tmp_path / "q" / "snn.pt")["loihi_steps"]
    res = cli("train", "--model", "mnasnet", "--twin", "cnn", "--loihi-aware", "--limit", "32", "-o", tmp_path / "c")
    assert_one_line_error(res)
    assert "spiking twin" in res.stderr


def test_error_unknown_model(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tmp_path / "zoo"))
    for args in (("export", "--model", "resnet"), ("train", "--model", "resnet", "-o", tmp_path / "t")):
        res = cli(*args)
        assert_one_line_error(res)
        assert "unknown model 'resnet'" in res.stderr
    assert not (tmp_path / "t").exists()


def test_error_input_of_wrong_shape(cli, graph_file, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 32, 32), np.float32))
    res = cli("run", graph_file, "--input", tmp_path / "x.npy", "--save-output", tmp_path / "y.npy")
    assert_one_line_error(res)
    assert "does not fit" in res.stderr
    assert not (tmp_path / "y.npy").exists()


def test_error_input_not_npy(cli, graph_file, tmp_path):
    (tmp_path / "x.npy").write_text("nope")
    assert_one_line_error(cli("run", graph_file, "--input", tmp_path / "x.npy"))
    assert_one_line_error(cli("run", graph_file, "--input", tmp_path / "missing.npy"))


def test_error_garbage_checkpoint(cli, tmp_path):
    ck = tmp_path / "snn.pt"
    ck.write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "g.nir"
    res = cli("export", "--checkpoint", ck, "-o", out)
    assert_one_line_error(res)
    assert "not a readable checkpoint" in res.stderr
    assert not out.exists()


def test_error_weights_do_not_match_architecture(cli, tiny_ckpt, tmp_path):
    payload = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    payload["arguments"] = {**payload["arguments"], "num_classes": 7}
    ck = tmp_path / "snn.pt"
    torch.save(payload, ck)
    for fmt in ("nir", "onnx"):
        out = tmp_path / f"g.{fmt}"
        res = cli("export", "--checkpoint", ck, "--format", fmt, "-o", out)
        assert_one_line_error(res)
        assert "weights do not match the mnasnet architecture" in res.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snn.pt"]     # no partial files


def test_prune_needs_exactly_one_method(cli, tmp_path):
    assert_one_line_error(cli("prune", "-o", tmp_path / "p"))
    assert_one_line_error(cli("prune", "--keep-fires", "4,6", "--channel-ratio", "0.3", "-o", tmp_path / "p"))


def test_check_exit_status_fails_on_type_check(cli, tmp_path):
    """`check` exits 1 when the graph does not type-check (an edge with mismatched shapes)."""
    import nir
    from neurodeploy.ir.io import write_graph as wg
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([4])), "fc": nir.Affine(np.ones((3, 5)), np.zeros(3)),
                            "output": nir.Output(np.array([3]))},
                     edges=[("input", "fc"), ("fc", "output")], type_check=False)
    p = wg(tmp_path / "bad.nir", g)
    res = cli("check", p, "--json")
    assert res.code == 1
    assert json.loads(res.stdout)["type_check"].startswith("failed")


@pytest.mark.parametrize("case", ["not_hdf5", "missing", "unknown_target", "unknown_model", "garbage_ckpt"])
def test_debug_shows_the_exception(cli, graph_file, tmp_path, case):
    """Without --debug: one line; with --debug the exception propagates (a traceback)."""
    bad = tmp_path / "bad.nir"
    bad.write_text("x")
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"garbage")
    args = {"not_hdf5": ("check", bad), "missing": ("run", tmp_path / "none.nir"),
            "unknown_target": ("validate", graph_file, "--targets", "torch,fpga"),
            "unknown_model": ("export", "--model", "resnet"),
            "garbage_ckpt": ("export", "--checkpoint", ck, "-o", tmp_path / "o.nir")}[case]
    assert_one_line_error(cli(*args))
    from neurodeploy.errors import NeurodeployError
    with pytest.raises(NeurodeployError):
        cli("--debug", *args)


# ------------------------------------------------------------------ real processes
def test_subprocess_errors_and_debug(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_text("not hdf5")
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"garbage")
    for args in (("check", bad), ("export", "--checkpoint", ck, "-o", tmp_path / "o.nir")):
        r = sh(*args)
        assert r.returncode == 2, r.stderr
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
        d = sh("--debug", *args)
        assert d.returncode != 0 and "Traceback" in d.stderr and "NeurodeployError" in d.stderr
    assert not (tmp_path / "o.nir").exists()


def test_subprocess_happy_json(graph_file):
    r = sh("check", graph_file, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["type_check"] == "ok"
