"""Issue 20: bad input, interrupts and hostile files, with nothing lost and nothing run.

Each class of problem the issue found is one group of tests, and every test checks the
three things a user sees: the exit status, one error line without a traceback, and the
files on disk afterwards (nothing partial, old files intact, no temporary folder left).

* bad options: every numeric option refused where it enters, naming the option and range;
* bad graphs: the parameters every backend relies on, refused once and identically by
  torch and Lava (``backends.compile`` validates for all of them);
* bad arrays and checkpoints: 0-d / empty / non-numeric inputs, NaN weights, a checkpoint
  of another model given with ``--model`` or ``--init-from`` / ``--from``;
* hostile files: pickles that would create a marker file, in every place a file is read;
* full disk: a real 256 KiB tmpfs (skipped where it cannot be mounted);
* signals: real processes and ``os.kill``: SIGTERM / SIGINT of a run (143 / 130) and SIGTERM
  of a training run, after which the same command resumes to the same weights (three
  training processes, ~20 s); marked ``lava``: SIGKILL / SIGSEGV of the Lava worker, SIGKILL
  of one of Lava's own processes, SIGTERM / SIGINT during a Lava run.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from neurodeploy import backends
from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.conventions import METADATA_KEY, GraphConventions, with_conventions
from neurodeploy.ir.io import read_graph, write_graph
from neurodeploy.training import checkpoint

DT = 1e-4
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers
def one_line_error(res, *needles, code=2):
    """Exit ``code``; the error is one line, 'error: ...', the last on stderr (progress bars and
    'running ...' notes may come before it), with no traceback anywhere."""
    assert res.code == code, (res.code, res.stderr)
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def lif(shape, beta=0.9, thr=1.0, tau=None):
    tau = DT / (1 - beta) if tau is None else tau
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, 10.0), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def tiny_graph(w1=None, lif1=None, extra_nodes=None, extra_edges=(), dt=DT, timesteps=4):
    """input(4) -> Affine -> LIF(8) -> Affine -> LIF(3) -> output: two layers, both backends run it."""
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc1": nir.Affine(weight=rng.normal(0, 1, (8, 4)) if w1 is None else w1, bias=np.zeros(8)),
             "lif1": lif1 or lif((8,)),
             "fc2": nir.Affine(weight=rng.normal(0, 1, (3, 8)), bias=np.zeros(3)),
             "lif2": lif((3,)),
             "output": nir.Output(output_type={"output": np.array([3])}),
             **(extra_nodes or {})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output"),
             *extra_edges]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with_conventions(g, GraphConventions(dt=dt, timesteps=timesteps, input_shape=(4,)))
    return g


def pool_graph(kernel, stride):
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0, 1, (2, 1, 3, 3)), stride=1, padding=1,
                                dilation=1, groups=1, bias=np.zeros(2)),
             "lif1": lif((2, 4, 4)),
             "pool": nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array([0, 0])),
             "lif2": lif((2, 2, 2)),
             "output": nir.Output(output_type={"output": np.array([2, 2, 2])})}
    edges = [("input", "conv"), ("conv", "lif1"), ("lif1", "pool"), ("pool", "lif2"), ("lif2", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with_conventions(g, GraphConventions(timesteps=4, input_shape=(1, 4, 4)))
    return g


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good")
    write_graph(d / "tiny.nir", tiny_graph())
    np.save(d / "x.npy", np.random.default_rng(0).random((5, 4)).astype(np.float32))
    return d


class Hostile:
    """Unpickling this runs ``touch MARKER``: any reader that trusts pickle creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------- 1. bad options
