"""Plan -> Lava processes, run, and read back (runs inside the Lava runtime, Python 3.10).

See plan.py for the mapping (populations, paths, depths) and fixed_point.py for the
integer formats. Here:

- every population is a ``Population`` process (processes.py); every projection on a
  path is a stock ``lava.proc.dense.Dense`` or ``lava.proc.conv.Conv`` process
  (pooling = a depthwise ones-kernel Conv, a direct edge = an identity projection;
  a conv with more than 127 groups, which lava's int8 ``groups`` cannot hold, becomes
  a ``lava.proc.sparse.Sparse`` matrix),
  connected with Lava's virtual reshape/transpose ports; several paths into one
  population connect several ``a_out`` to its one ``a_in`` (summed by Lava);
- the Input's paths are evaluated on the host once per sample (or step, for a
  sequence) and become the target population's ``drive``; in fixed mode with the
  quantised weights, and the drive a 24-bit graded-spike payload (route ``loihi2``)
  or quantised like a Loihi bias, 13-bit mantissa and 3-bit exponent, which is how
  netx feeds real-valued input (route ``netx``; see ROUTES);
  (a CubaLIF's drive enters its synaptic current u instead, being filtered like any input);
- pipeline alignment: population p runs sample s, step k at global step
  s*T + k + depth(p); the run lasts N*T + max depth steps; a path shorter than the
  longest into its target gets a ``SpikeDelay`` (see plan.py);
- counting: spikes and input events are counted inside the ``Population`` models;
  projection counters follow the reference backend's definitions (``counters``);
- an Output fed by linear ops is read out on the host (plan.py), in float64;
- ``precision='fixed'`` runs ``Loihi2SimCfg(select_tag='fixed_pt')`` (never the untagged
  config, which silently picks float models), ``'float'`` runs ``'floating_pt'`` with the
  unquantised float weights.
"""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

from . import fixed_point as fx
from .plan import INPUT, Path, Plan, PlanError, apply_op, fanout_nonzero, path_constant, path_linear

COUNT_BLOCK = 16   # samples whose graded inputs counters() rebuilds at once
MSG_BITS = 24  # graded messages (a projection fed by another projection)
# How the fixed-point network takes its input and scales its state:
#   loihi2  the host's input current arrives as graded spikes (24-bit payload) and each
#           population's integer state is made as fine as its 24 bits allow
#           (fixed_point.input_shift): Loihi 2's graded spikes and weight exponents
#   netx    the input current is a bias (13-bit mantissa, 3-bit exponent) and no shift:
#           what lava-dl netx networks do (netx.py writes this form)
ROUTES = ("loihi2", "netx")


def _is_ones(op) -> bool:
    """Weights that are exact 0/1 integers (pooling, identity): no quantisation needed."""
    return op.ones or (op.weight is not None and bool(np.all((op.weight == 0) | (op.weight == 1))))


def _carrier(path: Path) -> int:
    """Index of the op that carries the path's real weights (fixed point)."""
    proj = [i for i, op in enumerate(path.ops) if op.is_projection]
    real = [i for i in proj if not _is_ones(path.ops[i])]
    if len(real) > 1:
        names = ", ".join(path.ops[i].node for i in real)
        raise PlanError(f"projections {names} follow each other with no population in between; "
                        "fixed point supports one weighted projection per path (use precision='float')")
    return real[0] if real else proj[-1]


