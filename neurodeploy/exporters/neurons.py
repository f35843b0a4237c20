"""Neuron modules -> NIR populations: this toolkit's own LIF and snnTorch's neurons.

Each adapter reads a module's (deployed, eval-mode) parameters for a population of a
given shape and returns a :class:`Population`: the NIR node with full-shape parameter
arrays, the reset mode NIR cannot express (recorded in the graph's conventions, see
:mod:`neurodeploy.ir.neurons`), and the recurrent projection of RLeaky / RSynaptic,
which the lowering wires from the population back to itself (NIR's back edge: the
previous step's spikes).

snnTorch (1.0) semantics, read from its source (``snntorch/_neurons``):

    Leaky     mem = beta mem + I (- reset thr)          reset = [mem_prev > thr]
    Synaptic  syn = alpha syn + I;  mem = beta mem + syn (- reset thr)
    RLeaky    mem = beta mem + I + V(spk_prev)          V: Linear, Conv2d or elementwise
    RSynaptic syn = alpha syn + I + V(spk_prev);  mem = beta mem + syn

with beta, alpha clamped to [0, 1] and spikes s = mem > thr. As NIR nodes (the
convention of snnTorch's own exporter, dt = 1e-4): LIF with tau = dt/(1 - beta),
r = tau/dt (so the update is exactly beta mem + I), CubaLIF with tau_syn = dt/(1 - alpha)
and w_in = tau_syn/dt. A recurrent bias enters every step, spikes or not, so it
becomes the population's constant drive (v_leak = bias r, i.e. leak = bias).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import nir
import numpy as np
import torch
from torch import nn

from ..errors import NeurodeployError
from ..ir.neurons import DEFAULT_DT, beta_to_nir


@dataclass
class Population:
    node: object                         # nir.LIF / nir.IF / nir.CubaLIF
    reset: str = "to_v_reset"            # one of ir.neurons.RESET_MODES
    recurrent: Optional[nn.Module] = None  # applied to the previous step's spikes (RLeaky, RSynaptic)


def _snntorch():
    try:
        import snntorch
        return snntorch
    except ImportError:
        return None


def neuron_types() -> tuple:
    """The module types this module maps (what the tracer keeps as leaves)."""
    from ..architectures.layers import LIF
    types = [LIF]
    snn = _snntorch()
    if snn is not None:
        types += [snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic]
    return tuple(types)


def is_neuron(module) -> bool:
    return isinstance(module, neuron_types())


def _full(value, shape, what: str, name: str) -> np.ndarray:
    """A parameter (float, 0-d or broadcastable tensor) as a float32 array of the population shape,
    broadcast as torch broadcasts it against the (B, *shape) state."""
    a = value.detach().cpu().float().numpy() if torch.is_tensor(value) else np.asarray(value, np.float32)
    try:
        return np.ascontiguousarray(np.broadcast_to(a.astype(np.float32), shape))
    except ValueError:
        raise NeurodeployError(f"{name}: {what} of shape {a.shape} does not broadcast to the population "
                               f"{tuple(shape)}") from None


def _clamped(decay):
    """beta / alpha as snnTorch uses them: clamped to [0, 1] in every forward pass."""
    return decay.clamp(0, 1) if torch.is_tensor(decay) else min(max(float(decay), 0.0), 1.0)


def _reset_mode(module, name: str, kind: str) -> str:
    """snnTorch's reset_mechanism and reset_delay -> a reset mode (ir/neurons.py)."""
    mechanism = getattr(module, "reset_mechanism", "subtract")
    delay = bool(getattr(module, "reset_delay", True))
    if mechanism == "none":
        return "none"
    if mechanism == "subtract":
        return "subtract_delayed" if delay else "subtract"
    if mechanism == "zero":
        if kind == "Leaky" or not delay:
            return "to_v_reset"      # Leaky zeroes before integrating: NIR's reset (and the same spikes)
        return "zero_delayed"        # Synaptic / RLeaky / RSynaptic discard the step after a spike
    raise NeurodeployError(f"{name}: reset_mechanism {mechanism!r} is unknown")


def _check_plain(module, name: str):
    """Refuse the snnTorch options that change what a spike is."""
    if getattr(module, "inhibition", False):
        raise NeurodeployError(f"{name}: inhibition (winner-take-all across a layer) has no NIR form")
    if getattr(module, "state_quant", False):
        raise NeurodeployError(f"{name}: state_quant has no NIR form; export without state quantisation")
    g = getattr(module, "graded_spikes_factor", 1.0)
    if torch.is_tensor(g) and not bool(torch.all(g == 1)) or (not torch.is_tensor(g) and g != 1):
        raise NeurodeployError(f"{name}: graded_spikes_factor != 1 (graded spikes) has no NIR LIF form")


