"""PVT v2 (Wang et al. 2022, "PVT v2: Improved Baselines with Pyramid Vision Transformer"): a
four-stage pyramid of transformer blocks on NHWC maps at 1/4, 1/8, 1/16 and 1/32 of the input.

Stage i (width C_i, heads h_i, reduction ratio R_i, MLP ratio e_i):

    overlapping patch embedding   x = LN(conv_{k, stride s, padding k // 2}(x)),  k > s
                                  (k 7, s 4 for the first stage, k 3, s 2 after)
    blocks                        x = x + drop_path(SRA(LN(x))),  x = x + drop_path(FFN(LN(x)))
    stage norm                    x = LN(x)

Spatial-reduction attention (:class:`SpatialReductionAttention`) reads its keys and values from
a map shortened R times along each axis, x' = LN(conv_{R x R, stride R}(x)) (x' = x when R = 1,
which is plain multi-head attention); the "linear" variant (PVT v2-li) pools instead to a fixed
7 x 7 map, x' = GELU(LN(conv_{1x1}(AdaptiveAvgPool_{7x7}(x)))), so its cost grows linearly with
the image::

    Q = x W_q,  [K, V] = x' W_kv,  SRA(x) = W_o [softmax(Q_j K_j^T / sqrt(d)) V_j]_j   (d = C / h)

The convolutional FFN (:class:`PVTv2FFN`) puts a 3 x 3 depthwise convolution on the token map
between its two Dense layers, which gives the positional cue (there is no position embedding)::

    FFN(x) = fc2(GELU(dwconv(fc1(x))))          (fc1: e_i C_i units; ReLU after fc1 when linear)

The classifier (:class:`PVTv2`) averages the last stage's normalised map over space and applies
``head``; :meth:`PVTv2.features` gives the four normalised NHWC maps for use as a backbone.
Block LayerNorms use eps 1e-6, the patch embeddings' 1e-5 (as the reference code). Presets with
1000 classes at 224 x 224 x 3 (widths, blocks; heads (1, 2, 5, 8), ratios (8, 4, 2, 1), MLP
ratios (8, 8, 4, 4)): ``pvt_v2_b0`` (32, 64, 160, 256), (2, 2, 2, 2): 3,666,760 parameters (the
paper: 3.7M); ``pvt_v2_b1`` (64, 128, 320, 512), (2, 2, 2, 2): 14,009,000 (14.0M).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import AdaptiveAvgPool2D, Block, check_input, finish, nhwc, nhwc_channels
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["OverlapPatchEmbed", "PVTV2_CONFIGS", "PVTv2", "PVTv2Block", "PVTv2FFN", "SpatialReductionAttention",
           "pvt_v2", "pvt_v2_b0", "pvt_v2_b1", "pvt_v2_tiny"]

BLOCK_NORM_EPS = 1e-6
EMBED_NORM_EPS = 1e-5
LINEAR_POOL_SIZE = 7

# variant -> (widths, blocks per stage); heads (1, 2, 5, 8), ratios (8, 4, 2, 1), MLP ratios (8, 8, 4, 4)
PVTV2_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
}


@register_with_arguments
class OverlapPatchEmbed(Block):
    """Overlapping patch embedding: ``proj`` (conv to ``dim`` channels of ``patch_size`` >
    ``stride``, padding patch_size // 2) then ``norm`` (LayerNorm); (N, H, W, c) ->
    (N, ceil(H / stride), ceil(W / stride), dim) for odd patch sizes."""

    default_name = "patch_embed"

    def __init__(self, dim: int, patch_size: int = 7, stride: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "OverlapPatchEmbed: dim")
        self.patch_size = positive_int(patch_size, "OverlapPatchEmbed: patch_size")
        self.stride = positive_int(stride, "OverlapPatchEmbed: stride")
        if self.patch_size <= self.stride:
            raise ValueError(f"OverlapPatchEmbed: patch_size {patch_size} must exceed the stride {stride} for the "
                             f"patches to overlap")
        self.proj = nn.Conv2D(dim, patch_size, stride=stride, padding=patch_size // 2, name="proj")
        self.norm = nn.LayerNorm(-1, eps=EMBED_NORM_EPS, name="norm")

    def trace(self, shape, step):
        return step(self.norm, step(self.proj, nhwc(self, shape)))

    def forward(self, x) -> Tensor:
        return self.norm(self.proj(x))


def split_heads(x, num_heads: int) -> Tensor:
    """(N, h, w, C) map or (N, T, C) tokens -> (N, heads, tokens, C / heads)."""
    batch, channels = x.shape[0], x.shape[-1]
    tokens = int(np.prod(x.shape[1:-1]))
    return F.transpose(F.reshape(x, batch, tokens, num_heads, channels // num_heads), 0, 2, 1, 3)


def join_heads(x) -> Tensor:
    """(N, heads, T, d) -> (N, T, heads d)."""
    batch, heads, tokens, d = x.shape
    return F.reshape(F.transpose(x, 0, 2, 1, 3), batch, tokens, heads * d)


def check_heads(name: str, dim: int, num_heads: int) -> tuple[int, int]:
    dim, num_heads = positive_int(dim, f"{name}: dim"), positive_int(num_heads, f"{name}: num_heads")
    if dim % num_heads:
        raise ValueError(f"{name}: dim {dim} is not divisible by num_heads {num_heads}")
    return dim, num_heads


@register_with_arguments
class SpatialReductionAttention(Block):
    """Spatial-reduction attention on an NHWC map of ``dim`` channels (module docstring):
    ``q`` (Dense D), ``kv`` (Dense 2 D), ``proj``; for ``sr_ratio`` R > 1 ``sr`` (R x R conv of
    stride R) and ``norm`` on the keys' and values' map; with ``linear`` ``pool`` (adaptive
    average to 7 x 7), ``sr`` (1 x 1 conv), ``norm`` and ``act`` (GELU) instead."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, linear: bool = False, qkv_bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = check_heads("SpatialReductionAttention", dim, num_heads)
        self.sr_ratio = positive_int(sr_ratio, "SpatialReductionAttention: sr_ratio")
        self.linear = bool(linear)
        self.q = nn.Dense(dim, use_bias=qkv_bias, name="q")
        self.kv = nn.Dense(2 * dim, use_bias=qkv_bias, name="kv")
        self.proj = nn.Dense(dim, name="proj")
        if self.linear:
            self.pool = AdaptiveAvgPool2D(LINEAR_POOL_SIZE, name="pool")
            self.sr = nn.Conv2D(dim, 1, name="sr")
            self.norm = nn.LayerNorm(-1, eps=EMBED_NORM_EPS, name="norm")
            self.act = nn.GELU(name="act")
        elif self.sr_ratio > 1:
            self.sr = nn.Conv2D(dim, self.sr_ratio, stride=self.sr_ratio, name="sr")
            self.norm = nn.LayerNorm(-1, eps=EMBED_NORM_EPS, name="norm")

    def _reduced_shape(self, shape, step):
        if self.linear:
            return step(self.act, step(self.norm, step(self.sr, step(self.pool, shape))))
        if self.sr_ratio > 1:
            if any(n is not None and n < self.sr_ratio for n in shape[1:3]):
                raise ShapeError(f"{self._label()}: got a map of shape {tuple(shape)}; expected a height and width "
                                 f"of at least sr_ratio={self.sr_ratio}")
            return step(self.norm, step(self.sr, shape))
        return shape

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        step(self.q, shape)
        step(self.kv, self._reduced_shape(shape, step))
        return step(self.proj, shape)

    def reduced(self, x) -> Tensor:
        """x' of the module docstring: the map the keys and values are read from."""
        if self.linear:
            return self.act(self.norm(self.sr(self.pool(x))))
        return self.norm(self.sr(x)) if self.sr_ratio > 1 else x

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        batch, height, width, _ = nhwc_channels(self, x.shape, self.dim, "dim")
        self._reduced_shape(x.shape, lambda layer, shape: shape)
        kv = self.kv(self.reduced(x))
        k, v = F.getitem(kv, (Ellipsis, slice(0, self.dim))), F.getitem(kv, (Ellipsis, slice(self.dim, None)))
        heads = [split_heads(t, self.num_heads) for t in (self.q(x), k, v)]
        out = join_heads(F.scaled_dot_product_attention(*heads))
        return self.proj(F.reshape(out, batch, height, width, self.dim))

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}, sr_ratio={self.sr_ratio}, linear={self.linear}"


