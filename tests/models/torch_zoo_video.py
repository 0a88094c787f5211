"""PyTorch video ResNets with torchvision's ``models.video.resnet`` module names (torchvision
is not installed): references for lamina's r3d_18, mc3_18 and r2plus1d_18 (NCDHW)."""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm running statistics (3-D ones included); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = (1.0 / fan_in) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


def conv3d_simple(cin, cout, mid, stride=1):
    return nn.Conv3d(cin, cout, 3, stride, 1, bias=False)


def conv3d_no_temporal(cin, cout, mid, stride=1):
    return nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)


class Conv2Plus1D(nn.Sequential):
    def __init__(self, cin, cout, mid, stride=1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
        )


DOWNSAMPLE_STRIDE = {conv3d_simple: lambda s: (s, s, s), conv3d_no_temporal: lambda s: (1, s, s),
                     Conv2Plus1D: lambda s: (s, s, s)}


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, conv, stride=1):
        super().__init__()
        mid = (cin * planes * 27) // (cin * 9 + 3 * planes)
        self.conv1 = nn.Sequential(conv(cin, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU())
        self.conv2 = nn.Sequential(conv(planes, planes, mid), nn.BatchNorm3d(planes))
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, planes, 1, DOWNSAMPLE_STRIDE[conv](stride), bias=False), nn.BatchNorm3d(planes))

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def basic_stem(width=64):
    return nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False), nn.BatchNorm3d(width),
                         nn.ReLU())


def r2plus1d_stem(width=64, mid=45):
    return nn.Sequential(nn.Conv3d(3, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(mid),
                         nn.ReLU(), nn.Conv3d(mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
                         nn.BatchNorm3d(width), nn.ReLU())


class VideoResNet(nn.Module):
    def __init__(self, convs, stem, num_classes=400, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)):
        super().__init__()
        self.stem = stem
        cin = widths[0]
        for i, (conv, count, planes) in enumerate(zip(convs, blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(cin, planes, conv, stride)] + [BasicBlock(planes, planes, conv)
                                                                 for _ in range(1, count)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = planes
        self.stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def r3d_18(num_classes=400):
    return VideoResNet([conv3d_simple] * 4, basic_stem(), num_classes)


def mc3_18(num_classes=400):
    return VideoResNet([conv3d_simple] + [conv3d_no_temporal] * 3, basic_stem(), num_classes)


def r2plus1d_18(num_classes=400):
    return VideoResNet([Conv2Plus1D] * 4, r2plus1d_stem(), num_classes)


# -- S3D ----------------------------------------------------------------------------------------
def conv_bn_relu(cin, cout, kernel=1, stride=1, padding=None):
    """torchvision's Conv3dNormActivation with S3D's BatchNorm (eps 0.001, momentum 0.001)."""
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    padding = tuple(k // 2 for k in kernel) if padding is None else padding
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm3d(cout, eps=1e-3, momentum=1e-3), nn.ReLU())


class TemporalSeparableConv(nn.Sequential):
    def __init__(self, cin, cout, k, s, p):
        super().__init__(conv_bn_relu(cin, cout, (1, k, k), (1, s, s), (0, p, p)),
                         conv_bn_relu(cout, cout, (k, 1, 1), (s, 1, 1), (p, 0, 0)))


class SepInceptionBlock3D(nn.Module):
    def __init__(self, cin, b0, b1_mid, b1, b2_mid, b2, b3):
        super().__init__()
        self.branch0 = conv_bn_relu(cin, b0)
        self.branch1 = nn.Sequential(conv_bn_relu(cin, b1_mid), TemporalSeparableConv(b1_mid, b1, 3, 1, 1))
        self.branch2 = nn.Sequential(conv_bn_relu(cin, b2_mid), TemporalSeparableConv(b2_mid, b2, 3, 1, 1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), conv_bn_relu(cin, b3))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class S3D(nn.Module):
    def __init__(self, num_classes=400):
        super().__init__()
        self.features = nn.Sequential(
            TemporalSeparableConv(3, 64, 7, 2, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            conv_bn_relu(64, 64), TemporalSeparableConv(64, 192, 3, 1, 1),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            SepInceptionBlock3D(192, 64, 96, 128, 16, 32, 32), SepInceptionBlock3D(256, 128, 128, 192, 32, 96, 64),
            nn.MaxPool3d(3, 2, 1),
            SepInceptionBlock3D(480, 192, 96, 208, 16, 48, 64), SepInceptionBlock3D(512, 160, 112, 224, 24, 64, 64),
            SepInceptionBlock3D(512, 128, 128, 256, 24, 64, 64), SepInceptionBlock3D(512, 112, 144, 288, 32, 64, 64),
            SepInceptionBlock3D(528, 256, 160, 320, 32, 128, 128),
            nn.MaxPool3d(2, 2),
            SepInceptionBlock3D(832, 256, 160, 320, 32, 128, 128),
            SepInceptionBlock3D(832, 384, 192, 384, 48, 128, 128),
        )
        self.avgpool = nn.AvgPool3d((2, 7, 7), 1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Conv3d(1024, num_classes, 1))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x))).mean(dim=(2, 3, 4))
