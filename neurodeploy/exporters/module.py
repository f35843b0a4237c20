"""Export the user's own network: an ordinary ``nn.Module`` with snnTorch (or this toolkit's)
neurons, lowered exactly as the zoo is, and checked spike for spike on every export.

What it takes. A module whose ``forward(x)`` is one timestep (snnTorch's step-loop style:
neurons with ``init_hidden=True`` keep their state between calls), or one whose neurons
are :class:`neurodeploy.architectures.layers.LIF` (multi-step style: the module sees
all T steps at once). Layers: Conv2d (any stride, padding, dilation; dense or depthwise),
Linear, BatchNorm (folded into the conv or linear before it, else a per-channel affine
projection), AvgPool2d, AdaptiveAvgPool2d where it is an average over fixed windows,
Flatten / view / reshape, Dropout and Identity (eval), ``torch.cat``, residual ``+``,
channel split / chunk and shuffles written as reshape-transpose-reshape; neurons
snnTorch Leaky, Synaptic, RLeaky, RSynaptic (scalar, per-channel or learned beta and
threshold; every reset mechanism and reset delay, recorded per population in the graph's
conventions). Anything without an exact spiking form (max pooling, ReLU between spiking
layers, gates, softmax) is refused with the module's name and the reason.

How. The module is copied (the caller's is never touched: not its mode, not its neurons'
state), traced with torch.fx (layers and neurons are leaves), its BatchNorms folded in
float64 into the layer before them, optionally snapped to the zoo's exact power-of-two
grid (``snap``), and lowered by :func:`neurodeploy.exporters.lowering.lower_traced`.

Exactness, measured: :func:`neurodeploy.measure.exactness.verify` runs the original module,
the deployed copy (folded, maybe snapped) and the exported graph on the torch backend, and
compares outputs and each population's spikes. Folding BatchNorm and splitting sums across projections change float
rounding, so without ``snap`` the graph may differ from the module in a few values; with
``snap`` every sum over spikes is exact in float32 and the graph reproduces the deployed
module bit for bit (the report also says how much the snap itself changed the outputs).
"""
from __future__ import annotations

import copy
from typing import Optional

import nir
import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..architectures.layers import LIF, TRACE_LEAVES, batchnorm64, fold_batchnorm, snap_to_exact_grid
from ..errors import NeurodeployError
from ..ir.conventions import GraphConventions, with_conventions
from ..ir.neurons import DEFAULT_DT
from .lowering import lower_traced
from .neurons import neuron_types


class ModuleTracer(torch.fx.Tracer):
    """Traces through containers down to layers and neurons (both kept as single nodes)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, neuron_types() + TRACE_LEAVES) or super().is_leaf_module(m, qualname)


def reset_state(net: nn.Module) -> None:
    """Forget every neuron's state (snnTorch keeps it in the modules; an empty tensor makes
    each neuron start again from zeros of the next input's shape)."""
    for m in net.modules():
        if isinstance(m, neuron_types()) and not isinstance(m, LIF):
            for attr in ("mem", "syn", "spk"):
                if torch.is_tensor(getattr(m, attr, None)):
                    setattr(m, attr, torch.zeros(0))


def _multi_step(net: nn.Module) -> bool:
    return any(isinstance(m, LIF) for m in net.modules())


def _set_time(net: nn.Module, timesteps: int, batch: int) -> None:
    for m in net.modules():
        if isinstance(m, LIF):
            m.timesteps, m.batch = timesteps, batch