BAD_OPTIONS = [
    (("run", "{g}", "--samples", "0"), "--samples must be an integer >= 1, got 0"),
    (("run", "{g}", "--samples", "-3"), "--samples must be an integer >= 1"),
    (("run", "{g}", "--batch-size", "0"), "--batch-size must be an integer >= 1, got 0"),
    (("run", "{g}", "-T", "0"), "--timesteps must be an integer >= 1, got 0"),
    (("run", "{g}", "-T", "-1"), "--timesteps must be an integer >= 1, got -1"),
    (("run", "{g}", "--dt", "0"), "--dt must be a finite number > 0"),
    (("run", "{g}", "--dt", "-1"), "--dt must be a finite number > 0"),
    (("run", "{g}", "--dt", "nan"), "--dt must be a finite number > 0"),
    (("run", "{g}", "--device", "tpu"), "--device must be one of auto, cpu, cuda"),
    (("run", "{g}", "--target", "lava", "--samples", "0"), "--samples must be an integer >= 1"),
    (("run", "{g}", "--save-output", "{d}"), "is a folder"),
    (("validate", "{g}", "--min-agreement", "nan"), "--min-agreement must be a number in [0, 1], got nan"),
    (("validate", "{g}", "--targets", "torch,lava", "--lava-batch", "0"), "--lava-batch must be an integer >= 1, got 0"),
    (("validate", "{g}", "--min-agreement", "1.5"), "--min-agreement must be a number in [0, 1]"),
    (("validate", "{g}", "--min-agreement", "-0.1"), "--min-agreement must be a number in [0, 1]"),
    (("energy", "{g}", "--samples", "0"), "--samples must be an integer >= 1"),
    (("energy", "{g}", "--dt", "0"), "--dt must be a finite number > 0"),
    (("train", "--model", "mnasnet", "--twin", "gru", "-o", "{o}"), "--twin must be one of snn, cnn; got 'gru'"),
    (("train", "--model", "mnasnet", "--epochs", "0", "-o", "{o}"), "--epochs must be an integer >= 1, got 0"),
    (("train", "--model", "mnasnet", "--batch-size", "0", "-o", "{o}"), "--batch-size must be an integer >= 1"),
    (("train", "--model", "mnasnet", "-T", "0", "-o", "{o}"), "--timesteps must be an integer >= 1"),
    (("train", "--model", "mnasnet", "--lr", "0", "-o", "{o}"), "--lr must be a finite number > 0"),
    (("train", "--model", "mnasnet", "--limit", "0", "-o", "{o}"), "--limit must be an integer >= 1"),
    (("train", "--model", "mnasnet", "--seed", "-1", "-o", "{o}"), "--seed must be an integer >= 0, got -1"),
    (("train", "--model", "squeezenet", "--fires", "4,a", "-o", "{o}"),
     "--fires must be a comma-separated list of integers, e.g. 4,6,8,9; got '4,a'"),
    (("train", "--model", "squeezenet", "--fires", "1,4", "-o", "{o}"), "--fires: 1 not allowed"),
    (("train", "--model", "mnasnet", "--fires", "4,6", "-o", "{o}"), "mnasnet has none"),
    (("train-zoo", "--twins", "gru"), "--twins must be one of snn, cnn"),
    (("export", "--checkpoint", "{ck}", "-T", "0", "-o", "{o}"), "--timesteps must be an integer >= 1, got 0"),
    (("export", "--checkpoint", "{ck}", "-T", "-1", "-o", "{o}"), "--timesteps must be an integer >= 1, got -1"),
    (("export", "--checkpoint", "{ck}", "--format", "tflite", "-o", "{o}"), "--format must be one of nir, onnx, netx"),
    (("export", "--checkpoint", "{ck}", "--twin", "gru", "-o", "{o}"), "--twin must be one of snn, cnn"),
    (("prune", "--channel-ratio", "1.5", "-o", "{o}"), "--channel-ratio must be a number in (0, 1), got 1.5"),
    (("prune", "--channel-ratio", "0", "-o", "{o}"), "--channel-ratio must be a number in (0, 1)"),
    (("prune", "--keep-fires", "4,a", "-o", "{o}"), "--keep-fires must be a comma-separated list of integers"),
    (("prune", "--keep-fires", "4,6", "--epochs", "0", "-o", "{o}"), "--epochs must be an integer >= 1"),
    (("prune", "--model", "resnet", "--channel-ratio", "0.3", "-o", "{o}"), "unknown model 'resnet'"),
    (("bench", "--samples", "0", "-o", "{o}"), "--samples must be an integer >= 1"),
    (("bench", "--models", "resnet", "-o", "{o}"), "unknown model 'resnet'"),
    (("bench", "--dataset", "nope", "-o", "{o}"), "unknown dataset 'nope'"),
]


