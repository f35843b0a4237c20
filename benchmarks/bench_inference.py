"""Inference speed on the zoo's trained networks: the torch backend against the other tools, same network, same images.

For each model this loads the zoo's trained spiking twin (``neurodeploy/models/<name>/snn.pt``),
exports its NIR graph and takes the first ``--batch`` images of its dataset's test split,
then times, each in its own fresh process (contenders.py), alternating over ``--rounds``:

* ``ours``: ``neurodeploy.backends.torch`` on the NIR graph, kernels="auto" (per projection
  the fastest of dense, int8 and event-driven where they give the same bits, picked on
  the first batch: the warm-up), with counters; ``ours_no_counters`` the same without;
  ``ours_dense`` kernels="dense" with counters (the dense path alone);
* snnTorch (step_loops.py): ``snntorch_naive``, the twin with snntorch.Leaky called per
  timestep as it is (weights re-folded every call, the image conv T times, NCHW);
  ``snntorch_fair``, weights once, the image conv hoisted out of the time loop,
  channels-last, in both OpenMP settings (``snntorch_fair_passive``); ``snntorch_compiled``,
  that loop under torch.compile;
* ``spikingjelly``: SpikingJelly's multi-step mode (LIFNode, torch, layers on all T at once;
  not a dependency: ``pip install --no-deps spikingjelly==2.0.0 loguru``, as its own
  requirements would pull torchvision, torchaudio and tensorboard);
* ``nirtorch``: nirtorch's executor on the NIR graph, LIF mapped to our discretisation.

Every contender's output (summed over T, per sample) is compared with ours by
``np.array_equal``, with the prediction agreement and how many output values are
non-zero (a silent network would agree trivially). The ratios are against the
fairest snnTorch loop: the fastest snnTorch variant whose outputs equal ours.
Defaults: batch 64, T=8, no grad.

    python benchmarks/bench_inference.py [--models pruned_squeezenet,squeezenet] [--device cpu|cuda]
                                         [--rounds 2] [--repeats 3] [--json]
"""
from __future__ import annotations

from neurodeploy.kernels import process  # first: the settings the command runs with apply before torch loads

process.tune_for_cpu()   # the other tools' processes get their own settings (contenders.py)

import json
import shutil
import sys
import time

import numpy as np
import torch

from contenders import omp_policy, race_arguments, race_reports, timeit

# worker -> its OpenMP setting (contenders.SETTINGS)
WORKERS = {"ours": "ours", "ours_no_counters": "ours", "ours_dense": "ours",
           "snntorch_naive": "default", "snntorch_fair": "default", "snntorch_fair_passive": "passive",
           "snntorch_compiled": "default", "spikingjelly": "default", "nirtorch": "default"}
SNNTORCH = ("snntorch_naive", "snntorch_fair", "snntorch_fair_passive", "snntorch_compiled")
LABELS = {"ours": "ours (auto kernels, counters)", "ours_no_counters": "ours (auto, no counters)",
          "ours_dense": "ours (dense kernels, counters)", "snntorch_naive": "snnTorch naive step loop",
          "snntorch_fair": "snnTorch fair step loop", "snntorch_fair_passive": "snnTorch fair, OMP PASSIVE",
          "snntorch_compiled": "snnTorch fair, torch.compile", "spikingjelly": "SpikingJelly multi-step",
          "nirtorch": "nirtorch + our LIF"}


def trained(name, timesteps, batch):
    """(model, NIR graph, images, labels) of the zoo's trained spiking twin."""
    from neurodeploy.exporters.lowering import export_checkpoint_model
    from neurodeploy.training import checkpoint, data, zoo
    path = zoo.checkpoint_path(name, "snn")
    if not path.exists():
        raise SystemExit(zoo.missing_checkpoint(name, "snn"))
    model = checkpoint.load(path, timesteps=timesteps)
    graph = export_checkpoint_model(model, path)
    card = model.card
    x, y = data.load_tensors(card.get("dataset", "mnist5k"), "test", int(card["input_shape"][-1]), limit=batch)
    return model, graph, x, y


def contender(worker, name, batch, timesteps, device):
    """(run, info): run() gives the output summed over T, (batch, classes), as a tensor or array."""
    model, graph, x, _ = trained(name, timesteps, batch)
    if worker.startswith("ours"):
        from neurodeploy.backends import torch as backend
        program = backend.compile(graph, device=device, kernels="dense" if worker == "ours_dense" else "auto")
        xn = x.numpy()
        count = worker != "ours_no_counters"
        return (lambda: program.run(xn, timesteps, batch_size=batch, count=count).outputs.sum(0)), program
    from neurodeploy.kernels.host_memory import reuse_freed_memory
    reuse_freed_memory()     # the other tools get neurodeploy's malloc setting too: it speeds them up
    import step_loops
    model, xd = model.to(device), x.to(device)
    if worker == "snntorch_naive":
        run = step_loops.naive_snntorch(model, timesteps)
    elif worker in ("snntorch_fair", "snntorch_fair_passive"):
        run = step_loops.fair_snntorch(model, timesteps)
    elif worker == "snntorch_compiled":
        if device == "cpu" and not shutil.which("g++"):
            raise RuntimeError("torch.compile's CPU backend (inductor) needs a C++ compiler; g++ is not on PATH")
        run = step_loops.compiled_snntorch(model, timesteps)
    elif worker == "spikingjelly":
        run = step_loops.spikingjelly_multistep(model, timesteps)
    else:
        run = step_loops.nirtorch_loop(graph, timesteps)
    return (lambda: run(xd)), None


