"""Lava-DL netx export: a chain NIR graph -> the HDF5 network ``lava.lib.dl.netx.hdf5.Network`` loads.

``write_netx(graph, path) -> dict`` runs the exact chain passes
(:mod:`neurodeploy.passes`: merge parallel projections, fold pooling into the
next projection, remaining pools as depthwise convs), checks that the result is a
chain ``Input -> [Conv2d|Affine -> LIF]* [-> linear readout] -> Output``, quantises it
with the Lava backend's own fixed point (``compiler.Quantised``: the same integer
weights, population scales, threshold mantissas and decays as
``backends.lava.compile(graph, precision='fixed')``) and writes, atomically
(temporary file + rename), the layout of lava-dl 0.6.0's ``netx/hdf5.py``
(that of slayer's ``export_hdf5``)::

    layer/0/{type='input', shape=(C,H,W), neuron/{type='CUBA', iDecay, vDecay, vThMant, refDelay, gradedSpike}}
    layer/i/{type='conv', shape, weight (O, I/g, kh, kw) int, bias (C,) int, stride, padding, dilation,
             groups, inChannels, outChannels, kernelSize, neuron/...}
    layer/i/{type='flatten', shape}                  (before a dense layer fed by a conv/input layer)
    layer/i/{type='dense', shape=(F,), weight (F, F_in) int, bias (F,) int, inFeatures, outFeatures, neuron/...}
    neurodeploy/...                                  (ignored by netx: host-side parts, see below)

Semantics, in Loihi units (see fixed_point.py): netx builds each layer as a stock
lava ``Dense``/``Conv`` synapse (weights are the stored integers; netx's
``optimize_weight_bits`` only re-encodes them) and a lava ``LIF`` with ``vth = vThMant``,
``du = iDecay - 1 = 4095`` (no current memory: NIR's LIF), ``dv = vDecay``, and
``bias_mant = bias`` with ``bias_exp = 6``.

What stays on the host (netx has no form for it, documented in the summary):

* the input. Direct encoding presents the real-valued image at every step; netx's
  input layer is a neuron population whose only input is its bias. So the input
  layer IS the first population, and its bias (per sample, per neuron) is the first
  projection of the image, ``leak + gain * (W x + b)`` in state units -- computed on
  the host exactly as the Lava backend computes its drive (13-bit mantissa, 3-bit
  exponent). The projection is stored under ``neurodeploy/input``;
  :func:`input_bias` evaluates it; :func:`run_netx` sets it on the loaded network.
* the readout: linear ops after the last population (global AvgPool2d + Flatten in
  the zoo) are stored under ``neurodeploy/readout`` and applied in float64 to the
  recorded spikes, as the Lava backend does.

Known difference from ``backends.lava`` (fixed): netx fixes ``bias_exp = 6``, so a
hidden layer's constant bias is rounded to a multiple of 64 state units (one
weight step) instead of the backend's finer 13-bit mantissa / 3-bit exponent; the
summary reports the largest rounding relative to the threshold (``bias_rounding``). A
bias beyond netx's range (4095 << 6 state units; the backend's goes to 4095 << 7) makes
the writer divide that population's scale by a power of two and requantise its weights
and threshold (``rescaled_for_netx`` and ``warnings`` say which). A dense layer whose
quantiser picked a weight exponent other than 0 (a threshold-limited scale) cannot be
expressed either (netx reads integer weights); such layers are reported in
``warnings`` and stored rounded.

Running: netx needs ``reset_interval=T`` (each layer resets one step after the one
before it: the one-step synaptic delay per layer) and ``Loihi2SimCfg(select_tag='fixed_pt')``.
``run_netx`` does both in the Lava runtime (``python -m neurodeploy.backends.lava.netx
REQUEST.json``; imports here stay Python 3.10 / numpy-only at module level).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GROUP = "neurodeploy"
BIAS_MAX = 4095 << 6          # netx: bias_mant (13-bit signed) << bias_exp 6


def _error(msg):
    from ...errors import NeurodeployError
    return NeurodeployError(msg)


# ---------------------------------------------------------------- chain check
def chain_violation(graph):
    """(node, why) for the first node with fan-in or fan-out, or None for a chain."""
    succ, pred = {}, {}
    for s, d in graph.edges:
        succ.setdefault(s, []).append(d)
        pred.setdefault(d, []).append(s)
    for n in graph.nodes:
        if len(pred.get(n, [])) > 1:
            return n, f"fan-in (from {', '.join(sorted(pred[n]))})"
        if len(succ.get(n, [])) > 1:
            return n, f"fan-out (to {', '.join(sorted(succ[n]))})"
    return None


def _write_str(group, key, value):
    group.create_dataset(key, (1,), "S10", [value.encode("ascii")])


def _neuron(group, pop, name, vth_mant=None):
    vth = np.unique(np.asarray(pop.vth_mant if vth_mant is None else vth_mant))
    dv = np.unique(np.asarray(pop.dv))
    if vth.size != 1 or dv.size != 1:
        raise _error(f"population '{name}': netx's LIF takes one threshold and one decay per layer "
                     f"(found {vth.size} thresholds, {dv.size} decays)")
    n = group.create_group("neuron")
    _write_str(n, "type", "CUBA")
    n.create_dataset("iDecay", data=np.int64(4096))         # du = iDecay - 1 = 4095: u = a_in << 6
    n.create_dataset("vDecay", data=np.int64(dv[0]))
    n.create_dataset("vThMant", data=np.int64(vth[0]))
    n.create_dataset("refDelay", data=np.int64(1))
    n.create_dataset("gradedSpike", data=False)
    return int(vth[0]), int(dv[0])


def _bias_netx(values_state, shape):
    """State-unit constants (per neuron, CHW) -> netx bias mantissas (<< 6): per channel if uniform."""
    v = np.broadcast_to(np.asarray(values_state, np.float64), shape)
    mant = np.clip(np.round(v / 64.0), -4096, 4095)
    if len(shape) == 3 and np.all(mant == mant[:, :1, :1]):
        stored = mant[:, 0, 0]
    elif len(shape) == 3:
        stored = mant.transpose(2, 1, 0)            # netx: neuron-wise bias in (W, H, C)
    else:
        stored = mant
    return stored.astype(np.int64), mant * 64.0


def _store_op(group, op, weight=None):
    group.create_dataset("nir_type", data=op.nir_type)
    group.create_dataset("kind", data=op.kind)
    group.create_dataset("node", data=op.node)
    group.create_dataset("in_shape", data=np.asarray(op.in_shape, np.int64))
    group.create_dataset("out_shape", data=np.asarray(op.out_shape, np.int64))
    w = op.effective_weight() if weight is None else weight
    if w is not None:
        group.create_dataset("weight", data=np.asarray(w, np.float64))
    if op.bias is not None:
        group.create_dataset("bias", data=np.asarray(op.bias, np.float64))
    for k in ("stride", "padding", "dilation"):
        group.create_dataset(k, data=np.asarray(getattr(op, k), np.int64))
    group.create_dataset("groups", data=np.int64(op.groups))


def _load_op(group):
    from .plan import Op
    s = lambda k: group[k][()].decode() if isinstance(group[k][()], bytes) else str(group[k][()])
    t = lambda k: tuple(int(v) for v in group[k][()])
    return Op(s("node"), s("nir_type"), s("kind"), t("in_shape"), t("out_shape"),
              group["weight"][()] if "weight" in group else None,
              group["bias"][()] if "bias" in group else None,
              t("stride"), t("padding"), t("dilation"), int(group["groups"][()]))


# ---------------------------------------------------------------- export
def prepare(graph):
    """Chain passes + plan + fixed-point quantisation: (chain graph, plan, Quantised, populations in order)."""
    from ...ir.conventions import conventions_of
    from ...ir.topology import is_chain
    from ...passes import chain_passes
    from .compiler import Quantised
    from .plan import PlanError, build_plan

    g = chain_passes(graph)
    bad = None if is_chain(g) else chain_violation(g)
    if bad is not None:
        raise _error(f"lava-dl netx loads chains only; node '{bad[0]}' has {bad[1]} "
                     "(after merging parallel projections and folding pooling)")
    try:
        plan = build_plan(g, conventions_of(g))
        q = Quantised(plan, "fixed", route="netx")
    except PlanError as e:
        raise _error(f"netx export: {e}") from None
    order = plan.order()
    by_target = {}
    for p in plan.paths:
        by_target.setdefault(p.target, []).append(p)
    for i, name in enumerate(order):
        paths = by_target.get(name, [])
        pop = plan.pops[name]
        if pop.reset != "to_v_reset":
            raise _error(f"netx export: population '{name}' resets by {pop.reset}; netx's neurons reset to zero")
        if len(paths) != 1 or pop.depth != i or pop.cuba or pop.nir_type not in ("LIF", "IF"):
            raise _error(f"netx export: population '{name}' is not the {i}-th link of a LIF chain")
        p = paths[0]
        if (i == 0) != (p.source == "__input__") or (i > 0 and p.source != order[i - 1]):
            raise _error(f"netx export: population '{name}' is not fed by the previous population")
        proj = [op for op in p.ops if op.is_projection]
        if i > 0 and (len(proj) != 1 or not p.ops[-1].is_projection):
            raise _error(f"netx export: the path into '{name}' must be [Flatten ->] one Conv2d or Affine "
                         f"(found {[op.nir_type for op in p.ops]})")
    return g, plan, q, order


def write_netx(graph, path) -> dict:
    """Write ``graph`` (a chain after the passes) as a lava-dl netx HDF5 file; returns a summary."""
    import h5py
    from . import fixed_point as fx
    from .plan import path_constant

    path = Path(path)
    g, plan, q, order = prepare(graph)
    by_target = {p.target: p for p in plan.paths}
    warnings, layers, bias_report, rescaled = [], [], {}, {}
    from ...fsutil import memory_output
    with memory_output(path, suffix=".netx.part") as tmp:      # HDF5 in memory, then one atomic write
        with h5py.File(tmp, "w") as f:
            lay = f.create_group("layer")
            host = f.create_group(GROUP)
            idx = 0
            for i, name in enumerate(order):
                pop, p = plan.pops[name], by_target[name]
                s = q.scale[name]
                if i == 0:
                    h = lay.create_group(str(idx))
                    _write_str(h, "type", "input")
                    h.create_dataset("shape", data=np.asarray(pop.shape, np.int64))
                    vth, dv = _neuron(h, pop, name)
                    layers.append({"index": idx, "type": "input", "population": name, "shape": list(pop.shape),
                                   "vThMant": vth, "vDecay": dv})
                    idx += 1
                    inp = host.create_group("input")
                    inp.create_dataset("population", data=name)
                    inp.create_dataset("scale", data=float(s))
                    inp.create_dataset("gain", data=np.asarray(pop.gain, np.float64))
                    inp.create_dataset("leak", data=np.asarray(pop.leak, np.float64))
                    inp.create_dataset("input_shape", data=np.asarray(plan.input_shape, np.int64))
                    ops = inp.create_group("ops")
                    hw = q.host_weights[id(p)] or [None] * len(p.ops)
                    for j, (op, w) in enumerate(zip(p.ops, hw)):
                        _store_op(ops.create_group(str(j)), op, w)
                    continue
                c = next(j for j, op in enumerate(p.ops) if op.is_projection)
                op = p.ops[c]
                w = np.asarray(q.weights[id(p)][c], np.int64)
                e = int(q.exps[id(p)][c])
                if e != 0:
                    warnings.append(f"{op.node}: weight exponent {e} has no netx form; weights stored as "
                                    "rounded integers")
                    w = np.clip(np.round(w * 2.0 ** e), -256, 254).astype(np.int64)
                if op.kind == "dense" and len(plan.pops[order[i - 1]].shape) > 1:
                    h = lay.create_group(str(idx))
                    _write_str(h, "type", "flatten")
                    h.create_dataset("shape", data=np.asarray(op.in_shape, np.int64))
                    layers.append({"index": idx, "type": "flatten"})
                    idx += 1
                h = lay.create_group(str(idx))
                const = path_constant(p)                       # float current from the biases
                state = (pop.leak + pop.gain * np.broadcast_to(const, pop.shape)) * s
                peak = float(np.max(np.abs(state))) if state.size else 0.0
                vth_mant = pop.vth_mant
                if peak > BIAS_MAX:
                    # netx's bias is a 13-bit mantissa << 6: lower this population's scale by 2^k
                    # (weights and threshold requantised, coarser than the Lava backend's)
                    k = int(math.ceil(math.log2(peak / BIAS_MAX)))
                    s2 = s / 2.0 ** k
                    fold = float(pop.gain.flat[0]) * float(np.prod([o.scale for o in p.ops]))
                    w, _, rep = fx.quantise_weights(op.weight * fold * s2 / 64.0, allow_exponent=False)
                    w = w.astype(np.int64)
                    vth_mant, _ = fx.threshold_mantissa(pop.threshold, s2)
                    state = state / 2.0 ** k
                    rescaled[name] = {"scale_divided_by": 2 ** k, "weights": rep}
                    warnings.append(f"population '{name}': its bias ({peak:.0f} state units) exceeds netx's range "
                                    f"({BIAS_MAX}: 13-bit mantissa << 6); its scale was divided by {2 ** k} and its "
                                    "weights and threshold requantised (coarser than the Lava backend's)")
                stored, eff = _bias_netx(state, pop.shape)
                theta = float(vth_mant.flat[0]) * 64.0
                err = float(np.max(np.abs(eff - state))) if state.size else 0.0
                bias_report[name] = {"max_abs_error_state": err,
                                     "max_error_over_threshold": err / theta if theta else 0.0}
                if op.kind == "conv":
                    _write_str(h, "type", "conv")
                    h.create_dataset("shape", data=np.asarray(pop.shape, np.int64))
                    h.create_dataset("weight", data=w)
                    h.create_dataset("stride", data=np.asarray(op.stride, np.int64))
                    h.create_dataset("padding", data=np.asarray(op.padding, np.int64))
                    h.create_dataset("dilation", data=np.asarray(op.dilation, np.int64))
                    h.create_dataset("groups", data=np.int64(op.groups))
                    h.create_dataset("inChannels", data=np.int64(op.in_shape[0]))
                    h.create_dataset("outChannels", data=np.int64(op.out_shape[0]))
                    h.create_dataset("kernelSize", data=np.asarray(w.shape[2:], np.int64))
                else:
                    _write_str(h, "type", "dense")
                    h.create_dataset("shape", data=np.asarray(pop.shape, np.int64))
                    h.create_dataset("weight", data=w.reshape(w.shape[0], -1))
                    h.create_dataset("inFeatures", data=np.int64(int(np.prod(op.in_shape))))
                    h.create_dataset("outFeatures", data=np.int64(w.shape[0]))
                if np.any(stored != 0):
                    h.create_dataset("bias", data=stored)
                # the Lava backend's finer bias (13-bit mantissa, 3-bit exponent), for diagnosis
                if name not in rescaled:
                    exact, _ = fx.quantise_bias(state)
                    host.create_dataset(f"backend_bias/{name}", data=np.asarray(exact, np.int64))
                vth, dv = _neuron(h, pop, name, vth_mant)
                layers.append({"index": idx, "type": "conv" if op.kind == "conv" else "dense", "population": name,
                               "nir_node": op.node, "shape": list(pop.shape), "vThMant": vth, "vDecay": dv,
                               "weight_range": [int(w.min()), int(w.max())]})
                idx += 1
            ro = host.create_group("readout")
            ro.create_dataset("source", data=plan.output_source or (plan.readout[0].source if plan.readout else ""))
            ro.create_dataset("output_shape", data=np.asarray(plan.output_shape, np.int64))
            if plan.readout:
                for j, op in enumerate(plan.readout[0].ops):
                    _store_op(ro.create_group(str(j)), op)
            meta = dict(getattr(g, "metadata", None) or {})
            host.create_dataset("metadata", data=json.dumps({k: (v.decode() if isinstance(v, bytes) else str(v))
                                                             for k, v in meta.items()}))
            host.create_dataset("layers", data=json.dumps(layers))
            host.create_dataset("populations", data=json.dumps(order))
    readout = [op.nir_type for op in plan.readout[0].ops] if plan.readout else []
    return {
        "path": str(path), "netx_format": "lava-dl netx hdf5 (lava-dl 0.6.0 netx.hdf5.Network)",
        "layers": len(layers), "netx_layers": layers, "populations": order,
        "chain_nodes": len(g.nodes), "original_nodes": len(graph.nodes),
        "host_input": f"the first projection ({', '.join(op.nir_type for op in by_target[order[0]].ops) or 'identity'})"
                      f" of the real-valued input is the input layer's per-sample bias (neurodeploy/input)",
        "host_readout": (" -> ".join(readout) + " applied on the host to the last layer's spikes"
                         if readout else "none: the output is the last layer's spikes"),
        "run_with": "netx.hdf5.Network(path, reset_interval=T); Loihi2SimCfg(select_tag='fixed_pt')",
        "bias_rounding": bias_report, "rescaled_for_netx": rescaled, "quantisation": q.report,
        "warnings": warnings,
    }


# ---------------------------------------------------------------- host side of a run
def _split_bias(eff):
    """Effective ints (mant << exp, as fixed_point.quantise_bias makes them) -> (mant, exp)."""
    eff = np.asarray(eff, np.int64)
    exp = np.zeros(eff.shape, np.int64)
    for _ in range(7):
        big = (eff >> exp > 4095) | (eff >> exp < -4096)
        if not big.any():
            break
        exp = np.where(big, exp + 1, exp)
    return (eff >> exp).astype(np.int32), exp.astype(np.int32)


def input_bias(netx_path, x: np.ndarray):
    """Per-sample bias of the input layer: (mant, exp, eff), each (N, *population_shape).

    The stored first projection (with the weights the quantised integers stand for),
    then ``leak + gain * current`` in state units, quantised as a Loihi bias
    (13-bit mantissa, 3-bit exponent) -- the Lava backend's own drive arithmetic.
    """
    import h5py
    from . import fixed_point as fx
    from .plan import apply_op

    with h5py.File(netx_path, "r") as f:
        g = f[GROUP]["input"]
        s = float(g["scale"][()])
        gain, leak = g["gain"][()], g["leak"][()]
        ops = [_load_op(g["ops"][k]) for k in sorted(g["ops"], key=int)]
        shape = tuple(int(v) for v in g["input_shape"][()])
    y = np.asarray(x, np.float64).reshape((-1,) + shape)
    for op in ops:
        y = apply_op(op, y)
    y = y.reshape((y.shape[0],) + gain.shape)
    eff, _ = fx.quantise_bias((leak + gain * y) * s)
    mant, exp = _split_bias(eff)
    return mant, exp, eff


def apply_readout(netx_path, spikes: np.ndarray) -> np.ndarray:
    """Host readout on the last layer's spikes (T, N, *shape) -> outputs (T, N, *output_shape)."""
    import h5py
    from .plan import apply_op

    with h5py.File(netx_path, "r") as f:
        ro = f[GROUP]["readout"]
        ops = [_load_op(ro[k]) for k in sorted((k for k in ro if k.isdigit()), key=int)]
    T, N = spikes.shape[:2]
    y = spikes.reshape((T * N,) + spikes.shape[2:]).astype(np.float64)
    for op in ops:
        y = apply_op(op, y)
    return y.reshape((T, N) + y.shape[1:]).astype(np.float32)


