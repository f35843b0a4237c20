"""The committed zoo: cards agree with their checkpoints, and trained graphs export exactly.

Only models whose checkpoints are committed are checked (``neurodeploy models`` lists
which); each test re-measures from the checkpoint rather than trusting the card.
"""
import json

import numpy as np
import pytest
import torch

from neurodeploy.training import checkpoint, data, zoo
from neurodeploy.architectures import ARCHITECTURES, count_parameters
from neurodeploy.backends import torch as torch_backend
from neurodeploy.exporters.lowering import export_checkpoint_model
from neurodeploy.ir.io import read_graph, write_graph
from neurodeploy.training.train import evaluate

PRESENT = [(n, t) for n in ARCHITECTURES for t in ("snn", "cnn") if zoo.checkpoint_path(n, t).exists()]


def test_zoo_listing_matches_files():
    rows = {r["name"]: r for r in zoo.listing()}
    assert set(rows) == set(ARCHITECTURES)
    for name, twin in PRESENT:
        assert rows[name][f"{twin}_checkpoint"]
        card = json.loads(zoo.checkpoint_path(name, twin).with_suffix(".json").read_text())
        assert card["model"] == name and card["twin"] == twin and card["dataset"] == "mnist5k"


@pytest.mark.slow
@pytest.mark.parametrize("name,twin", PRESENT)
def test_card_accuracy_is_reproduced_from_the_checkpoint(name, twin):
    model = checkpoint.load(zoo.checkpoint_path(name, twin))
    x, y = data.load_tensors("mnist5k", "test", 32)
    result = evaluate(model, x, y)
    # The first layer's sum over real-valued pixels is not on the exact grid, so another
    # thread count may round it differently and flip a rare spike: allow 2 of 1,000 images.
    assert result["accuracy"] == pytest.approx(model.card["test_accuracy"], abs=0.002)
    assert result["macro_f1"] == pytest.approx(model.card["test_macro_f1"], abs=0.005)
    assert count_parameters(model) == model.card["parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, t in PRESENT if t == "snn"])
def test_trained_zoo_model_exports_bit_exactly(tmp_path, name):
    path = zoo.checkpoint_path(name, "snn")
    model = checkpoint.load(path)
    write_graph(tmp_path / "g.nir", export_checkpoint_model(model, path))
    x, _ = data.load_tensors("mnist5k", "test", 32, limit=48)
    with torch.no_grad():
        ref = model.forward_steps(x).numpy()
    out = torch_backend.compile(read_graph(tmp_path / "g.nir"), device="cpu").run(x.numpy(), batch_size=48).outputs
    assert ref.mean() > 0, "the trained network should produce output spikes"
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("name,twin", PRESENT)
def test_card_was_trained_by_the_documented_recipe(name, twin):
    """`neurodeploy train-zoo` must reproduce the committed checkpoints: same epochs, batch, T, start."""
    card = json.loads(zoo.checkpoint_path(name, twin).with_suffix(".json").read_text())
    recipe = zoo.recipe_config(name, zoo.final_stage(name, twin))
    for key in ("epochs", "batch_size", "timesteps", "lr", "seed", "loihi_aware"):
        assert card["config"].get(key, False) == getattr(recipe, key), key
    assert (card["config"]["init_from"] is None) == (recipe.init_from is None)
    if card["config"].get("loihi_aware"):       # the float stage it started from is the recipe's stage before
        stages = list(zoo.RECIPES[name])
        before = zoo.recipe_config(name, stages[stages.index("loihi") - 1])
        for key in ("epochs", "batch_size", "timesteps", "lr"):
            assert card["loihi_aware"]["started_from"][key] == getattr(before, key), key


@pytest.mark.parametrize("name", [n for n, t in PRESENT if t == "snn" and "loihi" in zoo.RECIPES[n]])
def test_loihi_aware_zoo_model_is_exactly_on_the_lava_compilers_grid(name):
    """The Loihi-aware spiking twins: the Lava compiler finds every weight already an
    8-bit integer of its population's scale (so Lava runs the trained network's weights)."""
    from neurodeploy.backends import lava
    from neurodeploy.exporters.lowering import export
    model = checkpoint.load(zoo.checkpoint_path(name, "snn"))
    assert model.card["loihi_aware"]["test_accuracy_before"] > 0
    weights = lava.compile(export(model, (1, 32, 32)), precision="fixed").weight_quantisation
    assert weights["exact_layers"] == weights["layers"] and weights["clipped"] == 0, weights
