"""ONNX export: the one-step spiking graph run T times equals forward_steps exactly; the CNN twin matches torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.training import checkpoint
from neurodeploy.architectures import build
from neurodeploy.exporters.onnx import OPSET, export_onnx, run_onnx, state_shapes

from nets import FireNet, ResidualNet, calibrate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.mark.parametrize("net", [FireNet, ResidualNet])
def test_spiking_onnx_equals_forward_steps(net, tmp_path):
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    model = calibrate(net(), x)
    with torch.no_grad():
        ref = model.forward_steps(x).numpy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rep = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert rep["twin"] == "snn" and rep["opset"] == OPSET == 17
    assert rep["states"] == len(model.lif_populations()) == len(state_shapes(model, (1, 8, 8)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # caller's model untouched
    out = run_onnx(tmp_path / "m.onnx", x.numpy(), model.timesteps)
    assert out.shape == ref.shape and np.abs(ref).sum() > 0, "the network never spikes"
    assert np.abs(out - ref).max() == 0.0
    # model still usable afterwards, same answer
    with torch.no_grad():
        assert np.array_equal(model.forward_steps(x).numpy(), ref)


def test_zoo_architecture_onnx_exact(tiny_ckpt, tmp_path):
    model = checkpoint.load(tiny_ckpt)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        ref = model.forward_steps(x).numpy()
    export_onnx(model, tmp_path / "m.onnx")
    out = run_onnx(tmp_path / "m.onnx", x.numpy(), model.timesteps)
    assert out.shape == (2, 4, 10)
    assert np.abs(out - ref).max() == 0.0


def test_cnn_twin_onnx_matches_torch(tmp_path):
    import onnxruntime as ort
    torch.manual_seed(0)
    model = build("mnasnet", "cnn", num_classes=10, input_size=16, in_channels=1).eval()
    rep = export_onnx(model, tmp_path / "c.onnx")
    assert rep == {"twin": "cnn", "opset": 17, "input_shape": [1, 16, 16], "states": 0}
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": x.numpy()})[0]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    assert not list(tmp_path.glob("*.part"))


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    from neurodeploy.errors import NeurodeployError

    def half_written(model, args, f, **kw):      # the model is built in memory, then written atomically
        f.write(b"partial")
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    model = build("mnasnet", "cnn", num_classes=10, input_size=16, in_channels=1)
    with pytest.raises(NeurodeployError, match="^ONNX export failed: RuntimeError: exporter crashed$"):
        export_onnx(model, tmp_path / "c.onnx")
    assert list(tmp_path.iterdir()) == []
