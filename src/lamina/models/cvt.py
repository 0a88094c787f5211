"""CvT (Wu et al. 2021, "CvT: Introducing Convolutions to Vision Transformers"): a three-stage
pyramid of transformer blocks whose tokens come from convolutions, on NHWC maps.

Stage i (width C_i, heads h_i):

    convolutional token embedding   x = LN(conv_{k_i, stride s_i, padding p_i}(x))
                                    (k 7, s 4, p 2 for the first stage, k 3, s 2, p 1 after)
    blocks                          x = x + drop_path(attn(LN(x))),  x = x + drop_path(MLP(LN(x)))

There is no position embedding: the convolutions give the tokens their place. The class token
joins only in the last stage, and the classifier reads it after a final LayerNorm.

Convolutional projection (:class:`ConvProjectionAttention`): each of q, k, v is a 3 x 3
depthwise convolution (no bias) on the token map, BatchNorm, then a Dense layer; the queries
keep the map's size (stride 1), the keys and values shrink it (stride 2)::

    Q = proj_q(BN(dwconv_{s=1}(x))),  K = proj_k(BN(dwconv_{s=2}(x))),  V = proj_v(BN(dwconv_{s=2}(x)))
    attn(x) = proj([softmax(Q_j K_j^T / sqrt(C)) V_j]_j)

The class token skips the convolutions: it is put in front of each flattened map before the
Dense layers. The logits are scaled by 1 / sqrt(C), C the full width rather than a head's, as the
reference code. The MLP is fc1 (4 C units), GELU, fc2. LayerNorms use eps 1e-5.

``cvt_13`` (widths (64, 192, 384), blocks (1, 2, 10), heads (1, 3, 6)) has 19,997,480 parameters
with 1000 classes at 224 x 224 x 3 (the paper: 20.0M; BatchNorm's running statistics are not
parameters).
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc, nhwc_channels
from lamina.models.mlp_mixer import timm_mlp
from lamina.models.pvt import check_heads, join_heads, split_heads
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["CVT_CONFIGS", "ConvEmbed", "ConvProjectionAttention", "CvT", "CvTBlock", "cvt", "cvt_13", "cvt_tiny"]

LAYER_NORM_EPS = 1e-5
CLS_STD = 0.02

# variant -> (widths, blocks per stage, heads)
CVT_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "13": ((64, 192, 384), (1, 2, 10), (1, 3, 6)),
}


@register_with_arguments
class ConvEmbed(Block):
    """Convolutional token embedding: ``proj`` (conv to ``dim`` channels, ``patch_size``,
    ``stride``, ``padding``) then ``norm`` (LayerNorm) on an NHWC map."""

    default_name = "patch_embed"

    def __init__(self, dim: int, patch_size: int = 7, stride: int = 4, padding: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ConvEmbed: dim")
        self.proj = nn.Conv2D(dim, patch_size, stride=stride, padding=padding, name="proj")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")

    def trace(self, shape, step):
        return step(self.norm, step(self.proj, nhwc(self, shape)))

    def forward(self, x) -> Tensor:
        return self.norm(self.proj(x))


def _conv_projection(dim: int, kernel_size: int, stride: int, name: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=dim,
                                   use_bias=False, name="conv"), nn.BatchNorm(name="bn"), name=name)


def _split_inputs(layer, shape) -> tuple[tuple, tuple | None]:
    """A map's shape, or [map shape, class-token shape] for a layer ``with_cls_token``."""
    if layer.with_cls_token:
        if len(shape) != 2 or not all(isinstance(s, (tuple, list)) for s in shape):
            raise ShapeError(f"{layer._label()}: got inputs of shape {tuple(shape)}; expected a map (N, H, W, "
                             f"{layer.dim}) and a class token (N, 1, {layer.dim})")
        cls = tuple(shape[1])
        if len(cls) != 3 or cls[1:] != (1, layer.dim):
            raise ShapeError(f"{layer._label()}: got a class token of shape {cls}; expected (N, 1, {layer.dim})")
        return nhwc_channels(layer, shape[0], layer.dim, "dim"), cls
    return nhwc_channels(layer, shape, layer.dim, "dim"), None


