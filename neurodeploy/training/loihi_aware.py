"""Loihi-aware fine-tuning: train each projection on the weight grid it gets on Loihi.

On Loihi, and in our Lava target (:mod:`neurodeploy.backends.lava.fixed_point`), every
projection into one population shares that population's integer scale ``S``: a float
weight ``W`` (BatchNorm folded, a pooling factor ``f`` folded in) becomes the 8-bit
mantissa ``round_even(W f S / 64) * 2**-e``, so ``W`` is rounded to multiples of

    step = 2 * 2**e * 64 / (S f)

where ``S`` follows from the largest incoming weight and the exponent ``e`` is 0 for
convolutions (lava's Conv model has none) and per projection for dense and sparse ones
(``weight_exponent``). Training uses the power-of-two ``S`` of ``dyadic_scale`` (at most
one bit coarser than the compiler's default): the deployed weights are snapped to a
power-of-two float grid for exact sums (``layers.snap_to_exact_grid``), which keeps
them on a power-of-two Loihi grid, and the compiler picks that scale whenever the
weights are already integers at it. One 8-bit grid per population is coarse
for BatchNorm-folded weights whose channels differ in scale: the spiking zoo models
trained in float disagree with their Loihi simulation on 2-5 % of test images.

Loihi-aware fine-tuning is quantisation-aware training (lava-dl's SLAYER quantises its
weights the same way while training): BatchNorm is frozen and folded, each folded weight
is rounded to its population's grid in the forward pass, and the gradient passes straight
through the rounding (:func:`neurodeploy.architectures.layers.to_grid`). The deployed
weights then lie exactly on Loihi's grid, the Lava target re-quantises them without error,
and what remains between the torch reference and Lava is the integer membrane.

The neuron's decay is put on Loihi's grid too: Loihi decays the membrane by
(4096 - dv) / 4096 with an integer dv, so beta = 0.9 runs as 3686/4096 = 0.89990234375.
That 1e-4 difference, compounded over timesteps and layers, cost more agreement with
the Lava target than the integer membrane (MnasNet: 98.5 % against 100 % of 200 test
images); :func:`loihi_decay` moves beta to the nearest such value before fine-tuning,
an exact float32 whose NIR round trip lands on the same dv.

Which projections share a population, and their pooling factors, is read off the Lava
plan of the exported graph: the grouping the Lava compiler itself uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..architectures.layers import ConvBN, LinearOut
from ..errors import NeurodeployError


def loihi_decay(beta: float) -> float:
    """beta on Loihi's 12-bit decay grid: 1 - dv/4096 with dv = round((1 - beta) * 4096)."""
    from ..backends.lava.fixed_point import DECAY_UNITY, decay_to_dv
    dv, _ = decay_to_dv(np.asarray([beta], np.float64))
    return 1.0 - float(dv[0]) / DECAY_UNITY


@dataclass(frozen=True)
class Carrier:
    module: str            # qualified name of the ConvBN / LinearOut whose weights the projection carries
    fold: float            # gain * pooling factors folded into the weights on the path
    exponent_free: bool    # dense or sparse projection: it gets its own weight exponent


@dataclass(frozen=True)
class PopulationGrid:
    population: str
    carriers: tuple        # (Carrier, ...)
    fixed_peak: float      # largest 0/1 projection (identity residual) times its fold; 0 if none
    thresholds: np.ndarray


def population_grids(model, input_shape) -> list:
    """The Lava compiler's grouping of the model's projections by target population."""
    from ..backends.lava.compiler import _carrier, _has_exponent, _is_ones, path_fold
    from ..backends.lava.plan import build_plan
    from ..exporters.lowering import export
    from ..ir.conventions import conventions_of

    was_training = model.training
    model.eval()
    try:
        graph = export(model, tuple(input_shape))
    finally:
        model.train(was_training)
    plan = build_plan(graph, conventions_of(graph))
    modules = {n for n, m in model.named_modules() if isinstance(m, (ConvBN, LinearOut))}
    by_target = {}
    for p in plan.paths:
        by_target.setdefault(p.target, []).append(p)
    grids = []
    for name, pop in plan.pops.items():
        carriers, fixed = [], 0.0
        for p in by_target.get(name, []):
            if not any(op.is_projection for op in p.ops):
                continue
            op = p.ops[_carrier(p)]
            fold = path_fold(pop, p)
            if _is_ones(op):
                fixed = max(fixed, float(np.max(np.abs(op.weight))) * fold if op.weight is not None else fold)
                continue
            module = op.node.split("@")[0]     # the exporter names per-source pieces "<module>@<source>"
            if module not in modules:
                raise NeurodeployError(f"projection '{op.node}' into '{name}' comes from no ConvBN/LinearOut "
                                       "of the model; Loihi-aware training cannot place it on a grid")
            carriers.append(Carrier(module, fold, _has_exponent(op)))
        if carriers:
            grids.append(PopulationGrid(name, tuple(dict.fromkeys(carriers)), fixed, np.asarray(pop.threshold)))
    seen = {}
    for g in grids:
        for c in g.carriers:
            if seen.setdefault(c.module, (g.population, c)) != (g.population, c):
                raise NeurodeployError(f"'{c.module}' feeds two populations with different grids; "
                                       "Loihi-aware training needs one grid per layer")
    return grids


@torch.no_grad()
def weight_steps(model, grids) -> dict:
    """Module name -> the float step of its folded weights on Loihi's grid.

    A pure function of the current weights, mirroring ``Quantised._fixed`` in the Lava
    compiler: the population's power-of-two scale (``fixed_point.dyadic_scale``), then
    each dense or sparse projection's own exponent. Power-of-two steps survive the
    exact-float snap of the deployed weights, so the compiler finds them on this grid.
    """
    from ..backends.lava import fixed_point as fx

    modules = dict(model.named_modules())
    peak = {c.module: float(modules[c.module].folded()[0].abs().max()) for g in grids for c in g.carriers}
    steps = {}
    for g in grids:
        peaks = [peak[c.module] * c.fold for c in g.carriers] + ([g.fixed_peak] if g.fixed_peak else [])
        s = fx.dyadic_scale(peaks, g.thresholds)
        if s is None:
            raise NeurodeployError(f"population '{g.population}' has non-uniform thresholds; "
                                   "Loihi-aware training needs one threshold per population")
        for c in g.carriers:
            e = fx.weight_exponent(peak[c.module] * c.fold * s / 64.0, c.exponent_free)
            steps[c.module] = 2.0 * 2.0 ** e * 64.0 / (s * c.fold)
    return steps


def set_steps(model, steps: dict) -> None:
    modules = dict(model.named_modules())
    for name, step in steps.items():
        modules[name].loihi_step = float(step)


class OnTheGrid:
    """Keeps a model on Loihi's grid while it trains: before every forward the steps are
    recomputed from the current weights. ``freeze()`` fixes the steps of the final
    weights (those that are saved and deployed) and detaches."""

    def __init__(self, model, input_shape):
        self.model, self.grids = model, population_grids(model, input_shape)
        set_steps(model, weight_steps(model, self.grids))
        self._hook = model.register_forward_pre_hook(lambda m, args: set_steps(m, weight_steps(m, self.grids)))

    def freeze(self) -> None:
        self._hook.remove()
        set_steps(self.model, weight_steps(self.model, self.grids))