@register_with_arguments
class PVTv2FFN(Block):
    """The convolutional FFN on an NHWC map: ``fc1`` (``hidden`` units), ReLU when ``linear``,
    ``dwconv`` (3 x 3 depthwise conv, padding 1), GELU, ``fc2`` (``dim`` units)."""

    default_name = "mlp"

    def __init__(self, dim: int, hidden: int, linear: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "PVTv2FFN: dim")
        self.hidden = positive_int(hidden, "PVTv2FFN: hidden")
        self.linear = bool(linear)
        self.fc1 = nn.Dense(hidden, name="fc1")
        self.relu = nn.ReLU(name="relu") if self.linear else nn.Identity(name="relu")
        self.dwconv = nn.Conv2D(hidden, 3, padding=1, groups=hidden, name="dwconv")
        self.act = nn.GELU(name="act")
        self.fc2 = nn.Dense(dim, name="fc2")

    def trace(self, shape, step):
        shape = step(self.dwconv, step(self.relu, step(self.fc1, nhwc(self, shape))))
        return step(self.fc2, step(self.act, shape))

    def forward(self, x) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.relu(self.fc1(x)))))


@register_with_arguments
class PVTv2Block(Block):
    """x += drop_path(attn(norm1(x))), x += drop_path(mlp(norm2(x))) on an NHWC map of ``dim``
    channels: ``attn`` a :class:`SpatialReductionAttention`, ``mlp`` a :class:`PVTv2FFN` of
    int(``mlp_ratio`` dim) hidden units."""

    default_name = "block"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, sr_ratio: int = 1, linear: bool = False,
                 stochastic_depth_prob: float = 0.0, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "PVTv2Block: dim")
        hidden = positive_int(int(dim * mlp_ratio), "PVTv2Block: dim * mlp_ratio")
        self.norm1 = nn.LayerNorm(-1, eps=BLOCK_NORM_EPS, name="norm1")
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, linear, qkv_bias, name="attn")
        self.drop_path = nn.StochasticDepth(stochastic_depth_prob, "row", name="drop_path")
        self.norm2 = nn.LayerNorm(-1, eps=BLOCK_NORM_EPS, name="norm2")
        self.mlp = PVTv2FFN(dim, hidden, linear, name="mlp")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.dim, "dim")
        step(self.drop_path, step(self.attn, step(self.norm1, shape)))
        return step(self.drop_path, step(self.mlp, step(self.norm2, shape)))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.drop_path(self.attn(self.norm1(x))))
        return F.add(x, self.drop_path(self.mlp(self.norm2(x))))


