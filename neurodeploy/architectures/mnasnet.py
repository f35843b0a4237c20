"""MnasNet-B1 scaled for 32x32 inputs (Tan et al., CVPR 2019).

Inverted residual blocks (MBConv): 1x1 expansion -> kxk depthwise conv ->
1x1 projection, with a residual add when stride is 1 and widths match.
MnasNet-B1 has no squeeze-excitation.

Both twins activate every projection, the block output included (the
original's linear bottleneck has no spiking form: a neuromorphic core needs a
neuron at the end of a projection). The residual add comes after that neuron,
as in SEW ResNet (Fang et al., NeurIPS 2021): out = LIF(project(...)) + x, so
the next block reads the sum of the two spike trains (its projections take one
edge from each population, NIR fan-in). With the add before the neuron
(LIF(y + x)) the ~30-layer spiking twin did not learn on mnist5k (0.26 after
fine-tuning; validation 0.13-0.21 after one epoch against 0.50 with SEW).
CIFAR scaling: stem at stride 1, the first MBConv stage at stride 1, a width
multiplier and a slim head.
"""
from __future__ import annotations

from torch import nn

from .layers import Twin, TwinModel

# expansion t, output channels c, repeats n, stride s, kernel k: MnasNet-B1's stages with
# repeats (3,3,3,2,4,1) cut to (1,2,2,1,2,1): 9 blocks instead of 16, so the spiking twin
# is ~30 neuron layers deep rather than ~50 (deep plain SNNs train poorly in a few epochs)
STAGES = ((3, 24, 1, 1, 3), (3, 40, 2, 2, 5), (6, 80, 2, 2, 5), (6, 96, 1, 1, 3),
          (6, 192, 2, 2, 5), (6, 320, 1, 1, 3))


def scaled(c: float, width: float) -> int:
    return max(16, int(c * width + 4) // 8 * 8)   # >= 16: binary spikes need width


class MBConv(nn.Module):
    def __init__(self, twin: Twin, cin, cout, expansion, kernel, stride):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(twin.conv(cin, hidden, 1), twin.act())
        self.depthwise = nn.Sequential(twin.conv(hidden, hidden, kernel, stride, groups=hidden), twin.act())
        self.project = twin.conv(hidden, cout, 1)
        self.out_act = twin.act()

    def forward(self, x):
        y = self.out_act(self.project(self.depthwise(self.expand(x))))
        return y + x if self.residual else y       # SEW: the identity path carries spikes


class MnasNet(TwinModel):
    def __init__(self, twin: Twin = Twin(), num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3, timesteps: int = 4, width: float = 0.25, head: int = 128):
        super().__init__(twin, timesteps)
        self.arguments = dict(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                              width=width, head=head)
        c0, c1 = scaled(32, width), scaled(16, width)
        layers = [twin.conv(in_channels, c0, 3), twin.act(),
                  twin.conv(c0, c0, 3, groups=c0), twin.act(),     # SepConv: depthwise ...
                  twin.conv(c0, c1, 1), twin.act()]                # ... then pointwise
        cin = c1
        for t, c, n, s, k in STAGES:
            cout = scaled(c, width)
            for i in range(n):
                layers.append(MBConv(twin, cin, cout, t, k, s if i == 0 else 1))
                cin = cout
        layers += [twin.conv(cin, head, 1), twin.act(), twin.conv(head, num_classes, 1), twin.readout(),
                   nn.AvgPool2d(input_size // 8), nn.Flatten()]
        self.features = nn.Sequential(*layers)


def mnasnet(twin=Twin(), **kw):
    return MnasNet(twin, **kw)
