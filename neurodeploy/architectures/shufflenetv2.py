"""ShuffleNetV2 scaled for 32x32 inputs (Ma et al., ECCV 2018).

A unit splits its channels in two, sends one half through
1x1 conv -> 3x3 depthwise conv -> 1x1 conv and passes the other half through,
concatenates, and shuffles channels so the halves mix. A stride-2 unit sends
the whole input through two branches. Channel split, concatenation and shuffle
are pure wiring: the NIR export folds them into the consuming projections.

Spiking twin: every projection feeds a LIF population (there is one after the
depthwise conv too, where the original has none, because a neuromorphic core
needs neurons at the end of a projection); the CNN twin has ReLU at the same
places. CIFAR scaling: 3x3 stem at stride 1, no stem max pool, three stages.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Twin, TwinModel, channel_shuffle

STAGE_REPEATS = (2, 4, 2)          # half of the original (4, 8, 4): a shallower spiking twin
STAGE_CHANNELS = (24, 116, 232, 464)   # stem, stages (the 1.0x widths)
HEAD_CHANNELS = 1024


class ShuffleUnit(nn.Module):
    def __init__(self, twin: Twin, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                twin.conv(cin, cin, 3, stride, groups=cin), twin.act(),
                twin.conv(cin, half, 1), twin.act())
            branch_in = cin
        else:
            self.branch1 = None
            branch_in = cin // 2
        self.branch2 = nn.Sequential(
            twin.conv(branch_in, half, 1), twin.act(),
            twin.conv(half, half, 3, stride, groups=half), twin.act(),
            twin.conv(half, half, 1), twin.act())

    def forward(self, x):
        if self.branch1 is None:
            passed, x2 = x.chunk(2, dim=1)
            out = torch.cat([passed, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(TwinModel):
    def __init__(self, twin: Twin = Twin(), num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3, timesteps: int = 4, width: float = 1.0):
        super().__init__(twin, timesteps)
        self.arguments = dict(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                              width=width)
        chans = [STAGE_CHANNELS[0]] + [int(round(c * width / 2)) * 2 for c in STAGE_CHANNELS[1:]]
        layers = [twin.conv(in_channels, chans[0], 3), twin.act()]
        cin = chans[0]
        for repeats, cout in zip(STAGE_REPEATS, chans[1:]):
            layers.append(ShuffleUnit(twin, cin, cout, 2))
            layers += [ShuffleUnit(twin, cout, cout, 1) for _ in range(repeats - 1)]
            cin = cout
        layers += [twin.conv(cin, HEAD_CHANNELS, 1), twin.act(),
                   twin.conv(HEAD_CHANNELS, num_classes, 1), twin.readout(),
                   nn.AvgPool2d(input_size // 8), nn.Flatten()]
        self.features = nn.Sequential(*layers)


def shufflenetv2(twin=Twin(), **kw):
    return ShuffleNetV2(twin, **kw)