@register_with_arguments
class ConvProjectionAttention(Block):
    """Multi-head attention with convolutional projections (module docstring) on an NHWC map
    of ``dim`` channels: ``conv_proj_q``, ``conv_proj_k``, ``conv_proj_v`` (depthwise
    ``kernel_size`` conv of stride ``stride_q`` / ``stride_kv``, ``bn``), ``proj_q``, ``proj_k``,
    ``proj_v``, ``proj``. With ``with_cls_token`` it is called as ``attn(x, cls)`` and gives
    the updated (map, class token)."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, with_cls_token: bool = False, kernel_size: int = 3,
                 stride_kv: int = 2, stride_q: int = 1, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = check_heads("ConvProjectionAttention", dim, num_heads)
        self.with_cls_token = bool(with_cls_token)
        self.kernel_size = positive_int(kernel_size, "ConvProjectionAttention: kernel_size")
        self.stride_kv = positive_int(stride_kv, "ConvProjectionAttention: stride_kv")
        self.stride_q = positive_int(stride_q, "ConvProjectionAttention: stride_q")
        self.conv_proj_q = _conv_projection(dim, kernel_size, stride_q, "conv_proj_q")
        self.conv_proj_k = _conv_projection(dim, kernel_size, stride_kv, "conv_proj_k")
        self.conv_proj_v = _conv_projection(dim, kernel_size, stride_kv, "conv_proj_v")
        self.proj_q, self.proj_k, self.proj_v = (nn.Dense(dim, use_bias=qkv_bias, name=n)
                                                 for n in ("proj_q", "proj_k", "proj_v"))
        self.proj = nn.Dense(dim, name="proj")

    def trace(self, shape, step):
        shape, cls = _split_inputs(self, shape)
        extra = 1 if cls else 0
        for conv, dense in ((self.conv_proj_q, self.proj_q), (self.conv_proj_k, self.proj_k),
                            (self.conv_proj_v, self.proj_v)):
            batch, height, width, _ = step(conv, shape)
            step(dense, (batch, None if height is None or width is None else extra + height * width, self.dim))
        out = step(self.conv_proj_q, shape)
        if out[1:3] != shape[1:3] and None not in shape[1:3]:
            raise ShapeError(f"{self._label()}: the queries' map {out[1:3]} must keep the input's size "
                             f"{shape[1:3]} (stride_q={self.stride_q})")
        step(self.proj, (shape[0], None, self.dim))
        return (shape, cls) if cls else shape

    def _tokens(self, conv, dense, x, cls) -> Tensor:
        tokens = conv(x)
        tokens = F.reshape(tokens, tokens.shape[0], tokens.shape[1] * tokens.shape[2], self.dim)
        return dense(tokens if cls is None else F.concat([cls, tokens], axis=1))

    def forward(self, x, cls=None):
        x = as_tensor(x)
        shapes = [tuple(x.shape)] if cls is None else [tuple(x.shape), tuple(as_tensor(cls).shape)]
        _split_inputs(self, shapes if self.with_cls_token else shapes[0])
        batch, height, width, _ = x.shape
        q, k, v = (split_heads(self._tokens(conv, dense, x, cls), self.num_heads)
                   for conv, dense in ((self.conv_proj_q, self.proj_q), (self.conv_proj_k, self.proj_k),
                                       (self.conv_proj_v, self.proj_v)))
        out = self.proj(join_heads(F.scaled_dot_product_attention(q, k, v, scale=self.dim ** -0.5)))
        if cls is None:
            return F.reshape(out, batch, height, width, self.dim)
        grid = F.reshape(F.getitem(out, (slice(None), slice(1, None))), batch, height, width, self.dim)
        return grid, F.getitem(out, (slice(None), slice(0, 1)))

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}, with_cls_token={self.with_cls_token}"


@register_with_arguments
class CvTBlock(Block):
    """x += drop_path(attn(norm1(x))), x += drop_path(mlp(norm2(x))) on an NHWC map (and, with
    ``with_cls_token``, the class token beside it: ``block(x, cls)`` -> (x, cls)); ``attn`` a
    :class:`ConvProjectionAttention`, ``mlp`` fc1 of int(``mlp_ratio`` dim) units, GELU, fc2."""

    default_name = "block"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, with_cls_token: bool = False,
                 stochastic_depth_prob: float = 0.0, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "CvTBlock: dim")
        self.with_cls_token = bool(with_cls_token)
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = ConvProjectionAttention(dim, num_heads, with_cls_token, qkv_bias=qkv_bias, name="attn")
        self.drop_path = nn.StochasticDepth(stochastic_depth_prob, "row", name="drop_path")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = timm_mlp(positive_int(int(dim * mlp_ratio), "CvTBlock: dim * mlp_ratio"), dim, "mlp")

    def trace(self, shape, step):
        shape, cls = _split_inputs(self, shape)
        step(self.attn, [step(self.norm1, shape), step(self.norm1, cls)] if cls else step(self.norm1, shape))
        for s in (shape, cls) if cls else (shape,):
            step(self.drop_path, step(self.mlp, step(self.norm2, s)))
        return (shape, cls) if cls else shape

    def _residual(self, x, update) -> Tensor:
        return F.add(x, self.drop_path(update))

    def forward(self, x, cls=None):
        if cls is None:
            x = self._residual(x, self.attn(self.norm1(x)))
            return self._residual(x, self.mlp(self.norm2(x)))
        grid, token = self.attn(self.norm1(x), self.norm1(cls))
        x, cls = self._residual(x, grid), self._residual(cls, token)
        return self._residual(x, self.mlp(self.norm2(x))), self._residual(cls, self.mlp(self.norm2(cls)))


@register_with_arguments
class CvT(Block):
    """The CvT classifier of the module docstring on NHWC images: per stage i (from 0)
    ``patch_embed{i}`` (:class:`ConvEmbed`) and ``blocks{i}`` (``depths[i]`` :class:`CvTBlock`),
    the last stage's with the class token (parameter ``cls_token``, (1, 1, C)); then ``norm``
    and ``head`` on the class token. The drop-path probability rises linearly from 0 to
    ``stochastic_depth_prob`` over all blocks."""

    default_name = "cvt"

    def __init__(self, num_classes: int, embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6),
                 patch_sizes=(7, 3, 3), strides=(4, 2, 2), paddings=(2, 1, 1), mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "CvT: num_classes")
        self.embed_dims = tuple(positive_int(d, "CvT: embed_dims") for d in embed_dims)
        self.num_stages = len(self.embed_dims)
        per_stage = {"depths": depths, "num_heads": num_heads, "patch_sizes": patch_sizes, "strides": strides,
                     "paddings": paddings}
        for what, values in per_stage.items():
            if self.num_stages < 1 or len(tuple(values)) != self.num_stages:
                raise ValueError(f"CvT: {what}={tuple(values)} must give one value per stage of embed_dims="
                                 f"{self.embed_dims}")
        self.depths = tuple(positive_int(d, "CvT: depths") for d in depths)
        rates = np.linspace(0.0, stochastic_depth_prob, sum(self.depths))
        k = 0
        for i, dim in enumerate(self.embed_dims):
            setattr(self, f"patch_embed{i}", ConvEmbed(dim, patch_sizes[i], strides[i], paddings[i],
                                                      name=f"patch_embed{i}"))
            last = i == self.num_stages - 1
            setattr(self, f"blocks{i}", nn.ModuleList(
                [CvTBlock(dim, num_heads[i], mlp_ratio, last, float(rates[k + j]), qkv_bias, name=str(j))
                 for j in range(self.depths[i])]))
            k += self.depths[i]
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.head = nn.Dense(num_classes, name="head")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for i in range(self.num_stages):
            shape = step(getattr(self, f"patch_embed{i}"), shape)
            cls = (shape[0], 1, self.embed_dims[i])
            for block in getattr(self, f"blocks{i}"):
                out = step(block, [shape, cls] if i == self.num_stages - 1 else shape)
                shape = out[0] if i == self.num_stages - 1 else out
        return step(self.head, step(self.norm, (shape[0], self.embed_dims[-1])))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d = self.embed_dims[-1]
        self.add_parameter("cls_token", initializers.normal(CLS_STD)((1, 1, d), d, d, backend.get_default_dtype()))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(x.shape)}; expected a 4-D NHWC batch "
                             f"of images (batch, height, width, channels)")
        for i in range(self.num_stages - 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
        last = self.num_stages - 1
        x = getattr(self, f"patch_embed{last}")(x)
        cls = F.broadcast_to(self.cls_token, (x.shape[0], 1, self.embed_dims[-1]))
        for block in getattr(self, f"blocks{last}"):
            x, cls = block(x, cls)
        return self.head(self.norm(F.reshape(cls, x.shape[0], self.embed_dims[-1])))

    def extra_repr(self) -> str:
        return f"embed_dims={self.embed_dims}, depths={self.depths}"


def cvt(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6), mlp_ratio: float = 4.0,
        stochastic_depth_prob: float = 0.0, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
        name: str = "cvt", **kwargs) -> CvT:
    """A CvT (unbuilt) for ``input_shape`` (height, width, channels) images; ``kwargs``
    (``patch_sizes``, ``strides``, ``paddings``, ``qkv_bias``) go to :class:`CvT`."""
    input_shape = check_input(input_shape, name)
    model = CvT(num_classes, embed_dims, depths, num_heads, mlp_ratio=mlp_ratio,
                stochastic_depth_prob=stochastic_depth_prob, name=name, **kwargs)
    return finish(model, input_shape)


def cvt_13(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float = 0.0) -> CvT:
    """CvT-13: widths (64, 192, 384), blocks (1, 2, 10), heads (1, 3, 6); 19,997,480 parameters
    with 1000 classes."""
    dims, depths, heads = CVT_CONFIGS["13"]
    return cvt(dims, depths, heads, stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes,
               input_shape=input_shape, name="cvt_13")


def cvt_tiny(num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3)) -> CvT:
    """A CvT small enough to train on a CPU in seconds: widths (16, 32, 32), one block per stage,
    heads (1, 2, 2), MLP ratio 2."""
    return cvt((16, 32, 32), (1, 1, 1), (1, 2, 2), mlp_ratio=2.0, num_classes=num_classes, input_shape=input_shape,
               name="cvt_tiny")
