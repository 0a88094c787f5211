"""CrossViT (Chen, Fan & Panda 2021, "CrossViT: Cross-Attention Multi-Scale Vision Transformer
for Image Classification"): two ViT branches on patches of two sizes that exchange information
through their class tokens.

    branch i:   z_i = [x_cls,i; patches of size p_i] + E_pos,i   (width D_i; the image resized to
                the branch's ``image_sizes[i]`` first when it differs, bicubic as the reference)
    K multi-scale blocks, each:
        z_i = transformer blocks (``depths[i]`` of DeiT's pre-norm blocks) of z_i, per branch
        cross-attention fusion, for each branch i with the other branch j:
            c'   = f_i(z_i[cls])                       f_i = Linear(GELU(LN(.))): D_i -> D_j
            u    = [c'; z_j[patches]]
            c''  = c' + W_o softmax(q k^T / sqrt(d)) v   q = W_q LN(u)[cls], k, v = W_k, W_v LN(u)
            z_i  = [g_i(c''); z_i[patches]]            g_i = Linear(GELU(LN(.))): D_j -> D_i
    y = (head_0(LN(z_0)[cls]) + head_1(LN(z_1)[cls])) / 2

The class token of one branch, projected to the other's width, is the only query: it reads the
other branch's patch tokens (and itself) in linear time, and returns to its branch projected
back, replacing the branch's class token. The attention is CaiT's
:class:`~lamina.models.ClassAttention` (heads of the other branch). The two heads' scores are
added and halved (the reference code's mean).

Presets (:data:`CROSSVIT_CONFIGS`, 1000 classes, patches 12 and 16, image sizes 240 and 224,
three multi-scale blocks): ``crossvit_tiny_240`` (D 96/192, depths 1/4, 3 heads, MLP ratio 4):
7,014,800 parameters (the paper: 7.0M); ``crossvit_9_240`` (D 128/256, depths 1/3, 4 heads,
MLP ratio 3): 8,553,296 (8.6M).
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish
from lamina.models.cait import ClassAttention
from lamina.models.deit import DeiTBlock, _patch_embedding, _tokens_shape
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import as_tensor

__all__ = ["CROSSVIT_CONFIGS", "CrossAttentionFusion", "CrossViT", "MultiScaleBlock", "crossvit", "crossvit_9_240",
           "crossvit_tiny", "crossvit_tiny_240"]

LAYER_NORM_EPS = 1e-6
POSITION_STD = 0.02

# variant -> (widths, transformer blocks per branch, heads, MLP ratio); 3 multi-scale blocks
CROSSVIT_CONFIGS: dict[str, tuple[tuple[int, int], tuple[int, int], int, float]] = {
    "tiny": ((96, 192), (1, 4), 3, 4.0), "9": ((128, 256), (1, 3), 4, 3.0)}


def _pair(value, what: str) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(items) != 2:
        raise ValueError(f"{what} must give two values (small-patch branch, large-patch branch), got {value!r}")
    return positive_int(items[0], what), positive_int(items[1], what)


def _projection(dim: int, name: str) -> nn.Sequential:
    """LN - GELU - Linear(dim): a class token moved between the branches' widths."""
    return nn.Sequential(nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="0"), nn.GELU(name="1"), nn.Dense(dim, name="2"),
                         name=name)


def _cls(x) -> Tensor:
    return F.getitem(x, (slice(None), slice(0, 1)))


def _patches(x) -> Tensor:
    return F.getitem(x, (slice(None), slice(1, None)))


@register_with_arguments
class CrossAttentionFusion(Block):
    """One branch's cross-attention fusion (module docstring), called as ``fusion(x, other)`` on
    the branch's tokens (N, 1 + P, ``dim``) and the other branch's (N, 1 + P', ``other_dim``);
    returns the branch's tokens with a new class token. Sub-layers ``proj`` (LN, GELU, Linear to
    other_dim), ``norm``, ``attn`` (:class:`~lamina.models.ClassAttention`, ``num_heads``),
    ``revert`` (LN, GELU, Linear back to dim)."""

    default_name = "fusion"

    def __init__(self, dim: int, other_dim: int, num_heads: int, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "CrossAttentionFusion: dim")
        self.other_dim = positive_int(other_dim, "CrossAttentionFusion: other_dim")
        self.proj = _projection(self.other_dim, "proj")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.attn = ClassAttention(self.other_dim, num_heads, qkv_bias, name="attn")
        self.revert = _projection(self.dim, "revert")

    def trace(self, shape, step):
        if not isinstance(shape, (list, tuple)) or len(shape) != 2:
            raise ShapeError(f"{self._label()}: got input shapes {shape!r}; expected the tokens of two branches")
        mine, other = _tokens_shape(self, shape[0], self.dim), _tokens_shape(self, shape[1], self.other_dim)
        cls = step(self.proj, (mine[0], 1, self.dim))
        joined = (other[0], other[1], self.other_dim)
        step(self.attn, step(self.norm, joined))
        step(self.revert, cls)
        return mine

    def forward(self, x, other) -> Tensor:
        x, other = as_tensor(x), as_tensor(other)
        _tokens_shape(self, x.shape, self.dim)
        _tokens_shape(self, other.shape, self.other_dim)
        cls = self.proj(_cls(x))
        cls = F.add(cls, self.attn(self.norm(F.concat([cls, _patches(other)], axis=1))))
        return F.concat([self.revert(cls), _patches(x)], axis=1)


