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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.nn import init as initializers
from lamina.nn.layer import pair, positive_int, register_layer

__all__ = ["SWIN_CONFIGS", "PatchMerging", "ShiftedWindowAttention", "SwinTransformerBlock", "swin",
           "swin_b", "swin_s", "swin_t"]

# variant -> (embedding width C, blocks per stage, heads per stage, stochastic-depth probability)
SWIN_CONFIGS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}
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
        n = self.window_size[0] * self.window_size[1]
        rows = F.take_rows(self._parameters["relative_position_bias_table"], self.relative_position_index)
        return F.transpose(F.reshape(rows, n, n, self.num_heads), 2, 0, 1)

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
        qkv = F.reshape(self.qkv(windows), batch, rows * cols, n, 3, heads, channels // heads)
        qkv = F.transpose(qkv, 3, 0, 1, 4, 2, 5)             # (3, batch, windows, heads, N, d)
        q, k, v = (F.getitem(qkv, i) for i in range(3))
        scores = F.matmul(F.mul(q, (channels // heads) ** -0.5), F.swapaxes(k, -1, -2))
        scores = F.add(scores, self.relative_position_bias())
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

    def __init__(self, dim: int, num_heads: int, window_size=7, shift_size=0, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        if not mlp_ratio > 0:
            raise ValueError(f"SwinTransformerBlock: mlp_ratio must be positive, got {mlp_ratio!r}")
        self.dim, self.mlp_ratio = positive_int(dim, "SwinTransformerBlock: dim"), float(mlp_ratio)
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = ShiftedWindowAttention(dim, window_size, shift_size, num_heads,
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

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        half = [None if n is None else -(-n // 2) for n in shape[1:3]]
        return step(self.reduction, step(self.norm, (shape[0], *half, 4 * self.dim)))

    def forward(self, x) -> Tensor:
        _, height, width, _ = x.shape
        nhwc_channels(self, x.shape, self.dim, "dim")
        if height % 2 or width % 2:
            x = F.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
        cells = [F.getitem(x, (slice(None), slice(row, None, 2), slice(col, None, 2)))
                 for row, col in ((0, 0), (1, 0), (0, 1), (1, 1))]
        return self.reduction(self.norm(F.concat(cells, axis=-1)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim} -> {2 * self.dim}"


def _check_config(depths, num_heads) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks = tuple(depths) if isinstance(depths, (tuple, list)) else ()
    heads = tuple(num_heads) if isinstance(num_heads, (tuple, list)) else ()
    if (not blocks or len(blocks) != len(heads)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in blocks + heads)):
        raise ValueError(f"swin: depths and num_heads must be equally long sequences of positive ints, "
                         f"got {depths!r} and {num_heads!r}")
    return blocks, heads


def swin(embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
         window_size=7, patch_size=4, mlp_ratio: float = 4.0, dropout: float = 0.0,
         attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
         input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
         name: str = "swin") -> nn.Sequential:
    """A Swin Transformer (unbuilt) in torchvision's layout: stage i has ``depths[i]`` blocks of
    ``embed_dim`` 2^i channels and ``num_heads[i]`` heads, windows of ``window_size`` (see
    the module docstring). Outputs logits unless ``classifier_activation``."""
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
            stage_blocks.append(SwinTransformerBlock(dim, stage_heads, window, shift, mlp_ratio, dropout,
                                                     attention_dropout, p, name=str(i)))
            index += 1
        features.append(nn.Sequential(*stage_blocks))
        if stage + 1 < len(blocks):
            features.append(PatchMerging(dim))
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


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float | None,
             classifier_activation: str | None) -> nn.Sequential:
    embed_dim, depths, heads, p = SWIN_CONFIGS[variant]
    return swin(embed_dim, depths, heads, 7, 4, stochastic_depth_prob=p if stochastic_depth_prob is None
                else stochastic_depth_prob, num_classes=num_classes, input_shape=input_shape,
                classifier_activation=classifier_activation, name=f"swin_{variant}")


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