class Quantised:
    """Per path: integer weights per op (None for reshape), exponents, float equivalents."""

    def __init__(self, plan: Plan, precision: str, route: str = "loihi2"):
        if route not in ROUTES:
            raise PlanError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
        self.precision, self.route = precision, route
        self.weights: Dict[int, List] = {}      # id(path) -> lava-side weights per op (NIR layout)
        self.exps: Dict[int, List[int]] = {}
        self.host_weights: Dict[int, List] = {}  # float weights to evaluate input paths with
        self.scale: Dict[str, float] = {}
        self.report: Dict[str, dict] = {"layers": {}, "populations": {}}
        by_target: Dict[str, List[Path]] = {}
        for p in plan.paths:
            by_target.setdefault(p.target, []).append(p)
        for name, pop in plan.pops.items():
            paths = by_target.get(name, [])
            if precision == "float":
                for p in paths:
                    ws = [op.effective_weight() for op in p.ops]
                    self.weights[id(p)] = ws
                    self.host_weights[id(p)] = ws
                    self.exps[id(p)] = [0] * len(p.ops)
                continue
            self._fixed(name, pop, paths)

    def _fixed(self, name, pop, paths):
        g = population_gain(pop)    # folded into the weights
        if not np.all(g == g.flat[0]):
            raise PlanError(f"population '{name}': fixed point needs one gain (r*dt/tau"
                            f"{' * w_in' if pop.cuba else ''}) per population")
        if np.any(pop.v_reset != 0):
            raise PlanError(f"population '{name}': Loihi resets to 0; v_reset != 0 needs precision='float'")
        g = float(g.flat[0])
        carriers = {}
        for p in paths:
            if not any(op.is_projection for op in p.ops):
                continue   # the Input straight into the population (maybe flattened)
            c = _carrier(p)
            fold = path_fold(pop, p)
            carriers[id(p)] = (c, p.ops[c].weight * fold, fold, _has_exponent(p.ops[c]))
        peaks = [float(np.max(np.abs(w))) for _, w, _, _ in carriers.values() if w.size]
        s = fx.population_scale(peaks, pop.threshold)
        s_dyadic = fx.dyadic_scale(peaks, pop.threshold)
        if s_dyadic is not None and all(fx.quantise_weights(w * s_dyadic / 64.0, e)[2]["max_abs_error"] == 0
                                        for _, w, _, e in carriers.values()):
            s = s_dyadic    # weights trained on Loihi's power-of-two grid (loihi_aware.py) keep it exactly
        # loihi2: finer integer state, the same weight mantissas (every incoming projection's
        # weight exponent raised by the population's input shift; see fixed_point.input_shift)
        shift = 0
        if self.route == "loihi2" and not pop.cuba:
            shift = fx.input_shift(int(fx.threshold_mantissa(pop.threshold, s)[0].max()))
        pop.input_shift = shift
        w_scale, s = s, s * 2.0 ** shift
        self.scale[name] = s
        vth, rth = fx.threshold_mantissa(pop.threshold, s)
        dv, rdv = fx.decay_to_dv(pop.decay)
        self.report["populations"][name] = {"scale": s, "threshold": rth, "decay": rdv, "input_shift": shift,
                                            "vth_mant_max": int(vth.max()), "dv": int(dv.flat[0])}
        pop.vth_mant, pop.dv, pop.fold_gain = vth, dv, g
        if pop.cuba:
            pop.du, rdu = fx.syn_decay_to_du(pop.syn_decay)
            self.report["populations"][name]["syn_decay"] = rdu
        for p in paths:
            if id(p) not in carriers:
                self.weights[id(p)], self.exps[id(p)], self.host_weights[id(p)] = [], [], []
                continue
            c, wf, fold, has_exp = carriers[id(p)]
            mant, exp, rep = fx.quantise_weights(wf * w_scale / 64.0, allow_exponent=has_exp)
            op = p.ops[c]
            key = op.node if p.source == INPUT else f"{op.node}->{name}"
            self.report["layers"][key] = rep
            ws, hs, es = [], [], []
            for i, o in enumerate(p.ops):
                if i == c:
                    ws.append(mant)
                    es.append(exp)
                    # the float weights that the integers stand for (for the host-side input path)
                    hs.append(mant * 2.0 ** exp * 64.0 / w_scale / fold * o.scale)
                else:
                    ws.append(None if o.weight is None else o.weight.astype(np.int32))
                    es.append(0)
                    hs.append(o.effective_weight())
            self.weights[id(p)], self.exps[id(p)], self.host_weights[id(p)] = ws, es, hs


def population_gain(pop) -> np.ndarray:
    """The factor on a population's input current (r*dt/tau, times w_in for CubaLIF)."""
    return pop.gain * pop.w_in if pop.cuba else pop.gain


def path_fold(pop, path: Path) -> float:
    """What fixed point folds into a path's carrier weights: the population's gain (one
    value, checked in ``Quantised``) times the path's pooling factors."""
    return float(population_gain(pop).flat[0]) * float(np.prod([op.scale for op in path.ops]))


def _has_exponent(op) -> bool:
    """Dense and Sparse models apply a weight exponent; lava's Conv model ignores it."""
    return op.kind == "dense" or (op.kind == "conv" and op.groups > MAX_CONV_GROUPS)


