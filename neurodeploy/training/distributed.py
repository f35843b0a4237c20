"""Data-parallel training across processes: what ``torchrun ... -m neurodeploy train`` needs.

torchrun (or any launcher that sets its variables: ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) starts one process per rank; each
runs the ordinary training loop (:mod:`neurodeploy.training.train`) on its share of
every batch, and DistributedDataParallel averages the gradients. Without those
variables nothing here does anything and a run is the single process it always was.

* Backend: NCCL when the run trains on CUDA (each process on GPU ``LOCAL_RANK``),
  gloo on the CPU.
* Batches: ``--batch-size`` is the *global* batch. Every rank draws the run's seeded
  permutation (the same generator, hence the same order, as a single process; torch's
  DistributedSampler draws ``randperm(seed + epoch)`` instead, and pads the epoch with
  repeated samples) and takes its contiguous share of each batch (:meth:`World.share`).
  Each share's loss is weighted by ``share * W / batch``, so DDP's average of the ranks'
  gradients is the gradient of the whole batch's mean loss: N processes take the steps
  one process takes, and the learning-rate schedule, the resume state and the model
  card do not depend on N (a run resumes with any number of processes).
* BatchNorm: by default each rank normalises with its own share's statistics (plain
  DDP); ``sync_bn`` normalises with the whole batch's. torch.nn.SyncBatchNorm does that
  on CUDA; on the CPU it refuses ("SyncBatchNorm expected input tensor to be on GPU",
  torch 2.13), so :class:`CrossRankBatchNorm` does it there.
* Outputs: rank 0 alone writes (resume states, checkpoints, model cards), and what it
  reads back (the resume state) it sends to the others; inputs (data, ``--init-from``)
  must be readable on every node.
* Failure: a rank that fails leaves the process group at once, so its peers' next
  collective fails instead of waiting; a rank that hangs is given up on after
  ``NEURODEPLOY_DIST_TIMEOUT`` seconds (default 600).
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import NeurodeployError, first_line

TIMEOUT_VARIABLE = "NEURODEPLOY_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (sizes differ by at most one)."""
        return torch.tensor_split(batch, self.size)[self.rank]

    def sum(self, values) -> list[float]:
        """The element-wise sum of ``values`` over all ranks (float64: counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather_shares(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """The ranks' shares (:meth:`share` of a length-``total`` batch), side by side,
        on every rank: each fills its slice of zeros and the slices are summed."""
        bounds = [len(s) for s in torch.tensor_split(torch.empty(total), self.size)]
        start = sum(bounds[:self.rank])
        whole = torch.zeros((total,) + tuple(local.shape[1:]), dtype=local.dtype, device=self.device)
        whole[start:start + len(local)] = local.to(self.device)
        dist.all_reduce(whole)
        return whole.cpu()


_WORLD: World | None = None


def launched() -> bool:
    """torchrun (or a launcher with its conventions) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main() -> bool:
    """Rank 0, or a single process; known before the process group exists (torchrun's RANK)."""
    return _WORLD.main if _WORLD is not None else os.environ.get("RANK", "0") == "0"


def current() -> World | None:
    return _WORLD


def _int_variable(name: str, default=None) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NeurodeployError(f"environment variable {name}={value!r} is not a whole number; start the "
                               "processes with torchrun") from None


def timeout_s() -> float:
    value = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise NeurodeployError(f"{TIMEOUT_VARIABLE}={value!r}: give the seconds a rank waits for the others, > 0")
    return seconds


def join(device: torch.device) -> World | None:
    """Join the process group torchrun set up (once per process; later calls return the
    same world). None when this process was not started as one rank of several."""
    global _WORLD
    if not launched():
        return None
    size, rank, local = _int_variable("WORLD_SIZE"), _int_variable("RANK"), _int_variable("LOCAL_RANK", "0")
    if not 0 <= rank < size:
        raise NeurodeployError(f"RANK={rank} is not one of the WORLD_SIZE={size} ranks")
    if not dist.is_available():
        raise NeurodeployError("this torch build has no torch.distributed; run without torchrun")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise NeurodeployError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA GPUs: "
                                   "start at most one process per GPU (torchrun --nproc-per-node)")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        backend = "gloo"
    if _WORLD is not None:
        if _WORLD.backend != backend:
            raise NeurodeployError(f"this process already trains with {_WORLD.backend}; one run cannot switch "
                                   f"to {backend} (keep --device the same)")
        return _WORLD
    try:
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=datetime.timedelta(seconds=timeout_s()),
                                device_id=device if backend == "nccl" else None)
    except (ValueError, RuntimeError) as e:   # missing MASTER_ADDR, unreachable rendezvous, ...
        raise NeurodeployError(f"rank {rank} of {size} could not join the process group ({backend}): "
                               f"{first_line(e) or type(e).__name__}") from None
    _WORLD = World(rank, size, local, backend, device)
    atexit.register(leave)
    return _WORLD


def leave() -> None:
    """Leave the process group (its connections close: peers waiting on this rank fail at once)."""
    global _WORLD
    _WORLD = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def failing_together():
    """Around a rank's work: on any failure (an error, Ctrl-C, SIGTERM) leave the group
    before the exception goes on, and say in one line when this rank failed only
    because another one did."""
    try:
        yield
    except BaseException as e:
        world = _WORLD
        leave()
        if world is not None and _collective_failed(e):
            raise NeurodeployError(f"rank {world.rank}: a collective with the other ranks failed "
                                   f"({first_line(e) or type(e).__name__}); when another rank failed or was stopped, its own "
                                   "message says why") from e
        raise


