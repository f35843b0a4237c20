"""The other tools' ways of running a trained spiking network, for the benchmarks.

Each builder takes a trained spiking twin (or its NIR graph) and returns ``run(x)``:
the output summed over the T timesteps, (batch, classes), for a static image batch x.
All use the network's deployed parameters (BatchNorm folded, weights on the Loihi
grid), the same ones the NIR exporter writes, and the same LIF as ours:

    v[t] = beta v[t-1] + I[t];  s[t] = v[t] > threshold;  v[t] = 0 where s[t]

* :func:`naive_snntorch` -- the snnTorch network a user writes from the twin: every
  LIF replaced by ``snntorch.Leaky``, the layers called once per timestep as they
  are (weights folded and snapped again in every call, the image convolution run at
  every timestep, NCHW). Kept as a reference row.
* :func:`fair_snntorch` -- the best step loop we know how to write with snnTorch:
  weights computed once (:func:`frozen`), the first projection (the image conv, the
  same at every timestep) computed once per batch, channels-last layers, Leaky
  neurons; :func:`compiled_snntorch` is the same loop under ``torch.compile``.
* :func:`spikingjelly_multistep` -- SpikingJelly's multi-step mode: the layers run on
  all T timesteps at once (time folded into the batch), LIFNode's multi-step
  recurrence on (T, B, ...). Its LIF is v - (v - v_reset)/tau + x (decay_input=False),
  a different rounding of beta v + x, so its spikes may differ in the last bit.
* :func:`nirtorch_loop` -- nirtorch's executor on our NIR graph, with LIF mapped to
  :class:`NIRLIF` (this toolkit's discretisation, :mod:`neurodeploy.ir.neurons`),
  called once per timestep with its state dictionary.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def with_leaky(model, **leaky_kwargs):
    """A copy of the network with every LIF replaced by snntorch.Leaky (reset to zero, no delay)."""
    import snntorch as snn
    from neurodeploy.architectures.layers import LIF
    net = copy.deepcopy(model)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LIF):
                setattr(parent, child_name, snn.Leaky(beta=child.beta, threshold=child.threshold,
                                                      reset_mechanism="zero", reset_delay=False, init_hidden=True,
                                                      **leaky_kwargs))
    net.timesteps = 1
    return net.to(next(model.parameters()).device)   # the new Leaky modules' state starts on the CPU


def reset_leaky(net):
    import snntorch as snn
    for m in net.modules():          # snntorch.utils.reset only sees top-level modules
        if isinstance(m, snn.Leaky):
            m.reset_mem()


def step_loop(net, timesteps):
    """snnTorch's way: call the network once per timestep, membranes held in the Leaky modules."""
    def run(x):
        reset_leaky(net)
        out = 0
        for _ in range(timesteps):   # the layers themselves: none of TwinModel.body's training paths
            out = out + net.features(x)
        return out
    return run


def naive_snntorch(model, timesteps):
    return step_loop(with_leaky(model), timesteps)


def frozen(model):
    """A copy whose ConvBN / LinearOut layers are plain nn.Conv2d / nn.Linear holding
    the deployed (folded, snapped) parameters, computed once here."""
    from neurodeploy.architectures.layers import ConvBN, LinearOut
    net = copy.deepcopy(model)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                c = child.conv
                plain = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                                  c.groups, bias=True)
            elif isinstance(child, LinearOut):
                plain = nn.Linear(child.fc.in_features, child.fc.out_features, bias=True)
            else:
                continue
            with torch.no_grad():
                w, b = child.deployed_parameters()
                plain.weight.copy_(w)
                plain.bias.copy_(b)
            setattr(parent, child_name, plain.to(w.device))
    return net.eval()


def hoisted(net):
    """(first, rest): the image projection, computed once per batch, and the layers after it."""
    first = net.features[0]
    if not isinstance(first, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"the network does not start with a projection ({type(first).__name__})")
    return first, net.features[1:]


def fair_snntorch(model, timesteps, compiled=False):
    """Weights once, the image convolution once per batch, channels-last, snntorch.Leaky;
    compiled: the T steps under torch.compile (see :func:`leaky_branch_at_trace_time`)."""
    net = with_leaky(frozen(model))
    first, rest = hoisted(net)
    # the hoisted conv keeps NCHW (computed once, its layout costs little), the kernel ours
    # runs on a non-spike input: float sums of an image are exact only in one order
    rest.to(memory_format=torch.channels_last)

    def steps(h):
        out = 0
        for _ in range(timesteps):
            out = out + rest(h)
        return out
    if compiled:
        leaky_branch_at_trace_time(net)
        # static shapes: the membranes change shape once, on the first call, and a recompile
        # for dynamic shapes would run generic (slower) code from then on
        steps = torch.compile(steps, dynamic=False)

    def run(x):
        reset_leaky(net)
        return steps(first(x).contiguous(memory_format=torch.channels_last))
    return run


