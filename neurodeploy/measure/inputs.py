"""What a run is fed: a dataset's test split or the user's own arrays, shaped for the graph.

``run``, ``validate`` and ``energy`` all take their inputs from here, so they agree on
what a sample is: static inputs are (N, *input_shape) (the same image at every
timestep, direct encoding), sequences are (T, N, *input_shape). The graph's input
shape comes from its Input node, or from our metadata when the node does not say.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import NeurodeployError
from ..validation import at_least
from ..ir.conventions import conventions_of
from ..ir.topology import input_shape as declared_input_shape


@dataclass
class Inputs:
    x: np.ndarray                    # (N, *shape) or (T, N, *shape)
    labels: Optional[np.ndarray]     # (N,) or None
    source: str                      # what to call them in a report: "200 samples of mnist5k", of a file
    sequence: bool = False           # x is (T, N, ...)

    @property
    def samples(self) -> int:
        return int(self.x.shape[1] if self.sequence else self.x.shape[0])


def graph_input_shape(graph) -> Optional[tuple]:
    return declared_input_shape(graph) or conventions_of(graph).input_shape


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise NeurodeployError(f"{path}: no such {what} file")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - np.load raises many types on foreign files
        raise NeurodeployError(f"{path}: not a .npy array ({type(e).__name__})") from e


def _check_array(path: Path, x: np.ndarray, shape: Optional[tuple]) -> np.ndarray:
    """An input array must be real numbers, (N, *input) or (T, N, *input), with N >= 1."""
    if x.dtype.kind not in "biuf":
        raise NeurodeployError(f"{path}: holds {x.dtype} values; inputs are real numbers (float32)")
    if x.ndim < 2:
        raise NeurodeployError(f"{path}: a {x.ndim}-d array of shape {x.shape}; give (N, *input) static inputs or "
                               "(T, N, *input) sequences" + (f" with input {tuple(shape)}" if shape else ""))
    if shape is not None and x.ndim not in (len(shape) + 1, len(shape) + 2):
        raise NeurodeployError(f"{path}: shape {x.shape} does not fit the graph's input {tuple(shape)}: give "
                               f"(N, {', '.join(map(str, shape))}) static inputs or (T, N, ...) sequences")
    sequence = shape is not None and x.ndim == len(shape) + 2
    n = x.shape[1] if sequence else x.shape[0]
    if n == 0 or (sequence and x.shape[0] == 0):
        raise NeurodeployError(f"{path}: holds no samples (shape {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise NeurodeployError(f"{path}: holds NaN or infinite values")
    return x


def load_inputs(graph, dataset: Optional[str] = None, input_file: Optional[Path] = None,
                samples: Optional[int] = None, data_dir: Optional[Path] = None,
                labels_file: Optional[Path] = None) -> Inputs:
    """The inputs of a run: ``input_file`` (.npy) when given, else ``samples`` test samples
    of ``dataset`` (default: the graph's own, else mnist5k)."""
    shape = graph_input_shape(graph)
    if samples is not None:
        at_least("--samples", samples, 1)
    if input_file is not None:
        x = _check_array(Path(input_file), _load_npy(Path(input_file), "input"), shape)
        sequence = shape is not None and x.ndim == len(shape) + 2     # (T, N, ...): samples are axis 1
        if samples:
            x = x[:, :samples] if sequence else x[:samples]
        y = None
        if labels_file is not None:
            y = _load_npy(Path(labels_file), "labels")
            if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.isfinite(y).all()
                                                 and (y == np.round(y)).all()):
                raise NeurodeployError(f"{labels_file}: labels must be integers (class indices), got {y.dtype}")
            y = y.reshape(-1).astype(np.int64)
            n = x.shape[1] if sequence else x.shape[0]
            y = y[:n]
            if len(y) != n:
                raise NeurodeployError(f"{labels_file}: {len(y)} labels for {n} input samples")
        n = x.shape[1] if sequence else x.shape[0]
        return Inputs(x, y, f"{n} samples of {Path(input_file).name}", sequence)
    if labels_file is not None:
        raise NeurodeployError("--labels goes with --input (a dataset brings its own labels)")
    from ..training import data
    if shape is None:
        raise NeurodeployError("the graph declares no input shape (its Input node is empty and it has no "
                               "neurodeploy metadata); give --input FILE.npy")
    name = dataset or conventions_of(graph).dataset or "mnist5k"
    x, y = data.load_tensors(name, "test", shape[-1], data_dir, limit=samples)
    if x.shape[1] != shape[0]:
        raise NeurodeployError(f"dataset {name} has {x.shape[1]} channels but the graph wants {shape[0]}")
    return Inputs(x.numpy(), y.numpy(), f"{len(x)} samples of {name}")
