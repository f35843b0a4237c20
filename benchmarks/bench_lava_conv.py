"""Lava's stock fixed-point Conv model vs neurodeploy's im2col model, same network, same run.

    python benchmarks/bench_lava_conv.py [--samples 2] [--timesteps 8] [--json]

The network: 3x32x32 input -> conv 16 -> LIF -> conv 32 -> LIF -> conv 32 (stride 2)
-> LIF, precision 'fixed' (Loihi2SimCfg(select_tag='fixed_pt')). Prints ms per
timestep of each model (the steady state: Lava's compile and start-up are excluded),
their ratio, and whether the outputs and spike counts are identical (they must be:
the fast model is bit-exact).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nir  # noqa: E402

from neurodeploy.backends import lava  # noqa: E402
from neurodeploy.ir.io import write_graph  # noqa: E402
from neurodeploy.ir.conventions import GraphConventions, with_conventions  # noqa: E402


def network(path: Path, timesteps: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    dt = 1e-4

    def lif(shape):
        tau = dt / (1 - 0.9)
        return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape),
                       v_threshold=np.ones(shape), v_reset=np.zeros(shape))

    def conv(cout, cin, hw, stride=1):
        w = rng.normal(0, 1.5 / np.sqrt(cin * 9), (cout, cin, 3, 3))
        return nir.Conv2d(input_shape=hw, weight=w, stride=stride, padding=1, dilation=1, groups=1,
                          bias=rng.normal(0, 0.05, cout))

    nodes = {"input": nir.Input(input_type={"input": np.array([3, 32, 32])}),
             "conv1": conv(16, 3, (32, 32)), "lif1": lif((16, 32, 32)),
             "conv2": conv(32, 16, (32, 32)), "lif2": lif((32, 32, 32)),
             "conv3": conv(32, 32, (32, 32), stride=2), "lif3": lif((32, 16, 16)),
             "output": nir.Output(output_type={"output": np.array([32, 16, 16])})}
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "conv2"), ("conv2", "lif2"),
             ("lif2", "conv3"), ("conv3", "lif3"), ("lif3", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with_conventions(g, GraphConventions(timesteps=timesteps, input_shape=(3, 32, 32)))
    return write_graph(path, g)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    lava.ensure_runtime()
    x = np.random.default_rng(1).uniform(0, 1, (a.samples, 3, 32, 32)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = network(Path(tmp) / "bench.nir", a.timesteps)
        runs = {}
        for name, fast in (("stock", False), ("fast", True)):
            prog = lava.compile(path, precision="fixed", fast_conv=fast)
            res = prog.run(x, a.timesteps)
            runs[name] = (res, prog.last["seconds"])
    (rs, ss), (rf, sf) = runs["stock"], runs["fast"]
    same = bool(np.array_equal(rs.outputs, rf.outputs)) and all(
        np.array_equal(rs.population_spike_counts[k], rf.population_spike_counts[k])
        for k in rs.population_spike_counts)
    report = {"network": "3x32x32 -> conv16 -> conv32 -> conv32/2, LIF, fixed_pt",
              "samples": a.samples, "timesteps": a.timesteps, "steps_run": ss["steps_run"],
              "stock_ms_per_step": 1e3 * ss["per_timestep"], "fast_ms_per_step": 1e3 * sf["per_timestep"],
              "speedup": ss["per_timestep"] / sf["per_timestep"], "bit_exact": same,
              "spikes_per_sample": rf.counters.totals()["spikes"]}
    if a.json:
        print(json.dumps(report))
    else:
        print(f"{report['network']}, {a.samples} samples x {a.timesteps} steps ({ss['steps_run']} Lava steps)")
        print(f"stock lava Conv (scipy, fixed_pt): {report['stock_ms_per_step']:8.2f} ms/step")
        print(f"neurodeploy im2col Conv          : {report['fast_ms_per_step']:8.2f} ms/step")
        print(f"ratio stock / fast               : {report['speedup']:8.1f}x   bit-exact: {same} "
              f"({report['spikes_per_sample']:.0f} spikes per sample)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