def leaky_branch_at_trace_time(net):
    """snnTorch keeps a Leaky's reset mechanism in a tensor buffer and branches on it in
    every call (``if self.reset_mechanism_val == 0``): a data-dependent branch, so dynamo
    breaks the graph there (30 graphs for pruned_squeezenet's T steps) and stops
    recompiling at its limit (8), leaving the rest eager. As a Python int (the same
    branch, taken when tracing) the T steps compile to one graph."""
    import snntorch as snn
    for m in net.modules():
        if isinstance(m, snn.Leaky) and "reset_mechanism_val" in m._buffers:
            m.reset_mechanism_val = int(m._buffers.pop("reset_mechanism_val"))


def compiled_snntorch(model, timesteps):
    """fair_snntorch's T steps under torch.compile (inductor; on CPU it needs a C++ compiler)."""
    return fair_snntorch(model, timesteps, compiled=True)


class SpikingJellyLIF(nn.Module):
    """SpikingJelly's LIFNode in multi-step mode on a (T*B, ...) current: reset to 0,
    decay_input=False (v = v - v/tau + x), tau = 1/(1-beta), and the threshold one
    float32 step above ours: its spike is v - v_threshold >= 0, ours v > threshold."""

    def __init__(self, lif, timesteps):
        super().__init__()
        from spikingjelly.activation_based import neuron
        self.T = timesteps
        threshold = float(np.nextafter(np.float32(lif.threshold), np.float32(np.inf)))
        self.node = neuron.LIFNode(tau=1.0 / (1.0 - lif.beta), decay_input=False, v_reset=0.0,
                                   v_threshold=threshold, step_mode="m")

    def forward(self, x):
        return self.node(x.reshape(self.T, -1, *x.shape[1:])).reshape(x.shape)


def spikingjelly_multistep(model, timesteps):
    from spikingjelly.activation_based import functional
    from neurodeploy.architectures.layers import LIF
    net = frozen(model)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LIF):
                setattr(parent, child_name, SpikingJellyLIF(child, timesteps))
    first, rest = hoisted(net)
    rest.to(memory_format=torch.channels_last)

    def run(x):
        functional.reset_net(net)
        h = first(x).contiguous(memory_format=torch.channels_last)
        h = h.unsqueeze(0).expand(timesteps, *h.shape).reshape(-1, *h.shape[1:])   # the static input, T times
        y = rest(h)
        return y.reshape(timesteps, -1, *y.shape[1:]).sum(0)
    return run


class NIRLIF(nn.Module):
    """NIR's LIF as this toolkit discretises it (neurons.coefficients: forward Euler at
    the graph's dt), for nirtorch: forward(x, state) -> (spikes, membrane)."""

    def __init__(self, node, dt):
        super().__init__()
        from neurodeploy.ir import neurons
        c = neurons.coefficients(node, dt)

        def param(a):   # one value shared by the population becomes a scalar
            a = np.asarray(a, dtype=np.float32)
            return torch.tensor(float(a.reshape(-1)[0])) if (a == a.reshape(-1)[0]).all() else torch.from_numpy(a)
        for name in ("decay", "gain", "leak", "threshold", "v_reset"):
            self.register_buffer(name, param(getattr(c, name)))

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = self.decay * v + self.gain * x + self.leak
        s = (v > self.threshold).to(x.dtype)
        return s, torch.where(s > 0, self.v_reset, v)


def nirtorch_loop(graph, timesteps):
    import nir
    import nirtorch
    from neurodeploy.ir.conventions import conventions_of
    dt = conventions_of(graph).dt
    node_map = {nir.LIF: lambda node: NIRLIF(node, dt),
                # NIR's Flatten counts dimensions without the batch; nn.Flatten with them
                nir.Flatten: lambda node: nn.Flatten(start_dim=node.start_dim + 1,
                                                     end_dim=node.end_dim if node.end_dim < 0 else node.end_dim + 1)}
    module = nirtorch.nir_to_torch(graph, node_map)

    def run(x):
        state, out = None, 0
        for _ in range(timesteps):
            y, state = module(x, state)
            out = out + y
        return out
    return run