def _per_stage(values, stages: int, what: str) -> tuple:
    values = tuple(values)
    if len(values) != stages:
        raise ValueError(f"PVTv2: {what}={values} must give one value per stage ({stages} stages)")
    return values


@register_with_arguments
class PVTv2(Block):
    """The PVT v2 classifier of the module docstring on NHWC images: per stage i (from 1)
    ``patch_embed{i}`` (:class:`OverlapPatchEmbed`), ``block{i}`` (``depths[i]``
    :class:`PVTv2Block`) and ``norm{i}``; then the spatial mean and ``head``. The drop-path
    probability rises linearly from 0 to ``stochastic_depth_prob`` over all blocks."""

    default_name = "pvt_v2"

    def __init__(self, num_classes: int, embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8),
                 mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 2, 2), sr_ratios=(8, 4, 2, 1), patch_sizes=(7, 3, 3, 3),
                 strides=(4, 2, 2, 2), linear: bool = False, qkv_bias: bool = True,
                 stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "PVTv2: num_classes")
        self.embed_dims = tuple(positive_int(d, "PVTv2: embed_dims") for d in embed_dims)
        stages = self.num_stages = len(self.embed_dims)
        if stages < 1:
            raise ValueError("PVTv2: embed_dims must name at least one stage")
        heads, ratios = _per_stage(num_heads, stages, "num_heads"), _per_stage(mlp_ratios, stages, "mlp_ratios")
        self.depths = _per_stage(depths, stages, "depths")
        srs, patches = _per_stage(sr_ratios, stages, "sr_ratios"), _per_stage(patch_sizes, stages, "patch_sizes")
        strides = _per_stage(strides, stages, "strides")
        rates = np.linspace(0.0, stochastic_depth_prob, sum(self.depths)) if sum(self.depths) else []
        k = 0
        for i in range(stages):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(self.embed_dims[i], patches[i], strides[i],
                                                                  name=f"patch_embed{i + 1}"))
            blocks = [PVTv2Block(self.embed_dims[i], heads[i], ratios[i], srs[i], linear, float(rates[k + j]),
                                 qkv_bias, name=str(j)) for j in range(positive_int(self.depths[i], "PVTv2: depths"))]
            k += self.depths[i]
            setattr(self, f"block{i + 1}", nn.Sequential(*blocks, name=f"block{i + 1}"))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(-1, eps=BLOCK_NORM_EPS, name=f"norm{i + 1}"))
        self.head = nn.Dense(num_classes, name="head")

    def _stages(self):
        for i in range(1, self.num_stages + 1):
            yield getattr(self, f"patch_embed{i}"), getattr(self, f"block{i}"), getattr(self, f"norm{i}")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for embed, blocks, norm in self._stages():
            shape = step(norm, step(blocks, step(embed, shape)))
        return step(self.head, (shape[0], shape[3]))

    def features(self, x) -> list[Tensor]:
        """The normalised NHWC map of every stage, the first the largest (1/4, 1/8, ... of x)."""
        x = as_tensor(x)
        if x.ndim != 4:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(x.shape)}; expected a 4-D NHWC batch "
                             f"of images (batch, height, width, channels)")
        if not self.built:
            self.build(tuple(x.shape))
        maps = []
        for embed, blocks, norm in self._stages():
            x = norm(blocks(embed(x)))
            maps.append(x)
        return maps

    def forward(self, x) -> Tensor:
        return self.head(F.mean(self.features(x)[-1], axis=(1, 2)))

    def extra_repr(self) -> str:
        return f"embed_dims={self.embed_dims}, depths={self.depths}"


