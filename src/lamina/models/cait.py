"""CaiT (Touvron et al. 2021, "Going deeper with image transformers"): class-attention image
transformers.

Two changes let a ViT grow deeper:

* LayerScale: every residual branch is scaled per channel by a learned diagonal
  diag(lambda_1, ..., lambda_D) that starts at a small epsilon (:class:`LayerScale`; the
  paper's epsilon by depth, :func:`cait_layer_scale_init`: 0.1 up to 18 blocks, 1e-5 up to 24,
  1e-6 beyond)::

      x = x + diag(lambda) SA(LN(x)),   x = x + diag(lambda') FFN(LN(x))

* Class attention: the patches are processed alone by the self-attention stage; the class
  token is added after it, and two class-attention blocks (:class:`ClassAttentionBlock`)
  update only the class token, whose query reads keys and values of [cls; patches]
  (:class:`ClassAttention`)::

      z = [x_cls; x_patches],   q = W_q x_cls,   k = W_k z,   v = W_v z
      x_cls = x_cls + diag(lambda) W_o softmax(q k^T / sqrt(d)) v   (per head, heads joined)
      x_cls = x_cls + diag(lambda') FFN(LN(x_cls))

The self-attention layers use talking-heads attention (Shazeer et al. 2020;
:class:`TalkingHeadsAttention`): the logits of the heads are mixed by a learned (heads x heads)
linear map before the softmax and the attention weights by another after it::

      A = P_w softmax(P_l (Q K^T / sqrt(d)))   (P_l, P_w mix across heads, with biases)

The classifier reads the class token after a final LayerNorm. Sub-layer names follow the
reference implementation (``qkv``, ``proj_l``, ``proj_w``, ``proj``, ``q``, ``k``, ``v``). The
presets (:data:`CAIT_CONFIGS`, 16x16 patches, MLPs of 4 D units, biases in the projections):
``cait_xxs24`` (D 192, 24 blocks, 4 heads): 11,956,264 parameters with 1000 classes at
224x224x3 (the paper: 12.0M); ``cait_xxs36`` (D 192, 36 blocks): 17,299,720 (17.3M);
``cait_s24`` (D 384, 24 blocks, 8 heads): 46,916,200 (46.9M). The reference code starts
LayerScale at 1e-5 for XXS-36 too; the presets here follow the paper's rule (1e-6 beyond 24
blocks) unless ``layer_scale_init`` is given.
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish
from lamina.models.deit import _embed_patches, _patch_embedding, _patch_image_shape, _tokens_shape
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["CAIT_CONFIGS", "CaiT", "CaiTBlock", "ClassAttention", "ClassAttentionBlock", "LayerScale",
           "TalkingHeadsAttention", "cait", "cait_layer_scale_init", "cait_s24", "cait_tiny", "cait_xxs24",
           "cait_xxs36"]

LAYER_NORM_EPS = 1e-6
POSITION_STD = 0.02

# variant -> (width D, self-attention blocks, heads); 16x16 patches, MLPs of 4 D units
CAIT_CONFIGS: dict[str, tuple[int, int, int]] = {"xxs24": (192, 24, 4), "xxs36": (192, 36, 4), "s24": (384, 24, 8)}


def cait_layer_scale_init(depth: int) -> float:
    """The paper's starting LayerScale epsilon for a network of ``depth`` blocks: 0.1 for
    depth <= 18, 1e-5 for depth <= 24, 1e-6 deeper."""
    depth = positive_int(depth, "cait_layer_scale_init: depth")
    if depth <= 18:
        return 0.1
    return 1e-5 if depth <= 24 else 1e-6


def _heads(layer, dim: int, num_heads: int) -> tuple[int, int]:
    name = type(layer).__name__
    dim, num_heads = positive_int(dim, f"{name}: dim"), positive_int(num_heads, f"{name}: num_heads")
    if dim % num_heads:
        raise ValueError(f"{name}: dim {dim} is not divisible by num_heads {num_heads}")
    return dim, num_heads


def _split_heads(x, num_heads: int) -> Tensor:
    """(N, T, D) -> (N, heads, T, D / heads)."""
    batch, tokens, dim = x.shape
    return F.transpose(F.reshape(x, batch, tokens, num_heads, dim // num_heads), 0, 2, 1, 3)


def _join_heads(x) -> Tensor:
    """(N, heads, T, d) -> (N, T, heads d)."""
    batch, heads, tokens, d = x.shape
    return F.reshape(F.transpose(x, 0, 2, 1, 3), batch, tokens, heads * d)


@register_with_arguments
class LayerScale(Module):
    """y = x diag(gamma): each of the last axis's ``dim`` channels times its learned scale;
    ``gamma`` (dim,) starts at ``init_value`` everywhere."""

    default_name = "layer_scale"

    def __init__(self, dim: int, init_value: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "LayerScale: dim")
        self.init_value = float(init_value)
        self.add_parameter("gamma", backend.xp.full((self.dim,), self.init_value, dtype=backend.get_default_dtype()))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise input_error(self, x, f"an input whose last axis has {self.dim} channels")
        return F.mul(x, self.gamma)

    def compute_output_shape(self, input_shape):
        if input_shape[-1] not in (None, self.dim):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(input_shape)}; expected {self.dim} "
                             f"channels on the last axis")
        return tuple(input_shape)

    def extra_repr(self) -> str:
        return f"{self.dim}, init_value={self.init_value:g}"


@register_with_arguments
class TalkingHeadsAttention(Block):
    """Talking-heads self-attention on tokens (N, T, ``dim``) (module docstring): ``qkv``
    (D -> 3 D), the logits of the ``num_heads`` heads mixed by ``proj_l`` (heads -> heads)
    before the softmax over the keys and the weights by ``proj_w`` after it, then ``proj``."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = _heads(self, dim, num_heads)
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Dense(3 * dim, use_bias=qkv_bias, name="qkv")
        self.proj_l = nn.Dense(num_heads, name="proj_l")
        self.proj_w = nn.Dense(num_heads, name="proj_w")
        self.proj = nn.Dense(dim, name="proj")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        step(self.qkv, shape)
        pairs = (shape[0], shape[1], shape[1], self.num_heads)
        step(self.proj_w, step(self.proj_l, pairs))
        return step(self.proj, shape)

    def forward(self, x) -> Tensor:
        batch, tokens, _ = _tokens_shape(self, x.shape, self.dim)
        split = F.reshape(self.qkv(x), batch, tokens, 3, self.num_heads, self.dim // self.num_heads)
        q, k, v = (F.getitem(F.transpose(split, 2, 0, 3, 1, 4), i) for i in range(3))    # (N, heads, T, d)
        logits = F.matmul(F.mul(q, self.scale), F.swapaxes(k, -1, -2))                   # (N, heads, Tq, Tk)
        mixed = self.proj_l(F.transpose(logits, 0, 2, 3, 1))                              # heads last: (N, Tq, Tk, h)
        weights = F.transpose(self.proj_w(F.softmax(mixed, axis=2)), 0, 3, 1, 2)          # softmax over the keys
        return self.proj(_join_heads(F.matmul(weights, v)))


@register_with_arguments
class ClassAttention(Block):
    """Class attention on tokens [cls; patches] (N, 1 + P, ``dim``) -> the class token's update
    (N, 1, dim): the query ``q`` of the class token only, keys ``k`` and values ``v`` of all
    tokens, ``num_heads`` heads joined and projected by ``proj``."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = _heads(self, dim, num_heads)
        self.q = nn.Dense(dim, use_bias=qkv_bias, name="q")
        self.k = nn.Dense(dim, use_bias=qkv_bias, name="k")
        self.v = nn.Dense(dim, use_bias=qkv_bias, name="v")
        self.proj = nn.Dense(dim, name="proj")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        step(self.k, shape)
        step(self.v, shape)
        return step(self.proj, step(self.q, (shape[0], 1, self.dim)))

    def forward(self, x) -> Tensor:
        _tokens_shape(self, x.shape, self.dim)
        query = self.q(F.getitem(x, (slice(None), slice(0, 1))))
        heads = [_split_heads(t, self.num_heads) for t in (query, self.k(x), self.v(x))]
        return self.proj(_join_heads(F.scaled_dot_product_attention(*heads)))


def _residual_parts(block, dim: int, mlp_ratio: float, layer_scale_init: float, stochastic_depth_prob: float):
    name = type(block).__name__
    block.dim = positive_int(dim, f"{name}: dim")
    block.mlp_hidden = positive_int(int(dim * mlp_ratio), f"{name}: dim * mlp_ratio")
    block.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
    block.ls1 = LayerScale(dim, layer_scale_init, name="ls1")
    block.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
    block.mlp = timm_mlp(block.mlp_hidden, dim, "mlp")
    block.ls2 = LayerScale(dim, layer_scale_init, name="ls2")
    block.drop_path = nn.StochasticDepth(stochastic_depth_prob, "row", name="drop_path")


@register_with_arguments
class CaiTBlock(Block):
    """A self-attention block on tokens (N, T, ``dim``): x += drop_path(ls1(attn(norm1(x)))),
    x += drop_path(ls2(mlp(norm2(x)))), ``attn`` a :class:`TalkingHeadsAttention`, ``ls1``
    and ``ls2`` :class:`LayerScale` starting at ``layer_scale_init``, ``mlp`` fc1 of
    int(``mlp_ratio`` dim) units, GELU, fc2."""

    default_name = "cait_block"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5,
                 stochastic_depth_prob: float = 0.0, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        _residual_parts(self, dim, mlp_ratio, layer_scale_init, stochastic_depth_prob)
        self.attn = TalkingHeadsAttention(dim, num_heads, qkv_bias, name="attn")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        step(self.drop_path, step(self.ls1, step(self.attn, step(self.norm1, shape))))
        return step(self.drop_path, step(self.ls2, step(self.mlp, step(self.norm2, shape))))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.drop_path(self.ls1(self.attn(self.norm1(x)))))
        return F.add(x, self.drop_path(self.ls2(self.mlp(self.norm2(x)))))


@register_with_arguments
class ClassAttentionBlock(Block):
    """A class-attention block on tokens [cls; patches] (N, 1 + P, ``dim``) that updates the
    class token only and passes the patches through unchanged:
    cls += drop_path(ls1(attn(norm1([cls; patches])))), cls += drop_path(ls2(mlp(norm2(cls)))),
    ``attn`` a :class:`ClassAttention`; other sub-layers as :class:`CaiTBlock`'s."""

    default_name = "class_attention_block"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5,
                 stochastic_depth_prob: float = 0.0, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        _residual_parts(self, dim, mlp_ratio, layer_scale_init, stochastic_depth_prob)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, name="attn")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        cls = step(self.drop_path, step(self.ls1, step(self.attn, step(self.norm1, shape))))
        step(self.drop_path, step(self.ls2, step(self.mlp, step(self.norm2, cls))))
        return shape

    def forward(self, x) -> Tensor:
        cls, patches = F.getitem(x, (slice(None), slice(0, 1))), F.getitem(x, (slice(None), slice(1, None)))
        cls = F.add(cls, self.drop_path(self.ls1(self.attn(self.norm1(x)))))
        cls = F.add(cls, self.drop_path(self.ls2(self.mlp(self.norm2(cls)))))
        return F.concat([cls, patches], axis=1)