@register_with_arguments
class MultiScaleBlock(Block):
    """A multi-scale block on the two branches' tokens, called as ``block(x_small, x_large)`` and
    returning the pair: ``branch0`` / ``branch1`` (``depths[i]`` :class:`~lamina.models.DeiTBlock`
    of width ``dims[i]``, ``num_heads[i]`` heads, MLPs of ``mlp_ratios[i]`` dims[i] units), then
    ``fusion0`` and ``fusion1`` (:class:`CrossAttentionFusion`) on the transformed tokens, each
    with the other branch's heads."""

    default_name = "multi_scale_block"

    def __init__(self, dims, depths, num_heads, mlp_ratios=(4.0, 4.0), qkv_bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.dims = _pair(dims, "MultiScaleBlock: dims")
        depths, heads = _pair(depths, "MultiScaleBlock: depths"), _pair(num_heads, "MultiScaleBlock: num_heads")
        ratios = tuple(float(r) for r in mlp_ratios)
        for i in range(2):
            self._modules[f"branch{i}"] = nn.Sequential(*[
                DeiTBlock(self.dims[i], heads[i], positive_int(int(self.dims[i] * ratios[i]), "MultiScaleBlock: mlp"),
                          name=str(k)) for k in range(depths[i])], name=f"branch{i}")
            self._modules[f"fusion{i}"] = CrossAttentionFusion(self.dims[i], self.dims[1 - i], heads[1 - i], qkv_bias,
                                                               name=f"fusion{i}")

    def trace(self, shape, step):
        if not isinstance(shape, (list, tuple)) or len(shape) != 2:
            raise ShapeError(f"{self._label()}: got input shapes {shape!r}; expected the tokens of two branches")
        shapes = [step(self._modules[f"branch{i}"], _tokens_shape(self, shape[i], self.dims[i])) for i in range(2)]
        return [step(self._modules[f"fusion{i}"], [shapes[i], shapes[1 - i]]) for i in range(2)]

    def forward(self, small, large) -> tuple[Tensor, Tensor]:
        tokens = [self._modules[f"branch{i}"](as_tensor(x)) for i, x in enumerate((small, large))]
        return tuple(self._modules[f"fusion{i}"](tokens[i], tokens[1 - i]) for i in range(2))


@register_with_arguments
class CrossViT(Block):
    """The CrossViT classifier of the module docstring on (N, H, W, C) images: sub-layers
    ``patch_embed0`` / ``patch_embed1`` (Conv2D ``proj`` of kernel = stride = ``patch_sizes[i]``),
    ``blocks`` (``num_blocks`` :class:`MultiScaleBlock`), ``norm0`` / ``norm1``, ``head0`` /
    ``head1``; parameters ``cls_token{i}`` (1, 1, D_i) and ``pos_embed{i}`` (1, 1 + P_i, D_i).
    Branch i sees the image resized to ``image_sizes[i]`` (bicubic) when its size differs."""

    default_name = "crossvit"

    def __init__(self, num_classes: int, patch_sizes=(12, 16), image_sizes=(240, 224), dims=(128, 256),
                 depths=(1, 3), num_heads=(4, 4), mlp_ratios=(3.0, 3.0), num_blocks: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "CrossViT: num_classes")
        self.patch_sizes = _pair(patch_sizes, "CrossViT: patch_sizes")
        self.image_sizes = _pair(image_sizes, "CrossViT: image_sizes")
        self.dims = _pair(dims, "CrossViT: dims")
        heads = _pair(num_heads, "CrossViT: num_heads")
        for i in range(2):
            if self.image_sizes[i] % self.patch_sizes[i]:
                raise ValueError(f"CrossViT: image size {self.image_sizes[i]} of branch {i} is not a multiple of its "
                                 f"patch size {self.patch_sizes[i]}")
            if self.dims[i] % heads[i]:
                raise ValueError(f"CrossViT: dim {self.dims[i]} of branch {i} is not divisible by num_heads {heads[i]}")
        self.num_patches = tuple((s // p) ** 2 for s, p in zip(self.image_sizes, self.patch_sizes))
        for i in range(2):
            self._modules[f"patch_embed{i}"] = _patch_embedding(self.dims[i], self.patch_sizes[i])
        count = positive_int(num_blocks, "CrossViT: num_blocks")
        self.blocks = nn.ModuleList([MultiScaleBlock(self.dims, depths, heads, mlp_ratios, name=str(k))
                                     for k in range(count)])
        for i in range(2):
            self._modules[f"norm{i}"] = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name=f"norm{i}")
            self._modules[f"head{i}"] = nn.Dense(self.num_classes, name=f"head{i}")

    def _images(self, shape) -> tuple:
        if len(shape) != 4 or shape[3] is None:
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; expected NHWC images with a "
                             "known channel count")
        return tuple(shape)

    def trace(self, shape, step):
        shape = self._images(shape)
        tokens = []
        for i, size in enumerate(self.image_sizes):
            patches = step(self._modules[f"patch_embed{i}"], (shape[0], size, size, shape[3]))
            tokens.append((patches[0], patches[1] + 1, self.dims[i]))
        for block in self.blocks:
            tokens = step(block, tokens)
        heads = [step(self._modules[f"head{i}"], step(self._modules[f"norm{i}"], (shape[0], self.dims[i])))
                 for i in range(2)]
        return heads[0]

    def build(self, input_shape) -> None:
        super().build(input_shape)
        normal, dtype = initializers.normal(POSITION_STD), backend.get_default_dtype()
        for i, (d, count) in enumerate(zip(self.dims, self.num_patches)):
            self.add_parameter(f"cls_token{i}", normal((1, 1, d), d, d, dtype))
            self.add_parameter(f"pos_embed{i}", normal((1, 1 + count, d), count, d, dtype))

    def embed(self, x, branch: int) -> Tensor:
        """Branch ``branch``'s tokens [cls; patches] + positions for NHWC images ``x``."""
        size = self.image_sizes[branch]
        if tuple(x.shape[1:3]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        patches = self._modules[f"patch_embed{branch}"](x)
        cls = F.broadcast_to(getattr(self, f"cls_token{branch}"), (x.shape[0], 1, self.dims[branch]))
        return F.add(F.concat([cls, patches], axis=1), getattr(self, f"pos_embed{branch}"))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        tokens = (self.embed(x, 0), self.embed(x, 1))
        for block in self.blocks:
            tokens = block(*tokens)
        scores = [self._modules[f"head{i}"](self._modules[f"norm{i}"](F.getitem(t, (slice(None), 0))))
                  for i, t in enumerate(tokens)]
        return F.mul(F.add(scores[0], scores[1]), 0.5)

    def extra_repr(self) -> str:
        return f"patch_sizes={self.patch_sizes}, image_sizes={self.image_sizes}, dims={self.dims}"


def crossvit(patch_sizes=(12, 16), image_sizes=(240, 224), dims=(128, 256), depths=(1, 3), num_heads: int = 4,
             mlp_ratio: float = 3.0, num_blocks: int = 3, num_classes: int = 1000,
             input_shape: tuple[int, int, int] = (240, 240, 3), name: str = "crossvit") -> CrossViT:
    """A CrossViT (unbuilt) for ``input_shape`` images: two branches of ``patch_sizes``,
    ``image_sizes`` and widths ``dims``, ``num_blocks`` multi-scale blocks of ``depths``
    transformer blocks, ``num_heads`` heads and MLP ratio ``mlp_ratio`` in both branches."""
    input_shape = check_input(input_shape, name)
    model = CrossViT(num_classes, patch_sizes, image_sizes, dims, depths, (num_heads, num_heads),
                     (mlp_ratio, mlp_ratio), num_blocks, name=name)
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape) -> CrossViT:
    dims, depths, heads, ratio = CROSSVIT_CONFIGS[variant]
    return crossvit((12, 16), (240, 224), dims, depths, heads, ratio, 3, num_classes, input_shape,
                    name=f"crossvit_{variant}_240")


def crossvit_tiny_240(num_classes: int = 1000, input_shape: tuple[int, int, int] = (240, 240, 3)) -> CrossViT:
    """CrossViT-Ti: widths 96 / 192, 3 x (1 + 4) blocks, 3 heads; 7,014,800 parameters with 1000 classes."""
    return _variant("tiny", num_classes, input_shape)


def crossvit_9_240(num_classes: int = 1000, input_shape: tuple[int, int, int] = (240, 240, 3)) -> CrossViT:
    """CrossViT-9: widths 128 / 256, 3 x (1 + 3) blocks, 4 heads; 8,553,296 parameters with 1000 classes."""
    return _variant("9", num_classes, input_shape)


def crossvit_tiny(num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 1),
                  patch_sizes=(4, 8)) -> CrossViT:
    """A CrossViT small enough to train on a CPU in seconds: widths 16 / 32, one multi-scale block
    of 1 + 1 transformer blocks, 2 heads, MLP ratio 2, both branches at the input's size."""
    size = check_input(input_shape, "crossvit_tiny")[0]
    return crossvit(patch_sizes, (size, size), (16, 32), (1, 1), 2, 2.0, 1, num_classes, input_shape,
                    name="crossvit_tiny")
