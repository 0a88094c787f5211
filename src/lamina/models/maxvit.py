"""MaxViT (Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer") in torchvision's layout
and names.

Every layer of the network mixes information three ways on an NHWC map: locally by a
convolution, within blocks of P x P neighbouring pixels, and across the whole map along a
P x P grid of pixels spaced H / P (W / P) apart. Both attentions cost O(H W P^2), yet after
one layer every pixel has seen the whole image.

MBConv (``MaxVitMBConv``), pre-norm, with a shortcut that always applies:

    shortcut = x, or 1x1 conv (with bias) of x, after a 3x3/2 average pool when s = 2
    branch   = BatchNorm - 1x1 conv to 4 C_out - BN - GELU - 3x3 depthwise conv, stride s -
               BN - GELU - squeeze-and-excitation (C_out / 4, SiLU) - 1x1 conv to C_out (bias)
    out      = shortcut + drop_path(branch)

Partitioned attention (``PartitionAttention``), of type 'window' or 'grid':

    window: the map cut into (H / P)(W / P) blocks of P x P pixels, each a sequence of P^2 tokens
    grid:   the tokens x[a (H / P) + i, b (W / P) + j] for a, b < P make sequence (i, j): P^2
            tokens spread over the whole map
    x = x + drop_path(attention(LayerNorm(x)));  x = x + drop_path(mlp(LayerNorm(x)))

with ``mlp`` = Dense 4C - GELU - Dense C. The attention (``RelativePositionalMultiHeadAttention``)
of heads of ``head_dim`` features adds the relative position bias of Swin v1 (a learned table
of (2P - 1)^2 rows by heads, read through the (P^2, P^2) ``relative_position_index``):

    Q, K, V = x W_qkv + b ('to_qkv');  A = softmax(Q (K / sqrt(C))^T + B) V;  out = A W + b ('merge')

(the keys are scaled by the width C of the layer, not of a head, as torchvision does). The
network: ``stem`` (3x3/2 conv - BN - GELU, 3x3 conv with bias), four ``blocks`` of layers
(MBConv, window attention, grid attention; the first layer of each block halves the map),
``classifier`` (global average pool, flatten, LayerNorm, Dense C - tanh - Dense classes without
bias). BatchNorms use eps 1e-3 and PyTorch's momentum 0.99, LayerNorms eps 1e-5; layer l of
the L layers drops its branches with probability p l / (L - 1). Every block's map must be a
multiple of P: 224 x 224 gives 56, 28, 14, 7 for P = 7. maxvit_t: stem 64, blocks (64, 128,
256, 512) of (2, 2, 5, 2) layers, head_dim 32, P 7, p 0.2: 30,919,624 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc, nhwc_channels
from lamina.models.squeeze_excitation import SqueezeExcitation, conv_norm_activation
from lamina.models.swin import relative_position_index
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, positive_int, register_layer

__all__ = ["MAXVIT_T", "MaxVitLayer", "MaxVitMBConv", "PartitionAttention", "RelativePositionalMultiHeadAttention",
           "maxvit", "maxvit_t", "maxvit_grid_sizes"]

# maxvit_t: stem channels, block channels, layers per block, head_dim, partition size, stochastic depth
MAXVIT_T = (64, (64, 128, 256, 512), (2, 2, 5, 2), 32, 7, 0.2)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01      # PyTorch's momentum 0.99 in lamina's convention
LAYER_NORM_EPS = 1e-5
WEIGHT_STD = 0.02
PARTITION_TYPES = ("window", "grid")


def _dense(units: int, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(units, use_bias=use_bias, kernel_init=initializers.normal(WEIGHT_STD), name=name)


def _conv(filters: int, kernel_size: int, name: str) -> nn.Conv2D:
    return nn.Conv2D(filters, kernel_size, padding=(kernel_size - 1) // 2,
                     kernel_init=initializers.normal(WEIGHT_STD), name=name)


def _halved(size: int) -> int:
    """The side of a map after a 3x3 convolution or pooling of stride 2 and padding 1."""
    return (size - 1) // 2 + 1


def maxvit_grid_sizes(height: int, width: int, blocks: int) -> list[tuple[int, int]]:
    """The (height, width) of the map each block's layers work on, for an input of (height,
    width): halved by the stem and again by the first layer of every block."""
    height, width = _halved(height), _halved(width)
    sizes = []
    for _ in range(blocks):
        height, width = _halved(height), _halved(width)
        sizes.append((height, width))
    return sizes


@register_layer
class MaxVitMBConv(Block):
    """MaxViT's inverted bottleneck (see the module docstring): sub-layers ``proj`` (only when
    the stride is 2 or the width changes: AvgPool2D '0' and Conv2D '1' with stride 2, Conv2D
    '0' otherwise), ``layers`` ('pre_norm', 'conv_a', 'conv_b', 'squeeze_excitation',
    'conv_c') and ``stochastic_depth``. ``eps`` and ``momentum``: the BatchNorms' (lamina's
    convention)."""

    default_name = "mbconv"

    def __init__(self, in_channels: int, out_channels: int, expansion_ratio: float = 4.0,
                 squeeze_ratio: float = 0.25, stride: int = 1, stochastic_depth_prob: float = 0.0,
                 eps: float = BN_EPS, momentum: float = BN_MOMENTUM, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "MaxVitMBConv: in_channels")
        self.out_channels = positive_int(out_channels, "MaxVitMBConv: out_channels")
        if stride not in (1, 2):
            raise ValueError(f"MaxVitMBConv: stride must be 1 or 2, got {stride!r}")
        if not expansion_ratio > 0 or not squeeze_ratio > 0:
            raise ValueError(f"MaxVitMBConv: expansion_ratio and squeeze_ratio must be positive, got "
                             f"{expansion_ratio!r} and {squeeze_ratio!r}")
        self.stride, self.expansion_ratio, self.squeeze_ratio = stride, float(expansion_ratio), float(squeeze_ratio)
        self.eps, self.momentum = float(eps), float(momentum)
        mid = int(out_channels * expansion_ratio)
        squeezed = max(1, int(out_channels * squeeze_ratio))
        norm = {"eps": self.eps, "momentum": self.momentum}
        self.has_projection = stride != 1 or in_channels != out_channels
        if self.has_projection:
            proj = [nn.AvgPool2D(3, stride=2, padding=1)] if stride == 2 else []
            proj.append(nn.Conv2D(out_channels, 1, kernel_init=initializers.normal(WEIGHT_STD)))
            for i, layer in enumerate(proj):
                layer.name = str(i)
            self.proj = nn.Sequential(*proj, name="proj")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")
        self.layers = nn.Sequential(
            nn.BatchNorm(name="pre_norm", **norm),
            conv_norm_activation(mid, 1, activation="gelu", name="conv_a", **norm),
            conv_norm_activation(mid, 3, stride=stride, groups=mid, activation="gelu", name="conv_b", **norm),
            SqueezeExcitation(mid, squeezed, activation="silu", name="squeeze_excitation"),
            _conv(out_channels, 1, "conv_c"),
            name="layers",
        )

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        if self.has_projection:
            step(self.proj, shape)
        return step(self.stochastic_depth, step(self.layers, shape))

    def forward(self, x) -> Tensor:
        shortcut = self.proj(x) if self.has_projection else x
        return F.add(shortcut, self.stochastic_depth(self.layers(x)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "expansion_ratio": self.expansion_ratio, "squeeze_ratio": self.squeeze_ratio,
                "stride": self.stride, "stochastic_depth_prob": self.stochastic_depth.p, "eps": self.eps,
                "momentum": self.momentum, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, p={self.stochastic_depth.p:.3g}"


@register_layer
class RelativePositionalMultiHeadAttention(Block):
    """Self-attention within each of the G sequences of P^2 tokens of a (batch, G, P^2,
    ``feat_dim``) input, heads of ``head_dim`` features, with a learned relative position bias
    (see the module docstring): sub-layers ``to_qkv`` and ``merge``, parameter
    ``relative_position_bias_table`` ((2P - 1)^2, heads), buffer ``relative_position_index``
    (P^2, P^2); P is ``partition_size``."""

    default_name = "relative_attention"

    def __init__(self, feat_dim: int, head_dim: int, partition_size: int, name: str | None = None):
        super().__init__(name=name)
        self.feat_dim = positive_int(feat_dim, "RelativePositionalMultiHeadAttention: feat_dim")
        self.head_dim = positive_int(head_dim, "RelativePositionalMultiHeadAttention: head_dim")
        self.partition_size = positive_int(partition_size, "RelativePositionalMultiHeadAttention: partition_size")
        if feat_dim % head_dim:
            raise ValueError(f"RelativePositionalMultiHeadAttention: feat_dim {feat_dim} is not divisible by "
                             f"head_dim {head_dim}")
        self.num_heads = feat_dim // head_dim
        self.to_qkv = _dense(3 * feat_dim, "to_qkv")
        self.merge = _dense(feat_dim, "merge")
        n = partition_size ** 2
        index = relative_position_index((partition_size, partition_size)).reshape(n, n)
        self.register_buffer("relative_position_index", backend.xp.asarray(index))

    def _checked(self, shape) -> tuple:
        shape = check_shape_ndim(self, shape, 4, f"(batch, sequences, {self.partition_size ** 2} tokens, "
                                                 f"{self.feat_dim} features)")
        if (shape[2] not in (None, self.partition_size ** 2)) or shape[3] not in (None, self.feat_dim):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected sequences of "
                             f"{self.partition_size ** 2} tokens (partition_size={self.partition_size}) of "
                             f"{self.feat_dim} features (feat_dim={self.feat_dim})")
        return shape

    def trace(self, shape, step):
        shape = self._checked(shape)
        step(self.to_qkv, shape)
        return step(self.merge, shape)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        rows = (2 * self.partition_size - 1) ** 2
        table = initializers.truncated_normal(WEIGHT_STD)((rows, self.num_heads), rows, self.num_heads,
                                                          backend.get_default_dtype())
        self.add_parameter("relative_position_bias_table", table)

    def relative_position_bias(self) -> Tensor:
        """B of every head, (num_heads, P^2, P^2), gathered from the table."""
        n = self.partition_size ** 2
        rows = F.take_rows(self._parameters["relative_position_bias_table"],
                           self.relative_position_index.reshape(-1))
        return F.transpose(F.reshape(rows, n, n, self.num_heads), 2, 0, 1)

    def forward(self, x) -> Tensor:
        batch, groups, tokens, _ = self._checked(x.shape)
        heads, d = self.num_heads, self.head_dim
        qkv = F.reshape(self.to_qkv(x), batch, groups, tokens, 3, heads, d)
        q, k, v = (F.getitem(qkv, (slice(None), slice(None), slice(None), i)) for i in range(3))
        q, k, v = (F.transpose(t, 0, 1, 3, 2, 4) for t in (q, k, v))    # (batch, groups, heads, P^2, d)
        scores = F.matmul(q, F.swapaxes(F.mul(k, self.feat_dim ** -0.5), -1, -2))
        weights = F.softmax(F.add(scores, self.relative_position_bias()), axis=-1)
        out = F.reshape(F.transpose(F.matmul(weights, v), 0, 1, 3, 2, 4), batch, groups, tokens, self.feat_dim)
        return self.merge(out)

    def macs(self, input_shapes, output_shapes) -> int:
        """Q K^T and A V: 2 P^2 C per token (the projections are their own rows)."""
        groups, tokens, channels = input_shapes[0]
        return 2 * groups * tokens * tokens * channels

    def get_config(self) -> dict:
        return {"feat_dim": self.feat_dim, "head_dim": self.head_dim, "partition_size": self.partition_size,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.feat_dim}, heads={self.num_heads}, partition={self.partition_size}"


@register_layer
class PartitionAttention(Block):
    """Attention and an MLP, each a pre-norm residual branch, within the 'window' blocks or
    along the 'grid' (``partition_type``) of P x P tokens of an NHWC map of ``in_channels``
    channels (see the module docstring), as torchvision's ``PartitionAttentionLayer``:
    sub-layers ``attn_layer`` (LayerNorm '0', :class:`RelativePositionalMultiHeadAttention`
    '1', Dropout '2'), ``mlp_layer`` (LayerNorm '0', Dense '1', GELU '2', Dense '3', Dropout
    '4') and ``stochastic_dropout``. The map's sides must be multiples of P."""

    default_name = "partition_attention"

    def __init__(self, in_channels: int, head_dim: int, partition_size: int, partition_type: str = "window",
                 mlp_ratio: int = 4, attention_dropout: float = 0.0, mlp_dropout: float = 0.0,
                 stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        if partition_type not in PARTITION_TYPES:
            raise ValueError(f"PartitionAttention: partition_type must be one of {PARTITION_TYPES}, "
                             f"got {partition_type!r}")
        self.in_channels = positive_int(in_channels, "PartitionAttention: in_channels")
        self.mlp_ratio = positive_int(mlp_ratio, "PartitionAttention: mlp_ratio")
        self.partition_type = partition_type
        attention = RelativePositionalMultiHeadAttention(in_channels, head_dim, partition_size, name="1")
        self.head_dim, self.partition_size = attention.head_dim, attention.partition_size
        self.attn_layer = nn.Sequential(nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="0"), attention,
                                        nn.Dropout(attention_dropout, name="2"), name="attn_layer")
        self.mlp_layer = nn.Sequential(nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="0"),
                                       _dense(in_channels * mlp_ratio, "1"), nn.GELU(name="2"),
                                       _dense(in_channels, "3"), nn.Dropout(mlp_dropout, name="4"), name="mlp_layer")
        self.stochastic_dropout = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_dropout")

    def _partitioned_shape(self, shape) -> tuple:
        shape = nhwc_channels(self, shape, self.in_channels)
        p = self.partition_size
        if any(n is not None and n % p for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got a map of shape {tuple(shape)}; its height and width must be "
                             f"multiples of partition_size={p}")
        groups = None if None in shape[1:3] else shape[1] * shape[2] // (p * p)
        return (shape[0], groups, p * p, shape[3])

    def trace(self, shape, step):
        tokens = self._partitioned_shape(shape)
        step(self.stochastic_dropout, step(self.attn_layer, tokens))
        step(self.stochastic_dropout, step(self.mlp_layer, tokens))
        return nhwc(self, shape)

    def partition(self, x) -> Tensor:
        """(batch, H, W, C) -> (batch, G, P^2, C): the window blocks or the grid's sequences."""
        batch, height, width, channels = x.shape
        p = self.partition_size
        if self.partition_type == "window":
            x = F.transpose(F.reshape(x, batch, height // p, p, width // p, p, channels), 0, 1, 3, 2, 4, 5)
        else:
            x = F.transpose(F.reshape(x, batch, p, height // p, p, width // p, channels), 0, 2, 4, 1, 3, 5)
        return F.reshape(x, batch, height * width // (p * p), p * p, channels)

    def departition(self, x, height: int, width: int) -> Tensor:
        """The inverse of :meth:`partition` for a map of (height, width)."""
        batch, channels, p = x.shape[0], x.shape[-1], self.partition_size
        if self.partition_type == "window":
            x = F.reshape(x, batch, height // p, width // p, p, p, channels)
            x = F.transpose(x, 0, 1, 3, 2, 4, 5)
        else:
            x = F.reshape(x, batch, height // p, width // p, p, p, channels)
            x = F.transpose(x, 0, 3, 1, 4, 2, 5)
        return F.reshape(x, batch, height, width, channels)

    def forward(self, x) -> Tensor:
        self._partitioned_shape(x.shape)
        height, width = x.shape[1:3]
        x = self.partition(x)
        x = F.add(x, self.stochastic_dropout(self.attn_layer(x)))
        x = F.add(x, self.stochastic_dropout(self.mlp_layer(x)))
        return self.departition(x, height, width)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "head_dim": self.head_dim, "partition_size": self.partition_size,
                "partition_type": self.partition_type, "mlp_ratio": self.mlp_ratio,
                "attention_dropout": self.attn_layer["2"].rate, "mlp_dropout": self.mlp_layer["4"].rate,
                "stochastic_depth_prob": self.stochastic_dropout.p, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.partition_type}, {self.in_channels}, partition={self.partition_size}"


@register_layer
class MaxVitLayer(Block):
    """One MaxViT layer: sub-layer ``layers``, a Sequential of :class:`MaxVitMBConv` 'MBconv'
    (with ``stride``) and :class:`PartitionAttention` 'window_attention' and
    'grid_attention' on its ``out_channels`` outputs, all with ``stochastic_depth_prob``."""

    default_name = "maxvit_layer"

    def __init__(self, in_channels: int, out_channels: int, head_dim: int, partition_size: int, stride: int = 1,
                 expansion_ratio: float = 4.0, squeeze_ratio: float = 0.25, mlp_ratio: int = 4,
                 mlp_dropout: float = 0.0, attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        attention = {"head_dim": head_dim, "partition_size": partition_size, "mlp_ratio": mlp_ratio,
                     "attention_dropout": attention_dropout, "mlp_dropout": mlp_dropout,
                     "stochastic_depth_prob": stochastic_depth_prob}
        self.layers = nn.Sequential(
            MaxVitMBConv(in_channels, out_channels, expansion_ratio, squeeze_ratio, stride, stochastic_depth_prob,
                         name="MBconv"),
            PartitionAttention(out_channels, partition_type="window", name="window_attention", **attention),
            PartitionAttention(out_channels, partition_type="grid", name="grid_attention", **attention),
            name="layers",
        )

    def trace(self, shape, step):
        return step(self.layers, shape)

    def forward(self, x) -> Tensor:
        return self.layers(x)

    def get_config(self) -> dict:
        mbconv, window = self.layers["MBconv"], self.layers["window_attention"]
        return {"in_channels": mbconv.in_channels, "out_channels": mbconv.out_channels,
                "head_dim": window.head_dim, "partition_size": window.partition_size, "stride": mbconv.stride,
                "expansion_ratio": mbconv.expansion_ratio, "squeeze_ratio": mbconv.squeeze_ratio,
                "mlp_ratio": window.mlp_ratio, "mlp_dropout": window.mlp_layer["4"].rate,
                "attention_dropout": window.attn_layer["2"].rate,
                "stochastic_depth_prob": window.stochastic_dropout.p, "name": self.name}


def _check_sizes(name: str, input_shape, blocks: int, partition_size: int) -> None:
    sizes = maxvit_grid_sizes(input_shape[0], input_shape[1], blocks)
    for i, (height, width) in enumerate(sizes):
        if height % partition_size or width % partition_size:
            raise ValueError(f"{name}: an input of {input_shape[0]}x{input_shape[1]} gives block {i} a map of "
                             f"{height}x{width}, not a multiple of partition_size={partition_size} (the maps of "
                             f"the blocks: {sizes}); choose another input size or partition size")


def maxvit(stem_channels: int = 64, block_channels: Sequence[int] = (64, 128, 256, 512),
           block_layers: Sequence[int] = (2, 2, 5, 2), head_dim: int = 32, partition_size: int = 7,
           stochastic_depth_prob: float = 0.2, expansion_ratio: float = 4.0, squeeze_ratio: float = 0.25,
           mlp_ratio: int = 4, mlp_dropout: float = 0.0, attention_dropout: float = 0.0, num_classes: int = 1000,
           input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
           name: str = "maxvit") -> nn.Sequential:
    """A MaxViT (unbuilt) in torchvision's layout (see the module docstring): block i has
    ``block_layers[i]`` layers of ``block_channels[i]`` channels, attention heads of
    ``head_dim`` features in blocks and grids of ``partition_size``. Outputs logits unless
    ``classifier_activation``."""
    widths = tuple(block_channels) if isinstance(block_channels, (tuple, list)) else ()
    depths = tuple(block_layers) if isinstance(block_layers, (tuple, list)) else ()
    if (not widths or len(widths) != len(depths)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in widths + depths)):
        raise ValueError(f"{name}: block_channels and block_layers must be equally long sequences of positive ints, "
                         f"got {block_channels!r} and {block_layers!r}")
    positive_int(stem_channels, f"{name}: stem_channels")
    positive_int(head_dim, f"{name}: head_dim")
    positive_int(partition_size, f"{name}: partition_size")
    if any(w % head_dim for w in widths):
        raise ValueError(f"{name}: the block widths {widths} must be multiples of head_dim {head_dim}")
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
    input_shape = check_input(input_shape, name)
    _check_sizes(name, input_shape, len(widths), partition_size)
    stem = nn.Sequential(
        conv_norm_activation(stem_channels, 3, stride=2, activation="gelu", eps=BN_EPS, momentum=BN_MOMENTUM, name="0"),
        nn.Sequential(_conv(stem_channels, 3, "0"), name="1"),
        name="stem",
    )
    probabilities = np.linspace(0.0, stochastic_depth_prob, sum(depths)).tolist()
    blocks, index, in_channels = [], 0, stem_channels
    for i, (width, count) in enumerate(zip(widths, depths)):
        layers = []
        for j in range(count):
            layers.append(MaxVitLayer(in_channels if j == 0 else width, width, head_dim, partition_size,
                                      2 if j == 0 else 1, expansion_ratio, squeeze_ratio, mlp_ratio, mlp_dropout,
                                      attention_dropout, probabilities[index], name=str(j)))
            index += 1
        blocks.append(nn.Sequential(nn.Sequential(*layers, name="layers"), name=str(i)))
        in_channels = width
    model = nn.Sequential(
        stem,
        nn.Sequential(*blocks, name="blocks"),
        nn.Sequential(nn.GlobalAvgPool2D(name="0"), nn.Flatten(name="1"),
                      nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="2"), _dense(widths[-1], "3"), nn.Tanh(name="4"),
                      _dense(num_classes, "5", use_bias=False), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def maxvit_t(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """MaxViT-T: stem 64, blocks (64, 128, 256, 512) of (2, 2, 5, 2) layers, head_dim 32,
    partition 7, p = 0.2; 30,919,624 parameters with 1000 classes (about 5.56 G multiply-adds
    at 224x224). The input's sides must give block maps that are multiples of 7 (224, 448, ...)."""
    stem, widths, depths, head_dim, partition, p = MAXVIT_T
    return maxvit(stem, widths, depths, head_dim, partition, p if stochastic_depth_prob is None
                  else stochastic_depth_prob, num_classes=num_classes, input_shape=input_shape,
                  classifier_activation=classifier_activation, name="maxvit_t")
