"""Structural re-parameterization: a block trained with parallel linear branches is folded
into one convolution with bias for inference (RepVGG, Ding et al. 2021; MobileOne, Vasu
et al. 2023).

Every branch ends in a batch norm, which in evaluation mode is the per-channel affine map
BN(z) = gamma (z - mu) / sqrt(var + eps) + beta. Folded into the convolution W before it:

    W'_k = W_k gamma_k / sqrt(var_k + eps)        b'_k = beta_k - mu_k gamma_k / sqrt(var_k + eps)

A 1x1 kernel becomes an f x f one with its weights at the centre (zero elsewhere); the
identity branch (a batch norm alone) is the f x f kernel with a 1 at the centre of its own
channel (channel k % (C / groups) of group k's filters). Convolution is linear, so the sum
of the branches is one convolution with the summed kernels and biases:

    y = act(sum_b (W'_b * x + b'_b)) = act((sum_b W'_b) * x + sum_b b'_b)

The identity holds in evaluation mode (running statistics), not in training, where each
batch norm uses its batch's statistics. Kernels are NHWC: (K, f, f, c_in / groups).
"""

from __future__ import annotations

import copy

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, ConvBN, PathBlock, build_layer, nhwc_channels, residual_sum
from lamina.nn import BatchNorm, Conv2D
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["ReparamBlock", "conv_bn_kernel", "identity_kernel", "reparameterize", "reparameterized"]


