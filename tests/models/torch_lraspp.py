"""PyTorch reference with torchvision's LR-ASPP module names (torchvision is not installed): the
dilated MobileNet v3 large features kept up to the last conv (keys 'backbone.0' ..
'backbone.16', as IntermediateLayerGetter keeps them), the LRASPPHead and the model, NCHW."""

from __future__ import annotations

import torch.nn.functional as TF
from torch import nn
from torch_zoo_modern import SqueezeExcitation, conv_norm_act, make_divisible

V3_LARGE = ((16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
            (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1))
NORM = {"eps": 0.001, "momentum": 0.01}


class DilatedBlock(nn.Module):
    """torchvision's InvertedResidual with a dilation (stride 1 when dilated)."""

    def __init__(self, cin, kernel, expanded, cout, use_se, act, stride, dilation):
        super().__init__()
        act = nn.Hardswish if act == "HS" else nn.ReLU
        layers = [] if expanded == cin else [conv_norm_act(cin, expanded, 1, act=act, **NORM)]
        depthwise = conv_norm_act(expanded, expanded, kernel, 1 if dilation > 1 else stride, expanded, act=act, **NORM)
        depthwise[0].dilation, depthwise[0].padding = (dilation, dilation), ((kernel - 1) // 2 * dilation,) * 2
        layers.append(depthwise)
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), scale_activation=nn.Hardsigmoid))
        layers.append(conv_norm_act(expanded, cout, 1, act=None, **NORM))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res_connect else out


def dilated_mobilenet_v3_large_features():
    layers = [conv_norm_act(3, 16, 3, 2, act=nn.Hardswish, **NORM)]
    for i, row in enumerate(V3_LARGE):
        layers.append(DilatedBlock(*row, dilation=2 if i >= len(V3_LARGE) - 3 else 1))
    layers.append(conv_norm_act(160, 960, 1, act=nn.Hardswish, **NORM))
    return nn.Sequential(*layers)


class LRASPPHead(nn.Module):
    def __init__(self, low_channels, high_channels, num_classes, inter_channels=128):
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU())
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low, high):
        x = self.cbr(high) * self.scale(high)
        x = TF.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = dilated_mobilenet_v3_large_features()
        self.classifier = LRASPPHead(40, 960, num_classes)

    def forward(self, x):
        size, low = x.shape[-2:], None
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == 4:
                low = x
        out = self.classifier(low, x)
        return {"out": TF.interpolate(out, size=size, mode="bilinear", align_corners=False)}