@pytest.mark.parametrize("args,message", BAD_OPTIONS, ids=[" ".join(a[:1] + a[2:4]) for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_and_writes_nothing(cli, good, tiny_ckpt, tmp_path, args, message):
    out = tmp_path / "out"
    fill = {"{g}": str(good / "tiny.nir"), "{d}": str(tmp_path), "{o}": str(out), "{ck}": str(tiny_ckpt)}
    before = sorted(os.listdir(good))
    res = cli(*[fill.get(a, a) for a in args])
    one_line_error(res, message)
    assert not out.exists()                          # no output folder or file, not even an empty one
    assert sorted(os.listdir(tmp_path)) == []
    assert sorted(os.listdir(good)) == before


# ---------------------------------------------------------------- 2. bad graphs: both backends refuse the same
def _graph_with_metadata(raw):
    g = tiny_graph()
    g.metadata = {METADATA_KEY: raw}
    return g


_W = np.random.default_rng(0).normal(0, 1, (8, 4))
BAD_GRAPHS = {
    "nan weight": (lambda: tiny_graph(w1=np.where(np.arange(32).reshape(8, 4) == 5, np.nan, _W)),
                   "node fc1 (Affine): weight must be finite"),
    "inf weight": (lambda: tiny_graph(w1=np.where(np.arange(32).reshape(8, 4) == 5, np.inf, _W)),
                   "node fc1 (Affine): weight must be finite"),
    "tau 0": (lambda: tiny_graph(lif1=lif((8,), tau=0.0)), "node lif1 (LIF): tau must be > 0 and at least dt"),
    "tau < 0": (lambda: tiny_graph(lif1=lif((8,), tau=-1e-3)), "node lif1 (LIF): tau must be > 0"),
    "negative threshold": (lambda: tiny_graph(lif1=lif((8,), thr=-1.0)), "node lif1 (LIF): v_threshold must be > 0"),
    "dt 0 in metadata": (lambda: tiny_graph(dt=0.0), "metadata has dt = 0.0; it must be a finite number > 0"),
    "dt < 0 in metadata": (lambda: tiny_graph(dt=-1e-4), "metadata has dt = -0.0001"),
    "T 0 in metadata": (lambda: tiny_graph(timesteps=0), "metadata has timesteps = 0"),
    "metadata a JSON list": (lambda: _graph_with_metadata(json.dumps([1, 2])), "metadata is a JSON list"),
    "metadata not JSON": (lambda: _graph_with_metadata("{not json"), "metadata is not valid JSON"),
    "self-loop Affine": (lambda: tiny_graph(extra_nodes={"loop": nir.Affine(weight=np.ones((8, 8)),
                                                                            bias=np.zeros(8))},
                                            extra_edges=[("lif1", "loop"), ("loop", "loop"), ("loop", "lif1")]),
                         "the edge loop -> loop closes a cycle with no neuron population"),
    "AvgPool kernel 0": (lambda: pool_graph([0, 0], [2, 2]), "node pool (AvgPool2d): kernel_size must be integers >= 1"),
    "AvgPool stride 0": (lambda: pool_graph([2, 2], [0, 0]), "node pool (AvgPool2d): stride must be integers >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_bad_graph_refused_by_every_backend_alike(cli, tmp_path, case):
    build, message = BAD_GRAPHS[case]
    path = write_graph(tmp_path / "bad.nir", build())
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((3, 1, 4, 4) if "AvgPool" in case else (3, 4)).astype(np.float32))
    out = tmp_path / "y.npy"
    msgs = set()
    for target in ("torch", "lava"):     # Lava's side refuses in compile(): no runtime needed
        res = cli("run", path, "--input", x, "--target", target, "--save-output", out)
        msgs.add(one_line_error(res, message))
        assert not out.exists()
    assert len(msgs) == 1, msgs          # the same line from both backends
    # the library answers the same way: supports() says no, compile() raises, for every backend
    graph = None
    try:
        graph = read_graph(path)
    except NeurodeployError as e:        # metadata problems are found when the file is read
        assert message in str(e)
    if graph is not None:
        for name in ("torch", "lava", "lava-float"):
            assert not backends.supports(name, graph).ok
            with pytest.raises(NeurodeployError, match="^" + re.escape(f"{path}: {message}")):
                backends.compile(name, graph, source=path)
        res = cli("check", path, "--json")
        assert res.code == 1 and json.loads(res.stdout)["type_check"].startswith("failed: ")
    assert sorted(os.listdir(tmp_path)) == ["bad.nir", "x.npy"]


def test_graph_metadata_that_is_a_list_is_one_line():
    from neurodeploy.ir.conventions import conventions_of
    g = tiny_graph()
    g.metadata = [1, 2]
    with pytest.raises(NeurodeployError, match="metadata is a list, not a mapping"):
        conventions_of(g)


def test_dt_override_is_checked_against_the_graph(cli, good):
    res = cli("run", good / "tiny.nir", "--input", good / "x.npy", "--dt", "1")   # tau ~ 1e-3 < dt
    one_line_error(res, "tau must be > 0 and at least dt = 1")
    res = cli("run", good / "tiny.nir", "--input", good / "x.npy", "--dt", "1e-5", "--json")
    assert res.code == 0, res.stderr


def test_library_runs_refuse_bad_arguments(good):
    prog = backends.compile("torch", good / "tiny.nir", device="cpu")
    x = np.load(good / "x.npy")
    for kw, message in (({"timesteps": 0}, "--timesteps must be an integer >= 1"),
                        ({"batch_size": 0}, "--batch-size must be an integer >= 1")):
        with pytest.raises(NeurodeployError, match=message):
            prog.run(x, **kw)
    with pytest.raises(NeurodeployError, match="holds no samples"):
        prog.run(x[:0])
    lava_prog = backends.compile("lava", good / "tiny.nir")     # checks before the runtime is involved
    with pytest.raises(NeurodeployError, match="--batch-size must be an integer >= 1"):
        lava_prog.run(x, batch_size=0)


# ---------------------------------------------------------------- 3. bad arrays and checkpoints
BAD_ARRAYS = {
    "0-d": (np.array(1.0, np.float32), "a 0-d array of shape ()"),
    "1-d": (np.zeros(4, np.float32), "a 1-d array of shape (4,)"),
    "no samples": (np.zeros((0, 4), np.float32), "holds no samples"),
    "strings": (np.array([["a", "b", "c", "d"]]), "holds <U1 values"),
    "complex": (np.ones((2, 4), np.complex64), "holds complex64 values"),
    "NaN": (np.full((2, 4), np.nan, np.float32), "holds NaN or infinite values"),
    "wrong rank": (np.zeros((2, 2, 2, 4), np.float32), "does not fit the graph's input (4,)"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_input_array(cli, good, tmp_path, case):
    arr, message = BAD_ARRAYS[case]
    np.save(tmp_path / "x.npy", arr)
    res = cli("run", good / "tiny.nir", "--input", tmp_path / "x.npy", "--save-output", tmp_path / "y.npy")
    one_line_error(res, message)
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_labels_must_be_class_indices(cli, good, tmp_path):
    np.save(tmp_path / "y.npy", np.array([0.5, 1, 2, 0, 1]))
    one_line_error(cli("run", good / "tiny.nir", "--input", good / "x.npy", "--labels", tmp_path / "y.npy"),
                   "labels must be integers")


def test_export_refuses_a_checkpoint_of_another_model(cli, tiny_zoo, tmp_path):
    out = tmp_path / "g.nir"
    res = cli("export", "--model", "pruned_squeezenet", "--checkpoint", tiny_zoo / "mixnet" / "snn.pt", "-o", out)
    one_line_error(res, "holds mixnet (snn, 10 classes, input 1x16x16), not pruned_squeezenet")
    assert not out.exists()
    res = cli("export", "--model", "mixnet", "--checkpoint", tiny_zoo / "mixnet" / "snn.pt", "-o", out)
    assert res.code == 0, res.stderr                 # the same model: fine


def test_export_refuses_nan_weights(cli, tiny_ckpt, tmp_path):
    payload = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    payload["state_dict"][name] = payload["state_dict"][name].clone().fill_(float("nan"))
    ck = tmp_path / "snn.pt"
    torch.save(payload, ck)
    for fmt in ("nir", "onnx", "netx"):
        out = tmp_path / f"g.{fmt}"
        one_line_error(cli("export", "--checkpoint", ck, "--format", fmt, "-o", out),
                       f"tensor {name} holds", "NaN or infinite")
        assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["snn.pt"]


def test_init_from_another_architecture_is_refused(cli, tiny_zoo, tmp_path):
    out = tmp_path / "t"
    res = cli("train", "--model", "mnasnet", "--init-from", tiny_zoo / "mixnet" / "snn.pt", "--epochs", "1",
              "--limit", "32", "-o", out)
    one_line_error(res, "holds mixnet (snn, 10 classes, input 1x16x16), which cannot start mnasnet (10 classes, "
                        "input 1x32x32): the architectures differ")
    assert not out.exists()


def test_init_from_other_classes_or_channels_is_refused(tiny_ckpt):
    from neurodeploy.architectures import build
    payload = checkpoint.read(tiny_ckpt)
    args = dict(payload["arguments"])
    for change, needle in (({"num_classes": 7}, "num_classes 10 there, 7 here"),
                           ({"in_channels": 3}, "in_channels 1 there, 3 here")):
        model = build("mnasnet", "snn", **{**args, **change})
        with pytest.raises(NeurodeployError, match=needle):
            checkpoint.check_compatible(tiny_ckpt, payload, model)
    assert checkpoint.check_compatible(tiny_ckpt, payload, build("mnasnet", "cnn", **args)) > 0   # CNN -> SNN twin


def test_prune_refuses_a_checkpoint_of_another_model(cli, tiny_zoo, tmp_path):
    for method in (("--keep-fires", "4,6"), ("--channel-ratio", "0.3")):
        res = cli("prune", "--model", "squeezenet", *method, "--from", tiny_zoo / "mixnet" / "snn.pt",
                  "-o", tmp_path / "p")
        one_line_error(res, "holds mixnet (snn, 10 classes, input 1x16x16), not a squeezenet")
    assert not (tmp_path / "p").exists()


def test_bench_with_unknown_names_creates_nothing(tmp_path, tiny_zoo, monkeypatch):
    from neurodeploy.reports.bench import run_bench
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tiny_zoo))
    for models, dataset, needle in ((["resnet"], "mnist5k", "unknown model"), (["mnasnet"], "nope", "unknown dataset"),
                                    (["xception"], "mnist5k", "has no snn.pt for xception")):
        with pytest.raises(NeurodeployError, match=needle):
            run_bench(models, dataset, 8, tmp_path / "b", device="cpu")
        assert not (tmp_path / "b").exists()


def test_bench_failing_before_its_first_row_removes_its_folders(tmp_path, tiny_zoo, monkeypatch):
    from neurodeploy.reports import bench
    monkeypatch.setenv("NEURODEPLOY_ZOO", str(tiny_zoo))

    def broken(*a, **k):
        raise NeurodeployError("measuring failed")

    monkeypatch.setattr(bench, "measure_model", broken)
    with pytest.raises(NeurodeployError, match="measuring failed"):
        bench.run_bench(["mnasnet"], "mnist5k", 8, tmp_path / "b", device="cpu")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- 4. hostile files run nothing
def test_hostile_checkpoints_run_nothing(cli, tmp_path, good):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "neurodeploy-checkpoint/1", "model": Hostile(marker)}))
    for args in (("export", "--checkpoint", evil, "-o", tmp_path / "g.nir"),
                 ("train", "--model", "mnasnet", "--init-from", evil, "--epochs", "1", "-o", tmp_path / "t"),
                 ("prune", "--model", "mnasnet", "--channel-ratio", "0.3", "--from", evil, "-o", tmp_path / "p")):
        one_line_error(cli(*args), "not a readable checkpoint")
        assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ["evil.pt"]


