"""Training-step speed: our multi-step spiking twin vs the same network in snnTorch's step loop.

Ours processes each layer for all T timesteps at once (one conv over T x B, then
the LIF recurrence, with the BatchNorm before it and a pooling after it fused into
its compiled loops: ``layers.fuse_populations``); the snnTorch version replaces every LIF with
``snntorch.Leaky`` (arctan surrogate, reset to zero, no reset delay) and calls the
network once per timestep. Both do forward + cross-entropy on the summed output
+ backward + an AdamW step on the same batch. Each contender is timed in its own fresh
process, as its users would run it (see contenders.py), alternating over ``--rounds``.

    python benchmarks/bench_training.py [--models pruned_squeezenet] [--batch 32] [--timesteps 4]
                                        [--device cpu|cuda] [--json]
"""
from __future__ import annotations

from neurodeploy.kernels import process  # first: the settings the command runs with apply before torch loads

process.tune_for_cpu()   # snnTorch's processes get NEURODEPLOY_PASSIVE_OPENMP=0 (contenders.py)

import json

import torch
import torch.nn.functional as F

from contenders import omp_policy, race, race_arguments, timeit
from step_loops import step_loop, with_leaky


def calibrated(name, in_channels=3, seed=0):
    """An untrained network, BatchNorm statistics set on random data so that the first layers spike."""
    from neurodeploy.architectures import build
    torch.manual_seed(seed)
    model = build(name, "snn", in_channels=in_channels)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, in_channels, 32, 32))
    return model.eval()


def snntorch_train_twin(model, timesteps):
    from snntorch import surrogate
    slope = model.lif_populations()[0].surrogate_slope
    net = with_leaky(model, spike_grad=surrogate.atan(alpha=slope))
    return net, step_loop(net, timesteps)


def step_time(params, forward, x, y, repeats):
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step():
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return timeit(step, repeats)


def contender_step(worker, name, batch, timesteps, device="cpu"):
    """(parameters, forward) of a contender and its batch: our multi-step twin or snnTorch's loop."""
    model = calibrated(name).to(device)
    model.timesteps = timesteps
    model.train()
    torch.manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32).to(device), torch.randint(0, 10, (batch,)).to(device)
    if worker == "snntorch":
        from neurodeploy.kernels.host_memory import reuse_freed_memory
        reuse_freed_memory()     # snnTorch gets neurodeploy's malloc setting too
        net, snn_forward = snntorch_train_twin(model, timesteps)
        net.train()
        return net.parameters(), snn_forward, x, y
    return model.parameters(), model, x, y


WORKERS = {"ours": "ours", "snntorch": "default"}   # worker -> OpenMP setting (contenders.py)


def bench_model(name, batch, timesteps, device, repeats, rounds):
    argv = ["--models", name, "--batch", str(batch), "--timesteps", str(timesteps), "--device", device,
            "--repeats", str(repeats)]
    best = race(__file__, WORKERS, argv, rounds)
    ours, theirs = best["ours"], best["snntorch"]
    return {"model": name, "batch": batch, "timesteps": timesteps, "device": device, "ours_step_s": ours,
            "snntorch_step_s": theirs, "ratio_vs_snntorch": theirs / ours,
            "omp_wait_policy": {w: omp_policy(s) for w, s in WORKERS.items()}}


def main():
    args = race_arguments(__doc__.splitlines()[0], WORKERS, "pruned_squeezenet", 32, 4).parse_args()
    if args.worker:     # one contender, in this fresh process (see contenders.py)
        print(json.dumps({"seconds": step_time(*contender_step(args.worker, args.models, args.batch,
                                                                args.timesteps, args.device), args.repeats)}))
        return
    rows = [bench_model(m, args.batch, args.timesteps, args.device, args.repeats, args.rounds)
            for m in args.models.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['model']:>18} [batch {r['batch']}, T={r['timesteps']}, {r['device']}]: "
              f"training step ours {r['ours_step_s']:.3f} s, "
              f"snnTorch step loop {r['snntorch_step_s']:.3f} s -> {r['ratio_vs_snntorch']:.2f}x")
    policy = rows[0]["omp_wait_policy"] if rows else {}
    print(f"each contender timed in its own process, best of {args.rounds} alternating rounds x {args.repeats}; "
          f"OpenMP wait policy: ours {policy.get('ours')}, snnTorch {policy.get('snntorch')}")


if __name__ == "__main__":
    main()
