"""PyTorch references with torchvision's segmentation module names (torchvision is not
installed): the ResNet backbone with strides swapped for dilations, FCNHead, ASPP and
DeepLabHead, and the model returning {'out', 'aux'} resized to the input."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class DilatedResNet(nn.Module):
    """torchvision's ResNet stem and stages with replace_stride_with_dilation=[False, True, True]."""

    def __init__(self, counts):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes, self.dilation = 64, 1
        for i, (planes, n, dilate) in enumerate(zip((64, 128, 256, 512), counts, (False, False, True, True))):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, n, 1 if i == 0 else 2, dilate))

    def _make_layer(self, planes, blocks, stride, dilate):
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, previous)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        aux = self.layer3(x)
        return self.layer4(aux), aux


def fcn_head(cin, classes):
    inter = cin // 4
    return nn.Sequential(nn.Conv2d(cin, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(),
                         nn.Dropout(0.1), nn.Conv2d(inter, classes, 1))


class ASPPPooling(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())

    def forward(self, x):
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return TF.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin, rates=(12, 24, 36), cout=256):
        super().__init__()
        branches = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
        for rate in rates:
            branches.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=False),
                                          nn.BatchNorm2d(cout), nn.ReLU()))
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * cout, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


def deeplab_head(cin, classes):
    return nn.Sequential(ASPP(cin), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
                         nn.Conv2d(256, classes, 1))


class SegmentationModel(nn.Module):
    def __init__(self, kind, counts, classes, aux):
        super().__init__()
        self.backbone = DilatedResNet(counts)
        self.classifier = (fcn_head if kind == "fcn" else deeplab_head)(2048, classes)
        self.aux_classifier = fcn_head(1024, classes) if aux else None

    def forward(self, x):
        size = x.shape[-2:]
        features, aux = self.backbone(x)
        result = {"out": TF.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            result["aux"] = TF.interpolate(self.aux_classifier(aux), size=size, mode="bilinear", align_corners=False)
        return result
