"""Data-parallel training (training/distributed.py): two gloo processes on the CPU.

One launch of two ranks (tests/training/ddp_worker.py, started with torchrun's variables)
runs every multi-process job; the tests compare what the ranks recorded with each other
and with one process training the same configuration in this one.

Tolerance of "equal to one process". The two runs add the same float32 numbers in a
different order (each rank sums its share, then the shares are summed), which changes
the last bits of the BatchNorm statistics and of the gradients (~1e-7 relative).
AdamW's first steps move each weight by about lr * sign(gradient), so a gradient
element that is zero up to that rounding can step either way in the two runs and differ
by up to 2 lr (without augmentation 3 weights in 100,000 did). The check is therefore on
the whole update: ||dW_2 - dW_1|| / ||dW_1|| <= 1e-3, dW the change from the initial
weights after each step. Measured: 1.7e-5..2.6e-5 (BatchNorm inside the fused LIF loops);
each rank normalising with its own share's statistics gives 1.4, and the two shares of
the uneven batch (7 + 6) weighted equally give 0.036. The spiking twin is compared: the
tiny CNN twin is ill-conditioned in float32 (its gradients change by 4 % when one
process merely permutes the batch), so no two float32 runs of it agree better. The
configuration is one where rounding does not move spikes (a one-ulp change of the input
images changes none of the outputs); at T=4, 32x32, batch 64 the untrained spiking twin
is chaotic (the same change moves 575 of 640 outputs), and no two float32 runs that
round differently stay together there (README, "Data-parallel training").
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neurodeploy
from neurodeploy.errors import NeurodeployError
from neurodeploy.training import checkpoint, data, distributed
from neurodeploy.training.train import build_from_config, train

from conftest import _small_load_tensors, tiny_config

pytestmark = pytest.mark.usefixtures("small_test_split")

WORKER = Path(__file__).with_name("ddp_worker.py")
# 32 samples: 29 to train on, in batches of 16 and 13 (8 + 8 and 7 + 6 per rank)
CONFIG = {"model": "mnasnet", "epochs": 2, "augment": True}
STEPS_PER_EPOCH = 2
JOBS = [
    {"name": "batchnorm", "kind": "batchnorm"},
    {"name": "synchronised", "config": CONFIG, "sync_bn": True},
    {"name": "per_rank_bn", "config": CONFIG},
    {"name": "interrupted", "config": CONFIG, "sync_bn": True, "stop_after": STEPS_PER_EPOCH + 1},
    {"name": "small_batch", "config": {**CONFIG, "batch_size": 3}},
    {"name": "failing", "config": {**CONFIG, "epochs": 1}, "fail_rank": 1},
]
TOLERANCE = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The folder with every job's records from both ranks."""
    out = tmp_path_factory.mktemp("ranks")
    jobs = out / "jobs.json"
    jobs.write_text(json.dumps(JOBS))
    root = str(Path(neurodeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1", distributed.TIMEOUT_VARIABLE: "120"}
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(jobs), str(out)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=300)[0] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(ranks, logs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{log[-3000:]}"
    return out


def records(folder: Path, job: str, rank: int):
    error = folder / f"{job}.rank{rank}.error"
    assert not error.exists(), error.read_text()
    return torch.load(folder / f"{job}.rank{rank}.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same configuration trained by one process: (weights after every step, output folder)."""
    out = tmp_path_factory.mktemp("one")
    steps = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_tensors", _small_load_tensors)
        train(tiny_config(**CONFIG), out, after_step=lambda m: steps.append(_state(m)))
    return steps, out


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _parameters(state: dict) -> torch.Tensor:
    return torch.cat([v.double().flatten() for k, v in state.items() if k.endswith(("weight", "bias"))])


def _initial() -> torch.Tensor:
    torch.manual_seed(0)
    return _parameters(build_from_config(tiny_config(**CONFIG), 10, 1, 16).state_dict())


def update_difference(a: dict, b: dict, initial: torch.Tensor) -> float:
    """||dW_a - dW_b|| / ||dW_b||, dW the change of the parameters from ``initial``."""
    pa, pb = _parameters(a), _parameters(b)
    return float((pa - pb).norm() / (pb - initial).norm())


def test_batchnorm_across_ranks_is_batchnorm_of_the_whole_batch(two_ranks):
    import ddp_worker
    bn, x, w = ddp_worker.batchnorm_case()
    x = x.clone().requires_grad_()
    y = bn(x)
    (y * w).sum().backward()
    r = [records(two_ranks, "batchnorm", rank) for rank in (0, 1)]
    close = dict(rtol=1e-5, atol=1e-5)     # float32 sums in another order
    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r[0]["dx"], r[1]["dx"]]), x.grad, **close)
    # parameter gradients stay per rank (DDP sums them): the loss is the sum over both ranks
    torch.testing.assert_close(r[0]["dweight"] + r[1]["dweight"], bn.weight.grad, **close)
    torch.testing.assert_close(r[0]["dbias"] + r[1]["dbias"], bn.bias.grad, **close)
    for rank in r:
        torch.testing.assert_close(rank["running_mean"], bn.running_mean, **close)
        torch.testing.assert_close(rank["running_var"], bn.running_var, **close)