def worker_report(worker, name, batch, timesteps, device, repeats) -> dict:
    """This process's contender: its first call's outputs (and seconds: a compile or the
    kernel choice happens there), then the best of ``repeats`` timed calls."""
    try:
        run, program = contender(worker, name, batch, timesteps, device)
        with torch.no_grad():
            t0 = time.perf_counter()
            out = run()
            first = time.perf_counter() - t0
            while program is not None and not program.kernels_settled:
                run()        # the next batches time whole-network kernel choices: until one is kept
            # the compiled loop compiles again on its second call (the membranes' first shape is a
            # placeholder): one more untimed call
            seconds = timeit(run, repeats, warmup=worker == "snntorch_compiled")
    except Exception as e:  # noqa: BLE001 - one line why this contender cannot run
        if worker.startswith("ours"):
            raise
        lines = str(e).strip().splitlines()
        return {"error": f"{type(e).__name__}: {lines[0][:200] if lines else ''}"}
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    report = {"seconds": seconds, "first_call_s": first, "outputs": out.astype(np.float64).tolist()}
    if program is not None:
        report["kernels"] = program.kernel_choices()
    return report


def bench_model(name, batch, timesteps, device, repeats, rounds):
    _, _, x, labels = trained(name, timesteps, batch)
    argv = ["--models", name, "--batch", str(batch), "--timesteps", str(timesteps), "--device", device,
            "--repeats", str(repeats)]
    reports = race_reports(__file__, WORKERS, argv, rounds)
    if "error" in reports["ours"]:
        raise SystemExit(reports["ours"]["error"])
    ours = np.asarray(reports["ours"]["outputs"])
    labels = labels.numpy()
    row = {"model": name, "batch": batch, "timesteps": timesteps, "device": device,
           "input_shape": list(x.shape[1:]), "output_values": int(ours.size),
           "nonzero_output_values": int(np.count_nonzero(ours)),
           "accuracy_ours": float((ours.argmax(1) == labels).mean()),
           "kernels": reports["ours"].get("kernels"), "contenders": {}}
    for worker, report in reports.items():
        entry = {"omp_wait_policy": omp_policy(WORKERS[worker])}
        if "error" in report:
            entry["error"] = report["error"]
        else:
            out = np.asarray(report["outputs"])
            entry.update({"samples_per_s": batch / report["seconds"], "seconds": report["seconds"],
                          "first_call_s": report["first_call_s"],
                          "array_equal": bool(out.shape == ours.shape and np.array_equal(out, ours)),
                          "prediction_agreement": float((out.argmax(1) == ours.argmax(1)).mean())
                          if out.shape == ours.shape else 0.0,
                          "nonzero_output_values": int(np.count_nonzero(out))})
        row["contenders"][worker] = entry
    c = row["contenders"]
    equal = [w for w in SNNTORCH if c[w].get("array_equal")]
    if equal:
        fairest = max(equal, key=lambda w: c[w]["samples_per_s"])
        row["fairest_snntorch"] = fairest
        row["ours_vs_fairest"] = c["ours"]["samples_per_s"] / c[fairest]["samples_per_s"]
        row["ours_no_counters_vs_fairest"] = c["ours_no_counters"]["samples_per_s"] / c[fairest]["samples_per_s"]
    row["ours_vs_ours_dense"] = c["ours"]["samples_per_s"] / c["ours_dense"]["samples_per_s"]
    return row


def print_row(r):
    print(f"\n{r['model']} [{r['device']}, batch {r['batch']}, T={r['timesteps']}, "
          f"{'x'.join(map(str, r['input_shape']))} test images]: ours' outputs have {r['nonzero_output_values']} "
          f"of {r['output_values']} values non-zero; accuracy on these images {r['accuracy_ours']:.3f}")
    ours = r["contenders"]["ours"]["samples_per_s"]
    print(f"  {'contender':<32} {'samples/s':>9} {'ours/it':>8} {'equal':>6} {'agree':>6} {'non-0':>6} "
          f"{'1st call':>8}  OpenMP")
    for worker, e in r["contenders"].items():
        label = LABELS.get(worker, worker)
        if "error" in e:
            print(f"  {label:<32} cannot run: {e['error']}")
            continue
        print(f"  {label:<32} {e['samples_per_s']:9.1f} {ours / e['samples_per_s']:7.2f}x "
              f"{'yes' if e['array_equal'] else 'NO':>6} {e['prediction_agreement']:6.0%} "
              f"{e['nonzero_output_values']:6d} {e['first_call_s']:7.1f}s  {e['omp_wait_policy']}")
    if "fairest_snntorch" in r:
        print(f"  ours / fairest snnTorch ({LABELS[r['fairest_snntorch']]}): {r['ours_vs_fairest']:.2f}x with "
              f"counters, {r['ours_no_counters_vs_fairest']:.2f}x without")
    else:
        print("  no snnTorch variant's outputs equal ours")
    print(f"  ours / ours_dense: {r['ours_vs_ours_dense']:.2f}x")
    if r.get("kernels"):
        print("  kernels: " + ", ".join(f"{k} {v}" for k, v in r["kernels"].items()))


def main():
    args = race_arguments(__doc__.splitlines()[0], WORKERS, "pruned_squeezenet,squeezenet", 64, 8).parse_args()
    if args.worker:     # one contender, in this fresh process (see contenders.py)
        print(json.dumps(worker_report(args.worker, args.models, args.batch, args.timesteps, args.device,
                                       args.repeats)))
        return
    rows = []
    for m in args.models.split(","):
        rows.append(bench_model(m, args.batch, args.timesteps, args.device, args.repeats, args.rounds))
        if not args.json:
            print_row(rows[-1])
            sys.stdout.flush()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\neach contender timed in its own process, best of {args.rounds} alternating rounds x {args.repeats} "
          f"calls after one untimed call (two for torch.compile); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
