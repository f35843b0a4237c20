"""Let torch's idle OpenMP workers sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE).

After every parallel region, an OpenMP worker busy-waits for the next one: GNU
libgomp (the OpenMP runtime of PyTorch's Linux wheels) spins GOMP_SPINCOUNT =
300,000 times, milliseconds of a core. The compiled LIF loops of
:mod:`neurodeploy.kernels.lif_cpu` run between torch's convolutions on their own threads,
so with the default policy each of them shares its core with a spinning worker:
on this 2-core CPU the LIF loops of one SqueezeNet batch took 143 ms with the
default and 85 ms with PASSIVE, and the torch backend ran 10-17 % faster
(benchmarks/bench_inference.py). Code made of many small torch ops (snnTorch's step
loop) is the other way round: it loses 10-20 % with PASSIVE, because its workers
then sleep and wake between ops.

The runtime reads the variable once, when torch loads it, so this only takes
effect when ``neurodeploy`` is imported before ``torch`` (the ``neurodeploy``
command always is). It never overrides a value the user set, and
``NEURODEPLOY_PASSIVE_OPENMP=0`` turns it off.
"""
from __future__ import annotations

import os
import sys

# True once this module set the variable (it was not the user's): a child process
# that wants the OpenMP defaults must then drop it (benchmarks/contenders.py).
set_here = False


def passive_openmp_workers() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE for this process if torch has not loaded yet and
    nobody chose a policy; True if the process runs (or will run) with PASSIVE."""
    global set_here
    if (os.environ.get("NEURODEPLOY_PASSIVE_OPENMP", "1") != "0" and "torch" not in sys.modules
            and "OMP_WAIT_POLICY" not in os.environ):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        set_here = True
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
