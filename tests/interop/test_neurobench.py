"""Our counts against the neurobench package itself, on the same snnTorch network: NeuroBench's
metrics run on the module, ours on its exported graph (torch backend)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import neurodeploy as nd

snn = pytest.importorskip("snntorch")
pytest.importorskip("neurobench")
from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations  # noqa: E402
from neurobench.models import SNNTorchModel  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

T, N = 8, 16


def test_neurobench_numbers_are_ours():
    torch.manual_seed(0)
    kw = dict(init_hidden=True)
    net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.9, **kw),
                        nn.Conv2d(8, 16, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.9, **kw),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 10), snn.Leaky(beta=0.9, output=True, **kw))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 4
    x = torch.rand(N, 1, 28, 28) * 3
    graph = nd.export(net, (1, 28, 28), timesteps=T)
    ours = nd.compile("torch", graph, device="cpu").run(x.numpy()).counters

    seq = x[:, None].expand(N, T, 1, 28, 28).contiguous()          # NeuroBench feeds (N, T, ...)
    bench = Benchmark(SNNTorchModel(net), DataLoader(TensorDataset(seq, torch.zeros(N, dtype=torch.long)),
                                                     batch_size=N), [], [],
                      [[], [SynapticOperations, ActivationSparsity, MembraneUpdates]])
    theirs = bench.run(verbose=False) if "verbose" in Benchmark.run.__code__.co_varnames else bench.run()

    nb = ours.neurobench()
    assert nb["SynapticOperations"]["Effective_ACs"] == pytest.approx(theirs["SynapticOperations"]["Effective_ACs"],
                                                                      rel=1e-12)
    assert nb["SynapticOperations"]["Effective_MACs"] == pytest.approx(
        theirs["SynapticOperations"]["Effective_MACs"], rel=1e-12)
    assert nb["SynapticOperations"]["Dense"] == pytest.approx(theirs["SynapticOperations"]["Dense"], rel=1e-12)
    assert nb["MembraneUpdates"] == pytest.approx(theirs["MembraneUpdates"], rel=1e-12)
    assert nb["ActivationSparsity"] == pytest.approx(theirs["ActivationSparsity"], rel=1e-9)
    # our totals also count the average pools' additions (MACs: they add real-valued inputs)
    pools = sum(p.effective_ops for p in ours.projections.values() if p.kind == "AvgPool2d") / N
    assert ours.totals()["effective_macs"] - nb["SynapticOperations"]["Effective_MACs"] == pytest.approx(pools)
    assert pools > 0