def _collective_failed(e: BaseException) -> bool:
    """A peer's exit shows up as DistError, or (gloo, in DDP's reducer) as a RuntimeError
    "[.../gloo/transport/tcp/pair.cc] Connection closed by peer"."""
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and
                                             any(w in str(e) for w in ("gloo", "NCCL", "Connection closed")))


def from_main(read):
    """``read()`` run on rank 0 (or the single process) and its result sent to every rank;
    a NeurodeployError it raises is raised on every rank. For what rank 0 alone has
    (its own outputs); the result must be picklable (bytes, numbers, strings)."""
    if _WORLD is None:
        return read()
    box = [None]
    if _WORLD.main:
        try:
            box[0] = ("value", read())
        except NeurodeployError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0, device=_WORLD.device if _WORLD.backend == "nccl" else None)
    kind, value = box[0]
    if kind == "error":
        raise NeurodeployError(value)
    return value


def barrier() -> None:
    if _WORLD is not None:
        dist.barrier()


def parallel(model: nn.Module, world: World) -> nn.Module:
    """``model`` wrapped for data-parallel training (gradients averaged over the ranks).
    The zoo's networks use every parameter in every step (find_unused_parameters off)."""
    import warnings
    from torch.nn.parallel import DistributedDataParallel
    # On the CPU the zoo trains channels-last (layers._CHANNELS_LAST_TRAINING), so a conv's weight
    # gradient comes channels-last while its parameter is contiguous: DDP then copies that gradient
    # into its bucket instead of reducing it in place, and warns (once) that this "may impair
    # performance". The copy is one pass over the gradients per step, next to a spiking forward
    # and backward pass over T timesteps.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)


def synchronise_batchnorm(model: nn.Module, world: World) -> nn.Module:
    """Every BatchNorm of ``model`` normalising with the statistics of the whole batch
    (all ranks' shares) in training: torch.nn.SyncBatchNorm on CUDA, CrossRankBatchNorm
    on the CPU. Parameters and buffers are the same tensors (an optimiser keeps them)."""
    if world.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return CrossRankBatchNorm.convert(model)


class _GlobalBatchNorm(torch.autograd.Function):
    """BatchNorm in training mode with the statistics of the batch over all ranks.

    Forward: per channel, the ranks' count, sum x and sum x^2 (float64) are summed
    (one all_reduce), mean = S1/N, var = S2/N - mean^2, y = (x - mean) / sqrt(var + eps)
    * gamma + beta. Backward (Ioffe & Szegedy 2015, eq. after Alg. 1, with the sums
    over the whole batch, as torch's SyncBatchNorm does):

        dx = gamma / sqrt(var + eps) * (dy - sum(dy)/N - xhat * sum(dy xhat)/N)

    where the two sums are all_reduced; dgamma = sum(dy xhat) and dbeta = sum(dy) stay
    this rank's (DDP averages parameter gradients itself).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):
        dims = [0] + list(range(2, x.dim()))
        view = (1, -1) + (1,) * (x.dim() - 2)
        wide = x.to(torch.float64)
        stats = torch.stack([torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float64, device=x.device),
                             wide.sum(dims), wide.square().sum(dims)])
        del wide
        dist.all_reduce(stats)
        count, mean = stats[0], stats[1] / stats[0]
        var = (stats[2] / count - mean.square()).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:     # the unbiased variance, as torch's BatchNorm keeps
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_((var * count / (count - 1).clamp_min(1)).to(running_var.dtype),
                                                alpha=momentum)
        mean, invstd = mean.to(x.dtype), invstd.to(x.dtype)
        scale = invstd if weight is None else invstd * weight
        y = (x - mean.view(view)) * scale.view(view)
        if bias is not None:
            y = y + bias.view(view)
        ctx.save_for_backward(x, weight, mean, invstd, count[:1])
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd, count = ctx.saved_tensors
        dims = [0] + list(range(2, x.dim()))
        view = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - mean.view(view)) * invstd.view(view)
        local = torch.stack([dy.sum(dims, dtype=torch.float64), (dy * xhat).sum(dims, dtype=torch.float64)])
        sums = local.clone()
        dist.all_reduce(sums)
        mean_dy, mean_dy_xhat = (sums / count).to(dy.dtype)
        scale = invstd if weight is None else invstd * weight
        dx = (dy - mean_dy.view(view) - xhat * mean_dy_xhat.view(view)) * scale.view(view)
        grad_weight = local[1].to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = local[0].to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, grad_weight, grad_bias, None, None, None, None


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d or 2d) that normalises with the statistics of the whole batch across
    ranks in training (:class:`_GlobalBatchNorm`), on any device and backend (gloo on the
    CPU included); in eval mode, or in a single process, it is torch's BatchNorm.
    State-dict compatible with the BatchNorm it replaces."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:       # cumulative moving average, as torch's BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        return _GlobalBatchNorm.apply(x, self.weight, self.bias,
                                      self.running_mean if self.track_running_stats else None,
                                      self.running_var if self.track_running_stats else None, self.eps, momentum)

    def sum_across_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (float64) summed over the ranks, in place, when several train: the fused LIF
        loops of training (kernels.dynamics) normalise with the whole batch through this."""
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(t)
        return t

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every torch BatchNorm1d/2d in it replaced (the same parameters
        and buffers, the same training mode), like SyncBatchNorm.convert_sync_batchnorm."""
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            new = cls.convert(child)
            if new is not child:
                setattr(module, name, new)
        return module


__all__ = ["World", "launched", "is_main", "current", "join", "leave", "failing_together", "from_main", "barrier",
           "parallel", "synchronise_batchnorm", "CrossRankBatchNorm", "timeout_s"]
