"""CoAtNet (Dai et al. 2021, "CoAtNet: Marrying Convolution and Attention for All Data Sizes").

Five stages on an NHWC image, each halving the map: S0, a stem of two 3x3 convolutions (the
first of stride 2); S1 and S2, MBConv blocks (:class:`lamina.models.MaxVitMBConv`: pre-norm,
expansion 4, squeeze-excitation 0.25, the first block of a stage of stride 2 with an average
pooled, projected shortcut); S3 and S4, transformer blocks (:class:`CoAtNetTransformerBlock`)
whose attention sees the whole map with a relative bias:

    A = softmax(q_i . k_j / sqrt(d) + w[h, i - j]),  out_i = sum_j A_ij v_j

(:class:`CoAtNetRelativeAttention`: ``w`` a learned table of (2H - 1)(2W - 1) rows by heads,
one row per 2-D offset between tokens). A transformer block is pre-norm; the first of a stage
downsamples with a 3x3/2 max pool, on the shortcut followed by a 1x1 projection:

    x = proj(pool(x)) + attention(pool(LayerNorm(x)))   (first block; x + attention(LN(x)) else)
    x = x + ffn(LayerNorm(x)),  ffn = Dense 4C - GELU - Dense C

The head: global average pool, LayerNorm, Dense classes. ``coatnet_0``: stem 64, stages
(96, 192, 384, 768) of (2, 3, 5, 2) blocks, heads of 32 features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc, nhwc_channels
from lamina.models.maxvit import MaxVitMBConv
from lamina.models.squeeze_excitation import conv_norm_activation
from lamina.models.swin import relative_position_index
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["COATNET_0", "CoAtNet", "CoAtNetRelativeAttention", "CoAtNetTransformerBlock", "coatnet_0",
           "coatnet_tiny"]

# coatnet_0: stem channels, stage channels (S1..S4), blocks per stage, head_dim
COATNET_0 = (64, (96, 192, 384, 768), (2, 3, 5, 2), 32)
WEIGHT_STD = 0.02
LAYER_NORM_EPS = 1e-5


def _halved(size: int) -> int:
    """The side of a map after a 3x3 convolution or pooling of stride 2 and padding 1."""
    return (size - 1) // 2 + 1


def _dense(units: int, name: str) -> nn.Dense:
    return nn.Dense(units, kernel_init=initializers.normal(WEIGHT_STD), name=name)


def _grid(value, what: str) -> tuple[int, int]:
    grid = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(grid) != 2:
        raise ValueError(f"{what} must be an int or (height, width), got {value!r}")
    return positive_int(grid[0], what), positive_int(grid[1], what)


@register_with_arguments
class CoAtNetRelativeAttention(Block):
    """Multi-head self-attention over all H W tokens of an NHWC map of ``grid_size`` (H, W)
    with a learned relative bias per head (module docstring): sub-layers ``qkv`` (Dense
    3 ``out_channels`` on ``in_channels``) and ``proj`` (Dense ``out_channels``), parameter
    ``relative_position_bias_table`` ((2H - 1)(2W - 1), heads), heads of ``head_dim``."""

    default_name = "relative_attention"

    def __init__(self, in_channels: int, out_channels: int, grid_size, head_dim: int = 32,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "CoAtNetRelativeAttention: in_channels")
        self.out_channels = positive_int(out_channels, "CoAtNetRelativeAttention: out_channels")
        self.head_dim = positive_int(head_dim, "CoAtNetRelativeAttention: head_dim")
        self.grid_size = _grid(grid_size, "CoAtNetRelativeAttention: grid_size")
        if out_channels % head_dim:
            raise ValueError(f"CoAtNetRelativeAttention: out_channels {out_channels} is not divisible by "
                             f"head_dim {head_dim}")
        self.num_heads = out_channels // head_dim
        self.qkv = _dense(3 * out_channels, "qkv")
        self.proj = _dense(out_channels, "proj")
        self.register_buffer("relative_position_index", backend.xp.asarray(relative_position_index(self.grid_size)))

    def _checked(self, shape) -> tuple:
        shape = nhwc_channels(self, shape, self.in_channels)
        if any(n is not None and n != g for n, g in zip(shape[1:3], self.grid_size)):
            raise ShapeError(f"{self._label()}: got a map of shape {tuple(shape)}; expected a map of "
                             f"{self.grid_size[0]}x{self.grid_size[1]} (grid_size={self.grid_size})")
        return shape

    def trace(self, shape, step):
        shape = self._checked(shape)
        step(self.qkv, shape)
        return step(self.proj, (*shape[:3], self.out_channels))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        height, width = self.grid_size
        rows = (2 * height - 1) * (2 * width - 1)
        table = initializers.truncated_normal(WEIGHT_STD)((rows, self.num_heads), rows, self.num_heads,
                                                          backend.get_default_dtype())
        self.add_parameter("relative_position_bias_table", table)

    def relative_position_bias(self) -> Tensor:
        """w[h, i - j] for every head and pair of tokens: (heads, H W, H W)."""
        n = self.grid_size[0] * self.grid_size[1]
        rows = F.take_rows(self._parameters["relative_position_bias_table"], self.relative_position_index)
        return F.transpose(F.reshape(rows, n, n, self.num_heads), 2, 0, 1)

    def forward(self, x) -> Tensor:
        batch, height, width, _ = self._checked(x.shape)
        n, heads, d = height * width, self.num_heads, self.head_dim
        qkv = F.transpose(F.reshape(self.qkv(x), batch, n, 3, heads, d), 2, 0, 3, 1, 4)  # (3, batch, heads, n, d)
        q, k, v = (F.getitem(qkv, i) for i in range(3))
        scores = F.matmul(F.mul(q, d ** -0.5), F.swapaxes(k, -1, -2))
        weights = F.softmax(F.add(scores, self.relative_position_bias()), axis=-1)
        out = F.reshape(F.transpose(F.matmul(weights, v), 0, 2, 1, 3), batch, height, width, self.out_channels)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, heads={self.num_heads}, grid={self.grid_size}"


@register_with_arguments
class CoAtNetTransformerBlock(Block):
    """A pre-norm transformer block of CoAtNet on an NHWC map (module docstring): sub-layers
    ``norm1``, ``attention`` (:class:`CoAtNetRelativeAttention` on the output map of
    ``grid_size``), ``norm2``, ``mlp`` (Dense 'fc1', GELU 'act', Dense 'fc2'), and when
    ``downsample`` ``pool`` (3x3/2 max pool) and ``shortcut_proj`` (1x1 conv to
    ``out_channels``); ``stochastic_depth`` drops both branches with ``stochastic_depth_prob``."""

    default_name = "transformer_block"

    def __init__(self, in_channels: int, out_channels: int, grid_size, head_dim: int = 32, downsample: bool = False,
                 mlp_ratio: int = 4, stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "CoAtNetTransformerBlock: in_channels")
        self.out_channels = positive_int(out_channels, "CoAtNetTransformerBlock: out_channels")
        self.downsample = bool(downsample)
        if not self.downsample and in_channels != out_channels:
            raise ValueError(f"CoAtNetTransformerBlock: a block that does not downsample keeps its width, got "
                             f"in_channels={in_channels} and out_channels={out_channels}")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        if self.downsample:
            self.pool = nn.MaxPool2D(3, stride=2, padding=1, name="pool")
            self.shortcut_proj = nn.Conv2D(out_channels, 1, kernel_init=initializers.normal(WEIGHT_STD),
                                           name="shortcut_proj")
        self.attention = CoAtNetRelativeAttention(in_channels, out_channels, grid_size, head_dim, name="attention")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = nn.Sequential(_dense(out_channels * positive_int(mlp_ratio, "CoAtNetTransformerBlock: mlp_ratio"),
                                        "fc1"),
                                 nn.GELU(name="act"), _dense(out_channels, "fc2"), name="mlp")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        normed = step(self.norm1, shape)
        if self.downsample:
            normed = step(self.pool, normed)
            shortcut = step(self.shortcut_proj, step(self.pool, shape))
        else:
            shortcut = shape
        out = step(self.stochastic_depth, step(self.attention, normed))
        if None not in shortcut[1:] and tuple(out[1:]) != tuple(shortcut[1:]):
            raise ShapeError(f"{self._label()}: the attention gives {tuple(out)} and the shortcut {tuple(shortcut)}")
        step(self.mlp, step(self.norm2, out))
        return nhwc(self, out)

    def forward(self, x) -> Tensor:
        normed = self.norm1(x)
        if self.downsample:
            normed, x = self.pool(normed), self.shortcut_proj(self.pool(x))
        x = F.add(x, self.stochastic_depth(self.attention(normed)))
        return F.add(x, self.stochastic_depth(self.mlp(self.norm2(x))))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, downsample={self.downsample}"


@register_with_arguments
class CoAtNet(Block):
    """CoAtNet (module docstring) for square ``image_size`` inputs of ``in_channels`` channels:
    sub-layers ``stem`` (S0), ``stages`` (S1..S4: ``depths[i]`` blocks of ``channels[i]``; the
    first two stages MBConv, the rest transformer blocks), ``head`` (global average pool
    '0', LayerNorm '1', Dense ``num_classes`` '2'). Block b of the B blocks drops its branches
    with probability ``stochastic_depth_prob`` b / (B - 1). Outputs logits."""

    default_name = "coatnet"

    def __init__(self, num_classes: int = 1000, image_size: int = 224, stem_channels: int = 64,
                 channels: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (2, 3, 5, 2),
                 head_dim: int = 32, conv_stages: int = 2, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        channels, depths = tuple(channels), tuple(depths)
        if not channels or len(channels) != len(depths) or not all(isinstance(v, int) and v > 0
                                                                   for v in channels + depths):
            raise ValueError(f"CoAtNet: channels and depths must be equally long sequences of positive ints, got "
                             f"{channels!r} and {depths!r}")
        if not 0 <= conv_stages <= len(channels):
            raise ValueError(f"CoAtNet: conv_stages must be in [0, {len(channels)}], got {conv_stages!r}")
        if not 0 <= stochastic_depth_prob < 1:
            raise ValueError(f"CoAtNet: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
        self.image_size = positive_int(image_size, "CoAtNet: image_size")
        self.num_classes = positive_int(num_classes, "CoAtNet: num_classes")
        self.stem = nn.Sequential(
            conv_norm_activation(stem_channels, 3, stride=2, activation="gelu", name="0"),
            nn.Conv2D(stem_channels, 3, padding=1, kernel_init=initializers.normal(WEIGHT_STD), name="1"),
            name="stem",
        )
        probabilities = np.linspace(0.0, stochastic_depth_prob, sum(depths)).tolist()
        size, width, index, stages = _halved(self.image_size), stem_channels, 0, []
        for s, (out, depth) in enumerate(zip(channels, depths)):
            size = _halved(size)
            blocks = []
            for b in range(depth):
                in_channels, p = width if b == 0 else out, probabilities[index]
                if s < conv_stages:
                    blocks.append(MaxVitMBConv(in_channels, out, stride=2 if b == 0 else 1,
                                               stochastic_depth_prob=p, name=str(b)))
                else:
                    blocks.append(CoAtNetTransformerBlock(in_channels, out, size, head_dim, downsample=b == 0,
                                                          stochastic_depth_prob=p, name=str(b)))
                index += 1
            stages.append(nn.Sequential(*blocks, name=str(s)))
            width = out
        self.stages = nn.Sequential(*stages, name="stages")
        self.head = nn.Sequential(nn.GlobalAvgPool2D(name="0"), nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="1"),
                                  nn.Dense(self.num_classes, name="2"), name="head")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        if any(n is not None and n != self.image_size for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected "
                             f"{self.image_size}x{self.image_size} images (image_size={self.image_size})")
        for layer in (self.stem, self.stages, self.head):
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        return self.head(self.stages(self.stem(x)))


def coatnet_0(num_classes: int = 1000, image_size: int = 224, stochastic_depth_prob: float = 0.2) -> CoAtNet:
    """CoAtNet-0: stem 64, stages (96, 192, 384, 768) of (2, 3, 5, 2) blocks, heads of 32."""
    stem, channels, depths, head_dim = COATNET_0
    return CoAtNet(num_classes, image_size, stem, channels, depths, head_dim,
                   stochastic_depth_prob=stochastic_depth_prob, name="coatnet_0")


def coatnet_tiny(num_classes: int = 10, image_size: int = 32) -> CoAtNet:
    """A tiny CoAtNet for small images and tests: stem 8, stages (8, 16, 16, 16) of one block,
    heads of 8 features."""
    return CoAtNet(num_classes, image_size, 8, (8, 16, 16, 16), (1, 1, 1, 1), 8, name="coatnet_tiny")
