"""The benchmark's other-tool contenders (benchmarks/step_loops.py) run the trained
network bit for bit as the torch backend does: the speed ratios compare the same work."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.backends import torch as torch_backend
from neurodeploy.exporters.lowering import export_checkpoint_model
from neurodeploy.training import checkpoint, data, zoo

pytest.importorskip("snntorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import step_loops  # noqa: E402

T, N, NAME = 4, 8, "pruned_squeezenet"


@pytest.fixture(scope="module")
def trained():
    path = zoo.checkpoint_path(NAME, "snn")
    if not path.exists():
        pytest.skip(f"no trained {NAME} in the zoo")
    model = checkpoint.load(path, timesteps=T)
    graph = export_checkpoint_model(model, path)
    x, _ = data.load_tensors("mnist5k", "test", 32, limit=N)
    ours = torch_backend.compile(graph, device="cpu").run(x.numpy(), T, batch_size=N).outputs.sum(0)
    assert np.count_nonzero(ours) > 0, "the trained network should produce output spikes"
    return model, graph, x, ours


@pytest.mark.parametrize("loop", ["naive_snntorch", "fair_snntorch", "spikingjelly_multistep"])
def test_step_loop_outputs_equal_ours(trained, loop):
    model, _, x, ours = trained
    if loop == "spikingjelly_multistep":
        pytest.importorskip("spikingjelly.activation_based")
    with torch.no_grad():
        out = getattr(step_loops, loop)(model, T)(x).numpy()
    assert np.array_equal(out, ours)


def test_nirtorch_with_our_lif_equals_ours(trained):
    pytest.importorskip("nirtorch")
    _, graph, x, ours = trained
    with torch.no_grad():
        out = step_loops.nirtorch_loop(graph, T)(x).numpy()
    assert np.array_equal(out, ours)


def test_fair_loop_hoists_the_image_projection_and_computes_weights_once(trained):
    model = trained[0]
    net = step_loops.frozen(model)
    first, rest = step_loops.hoisted(net)
    assert isinstance(first, torch.nn.Conv2d)
    assert not any(hasattr(m, "deployed_parameters") for m in net.modules())