def conv_bn_kernel(branch: ConvBN, size: int):
    """(kernel, bias) of a ConvBN branch with its batch norm folded in (module docstring), the
    kernel zero-padded at the border to ``size`` x ``size``."""
    weight = branch.conv.weight.data
    scale, shift = branch.bn.evaluation_affine(weight.dtype)
    kernel = weight * scale.reshape(-1, 1, 1, 1)
    pad = (size - weight.shape[1]) // 2
    if pad:
        kernel = backend.xp.pad(kernel, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return kernel, shift


def identity_kernel(norm: BatchNorm, groups: int, size: int, dtype):
    """(kernel, bias) of an identity branch (a batch norm alone) as a ``size`` x ``size``
    grouped convolution: filter k has gamma_k / sqrt(var_k + eps) at the centre of input
    channel k % (C / groups)."""
    channels = norm.num_features
    per_group = channels // groups
    scale, shift = norm.evaluation_affine(dtype)
    kernel = backend.xp.zeros((channels, size, size, per_group), dtype=dtype)
    rows = backend.xp.arange(channels)
    kernel[rows, size // 2, size // 2, rows % per_group] = scale
    return kernel, shift


class ReparamBlock(Block):
    """A block of parallel branches summed, then an activation: ``num_branches`` k x k ConvBN
    branches, an optional 1x1 ConvBN branch and an optional identity batch norm; in deploy
    mode one k x k convolution with bias named ``reparam``. Subclasses create the branches
    under their reference implementation's names and list them in
    :meth:`_branches` (their attribute names in ``branch_names``); :meth:`reparameterize` folds
    them in place."""

    branch_names: tuple[str, ...] = ()

    def _setup(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
               deploy: bool, label: str) -> None:
        self.in_channels = positive_int(in_channels, f"{label}: in_channels")
        self.out_channels = positive_int(out_channels, f"{label}: out_channels")
        self.groups = positive_int(groups, f"{label}: groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{label}: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if stride not in (1, 2):
            raise ValueError(f"{label}: stride must be 1 or 2, got {stride!r}")
        if kernel_size not in (1, 3, 5, 7):
            raise ValueError(f"{label}: kernel_size must be 1, 3, 5 or 7, got {kernel_size!r}")
        self.kernel_size, self.stride, self.deploy = kernel_size, stride, bool(deploy)
        self.has_identity = stride == 1 and in_channels == out_channels

    def _conv_bn(self, kernel_size: int, name: str) -> ConvBN:
        return ConvBN(self.out_channels, kernel_size, stride=self.stride, padding=kernel_size // 2,
                      groups=self.groups, activation=None, name=name)

    def _fused_conv(self) -> Conv2D:
        return Conv2D(self.out_channels, self.kernel_size, stride=self.stride, padding=self.kernel_size // 2,
                      groups=self.groups, name="reparam")

    def _branches(self) -> tuple[list[ConvBN], ConvBN | None, BatchNorm | None]:
        """(the k x k ConvBN branches, the 1x1 ConvBN branch or None, the identity norm or None)."""
        raise NotImplementedError

    def _conv_branches(self) -> tuple[list[ConvBN], BatchNorm | None]:
        """(every ConvBN branch, the 1x1 one last; the identity norm or None)."""
        convs, scale, identity = self._branches()
        return convs + ([scale] if scale is not None else []), identity

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        if self.deploy:
            return step(self.reparam, shape)
        convs, identity = self._conv_branches()
        out = step(convs[0], shape)
        for branch in convs[1:] + ([identity] if identity is not None else []):
            out = residual_sum(self, out, step(branch, shape))
        return out

    def forward(self, x) -> Tensor:
        if self.deploy:
            return F.relu(self.reparam(x))
        convs, identity = self._conv_branches()
        out = convs[0](x)
        for branch in convs[1:] + ([identity] if identity is not None else []):
            out = F.add(out, branch(x))
        return F.relu(out)

    def fused_kernel(self):
        """(kernel, bias) of the one convolution equal to the branches in evaluation mode."""
        if not self.built:
            raise RuntimeError(f"{self._label()}: build the block (call it once) before re-parameterizing it")
        convs, identity = self._conv_branches()
        kernel, bias = conv_bn_kernel(convs[0], self.kernel_size)
        for branch in convs[1:]:
            w, b = conv_bn_kernel(branch, self.kernel_size)
            kernel, bias = kernel + w, bias + b
        if identity is not None:
            w, b = identity_kernel(identity, self.groups, self.kernel_size, kernel.dtype)
            kernel, bias = kernel + w, bias + b
        return kernel, bias

    def reparameterize(self) -> ReparamBlock:
        """Fold the branches into the convolution ``reparam`` in place (deploy mode); the block
        then gives, in evaluation mode, the outputs it gave before. Returns the block."""
        if self.deploy:
            return self
        kernel, bias = self.fused_kernel()
        for key in self.branch_names:
            self._modules.pop(key, None)
        self.reparam = self._fused_conv()
        build_layer(self.reparam, self.build_input_shape)
        self.reparam.weight.data = kernel.astype(self.reparam.weight.dtype, copy=False)
        self.reparam.bias.data = bias.astype(self.reparam.bias.dtype, copy=False)
        self.deploy = True
        self._constructor_arguments["deploy"] = True
        return self

    def extra_repr(self) -> str:
        mode = ", deploy" if self.deploy else ""
        extra = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.in_channels} -> {self.out_channels}, {self.kernel_size}x{self.kernel_size}, " \
               f"stride={self.stride}{extra}{mode}"


class _ReparamNet(PathBlock):
    """What RepVGG and MobileOne share: a stem block ``stage0``; four stages ``stage1`` to
    ``stage4`` of widths (64, 128, 256, 512) times the width multipliers, Sequentials of the
    blocks ``stage_blocks(c_in, width, depth)`` makes; global average pooling ``gap`` and a
    dense classifier ``linear``."""

    def _build(self, num_blocks, widths, widths_name: str, stem, stage_blocks, num_classes: int) -> None:
        what = type(self).__name__
        if len(num_blocks) != 4 or len(widths) != 4:
            raise ValueError(f"{what}: num_blocks and {widths_name} need 4 entries (stages 1-4), got "
                             f"{num_blocks!r} and {widths!r}")
        if not all(w > 0 for w in widths):
            raise ValueError(f"{what}: width multipliers must be positive, got {widths!r}")
        channels = min(64, int(64 * widths[0]))
        self.stage0 = stem(channels)
        for s, (depth, base, multiplier) in enumerate(zip(num_blocks, (64, 128, 256, 512), widths), 1):
            width = int(base * multiplier)
            blocks = stage_blocks(channels, width, positive_int(depth, f"{what}: num_blocks entries"))
            setattr(self, f"stage{s}", nn.Sequential(*blocks, name=f"stage{s}"))
            channels = width
        self.gap = nn.GlobalAvgPool2D(name="gap")
        self.linear = nn.Dense(positive_int(num_classes, f"{what}: num_classes"), name="linear")

    def _path(self):
        return (self.stage0, self.stage1, self.stage2, self.stage3, self.stage4, self.gap, self.linear)

    def reparameterize(self) -> _ReparamNet:
        """Fold every block in place (deploy mode; the outputs stay equal in evaluation mode)."""
        return reparameterize(self)


def reparameterize(model: Module) -> Module:
    """Fold every :class:`ReparamBlock` of ``model`` (built) in place and record deploy mode in
    the configs of the models that take a ``deploy`` argument; returns ``model``."""
    for module in list(model.modules()):
        if isinstance(module, ReparamBlock):
            module.reparameterize()
        elif "deploy" in module.__dict__.get("_constructor_arguments", {}):
            module.deploy = True
            module._constructor_arguments["deploy"] = True
    return model


def reparameterized(model: Module) -> Module:
    """A re-parameterized copy of ``model`` in evaluation mode; ``model`` is not changed."""
    return reparameterize(copy.deepcopy(model)).eval()
