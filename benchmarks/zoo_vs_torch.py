"""Zoo models, lamina against PyTorch: inference and training throughput (images/s).

ResNet-18, VGG11, MobileNet v1 and GoogLeNet are built in lamina (``lamina.models``) and
in PyTorch (small builders below with the same layers; torchvision is not needed) and run
in the same process, interleaved, with batch 8:

* inference: evaluation mode, no gradient, at the native 224x224 resolution; PyTorch in
  NCHW and in channels_last;
* training: one SGD-with-momentum step (forward, cross-entropy, backward, update) at a
  reduced resolution (TRAIN_SIZE, so that a run stays well under a minute).

The medians of REPEATS timed runs (after WARMUP untimed ones) are compared; the ratio is
lamina's throughput over PyTorch's best layout (1.0 = as fast as PyTorch). Before timing,
the torchvision-layout models get the PyTorch model's weights through
``load_torchvision_state_dict`` and the outputs are compared (max abs difference printed).

Usage: python benchmarks/zoo_vs_torch.py [REPEATS]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.models import load_torchvision_state_dict
from lamina.models.googlenet import INCEPTION_CONFIGS
from lamina.models.mobilenet import MOBILENET_BLOCKS
from lamina.models.vgg import VGG_CONFIGS

BATCH = 8
INFER_SIZE = 224
TRAIN_SIZE = 128
REPEATS = 5
WARMUP = 1


# -- PyTorch builders (torchvision's layouts and names) ---------------------------------------
class TorchBasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
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


class TorchResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(TorchBasicBlock(cin, planes, stride),
                                                         TorchBasicBlock(planes, planes, 1)))
            cin = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchVGG11(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [], 3
        for v in VGG_CONFIGS[11]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _torch_mobilenet(num_classes=1000):
    """MobileNet v1 as Keras builds it: stride-2 convolutions pad one pixel bottom/right."""
    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    def pad_for(stride):
        return [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []

    layers = [*pad_for(2), nn.Conv2d(3, 32, 3, 2, 0, bias=False), bn(32), nn.ReLU6(inplace=True)]
    cin = 32
    for filters, stride in MOBILENET_BLOCKS:
        layers += [*pad_for(stride), nn.Conv2d(cin, cin, 3, stride, 1 if stride == 1 else 0, groups=cin, bias=False),
                   bn(cin), nn.ReLU6(inplace=True), nn.Conv2d(cin, filters, 1, bias=False), bn(filters),
                   nn.ReLU6(inplace=True)]
        cin = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(1e-3), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class TorchBasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(nn.Module):
    def __init__(self, cin, ch1, ch3r, ch3, ch5r, ch5, pool_proj):
        super().__init__()
        self.branch1 = TorchBasicConv2d(cin, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(TorchBasicConv2d(cin, ch3r, kernel_size=1),
                                     TorchBasicConv2d(ch3r, ch3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(TorchBasicConv2d(cin, ch5r, kernel_size=1),
                                     TorchBasicConv2d(ch5r, ch5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     TorchBasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchGoogLeNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        cfg = INCEPTION_CONFIGS
        self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin = 192
        order = ["inception3a", "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                 "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b"]
        for name in order:
            if name == "maxpool3":
                self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
            elif name == "maxpool4":
                self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
            else:
                c = cfg[name]
                setattr(self, name, TorchInception(cin, *c))
                cin = c[0] + c[2] + c[4] + c[5]
        self.order = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", *order]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


CASES = {
    "ResNet-18": (models.resnet18, TorchResNet18, True),
    "VGG11": (models.vgg11, TorchVGG11, True),
    "MobileNet": (lambda **kw: models.mobilenet(classifier_activation=None, **kw), _torch_mobilenet, False),
    "GoogLeNet": (models.googlenet, TorchGoogLeNet, True),
}


SETTLE_S = 0.2

# -- timing ---------------------------------------------------------------------------------
def _median_times(steps: dict, repeats: int) -> dict:
    """Interleave the systems' steps; the median seconds per step of each."""
    for _ in range(WARMUP):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            time.sleep(SETTLE_S)             # the other library's worker threads go quiet
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _inference_steps(model, tmodel, x):
    model.eval()
    tmodel.eval()
    xl = lamina.tensor(x)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
    tmodel_cl = tmodel  # the same module; channels_last inputs switch PyTorch to its NHWC kernels

    def lamina_step():
        with lamina.no_grad():
            model(xl)

    def torch_nchw():
        with torch.inference_mode():
            tmodel(x_nchw)

    def torch_cl():
        with torch.inference_mode():
            tmodel_cl(x_cl)

    return {"lamina": lamina_step, "torch NCHW": torch_nchw, "torch channels_last": torch_cl}