def run_netx(netx_path, x: np.ndarray, timesteps: int, timeout: float = 1800.0, fast_conv: bool = True,
             backend_bias: bool = False, record_all: bool = True) -> dict:
    """Load the file with lava-dl's ``netx.hdf5.Network`` in the Lava runtime and run static inputs
    ``x`` (N, *input_shape) for ``timesteps`` each (``reset_interval=T``, fixed_pt).

    Returns {"outputs": (T, N, *out) after the host readout, "spikes": {population: (T, N, *shape)},
    "seconds": ...}. ``fast_conv`` swaps lava's Conv model for the backend's bit-exact im2col one.
    ``backend_bias`` (diagnosis only) replaces the hidden layers' netx biases (multiples of 64)
    by the Lava backend's finer ones stored under ``neurodeploy/backend_bias``.
    ``record_all=False`` records only the last layer: reading a big layer's spike buffer
    back through Lava's Var.get is slow (~110 s for the pruned SqueezeNet's layers at
    32x32, 2 samples x 4 steps, against ~7 s of simulation).
    """
    from . import _run_worker, _short_temp_root, ensure_runtime

    python = ensure_runtime()
    mant, exp, _ = input_bias(netx_path, x)
    with tempfile.TemporaryDirectory(prefix="neurodeploy-netx-", dir=_short_temp_root(),
                                     ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "bias.npz", mant=mant, exp=exp)
        extra = {}
        if backend_bias:
            import h5py
            with h5py.File(netx_path, "r") as f:
                pops = json.loads(f[GROUP]["populations"][()])
                for i, p in enumerate(pops[1:], 1):
                    if f"{GROUP}/backend_bias/{p}" in f:
                        m, e = _split_bias(f[GROUP]["backend_bias"][p][()])
                        extra[f"mant{i}"], extra[f"exp{i}"] = m, e
        np.savez(tmp / "hidden.npz", **extra)
        req = {"netx": str(Path(netx_path).resolve()), "bias": str(tmp / "bias.npz"),
               "hidden_bias": str(tmp / "hidden.npz"), "record_all": bool(record_all),
               "timesteps": int(timesteps), "out": str(tmp / "out.npz"), "fast_conv": bool(fast_conv)}
        (tmp / "request.json").write_text(json.dumps(req))
        _run_worker(python, tmp / "request.json", timeout, module="neurodeploy.backends.lava.netx",
                    what="the netx run", failed="netx run failed")
        data = np.load(tmp / "out.npz")
        result = json.loads(data["result"].item())
        import h5py
        with h5py.File(netx_path, "r") as f:
            pops = json.loads(f[GROUP]["populations"][()])
        spikes = {p: data[f"layer{i}"] for i, p in enumerate(pops) if f"layer{i}" in data}
    result["spikes"] = spikes
    result["outputs"] = apply_readout(netx_path, spikes[pops[-1]])
    return result