def host_drive(plan: Plan, q: Quantised, x: np.ndarray, sequence: bool) -> Dict[str, np.ndarray]:
    """Current per population from the Input's paths and all path biases: (N, T|1, *shape)."""
    flat = x.reshape((-1,) + tuple(plan.input_shape)).astype(np.float64)
    drive = {}
    for p in plan.paths:
        pop = plan.pops[p.target]
        const = path_constant(p) if p.ops else 0.0
        cur = np.broadcast_to(const, pop.shape)[None, None]
        if p.source == INPUT:
            lin = path_linear(p, flat, q.host_weights[id(p)] or None) if p.ops else flat
            if sequence:   # (T, N, ...) -> (N, T, ...)
                lin = lin.reshape((x.shape[0], x.shape[1]) + pop.shape)
                lin = lin.transpose((1, 0) + tuple(range(2, lin.ndim)))
            else:
                lin = lin.reshape((x.shape[0], 1) + pop.shape)
            cur = cur + lin
        drive[p.target] = drive.get(p.target, 0) + cur
    out = {}
    for name, pop in plan.pops.items():
        d = drive.get(name, np.zeros((1, 1) + pop.shape))
        out[name] = np.broadcast_to(d, (d.shape[0], d.shape[1]) + pop.shape).astype(np.float64)
    return out


def _conv_proc(op, weight, input_shape_nir, graded, Conv):
    c, h, w = input_shape_nir
    lw = np.ascontiguousarray(np.asarray(weight).transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])
    return Conv(weight=lw, input_shape=(w, h, c), padding=(op.padding[1], op.padding[0]),
                stride=(op.stride[1], op.stride[0]), dilation=(op.dilation[1], op.dilation[0]),
                groups=op.groups, num_message_bits=MSG_BITS if graded else 0)


MAX_CONV_GROUPS = 127   # lava's Conv models hold `groups` in an int8 Var


def conv_matrix(op, weight):
    """A convolution as a sparse (out, in) matrix over NIR-layout flattened tensors."""
    from scipy.sparse import csr_matrix

    c, h, wd = op.in_shape
    o, oh, ow = op.out_shape
    _, cg, kh, kw = weight.shape
    og = o // op.groups
    oc = np.arange(o)[:, None, None]
    oy = np.arange(oh)[None, :, None]
    ox = np.arange(ow)[None, None, :]
    rows, cols, vals = [], [], []
    for ci in range(cg):
        ic = (oc // og) * cg + ci
        for i in range(kh):
            iy = oy * op.stride[0] - op.padding[0] + i * op.dilation[0]
            for j in range(kw):
                ix = ox * op.stride[1] - op.padding[1] + j * op.dilation[1]
                val = np.broadcast_to(weight[:, ci, i, j][:, None, None], (o, oh, ow))
                ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd) & (val != 0)
                r = np.broadcast_to(oc * oh * ow + oy * ow + ox, ok.shape)
                k = np.broadcast_to((ic * h + iy) * wd + ix, ok.shape)
                rows.append(r[ok])
                cols.append(k[ok])
                vals.append(val[ok])
    return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(o * oh * ow, c * h * wd))


