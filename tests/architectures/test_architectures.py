"""The model zoo's architectures: parameter counts, pruning, the two twins, shapes, MAC counting."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from neurodeploy.architectures import ARCHITECTURES, build, count_macs, count_parameters, family_of
from neurodeploy.architectures.layers import LIF, ConvBN, LinearOut, SqueezeExcite, Twin, TwinModel
from neurodeploy.architectures.squeezenet import FIRE_WIDTHS, PAPER_KEPT_FIRES, Fire
from neurodeploy.errors import NeurodeployError

POOLING_FAMILIES = ("squeezenet", "pruned_squeezenet", "xception")   # use twin.pool


def kinds(model):
    return {type(m) for m in model.modules()}


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("twin", ["cnn", "snn"])
def test_squeezenet_parameters_10_classes(twin):
    n = count_parameters(build("squeezenet", twin, num_classes=10, in_channels=3))
    assert n == 734_986
    assert abs(n - 736_500) / 736_500 < 0.01


def test_squeezenet_parameters_100_classes():
    n = count_parameters(build("squeezenet", "cnn", num_classes=100, in_channels=3))
    assert n == 734_986 + 90 * (512 + 1)              # only the 1x1 classifier grows
    assert abs(n - 782_600) / 782_600 < 0.01


def test_squeezenet_parameters_by_hand():
    def conv_bn(cin, cout, k):
        return cout * cin * k * k + cout + 2 * cout    # weight, bias, BN affine
    n = conv_bn(3, 96, 3)
    cin = 96
    for f in range(2, 10):
        s, e = FIRE_WIDTHS[f]
        n += conv_bn(cin, s, 1) + conv_bn(s, e, 1) + conv_bn(s, e, 3)
        cin = 2 * e
    n += 10 * cin + 10                                  # classifier: conv with bias, no BN
    assert n == 734_986


# ---------------------------------------------------------------- pruning
def fires_of(model):
    return [m for m in model.modules() if isinstance(m, Fire)]


def fire_ids(model):
    """Identify each Fire module by its (squeeze, expand) widths and its input width."""
    return [(m.squeeze.conv.in_channels, m.squeeze.conv.out_channels, m.expand1x1.conv.out_channels)
            for m in fires_of(model)]


def test_pruned_squeezenet_keeps_paper_fires_by_default():
    assert PAPER_KEPT_FIRES == (4, 6, 8, 9)
    m = build("pruned_squeezenet", "cnn")
    assert m.arguments["fires"] == [4, 6, 8, 9]
    assert fire_ids(m) == [(96, 32, 128), (256, 48, 192), (384, 64, 256), (512, 64, 256)]
    assert count_parameters(m) < count_parameters(build("squeezenet", "cnn"))
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 3


@pytest.mark.parametrize("keep", [(2,), (9,), (3, 5, 7), (2, 4, 8), (2, 3, 4, 5, 6, 7, 8, 9)])
def test_any_keep_set_builds_and_runs(keep):
    m = build("pruned_squeezenet", "cnn", fires=keep, in_channels=1, input_size=16, num_classes=7)
    assert m.arguments["fires"] == sorted(keep)
    ids = fire_ids(m)
    assert [x[1:] for x in ids] == [FIRE_WIDTHS[f] for f in sorted(keep)]
    widths = [96] + [2 * FIRE_WIDTHS[f][1] for f in sorted(keep)]
    assert [x[0] for x in ids] == widths[:-1]          # each module reads what precedes it
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 3
    m.eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 1, 16, 16)).shape == (2, 7)


@pytest.mark.parametrize("keep", [(), (1,), (10,), (4, 11)])
def test_bad_keep_sets_refused(keep):
    with pytest.raises(ValueError):
        build("pruned_squeezenet", "cnn", fires=keep)


def test_full_keep_set_equals_squeezenet():
    a = build("pruned_squeezenet", "cnn", fires=tuple(range(2, 10)))
    b = build("squeezenet", "cnn")
    assert count_parameters(a) == count_parameters(b) == 734_986


# ---------------------------------------------------------------- the two twins
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_cnn_twin_composition(name):
    m = build(name, "cnn")
    k = kinds(m)
    assert nn.ReLU in k and LIF not in k
    assert m.timesteps == 1
    if name in POOLING_FAMILIES:
        assert nn.MaxPool2d in k
    if family_of(name) == "mixnet":
        assert SqueezeExcite in k
    assert all(not c.snap for c in m.modules() if isinstance(c, (ConvBN, LinearOut)))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_snn_twin_composition(name):
    m = build(name, "snn", timesteps=3)
    k = kinds(m)
    assert LIF in k and nn.AvgPool2d in k
    assert not k & {nn.ReLU, nn.MaxPool2d, SqueezeExcite, nn.Sigmoid, nn.SiLU}
    assert m.timesteps == 3
    assert all(c.snap for c in m.modules() if isinstance(c, (ConvBN, LinearOut)))
    if name in POOLING_FAMILIES:
        assert sum(isinstance(x, nn.AvgPool2d) for x in m.modules()) > 1


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_twins_share_all_weights_but_gates(name):
    cnn = {k: v.shape for k, v in build(name, "cnn").state_dict().items()}
    snn = {k: v.shape for k, v in build(name, "snn").state_dict().items()}
    assert set(snn) <= set(cnn)
    assert all(cnn[k] == v for k, v in snn.items())
    extra = set(cnn) - set(snn)
    assert all(".se." in k for k in extra), sorted(extra)[:5]


def test_build_errors():
    with pytest.raises(NeurodeployError, match="unknown model"):
        build("resnet", "snn")
    with pytest.raises(NeurodeployError, match="unknown twin"):
        build("squeezenet", "ann")
    assert build("mixnet", Twin("snn", beta=0.5)).lif_populations()[0].beta == 0.5


# ---------------------------------------------------------------- forward shapes
@pytest.mark.parametrize("size, classes", [(32, 100), (64, 200)])
def test_squeezenet_forward_shapes(size, classes):
    m = build("pruned_squeezenet", "cnn", input_size=size, num_classes=classes)
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, size, size))
    assert y.shape == (2, classes) and torch.isfinite(y).all()


def test_snn_forward_steps_and_sum():
    m = build("pruned_squeezenet", "snn", input_size=16, num_classes=5, in_channels=1, timesteps=3)
    m.eval()
    x = torch.rand(2, 1, 16, 16) * 4
    with torch.no_grad():
        steps = m.forward_steps(x)
        total = m(x)
    assert steps.shape == (3, 2, 5)
    assert torch.equal(total, steps.sum(0))
    assert set(torch.unique(steps).tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}   # spike rate over a 2x2 pool


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("twin", ["cnn", "snn"])
@pytest.mark.parametrize("size, classes", [(32, 100), (64, 200)])
def test_zoo_forward_shapes(name, twin, size, classes):
    m = build(name, twin, input_size=size, num_classes=classes, timesteps=2)
    m.eval()
    with torch.no_grad():
        y = m.forward_steps(torch.randn(1, 3, size, size))
    assert y.shape == ((2 if twin == "snn" else 1), 1, classes)


# ---------------------------------------------------------------- MAC counting
class _One(TwinModel):
    def __init__(self, layer, twin="cnn"):
        super().__init__(Twin(twin), timesteps=4)
        self.layer = layer

    def body(self, x):
        return self.layer(x)


def test_count_macs_single_conv():
    m = _One(ConvBN(3, 4, 3))                   # 8x8, padding 1: 4 x 8 x 8 outputs, 3 x 3 x 3 each
    assert count_macs(m, (3, 8, 8)) == 4 * 8 * 8 * 3 * 3 * 3 == 6912


def test_count_macs_strided_depthwise_and_linear():
    assert count_macs(_One(ConvBN(4, 4, 3, stride=2, groups=4)), (4, 8, 8)) == 4 * 4 * 4 * 9
    lin = _One(nn.Sequential(nn.Flatten(), LinearOut(12, 5)))
    assert count_macs(lin, (3, 2, 2)) == 12 * 5


def test_count_macs_restores_state():
    m = _One(nn.Sequential(ConvBN(1, 2, 3), nn.ReLU()))
    m.train()
    m.timesteps = 3
    assert count_macs(m, (1, 6, 6)) == 2 * 6 * 6 * 9
    assert m.training and m.timesteps == 3


def test_count_macs_spiking_twin_equals_cnn_twin():
    m = _One(nn.Sequential(ConvBN(1, 2, 3, snap=True), LIF()), twin="snn")
    assert count_macs(m, (1, 6, 6)) == 2 * 6 * 6 * 9


@pytest.mark.parametrize("name, populations", [("pruned_squeezenet", 10), ("xception", 24), ("mixnet", 20)])
def test_training_fuses_pooling_exactly_and_batchnorm_to_rounding(monkeypatch, name, populations):
    """Training a spiking twin on CPU runs each LIF with the BatchNorm'd ConvBN(s) before it
    and the 2x2 / 4x4 average pooling after it as one FusedPopulation (a torch.fx pass
    over ``features``). The pooling part is exact: the same loss and gradients bit for
    bit. The BatchNorm part sums its statistics in another order, so a membrane within
    a float32 rounding of the threshold can flip; each population is compared with its
    own modules on the same input (an untrained deep network's gradient can turn on a
    single flip, so the loss is not). Per population the statistics and gradients are
    tested in tests/test_dynamics.py. MixNet's MixConvs (ConvBNs on the channel groups
    of a split, concatenated) are fused too. No state_dict entries; rebuilt when a module
    is swapped."""
    import torch.nn.functional as F
    from neurodeploy.architectures import layers
    torch.manual_seed(0)
    model = build(name, "snn", in_channels=3)
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    fused = layers.fuse_populations(model.features)
    assert sum(isinstance(m, layers.FusedPopulation) for m in fused.modules()) == populations

    def run(body, inputs):
        model.zero_grad()
        model._set_time(x.shape[0])
        loss = F.cross_entropy(body(inputs).reshape(model.timesteps, x.shape[0], -1).sum(0), y)
        loss.backward()
        grads = [p.grad.flatten() for n, p in model.named_parameters() if not n.endswith("conv.bias")]
        return loss.item(), torch.cat(grads)      # (a conv bias before BatchNorm has no gradient but noise)
    keys = set(model.state_dict())
    # the layers as body feeds them in training (channels-last, so the convolutions round alike)
    loss_plain, g_plain = run(model.features, x.contiguous(memory_format=torch.channels_last))
    with monkeypatch.context() as m:              # pooling fused, BatchNorm not: exact
        m.setattr(layers, "_sources", lambda node, modules: None)
        loss_pooled, g_pooled = run(model.body, x)
    assert loss_pooled == loss_plain and torch.equal(g_pooled, g_plain)
    # BatchNorm fused too: each population against its own modules on the same input
    model.__dict__.pop("_training_features")
    flips, spikes, layouts = [], [], []

    def against_modules(population, inputs, out):
        x = inputs[0]
        if population.sources:
            parts = [s(xi) for s, xi in zip(population.sources, population.source_inputs(x))]
            x = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        ref = population.lif(x)
        ref = population.pool(ref) if population.pool is not None else ref
        flips.append(int((ref != out).sum()))
        spikes.append(out.numel())
        layouts.append(out.dim() != 4 or out.is_contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        model._set_time(x.shape[0])
        model.body(x)
        for m in model.__dict__["_training_features"][1].modules():
            if isinstance(m, layers.FusedPopulation):
                m.register_forward_hook(against_modules)
        model.body(x)
    assert len(flips) == populations and sum(flips) <= 1e-5 * sum(spikes)
    assert all(layouts)                           # training runs the layers channels-last throughout
    assert set(model.state_dict()) == keys
    first = model.__dict__["_training_features"][1]
    model.features[1] = type(model.features[1])(0.5)           # a module swapped: the fusion is rebuilt
    model._set_time(x.shape[0])
    model.body(x)
    assert model.__dict__["_training_features"][1] is not first


def test_training_runs_shufflenets_concatenate_and_shuffle_as_one_exact_copy(monkeypatch):
    """Training runs each ShuffleNetV2 unit's channel_shuffle(cat(...)) as one interleaving
    copy (layers._interleave_shuffles): the same loss and gradients bit for bit as the two
    steps, and channels-last kept."""
    import torch.nn.functional as F
    from neurodeploy.architectures import layers
    torch.manual_seed(0)
    model = build("shufflenetv2", "snn", in_channels=3)
    model.train()
    fused = layers.fuse_populations(model.features)
    calls = [n.target for n in fused.graph.nodes if n.op == "call_function"]
    assert calls.count(layers.interleave_channels) == 8 and layers.channel_shuffle not in calls
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))

    def run():
        model.__dict__.pop("_training_features", None)
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    loss, grads = run()
    with monkeypatch.context() as m:
        m.setattr(layers, "_interleave_shuffles", lambda gm: 0)
        loss_two_steps, grads_two_steps = run()
    assert loss == loss_two_steps and torch.equal(grads, grads_two_steps) and grads.abs().sum() > 0
    for shape in [(2, 6, 3, 5), (2, 6, 1, 1)]:
        parts = [torch.randn(shape), torch.randn(shape), torch.randn(shape)]
        expected = layers.channel_shuffle(torch.cat(parts, 1), 3)
        assert torch.equal(layers.interleave_channels(parts), expected)
        rows = [p.contiguous(memory_format=torch.channels_last) for p in parts]
        assert torch.equal(layers.interleave_channels(rows), expected)
    halves = list(torch.randn(2, 8, 3, 5).contiguous(memory_format=torch.channels_last).chunk(2, 1))
    out = layers.interleave_channels(halves)     # channel groups of a channels-last tensor, as a unit passes them
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, layers.channel_shuffle(torch.cat(halves, 1), 2))
    uneven = [torch.randn(2, 4, 3, 5), torch.randn(2, 2, 3, 5)]
    assert torch.equal(layers.interleave_channels(uneven), layers.channel_shuffle(torch.cat(uneven, 1), 2))


def test_channel_shuffle_keeps_a_channels_last_layout():
    """Training feeds the layers channels-last; the shuffle gives the same values and
    gradient either way, and keeps channels-last (an NCHW copy would make the next
    convolution take the slower NCHW path)."""
    from neurodeploy.architectures.layers import channel_shuffle
    torch.manual_seed(5)
    x = torch.randn(3, 12, 5, 7, requires_grad=True)
    x_rows = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    g = torch.randn(3, 12, 5, 7)
    y, y_rows = channel_shuffle(x, 3), channel_shuffle(x_rows, 3)
    assert torch.equal(y, y_rows) and not torch.equal(y, x)
    assert y.is_contiguous() and y_rows.is_contiguous(memory_format=torch.channels_last)
    y.backward(g)
    y_rows.backward(g)
    assert torch.equal(x.grad, x_rows.grad)


@pytest.mark.parametrize("twin, channels", [("snn", 3), ("cnn", 3), ("snn", 1), ("cnn", 1)])
def test_training_on_cpu_feeds_the_layers_channels_last(twin, channels):
    """Training on CPU runs the convolutions on channels-last activations (faster in
    oneDNN), also after a 1-channel input (NCHW and channels-last at once, for which
    oneDNN returns NCHW); evaluation, which the exported graph is checked against, stays
    NCHW."""
    torch.manual_seed(0)
    model = build("mixnet", twin, in_channels=channels)
    first = [m for m in model.features.modules() if isinstance(m, ConvBN)][1]    # the one after the stem
    seen = []

    def record(m, inputs):
        seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    first.conv.register_forward_pre_hook(record)    # training (a fused population calls the conv itself)
    first.register_forward_pre_hook(record)         # evaluation (the deployed, folded parameters)
    model.train()
    model(torch.randn(2, channels, 32, 32))
    seen_training = list(seen)
    seen.clear()
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, channels, 32, 32))
    assert seen_training and all(seen_training)
    assert seen and not any(seen)
