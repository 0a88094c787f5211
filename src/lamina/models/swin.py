"""The Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows") in torchvision's layout and names.

A vision transformer that keeps a pyramid of feature maps, as a CNN does, and attends only
inside non-overlapping M x M windows, so that its cost grows linearly with the image area.
In NHWC the maps are already token grids (the channels last), so no permutes are needed.

Window attention on an (H, W, C) map with h heads of d = C / h features:

    pad the map (bottom, right, zeros) to multiples of M; in a shifted block, roll it by
    (-s, -s) (s = M / 2) so that the new windows straddle the old ones' borders
    cut it into windows of N = M^2 tokens; Q, K, V = x W_qkv + b_qkv ('qkv')
    A = softmax(Q K^T / sqrt(d) + B + mask) V  per head, B[i, j] = T[index(i, j)]
    out = A W_proj + b_proj ('proj'), windows put back, the roll undone, the padding cropped

B is the relative position bias: a learned table T of (2M - 1)^2 rows (one per relative
offset (dy, dx) of two tokens of a window), one column per head
(``relative_position_bias_table``), read through the fixed index of every token pair
(buffer ``relative_position_index``: (dy + M - 1)(2M - 1) + dx + M - 1). The mask stops
tokens that the roll brought together from distant parts of the map from attending to each
other: -100 is added to the scores of pairs from different regions. On an axis the padded
map spans in one window the shift is skipped, as torchvision does.

The block (``SwinTransformerBlock``), pre-norm with stochastic depth on both branches:

    x = x + drop_path(attn(norm1(x)));   x = x + drop_path(mlp(norm2(x)))

with ``mlp`` = Dense 4C ('0') - GELU - Dense C ('3'). Patch merging halves the map: the four
pixels of every 2x2 cell concatenated (4C channels, in the order (0, 0), (1, 0), (0, 1),
(1, 1) as (row, column)), LayerNorm ('norm') and a Dense 2C without bias ('reduction').

The network: features.0 the 4x4/4 patch embedding (conv '0', LayerNorm '2'); stages of
blocks (features.1, 3, 5, 7) with C, 2C, 4C, 8C channels, consecutive blocks alternating
unshifted and shifted windows, joined by patch merging (features.2, 4, 6); LayerNorm
('norm'), global average pooling, ``head``. LayerNorms use eps 1e-5; block l of the L blocks
drops its branches with probability p l / (L - 1). Configurations (C, blocks per stage,
heads per stage, p; window 7) and parameters with 1000 classes: T 96, (2, 2, 6, 2), (3, 6,
12, 24), 0.2: 28,288,354; S 96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3: 49,606,258; B 128,
(2, 2, 18, 2), (4, 8, 16, 32), 0.5: 87,768,224.

Swin Transformer V2 (Liu et al. 2022, "Swin Transformer V2: Scaling Up Capacity and
Resolution") keeps the network and changes three things so that large models train stably
and windows can grow after training:

* scaled cosine attention (``ShiftedWindowAttentionV2``): the scores are cosines of each
  query and key, multiplied by a learned temperature per head, whatever the features' size:

      scores = cos(q_i, k_j) exp(min(tau_h, log 100)) + B[i, j]     (tau: ``logit_scale``, log 10 at first)

  and the key has no bias (the middle third of the ``qkv`` bias is not used);
* a continuous relative position bias: B comes from a 2-layer MLP (``cpb_mlp``: Dense 512 -
  ReLU - Dense heads, no bias) applied to every offset (dy, dx) of the window, each scaled to
  c = 8 d / (M - 1) and log-spaced as sign(c) log2(1 + |c|) / 3 (buffer
  ``relative_coords_table``), then bounded: B = 16 sigmoid(MLP(offset)), gathered by the same
  index as v1's table;
* post-norm residual blocks (``SwinTransformerBlockV2``), and patch merging with the
  LayerNorm after the reduction (``PatchMergingV2``, 2C features):

      x = x + drop_path(norm1(attn(x)));   x = x + drop_path(norm2(mlp(x)))

torchvision's V2 models use windows of 8 at 256x256; parameters with 1000 classes: V2-T
28,351,570; V2-S 49,737,442; V2-B 87,930,848 (the v1 configurations otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.nn import init as initializers
from lamina.nn.layer import pair, positive_int, register_layer

__all__ = ["SWIN_CONFIGS", "PatchMerging", "PatchMergingV2", "ShiftedWindowAttention", "ShiftedWindowAttentionV2",
           "SwinTransformerBlock", "SwinTransformerBlockV2", "swin", "swin_b", "swin_s", "swin_t", "swin_v2",
           "swin_v2_b", "swin_v2_s", "swin_v2_t"]

# variant -> (embedding width C, blocks per stage, heads per stage, stochastic-depth probability)
SWIN_CONFIGS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}
LAYER_NORM_EPS = 1e-5
WEIGHT_STD = 0.02   # the Dense kernels and the bias table start N(0, 0.02^2), truncated at 2 std
MASKED_SCORE = -100.0
CPB_HIDDEN = 512              # Swin V2: the bias MLP's hidden width,
CPB_BIAS_RANGE = 16.0         # its biases 16 sigmoid(.) in (0, 16),
INITIAL_LOGIT_SCALE = 10.0    # the cosine similarities' temperature at first
MAX_LOGIT_SCALE = 100.0       # and at most


def _dense(units: int, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(units, use_bias=use_bias, kernel_init=initializers.truncated_normal(WEIGHT_STD), name=name)


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """For the N = M_h M_w tokens of a window, the (N N,) row of the bias table of every pair
    (i, j): (dy + M_h - 1)(2 M_w - 1) + dx + M_w - 1, (dy, dx) the offset of i from j."""
    wh, ww = window
    rows, cols = np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    dy = rows[:, None] - rows[None, :] + wh - 1
    dx = cols[:, None] - cols[None, :] + ww - 1
    return (dy * (2 * ww - 1) + dx).reshape(-1).astype(np.int64)


def shifted_window_mask(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> np.ndarray:
    """The additive mask (windows, N, N) of a padded (height, width) map rolled by ``shift``:
    0 between tokens of the same region, -100 between tokens of different regions (regions
    split at -M and -s from the bottom and right edges along each axis, as torchvision's)."""
    region = np.zeros((height, width))
    (wh, ww), (sh, sw) = window, shift
    count = 0
    for top, bottom in ((0, -wh), (-wh, -sh), (-sh, None)):
        for left, right in ((0, -ww), (-ww, -sw), (-sw, None)):
            region[top:bottom, left:right] = count
            count += 1
    region = region.reshape(height // wh, wh, width // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    differs = region[:, None, :] != region[:, :, None]
    return np.where(differs, MASKED_SCORE, 0.0)


def _padded(size: int, window: int) -> int:
    return -(-size // window) * window


@register_layer
class ShiftedWindowAttention(Block):
    """Multi-head self-attention inside (shifted) windows of an NHWC map of ``dim`` channels
    (see the module docstring): sub-layers ``qkv`` (Dense 3 dim) and ``proj`` (Dense dim),
    parameter ``relative_position_bias_table`` ((2 M_h - 1)(2 M_w - 1), num_heads), buffer
    ``relative_position_index``. ``window_size`` and ``shift_size``: ints or (rows, cols)."""

    default_name = "shifted_window_attention"

    def __init__(self, dim: int, window_size=7, shift_size=0, num_heads: int = 1, qkv_bias: bool = True,
                 proj_bias: bool = True, attention_dropout: float = 0.0, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ShiftedWindowAttention: dim")
        self.num_heads = positive_int(num_heads, "ShiftedWindowAttention: num_heads")
        if dim % num_heads:
            raise ValueError(f"ShiftedWindowAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = pair(window_size, "ShiftedWindowAttention: window_size")
        self.shift_size = pair(shift_size, "ShiftedWindowAttention: shift_size")
        if min(self.window_size) < 1 or any(not 0 <= s < w for s, w in zip(self.shift_size, self.window_size)):
            raise ValueError(f"ShiftedWindowAttention: window_size must be positive and 0 <= shift_size < "
                             f"window_size, got window_size={window_size!r}, shift_size={shift_size!r}")
        self.qkv_bias, self.proj_bias = bool(qkv_bias), bool(proj_bias)
        self.qkv = _dense(3 * dim, "qkv", self.qkv_bias)
        self.proj = _dense(dim, "proj", self.proj_bias)
        self.attention_dropout = nn.Dropout(attention_dropout, name="attention_dropout")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.register_buffer("relative_position_index",
                             backend.xp.asarray(relative_position_index(self.window_size)))
        self._masks: dict[tuple, np.ndarray] = {}

    def _geometry(self, height: int, width: int) -> tuple[int, int, tuple[int, int]]:
        """The padded map's height and width and the shift used on it (0 along an axis the
        padded map spans in one window)."""
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        ph, pw = _padded(height, wh), _padded(width, ww)
        return ph, pw, (0 if wh >= ph else sh, 0 if ww >= pw else sw)

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        windowed = (shape[0], None, self.window_size[0] * self.window_size[1], self.dim)
        step(self.attention_dropout, step(self.qkv, windowed))
        step(self.dropout, step(self.proj, windowed))
        return shape

    def build(self, input_shape) -> None:
        super().build(input_shape)
        wh, ww = self.window_size
        rows = (2 * wh - 1) * (2 * ww - 1)
        table = initializers.truncated_normal(WEIGHT_STD)((rows, self.num_heads), rows, self.num_heads,
                                                          backend.get_default_dtype())
        self.add_parameter("relative_position_bias_table", table)

    def relative_position_bias(self) -> Tensor:
        """B of every head, (num_heads, N, N), gathered from the table."""
        return self._gather_bias(self._parameters["relative_position_bias_table"])

    def _gather_bias(self, table) -> Tensor:
        """The (num_heads, N, N) biases of the token pairs from a table of one row per offset."""
        n = self.window_size[0] * self.window_size[1]
        rows = F.take_rows(table, self.relative_position_index)
        return F.transpose(F.reshape(rows, n, n, self.num_heads), 2, 0, 1)

    def project_qkv(self, windows) -> Tensor:
        """Q, K and V of every token side by side, (..., 3 dim): the ``qkv`` layer."""
        return self.qkv(windows)

    def similarities(self, q, k) -> Tensor:
        """The attention scores before the bias and the mask: Q K^T / sqrt(d)."""
        return F.matmul(F.mul(q, q.shape[-1] ** -0.5), F.swapaxes(k, -1, -2))

    def _mask(self, height: int, width: int, shift: tuple[int, int], dtype) -> np.ndarray:
        key = (height, width, shift, np.dtype(dtype).str)
        if key not in self._masks:
            mask = shifted_window_mask(height, width, self.window_size, shift)
            self._masks[key] = backend.xp.asarray(mask[:, None].astype(dtype))  # (windows, 1, N, N)
        return self._masks[key]

    def forward(self, x) -> Tensor:
        batch, height, width, channels = x.shape
        nhwc_channels(self, x.shape, self.dim, "dim")
        (wh, ww), heads = self.window_size, self.num_heads
        ph, pw, shift = self._geometry(height, width)
        if (ph, pw) != (height, width):
            x = F.pad(x, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)))
        if any(shift):
            x = F.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
        rows, cols, n = ph // wh, pw // ww, wh * ww
        windows = F.reshape(F.transpose(F.reshape(x, batch, rows, wh, cols, ww, channels), 0, 1, 3, 2, 4, 5),
                            batch, rows * cols, n, channels)
        qkv = F.reshape(self.project_qkv(windows), batch, rows * cols, n, 3, heads, channels // heads)
        qkv = F.transpose(qkv, 3, 0, 1, 4, 2, 5)             # (3, batch, windows, heads, N, d)
        q, k, v = (F.getitem(qkv, i) for i in range(3))
        scores = F.add(self.similarities(q, k), self.relative_position_bias())
        if any(shift):
            scores = F.add(scores, self._mask(ph, pw, shift, scores.dtype))
        weights = self.attention_dropout(F.softmax(scores, axis=-1))
        out = F.reshape(F.transpose(F.matmul(weights, v), 0, 1, 3, 2, 4), batch, rows * cols, n, channels)
        out = self.dropout(self.proj(out))
        out = F.reshape(F.transpose(F.reshape(out, batch, rows, cols, wh, ww, channels), 0, 1, 3, 2, 4, 5),
                        batch, ph, pw, channels)
        if any(shift):
            out = F.roll(out, shift, axis=(1, 2))
        if (ph, pw) != (height, width):
            out = F.getitem(out, (slice(None), slice(0, height), slice(0, width)))
        return out

    def macs(self, input_shapes, output_shapes) -> int:
        """The scores Q K^T and the context A V: 2 N C per token of the padded map (the
        projections are the ``qkv`` and ``proj`` rows)."""
        height, width, channels = input_shapes[0]
        ph, pw, _ = self._geometry(height, width)
        return 2 * ph * pw * self.window_size[0] * self.window_size[1] * channels

    def get_config(self) -> dict:
        return {"dim": self.dim, "window_size": list(self.window_size), "shift_size": list(self.shift_size),
                "num_heads": self.num_heads, "qkv_bias": self.qkv_bias, "proj_bias": self.proj_bias,
                "attention_dropout": self.attention_dropout.rate, "dropout": self.dropout.rate, "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.dim}, heads={self.num_heads}, window={self.window_size}, shift={self.shift_size}")


@register_layer
class SwinTransformerBlock(Block):
    """x + drop_path(attn(norm1(x))), then + drop_path(mlp(norm2(x))) on an NHWC map of ``dim``
    channels (see the module docstring): sub-layers ``norm1``, ``attn``
    (:class:`ShiftedWindowAttention`), ``stochastic_depth``, ``norm2``, ``mlp`` (Dense
    ``mlp_ratio`` dim '0', GELU '1', dropout '2', Dense dim '3', dropout '4')."""

    default_name = "swin_block"
    attention_class: type[ShiftedWindowAttention] = ShiftedWindowAttention

    def __init__(self, dim: int, num_heads: int, window_size=7, shift_size=0, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        if not mlp_ratio > 0:
            raise ValueError(f"SwinTransformerBlock: mlp_ratio must be positive, got {mlp_ratio!r}")
        self.dim, self.mlp_ratio = positive_int(dim, "SwinTransformerBlock: dim"), float(mlp_ratio)
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = self.attention_class(dim, window_size, shift_size, num_heads,
                                         attention_dropout=attention_dropout, dropout=dropout, name="attn")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = nn.Sequential(_dense(int(dim * mlp_ratio), "0"), nn.GELU(name="1"), nn.Dropout(dropout, name="2"),
                                 _dense(dim, "3"), nn.Dropout(dropout, name="4"), name="mlp")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        step(self.stochastic_depth, step(self.attn, step(self.norm1, shape)))
        return step(self.stochastic_depth, step(self.mlp, step(self.norm2, shape)))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.stochastic_depth(self.attn(self.norm1(x))))
        return F.add(x, self.stochastic_depth(self.mlp(self.norm2(x))))

    def get_config(self) -> dict:
        attn = self.attn
        return {"dim": self.dim, "num_heads": attn.num_heads, "window_size": list(attn.window_size),
                "shift_size": list(attn.shift_size), "mlp_ratio": self.mlp_ratio, "dropout": attn.dropout.rate,
                "attention_dropout": attn.attention_dropout.rate,
                "stochastic_depth_prob": self.stochastic_depth.p, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, shift={self.attn.shift_size}, p={self.stochastic_depth.p:.3g}"


@register_layer
class PatchMerging(Block):
    """An (H, W, C) map to (ceil(H / 2), ceil(W / 2), 2C): each 2x2 cell's four pixels
    concatenated (the map zero-padded at the bottom and right to even sides), LayerNorm
    ``norm``, Dense 2C ``reduction`` without bias (see the module docstring)."""

    default_name = "patch_merging"

    def __init__(self, dim: int, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "PatchMerging: dim")
        self.reduction = _dense(2 * dim, "reduction", use_bias=False)
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")

    def merged_shape(self, shape) -> tuple:
        """The shape of the concatenated 2x2 cells of an input of ``shape``."""
        shape = nhwc_channels(self, shape, self.dim, "dim")
        half = [None if n is None else -(-n // 2) for n in shape[1:3]]
        return (shape[0], *half, 4 * self.dim)

    def merge_cells(self, x) -> Tensor:
        """The four pixels of every 2x2 cell side by side, (N, ceil(H / 2), ceil(W / 2), 4C)."""
        _, height, width, _ = x.shape
        nhwc_channels(self, x.shape, self.dim, "dim")
        if height % 2 or width % 2:
            x = F.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
        cells = [F.getitem(x, (slice(None), slice(row, None, 2), slice(col, None, 2)))
                 for row, col in ((0, 0), (1, 0), (0, 1), (1, 1))]
        return F.concat(cells, axis=-1)

    def trace(self, shape, step):
        return step(self.reduction, step(self.norm, self.merged_shape(shape)))

    def forward(self, x) -> Tensor:
        return self.reduction(self.norm(self.merge_cells(x)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim} -> {2 * self.dim}"


def log_spaced_coordinates(window: tuple[int, int]) -> np.ndarray:
    """The (1, 2 M_h - 1, 2 M_w - 1, 2) inputs of Swin V2's bias MLP: every relative offset
    (dy, dx) of a window, each scaled to c = 8 d / (M - 1) in [-8, 8] and then to
    sign(c) log2(1 + |c|) / 3 (rows in the order of the v1 bias table)."""
    axes = [np.arange(-(m - 1), m) * 8.0 / (m - 1) for m in window]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)[None]
    return np.sign(offsets) * np.log2(np.abs(offsets) + 1.0) / 3.0


@register_layer
class ShiftedWindowAttentionV2(ShiftedWindowAttention):
    """Swin V2's window attention (see the module docstring): scaled cosine similarities,
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


def _check_config(depths, num_heads) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks = tuple(depths) if isinstance(depths, (tuple, list)) else ()
    heads = tuple(num_heads) if isinstance(num_heads, (tuple, list)) else ()
    if (not blocks or len(blocks) != len(heads)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in blocks + heads)):
        raise ValueError(f"swin: depths and num_heads must be equally long sequences of positive ints, "
                         f"got {depths!r} and {num_heads!r}")
    return blocks, heads


def _swin_network(name: str, embed_dim: int, depths, num_heads, window_size, patch_size, mlp_ratio: float,
                  dropout: float, attention_dropout: float, stochastic_depth_prob: float, num_classes: int,
                  input_shape, classifier_activation: str | None, block: type[SwinTransformerBlock],
                  merging: type[PatchMerging]) -> nn.Sequential:
    """The network both versions share (see the module docstring), with their ``block`` and
    ``merging`` layers."""
    blocks, heads = _check_config(depths, num_heads)
    positive_int(embed_dim, f"{name}: embed_dim")
    if any(embed_dim * 2 ** i % h for i, h in enumerate(heads)):
        raise ValueError(f"{name}: the stage widths {[embed_dim * 2 ** i for i in range(len(heads))]} must be "
                         f"divisible by num_heads {heads}")
    window = pair(window_size, f"{name}: window_size")
    patch = pair(patch_size, f"{name}: patch_size")
    if min(window + patch) < 1:
        raise ValueError(f"{name}: window_size and patch_size must be positive, got {window_size!r}, {patch_size!r}")
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
    input_shape = check_input(input_shape, name)
    features: list = [nn.Sequential(nn.Conv2D(embed_dim, patch, stride=patch, name="0"),
                                    nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="2"))]
    total, index = sum(blocks), 0
    for stage, (count, stage_heads) in enumerate(zip(blocks, heads)):
        dim, stage_blocks = embed_dim * 2 ** stage, []
        for i in range(count):
            shift = (0, 0) if i % 2 == 0 else (window[0] // 2, window[1] // 2)
            p = stochastic_depth_prob * index / max(total - 1, 1)
            stage_blocks.append(block(dim, stage_heads, window, shift, mlp_ratio, dropout, attention_dropout, p,
                                      name=str(i)))
            index += 1
        features.append(nn.Sequential(*stage_blocks))
        if stage + 1 < len(blocks):
            features.append(merging(dim))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm"),
        nn.GlobalAvgPool2D(name="avgpool"),
        _dense(num_classes, "head"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def swin(embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
         window_size=7, patch_size=4, mlp_ratio: float = 4.0, dropout: float = 0.0,
         attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
         input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
         name: str = "swin") -> nn.Sequential:
    """A Swin Transformer (unbuilt) in torchvision's layout: stage i has ``depths[i]`` blocks of
    ``embed_dim`` 2^i channels and ``num_heads[i]`` heads, windows of ``window_size`` (see
    the module docstring). Outputs logits unless ``classifier_activation``."""
    return _swin_network(name, embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio, dropout,
                         attention_dropout, stochastic_depth_prob, num_classes, input_shape, classifier_activation,
                         SwinTransformerBlock, PatchMerging)


def swin_v2(embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size=8, patch_size=4, mlp_ratio: float = 4.0, dropout: float = 0.0,
            attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
            input_shape: tuple[int, int, int] = (256, 256, 3), classifier_activation: str | None = None,
            name: str = "swin_v2") -> nn.Sequential:
    """A Swin Transformer V2 (unbuilt) in torchvision's layout: :func:`swin` with
    :class:`SwinTransformerBlockV2` and :class:`PatchMergingV2` (see the module docstring);
    windows of at least 2."""
    return _swin_network(name, embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio, dropout,
                         attention_dropout, stochastic_depth_prob, num_classes, input_shape, classifier_activation,
                         SwinTransformerBlockV2, PatchMergingV2)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float | None,
             classifier_activation: str | None, version: int = 1) -> nn.Sequential:
    embed_dim, depths, heads, p = SWIN_CONFIGS[variant]
    builder, window, name = (swin, 7, f"swin_{variant}") if version == 1 else (swin_v2, 8, f"swin_v2_{variant}")
    return builder(embed_dim, depths, heads, window, 4, stochastic_depth_prob=p if stochastic_depth_prob is None
                   else stochastic_depth_prob, num_classes=num_classes, input_shape=input_shape,
                   classifier_activation=classifier_activation, name=name)


def swin_t(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-T: C 96, blocks (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, p = 0.2; 28,288,354
    parameters with 1000 classes (about 4.49 G multiply-adds at 224x224)."""
    return _variant("t", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-S: C 96, blocks (2, 2, 18, 2), heads (3, 6, 12, 24), window 7, p = 0.3; 49,606,258
    parameters (about 8.74 G multiply-adds)."""
    return _variant("s", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_b(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-B: C 128, blocks (2, 2, 18, 2), heads (4, 8, 16, 32), window 7, p = 0.5;
    87,768,224 parameters (about 15.43 G multiply-adds)."""
    return _variant("b", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_v2_t(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-T: C 96, blocks (2, 2, 6, 2), heads (3, 6, 12, 24), window 8, p = 0.2;
    28,351,570 parameters with 1000 classes (about 5.94 G multiply-adds at 256x256)."""
    return _variant("t", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)


def swin_v2_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-S: C 96, blocks (2, 2, 18, 2), heads (3, 6, 12, 24), window 8, p = 0.3;
    49,737,442 parameters (about 11.55 G multiply-adds at 256x256)."""
    return _variant("s", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)


def swin_v2_b(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-B: C 128, blocks (2, 2, 18, 2), heads (4, 8, 16, 32), window 8, p = 0.5;
    87,930,848 parameters (about 20.32 G multiply-adds at 256x256)."""
    return _variant("b", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)
