"""The Gated CNN block of MambaOut (Yu and Wang 2024, "MambaOut: Do We Really Need Mamba for
Vision?"): a Mamba block without its state-space model, the ablation of Vision Mamba's SSM for
image classification. On NHWC maps x (N, H, W, C), with E = int(expansion_ratio C) hidden
channels, the last ``conv_channels`` of them (int(conv_ratio C)) through a depthwise conv:

    [g, i, c] = fc1(LN(x))                              (E, E - conv_channels, conv_channels)
    y = x + drop_path(fc2(gelu(g) [i, dwconv_k(c)]))    (k x k depthwise, 'same' padding, bias)

Sub-layer names follow the reference code (``norm``, ``fc1``, ``conv``, ``fc2``); the norm is
a LayerNorm of epsilon 1e-6 over the channels.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc_channels
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import as_tensor

__all__ = ["GatedCNNBlock"]


@register_with_arguments
class GatedCNNBlock(Block):
    """MambaOut's Gated CNN block on (N, H, W, ``dim``) maps (formulas in the module docstring):
    ``expansion_ratio`` (8/3 in MambaOut) sets the hidden channels E, ``conv_ratio`` the share
    of ``dim`` convolved (``kernel_size`` x kernel_size, depthwise), ``drop_path`` the
    stochastic depth rate of the branch."""

    default_name = "gated_cnn_block"

    def __init__(self, dim: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7, conv_ratio: float = 1.0,
                 drop_path: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "GatedCNNBlock: dim")
        self.hidden = positive_int(int(expansion_ratio * dim), "GatedCNNBlock: int(expansion_ratio * dim)")
        self.conv_channels = positive_int(int(conv_ratio * dim), "GatedCNNBlock: int(conv_ratio * dim)")
        if self.conv_channels > self.hidden:
            raise ValueError(f"GatedCNNBlock: int(conv_ratio * dim) = {self.conv_channels} must not exceed the "
                             f"hidden channels int(expansion_ratio * dim) = {self.hidden}")
        self.kernel_size = positive_int(kernel_size, "GatedCNNBlock: kernel_size")
        self.norm = nn.LayerNorm(-1, eps=1e-6, name="norm")
        self.fc1 = nn.Dense(2 * self.hidden, name="fc1")
        self.conv = nn.DepthwiseConv2D(self.kernel_size, padding="same", name="conv")
        self.fc2 = nn.Dense(self.dim, name="fc2")
        self.drop_path = nn.StochasticDepth(drop_path, "row", name="drop_path")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        step(self.fc1, step(self.norm, shape))
        step(self.conv, shape[:3] + (self.conv_channels,))
        return step(self.drop_path, step(self.fc2, shape[:3] + (self.hidden,)))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise input_error(self, x, f"NHWC maps (batch, height, width, {self.dim})")
        projected = self.fc1(self.norm(x))
        e, split = self.hidden, 2 * self.hidden - self.conv_channels
        gate, identity, conv = projected[..., :e], projected[..., e:split], projected[..., split:]
        mixed = F.concat([identity, self.conv(conv)], axis=-1) if split > e else self.conv(conv)
        return F.add(x, self.drop_path(self.fc2(F.mul(F.gelu(gate), mixed))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, conv_channels={self.conv_channels}, kernel={self.kernel_size}"
