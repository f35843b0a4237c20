"""Lava processes and process models of the neurodeploy Lava backend (runtime side only).

``Population``: a LIF/IF/CubaLIF population in NIR semantics (see neurodeploy/dynamics.py):

    I[t] = a_in[t] + drive[t];   CubaLIF: I[t] <- i[t] = syn_decay * i[t-1] + w_in' * I[t]
    (w_in' = w_in * dt / tau_syn: NIR's tau_syn di/dt = -i + w_in I, forward Euler)
    v[t] = decay * v[t-1] + gain * I[t] + leak                   (float model)
    s[t] = v[t] > threshold;  v[t] = v_reset where s[t]

Its fixed-point model is lava-nc's own bit-accurate CUBA arithmetic
(``AbstractPyLifModelFixed.subthr_dynamics``: 12-bit decays, 24-bit wrapped state,
synaptic input and threshold << 6) with du = 4095 (the current does not persist, as
in NIR's LIF) and per-neuron dv / threshold arrays; gain lives in the weights and
the drive (see fixed_point.py). Unlike lava's LIF it also

- runs many samples back to back: the sample of global step g is
  (g - offset) // T and v is zeroed at the first step of every sample, where
  ``offset`` is the population's pipeline depth (each Dense/Conv adds one step);
- takes ``drive`` (samples, steps, *shape): the current of the projections fed by
  the real-valued input, computed on the host (the bias route netx uses for input);
- counts its spikes per neuron and per sample inside the simulation, and streams
  its spike train to the host when asked (``trace``: output populations and those
  counting needs), and its per-neuron counts once at the end (``tally``).

``SpikeDelay``: a ring buffer that delays spikes by ``delay`` steps, inserted where
two paths into one population have different pipeline depths.

``PyFastConvModelFixed``: lava's Conv process with the stock fixed-point arithmetic
(no weight_exp, 24-bit signed wrap of the output) computed as one im2col matmul
instead of one scipy convolve2d per channel pair; bit-exact with ``PyConvModelFixed``.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv.models import PyConvModelFixed, PyConvModelFloat
from lava.proc.conv.process import Conv
from lava.proc.conv import utils as conv_utils
from lava.proc.lif.models import AbstractPyLifModelFixed

from . import fixed_point as fx

TRACE_BUFFER = 64   # spike frames a recorded population may run ahead of the host's reader


class Population(AbstractProcess):
    def __init__(self, *, shape, timesteps, samples, offset, record=False,
                 decay=1.0, gain=1.0, leak=0.0, threshold=1.0, v_reset=0.0,
                 drive=None, dv=0, vth_mant=1, drive_int=None, cuba=False,
                 syn_decay=0.0, w_in=1.0, du=4095, bias_int=0, input_shift=0, reset="to_v_reset", name=None):
        super().__init__(shape=shape, timesteps=timesteps, samples=samples, offset=offset,
                         record=record, cuba=cuba, input_shift=input_shift, reset=reset, name=name)
        shape = tuple(int(s) for s in shape)
        full = lambda x, dt=np.float64: np.broadcast_to(np.asarray(x, dt), shape).copy()
        if drive is None:
            drive = np.zeros((1, 1) + shape)
        if drive_int is None:
            drive_int = np.zeros((1, 1) + shape, np.int32)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.u = Var(shape=shape, init=0)
        self.decay = Var(shape=shape, init=full(decay))
        self.gain = Var(shape=shape, init=full(gain))
        self.leak = Var(shape=shape, init=full(leak))
        self.vth = Var(shape=shape, init=full(threshold))
        self.v_reset = Var(shape=shape, init=full(v_reset))
        self.drive = Var(shape=drive.shape, init=drive)
        self.dv = Var(shape=shape, init=full(dv, np.int32))
        self.vth_mant = Var(shape=shape, init=full(vth_mant, np.int32))
        self.drive_int = Var(shape=drive_int.shape, init=drive_int)
        # CubaLIF: i = syn_decay * i + w_in * I (float); fixed: u decays by du, drive_int
        # enters u and bias_int (the leak) enters v
        self.syn_decay = Var(shape=shape, init=full(syn_decay))
        self.w_in = Var(shape=shape, init=full(w_in))
        self.du = Var(shape=shape, init=full(du, np.int32))
        self.bias_int = Var(shape=shape, init=full(bias_int, np.int32))
        self.counts = Var(shape=shape, init=0)              # spikes per neuron, all samples
        self.sample_counts = Var(shape=(samples,), init=0)  # spikes per sample
        self.input_events = Var(shape=(1,), init=0)         # nonzero input currents arriving
        self.overflows = Var(shape=(1,), init=0)            # input currents past the 24-bit u (wrapped)
        # Read-out through Lava's external pipes (the channel its io.Extractor uses), not Vars:
        # Var.get() moves an array one element per message (PyProcessModel._get_var, ~35 us
        # each), which made reading recorded spike trains ~99 % of a run's time.
        # ``trace``: the spikes of every step the population runs a sample (record only);
        # ``tally``: ``counts``, once, after the population's last step.
        self.trace = OutPort(shape=shape)
        self.tally = OutPort(shape=shape)
        if record:
            self.trace.flag_external_pipe(buffer_size=TRACE_BUFFER)
        self.tally.flag_external_pipe(buffer_size=1)


class _PopulationMixin:
    """Sample bookkeeping shared by the float and fixed models."""

    def _where(self):
        p = self.proc_params
        t = self.time_step - 1 - p["offset"]
        if t < 0 or t >= p["samples"] * p["timesteps"]:
            return None
        return divmod(t, p["timesteps"])

    def _drive(self, drive, sample, k):
        return drive[min(sample, drive.shape[0] - 1), min(k, drive.shape[1] - 1)]

    def _account(self, s, sample, k, current):
        p = self.proc_params
        self.input_events[0] += int(np.count_nonzero(current))
        n = int(np.count_nonzero(s))
        if n:
            self.counts += (s != 0)
            self.sample_counts[sample] += n
        if p["record"]:
            self.trace.send(s != 0)
        if sample == p["samples"] - 1 and k == p["timesteps"] - 1:
            self.tally.send(self.counts)

    def _fire(self, v, r, thr):
        """Spikes and the new state from the updated state v, in the population's reset mode
        (ir/neurons.py; r = [previous state > thr], thr the threshold in state units).
        The same operations as the torch reference, in integers or float32."""
        mode = self.proc_params["reset"]
        if mode == "to_v_reset":
            s = v > thr
            return s, np.where(s, self._v_reset(v), v)
        if mode == "none":
            return v > thr, v
        if mode == "zero_delayed":
            v = v - r * v
            return v > thr, v
        m = v - r * thr
        s = m > thr
        return s, (m if mode == "subtract_delayed" else m - (s.astype(m.dtype) - r) * thr)


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPopulationModelFloat(_PopulationMixin, PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    decay: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    leak: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    v_reset: np.ndarray = LavaPyType(np.ndarray, float)
    drive: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32)
    vth_mant: np.ndarray = LavaPyType(np.ndarray, np.int32)
    drive_int: np.ndarray = LavaPyType(np.ndarray, np.int32)
    syn_decay: np.ndarray = LavaPyType(np.ndarray, float)
    w_in: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32)
    bias_int: np.ndarray = LavaPyType(np.ndarray, np.int32)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    sample_counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    input_events: np.ndarray = LavaPyType(np.ndarray, np.int64)
    overflows: np.ndarray = LavaPyType(np.ndarray, np.int64)
    trace: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int8)
    tally: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)

    def _v_reset(self, v):
        return self.v_reset.astype(np.float32)

    def run_spk(self):
        a_in = self.a_in.recv()
        where = self._where()
        if where is None:
            self.s_out.send(np.zeros(self.v.shape))
            return
        sample, k = where
        if k == 0:
            self.v[:] = 0
            self.u[:] = 0
        f32 = np.float32
        thr = self.vth.astype(f32)
        r = (self.v.astype(f32) > thr).astype(f32)          # the reset carried over (subtractive modes)
        # float32, in the order of neurodeploy.kernels.dynamics.lif_scan (the torch reference)
        current = (a_in + self._drive(self.drive, sample, k)).astype(f32)
        drive = current
        if self.proc_params["cuba"]:
            drive = self.syn_decay.astype(f32) * self.u.astype(f32) + self.w_in.astype(f32) * current
            self.u[:] = drive
        v = (self.decay.astype(f32) * self.v.astype(f32) + self.gain.astype(f32) * drive
             + self.leak.astype(f32))
        s, v = self._fire(v, r, thr)
        self.v[:] = v
        self._account(s, sample, k, current)
        self.s_out.send(s.astype(float))


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyPopulationModelFixed(_PopulationMixin, AbstractPyLifModelFixed):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    decay: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    leak: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    v_reset: np.ndarray = LavaPyType(np.ndarray, float)
    drive: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    vth_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    drive_int: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    syn_decay: np.ndarray = LavaPyType(np.ndarray, float)
    w_in: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    bias_int: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    sample_counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    input_events: np.ndarray = LavaPyType(np.ndarray, np.int64)
    overflows: np.ndarray = LavaPyType(np.ndarray, np.int64)
    trace: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int8)
    tally: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    # AbstractPyLifModelFixed declares these; unused here (bias via drive_int / bias_int)
    bias_mant = None
    bias_exp = None

    def _v_reset(self, v):
        return np.zeros_like(v)          # fixed point: v_reset is 0 (fixed_point.py refuses others)

    def run_spk(self):
        a_in = self.a_in.recv().astype(np.int32)
        where = self._where()
        if where is None:
            self.s_out.send(np.zeros(self.v.shape, np.int32))
            return
        sample, k = where
        if k == 0:
            self.v[:] = 0
            self.u[:] = 0
        thr = np.left_shift(self.vth_mant.astype(np.int64), self.vth_shift)
        r = (self.v > thr).astype(np.int64)                 # the reset carried over (subtractive modes)
        # every incoming projection's weight exponent raised by input_shift (fixed_point.py)
        self.act_shift = fx.VTH_SHIFT + self.proc_params["input_shift"]
        shifted = np.left_shift(a_in.astype(np.int64), self.act_shift)
        self.overflows[0] += int(np.count_nonzero(fx.wrap_state(shifted) != shifted))   # lava's 24-bit wrap of u
        drive = self._drive(self.drive_int, sample, k).astype(np.int32)
        current = shifted + drive       # the input current arriving, for the input-event count
        if self.proc_params["cuba"]:     # the same arithmetic, with the drive entering u
            self.u[:], self.v[:] = fx.cuba_step(self.u, self.v, a_in, self.du, self.dv, drive,
                                                self.bias_int)
        else:
            # lava-nc's bit-accurate arithmetic; du = 4095 (+ ds_offset 1): u = a_in << 6
            self.effective_bias = drive
            self.subthr_dynamics(activation_in=a_in)
        s, v = self._fire(self.v.astype(np.int64), r, thr)
        self.v[:] = fx.wrap_state(v)
        self._account(s, sample, k, current)
        self.s_out.send(s.astype(np.int32))


class SampleGate(AbstractProcess):
    """On a recurrent path: passes a population's spikes on, except those of the last step of
    each sample, so that the next sample starts without the previous one's recurrent input
    (samples run back to back in one network; NIR starts every run from zero)."""

    def __init__(self, *, shape, timesteps, samples, offset, name=None):
        super().__init__(shape=shape, timesteps=timesteps, samples=samples, offset=offset, name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


class _AbstractGateModel(_PopulationMixin, PyLoihiProcessModel):
    def run_spk(self):
        x = self.s_in.recv()
        where = self._where()
        if where is None or where[1] == self.proc_params["timesteps"] - 1:
            x = np.zeros_like(x)
        self.s_out.send(x)


@implements(proc=SampleGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySampleGateModelFloat(_AbstractGateModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=SampleGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySampleGateModelFixed(_AbstractGateModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)


class SpikeDelay(AbstractProcess):
    def __init__(self, *, shape, delay, name=None):
        super().__init__(shape=shape, delay=delay, name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buf = Var(shape=(int(delay),) + tuple(shape), init=0)


class _AbstractDelayModel(PyLoihiProcessModel):
    def run_spk(self):
        x = self.s_in.recv()
        i = (self.time_step - 1) % self.buf.shape[0]
        out = self.buf[i].copy()
        self.buf[i] = x
        self.s_out.send(out)


@implements(proc=SpikeDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeDelayModelFloat(_AbstractDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buf: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=SpikeDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeDelayModelFixed(_AbstractDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)


# ---------------------------------------------------------------- fast convolution
def conv_lava_layout(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups,
                     dtype=np.float64) -> np.ndarray:
    """lava's Conv semantics on one (X, Y, C) frame, with (C_out, KX, KY, C_in/g) weights.

    lava convolves (scipy convolve2d flips the kernel), so this correlates with the
    flipped kernel: out[x, y, o] = sum in_pad[x*sx + i*dx, y*sy + j*dy, c] * w[o, -1-i, -1-j, c].
    One matmul per group over an im2col patch matrix.
    """
    c_out, kx, ky, cg = weight.shape
    px, py = padding
    sx, sy = stride
    dx, dy = dilation
    xp = np.pad(x.astype(dtype, copy=False), ((px, px), (py, py), (0, 0)))
    ox = (xp.shape[0] - dx * (kx - 1) - 1) // sx + 1
    oy = (xp.shape[1] - dy * (ky - 1) - 1) // sy + 1
    cols = np.empty((ox, oy, kx, ky, xp.shape[2]), dtype)
    for i in range(kx):
        for j in range(ky):
            cols[:, :, i, j, :] = xp[i * dx: i * dx + sx * (ox - 1) + 1: sx,
                                     j * dy: j * dy + sy * (oy - 1) + 1: sy, :]
    wf = weight[:, ::-1, ::-1, :].astype(dtype)
    og = c_out // groups
    out = np.empty((ox, oy, c_out), dtype)
    for g in range(groups):
        patch = cols[..., g * cg:(g + 1) * cg].reshape(ox * oy, kx * ky * cg)
        wg = wf[g * og:(g + 1) * og].reshape(og, kx * ky * cg)
        out[..., g * og:(g + 1) * og] = (patch @ wg.T).reshape(ox, oy, og)
    return out


class _FastConvMixin:
    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        a_out = conv_lava_layout(s_in, self.weight, self.stride, self.padding, self.dilation,
                                 int(self.groups[0]), self._dtype(s_in))
        self.a_buf = self.clamp_precision(self._cast(a_out))


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFastConvModelFixed(_FastConvMixin, PyConvModelFixed):
    """Bit-exact with PyConvModelFixed: integer products summed exactly in float32 when
    sum|w| * max|input| < 2**24 (else float64, exact below 2**53), cast to the weight
    dtype like lava's conv(), then the same 24-bit signed wrap."""

    def _dtype(self, s_in):
        # float32 sums integers exactly while every partial sum stays below 2**24
        if not hasattr(self, "_wbound"):
            self._wbound = float(np.abs(self.weight.astype(np.float64)).reshape(
                self.weight.shape[0], -1).sum(axis=1).max(initial=0))
        peak = 1.0 if s_in.dtype == bool else float(np.abs(s_in).max(initial=0))
        return np.float32 if self._wbound * peak < 2 ** 24 else np.float64

    def _cast(self, a):
        return a.astype(self.weight.dtype)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyFastConvModelFloat(_FastConvMixin, PyConvModelFloat):
    def _dtype(self, s_in):
        return np.float64

    def _cast(self, a):
        return a


__all__ = ["Population", "SpikeDelay", "PyPopulationModelFloat", "PyPopulationModelFixed",
           "PySpikeDelayModelFloat", "PySpikeDelayModelFixed", "PyFastConvModelFixed",
           "PyFastConvModelFloat", "conv_lava_layout", "conv_utils"]
