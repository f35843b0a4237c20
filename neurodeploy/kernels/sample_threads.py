"""The compiled CPU loops' threads: a batch split into sample ranges, one per thread.

The loops (:mod:`~neurodeploy.kernels.lif_cpu`, :mod:`~neurodeploy.kernels.events`,
:mod:`~neurodeploy.kernels.integer`) release the GIL, so a small thread pool runs
them in parallel. numba's own ``parallel=True`` would start an OpenMP runtime beside
torch's, and that slowed torch's convolutions by 45 % on this CPU.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None


def split_batch(batch: int, threads: int) -> list[tuple[int, int]]:
    """Sample ranges [lo, hi), one per thread."""
    step = -(-batch // max(1, threads))     # ceil(batch / threads)
    return [(lo, min(batch, lo + step)) for lo in range(0, batch, step)]


def over_samples(work, chunks) -> None:
    """Call ``work(k, lo, hi)`` for every chunk k: the first on this thread, the others
    on the thread pool. The calling thread works rather than waits: one thread wake-up
    fewer per call, which is most of the time of a small population's call."""
    global _pool
    if len(chunks) > 1 and (_pool is None or _pool._max_workers < len(chunks) - 1):
        _pool = ThreadPoolExecutor(max_workers=len(chunks) - 1, thread_name_prefix="lif_cpu")
    jobs = [_pool.submit(work, k, lo, hi) for k, (lo, hi) in enumerate(chunks) if k > 0]
    work(0, *chunks[0])
    for job in jobs:
        job.result()
