"""Swin Transformer V2's blocks (Liu et al. 2022): the log-spaced offsets fed to the bias MLP,
scaled cosine window attention with the continuous relative position bias
(:class:`ShiftedWindowAttentionV2`), the post-norm block (:class:`SwinTransformerBlockV2`) and
patch merging with the LayerNorm after the reduction (:class:`PatchMergingV2`). The formulas
are in :mod:`lamina.models.swin`; the v1 blocks these extend in :mod:`lamina.models.swin_blocks`.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc_channels
from lamina.models.swin_blocks import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock, _dense
from lamina.nn import init as initializers
from lamina.nn.layer import register_layer

__all__ = ["PatchMergingV2", "ShiftedWindowAttentionV2", "SwinTransformerBlockV2", "log_spaced_coordinates"]

CPB_HIDDEN = 512              # Swin V2: the bias MLP's hidden width,
CPB_BIAS_RANGE = 16.0         # its biases 16 sigmoid(.) in (0, 16),
INITIAL_LOGIT_SCALE = 10.0    # the cosine similarities' temperature at first
MAX_LOGIT_SCALE = 100.0       # and at most


def log_spaced_coordinates(window: tuple[int, int]) -> np.ndarray:
    """The (1, 2 M_h - 1, 2 M_w - 1, 2) inputs of Swin V2's bias MLP: every relative offset
    (dy, dx) of a window, each scaled to c = 8 d / (M - 1) in [-8, 8] and then to
    sign(c) log2(1 + |c|) / 3 (rows in the order of the v1 bias table)."""
    axes = [np.arange(-(m - 1), m) * 8.0 / (m - 1) for m in window]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)[None]
    return np.sign(offsets) * np.log2(np.abs(offsets) + 1.0) / 3.0


@register_layer
class ShiftedWindowAttentionV2(ShiftedWindowAttention):
    """Swin V2's window attention (see :mod:`lamina.models.swin`): scaled cosine similarities,
    the bias from ``cpb_mlp`` (Dense 512 '0', ReLU '1', Dense num_heads without bias '2') on
    the buffer ``relative_coords_table``, parameter ``logit_scale`` (num_heads, 1, 1); the
    key part of the ``qkv`` bias is left out. Arguments as :class:`ShiftedWindowAttention`;
    windows of at least 2 along each axis."""

    default_name = "shifted_window_attention_v2"
    torch_unchanged = ("relative_coords_table",)

    def __init__(self, dim: int, window_size=8, shift_size=0, num_heads: int = 1, qkv_bias: bool = True,
                 proj_bias: bool = True, attention_dropout: float = 0.0, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(dim, window_size, shift_size, num_heads, qkv_bias, proj_bias, attention_dropout, dropout,
                         name=name)
        if min(self.window_size) < 2:
            raise ValueError(f"ShiftedWindowAttentionV2: window_size must be at least 2 along each axis (the bias "
                             f"MLP's coordinates are offsets divided by window_size - 1), got {window_size!r}")
        self.cpb_mlp = nn.Sequential(_dense(CPB_HIDDEN, "0"), nn.ReLU(name="1"),
                                     _dense(num_heads, "2", use_bias=False), name="cpb_mlp")

    def trace(self, shape, step):
        shape = super().trace(shape, step)
        wh, ww = self.window_size
        step(self.cpb_mlp, (1, 2 * wh - 1, 2 * ww - 1, 2))
        return shape

    def build(self, input_shape) -> None:
        Block.build(self, input_shape)
        dtype = backend.get_default_dtype()
        self.register_buffer("relative_coords_table",
                             backend.xp.asarray(log_spaced_coordinates(self.window_size), dtype=dtype))
        scale = initializers.constant(math.log(INITIAL_LOGIT_SCALE))
        self.add_parameter("logit_scale", scale((self.num_heads, 1, 1), 1, 1, dtype))

    def relative_position_bias(self) -> Tensor:
        """16 sigmoid(B), B gathered from the MLP's output on the log-spaced offsets."""
        wh, ww = self.window_size
        table = F.reshape(self.cpb_mlp(self.relative_coords_table), (2 * wh - 1) * (2 * ww - 1), self.num_heads)
        return F.mul(F.sigmoid(self._gather_bias(table)), CPB_BIAS_RANGE)

    def project_qkv(self, windows) -> Tensor:
        """x W_qkv + b_qkv with the key's part of the bias taken as 0 (subtracted again, so
        that it gets no gradient either)."""
        out = self.qkv(windows)
        if not self.qkv_bias:
            return out
        key = np.zeros(3 * self.dim)
        key[self.dim:2 * self.dim] = 1.0
        bias = self.qkv._parameters["bias"]
        return F.sub(out, F.mul(bias, backend.xp.asarray(key, dtype=bias.dtype)))

    def similarities(self, q, k) -> Tensor:
        """cos(q, k) exp(min(logit_scale, log 100)), one learned temperature per head."""
        cosine = F.matmul(F.normalize(q, axis=-1), F.swapaxes(F.normalize(k, axis=-1), -1, -2))
        return F.mul(cosine, F.exp(F.clamp(self._parameters["logit_scale"], max=math.log(MAX_LOGIT_SCALE))))


@register_layer
class SwinTransformerBlockV2(SwinTransformerBlock):
    """Swin V2's post-norm block: x + drop_path(norm1(attn(x))), then + drop_path(norm2(mlp(x)))
    with :class:`ShiftedWindowAttentionV2`; sub-layers and arguments as
    :class:`SwinTransformerBlock`."""

    default_name = "swin_v2_block"
    attention_class = ShiftedWindowAttentionV2

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        step(self.stochastic_depth, step(self.norm1, step(self.attn, shape)))
        return step(self.stochastic_depth, step(self.norm2, step(self.mlp, shape)))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.stochastic_depth(self.norm1(self.attn(x))))
        return F.add(x, self.stochastic_depth(self.norm2(self.mlp(x))))


@register_layer
class PatchMergingV2(PatchMerging):
    """Swin V2's patch merging: the 2x2 cells concatenated, Dense 2C ``reduction`` without
    bias, then LayerNorm ``norm`` (of 2C features rather than 4C)."""

    default_name = "patch_merging_v2"

    def trace(self, shape, step):
        return step(self.norm, step(self.reduction, self.merged_shape(shape)))

    def forward(self, x) -> Tensor:
        return self.norm(self.reduction(self.merge_cells(x)))
