"""Small PyTorch builders with torchvision's module names (torchvision is not installed), used
as references for ``load_torchvision_state_dict``: ResNets (ImageNet and CIFAR stems), VGG,
GoogLeNet and Inception-v3, each able to take random weights and random BN statistics."""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = (1.0 / fan_in) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


# -- ResNet -------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's bottleneck; ResNeXt and wide ResNets change ``groups`` and ``width_per_group``."""
    expansion = 4
    groups, width_per_group = 1, 64

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        width = int(planes * (self.width_per_group / 64.0)) * self.groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=self.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, counts, num_classes=1000, cifar=False):
        super().__init__()
        widths = (16, 32, 64) if cifar else (64, 128, 256, 512)
        stem = widths[0]
        if cifar:
            self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (w, n) in enumerate(zip(widths, counts)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- VGG ----------------------------------------------------------------------------------------
class VGG(nn.Module):
    def __init__(self, cfg, num_classes=1000, batch_norm=False, hidden=4096):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(cin, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU())
            cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(cin * 49, hidden), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- GoogLeNet ----------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, ch1, ch3r, ch3, ch5r, ch5, pp):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3r, kernel_size=1), BasicConv2d(ch3r, ch3, kernel_size=3,
                                                                                         padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5r, kernel_size=1), BasicConv2d(ch5r, ch5, kernel_size=3,
                                                                                         padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, aux_logits=True):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        if aux_logits:
            self.aux1 = GoogLeNetAux(512, num_classes)
            self.aux2 = GoogLeNetAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x, taps=None):
        names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                 "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                 "inception5a", "inception5b"]
        for name in names:
            x = getattr(self, name)(x)
            if taps is not None:
                taps[name] = x
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# -- Inception-v3 -------------------------------------------------------------------------------
def _bc(cin, cout, **kw):
    return BasicConv2d(cin, cout, **kw)


class InceptionA(nn.Module):
    def __init__(self, cin, pf):
        super().__init__()
        self.branch1x1 = _bc(cin, 64, kernel_size=1)
        self.branch5x5_1 = _bc(cin, 48, kernel_size=1)
        self.branch5x5_2 = _bc(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _bc(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _bc(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _bc(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _bc(cin, pf, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _bc(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _bc(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _bc(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _bc(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, nn.functional.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = _bc(cin, 192, kernel_size=1)
        self.branch7x7_1 = _bc(cin, c7, kernel_size=1)
        self.branch7x7_2 = _bc(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _bc(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _bc(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _bc(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _bc(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _bc(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _bc(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _bc(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        bp = self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = _bc(cin, 192, kernel_size=1)
        self.branch3x3_2 = _bc(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _bc(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _bc(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _bc(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _bc(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, nn.functional.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = _bc(cin, 320, kernel_size=1)
        self.branch3x3_1 = _bc(cin, 384, kernel_size=1)
        self.branch3x3_2a = _bc(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _bc(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _bc(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = _bc(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _bc(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _bc(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _bc(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(nn.functional.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionV3Aux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv0 = _bc(cin, 128, kernel_size=1)
        self.conv1 = _bc(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(nn.functional.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(nn.Module):
    def __init__(self, num_classes=1000, aux_logits=True):
        super().__init__()
        self.Conv2d_1a_3x3 = _bc(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _bc(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _bc(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = _bc(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _bc(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        if aux_logits:
            self.AuxLogits = InceptionV3Aux(768, num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x, taps=None):
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
        for name in names:
            x = getattr(self, name)(x)
            if taps is not None:
                taps[name] = x
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# -- MobileNet v1 (Keras layout) ------------------------------------------------------------------
def mobilenet(alpha=1.0, num_classes=1000, blocks=None):
    """Keras's MobileNet v1 as a torch Sequential: stride-2 layers pad one pixel bottom/right."""
    blocks = blocks or ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                        (512, 1), (512, 1), (1024, 2), (1024, 1))

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3)

    def pad(stride):
        return [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []

    cin = int(32 * alpha)
    layers = [*pad(2), nn.Conv2d(3, cin, 3, 2, 0, bias=False), bn(cin), nn.ReLU6()]
    for filters, stride in blocks:
        cout = int(filters * alpha)
        layers += [*pad(stride), nn.Conv2d(cin, cin, 3, stride, 1 if stride == 1 else 0, groups=cin, bias=False),
                   bn(cin), nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False), bn(cout), nn.ReLU6()]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(1e-3), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
