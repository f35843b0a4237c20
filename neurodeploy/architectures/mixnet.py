"""MixNet-S scaled for 32x32 inputs (Tan & Le, BMVC 2019).

The characteristic piece is MixConv: a depthwise convolution whose channels are
split into groups, each with its own kernel size (3x3, 5x5, 7x7, ...), the
results concatenated. The NIR export merges it into one depthwise conv with
the largest kernel (smaller kernels zero-padded around their centre).

The CNN twin keeps squeeze-excitation (swish becomes ReLU in both twins); the
spiking twin drops it (no exact spiking form) and, like every twin here,
activates each projection and each block output.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Twin, TwinModel
from .mnasnet import scaled

# expansion, output channels, depthwise kernels, stride, squeeze-excitation ratio (MixNet-S's
# stages with one block per repeat group, 7 blocks instead of 15;
# the 9x9 and 11x11 kernel groups of the last blocks are capped at 7x7: at 4x4 and 8x8
# feature maps they see the same window, and large depthwise kernels are slow on CPUs)
BLOCKS = ((1, 16, (3,), 1, 0), (6, 24, (3,), 1, 0),
          (6, 40, (3, 5, 7), 2, 0.5), (6, 40, (3, 5), 1, 0.5),
          (6, 80, (3, 5, 7), 2, 0.25),
          (6, 120, (3, 5, 7), 1, 0.5),
          (6, 200, (3, 5, 7), 2, 0.5))


def split_channels(channels: int, groups: int) -> list:
    sizes = [channels // groups] * groups
    sizes[0] += channels - sum(sizes)
    return sizes


class MixConv(nn.Module):
    """Depthwise conv with one kernel size per channel group, concatenated."""

    def __init__(self, twin: Twin, channels, kernels, stride):
        super().__init__()
        self.splits = split_channels(channels, len(kernels))
        self.convs = nn.ModuleList(twin.conv(c, c, k, stride, groups=c) for c, k in zip(self.splits, kernels))

    def forward(self, x):
        parts = torch.split(x, self.splits, dim=1)   # indexed, not iterated, so torch.fx can trace it
        return torch.cat([self.convs[i](parts[i]) for i in range(len(self.splits))], dim=1)


class MixBlock(nn.Module):
    def __init__(self, twin: Twin, cin, cout, expansion, kernels, stride, se_ratio):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(twin.conv(cin, hidden, 1), twin.act()) if expansion != 1 else nn.Identity()
        self.mix = MixConv(twin, hidden, kernels, stride)
        self.mix_act = twin.act()
        self.se = twin.se(hidden, int(cin * se_ratio)) if se_ratio else nn.Identity()
        self.project = twin.conv(hidden, cout, 1)
        self.out_act = twin.act()

    def forward(self, x):
        y = self.project(self.se(self.mix_act(self.mix(self.expand(x)))))
        return self.out_act(y + x if self.residual else y)


class MixNet(TwinModel):
    def __init__(self, twin: Twin = Twin(), num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3, timesteps: int = 4, width: float = 0.3, head: int = 64):
        super().__init__(twin, timesteps)
        self.arguments = dict(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                              width=width, head=head)
        c0 = scaled(16, width)
        layers = [twin.conv(in_channels, c0, 3), twin.act()]
        cin = c0
        for t, c, kernels, s, se in BLOCKS:
            cout = scaled(c, width)
            layers.append(MixBlock(twin, cin, cout, t, kernels, s, se))
            cin = cout
        layers += [twin.conv(cin, head, 1), twin.act(), twin.conv(head, num_classes, 1), twin.readout(),
                   nn.AvgPool2d(input_size // 8), nn.Flatten()]
        self.features = nn.Sequential(*layers)


def mixnet(twin=Twin(), **kw):
    return MixNet(twin, **kw)