def test_hostile_checkpoint_named_by_a_graph_runs_nothing(cli, tmp_path, good):
    """A graph's metadata names the checkpoint the 'model' backend rebuilds: a hostile one is refused."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Hostile(marker)))
    g = read_graph(good / "tiny.nir")
    from neurodeploy.ir.conventions import conventions_of, replace
    with_conventions(g, replace(conventions_of(g), model="mnasnet", checkpoint=str(evil)))
    path = write_graph(tmp_path / "g.nir", g)
    res = cli("validate", path, "--targets", "model,torch", "--input", good / "x.npy")
    one_line_error(res)
    assert not marker.exists()


@pytest.mark.parametrize("what", ["--input", "--labels"])
def test_hostile_npy_runs_nothing(cli, tmp_path, good, what):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([Hostile(marker)], dtype=object), allow_pickle=True)
    args = ("--input", evil) if what == "--input" else ("--input", good / "x.npy", "--labels", evil)
    one_line_error(cli("run", good / "tiny.nir", *args), "not a .npy array")
    assert not marker.exists()


def test_hostile_counts_json_is_refused(cli, tmp_path, good):
    counts = tmp_path / "c.json"
    for text in ('{"samples": "lots", "populations": [1, 2]}', "[1, 2]", "not json",
                 '{"samples": 0, "timesteps": 4, "populations": {}, "projections": {}}'):
        counts.write_text(text)
        one_line_error(cli("energy", good / "tiny.nir", "--counts", counts), "not a counters JSON")


# ---------------------------------------------------------------- 5. a full disk
@pytest.fixture
def full_disk(tmp_path):
    """A real 256 KiB tmpfs (root only), filled up by the test with fill()."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(d: Path):
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_export_to_a_full_disk_is_one_line(full_disk, tiny_ckpt):
    """This export segfaulted with thousands of lines (HDF5 on a full disk): it runs in its own process."""
    fill(full_disk)
    r = subprocess.run([sys.executable, "-m", "neurodeploy", "export", "--checkpoint", str(tiny_ckpt),
                        "-o", str(full_disk / "g.nir")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == f"error: no space left on the device holding {full_disk}: {full_disk / 'g.nir'} " \
                               "was not written"
    assert sorted(os.listdir(full_disk)) == ["filler"]


@pytest.mark.parametrize("option", ["--save-output", "--save-counts"])
def test_run_outputs_on_a_full_disk_keep_the_old_file(cli, full_disk, good, option):
    old = full_disk / "old.out"
    old.write_bytes(b"the previous result")
    fill(full_disk)
    x = full_disk.parent / "x.npy"
    np.save(x, np.random.default_rng(0).random((4000, 4)).astype(np.float32))   # outputs larger than what is left
    res = cli("run", good / "tiny.nir", "--input", x, option, old, "--device", "cpu")
    one_line_error(res, "no space left on the device holding", "the previous file is unchanged")
    assert old.read_bytes() == b"the previous result"
    assert sorted(os.listdir(full_disk)) == ["filler", "old.out"]


@pytest.mark.usefixtures("small_test_split")
def test_train_on_a_full_disk_leaves_nothing(cli, full_disk):
    fill(full_disk)
    out = full_disk / "t"
    res = cli("train", "--model", "mnasnet", "--epochs", "1", "--limit", "32", "--batch-size", "16", "-T", "2",
              "--device", "cpu", "-o", out)
    one_line_error(res, "no space left on the device holding")
    assert sorted(os.listdir(full_disk)) == ["filler"]          # not even the empty output folder


def test_write_keeps_the_old_file_when_the_os_refuses(tmp_path, monkeypatch):
    """Without root (no tmpfs): the OS's ENOSPC at the flush before the rename."""
    import errno
    from neurodeploy import fsutil
    target = tmp_path / "g.nir"
    target.write_bytes(b"old")

    def enospc(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil, "_fsync", enospc)
    with pytest.raises(NeurodeployError, match="no space left on the device holding .*the previous file is unchanged"):
        write_graph(target, tiny_graph())
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["g.nir"]


# ---------------------------------------------------------------- 6. signals, with real processes
def _command(args, tmpdir: Path, script=None, env_extra=None, **popen):
    """``python -m neurodeploy ARGS`` (or a driver script) with a private TMPDIR; one thread
    per process keeps the shared test machine responsive."""
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env_extra or {}))
    argv = [sys.executable, *(["-c", script] if script else ["-m", "neurodeploy"]), *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            **popen)


