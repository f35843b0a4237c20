"""Backend ``onnx``: the graph's source network exported as one ONNX timestep (explicit
membrane state, opset 17, :mod:`neurodeploy.exporters.onnx`) and run T times in
onnxruntime. Only graphs exported by neurodeploy name their source network."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..ir.conventions import conventions_of
from ..ir.counters import RunCounters, RunResult
from . import model as model_backend
from .base import Support


class OnnxProgram:
    def __init__(self, network, default_timesteps: int):
        from ..exporters.onnx import export_onnx
        self._dir = tempfile.TemporaryDirectory(prefix="neurodeploy-onnx-")
        self.path = Path(self._dir.name) / "model.onnx"
        export_onnx(network, self.path)
        self.timesteps = default_timesteps

    def run(self, inputs, timesteps=None, batch_size: int = 64, progress=None) -> RunResult:
        from ..exporters.onnx import run_onnx
        from ..validation import run_arguments, samples_in
        run_arguments(timesteps, batch_size)
        x = np.asarray(inputs, np.float32)
        samples_in(len(x) if x.ndim else 0)
        T = int(timesteps or self.timesteps)
        t0 = time.perf_counter()
        out = run_onnx(self.path, x, T)
        return RunResult(outputs=out, counters=RunCounters(len(x), T, backend="onnx"),
                         seconds=time.perf_counter() - t0)


def compile(graph, *, source: Optional[Path] = None, device=None, dt=None, **_) -> OnnxProgram:
    network = model_backend.load_network(graph, source)
    return OnnxProgram(network, conventions_of(graph).timesteps or network.timesteps)


def supports(graph) -> Support:
    s = model_backend.supports(graph)
    return Support(s.ok, "exports the source network to ONNX (one timestep, opset 17)" if s.ok else s.why)
