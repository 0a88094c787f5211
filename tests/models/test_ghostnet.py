"""GhostNet: the Ghost module and bottleneck against torch rewrites of the reference code, the
parameter count of GhostNet 1.0x against the rewrite and the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn as tnn

import lamina
from helpers import randn
from lamina import models
from lamina.models.ghostnet import GHOSTNET_CONFIG, make_divisible_by


# -- torch rewrite of the reference implementation (NCHW) ------------------------------------
def _make_divisible(v, divisor=4):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class TorchGhostModule(tnn.Module):
    def __init__(self, inp, oup, kernel_size=1, ratio=2, dw_size=3, stride=1, relu=True):
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        act = [tnn.ReLU()] if relu else []
        self.primary_conv = tnn.Sequential(
            tnn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            tnn.BatchNorm2d(init_channels), *act)
        self.cheap_operation = tnn.Sequential(
            tnn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            tnn.BatchNorm2d(new_channels), *act)

    def forward(self, x):
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, :self.oup]


class TorchSqueezeExcite(tnn.Module):
    def __init__(self, chs, se_ratio=0.25):
        super().__init__()
        reduced = _make_divisible(chs * se_ratio, 4)
        self.fc1 = tnn.Conv2d(chs, reduced, 1)
        self.fc2 = tnn.Conv2d(reduced, chs, 1)

    def forward(self, x):
        s = torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * torch.nn.functional.hardsigmoid(self.fc2(s))


class TorchGhostBottleneck(tnn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, k=3, stride=1, se_ratio=0.0):
        super().__init__()
        self.stride = stride
        self.ghost1 = TorchGhostModule(in_chs, mid_chs, relu=True)
        if stride > 1:
            self.conv_dw = tnn.Conv2d(mid_chs, mid_chs, k, stride, (k - 1) // 2, groups=mid_chs, bias=False)
            self.bn_dw = tnn.BatchNorm2d(mid_chs)
        self.se = TorchSqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = TorchGhostModule(mid_chs, out_chs, relu=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut = tnn.Sequential()
        else:
            self.shortcut = tnn.Sequential(
                tnn.Conv2d(in_chs, in_chs, k, stride, (k - 1) // 2, groups=in_chs, bias=False), tnn.BatchNorm2d(in_chs),
                tnn.Conv2d(in_chs, out_chs, 1, bias=False), tnn.BatchNorm2d(out_chs))

    def forward(self, x):
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


def torch_ghostnet_parameter_count(width=1.0, num_classes=1000):
    channels = _make_divisible(16 * width)
    layers = [tnn.Conv2d(3, channels, 3, 2, 1, bias=False), tnn.BatchNorm2d(channels)]
    for rows in GHOSTNET_CONFIG:
        for k, mid, c, se_ratio, s in rows:
            out = _make_divisible(c * width)
            layers.append(TorchGhostBottleneck(channels, _make_divisible(mid * width), out, k, s, se_ratio))
            channels = out
    last = _make_divisible(GHOSTNET_CONFIG[-1][-1][1] * width)
    layers += [tnn.Conv2d(channels, last, 1, bias=False), tnn.BatchNorm2d(last), tnn.Conv2d(last, 1280, 1),
               tnn.Linear(1280, num_classes)]
    return sum(p.numel() for p in tnn.ModuleList(layers).parameters())


# -- copying lamina weights into the rewrite ---------------------------------------------------
def _copy_conv(conv, tconv):
    tconv.weight.data = torch.tensor(conv.weight.numpy().transpose(0, 3, 1, 2).copy())
    if tconv.bias is not None:
        tconv.bias.data = torch.tensor(conv.bias.numpy())


def _copy_bn(bn, tbn):
    tbn.weight.data = torch.tensor(bn.gamma.numpy() if hasattr(bn, "gamma") else bn.weight.numpy())
    tbn.bias.data = torch.tensor(bn.beta.numpy() if hasattr(bn, "beta") else bn.bias.numpy())


def _copy_ghost(module, tmodule):
    pairs = ((module.primary_conv, tmodule.primary_conv), (module.cheap_operation, tmodule.cheap_operation))
    for ours, theirs in pairs:
        _copy_conv(ours.layers[0], theirs[0])
        _copy_bn(ours.layers[1], theirs[1])


def _perturb(module, seed=3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(p.dtype)


def _compare(ours, theirs, x, rtol=1e-9):
    """Outputs and input gradients of the lamina block and the torch rewrite (float64, batch
    statistics in the batch norms)."""
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    yl, yt = ours(xl), theirs(xt)
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy().transpose(0, 2, 3, 1), rtol=rtol, atol=1e-10)
    up = randn(*yl.shape, seed=5)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-7, atol=1e-9)


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    torch.set_default_dtype(torch.float64)
    yield
    lamina.backend.set_default_dtype(previous)
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("ratio,out", [(2, 6), (3, 7)])
def test_ghost_module_matches_the_torch_rewrite(float64, ratio, out):
    x = randn(2, 5, 5, 3)
    module = models.GhostModule(3, out, kernel_size=1, ratio=ratio, dw_size=3)
    module(lamina.tensor(x))
    _perturb(module)
    reference = TorchGhostModule(3, out, 1, ratio, 3).double()
    _copy_ghost(module, reference)
    assert module(lamina.tensor(x)).shape == (2, 5, 5, out)
    _compare(module, reference, x)


def test_ghost_bottleneck_with_stride_and_se_matches_the_torch_rewrite(float64):
    x = randn(2, 6, 6, 4, seed=1)
    block = models.GhostBottleneck(4, 8, 6, dw_kernel_size=3, stride=2, se_ratio=0.25)
    block(lamina.tensor(x))
    _perturb(block)
    reference = TorchGhostBottleneck(4, 8, 6, 3, 2, 0.25).double()
    _copy_ghost(block.ghost1, reference.ghost1)
    _copy_ghost(block.ghost2, reference.ghost2)
    _copy_conv(block.conv_dw, reference.conv_dw)
    _copy_bn(block.bn_dw, reference.bn_dw)
    _copy_conv(block.se.fc1, reference.se.fc1)
    _copy_conv(block.se.fc2, reference.se.fc2)
    for i, j in ((0, 0), (2, 2)):
        _copy_conv(block.shortcut.layers[i], reference.shortcut[j])
    for i in (1, 3):
        _copy_bn(block.shortcut.layers[i], reference.shortcut[i])
    _compare(block, reference, x)


def test_ghostnet_1_0_parameter_count_matches_the_rewrite_and_the_paper():
    model = models.ghostnet_1_0()
    total = model.summary(input_shape=(224, 224, 3)).total_params
    assert total == torch_ghostnet_parameter_count(1.0)
    assert abs(total - 5.2e6) < 0.05e6                    # the paper: 5.2 M parameters
    assert models.ghostnet_0_5(10).summary(input_shape=(32, 32, 3)).total_params == torch_ghostnet_parameter_count(
        0.5, 10)


def test_make_divisible_by_rounds_to_multiples_of_four():
    assert [make_divisible_by(v) for v in (16, 8.0, 18, 3, 33.6)] == [16, 8, 20, 4, 32]


def test_ghostnet_runs_and_learns_a_step():
    model = models.GhostNet(3, width=0.25, config=(((3, 8, 8, 0.25, 2),), ((3, 16, 12, 0.0, 1),)))
    x = lamina.tensor(randn(2, 16, 16, 3).astype(np.float32))
    assert model(x).shape == (2, 3)
    loss = lamina.functional.cross_entropy(model(x), np.array([0, 2]))
    loss.backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in model.parameters())
