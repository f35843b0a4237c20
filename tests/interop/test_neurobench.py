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
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount  # noqa: E402
from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations  # noqa: E402
from neurobench.models import SNNTorchModel  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

T, N = 8, 16


def snntorch_net():
    torch.manual_seed(0)
    kw = dict(init_hidden=True)
    net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.9, **kw),
                        nn.Conv2d(8, 16, 5), nn.AvgPool2d(2), snn.Leaky(beta=0.9, **kw),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 10), snn.Leaky(beta=0.9, output=True, **kw))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 4
    return net


def test_neurobench_numbers_are_ours():
    net = snntorch_net()
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


def test_neurobench_static_metrics_are_ours():
    """Footprint and ConnectionSparsity of a pruned network: NeuroBench's on the module, ours
    on the exported graph (ir/static.py says which tensors count on each side)."""
    net = snntorch_net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight[torch.rand_like(m.weight) < 0.3] = 0           # 30 % of the weights pruned
        net[0].bias.zero_()                                            # as if the layer had no bias
    graph = nd.export(net, (1, 28, 28), timesteps=T)
    from neurodeploy.ir.static import neurobench_static, parameter_values
    ours = neurobench_static(graph)
    model = SNNTorchModel(net)

    # ConnectionSparsity: the same zeros over the same weights; NeuroBench rounds to 4 decimals
    zeros = sum(int((m.weight == 0).sum()) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert ours["ConnectionSparsity"] == zeros / weights
    assert ConnectionSparsity()(model) == round(zeros / weights, 4)
    assert ours["ConnectionSparsity"] == pytest.approx(ConnectionSparsity()(model), abs=5e-5)
    assert 0.25 < ours["ConnectionSparsity"] < 0.35

    # ParameterCount: every weight and bias, less the zero bias, which NIR cannot leave out
    assert ours["ParameterCount"] == ParameterCount()(model) - net[0].bias.numel()

    # Footprint: the parameters' bytes are the same float32 values on both sides (less the zero
    # bias); the neuron layers differ in which tensors count: NeuroBench takes snnTorch's buffers
    # (beta, threshold, graded_spikes_factor float32 + reset_mechanism_val int64 = 20 B per Leaky),
    # we take NIR's five LIF parameters (tau, r, v_leak, v_threshold, v_reset), one float32 each
    # (uniform over the population) = 20 B: equal totals from different tensors.
    params_b = sum(p.numel() * p.element_size() for p in net.parameters())
    buffers_b = sum(b.numel() * b.element_size() for b in net.buffers())
    assert buffers_b == 3 * 20
    assert parameter_values(graph) == {"connections": ParameterCount()(model) - 8, "neurons": 3 * 5}
    assert ours["Footprint"] == params_b - 4 * 8 + 3 * 5 * 4
    assert Footprint()(model) == params_b + buffers_b
    assert ours["Footprint"] + 4 * 8 == Footprint()(model)
