"""ONNX export: one timestep of the spiking twin with explicit membrane state, or the CNN twin.

Spiking twin (opset 17): inputs ``x`` (B, *input_shape) and ``v_<i>`` the membrane
of every LIF population; outputs ``y`` (the output node's value this timestep)
and ``v_<i>_next``. Run it T times, feeding the states back, starting from zeros:
that is the network's T-step inference (direct encoding: the same x every step).
The CNN twin is a plain ``x -> logits`` graph.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..architectures.layers import TwinModel
from ..errors import NeurodeployError
from ..fsutil import write_bytes

OPSET = 17


class _OneStep(nn.Module):
    def __init__(self, model: TwinModel):
        super().__init__()
        self.model = model
        self.lifs = model.lif_populations()

    def forward(self, x, *states):
        for lif, v in zip(self.lifs, states):
            lif.step_state = v
        try:
            self.model._set_time(x.shape[0])
            for lif in self.lifs:
                lif.timesteps = 1
            y = self.model.body(x)
            return (y, *[lif.step_next for lif in self.lifs])
        finally:
            for lif in self.lifs:
                lif.step_state = None


def state_shapes(model: TwinModel, input_shape) -> list:
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return [tuple(l.population_shape) for l in model.lif_populations()]


def export_onnx(model: TwinModel, path, input_shape=None) -> dict:
    import copy
    path = Path(path)
    card = getattr(model, "card", {}) or {}
    model = copy.deepcopy(model)      # tracing sets per-module state; leave the caller's network as it was
    input_shape = tuple(input_shape or card.get("input_shape") or
                        (model.arguments["in_channels"], model.arguments["input_size"], model.arguments["input_size"]))
    model.eval()
    x = torch.zeros(1, *input_shape)
    tmp = io.BytesIO()      # in memory, then one atomic write (fsutil): a full disk is one line
    try:
        if model.twin.spiking:
            shapes = state_shapes(model, input_shape)
            states = tuple(torch.zeros(1, *s) for s in shapes)
            names = [f"v_{i}" for i in range(len(shapes))]
            torch.onnx.export(_OneStep(model), (x, *states), tmp, dynamo=False, opset_version=OPSET,
                              input_names=["x", *names], output_names=["y", *[n + "_next" for n in names]],
                              dynamic_axes={n: {0: "batch"} for n in ["x", "y", *names, *[n + "_next" for n in names]]})
        else:
            torch.onnx.export(model, (x,), tmp, dynamo=False, opset_version=OPSET, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        write_bytes(path, tmp.getvalue(), suffix=".onnx.part")
    except Exception as e:
        if isinstance(e, NeurodeployError):
            raise
        raise NeurodeployError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    return {"twin": model.twin.kind, "opset": OPSET, "input_shape": list(input_shape),
            "states": len(model.lif_populations()) if model.twin.spiking else 0}


def run_onnx(path, x: np.ndarray, timesteps: int) -> np.ndarray:
    """Run a spiking one-step ONNX model T times in onnxruntime: outputs (T, N, *out)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    x = np.asarray(x, np.float32)
    states = {i.name: np.zeros((x.shape[0], *i.shape[1:]), np.float32) for i in inputs[1:]}
    outs = []
    for _ in range(timesteps):
        res = sess.run(None, {"x": x, **states})
        outs.append(res[0])
        states = {name: v for name, v in zip(states, res[1:])}
    return np.stack(outs)
