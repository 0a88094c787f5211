"""PyTorch references with torchvision's module structure and names (torchvision is not
installed) for MnasNet and EfficientNetV2, to check ``load_torchvision_state_dict`` and the
outputs and gradients of the lamina models."""

from __future__ import annotations

import torch
import torch_zoo_modern as tz
from torch import nn


# -- MnasNet --------------------------------------------------------------------------------------------
def mnasnet_round(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded if rounded >= 0.9 * value else rounded + divisor


class MnasNetInvertedResidual(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expansion, momentum=0.1):
        super().__init__()
        mid = cin * expansion
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=momentum), nn.ReLU(),
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=momentum), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=momentum))

    def forward(self, x):
        return self.layers(x) + x if self.apply_residual else self.layers(x)


class MNASNet(nn.Module):
    STACKS = ((3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1))

    def __init__(self, alpha, num_classes=1000):
        super().__init__()
        d = [mnasnet_round(w * alpha) for w in (32, 16, 24, 40, 80, 96, 192, 320)]
        m = 0.0003
        layers = [nn.Conv2d(3, d[0], 3, 2, 1, bias=False), nn.BatchNorm2d(d[0], momentum=m), nn.ReLU(),
                  nn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), nn.BatchNorm2d(d[0], momentum=m),
                  nn.ReLU(), nn.Conv2d(d[0], d[1], 1, bias=False), nn.BatchNorm2d(d[1], momentum=m)]
        for (k, s, t, n), cin, cout in zip(self.STACKS, d[1:], d[2:]):
            layers.append(nn.Sequential(*[MnasNetInvertedResidual(cin if i == 0 else cout, cout, k, s if i == 0 else 1,
                                                                  t, m) for i in range(n)]))
        layers += [nn.Conv2d(d[7], 1280, 1, bias=False), nn.BatchNorm2d(1280, momentum=m), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


# -- EfficientNetV2 -------------------------------------------------------------------------------------
def _cna(cin, cout, kernel, stride=1, groups=1, act=nn.SiLU):
    return tz.conv_norm_act(cin, cout, kernel, stride, groups, act=act, eps=1e-3)


class FusedMBConv(nn.Module):
    def __init__(self, t, kernel, stride, cin, cout, p):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = tz.make_divisible(cin * t)
        if hidden != cin:
            layers = [_cna(cin, hidden, kernel, stride), _cna(hidden, cout, 1, act=None)]
        else:
            layers = [_cna(cin, cout, kernel, stride)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = tz.StochasticDepth(p)

    def forward(self, x):
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


class MBConvV2(nn.Module):
    """torchvision's MBConv with EfficientNetV2's BatchNorm eps 0.001."""

    def __init__(self, t, kernel, stride, cin, cout, p):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = tz.make_divisible(cin * t)
        layers = [] if hidden == cin else [_cna(cin, hidden, 1)]
        layers += [_cna(hidden, hidden, kernel, stride, hidden),
                   tz.SqueezeExcitation(hidden, max(1, cin // 4), activation=nn.SiLU),
                   _cna(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = tz.StochasticDepth(p)

    def forward(self, x):
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


V2_S = (("fused", 1, 3, 1, 24, 24, 2), ("fused", 4, 3, 2, 24, 48, 4), ("fused", 4, 3, 2, 48, 64, 4),
        ("mbconv", 4, 3, 2, 64, 128, 6), ("mbconv", 6, 3, 1, 128, 160, 9), ("mbconv", 6, 3, 2, 160, 256, 15))


class EfficientNetV2(nn.Module):
    def __init__(self, stages=V2_S, num_classes=1000):
        super().__init__()
        blocks = {"fused": FusedMBConv, "mbconv": MBConvV2}
        layers = [_cna(3, stages[0][4], 3, 2)]
        total, index = sum(s[-1] for s in stages), 0
        for kind, t, k, s, ci, co, n in stages:
            stage = []
            for i in range(n):
                stage.append(blocks[kind](t, k, s if i == 0 else 1, ci if i == 0 else co, co, 0.2 * index / total))
                index += 1
            layers.append(nn.Sequential(*stage))
        layers.append(_cna(stages[-1][5], 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