def _wait_for_handler(proc, timeout=120.0):
    """Until the command has installed its SIGTERM handler (SigCgt in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("the command never installed its SIGTERM handler")


def _until(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


SIGNALS = {"SIGTERM": (143, "terminated by SIGTERM"), "SIGINT": (130, "interrupted"),
           "SIGHUP": (129, "terminated by SIGHUP")}


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_during_a_run_exits_128_plus_it_and_writes_nothing(tmp_path, good, sig):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((4096, 4)).astype(np.float32))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _command(["run", good / "tiny.nir", "--input", x, "-T", "4000", "--batch-size", "16", "--device", "cpu",
                     "--save-output", tmp_path / "y.npy", "--save-counts", tmp_path / "c.json"], tmpdir)
    try:
        _wait_for_handler(proc)
        time.sleep(0.5)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == SIGNALS[sig][0], err[-2000:]
    assert err.strip().splitlines()[-1] == SIGNALS[sig][1] and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["tmp", "x.npy"]
    assert not [p for p in os.listdir(tmpdir) if p.startswith("neurodeploy")]


DRIVER = """
import os, sys, time
from dataclasses import replace
import torch
from neurodeploy.training import data, train as train_mod
orig_load, orig_train = data.load_tensors, train_mod.train
def small(name, split, input_size=None, data_dir=None, limit=None, **kw):
    return orig_load(name, split, input_size, data_dir, limit=16 if split == "test" else limit, **kw)