@register_with_arguments
class CaiT(Block):
    """The CaiT classifier of the module docstring on (N, H, W, C) images, H and W multiples of
    ``patch_size``: sub-layers ``patch_embed`` (Conv2D ``proj`` of kernel = stride =
    patch_size, ``flatten``), ``blocks`` (``depth`` :class:`CaiTBlock`), ``blocks_token_only``
    (``class_attention_depth`` :class:`ClassAttentionBlock`), ``norm``, ``head``; parameters
    ``pos_embed`` (1, P, D) for the patches only and ``cls_token`` (1, 1, D). LayerScale starts
    at ``layer_scale_init``, or the paper's value for ``depth`` (:func:`cait_layer_scale_init`)
    when None; ``stochastic_depth_prob`` drops the self-attention blocks' branches (the same
    rate for all, as the reference code)."""

    default_name = "cait"

    def __init__(self, patch_size: int, num_classes: int, dim: int = 192, depth: int = 24, num_heads: int = 4,
                 mlp_ratio: float = 4.0, class_attention_depth: int = 2, layer_scale_init: float | None = None,
                 stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = positive_int(patch_size, "CaiT: patch_size")
        self.num_classes = positive_int(num_classes, "CaiT: num_classes")
        self.dim, self.num_heads = _heads(self, dim, num_heads)
        self.depth = positive_int(depth, "CaiT: depth")
        self.layer_scale_init = cait_layer_scale_init(depth) if layer_scale_init is None else float(layer_scale_init)
        self.num_patches: int | None = None
        self.patch_embed = _patch_embedding(dim, patch_size)
        self.blocks = nn.Sequential(*[CaiTBlock(dim, num_heads, mlp_ratio, self.layer_scale_init,
                                                stochastic_depth_prob, name=str(k)) for k in range(depth)],
                                    name="blocks")
        count = positive_int(class_attention_depth, "CaiT: class_attention_depth")
        self.blocks_token_only = nn.Sequential(*[ClassAttentionBlock(dim, num_heads, mlp_ratio, self.layer_scale_init,
                                                                     name=str(k)) for k in range(count)],
                                               name="blocks_token_only")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.head = nn.Dense(num_classes, name="head")

    def trace(self, shape, step):
        patches = step(self.patch_embed, _patch_image_shape(self, shape))
        step(self.blocks, patches)
        tokens = step(self.blocks_token_only, (patches[0], patches[1] + 1, self.dim))
        return step(self.head, step(self.norm, (tokens[0], self.dim)))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        shape = _patch_image_shape(self, input_shape)
        self.num_patches = (shape[1] // self.patch_size) * (shape[2] // self.patch_size)
        d, normal, dtype = self.dim, initializers.normal(POSITION_STD), backend.get_default_dtype()
        self.add_parameter("pos_embed", normal((1, self.num_patches, d), self.num_patches, d, dtype))
        self.add_parameter("cls_token", normal((1, 1, d), d, d, dtype))

    def forward(self, x) -> Tensor:
        patches = self.blocks(F.add(_embed_patches(self, as_tensor(x)), self.pos_embed))
        cls = F.broadcast_to(self.cls_token, (patches.shape[0], 1, self.dim))
        tokens = self.blocks_token_only(F.concat([cls, patches], axis=1))
        return self.head(self.norm(F.getitem(tokens, (slice(None), 0))))

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, dim={self.dim}, depth={self.depth}, heads={self.num_heads}, "
                f"layer_scale_init={self.layer_scale_init:g}")


def cait(patch_size: int = 16, dim: int = 192, depth: int = 24, num_heads: int = 4, mlp_ratio: float = 4.0,
         class_attention_depth: int = 2, layer_scale_init: float | None = None, stochastic_depth_prob: float = 0.0,
         num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), name: str = "cait") -> CaiT:
    """A CaiT (unbuilt) for ``input_shape`` (height, width, channels) images: ``depth``
    talking-heads self-attention blocks and ``class_attention_depth`` class-attention blocks of
    width ``dim`` with ``num_heads`` heads on ``patch_size`` patches. See the module docstring."""
    input_shape = check_input(input_shape, name)
    if input_shape[0] % patch_size or input_shape[1] % patch_size:
        raise ValueError(f"{name}: the image size {input_shape[:2]} must be a multiple of the patch size {patch_size}")
    model = CaiT(patch_size, num_classes, dim, depth, num_heads, mlp_ratio, class_attention_depth, layer_scale_init,
                 stochastic_depth_prob, name=name)
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float) -> CaiT:
    dim, depth, heads = CAIT_CONFIGS[variant]
    return cait(16, dim, depth, heads, stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes,
                input_shape=input_shape, name=f"cait_{variant}")


