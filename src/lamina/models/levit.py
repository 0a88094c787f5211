"""LeViT (Graham et al. 2021, "LeViT: a Vision Transformer in ConvNet's Clothing for Faster
Inference").

A convolutional stem of four 3x3 convolutions of stride 2 (each followed by BatchNorm,
Hardswish between them) turns an NHWC image into a map 16 times smaller, whose H W pixels
become tokens (batch, H W, C). Stages of residual blocks follow; every linear map is a
:class:`LinearNorm` (Dense without bias, then BatchNorm over the features), which folds into
one Dense layer at inference (:meth:`LinearNorm.folded`). A block:

    x = x + attention(x),   x = x + mlp(x),   mlp = LinearNorm 2C - Hardswish - LinearNorm C

Attention (:class:`LeViTAttention`) of h heads, keys of ``key_dim`` features, values of
``attn_ratio`` ``key_dim``, adds a learned bias per head and per offset (|dx|, |dy|) between
tokens, in place of position embeddings:

    A = softmax(q_i . k_j / sqrt(key_dim) + b[h, |y_i - y_j| W + |x_i - x_j|])
    out = LinearNorm(Hardswish(A V))

Between stages a shrinking attention (:class:`LeViTAttentionSubsample`) takes its queries from
every ``stride``-th token of each row and column only (keys and values from all tokens), so the
map halves and the width grows; a residual MLP follows. The head averages the tokens and
applies BatchNorm + Dense; a second such head is trained on a teacher's decisions
(distillation): in evaluation mode the model returns the average of the two heads' logits, in
training mode the pair. ``levit_128s``: widths (128, 256, 384), heads (4, 6, 8), depths
(2, 3, 4), keys of 16 features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.squeeze_excitation import conv_norm_activation
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import check_shape_ndim, positive_int

__all__ = ["LEVIT_128S", "LeViT", "LeViTAttention", "LeViTAttentionSubsample", "LeViTBlock", "LeViTDownsample",
           "LinearNorm", "levit_128s", "levit_attention_bias_index", "levit_tiny"]

# levit_128s: widths, heads, depths, key_dim
LEVIT_128S = ((128, 256, 384), (4, 6, 8), (2, 3, 4), 16)


def _grid(value, what: str) -> tuple[int, int]:
    grid = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(grid) != 2:
        raise ValueError(f"{what} must be an int or (height, width), got {value!r}")
    return positive_int(grid[0], what), positive_int(grid[1], what)


def _halved(size: int) -> int:
    """The side of a map after a 3x3 convolution of stride 2 and padding 1 (or a subsampling by 2)."""
    return (size - 1) // 2 + 1


def levit_attention_bias_index(resolution: tuple[int, int], stride: int = 1) -> np.ndarray:
    """For the queries at every ``stride``-th row and column of a (H, W) map and all H W keys,
    the (queries, H W) column of the bias table of each pair: |dy| W + |dx|."""
    height, width = resolution
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    query_rows, query_cols = np.meshgrid(np.arange(0, height, stride), np.arange(0, width, stride), indexing="ij")
    query_rows, query_cols = query_rows.reshape(-1), query_cols.reshape(-1)
    dy = np.abs(query_rows[:, None] - rows[None, :])
    dx = np.abs(query_cols[:, None] - cols[None, :])
    return (dy * width + dx).astype(np.int64)


def _tokens(layer, shape, tokens: int, channels: int) -> tuple:
    shape = check_shape_ndim(layer, shape, 3, f"(batch, {tokens} tokens, {channels} features)")
    if shape[1] not in (None, tokens) or shape[2] not in (None, channels):
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(shape)}; expected {tokens} tokens (the "
                         f"map it was made for) of {channels} features")
    return shape


@register_with_arguments
class LinearNorm(Block):
    """Dense without bias, then BatchNorm over the features (sub-layers ``linear``, ``norm``):
    LeViT's Linear + BatchNorm1d on (batch, tokens, in_features) or (batch, in_features)."""

    default_name = "linear_norm"

    def __init__(self, in_features: int, out_features: int, name: str | None = None):
        super().__init__(name=name)
        self.in_features = positive_int(in_features, "LinearNorm: in_features")
        self.out_features = positive_int(out_features, "LinearNorm: out_features")
        self.linear = nn.Dense(out_features, use_bias=False, name="linear")
        self.norm = nn.BatchNorm(name="norm")

    def trace(self, shape, step):
        if shape[-1] not in (None, self.in_features):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected {self.in_features} "
                             f"features (in_features={self.in_features})")
        return step(self.norm, step(self.linear, shape))

    def forward(self, x) -> Tensor:
        return self.norm(self.linear(x))

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(W', b') with x W' + b' equal to the layer in evaluation mode: with s = gamma /
        sqrt(running_var + eps), W' = W s (per column) and b' = beta - running_mean s."""
        norm = self.norm
        scale = backend.to_numpy(norm.weight.data) / np.sqrt(backend.to_numpy(norm.running_var) + norm.eps)
        weight = backend.to_numpy(self.linear.weight.data) * scale
        return weight, backend.to_numpy(norm.bias.data) - backend.to_numpy(norm.running_mean) * scale


class _BiasedAttention(Block):
    """Shared by LeViT's attentions: the bias table ``attention_biases`` (heads, H W) and its
    gather through the buffer ``attention_bias_idxs`` (queries, H W)."""

    def _setup_biases(self, resolution, stride: int) -> None:
        self.resolution = _grid(resolution, f"{type(self).__name__}: resolution")
        self.num_tokens = self.resolution[0] * self.resolution[1]
        index = levit_attention_bias_index(self.resolution, stride)
        self.num_queries = index.shape[0]
        self.register_buffer("attention_bias_idxs", backend.xp.asarray(index))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_parameter("attention_biases",
                           backend.xp.zeros((self.num_heads, self.num_tokens), dtype=backend.get_default_dtype()))

    def attention_bias(self) -> Tensor:
        """b[h, offset(i, j)] for every head, query i and key j: (heads, queries, H W)."""
        table = F.transpose(self._parameters["attention_biases"], 1, 0)      # (H W, heads)
        rows = F.take_rows(table, self.attention_bias_idxs.reshape(-1))
        return F.transpose(F.reshape(rows, self.num_queries, self.num_tokens, self.num_heads), 2, 0, 1)

    def attend(self, q, k, v) -> Tensor:
        """softmax(q k^T / sqrt(key_dim) + b) v for (batch, heads, tokens, features) q, k, v,
        heads concatenated: (batch, queries, heads value_dim)."""
        scores = F.matmul(F.mul(q, self.key_dim ** -0.5), F.swapaxes(k, -1, -2))
        out = F.matmul(F.softmax(F.add(scores, self.attention_bias()), axis=-1), v)
        return F.reshape(F.transpose(out, 0, 2, 1, 3), out.shape[0], self.num_queries, self.num_heads * self.value_dim)


@register_with_arguments
class LeViTAttention(_BiasedAttention):
    """LeViT's attention on (batch, H W, ``dim``) tokens of a map of ``resolution`` (module
    docstring): sub-layers ``qkv`` (:class:`LinearNorm` to heads (2 key_dim + value_dim)),
    ``act`` (Hardswish), ``proj`` (:class:`LinearNorm` to ``dim``); value_dim = ``attn_ratio``
    ``key_dim``."""

    default_name = "attention"

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "LeViTAttention: dim")
        self.key_dim = positive_int(key_dim, "LeViTAttention: key_dim")
        self.num_heads = positive_int(num_heads, "LeViTAttention: num_heads")
        self.value_dim = positive_int(int(attn_ratio * key_dim), "LeViTAttention: attn_ratio * key_dim")
        self._setup_biases(resolution, 1)
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.value_dim), name="qkv")
        self.act = nn.HardSwish(name="act")
        self.proj = LinearNorm(num_heads * self.value_dim, dim, name="proj")

    def trace(self, shape, step):
        shape = _tokens(self, shape, self.num_tokens, self.dim)
        step(self.qkv, shape)
        return step(self.proj, step(self.act, (shape[0], shape[1], self.num_heads * self.value_dim)))

    def forward(self, x) -> Tensor:
        batch, tokens, _ = _tokens(self, x.shape, self.num_tokens, self.dim)
        per_head = 2 * self.key_dim + self.value_dim
        qkv = F.transpose(F.reshape(self.qkv(x), batch, tokens, self.num_heads, per_head), 0, 2, 1, 3)
        k_end = 2 * self.key_dim
        q, k, v = (F.getitem(qkv, (Ellipsis, slice(a, b)))
                   for a, b in ((0, self.key_dim), (self.key_dim, k_end), (k_end, None)))
        return self.proj(self.act(self.attend(q, k, v)))


@register_with_arguments
class LeViTAttentionSubsample(_BiasedAttention):
    """LeViT's shrinking attention from (batch, H W, ``in_dim``) tokens of a map of
    ``resolution`` to (batch, H' W', ``out_dim``), H' = ceil(H / ``stride``) (module docstring):
    sub-layers ``kv`` (:class:`LinearNorm` to heads (key_dim + value_dim), from all tokens),
    ``q`` (:class:`LinearNorm` to heads key_dim, from every ``stride``-th token of each row
    and column), ``act`` (Hardswish), ``proj`` (:class:`LinearNorm` to ``out_dim``)."""

    default_name = "attention_subsample"

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution,
                 stride: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.in_dim = positive_int(in_dim, "LeViTAttentionSubsample: in_dim")
        self.out_dim = positive_int(out_dim, "LeViTAttentionSubsample: out_dim")
        self.key_dim = positive_int(key_dim, "LeViTAttentionSubsample: key_dim")
        self.num_heads = positive_int(num_heads, "LeViTAttentionSubsample: num_heads")
        self.stride = positive_int(stride, "LeViTAttentionSubsample: stride")
        self.value_dim = positive_int(int(attn_ratio * key_dim), "LeViTAttentionSubsample: attn_ratio * key_dim")
        self._setup_biases(resolution, self.stride)
        self.kv = LinearNorm(in_dim, num_heads * (key_dim + self.value_dim), name="kv")
        self.q = LinearNorm(in_dim, num_heads * key_dim, name="q")
        self.act = nn.HardSwish(name="act")
        self.proj = LinearNorm(num_heads * self.value_dim, out_dim, name="proj")

    def trace(self, shape, step):
        shape = _tokens(self, shape, self.num_tokens, self.in_dim)
        step(self.kv, shape)
        step(self.q, (shape[0], self.num_queries, self.in_dim))
        return step(self.proj, step(self.act, (shape[0], self.num_queries, self.num_heads * self.value_dim)))

    def subsample(self, x) -> Tensor:
        """The tokens at every ``stride``-th row and column of the map: (batch, queries, C)."""
        height, width = self.resolution
        grid = F.reshape(x, x.shape[0], height, width, x.shape[-1])
        grid = F.getitem(grid, (slice(None), slice(None, None, self.stride), slice(None, None, self.stride)))
        return F.reshape(grid, x.shape[0], self.num_queries, x.shape[-1])

    def forward(self, x) -> Tensor:
        batch, tokens, _ = _tokens(self, x.shape, self.num_tokens, self.in_dim)
        per_head = self.key_dim + self.value_dim
        kv = F.transpose(F.reshape(self.kv(x), batch, tokens, self.num_heads, per_head), 0, 2, 1, 3)
        k = F.getitem(kv, (Ellipsis, slice(0, self.key_dim)))
        v = F.getitem(kv, (Ellipsis, slice(self.key_dim, None)))
        q = F.reshape(self.q(self.subsample(x)), batch, self.num_queries, self.num_heads, self.key_dim)
        return self.proj(self.act(self.attend(F.transpose(q, 0, 2, 1, 3), k, v)))


def _mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = positive_int(int(dim * ratio), "LeViT: dim * mlp_ratio")
    return nn.Sequential(LinearNorm(dim, hidden, name="0"), nn.HardSwish(name="1"), LinearNorm(hidden, dim, name="2"),
                         name="mlp")


@register_with_arguments
class LeViTBlock(Block):
    """x + attention(x), then x + mlp(x) (module docstring): sub-layers ``attention``
    (:class:`LeViTAttention`), ``mlp`` (LinearNorm '0', Hardswish '1', LinearNorm '2') and
    ``stochastic_depth`` (both branches, ``stochastic_depth_prob``)."""

    default_name = "levit_block"

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution, attn_ratio: float = 2.0,
                 mlp_ratio: float = 2.0, stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.attention = LeViTAttention(dim, key_dim, num_heads, attn_ratio, resolution, name="attention")
        self.mlp = _mlp(dim, mlp_ratio)
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")

    def trace(self, shape, step):
        shape = step(self.stochastic_depth, step(self.attention, shape))
        return step(self.stochastic_depth, step(self.mlp, shape))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.stochastic_depth(self.attention(x)))
        return F.add(x, self.stochastic_depth(self.mlp(x)))


@register_with_arguments
class LeViTDownsample(Block):
    """The step between two stages: :class:`LeViTAttentionSubsample` ``attention`` (no
    residual: the map and the width change), then x + mlp(x) (``mlp`` as :class:`LeViTBlock`'s)."""

    default_name = "levit_downsample"

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, resolution, attn_ratio: float = 4.0,
                 mlp_ratio: float = 2.0, stride: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.attention = LeViTAttentionSubsample(in_dim, out_dim, key_dim, num_heads, attn_ratio, resolution, stride,
                                                 name="attention")
        self.mlp = _mlp(out_dim, mlp_ratio)

    def trace(self, shape, step):
        return step(self.mlp, step(self.attention, shape))

    def forward(self, x) -> Tensor:
        x = self.attention(x)
        return F.add(x, self.mlp(x))


def _stem(channels: int) -> nn.Sequential:
    widths = (channels // 8, channels // 4, channels // 2, channels)
    return nn.Sequential(*(conv_norm_activation(positive_int(width, "LeViT: embed_dims[0] / 8"), 3, stride=2,
                                                activation="hard_swish" if i < 3 else None, name=str(i))
                           for i, width in enumerate(widths)), name="stem")


def _norm_linear(in_features: int, classes: int, name: str) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm(name="norm"), nn.Dense(classes, name="linear"), name=name)


@register_with_arguments
class LeViT(Block):
    """LeViT (module docstring) for square ``image_size`` NHWC images: sub-layers ``stem``
    (conv-BN-Hardswish '0'..'2' and conv-BN '3' of embed_dims[0] / 8, / 4, / 2, 1 channels),
    ``stages`` (stage i: for i > 0 a :class:`LeViTDownsample` 'down' with heads embed_dims[i - 1] / ``key_dim``, then
    ``depths[i]`` :class:`LeViTBlock` of ``num_heads[i]`` heads), ``head`` and, when
    ``distilled``, ``head_dist`` (BatchNorm 'norm', Dense 'linear' on the mean token)."""

    default_name = "levit"

    def __init__(self, num_classes: int = 1000, image_size: int = 224, embed_dims: Sequence[int] = (128, 256, 384),
                 num_heads: Sequence[int] = (4, 6, 8), depths: Sequence[int] = (2, 3, 4), key_dim: int = 16,
                 attn_ratio: float = 2.0, mlp_ratio: float = 2.0, down_attn_ratio: float = 4.0,
                 down_mlp_ratio: float = 2.0, distilled: bool = True, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        embed_dims, num_heads, depths = tuple(embed_dims), tuple(num_heads), tuple(depths)
        if not embed_dims or not len(embed_dims) == len(num_heads) == len(depths):
            raise ValueError(f"LeViT: embed_dims, num_heads and depths must be equally long, got {embed_dims!r}, "
                             f"{num_heads!r} and {depths!r}")
        self.image_size = positive_int(image_size, "LeViT: image_size")
        self.num_classes = positive_int(num_classes, "LeViT: num_classes")
        self.distilled, self.embed_dims = bool(distilled), embed_dims
        self.stem = _stem(embed_dims[0])
        size = self.image_size
        for _ in range(4):
            size = _halved(size)
        self.stem_size = size
        probabilities = np.linspace(0.0, stochastic_depth_prob, sum(depths)).tolist()
        stages, index = [], 0
        for s, (dim, heads, depth) in enumerate(zip(embed_dims, num_heads, depths)):
            layers = []
            if s > 0:
                layers.append(LeViTDownsample(embed_dims[s - 1], dim, key_dim, embed_dims[s - 1] // key_dim, size,
                                              down_attn_ratio, down_mlp_ratio, name="down"))
                size = _halved(size)
            for b in range(depth):
                layers.append(LeViTBlock(dim, key_dim, heads, size, attn_ratio, mlp_ratio, probabilities[index],
                                         name=str(b)))
                index += 1
            stages.append(nn.Sequential(*layers, name=str(s)))
        self.stages = nn.Sequential(*stages, name="stages")
        self.head = _norm_linear(embed_dims[-1], self.num_classes, "head")
        if self.distilled:
            self.head_dist = _norm_linear(embed_dims[-1], self.num_classes, "head_dist")

    def _image_shape(self, shape) -> tuple:
        shape = nhwc(self, shape)
        if any(n is not None and n != self.image_size for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected "
                             f"{self.image_size}x{self.image_size} images (image_size={self.image_size})")
        return shape

    def trace(self, shape, step):
        shape = step(self.stem, self._image_shape(shape))
        shape = step(self.stages, (shape[0], self.stem_size ** 2, shape[3]))
        pooled = (shape[0], shape[2])
        if self.distilled:
            step(self.head_dist, pooled)
        return step(self.head, pooled)

    def features(self, x) -> Tensor:
        """The mean of the last stage's tokens: (batch, embed_dims[-1])."""
        maps = self.stem(x)
        tokens = F.reshape(maps, maps.shape[0], maps.shape[1] * maps.shape[2], maps.shape[3])
        return F.mean(self.stages(tokens), axis=1)

    def forward(self, x):
        self._image_shape(x.shape)
        pooled = self.features(x)
        scores = self.head(pooled)
        if not self.distilled:
            return scores
        scores_dist = self.head_dist(pooled)
        if self.training:
            return scores, scores_dist
        return F.mul(F.add(scores, scores_dist), 0.5)


def levit_128s(num_classes: int = 1000, image_size: int = 224, distilled: bool = True) -> LeViT:
    """LeViT-128S: widths (128, 256, 384), heads (4, 6, 8), depths (2, 3, 4), keys of 16."""
    dims, heads, depths, key_dim = LEVIT_128S
    return LeViT(num_classes, image_size, dims, heads, depths, key_dim, distilled=distilled, name="levit_128s")


def levit_tiny(num_classes: int = 10, image_size: int = 32, distilled: bool = True) -> LeViT:
    """A tiny LeViT for small images and tests: widths (16, 32), heads (2, 2), one block per
    stage, keys of 8 features."""
    return LeViT(num_classes, image_size, (16, 32), (2, 2), (1, 1), 8, distilled=distilled, name="levit_tiny")