def pvt_v2(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
           sr_ratios=(8, 4, 2, 1), linear: bool = False, stochastic_depth_prob: float = 0.0, num_classes: int = 1000,
           input_shape: tuple[int, int, int] = (224, 224, 3), name: str = "pvt_v2", **kwargs) -> PVTv2:
    """A PVT v2 (unbuilt) for ``input_shape`` (height, width, channels) images; ``kwargs``
    (``patch_sizes``, ``strides``, ``qkv_bias``) go to :class:`PVTv2`. See the module docstring."""
    input_shape = check_input(input_shape, name)
    model = PVTv2(num_classes, embed_dims, num_heads, mlp_ratios, depths, sr_ratios, linear=linear,
                  stochastic_depth_prob=stochastic_depth_prob, name=name, **kwargs)
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, linear: bool, stochastic_depth_prob: float) -> PVTv2:
    dims, depths = PVTV2_CONFIGS[variant]
    return pvt_v2(dims, depths, linear=linear, stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes,
                  input_shape=input_shape, name=f"pvt_v2_{variant}")


def pvt_v2_b0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), linear: bool = False,
              stochastic_depth_prob: float = 0.0) -> PVTv2:
    """PVT v2-B0: widths (32, 64, 160, 256), 2 blocks per stage; 3,666,760 parameters with 1000 classes."""
    return _variant("b0", num_classes, input_shape, linear, stochastic_depth_prob)


def pvt_v2_b1(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), linear: bool = False,
              stochastic_depth_prob: float = 0.0) -> PVTv2:
    """PVT v2-B1: widths (64, 128, 320, 512), 2 blocks per stage; 14,009,000 parameters with 1000 classes."""
    return _variant("b1", num_classes, input_shape, linear, stochastic_depth_prob)


def pvt_v2_tiny(num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3)) -> PVTv2:
    """A PVT v2 small enough to train on a CPU in seconds: widths (16, 32, 32, 32), one block per
    stage, heads (1, 2, 2, 2), ratios (4, 2, 1, 1), MLP ratio 2."""
    return pvt_v2((16, 32, 32, 32), (1, 1, 1, 1), (1, 2, 2, 2), (2, 2, 2, 2), (4, 2, 1, 1), num_classes=num_classes,
                  input_shape=input_shape, name="pvt_v2_tiny")
