"""A PyTorch re-implementation (NCHW) of lamina.nn.nas's operations, reading the lamina
modules' weights, for cross-checks in float64."""

import numpy as np
import torch
import torch.nn.functional as TF

from lamina.nn.nas import (
    AvgPoolExcludePad,
    DilConv,
    FactorizedReduce,
    Identity,
    MaxPool3x3,
    MixedOp,
    NASConv,
    NormalizedPool,
    ReLUConvBN,
    SearchCell,
    SepConv,
    Zero,
)
from lamina.nn.normalization import BatchNorm


class TorchMirror:
    """Runs a lamina NAS module in torch; ``tensors`` maps each lamina parameter (by id) to
    its torch copy, whose gradients can then be compared."""

    def __init__(self, module):
        self.params = [p for p in module.parameters()]
        self.tensors = {id(p): torch.tensor(np.asarray(p.data), requires_grad=True) for p in self.params}

    def weight(self, p):
        return self.tensors[id(p)]

    def __call__(self, module, x, *extra):
        return getattr(self, "_" + type(module).__name__)(module, x, *extra)

    def _NASConv(self, m: NASConv, x):
        w = self.weight(m.weight).permute(0, 3, 1, 2)
        return TF.conv2d(x, w, None, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)

    def _BatchNorm(self, m: BatchNorm, x):
        weight = self.weight(m.weight) if m.affine else None
        bias = self.weight(m.bias) if m.affine else None
        return TF.batch_norm(x, None, None, weight, bias, training=True, eps=m.eps)

    def _ReLUConvBN(self, m: ReLUConvBN, x):
        return self(m.bn, self(m.conv, torch.relu(x)))

    def _DilConv(self, m: DilConv, x):
        return self(m.bn, self(m.pointwise, self(m.depthwise, torch.relu(x))))

    def _SepConv(self, m: SepConv, x):
        return self(m.second, self(m.first, x))

    def _Identity(self, m: Identity, x):
        return x

    def _Zero(self, m: Zero, x):
        return x[:, :, ::m.stride, ::m.stride].mul(0.0)

    def _FactorizedReduce(self, m: FactorizedReduce, x):
        x = torch.relu(x)
        shifted = TF.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self(m.bn, torch.cat([self(m.conv_even, x), self(m.conv_odd, shifted)], dim=1))

    def _MaxPool3x3(self, m: MaxPool3x3, x):
        return TF.max_pool2d(x, 3, stride=m.stride, padding=1)

    def _AvgPoolExcludePad(self, m: AvgPoolExcludePad, x):
        return TF.avg_pool2d(x, 3, stride=m.stride, padding=1, count_include_pad=False)

    def _NormalizedPool(self, m: NormalizedPool, x):
        return self(m.bn, self(m.pool, x))

    def _MixedOp(self, m: MixedOp, x, weights):
        return sum(w * self(op, x) for w, op in zip(weights, m.candidates))

    def _SearchCell(self, m: SearchCell, s0, s1, weights):
        states = [self(m.preprocess0, s0), self(m.preprocess1, s1)]
        offset = 0
        for _ in range(m.steps):
            node = sum(self(m.edges[offset + j], h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[-m.multiplier:], dim=1)


def to_nchw(a):
    return torch.tensor(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)), requires_grad=True)


def from_nchw(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)