@pytest.mark.parametrize("job", ["synchronised", "per_rank_bn"])
def test_ranks_hold_identical_weights_after_every_step(two_ranks, job):
    r0, r1 = records(two_ranks, job, 0), records(two_ranks, job, 1)
    assert len(r0) == len(r1) == 2 * STEPS_PER_EPOCH
    for step, (a, b) in enumerate(zip(r0, r1), 1):
        # bit for bit: every rank applies the same all-reduced gradient. Per-rank BatchNorm
        # statistics (buffers) differ until DDP sends rank 0's at the next forward pass.
        keys = a if job == "synchronised" else [k for k in a if k.endswith(("weight", "bias"))]
        different = [k for k in keys if not torch.equal(a[k], b[k])]
        assert not different, f"step {step}: {different[:3]}"


def test_synchronised_batchnorm_equals_one_process_with_the_same_batch(two_ranks, one_process):
    steps, _ = one_process
    initial = _initial()
    two = records(two_ranks, "synchronised", 0)
    assert len(two) == len(steps)
    for step, (a, b) in enumerate(zip(two, steps), 1):
        assert update_difference(a, b, initial) <= TOLERANCE, step
    # the BatchNorms ran inside the fused LIF loops (forward and backward), summed across ranks
    assert int((two_ranks / "synchronised.rank0.summed").read_text()) >= 2 * len(steps)
    assert int((two_ranks / "per_rank_bn.rank0.summed").read_text()) == 0
    # the check can fail: each rank's own BatchNorm statistics make another network
    per_rank = records(two_ranks, "per_rank_bn", 0)
    assert update_difference(per_rank[-1], steps[-1], initial) > 10 * TOLERANCE


def test_resume_with_another_number_of_processes(two_ranks, one_process, tmp_path):
    """Two processes got through epoch 1 (rank 0 wrote the resume state) and were stopped;
    one process finishes the run, and ends where a single uninterrupted process ended."""
    steps, single = one_process
    for rank in (0, 1):
        assert "KeyboardInterrupt" in (two_ranks / f"interrupted.rank{rank}.error").read_text()
    shutil.copytree(two_ranks / "interrupted", tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["snn.last.pt"]     # nothing half-written
    assert torch.load(tmp_path / "run" / "snn.last.pt", weights_only=True)["epoch"] == 1
    resumed_steps = []
    card = train(tiny_config(**CONFIG), tmp_path / "run", after_step=lambda m: resumed_steps.append(m))
    assert len(resumed_steps) == STEPS_PER_EPOCH and [h["epoch"] for h in card["history"]] == [1, 2]
    assert "distributed" not in card
    resumed = checkpoint.read(tmp_path / "run" / "snn.pt")["state_dict"]
    uninterrupted = checkpoint.read(single / "snn.pt")["state_dict"]
    assert update_difference(resumed, uninterrupted, _initial()) <= TOLERANCE
    assert not (tmp_path / "run" / "snn.last.pt").exists()


def test_a_failing_rank_stops_the_others(two_ranks):
    """Rank 1 fails after its first step; rank 0 does not wait for it (the launch would
    have taken the 120 s timeout): its next collective fails, in one line that says so."""
    assert "rank 1 made to fail" in (two_ranks / "failing.rank1.error").read_text()
    error = (two_ranks / "failing.rank0.error").read_text()
    assert error.startswith("NeurodeployError: rank 0: a collective with the other ranks failed"), error
    assert not (two_ranks / "failing").exists() or not list((two_ranks / "failing").glob("*.pt"))


def test_a_batch_too_small_to_share_is_refused_on_every_rank(two_ranks):
    for rank in (0, 1):
        error = (two_ranks / f"small_batch.rank{rank}.error").read_text()
        assert error == ("NeurodeployError: --batch-size 3 is the batch of all 2 processes together; give at "
                         "least 4 (two samples per process)"), error


def test_join_refuses_a_broken_launch(monkeypatch):
    """Started with torchrun's variables but without a rendezvous, or with nonsense: one line."""
    cpu = torch.device("cpu")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and distributed.join(cpu) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(NeurodeployError, match="RANK=2 is not one of the WORLD_SIZE=2 ranks"):
        distributed.join(cpu)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(NeurodeployError, match="NEURODEPLOY_DIST_TIMEOUT='soon'"):
        distributed.join(cpu)
    monkeypatch.delenv(distributed.TIMEOUT_VARIABLE)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(NeurodeployError, match="rank 1 of 2 could not join the process group"):
        distributed.join(cpu)
    assert distributed.current() is None


@pytest.mark.slow
def test_torchrun_command_reports_once_and_writes_one_checkpoint(tmp_path):
    """The command under torchrun itself: both ranks train, rank 0 alone prints (one progress
    bar, one 'saved' line, one JSON card) and writes; the card records the two processes."""
    root = str(Path(neurodeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "-m", "neurodeploy", "train", "--model", "mnasnet",
                          "--limit", "64", "--epochs", "1", "--batch-size", "16", "-T", "2", "--device", "cpu",
                          "--sync-bn", "--json", "-o", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    card = json.loads(run.stdout)      # one JSON object: rank 1 printed nothing
    assert card["distributed"] == {"processes": 2, "backend": "gloo", "batch_per_process": 8,
                                   "batchnorm": "synchronised across processes"}
    assert run.stderr.count("saved ") == 1 and run.stderr.count("mnasnet/snn") == 1, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["snn.json", "snn.pt"]
    assert checkpoint.read(tmp_path / "run" / "snn.pt")["card"] == card
