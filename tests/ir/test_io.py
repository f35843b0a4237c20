"""Reading and writing NIR files (one-line errors, atomic writes) and the graph metadata."""
from __future__ import annotations

import os

import h5py
import nir
import numpy as np
import pytest

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir import io as gio
from neurodeploy.ir.io import read_graph, write_graph
from neurodeploy.ir.conventions import (FOREIGN_DEFAULTS, METADATA_KEY, GraphConventions, conventions_of,
                                        with_conventions)

DT = 1e-4


def lif(shape, beta=0.5, thr=1.0):
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def dense_graph():
    w = np.array([[1.0, 0.0, 0.5], [0.25, -1.0, 2.0]], np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=w, bias=np.array([0.5, 0.0], np.float32)),
             "lif": lif((2,)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)


def depthwise_graph():
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([3, 6, 6])}),
             "dw": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(size=(3, 1, 3, 3)).astype(np.float32),
                              stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=3,
                              bias=np.zeros(3, np.float32)),
             "lif": lif((3, 6, 6)),
             "output": nir.Output(output_type={"output": np.array([3, 6, 6])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "dw"), ("dw", "lif"), ("lif", "output")], type_check=False)


def parts(folder):
    return [p for p in os.listdir(folder) if p.endswith(".part")]


# ---------------------------------------------------------------- read errors
def _read_error(path) -> str:
    with pytest.raises(NeurodeployError) as e:   # nothing but NeurodeployError gets out
        read_graph(path)
    assert type(e.value) is NeurodeployError
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_read_missing_file(tmp_path):
    assert "no such file" in _read_error(tmp_path / "nope.nir")


def test_read_non_hdf5_file(tmp_path):
    p = tmp_path / "model.nir"
    p.write_text("this is not HDF5\n" * 50)
    assert "not an HDF5 file" in _read_error(p)


def test_read_hdf5_without_node_group(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", data=np.arange(10))
    assert "no 'node' group" in _read_error(p)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9])
def test_read_truncated_file(tmp_path, keep):
    p = write_graph(tmp_path / "g.nir", dense_graph())
    data = p.read_bytes()
    p.write_bytes(data[:int(len(data) * keep)])
    _read_error(p)


def test_read_single_node_file(tmp_path):
    p = tmp_path / "node.nir"
    nir.write(p, lif((2,)))
    _read_error(p)


def test_read_directory(tmp_path):
    _read_error(tmp_path)


# ---------------------------------------------------------------- write
def test_write_read_roundtrip_values(tmp_path):
    g = dense_graph()
    p = write_graph(tmp_path / "sub" / "dir" / "g.nir", g)     # creates the folders
    assert p.exists() and not parts(p.parent)
    back = read_graph(p)
    assert set(back.nodes) == set(g.nodes)
    assert sorted(map(tuple, back.edges)) == sorted(g.edges)
    np.testing.assert_array_equal(back.nodes["fc"].weight, g.nodes["fc"].weight)
    np.testing.assert_array_equal(back.nodes["fc"].bias, g.nodes["fc"].bias)
    np.testing.assert_array_equal(back.nodes["lif"].tau, g.nodes["lif"].tau)


def test_write_failure_leaves_no_part_and_keeps_old_file(tmp_path, monkeypatch):
    p = write_graph(tmp_path / "g.nir", dense_graph())
    before = p.read_bytes()

    def broken_write(f, graph):      # the file is built in memory (ir.io.graph_bytes), then written
        f.write(b"\x89HDF\r\n half a file")
        raise OSError("disk full")

    monkeypatch.setattr(gio.nir, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_graph(p, dense_graph())
    assert p.read_bytes() == before          # the old file is untouched: the write is atomic
    assert not parts(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["g.nir"]
    monkeypatch.undo()
    read_graph(p)


def test_write_unserialisable_graph_leaves_nothing(tmp_path):
    bad = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}), "x": object()},
                       edges=[("input", "x")], type_check=False)
    with pytest.raises(Exception):
        write_graph(tmp_path / "bad.nir", bad)
    assert os.listdir(tmp_path) == []


def test_write_keyboard_interrupt_cleans_up(tmp_path, monkeypatch):
    def interrupted(f, graph):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(gio.nir, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_graph(tmp_path / "g.nir", dense_graph())
    assert os.listdir(tmp_path) == []


def test_written_file_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_graph(tmp_path / "g.nir", dense_graph())
    finally:
        os.umask(old)
    assert (os.stat(p).st_mode & 0o777) == 0o644


# ---------------------------------------------------------------- the NIR depthwise bug
def test_depthwise_needs_type_check_off(tmp_path):
    p = write_graph(tmp_path / "dw.nir", depthwise_graph())
    with pytest.raises(Exception):
        nir.read(p)                             # NIR 1.0.8: input type from weight.shape[1] = C_in/groups
    g = nir.read(p, type_check=False)
    assert int(g.nodes["dw"].groups) == 3
    ours = read_graph(p)
    assert int(ours.nodes["dw"].groups) == 3
    np.testing.assert_array_equal(ours.nodes["dw"].weight, depthwise_graph().nodes["dw"].weight)


def test_dense_graph_reads_with_type_check(tmp_path):
    p = write_graph(tmp_path / "g.nir", dense_graph())
    nir.read(p)                                 # no grouped conv: other tools read it as it is


# ---------------------------------------------------------------- metadata
def test_conventions_roundtrip(tmp_path):
    conv = GraphConventions(dt=5e-4, timesteps=6, input_shape=(3, 6, 6), num_classes=7, model="tiny",
                            twin="snn", reset="zero", extra={"note": "x"})
    g = with_conventions(depthwise_graph(), conv)
    assert METADATA_KEY in g.metadata
    back = conventions_of(read_graph(write_graph(tmp_path / "g.nir", g)))
    assert back.from_metadata is True
    assert back.dt == 5e-4 and back.timesteps == 6 and back.input_shape == (3, 6, 6)
    assert back.num_classes == 7 and back.model == "tiny" and back.reset == "zero"
    assert back.extra == {"note": "x"}
    assert back == GraphConventions(**{**conv.__dict__, "from_metadata": True})


def test_unknown_metadata_keys_go_to_extra():
    g = dense_graph()
    g.metadata = {METADATA_KEY: '{"dt": 0.001, "future_field": 3}'}
    c = conventions_of(g)
    assert c.dt == 0.001 and c.extra == {"future_field": 3} and c.from_metadata


def test_foreign_graph_gets_defaults(tmp_path):
    g = dense_graph()
    assert conventions_of(g) is FOREIGN_DEFAULTS
    back = read_graph(write_graph(tmp_path / "g.nir", g))
    c = conventions_of(back)
    assert c == FOREIGN_DEFAULTS and c.from_metadata is False
    assert c.dt == 1e-4 and c.timesteps is None and c.reset == "to_v_reset"
