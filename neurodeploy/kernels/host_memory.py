"""Keep freed host memory for reuse instead of handing it back to the OS.

Layer-serial execution allocates a few tensors of T x B x population size per
layer (200 MB for SqueezeNet's first population at batch 64, T=8). glibc's malloc
serves every block above 32 MB with a fresh ``mmap`` and unmaps it on ``free``, so
each such tensor is page-faulted in again, 4 KiB at a time, on every batch:
allocating and touching 200 MB costs 87 ms on this 2-core CPU against 9 ms to
overwrite it in place, and the torch backend ran SqueezeNet 1.8x faster with
mmap disabled (bench_inference.py, 57 -> 101 samples/s).

The CPU paths call it (the torch backend's programs and the compiled LIF loops of
:mod:`neurodeploy.kernels.lif_cpu`, which training uses too). ``reuse_freed_memory()`` tells glibc (``mallopt``) to serve large blocks from its
heap and to keep freed memory there, which is what tcmalloc and jemalloc do by
default and what PyTorch's CPU performance guide gets by preloading them. The
cost: the process keeps its peak memory until it exits. It is a no-op on
other C libraries (macOS, musl) and when ``NEURODEPLOY_KEEP_FREED_MEMORY=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1   # glibc malloc.h
_M_MMAP_MAX = -4
_done = False


def reuse_freed_memory() -> bool:
    """Switch glibc to keep freed memory (once per process); True if it took effect."""
    global _done
    if _done:
        return True
    if os.environ.get("NEURODEPLOY_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no mmap'd blocks (they are unmapped on free), and trim the heap only past 1 GiB free
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _done