def build(plan: Plan, q: Quantised, drive: Dict[str, np.ndarray], samples: int, timesteps: int):
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse
    from .processes import Population, SampleGate, SpikeDelay

    fixed = q.precision == "fixed"
    procs = {}
    for name, pop in plan.pops.items():
        kw = dict(shape=pop.shape, timesteps=timesteps, samples=samples, offset=pop.depth,
                  record=pop.record, reset=pop.reset, name=name)
        if fixed and pop.cuba:   # the drive is filtered by the synapse: it enters u
            s = q.scale[name]
            eff, rep = fx.quantise_state(pop.fold_gain * drive[name] * s)
            bias, rep_b = fx.quantise_bias(pop.leak * s)
            q.report["populations"][name].update(drive=rep, leak=rep_b)
            kw.update(dv=pop.dv, vth_mant=pop.vth_mant, drive_int=eff, cuba=True, du=pop.du,
                      bias_int=bias)
        elif fixed:
            s = q.scale[name]
            const = pop.leak + pop.gain * drive[name]   # v units
            # loihi2: a graded spike's 24-bit payload; netx: a bias (13-bit mantissa, 3-bit exponent)
            eff, rep = (fx.quantise_state if q.route == "loihi2" else fx.quantise_bias)(const * s)
            q.report["populations"][name]["drive"] = rep
            kw.update(dv=pop.dv, vth_mant=pop.vth_mant, drive_int=eff, input_shift=pop.input_shift)
        else:
            kw.update(decay=pop.decay, gain=pop.gain, leak=pop.leak, threshold=pop.threshold,
                      v_reset=pop.v_reset, drive=drive[name])
            if pop.cuba:
                kw.update(cuba=True, syn_decay=pop.syn_decay, w_in=pop.w_in)
        procs[name] = Population(**kw)

    lava_procs = []
    for p in plan.paths:
        if p.source == INPUT:
            continue
        port = procs[p.source].s_out
        if p.recurrent:
            src = plan.pops[p.source]
            gate = SampleGate(shape=src.shape, timesteps=timesteps, samples=samples, offset=src.depth)
            port.connect(gate.s_in)
            port = gate.s_out
            lava_procs.append(gate)
        if p.delay:
            d = SpikeDelay(shape=plan.pops[p.source].shape, delay=p.delay)
            port.connect(d.s_in)
            port = d.s_out
            lava_procs.append(d)
        graded = False
        for op, w, e in zip(p.ops, q.weights[id(p)], q.exps[id(p)]):
            if op.kind == "reshape":
                port = port.reshape(tuple(op.out_shape))
                continue
            if op.kind == "conv" and op.groups > MAX_CONV_GROUPS:   # e.g. 256-channel pooling
                m = conv_matrix(op, np.asarray(w))
                kwargs = {"weight_exp": int(e), "num_weight_bits": 8} if fixed else {}
                proc = Sparse(weights=m.astype(np.int32) if fixed else m,
                              num_message_bits=MSG_BITS if graded else 0, **kwargs)
                port.reshape((int(np.prod(op.in_shape)),)).connect(proc.s_in)
                port = proc.a_out.reshape(tuple(op.out_shape))
            elif op.kind == "conv":
                proc = _conv_proc(op, w, op.in_shape, graded, Conv)
                port.transpose((2, 1, 0)).connect(proc.s_in)
                port = proc.a_out.transpose((2, 1, 0))
            else:
                kwargs = {"weight_exp": int(e), "num_weight_bits": 8} if fixed else {}
                proc = Dense(weights=np.asarray(w), num_message_bits=MSG_BITS if graded else 0,
                             **kwargs)
                port = port.reshape(tuple(op.in_shape)) if tuple(port.shape) != tuple(op.in_shape) else port
                port.connect(proc.s_in)
                port = proc.a_out
            lava_procs.append(proc)
            graded = True
        if tuple(port.shape) != plan.pops[p.target].shape:
            port = port.reshape(plan.pops[p.target].shape)
        port.connect(procs[p.target].a_in)
    return procs, lava_procs


def run_config(precision: str, fast_conv: bool = True):
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from . import processes as pr

    fixed = precision == "fixed"
    exc = {pr.Population: pr.PyPopulationModelFixed if fixed else pr.PyPopulationModelFloat,
           pr.SpikeDelay: pr.PySpikeDelayModelFixed if fixed else pr.PySpikeDelayModelFloat,
           pr.SampleGate: pr.PySampleGateModelFixed if fixed else pr.PySampleGateModelFloat}
    if fast_conv:
        exc[Conv] = pr.PyFastConvModelFixed if fixed else pr.PyFastConvModelFloat
    return Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt",
                        exception_proc_model_map=exc)


def _model_errors(head) -> str:
    """Lava only logs (at INFO) the tracebacks of failed process models: fetch them."""
    import sys
    lines = []
    try:
        for actor in head.runtime._messaging_infrastructure.actors:
            if actor.exception:
                tb = str(actor.exception[1])
                print(tb, file=sys.stderr)
                lines.append(tb.strip().splitlines()[-1])
    except Exception:   # private API: best effort
        return ""
    return f"a Lava process model failed: {lines[0]}" if lines else ""


