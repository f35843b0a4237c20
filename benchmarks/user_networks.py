"""Five networks written the usual snnTorch way, trained with snnTorch, exported with
``neurodeploy.export`` and run on the torch backend and in Lava: the figures of the
README's "Your own network" section.

Each network is trained with snnTorch's own step loop (BPTT over T steps, Adam, the
arctan surrogate snnTorch defaults to) on the embedded mnist5k digits, then:

* exactness: the exported graph on the torch backend against the snnTorch module, spike
  for spike (``neurodeploy.verify``), on the test images;
* Lava: prediction agreement of the Loihi fixed-point target with the torch backend, on
  the graph as exported and on it put on Loihi's grid (``export --loihi-grid``); and
  Lava's float models, which must spike as torch does.

    python benchmarks/user_networks.py [--epochs 1] [--test 200] [--lava-samples 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

import neurodeploy as nd
from neurodeploy.backends.lava.grid import on_loihi_grid
from neurodeploy.exporters.module import reset_state
from neurodeploy.training.data import load_tensors

KW = dict(init_hidden=True)
T = 8


class TutorialCSNN(nn.Module):        # snnTorch tutorial 7's network, AvgPool variant, 32x32 input
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 12, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.5, **KW),
                                 nn.Conv2d(12, 64, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.5, **KW),
                                 nn.Flatten(), nn.Linear(64 * 5 * 5, 10), snn.Leaky(beta=0.5, output=True, **KW))

    def forward(self, x):
        return self.net(x)


class ResidualSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.l1 = snn.Leaky(beta=torch.full((16, 1, 1), 0.8), learn_beta=True, reset_mechanism="zero", **KW)
        self.p1 = nn.AvgPool2d(2)
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding="same"), nn.BatchNorm2d(16)
        self.l2 = snn.Leaky(beta=0.9, threshold=1.0, learn_threshold=True, **KW)
        self.pool, self.fc, self.out = nn.AdaptiveAvgPool2d(4), nn.Linear(16 * 16, 10), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        s1 = self.p1(self.l1(self.b1(self.c1(x))))
        y = self.pool(s1 + self.l2(self.b2(self.c2(s1))))
        return self.out(self.fc(y.view(y.size(0), -1)))


class ConcatShuffleSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.l0, self.p0 = nn.Conv2d(1, 16, 3, stride=2), snn.Leaky(beta=0.9, **KW), nn.AvgPool2d(2)
        self.a, self.b = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 3, padding=1)
        self.l1 = snn.Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False, **KW)
        self.p1, self.fc, self.out = nn.AvgPool2d(7), nn.Linear(16, 10), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        s = self.p0(self.l0(self.stem(x)))
        y = torch.cat([self.a(s), self.b(s)], dim=1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.out(self.fc(torch.flatten(self.p1(self.l1(y)), 1)))


class RecurrentSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool, self.flat = nn.AvgPool2d(4), nn.Flatten()
        self.fc1 = nn.Linear(64, 64)
        self.rec = snn.RLeaky(beta=0.9, linear_features=64, reset_mechanism="zero", reset_delay=False, **KW)
        self.fc2, self.out = nn.Linear(64, 10), snn.Leaky(beta=0.9, **KW)

    def forward(self, x):
        return self.out(self.fc2(self.rec(self.fc1(self.flat(self.pool(x))))))


class SubtractSynapticSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool, self.flat = nn.AvgPool2d(4), nn.Flatten()
        self.fc1 = nn.Linear(64, 64)
        self.syn = snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="subtract", **KW)
        self.fc2 = nn.Linear(64, 10)
        self.out = snn.Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False, **KW)

    def forward(self, x):
        return self.out(self.fc2(self.syn(self.fc1(self.flat(self.pool(x))))))


NETWORKS = {"tutorial_csnn": TutorialCSNN, "residual": ResidualSNN, "concat_shuffle": ConcatShuffleSNN,
            "recurrent": RecurrentSNN, "subtract_synaptic": SubtractSynapticSNN}


def spikes_over_time(net, x):
    reset_state(net)
    total = 0
    for _ in range(T):
        y = net(x)
        total = total + (y[0] if isinstance(y, tuple) else y)
    return total


def train(net, x, y, epochs, batch=64, seed=0):
    """snnTorch's way: the step loop, BPTT, cross-entropy on the summed output spikes."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(spikes_over_time(net, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net


def accuracy(net, x, y):
    with torch.no_grad():
        return float((spikes_over_time(net, x).argmax(1) == y).float().mean())


def measure(name, epochs, n_test, n_lava):
    torch.manual_seed(0)
    x_tr, y_tr = load_tensors("mnist5k", "train", 32)
    x_te, y_te = load_tensors("mnist5k", "test", 32, limit=n_test)
    net = NETWORKS[name]()
    t0 = time.time()
    train(net, x_tr, y_tr, epochs)
    train_s = time.time() - t0
    acc = accuracy(net, x_te, y_te)
    graph = nd.export(net, (1, 32, 32), timesteps=T)
    x = x_te.numpy()
    report = nd.verify(net, graph, x)
    torch_out = nd.compile("torch", graph, device="cpu").run(x[:n_lava]).outputs
    pred = lambda o: o.sum(0).argmax(-1)
    t0 = time.time()
    lava = nd.compile("lava", graph).run(x[:n_lava]).outputs
    lava_s = (time.time() - t0) / n_lava
    lava_float = nd.compile("lava-float", graph).run(x[:n_lava]).outputs
    gridded, change = on_loihi_grid(graph)
    torch_grid = nd.compile("torch", gridded, device="cpu").run(x[:n_lava]).outputs
    lava_grid = nd.compile("lava", gridded).run(x[:n_lava]).outputs
    return {"network": name, "train_seconds": round(train_s, 1), "snntorch_accuracy": acc,
            "graph_accuracy": float(np.mean(pred(nd.compile("torch", graph, device="cpu").run(x).outputs)
                                            == y_te.numpy())),
            "exact": report["exact"],
            "populations_identical": f"{report['graph_vs_module']['identical_populations']}/"
                                     f"{len(report['graph_vs_module']['populations'])}",
            "lava_float_identical": bool(np.array_equal(lava_float, torch_out)),
            "lava_agreement": float(np.mean(pred(lava) == pred(torch_out))),
            "lava_agreement_on_grid": float(np.mean(pred(lava_grid) == pred(torch_grid))),
            "grid_vs_float_agreement": float(np.mean(pred(torch_grid) == pred(torch_out))),
            "grid_weight_change": max(change.values()), "lava_seconds_per_sample": round(lava_s, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--lava-samples", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.json:
        print("| network | snnTorch acc | graph acc | exact (populations) | Lava float identical | Lava agreement | "
              "on Loihi's grid | grid vs float | Lava s/sample | training s |", flush=True)
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for n in args.networks.split(","):          # a row as soon as it is measured
        r = measure(n, args.epochs, args.test, args.lava_samples)
        rows.append(r)
        if not args.json:
            print(f"| {r['network']} | {r['snntorch_accuracy']:.3f} | {r['graph_accuracy']:.3f} | "
                  f"{'yes' if r['exact'] else 'no'} ({r['populations_identical']}) | "
                  f"{'yes' if r['lava_float_identical'] else 'no'} | {r['lava_agreement']:.1%} | "
                  f"{r['lava_agreement_on_grid']:.1%} | {r['grid_vs_float_agreement']:.1%} | "
                  f"{r['lava_seconds_per_sample']} | {r['train_seconds']} |", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
