"""Xception scaled for 32x32 inputs (Chollet, CVPR 2017).

Depthwise-separable convolutions (3x3 depthwise, then 1x1 pointwise) in an
entry flow of strided blocks with 1x1 projection shortcuts, a middle flow of
identity-residual blocks, and an exit flow.

Both twins use the post-activation form: a block's main path and its shortcut
are summed into one population (ReLU / LIF), so every residual add is a
fan-in of projections (and, for identity shortcuts, of the previous
population's spikes) into neurons. The depthwise conv of each separable conv
is activated too, as neuromorphic cores need. Down-sampling pools are 2x2
(max in the CNN, average in the spiking twin). The stem convolves at stride 2
as the original does, so the flows run at 16x16, 8x8 and 4x4.
"""
from __future__ import annotations

from torch import nn

from .layers import Twin, TwinModel

ENTRY = (64, 128, 256)       # stem width, then entry-flow block outputs
MIDDLE_BLOCKS = 2              # the original has 8: a shallower spiking twin
EXIT = (320, 512)


class SeparableConv(nn.Sequential):
    def __init__(self, twin: Twin, cin, cout):
        super().__init__(twin.conv(cin, cin, 3, groups=cin), twin.act(), twin.conv(cin, cout, 1))


class EntryBlock(nn.Module):
    """sep -> act -> sep -> pool, plus a strided 1x1 shortcut; summed into one population."""

    def __init__(self, twin: Twin, cin, cout):
        super().__init__()
        self.main = nn.Sequential(SeparableConv(twin, cin, cout), twin.act(),
                                  SeparableConv(twin, cout, cout), twin.pool(2))
        self.shortcut = twin.conv(cin, cout, 1, stride=2)
        self.out_act = twin.act()

    def forward(self, x):
        return self.out_act(self.main(x) + self.shortcut(x))


class MiddleBlock(nn.Module):
    """Three separable convs with an identity shortcut."""

    def __init__(self, twin: Twin, channels):
        super().__init__()
        self.main = nn.Sequential(SeparableConv(twin, channels, channels), twin.act(),
                                  SeparableConv(twin, channels, channels), twin.act(),
                                  SeparableConv(twin, channels, channels))
        self.out_act = twin.act()

    def forward(self, x):
        return self.out_act(self.main(x) + x)


class Xception(TwinModel):
    def __init__(self, twin: Twin = Twin(), num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3, timesteps: int = 4, middle_blocks: int = MIDDLE_BLOCKS):
        super().__init__(twin, timesteps)
        self.arguments = dict(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                              middle_blocks=middle_blocks)
        stem, c1, c2 = ENTRY
        layers = [twin.conv(in_channels, 32, 3, stride=2), twin.act(), twin.conv(32, stem, 3), twin.act(),
                  EntryBlock(twin, stem, c1), EntryBlock(twin, c1, c2)]
        layers += [MiddleBlock(twin, c2) for _ in range(middle_blocks)]
        e1, e2 = EXIT
        layers += [EntryBlock(twin, c2, e1), SeparableConv(twin, e1, e2), twin.act(),
                   twin.conv(e2, num_classes, 1), twin.readout(),
                   nn.AvgPool2d(input_size // 16), nn.Flatten()]
        self.features = nn.Sequential(*layers)


def xception(twin=Twin(), **kw):
    return Xception(twin, **kw)
