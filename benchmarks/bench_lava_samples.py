"""Lava's seconds per sample with many samples in one network, against one network per sample.

    python benchmarks/bench_lava_samples.py GRAPH.nir [--samples 64] [--alone 4] [--precision fixed] [--json]

Runs the graph's own test set (the first ``--samples`` images) as validate does: all of
them back to back in one Lava network, then the first ``--alone`` of them one network
each. Prints seconds per sample of both (start-up, stepping and read-out included; the
worker's own split for the shared network), and checks that every sample's outputs,
per-population spike counts and the counters are identical between the two.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurodeploy.backends import compile as compile_backend  # noqa: E402
from neurodeploy.ir.counters import merge_counters  # noqa: E402
from neurodeploy.ir.io import read_graph  # noqa: E402
from neurodeploy.measure.inputs import load_inputs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph", type=Path)
    ap.add_argument("--samples", type=int, default=64, help="samples in the shared network")
    ap.add_argument("--alone", type=int, default=4, help="of those, how many also run one network each")
    ap.add_argument("--precision", default="fixed", choices=("fixed", "float"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    graph = read_graph(a.graph)
    x = load_inputs(graph, None, None, a.samples, None, None).x
    prog = compile_backend("lava" if a.precision == "fixed" else "lava-float", graph, source=a.graph)
    t = time.perf_counter()
    together = prog.run(x, batch_size=len(x))
    shared_s = time.perf_counter() - t
    split = prog.last["seconds"]
    n = min(a.alone, len(x))
    t = time.perf_counter()
    alone = [prog.run(x[i:i + 1], batch_size=1) for i in range(n)]
    alone_s = time.perf_counter() - t
    same_out = np.array_equal(together.outputs[:, :n], np.concatenate([r.outputs for r in alone], axis=1))
    same_counts = all(np.array_equal(c[:n], np.concatenate([r.population_spike_counts[k] for r in alone]))
                      for k, c in together.population_spike_counts.items())
    head = prog.run(x[:n], batch_size=n)          # the counters of the same n samples in one network
    d1, d2 = head.counters.to_dict(), merge_counters([r.counters for r in alone]).to_dict()
    same_counters = all(d1[k] == d2[k] for k in ("populations", "projections", "totals_per_sample"))
    report = {"graph": str(a.graph), "precision": a.precision, "samples": len(x),
              "shared_network_s_per_sample": shared_s / len(x),
              "shared_network_split_s": {k: split[k] for k in ("setup", "run", "total")},
              "alone": n, "one_network_each_s_per_sample": alone_s / n,
              "identical": {"outputs": same_out, "population_spike_counts": same_counts,
                            "counters": same_counters},
              "load_average": os.getloadavg()}
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{a.graph.name} ({a.precision}), load average {report['load_average'][0]:.1f}")
        print(f"  {len(x)} samples in one network: {shared_s:.1f} s, {report['shared_network_s_per_sample']:.3f} "
              f"s/sample (start-up {split['setup']:.1f} s, stepping {split['run']:.1f} s, worker total "
              f"{split['total']:.1f} s)")
        print(f"  {n} samples one network each: {alone_s:.1f} s, {report['one_network_each_s_per_sample']:.3f} s/sample")
        print(f"  identical per sample: outputs {same_out}, spike counts {same_counts}, counters {same_counters}")
    return 0 if same_out and same_counts and same_counters else 1


if __name__ == "__main__":
    sys.exit(main())
