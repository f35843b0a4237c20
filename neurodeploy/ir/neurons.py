"""The discretisation of NIR's neurons: the one place every backend and the spiking
twins take their update coefficients from.

NIR neurons are continuous-time. For a LIF population

    tau * dv/dt = (v_leak - v) + r * I

this toolkit discretises with forward Euler at step ``dt`` (from the graph's
conventions, :mod:`neurodeploy.ir.conventions`). Per timestep t, with I[t] the sum
of all incoming edges (NIR fan-in):

    LIF      v[t] = decay v[t-1] + gain I[t] + leak     decay = 1 - dt/tau
                                                        gain  = r dt/tau
                                                        leak  = v_leak dt/tau
             s[t] = v[t] > v_threshold                  (strict ">", as snnTorch)
             v[t] = v_reset where s[t]                  (reset in the same step)
    IF       decay = 1, gain = r dt, leak = 0; spikes and reset as LIF
             (gain = r for graphs whose IF integrates once per step, ``integrator="step"``:
             Sinabs' IAF and snnTorch's importer read IF so, and write no dt)
    LI       LIF without a threshold: the membrane is the output
    I        IF without a threshold
    CubaLIF  i[t] = syn_decay i[t-1] + w_in' I[t]       syn_decay = 1 - dt/tau_syn
                                                        w_in'     = w_in dt/tau_syn
             then LIF on i[t] with tau = tau_mem
    CubaLI   the same without a threshold

With snnTorch's export convention (tau = dt/(1 - beta), r = tau/dt) the LIF update
is exactly snnTorch's ``Leaky`` with reset to zero: v[t] = beta v[t-1] + I[t].

Reset. NIR knows one reset: v = v_reset in the step of the spike. snnTorch's neurons
reset by subtraction by default, and apply the reset one step late; NIR has no field
for either, so a graph's conventions name the reset of each population that differs
(:meth:`neurodeploy.ir.conventions.GraphConventions.reset_of`). With u[t] the update
above (decay v + gain I + leak) and R = [v[t-1] > v_threshold] (the reset snnTorch
computes from the state it carried over):

    to_v_reset        s = u > thr;              v = v_reset where s          (NIR)
    subtract          m = u - R thr;  s = m > thr;  v = m - (s - R) thr      (snnTorch, reset_delay=False)
    subtract_delayed  v = u - R thr;  s = v > thr                            (snnTorch's default)
    zero_delayed      v = u - R u;    s = v > thr                            (snnTorch Synaptic / RLeaky,
                                                                              reset_mechanism="zero")
    none              v = u;          s = v > thr

written as snnTorch computes them, operation for operation, so that float32 results
are identical. (With ``subtract``, R is almost always 0: it is 1 only when the state
after a subtraction still exceeds the threshold.)

The coefficients are computed in float64 from the NIR parameters and then rounded
once to float32, so that a spiking twin (which stores beta), the torch backend and
the Lava compiler all use bit-identical numbers: beta -> tau -> 1 - dt/tau lands on
the same float32. Pure numpy: the Lava runtime imports this module too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import nir
import numpy as np

DEFAULT_DT = 1e-4  # snnTorch's export convention; NIR itself stores no dt
RESET_MODES = ("to_v_reset", "subtract", "subtract_delayed", "zero_delayed", "none")


@dataclass(frozen=True)
class Coefficients:
    """Per-neuron float32 coefficients of one population's discrete update (each array
    keeps its parameter's own shape; they broadcast against each other)."""

    decay: np.ndarray
    gain: np.ndarray
    leak: np.ndarray
    threshold: np.ndarray           # +inf for populations without spikes (LI, I, CubaLI)
    v_reset: np.ndarray
    spiking: bool = True
    syn_decay: Optional[np.ndarray] = None   # Cuba* only
    w_in: Optional[np.ndarray] = None

    def arrays(self) -> tuple:
        """(decay, gain, leak, threshold, v_reset)."""
        return self.decay, self.gain, self.leak, self.threshold, self.v_reset


def _f32(a) -> np.ndarray:
    return np.array(a, dtype=np.float32, order="C")


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def beta_to_nir(beta, dt: float = DEFAULT_DT) -> tuple:
    """snnTorch's beta -> NIR (tau, r): tau = dt / (1 - beta), r = tau / dt."""
    tau = dt / (1.0 - _f64(beta))
    return tau, tau / dt


def lif(tau, r, v_leak, v_threshold, v_reset, dt: float = DEFAULT_DT) -> Coefficients:
    """LIF parameters -> coefficients (decay = 1 - dt/tau, gain = r dt/tau, leak = v_leak dt/tau)."""
    alpha = dt / _f64(tau)
    return Coefficients(_f32(1.0 - alpha), _f32(_f64(r) * alpha), _f32(_f64(v_leak) * alpha),
                        _f32(v_threshold), _f32(v_reset))


def coefficients(node, dt: float, integrator: str = "dt") -> Coefficients:
    """The discrete update of any NIR population node at step ``dt``; ``integrator`` says
    whether IF / I scale their input by dt ("dt") or add r * I once per step ("step")."""
    if isinstance(node, (nir.LIF, nir.LI)):
        spiking = isinstance(node, nir.LIF)
        tau = _f64(node.tau)
        c = lif(tau, node.r, node.v_leak, node.v_threshold if spiking else np.full_like(tau, np.inf),
                node.v_reset if spiking else np.zeros_like(tau), dt)
        return Coefficients(*c.arrays(), spiking=spiking)
    if isinstance(node, (nir.IF, nir.I)):
        spiking = isinstance(node, nir.IF)
        r = _f64(node.r)
        gain = r * dt if integrator == "dt" else r
        return Coefficients(_f32(np.ones_like(r)), _f32(gain), _f32(np.zeros_like(r)),
                            _f32(node.v_threshold) if spiking else _f32(np.full_like(r, np.inf)),
                            _f32(node.v_reset) if spiking else _f32(np.zeros_like(r)), spiking=spiking)
    if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        spiking = isinstance(node, nir.CubaLIF)
        tau_mem = _f64(node.tau_mem)
        c = lif(tau_mem, node.r, node.v_leak, node.v_threshold if spiking else np.full_like(tau_mem, np.inf),
                node.v_reset if spiking else np.zeros_like(tau_mem), dt)
        tau_syn = _f64(node.tau_syn)
        return Coefficients(*c.arrays(), spiking=spiking, syn_decay=_f32(1.0 - dt / tau_syn),
                            w_in=_f32(_f64(node.w_in) * dt / tau_syn))
    raise TypeError(f"{type(node).__name__} is not a NIR population")


__all__ = ["DEFAULT_DT", "RESET_MODES", "Coefficients", "beta_to_nir", "lif", "coefficients"]