def _training_steps(model, tmodel, x, labels):
    model.train()
    tmodel.train()
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=1e-3, momentum=0.9)
    xl = lamina.tensor(x)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(labels)
    loss_fn = torch.nn.CrossEntropyLoss()

    def lamina_step():
        out = model(xl)
        loss = F.categorical_cross_entropy(out, labels, from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def torch_step(inputs):
        def step():
            topt.zero_grad()
            loss_fn(tmodel(inputs), yt).backward()
            topt.step()
        return step

    return {"lamina": lamina_step, "torch NCHW": torch_step(x_nchw), "torch channels_last": torch_step(x_cl)}


def _report(kind: str, name: str, size: int, medians: dict) -> float:
    ips = {k: BATCH / v for k, v in medians.items()}
    best = max(ips["torch NCHW"], ips["torch channels_last"])
    ratio = ips["lamina"] / best
    print(f"{name:10s} {kind:9s} {size:3d}px  lamina {ips['lamina']:7.1f} img/s   torch NCHW "
          f"{ips['torch NCHW']:7.1f}   torch channels_last {ips['torch channels_last']:7.1f}   "
          f"ratio {ratio:.2f} (vs channels_last {ips['lamina'] / ips['torch channels_last']:.2f})", flush=True)
    return ratio


def main(repeats: int = REPEATS) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x_inf = rng.standard_normal((BATCH, INFER_SIZE, INFER_SIZE, 3)).astype(np.float32)
    x_train = rng.standard_normal((BATCH, TRAIN_SIZE, TRAIN_SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, BATCH)
    print(f"batch {BATCH}, {repeats} timed runs (median), torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, numpy {np.__version__}")
    ratios = {}
    for name, (build, build_torch, torchvision_layout) in CASES.items():
        model = build(input_shape=(INFER_SIZE, INFER_SIZE, 3))
        tmodel = build_torch()
        model.build(model.input_shape)
        if torchvision_layout:
            load_torchvision_state_dict(model, tmodel.state_dict())
            model.eval()
            tmodel.eval()
            with lamina.no_grad():
                ours = model(lamina.tensor(x_inf[:2])).numpy()
            with torch.no_grad():
                theirs = tmodel(torch.from_numpy(x_inf[:2].transpose(0, 3, 1, 2).copy())).numpy()
            print(f"{name}: same weights, max |lamina - torch| = {np.abs(ours - theirs).max():.2e} "
                  f"(|torch| max {np.abs(theirs).max():.2e})")
        medians = _median_times(_inference_steps(model, tmodel, x_inf), repeats)
        ratios[(name, "inference")] = _report("inference", name, INFER_SIZE, medians)
        train_model = build(input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3))
        train_model.build(train_model.input_shape)
        medians = _median_times(_training_steps(train_model, build_torch(), x_train, labels), repeats)
        ratios[(name, "training")] = _report("training", name, TRAIN_SIZE, medians)
        del model, tmodel, train_model
    print("\nratios (lamina / best PyTorch layout):")
    for (name, kind), r in ratios.items():
        print(f"  {name:10s} {kind:9s} {r:.2f}")
    return ratios


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)