def _lif(beta: np.ndarray, threshold: np.ndarray, dt: float, leak: Optional[np.ndarray], name: str):
    """A LIF node whose update is exactly v = beta v + I (+ leak); IF when every beta is 1."""
    shape = beta.shape
    zeros = np.zeros(shape)
    if np.all(beta == 1.0):
        r = np.full(shape, 1.0 / dt)
        if leak is not None and np.any(leak):
            raise NeurodeployError(f"{name}: beta = 1 (no leak) with a recurrent bias has no NIR IF form")
        return nir.IF(r=r, v_threshold=threshold.astype(np.float64), v_reset=zeros)
    if np.any(beta == 1.0):
        raise NeurodeployError(f"{name}: some neurons have beta = 1 and others not; NIR needs one neuron type "
                               "per population")
    tau, r = beta_to_nir(beta, dt)
    v_leak = zeros if leak is None else leak.astype(np.float64) * r
    return nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=threshold.astype(np.float64), v_reset=zeros)


def _recurrent(module, name: str):
    """RLeaky/RSynaptic's V as a module without bias (the bias is returned apart)."""
    rec = module.recurrent
    if isinstance(rec, (nn.Linear, nn.Conv2d)):
        bias = rec.bias.detach().cpu().float().numpy() if rec.bias is not None else None
        if isinstance(rec, nn.Linear):
            plain = nn.Linear(rec.in_features, rec.out_features, bias=False)
        else:
            plain = nn.Conv2d(rec.in_channels, rec.out_channels, rec.kernel_size, rec.stride, rec.padding,
                              rec.dilation, rec.groups, bias=False)
        plain.weight.data = rec.weight.detach().clone()
        return plain, bias
    if hasattr(rec, "V"):                      # one-to-one: s * V
        return rec, None
    raise NeurodeployError(f"{name}: recurrent connection {type(rec).__name__} is not supported")


def population(module, shape: tuple, name: str, dt: Optional[float] = None) -> Population:
    """The NIR population of a neuron module for a population of ``shape`` (batch-free)."""
    from ..architectures.layers import LIF
    shape = tuple(int(s) for s in shape)
    if isinstance(module, LIF):
        return Population(nir.LIF(**module.nir_parameters(shape)))
    snn = _snntorch()
    kind = type(module).__name__
    _check_plain(module, name)
    dt = DEFAULT_DT if dt is None else dt
    beta = _full(_clamped(module.beta), shape, "beta", name)
    threshold = _full(module.threshold, shape, "threshold", name)
    if np.any(threshold <= 0):
        raise NeurodeployError(f"{name}: threshold must be > 0")
    reset = _reset_mode(module, name, kind)
    recurrent, leak = None, None
    if isinstance(module, (snn.RLeaky, snn.RSynaptic)):
        recurrent, bias = _recurrent(module, name)
        if bias is not None:
            leak = _full(bias.reshape((-1,) + (1,) * (len(shape) - 1)) if len(shape) > 1 else bias, shape,
                         "recurrent bias", name)
    if isinstance(module, (snn.Leaky, snn.RLeaky)):
        return Population(_lif(beta, threshold, dt, leak, name), reset, recurrent)
    # Synaptic / RSynaptic: CubaLIF with i = alpha i + I, v = beta v + i
    if leak is not None:
        # RSynaptic adds V(spk) + bias to the synaptic current, not to the membrane
        raise NeurodeployError(f"{name}: RSynaptic with a recurrent bias has no exact NIR form; use bias=False")
    alpha = _full(_clamped(module.alpha), shape, "alpha", name)
    if np.any(alpha == 1.0) or np.any(beta == 1.0):
        raise NeurodeployError(f"{name}: alpha or beta = 1 (no decay) has no NIR CubaLIF form")
    tau_syn, _ = beta_to_nir(alpha, dt)
    tau_mem, r = beta_to_nir(beta, dt)
    zeros = np.zeros(shape)
    node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=zeros, v_threshold=threshold.astype(np.float64),
                       v_reset=zeros, w_in=tau_syn / dt)
    return Population(node, reset, recurrent)
