"""Process-wide settings that the compiled CPU paths run best with.

The ``neurodeploy`` command applies them when it starts (``cli.main``); importing the
library changes nothing in the caller's process. A Python user who wants the same
speed calls :func:`tune_for_cpu` once, before ``import torch``:

* OpenMP's idle workers sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``,
  :mod:`~neurodeploy.kernels.host_threads`): the LIF loops run on the cores torch's
  workers would otherwise spin on;
* glibc keeps freed memory for reuse (:mod:`~neurodeploy.kernels.host_memory`): the
  T x B tensors of layer-serial execution are not page-faulted in on every batch.

Both cost something for other code in the process (snnTorch's many small ops lose
10-20 % with PASSIVE; the process keeps its peak memory), which is why they are not
applied behind a library user's back.
"""
from __future__ import annotations

from . import host_memory, host_threads


def tune_for_cpu() -> dict:
    """Apply both settings; says which took effect."""
    return {"passive_openmp": host_threads.passive_openmp_workers(),
            "keep_freed_memory": host_memory.reuse_freed_memory()}