class _Trace:
    """Drains one population's ``trace`` pipe in a thread, frame by frame, into a
    (frames, *shape) int8 array (the population sends exactly one frame per step it runs
    a sample); ``progress(samples done)`` is called after every sample's last frame."""

    def __init__(self, port, frames: int, shape, progress=None, timesteps: int = 1):
        import threading
        self.frames = np.zeros((frames,) + tuple(shape), np.int8)
        self._port, self._progress, self._t = port.external_pipe_csp_recv_port, progress, timesteps
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        try:
            for i in range(len(self.frames)):
                self.frames[i] = self._port.recv()
                if self._progress is not None and (i + 1) % self._t == 0:
                    self._progress((i + 1) // self._t)
        except BaseException as e:   # the network would block on the full pipe forever: end the worker
            import os
            import signal
            import sys
            print(f"error: reading a population's spike train failed: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os._exit(2)

    def result(self) -> np.ndarray:
        self._thread.join()
        return self.frames


def _deepest(plan: Plan) -> str:
    """The recorded population that finishes a sample last (progress is counted there)."""
    return max((n for n, p in plan.pops.items() if p.record), key=lambda n: plan.pops[n].depth, default=None)


def run_plan(plan: Plan, x: np.ndarray, timesteps: int, precision: str = "fixed",
             fast_conv: bool = True, route: str = "loihi2", before_stop=None, progress=None) -> dict:
    """Run N samples; returns outputs (T, N, *out), counts and timings. ``before_stop`` is
    called when the network has run, before Lava stops its processes (the worker's
    watchdog stops watching them there); ``progress(samples done)`` as samples finish."""
    from lava.magma.core.run_conditions import RunSteps

    sequence = x.ndim == len(plan.input_shape) + 2
    if sequence and x.shape[0] != timesteps:
        raise PlanError(f"a sequence input has {x.shape[0]} steps but {timesteps} timesteps were asked")
    if tuple(x.shape[2 if sequence else 1:]) != tuple(plan.input_shape):
        raise PlanError(f"inputs of shape {x.shape} do not match the graph's input {plan.input_shape}")
    samples = x.shape[1] if sequence else x.shape[0]
    for name in plan.train_sources():   # graded / fan-in inputs are rebuilt from spike trains
        plan.pops[name].record = True
    t0 = time.perf_counter()
    q = Quantised(plan, precision, route)
    drive = host_drive(plan, q, x, sequence)
    procs, others = build(plan, q, drive, samples, timesteps)
    total = samples * timesteps + plan.max_depth
    head = procs[plan.output_source or next(iter(procs))]
    cfg = run_config(precision, fast_conv)
    # no try/finally stop(): after a failure Lava's stop() can hang; the worker exits and
    # the caller kills its process group instead
    try:
        head.run(condition=RunSteps(num_steps=1), run_cfg=cfg)   # compiles and starts
        t1 = time.perf_counter()
        # the recorded populations' spike trains stream out while the network runs
        last = _deepest(plan)
        readers = {n: _Trace(p.trace, samples * timesteps, plan.pops[n].shape,
                             progress if n == last else None, timesteps)
                   for n, p in procs.items() if plan.pops[n].record}
        if total > 1:
            head.run(condition=RunSteps(num_steps=total - 1), run_cfg=cfg)
        t2 = time.perf_counter()
    except RuntimeError as e:
        raise RuntimeError(_model_errors(head) or str(e)) from e
    trains = {n: r.result().reshape((samples, timesteps) + plan.pops[n].shape) for n, r in readers.items()}
    counts = {n: p.tally.external_pipe_csp_recv_port.recv() for n, p in procs.items()}
    per_sample = {n: np.asarray(p.sample_counts.get()) for n, p in procs.items()}
    events = {n: float(np.asarray(p.input_events.get()).sum()) for n, p in procs.items()}
    overflows = {n: int(np.asarray(p.overflows.get()).sum()) for n, p in procs.items()}
    if before_stop is not None:
        before_stop()
    head.stop()
    if plan.output_source:
        out = trains[plan.output_source]
    else:   # host readout: the linear paths into the Output, with their biases
        out = 0
        for p in plan.readout:
            y = trains[p.source].reshape((-1,) + plan.pops[p.source].shape).astype(np.float64)
            for op in p.ops:
                y = apply_op(op, y)
            out = out + y.reshape((samples, timesteps) + tuple(plan.output_shape))
    out = out.transpose((1, 0) + tuple(range(2, 2 + len(plan.output_shape))))
    step_s = (t2 - t1) / max(total - 1, 1)
    return {
        "outputs": out.astype(np.float32), "counts": counts, "per_sample": per_sample,
        "input_events": events, "overflows": {n: c for n, c in overflows.items() if c},
        "trains": trains, "x": x, "sequence": sequence, "samples": samples,
        "timesteps": timesteps, "seconds": {"setup": t1 - t0, "run": t2 - t1,
                                            "per_timestep": step_s,
                                            "per_sample": step_s * timesteps,
                                            "steps_run": total},
        "quantisation": q.report, "host_weights": q.host_weights,
        "processes": len(procs) + len(others),
    }


class _BlockValues:
    """The value at each node for a block of samples, as (samples, T or 1, *shape) float64,
    rebuilt from the input and the recorded spike trains as the reference backend computes
    it (memoised per node)."""

    def __init__(self, plan: Plan, ops: dict, x: np.ndarray, trains: dict, block: slice):
        self.plan, self.ops, self.x, self.trains, self.block = plan, ops, x, trains, block
        self.memo = {}

    def at(self, node: str) -> np.ndarray:
        if node not in self.memo:
            if self.plan.types.get(node) == "Input":
                v = self.x[self.block].astype(np.float64)
            elif node in self.plan.pops:
                v = self.trains[node][self.block].astype(np.float64)
            else:
                v = self.input_of(node)
                op = self.ops.get(node)
                if op is None:   # a Flatten not on any path (cannot happen in a valid plan)
                    raise PlanError(f"cannot evaluate node '{node}' for counting")
                frames = v.reshape((-1,) + tuple(op.in_shape))
                v = apply_op(op, frames).reshape(v.shape[:2] + tuple(op.out_shape))
            self.memo[node] = v
        return self.memo[node]

    def input_of(self, node: str) -> np.ndarray:
        """The sum of everything feeding ``node``; a static (T = 1) part broadcasts over time."""
        vals = [self.at(p) for p in self.plan.preds[node]]
        steps = max(v.shape[1] for v in vals)
        total = 0
        for v in vals:
            total = total + v
        return np.broadcast_to(total, (self.block.stop - self.block.start, steps) + total.shape[2:])


def counters(plan: Plan, r: dict) -> dict:
    """RunCounters.to_dict()-shaped counters, with the reference backend's definitions.

    Populations: spikes and input events were counted inside the simulation. A
    projection node is counted once (even where the Lava mapping duplicates it per
    path): effective ops = nonzero input x nonzero-weight fan-out, where its input is
    the sum of everything feeding it. For a node fed by one population's spikes that
    is linear in the per-neuron spike counts; otherwise (the input image, a pooled
    value, fan-in at a projection) the input is rebuilt on the host from the recorded
    spike trains and the input, with biases, as the reference computes it.
    """
    from neurodeploy.ir.counters import PopulationCounts, ProjectionCounts, RunCounters

    n, t = r["samples"], r["timesteps"]
    rc = RunCounters(samples=n, timesteps=t, backend=f"lava-{r.get('precision', '?')}")
    for name, pop in plan.pops.items():
        size = int(np.prod(pop.shape))
        rc.populations[name] = PopulationCounts(kind=pop.nir_type, neurons=size,
                                                spikes=int(r["counts"][name].sum()),
                                                neuron_updates=int(size * n * t),
                                                input_events=int(r["input_events"][name]))
    x = r["x"]
    # values as (N, T or 1, *shape): a static input stays one frame per sample
    x = x.transpose((1, 0) + tuple(range(2, x.ndim))) if r["sequence"] else x[:, None]
    ops = plan.projection_ops()
    counted = {k: op for k, op in ops.items() if op.kind != "reshape" and op.nir_type != "Identity"}
    graded = [k for k in counted if plan.spike_source(k) is None]
    fans = {k: fanout_nonzero(op) for k, op in counted.items()}
    # graded inputs, rebuilt in float64 from the trains: COUNT_BLOCK samples at a time, so
    # the memory does not grow with the samples of a run (the sums are exact integers)
    graded_ops = {k: 0 for k in graded}
    graded_binary = {k: True for k in graded}
    for a in range(0, n, COUNT_BLOCK):
        values = _BlockValues(plan, ops, x, r["trains"], slice(a, min(a + COUNT_BLOCK, n)))
        for name in graded:
            v, fan = values.input_of(name), fans[name]
            nz = (v != 0).reshape(v.shape[:2] + fan.shape)
            graded_ops[name] += int(round(float((nz * fan).sum()))) * (t if v.shape[1] == 1 else 1)
            graded_binary[name] &= bool(np.all((v == 0) | (v == 1)))

    for name, op in counted.items():
        fan = fans[name]
        src = plan.spike_source(name)
        if src is not None:          # spikes only: linear in the per-neuron counts
            eff = int(round(float((r["counts"][src].astype(np.float64).reshape(fan.shape) * fan).sum())))
            binary = True
        else:
            eff, binary = graded_ops[name], graded_binary[name]
        params = 0 if op.ones else int(np.count_nonzero(op.weight) + (
            0 if op.bias is None else np.count_nonzero(op.bias)))
        rc.projections[name] = ProjectionCounts(kind=op.nir_type, binary_input=binary,
                                                effective_ops=eff,
                                                dense_ops=int(round(float(fan.sum()))) * n * t,
                                                parameters=params)
    return rc.to_dict()


__all__ = ["run_plan", "counters", "build", "run_config", "Quantised", "host_drive"]
