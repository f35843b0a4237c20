"""One rank of the data-parallel tests (tests/training/test_distributed.py), started the way
torchrun starts it: WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the
environment (MASTER_PORT chosen by rank 0 whenever a job joins). Runs the jobs of a JSON file in order and writes what each saw to
``<out>/<job>.rank<R>.pt``:

* ``batchnorm``: CrossRankBatchNorm on this rank's share of a seeded batch: its output,
  input gradient, parameter gradients and running statistics;
* ``train``: train() of a tiny config, the model's parameters and buffers after every
  optimiser step (and in ``.summed`` how often the fused LIF loops summed BatchNorm
  statistics across the ranks). ``stop_after``: KeyboardInterrupt after that many steps (as Ctrl-C
  would); ``fail_rank``: that rank raises after its first step. Either leaves the process
  group (the next job joins it again); the error a job ended with goes to ``.error``
  instead.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tests/: conftest's helpers

import torch  # noqa: E402

from conftest import _small_load_tensors, tiny_config  # noqa: E402
from neurodeploy.training import data, distributed  # noqa: E402
from neurodeploy.training.train import train  # noqa: E402


def state_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def batchnorm_case():
    """(batchnorm, x, weights of the loss sum(y * w)): a BatchNorm2d with non-trivial affine
    parameters on a batch of 8 with a mean and scale far from 0 and 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 4, 4, generator=g) * 2 + 1
    w = torch.randn(8, 3, 4, 4, generator=g)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    return bn, x, w


def run_batchnorm(world):
    bn, x, w = batchnorm_case()
    bn = distributed.CrossRankBatchNorm.convert(bn)
    x = world.share(x).clone().requires_grad_()
    y = bn(x)
    (y * world.share(w)).sum().backward()
    return {"y": y.detach(), "dx": x.grad, "dweight": bn.weight.grad, "dbias": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def run_training(job, rank, out: Path):
    steps = []

    def record(model):
        steps.append(state_of(model))
        if len(steps) == job.get("stop_after"):
            raise KeyboardInterrupt
        if job.get("fail_rank") == rank:
            raise RuntimeError(f"rank {rank} made to fail")

    # how often the fused LIF loops summed BatchNorm statistics across the ranks
    summed, across = [], distributed.CrossRankBatchNorm.sum_across_ranks
    distributed.CrossRankBatchNorm.sum_across_ranks = lambda bn, t: summed.append(1) or across(bn, t)
    try:
        train(tiny_config(**job["config"]), out / job["name"], after_step=record, sync_bn=job.get("sync_bn", False))
    finally:
        distributed.CrossRankBatchNorm.sum_across_ranks = across
        (out / f"{job['name']}.rank{rank}.summed").write_text(str(len(summed)))
    return steps


def rendezvous_port(rank: int, note: Path) -> str:
    """Rank 0 takes a port the system says is free and tells the others through ``note``.
    (One port for the whole launch would be re-used by a job that joins again after one
    that left, racing with the old group's store; ports picked in advance can be taken by
    the meantime's own gloo connections.)"""
    if rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        part = note.with_suffix(".part")
        part.write_text(port)
        part.rename(note)
        return port
    deadline = time.monotonic() + 120
    while not note.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 never wrote {note}")
        time.sleep(0.05)
    return note.read_text()


def main(jobs_file: str, out: str) -> None:
    rank, out = int(os.environ["RANK"]), Path(out)
    data.load_tensors = _small_load_tensors       # the tests' 16-sample test split, as in-process
    for job in json.loads(Path(jobs_file).read_text()):
        if distributed.current() is None:      # the job joins a group: at a port free now
            os.environ["MASTER_PORT"] = rendezvous_port(rank, out / f"{job['name']}.port")
        try:
            if job.get("kind") == "batchnorm":
                result = run_batchnorm(distributed.join(torch.device("cpu")))
            else:
                result = run_training(job, rank, out)
        except (Exception, KeyboardInterrupt) as e:
            (out / f"{job['name']}.rank{rank}.error").write_text(f"{type(e).__name__}: {e}")
            continue
        torch.save(result, out / f"{job['name']}.rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