# ---------------------------------------------------------------- runtime side (Python 3.10, lava)
def _runtime_main(request_path: str) -> int:
    import warnings
    warnings.filterwarnings("ignore")
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer

    req = json.loads(Path(request_path).read_text())
    T = int(req["timesteps"])
    b = np.load(req["bias"])
    mant, exp = b["mant"], b["exp"]
    n = mant.shape[0]
    whc = lambda a: np.ascontiguousarray(np.transpose(a, tuple(range(a.ndim))[::-1]))
    t0 = time.perf_counter()
    net = netx.hdf5.Network(net_config=req["netx"], reset_interval=T)
    depth = len(net.layers) - 1
    total = n * T + depth
    sinks = []
    for i, layer in enumerate(net.layers):
        if not req.get("record_all", True) and i < depth:
            sinks.append(None)
            continue
        sink = RingBuffer(shape=layer.out.shape, buffer=total)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    hidden = np.load(req["hidden_bias"]) if req.get("hidden_bias") else {}
    for i, layer in enumerate(net.layers):
        if f"mant{i}" in hidden:
            layer.neuron.bias_mant.init = whc(hidden[f"mant{i}"]).astype(np.int32)
            layer.neuron.bias_exp.init = whc(hidden[f"exp{i}"]).astype(np.int32)
    neuron = net.in_layer.neuron
    neuron.bias_mant.init = whc(mant[0]).astype(np.int32)
    neuron.bias_exp.init = whc(exp[0]).astype(np.int32)
    if req.get("fast_conv", True):
        from lava.proc.conv.process import Conv
        from .processes import PyFastConvModelFixed
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv: PyFastConvModelFixed})
    else:
        cfg = Loihi2SimCfg(select_tag="fixed_pt")
    net.run(condition=RunSteps(num_steps=T), run_cfg=cfg)
    t1 = time.perf_counter()
    for s in range(1, n):
        neuron.bias_mant.set(whc(mant[s]).astype(np.int32))
        neuron.bias_exp.set(whc(exp[s]).astype(np.int32))
        net.run(condition=RunSteps(num_steps=T), run_cfg=cfg)
    if depth:
        neuron.bias_mant.set(np.zeros(neuron.bias_mant.shape, np.int32))
        net.run(condition=RunSteps(num_steps=depth), run_cfg=cfg)
    t2 = time.perf_counter()
    out = {}
    for i, sink in enumerate(sinks):
        if sink is None:
            continue
        d = np.asarray(sink.data.get())                  # (W, H, C | F, total)
        d = np.moveaxis(d, -1, 0)                        # (total, W, H, C)
        d = np.transpose(d, (0,) + tuple(range(d.ndim - 1, 0, -1)))   # (total, C, H, W)
        d = d[i:i + n * T].reshape((n, T) + d.shape[1:]).swapaxes(0, 1)   # layer i lags i steps
        out[f"layer{i}"] = (d != 0).astype(np.int8)
    t3 = time.perf_counter()
    net.stop()
    result = {"seconds": {"setup_and_first_sample": t1 - t0, "run": t2 - t1, "read": t3 - t2,
                          "stop": time.perf_counter() - t3, "total": time.perf_counter() - t0},
              "layers": len(net.layers), "steps": total, "netx_table": str(net)}
    np.savez(req["out"], result=json.dumps(result), **out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m neurodeploy.backends.lava.netx REQUEST.json", file=sys.stderr)
        sys.exit(2)
    from .worker import _die_with_parent
    _die_with_parent(Path(sys.argv[1]))
    try:
        code = _runtime_main(sys.argv[1])
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
              file=sys.stderr, flush=True)
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
