"""HRNet for heatmaps: a small configuration's outputs and gradients against a torch rewrite
of mmpose's layout (float64, NCHW, same state-dict keys), HRNet-W32's parameter count, shapes
and errors."""

import numpy as np
import pytest
import torch
from torch import nn as tnn

import lamina
from helpers import assert_close
from lamina.models import HRNet, HRNetModule, hrnet_lite
from lamina.nn.layer import layer_from_config, layer_to_config


def _conv_bn(c_in, c_out, kernel, stride, relu):
    layers = [tnn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), tnn.BatchNorm2d(c_out)]
    return tnn.Sequential(*layers, *([tnn.ReLU()] if relu else []))


class Basic(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(c, c, 3, 1, 1, bias=False), tnn.BatchNorm2d(c)
        self.conv2, self.bn2 = tnn.Conv2d(c, c, 3, 1, 1, bias=False), tnn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class Neck(tnn.Module):
    def __init__(self, c_in, planes):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(c_in, planes, 1, bias=False), tnn.BatchNorm2d(planes)
        self.conv2, self.bn2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False), tnn.BatchNorm2d(planes)
        self.conv3, self.bn3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False), tnn.BatchNorm2d(4 * planes)
        self.downsample = _conv_bn(c_in, 4 * planes, 1, 1, False) if c_in != 4 * planes else None

    def forward(self, x):
        out = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        short = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.bn3(self.conv3(out)) + short)


class Module(tnn.Module):
    """mmpose's HRModule: branches of basic blocks, then the exchange unit."""

    def __init__(self, widths, blocks, multi_scale):
        super().__init__()
        self.branches = tnn.ModuleList([tnn.Sequential(*[Basic(w) for _ in range(blocks)]) for w in widths])
        rows = []
        for i in range(len(widths) if multi_scale else 1):
            row = []
            for j, w in enumerate(widths):
                if j > i:
                    row.append(tnn.Sequential(*_conv_bn(w, widths[i], 1, 1, False),
                                              tnn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(tnn.Identity())
                else:
                    row.append(tnn.Sequential(*[_conv_bn(w, widths[i] if k == i - j - 1 else w, 3, 2, k < i - j - 1)
                                                for k in range(i - j)]))
            rows.append(tnn.ModuleList(row))
        self.fuse_layers = tnn.ModuleList(rows)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        return [torch.relu(sum(layer(x) for layer, x in zip(row, xs))) for row in self.fuse_layers]


class TorchHRNet(tnn.Module):
    def __init__(self, keypoints, widths, modules, blocks, stem, filters, stage1_blocks):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(3, stem, 3, 2, 1, bias=False), tnn.BatchNorm2d(stem)
        self.conv2, self.bn2 = tnn.Conv2d(stem, stem, 3, 2, 1, bias=False), tnn.BatchNorm2d(stem)
        self.layer1 = tnn.Sequential(*[Neck(stem if i == 0 else 4 * filters, filters) for i in range(stage1_blocks)])
        previous, self.count = [4 * filters], len(modules)
        for s, count in enumerate(modules):
            current, layers = widths[:s + 2], []
            for b, w in enumerate(current):
                if b < len(previous):
                    layers.append(tnn.Identity() if previous[b] == w else _conv_bn(previous[b], w, 3, 1, True))
                else:
                    extra = b + 1 - len(previous)
                    layers.append(tnn.Sequential(*[_conv_bn(previous[-1], w if k == extra - 1 else previous[-1], 3, 2,
                                                            True) for k in range(extra)]))
            setattr(self, f"transition{s + 1}", tnn.ModuleList(layers))
            setattr(self, f"stage{s + 2}", tnn.ModuleList(
                [Module(current, blocks, not (s == len(modules) - 1 and m == count - 1)) for m in range(count)]))
            previous = current
        self.final_layer = tnn.Conv2d(widths[0], keypoints, 1)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(x)]
        for s in range(self.count):
            xs = [layer(xs[min(b, len(xs) - 1)]) for b, layer in enumerate(getattr(self, f"transition{s + 1}"))]
            for module in getattr(self, f"stage{s + 2}"):
                xs = module(xs)
        return self.final_layer(xs[0])


def _nchw_weight(value):
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


def test_small_hrnet_matches_torch_rewrite(f64):
    config = dict(widths=(4, 6, 8), modules=(1, 2), blocks=1, stem=6, filters=2, stage1_blocks=2)
    model = HRNet(3, config["widths"], config["modules"], config["blocks"], config["stem"], config["filters"],
                  config["stage1_blocks"])
    model.build((None, 16, 16, 3))
    reference = TorchHRNet(3, **config).double()
    ours_state, theirs_state = model.state_dict(), reference.state_dict()
    theirs_state = {k: v for k, v in theirs_state.items() if not k.endswith("num_batches_tracked")}
    assert sorted(ours_state) == sorted(theirs_state)
    rng = np.random.default_rng(0)
    state = {k: rng.normal(size=v.shape) * 0.5 for k, v in ours_state.items()}
    model.load_state_dict(state)
    reference.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(_nchw_weight(v))) for k, v in state.items()},
                              strict=False)
    x = rng.normal(size=(2, 16, 16, 3))
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out, expected = model(ours), reference(theirs)
    assert tuple(out.shape) == (2, 4, 4, 3)
    assert_close(out.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-9, "heatmaps")
    upstream = rng.normal(size=out.shape)
    (out * lamina.tensor(upstream)).sum().backward()
    (expected * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-9, "input gradient")
    grads = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():  # BN biases under a later BN get ~0: absolute tolerance
        np.testing.assert_allclose(_nchw_weight(parameter.grad), grads[name].grad.numpy(), rtol=1e-8, atol=1e-9,
                                   err_msg=name)


def test_hrnet_w32_parameter_count_and_lite_shapes():
    reference = TorchHRNet(17, (32, 64, 128, 256), (1, 4, 3), 4, 64, 64, 4)
    model = HRNet()
    model.build((None, 64, 48, 3))
    assert sum(p.size for p in model.parameters()) == sum(p.numel() for p in reference.parameters()) == 28_536_113
    lite = hrnet_lite(9, width=8, stages=2, blocks=1)
    lite.build((None, 32, 32, 3))
    assert lite(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 8, 8, 9)


def test_config_round_trip():
    lite = hrnet_lite(4, width=4, stages=3, blocks=1)
    lite.build((None, 32, 32, 3))
    copy = layer_from_config(layer_to_config(lite))
    copy.build((None, 32, 32, 3))
    copy.load_state_dict(lite.state_dict())
    lite.eval()
    copy.eval()
    x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(copy(x).numpy(), lite(x).numpy(), rtol=1e-6)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="one module count"):
        HRNet(17, widths=(8, 16), modules=(1, 1))
    with pytest.raises(ValueError, match="at least 2 stages"):
        hrnet_lite(stages=1)
    module = HRNetModule([4, 8], blocks=1)
    with pytest.raises(Exception, match="expected 2 NHWC maps"):
        module.build([(None, 8, 8, 4)])
    with pytest.raises(Exception, match="branch 1 needs 8 channels"):
        module.build([(None, 8, 8, 4), (None, 4, 4, 5)])
