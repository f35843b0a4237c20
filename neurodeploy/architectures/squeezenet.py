"""SqueezeNet v1.0 for 32x32 inputs, and the Fire-pruned SqueezeNet of the paper.

CIFAR-style (docs/design.md): a 3x3 stem with 96 channels at stride 1, BatchNorm
after every conv but the classifier (convs keep their bias, as torchvision's), Fire modules F2..F9 with squeeze/expand widths 16/64, 16/64,
32/128, 32/128, 48/192, 48/192, 64/256, 64/256, 2x2 pooling after the stem,
after F4 and after F8, a 1x1 classifier conv and global average pooling.

A Fire module squeezes with a 1x1 conv, then expands with a 1x1 and a 3x3 conv
side by side and concatenates them (torch.cat, the lowering the NIR export
must do exactly). Pruning removes whole Fire modules (the paper keeps F4, F6,
F8, F9); the next module's input width follows whatever precedes it, and the
pools stay after the stem, F4 and F8 (or after the last kept module before
them).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Twin, TwinModel

FIRE_WIDTHS = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128),
               6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}
POOL_AFTER = (4, 8)          # and after the stem
PAPER_KEPT_FIRES = (4, 6, 8, 9)


class Fire(nn.Module):
    def __init__(self, twin: Twin, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = twin.conv(cin, squeeze, 1, bias=True)
        self.squeeze_act = twin.act()
        self.expand1x1 = twin.conv(squeeze, expand, 1, bias=True)
        self.expand3x3 = twin.conv(squeeze, expand, 3, bias=True)
        self.expand_act = twin.act()
        self.out_channels = 2 * expand

    def forward(self, x):
        s = self.squeeze_act(self.squeeze(x))
        return self.expand_act(torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1))


class SqueezeNet(TwinModel):
    def __init__(self, twin: Twin = Twin(), num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3, timesteps: int = 4, fires=tuple(FIRE_WIDTHS)):
        super().__init__(twin, timesteps)
        fires = tuple(sorted(int(f) for f in fires))
        unknown = [f for f in fires if f not in FIRE_WIDTHS]
        if unknown or not fires:
            raise ValueError(f"Fire modules must be a non-empty subset of 2..9, got {fires}")
        self.arguments = dict(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                              fires=list(fires))
        layers = [twin.conv(in_channels, 96, 3, bias=True), twin.act(), twin.pool(2)]
        cin = 96
        for f in range(2, 10):
            if f in fires:
                fire = Fire(twin, cin, *FIRE_WIDTHS[f])
                layers.append(fire)
                cin = fire.out_channels
            if f in POOL_AFTER:
                layers.append(twin.pool(2))
        final = input_size // 8
        layers += [twin.conv(cin, num_classes, 1, bn=False), twin.readout(), nn.AvgPool2d(final), nn.Flatten()]
        self.features = nn.Sequential(*layers)


def squeezenet(twin=Twin(), **kw):
    return SqueezeNet(twin, **kw)


def pruned_squeezenet(twin=Twin(), fires=PAPER_KEPT_FIRES, **kw):
    return SqueezeNet(twin, fires=fires, **kw)
