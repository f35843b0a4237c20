"""Reading and writing NIR files, with one-line errors and no half-written files.

Depthwise and grouped convolutions: NIR 1.0.8 computes a Conv2d's input type
from ``weight.shape[1]`` (C_in / groups), so ``nir.read(path, type_check=True)``
rejects every graph with ``groups > 1``, ours and anyone's. We write such
convolutions as they are (compact and faithful) and read with
``nir.read(path, type_check=False)``; ``neurodeploy check`` then runs our own
type check (:func:`neurodeploy.check.type_check`), which knows about groups. Other
tools reading our files need that same one flag when a graph has grouped
convolutions; graphs without them read with type checking on.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import h5py
import nir

from ..errors import NeurodeployError
from .conventions import conventions_of
from ..fsutil import write_bytes


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_graph(path) -> nir.NIRGraph:
    """Read a .nir file; any failure becomes one NeurodeployError line."""
    path = Path(path)
    if not path.exists():
        raise NeurodeployError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise NeurodeployError(f"{path}: not an HDF5 file, so not a NIR graph "
                               "(NIR files are HDF5; was it truncated or is it another format?)")
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise NeurodeployError(f"{path}: an HDF5 file but not a NIR graph (no 'node' group)")
        graph = nir.read(path, type_check=False)
    except NeurodeployError:
        raise
    except Exception as e:  # h5py/nir raise many types on corrupt input
        raise NeurodeployError(f"{path}: cannot be read as a NIR graph ({type(e).__name__}: {e})") from e
    if not isinstance(graph, nir.NIRGraph):
        raise NeurodeployError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    try:       # our metadata (dt, T, input shape) is checked once, here, naming the file
        conventions_of(graph)
    except NeurodeployError as e:
        raise NeurodeployError(f"{path}: {e}") from None
    return graph


def graph_bytes(graph: nir.NIRGraph) -> bytes:
    """The .nir file of ``graph``, built in memory. HDF5 writing straight to a full disk
    crashes the process (h5py raises from its destructors, then segfaults), so the file is
    made in memory and written as plain bytes."""
    buf = io.BytesIO()
    nir.write(buf, graph)
    return buf.getvalue()


def write_graph(path, graph: nir.NIRGraph) -> Path:
    """Write atomically: a temporary file in the same folder, renamed when complete; a
    full disk is one NeurodeployError line and leaves any previous file as it was."""
    return write_bytes(path, graph_bytes(graph), suffix=".nir.part")