def trace(net: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """fx graph of ``net`` (already a private copy) with per-sample shapes attached."""
    try:
        graph = ModuleTracer().trace(net)
    except Exception as e:  # noqa: BLE001 - fx raises many types on untraceable code
        raise NeurodeployError(f"cannot trace {type(net).__name__} with torch.fx ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); its forward must be one timestep "
                               "without data-dependent Python control flow") from None
    gm = torch.fx.GraphModule(net, graph)
    arguments = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(arguments) != 1:
        raise NeurodeployError(f"{type(net).__name__}'s forward takes {len(arguments)} arguments; it must take one "
                               "input (one timestep; neuron state kept in the modules, e.g. snnTorch's "
                               "init_hidden=True)")
    _set_time(net, 1, example.shape[0])       # gm holds net's own modules: one setting serves both
    try:
        reset_state(net)
        with torch.no_grad():
            net(example)          # a plain call first: ShapeProp would print the user's traceback itself
    except Exception as e:  # noqa: BLE001 - the user's forward may raise anything
        raise NeurodeployError(f"{type(net).__name__} does not run on a sample of shape {tuple(example.shape[1:])} "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check "
                               "--input-shape") from None
    finally:
        reset_state(net)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    reset_state(net)
    return gm


def fold_batchnorms(gm: torch.fx.GraphModule) -> int:
    """Fold every BatchNorm that alone reads a conv / linear into it (float64, then float32),
    and take the BatchNorm out of the graph: the module then computes what the NIR graph
    will. Returns how many were folded."""
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        src = node.args[0]
        layer = modules.get(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
        pair = ((isinstance(layer, nn.Conv2d) and isinstance(modules[node.target], nn.BatchNorm2d))
                or (isinstance(layer, nn.Linear) and isinstance(modules[node.target], nn.BatchNorm1d)))
        if not pair or len(src.users) != 1 or sum(1 for n in gm.graph.nodes if n.target == src.target) != 1:
            continue
        bn = modules[node.target]
        w = layer.weight.detach().double()
        b = layer.bias.detach().double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        w, b = fold_batchnorm(w, b, batchnorm64(bn))
        layer.weight = nn.Parameter(w.float(), requires_grad=False)
        layer.bias = nn.Parameter(b.float(), requires_grad=False)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.recompile()
    return folded


def snap_weights(gm: torch.fx.GraphModule) -> int:
    """Every conv / linear (recurrent ones included) onto the exact power-of-two grid of
    ``layers.snap_to_exact_grid``: sums over spikes become exact in float32."""
    n = 0
    for m in gm.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w, b = snap_to_exact_grid(m.weight.detach(), m.bias.detach() if m.bias is not None else None)
            m.weight = nn.Parameter(w, requires_grad=False)
            if m.bias is not None:
                m.bias = nn.Parameter(b, requires_grad=False)
            n += 1
    return n


def private_copy(module: nn.Module) -> nn.Module:
    """A deep copy of the caller's module, never touching it. Neuron state left from a forward
    pass with autograd on (snnTorch's mem after training) is not a leaf tensor and cannot be
    deep-copied: its copy is a detached clone (the state is reset before any run anyway)."""
    memo, seen, stack = {}, set(), [module]
    while stack:                      # every tensor reachable through attributes, dicts and lists
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if torch.is_tensor(obj):
            if not obj.is_leaf:
                memo[id(obj)] = obj.detach().clone()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())
    return copy.deepcopy(module, memo)


def deploy(module: nn.Module, example: torch.Tensor, snap: bool = False) -> torch.fx.GraphModule:
    """A private, eval-mode, traced copy of ``module`` computing with the deployed weights
    (BatchNorm folded; snapped with ``snap``), shapes attached: what the lowering reads."""
    net = private_copy(module).cpu().eval()
    gm = trace(net, example)          # shapes attached here stay valid: folding and snapping keep them
    fold_batchnorms(gm)
    if snap:
        snap_weights(gm)
    return gm


def _example(example_input) -> torch.Tensor:
    if isinstance(example_input, (tuple, list)) and all(isinstance(d, int) for d in example_input):
        if any(d <= 0 for d in example_input):
            raise NeurodeployError(f"input shape {tuple(example_input)}: every size must be a positive integer")
        return torch.zeros((1,) + tuple(example_input))
    x = torch.as_tensor(np.asarray(example_input, np.float32) if not torch.is_tensor(example_input)
                        else example_input).float()
    if x.dim() < 2:
        raise NeurodeployError("the example input needs a batch dimension: (N, *input_shape)")
    return x[:1].cpu()


def export(module: nn.Module, example_input, timesteps: Optional[int] = None, dt: Optional[float] = None,
           snap: bool = False, name: Optional[str] = None) -> nir.NIRGraph:
    """Lower an ordinary spiking ``nn.Module`` to an exact NIR graph.

    ``example_input``: a batch (N, *input_shape) or the per-sample shape as a tuple.
    ``timesteps`` and ``dt`` are recorded in the graph's conventions (dt defaults to
    snnTorch's 1e-4, with which snnTorch's beta maps to tau = dt/(1 - beta)). The module
    is not changed. Check the result with :func:`neurodeploy.measure.exactness.verify`.
    """
    if timesteps is not None and int(timesteps) < 1:
        raise NeurodeployError(f"timesteps must be a positive integer, not {timesteps}")
    if dt is not None and not (dt > 0 and np.isfinite(dt)):
        raise NeurodeployError(f"dt must be a positive number of seconds, not {dt}")
    example = _example(example_input)
    input_shape = tuple(int(s) for s in example.shape[1:])
    gm = deploy(module, example, snap)
    graph, resets = lower_traced(gm, input_shape, dt)
    conventions = GraphConventions(dt=float(dt or DEFAULT_DT), timesteps=int(timesteps) if timesteps else None,
                                   input_shape=input_shape, model=name or type(module).__name__, twin="snn",
                                   population_reset=resets, extra={"exported_from": "module", "snapped": bool(snap)})
    return with_conventions(graph, conventions)


# ---------------------------------------------------------------------------- verification
def run(module: nn.Module, x: np.ndarray, timesteps: int, batch_size: int = 64) -> tuple:
    """Run a module as its users do: T calls per batch (step style, state reset first) or one
    multi-step call. Returns outputs (T, N, ...) (the spikes, where a neuron returns a tuple)
    and each neuron module's spike count per sample, {name: (N,)}."""
    names = {m: n for n, m in module.named_modules() if isinstance(m, neuron_types())}
    multi = _multi_step(module)
    batch: dict = {}        # neuron name -> spikes per sample in the current batch, summed over calls

    def hook(mod, inp, out):
        s = out[0] if isinstance(out, tuple) else out
        n = names[mod]
        per_sample = (s.reshape(timesteps, -1, *s.shape[1:]).flatten(2).sum(dim=(0, 2)) if multi
                      else s.flatten(1).sum(1))
        batch[n] = batch[n] + per_sample if n in batch else per_sample

    hooks = [m.register_forward_hook(hook) for m in names]
    outs, spikes = [], {}
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = torch.as_tensor(x[i:i + batch_size]).float()
                batch.clear()
                if multi:
                    _set_time(module, timesteps, len(xb))
                    y = module(xb)
                    y = y[0] if isinstance(y, tuple) else y
                    outs.append(y.reshape(timesteps, len(xb), *y.shape[1:]))
                else:
                    reset_state(module)
                    steps = []
                    for _ in range(timesteps):
                        y = module(xb)
                        while isinstance(y, tuple):
                            y = y[0]
                        steps.append(y)
                    outs.append(torch.stack(steps))
                for n, v in batch.items():
                    spikes.setdefault(n, []).append(v)
    finally:
        for h in hooks:
            h.remove()
        reset_state(module)
    return torch.cat(outs, 1).numpy(), {k: torch.cat(v).numpy() for k, v in spikes.items()}
