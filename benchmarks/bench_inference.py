"""Inference speed: the torch reference backend vs snnTorch's step loop, same network, one invocation.

For each model (untrained weights, BatchNorm statistics set on random data so the
first layers spike; the deeper ones barely do, unlike a trained network, but neither
contender skips work for silence: dense convolutions cost the same) this builds

* ours:     the NIR graph exported from the spiking twin, run by
            ``neurodeploy.backends.torch`` (layer-serial, counters on and off);
* snnTorch: the same network with every LIF replaced by ``snntorch.Leaky``
            (reset to zero, no reset delay, init_hidden) and the body called once
            per timestep, the way snnTorch users write it;
* nirtorch: nirtorch's executor on the same NIR graph, where it can run it;

and prints samples/s and the ratio ours / snnTorch. Each contender is timed in its own
fresh process, as its users would run it (neurodeploy with its OpenMP setting, snnTorch
with the defaults; see contenders.py), alternating over ``--rounds``. Defaults:
batch 64, T=8, 3x32x32 input, no grad.

    python benchmarks/bench_inference.py [--models pruned_squeezenet,squeezenet] [--device cpu|cuda] [--json]
"""
from __future__ import annotations

from neurodeploy.kernels import process  # first: the settings the command runs with apply before torch loads

process.tune_for_cpu()   # snnTorch's processes get NEURODEPLOY_PASSIVE_OPENMP=0 (contenders.py)

import argparse
import copy
import json
import time

import torch

from contenders import omp_policy, race


def calibrated(name, in_channels=3, seed=0):
    from neurodeploy.architectures import build
    torch.manual_seed(seed)
    model = build(name, "snn", in_channels=in_channels)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, in_channels, 32, 32))
    return model.eval()


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


def step_loop(net, timesteps):
    """snnTorch's way: call the network once per timestep, membranes held in the Leaky modules."""
    import snntorch as snn

    def run(x):
        for m in net.modules():          # snntorch.utils.reset only sees top-level modules
            if isinstance(m, snn.Leaky):
                m.reset_mem()
        out = 0
        for _ in range(timesteps):   # the layers themselves: none of TwinModel.body's training paths
            out = out + net.features(x)
        return out
    return run


def snntorch_twin(model, timesteps):
    return step_loop(with_leaky(model), timesteps)


def timeit(fn, repeats):
    """Best of ``repeats`` calls of fn after one warm-up, waiting for queued GPU work."""
    def call():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    call()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def contender_run(worker, name, batch, timesteps, device):
    """The call a contender's process times: ours (with or without counters) or snnTorch's loop."""
    model = calibrated(name)
    model.timesteps = timesteps
    torch.manual_seed(1)
    x = torch.randn(batch, 3, 32, 32)
    if worker == "snntorch":
        from neurodeploy.kernels.host_memory import reuse_freed_memory
        reuse_freed_memory()     # snnTorch gets neurodeploy's malloc setting too: it speeds it up
        snn_run, xd = snntorch_twin(model.to(device), timesteps), x.to(device)
        return lambda: snn_run(xd)
    from neurodeploy.backends import torch as backend
    from neurodeploy.exporters.lowering import export
    program = backend.compile(export(model, (3, 32, 32)), device=device)
    xn = x.numpy()
    return lambda: program.run(xn, timesteps, batch_size=batch, count=worker == "ours")


WORKERS = {"ours": "ours", "ours_no_counters": "ours", "snntorch": "snntorch"}


def bench_model(name, batch, timesteps, device, repeats, rounds):
    from neurodeploy.backends import torch as backend
    from neurodeploy.exporters.lowering import export
    model = calibrated(name)
    model.timesteps = timesteps
    graph = export(model, (3, 32, 32))
    program = backend.compile(graph, device=device)
    x = torch.randn(batch, 3, 32, 32)
    row = {"model": name, "batch": batch, "timesteps": timesteps, "device": str(program.device),
           "omp_wait_policy": {c: omp_policy(c) for c in ("ours", "snntorch")}}
    with torch.no_grad():
        ours = program.run(x.numpy(), timesteps, batch_size=batch)
        ref = snntorch_twin(model.to(device), timesteps)(x.to(device)).cpu().numpy()
    row["prediction_agreement_with_snntorch"] = float((ours.outputs.sum(0).argmax(1) == ref.argmax(1)).mean())
    argv = ["--models", name, "--batch", str(batch), "--timesteps", str(timesteps), "--device", device,
            "--repeats", str(repeats)]
    best = race(__file__, WORKERS, argv, rounds)
    t_ours, t_fast, t_snn = best["ours"], best["ours_no_counters"], best["snntorch"]
    row.update({"ours_samples_per_s": batch / t_ours, "ours_no_counters_samples_per_s": batch / t_fast,
                "snntorch_samples_per_s": batch / t_snn, "ratio_vs_snntorch": t_snn / t_ours,
                "ratio_vs_snntorch_no_counters": t_snn / t_fast})
    try:   # nirtorch's executor, where it can run the graph
        import nirtorch
        mod = nirtorch.nir_to_torch(graph, {})
        row["nirtorch"] = "ran" if mod is not None else "no"
    except Exception as e:  # noqa: BLE001 - report why it cannot
        row["nirtorch"] = f"cannot run this graph: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pruned_squeezenet,squeezenet")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:     # one contender, in this fresh process (see contenders.py)
        run = contender_run(args.worker, args.models, args.batch, args.timesteps, args.device)
        with torch.no_grad():
            print(json.dumps({"seconds": timeit(run, args.repeats)}))
        return
    rows = [bench_model(m, args.batch, args.timesteps, args.device, args.repeats, args.rounds)
            for m in args.models.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['model']:>18} [{r['device']}, batch {r['batch']}, T={r['timesteps']}]: "
              f"ours {r['ours_samples_per_s']:.1f} samples/s ({r['ours_no_counters_samples_per_s']:.1f} without "
              f"counters), snnTorch step loop {r['snntorch_samples_per_s']:.1f} samples/s -> "
              f"{r['ratio_vs_snntorch']:.2f}x ({r['ratio_vs_snntorch_no_counters']:.2f}x); "
              f"predictions agree {r['prediction_agreement_with_snntorch']:.0%}; nirtorch: {r['nirtorch']}")
    policy = rows[0]["omp_wait_policy"] if rows else {}
    print(f"each contender timed in its own process, best of {args.rounds} alternating rounds x {args.repeats}; "
          f"OpenMP wait policy: ours {policy.get('ours')}, snnTorch {policy.get('snntorch')}")


if __name__ == "__main__":
    main()