data.load_tensors = small                      # the card's test evaluation on 16 images
train_mod.train = lambda cfg, *a, **k: orig_train(replace(cfg, input_size=16), *a, **k)   # 16x16 digits
pause = int(os.environ.get("PAUSE_AT_STEP", 0))
if pause:                                      # stop mid-epoch, say so, and wait for the signal
    step = torch.optim.lr_scheduler.OneCycleLR.step
    def paused(self, *a, **k):
        step(self, *a, **k)
        if self.last_epoch == pause:
            open(os.environ["PAUSED"], "w").close()
            time.sleep(120)
    torch.optim.lr_scheduler.OneCycleLR.step = paused
from neurodeploy.cli import entry
sys.argv = ["neurodeploy", *sys.argv[1:]]
entry()
"""


def test_sigterm_during_training_then_the_same_command_resumes_exactly(tmp_path):
    """The resume state is written atomically at every epoch's end. SIGTERM in the middle
    of epoch 2 exits 143 and leaves epoch 1's state (and nothing partial); the same command
    then finishes with exactly the weights of a run that was never interrupted (with
    augmentation, whose draws come from the generator whose state the resume state carries)."""
    args = ["train", "--model", "mnasnet", "--epochs", "2", "--limit", "64", "--batch-size", "16", "-T", "2",
            "--augment", "--device", "cpu", "-o"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    paused = tmp_path / "paused"
    ref = _command([*args, tmp_path / "ref"], tmpdir, script=DRIVER)
    run = _command([*args, tmp_path / "run"], tmpdir, script=DRIVER,
                   env_extra={"PAUSE_AT_STEP": "6", "PAUSED": str(paused)})    # epoch 2 of 4 + 4 steps
    try:
        assert _until(lambda: paused.exists() or run.poll() is not None, 300) and run.poll() is None, \
            run.communicate()[1][-2000:]
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=120)
        assert run.returncode == 143, err[-2000:]
        assert err.strip().splitlines()[-1] == "terminated by SIGTERM" and "Traceback" not in err
        assert sorted(os.listdir(tmp_path / "run")) == ["snn.last.pt"]      # no checkpoint, nothing partial
        assert torch.load(tmp_path / "run" / "snn.last.pt", weights_only=True)["epoch"] == 1
        again = _command([*args, tmp_path / "run"], tmpdir, script=DRIVER)
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err[-2000:]
        _, err = ref.communicate(timeout=300)
        assert ref.returncode == 0, err[-2000:]
    finally:
        for p in (ref, run):
            p.kill()
    a = checkpoint.read(tmp_path / "ref" / "snn.pt")
    b = checkpoint.read(tmp_path / "run" / "snn.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["card"]["history"] == b["card"]["history"]
    assert sorted(os.listdir(tmp_path / "run")) == ["snn.json", "snn.pt"]
    assert not [p for p in os.listdir(tmpdir) if p.startswith("neurodeploy")]


# ---------------------------------------------------------------- 7. the Lava worker, killed (real runtime)
from neurodeploy.backends.lava.runtime import runtime_status  # noqa: E402

_lava = runtime_status()
needs_lava = pytest.mark.skipif(not _lava["installed"], reason=f"Lava runtime missing ({_lava.get('reason')})")


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def _live_in_group(pgid):
    """Processes of the group that still run (zombies wait for init to reap them)."""
    r = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split("\n")
    return [l for l in r if l.strip() and not l.split()[1].startswith("Z")]


@pytest.fixture
def lava_run(tmp_path, good):
    """A tiny 2-layer graph on Lava, long enough (T=2000, 20 samples) to be killed mid-run;
    yields (process, worker pid, its private TMPDIR) once Lava's processes are up."""
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((20, 4)).astype(np.float32))
    tmpdir = Path(tempfile.mkdtemp(prefix="ndt-", dir="/tmp"))    # short: the run's folder goes inside
    proc = _command(["run", good / "tiny.nir", "--input", x, "--target", "lava", "-T", "2000",
                     "--save-output", tmp_path / "y.npy"], tmpdir)

    def worker():
        ws = [c for c in _children(proc.pid) if "lava.worker" in _cmdline(c)]
        return ws[0] if ws and len(_children(ws[0])) >= 3 else None
    try:
        w = _until(lambda: worker() or (proc.poll() is not None and -1), 120)
        assert w and w != -1, proc.communicate()[1][-2000:]
        time.sleep(0.5)
        yield proc, w, tmpdir
    finally:
        proc.kill()
        proc.communicate()
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_lava_run_folder_stays_short_enough_for_unix_sockets(monkeypatch, tmp_path):
    """Lava's multiprocessing makes Unix sockets (at most 107 bytes of path) inside the run's
    folder: under a long TMPDIR the folder goes to /tmp instead (before, Lava failed with EOFError)."""
    from neurodeploy.backends.lava import _short_temp_root
    long = tmp_path / ("x" * 60)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert _short_temp_root() == "/tmp"
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    assert _short_temp_root() == "/tmp"