def cait_xxs24(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               stochastic_depth_prob: float = 0.0) -> CaiT:
    """CaiT-XXS-24: width 192, 24 + 2 blocks, 4 heads; 11,956,264 parameters with 1000 classes."""
    return _variant("xxs24", num_classes, input_shape, stochastic_depth_prob)


def cait_xxs36(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               stochastic_depth_prob: float = 0.0) -> CaiT:
    """CaiT-XXS-36: width 192, 36 + 2 blocks, 4 heads; 17,299,720 parameters with 1000 classes."""
    return _variant("xxs36", num_classes, input_shape, stochastic_depth_prob)


def cait_s24(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             stochastic_depth_prob: float = 0.0) -> CaiT:
    """CaiT-S-24: width 384, 24 + 2 blocks, 8 heads; 46,916,200 parameters with 1000 classes."""
    return _variant("s24", num_classes, input_shape, stochastic_depth_prob)


def cait_tiny(num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3), patch_size: int = 4) -> CaiT:
    """A CaiT small enough to train on a CPU in seconds: width 32, 2 + 2 blocks, 4 heads, MLPs
    of 64 units, LayerScale from 0.1."""
    return cait(patch_size, 32, 2, 4, mlp_ratio=2.0, num_classes=num_classes, input_shape=input_shape,
                name="cait_tiny")
