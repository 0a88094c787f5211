"""The Swin Transformer's (v1) blocks (Liu et al. 2021): the relative position index and the
shifted-window mask, window attention with its relative position bias table
(:class:`ShiftedWindowAttention`), the pre-norm block (:class:`SwinTransformerBlock`) and
patch merging (:class:`PatchMerging`). The formulas are in :mod:`lamina.models.swin`, which
builds the networks from these blocks.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc_channels
from lamina.nn import init as initializers
from lamina.nn.layer import pair, positive_int, register_layer

__all__ = ["PatchMerging", "ShiftedWindowAttention", "SwinTransformerBlock", "relative_position_index",
           "shifted_window_mask"]

LAYER_NORM_EPS = 1e-5
WEIGHT_STD = 0.02   # the Dense kernels and the bias table start N(0, 0.02^2), truncated at 2 std
MASKED_SCORE = -100.0


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
    (see :mod:`lamina.models.swin`): sub-layers ``qkv`` (Dense 3 dim) and ``proj`` (Dense dim),
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
    channels (see :mod:`lamina.models.swin`): sub-layers ``norm1``, ``attn``
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
    ``norm``, Dense 2C ``reduction`` without bias (see :mod:`lamina.models.swin`)."""

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