def _finish(proc, tmp_path, tmpdir, worker, timeout=30.0):
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    took = time.monotonic() - t0
    assert "Traceback" not in err
    assert not (tmp_path / "y.npy").exists()
    assert os.listdir(tmpdir) == []                      # run folders, Lava's pymp-* folders: all gone
    assert _until(lambda: not _live_in_group(worker), 5), _live_in_group(worker)   # no Lava process left
    return err.strip().splitlines()[-1], took


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSEGV"])
def test_killed_lava_worker_is_one_line_within_seconds(lava_run, tmp_path, sig):
    proc, worker, tmpdir = lava_run
    os.kill(worker, getattr(signal, sig))
    line, took = _finish(proc, tmp_path, tmpdir, worker)
    assert proc.returncode == 2
    how = "was killed" if sig == "SIGKILL" else "crashed"
    assert line == f"error: Lava run failed: the Lava worker (pid {worker}) {how} with {sig} (exit status " \
                   f"-{getattr(signal, sig).value}); its Lava processes were stopped"
    assert took < 5.0, took


@pytest.mark.lava
@needs_lava
def test_killed_lava_process_is_one_line_within_seconds(lava_run, tmp_path):
    proc, worker, tmpdir = lava_run
    victim = [c for c in _children(worker) if "lava.worker" in _cmdline(c)][-1]     # one of Lava's model processes
    os.kill(victim, signal.SIGKILL)
    line, took = _finish(proc, tmp_path, tmpdir, worker)
    assert proc.returncode == 2
    assert line == (f"error: Lava run failed: a Lava runtime process (pid {victim}, started by the worker {worker}) "
                    "was killed with SIGKILL while the network ran; the run was stopped")
    assert took < 5.0, took


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_during_a_lava_run_stops_lava_and_exits_128_plus_it(lava_run, tmp_path, sig):
    proc, worker, tmpdir = lava_run
    proc.send_signal(getattr(signal, sig))
    line, took = _finish(proc, tmp_path, tmpdir, worker)
    assert (proc.returncode, line) == SIGNALS[sig]
    assert took < 5.0, took


LIBRARY_RUN = """
import sys
import nir
import numpy as np
from neurodeploy import backends
x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
if sys.argv[2] == "netx":                       # lava-dl's netx loader, in its own worker
    from neurodeploy.backends.lava import netx
    netx.write_netx(nir.read(sys.argv[1]), sys.argv[3])
    netx.run_netx(sys.argv[3], x, 2000)
else:
    graph = nir.read(sys.argv[1]) if sys.argv[2] == "graph" else sys.argv[1]
    prog = backends.compile("lava", graph)     # a graph object: the program writes it to a folder of its own
    prog.run(x, timesteps=2000)
"""


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("given", ["path", "graph", "netx"])
def test_a_library_program_killed_mid_run_leaves_no_lava_process_or_folder(good, tmp_path, given):
    """A program using the library cannot clean up when a signal ends it (SIGKILL here;
    SIGTERM where it installs no handler). Its Lava worker (or netx worker) notices within
    a second that its parent is gone, stops Lava's processes, and removes the run's folder
    and the folder the program wrote its graph to."""
    tmpdir = Path(tempfile.mkdtemp(prefix="ndt-", dir="/tmp"))
    module = "lava.netx" if given == "netx" else "lava.worker"
    try:
        proc = _command([good / "tiny.nir", given, tmp_path / "tiny.netx.h5"], tmpdir, script=LIBRARY_RUN)

        def worker():
            ws = [c for c in _children(proc.pid) if module in _cmdline(c)]
            return ws[0] if ws and len(_children(ws[0])) >= 3 else None
        w = _until(lambda: worker() or (proc.poll() is not None and -1), 120)
        assert w and w != -1, proc.communicate()[1][-2000:]
        time.sleep(0.5)
        assert any(p.startswith("neurodeploy-") for p in os.listdir(tmpdir))
        proc.kill()
        proc.communicate()
        assert _until(lambda: not _live_in_group(w), 10), _live_in_group(w)
        assert _until(lambda: os.listdir(tmpdir) == [], 10), os.listdir(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.lava
@needs_lava
def test_empty_input_on_lava_is_refused_not_hung(good):
    prog = backends.compile("lava", good / "tiny.nir")
    with pytest.raises(NeurodeployError, match="holds no samples"):
        prog.run(np.zeros((0, 4), np.float32))


def test_a_signal_dropped_by_a_callback_is_delivered_again():
    """A signal whose exception lands in a weakref callback (Python prints and drops it
    there: an import's module lock, a numba cache load) must still stop the command."""
    import weakref
    from neurodeploy import cli
    from neurodeploy.errors import Terminated

    class Node:
        pass

    def callback(_):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000):      # the handler runs here, inside the callback
            pass

    previous = cli._handle_termination()
    try:
        node = Node()
        ref = weakref.ref(node, callback)
        with pytest.raises(Terminated):
            del node
            for _ in range(200):     # the signal delivered again lands in the command's own code
                time.sleep(0.005)
        assert ref() is None
    finally:
        cli._restore_handlers(previous)
    assert sys.unraisablehook is sys.__unraisablehook__ or "swallowed" not in repr(sys.unraisablehook)


def test_a_half_built_objects_complaint_after_a_signal_is_not_printed(monkeypatch):
    """After a signal, an object it stopped half-built may fail in its __del__ (llvmlite's
    PassBuilder did, in CI): Python prints that as 'Exception ignored' with a traceback.
    The user asked the command to stop; that traceback must not reach them."""
    from neurodeploy import cli

    class HalfBuilt:
        def __del__(self):
            del self.handle          # never set: AttributeError, printed and dropped

    printed = []     # stands for Python's own hook, which prints 'Exception ignored' and the traceback
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_type))
    previous = cli._handle_termination()
    try:
        HalfBuilt()
        assert printed == [AttributeError]      # before a signal: shown as usual
        cli.STATE["terminating"] = True
        HalfBuilt()
        assert printed == [AttributeError]
    finally:
        cli.STATE["terminating"] = False
        cli._restore_handlers(previous)


def test_a_signal_during_an_import_waits_for_the_import(tmp_path, monkeypatch):
    """A signal that lands while a module is being imported is delivered once the import
    is done: raising inside it leaves the module half-built (and inside torch's C++ import
    code the exception aborted the process)."""
    from neurodeploy import cli
    from neurodeploy.errors import Terminated

    (tmp_path / "slow_module_for_signal_test.py").write_text(
        "import os, signal\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "for _ in range(200000):\n"
        "    pass\n"
        "finished = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = cli._handle_termination()
    try:
        with pytest.raises(Terminated):
            import slow_module_for_signal_test  # noqa: F401
            for _ in range(200):     # the signal, delivered again, lands here
                time.sleep(0.005)
        assert sys.modules["slow_module_for_signal_test"].finished
    finally:
        cli._restore_handlers(previous)
        sys.modules.pop("slow_module_for_signal_test", None)
