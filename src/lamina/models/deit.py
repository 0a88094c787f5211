"""DeiT (Touvron et al. 2021, "Training data-efficient image transformers & distillation
through attention") in timm's layout and names: a Vision Transformer, optionally with a
distillation token.

    tokens:   the image cut into P patches by one p x p / p convolution (``patch_embed.proj``),
              read row by row (P, D)
    z_0 =     [x_cls; (x_dist;) x_1; ...; x_P] + E_pos     (``cls_token``, ``dist_token``,
              ``pos_embed`` of P + 1, or P + 2 rows)
    z_l =     pre-norm blocks (``blocks.l``): z += Attn(LN_1(z)); z += MLP(LN_2(z)), with
              Attn(u) = proj(concat_h softmax(Q_h K_h^T / sqrt(d)) V_h), [Q K V] = qkv(u), and
              MLP(u) = fc2(GELU(fc1(u))) of 4 D units; LayerNorms of eps 1e-6
    y =       head(LN(z_L)[0]); distilled: y_dist = head_dist(LN(z_L)[1])

The distilled model returns (y + y_dist) / 2 in evaluation mode and the pair (y, y_dist) in
training mode, for :func:`hard_distillation_loss`: the class token learns the labels, the
distillation token a teacher's hard decisions. Names are timm's (``blocks.N.attn.qkv``,
``blocks.N.mlp.fc1``, ``norm``, ``head``, ``head_dist``), so
:func:`~lamina.models.load_timm_state_dict` loads timm's weights.

Parameters with 1000 classes at 224x224x3: deit_tiny_patch16_224 5,717,416; deit_small 22,050,664;
deit_base 86,567,656; distilled: tiny 5,910,800, small 22,436,432, base 87,338,192.
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DEIT_CONFIGS", "DeiT", "DeiTAttention", "DeiTBlock", "FusedQKVAttention", "deit",
           "deit_base_distilled_patch16_224", "deit_base_patch16_224", "deit_small_distilled_patch16_224",
           "deit_small_patch16_224", "deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224",
           "hard_distillation_loss"]

LAYER_NORM_EPS = 1e-6
POSITION_STD = 0.02

# variant -> (width D, heads); 12 blocks on 16x16 patches, MLPs of 4 D units
DEIT_CONFIGS: dict[str, tuple[int, int]] = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def _tokens_shape(layer, shape, features: int) -> tuple:
    shape = check_shape_ndim(layer, shape, 3, f"tokens (batch, tokens, {features})")
    if shape[2] not in (None, features):
        raise ShapeError(f"{layer._label()}: got tokens of shape {tuple(shape)}; expected {features} features")
    return tuple(shape)


def _patch_embedding(dim: int, patch_size: int) -> nn.Sequential:
    """``patch_embed``: a ``patch_size`` x ``patch_size`` / ``patch_size`` convolution to ``dim``
    channels (``proj``), its (N, h, w, dim) map flattened to (N, h w, dim) patch tokens."""
    return nn.Sequential(nn.Conv2D(dim, patch_size, stride=patch_size, name="proj"),
                         nn.Reshape((-1, dim), name="flatten"), name="patch_embed")


def _patch_image_shape(model, shape) -> tuple:
    """``shape`` checked as NHWC images whose height and width are known multiples of ``model.patch_size``."""
    shape = nhwc(model, shape)
    if any(n is None or n % model.patch_size for n in shape[1:3]):
        raise ShapeError(f"{model._label()}: got images of shape {tuple(shape)}; their height and width must be "
                         f"known multiples of the patch size {model.patch_size}")
    return shape


def _embed_patches(model, x) -> Tensor:
    """``model.patch_embed`` of NHWC images ``x``, checked to give the ``model.num_patches`` it was built for."""
    if x.ndim != 4:
        raise input_error(model, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
    patches = model.patch_embed(x)
    if patches.shape[1] != model.num_patches:
        raise input_error(model, x, f"images of {model.num_patches} patches of {model.patch_size}x"
                                    f"{model.patch_size}, as the model was built for")
    return patches


@register_layer
class FusedQKVAttention(Module):
    """softmax(Q_h K_h^T / sqrt(d)) V_h for every head h, joined: (N, T, 3 D) [Q; K; V] ->
    (N, T, D), each of Q, K, V split into ``num_heads`` heads of d = D / heads features (timm's
    head layout). No weights: the projections around it are Dense layers."""

    default_name = "attend"

    def __init__(self, num_heads: int, name: str | None = None):
        super().__init__(name=name)
        self.num_heads = positive_int(num_heads, "FusedQKVAttention: num_heads")

    def _dim(self, shape) -> int:
        shape = check_shape_ndim(self, shape, 3, "projected tokens (batch, tokens, 3 * dim)")
        if shape[2] is None or shape[2] % (3 * self.num_heads):
            raise ShapeError(f"{self._label()}: got projected tokens of shape {tuple(shape)}; their features must "
                             f"be 3 * dim with dim divisible by num_heads={self.num_heads}")
        return shape[2] // 3

    def forward(self, qkv) -> Tensor:
        qkv = as_tensor(qkv)
        dim = self._dim(qkv.shape)
        batch, tokens = qkv.shape[:2]
        split = F.reshape(qkv, batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = (F.getitem(F.transpose(split, 2, 0, 3, 1, 4), i) for i in range(3))    # (N, heads, T, d)
        context = F.scaled_dot_product_attention(q, k, v)
        return F.reshape(F.transpose(context, 0, 2, 1, 3), batch, tokens, dim)

    def compute_output_shape(self, input_shape):
        dim = self._dim(input_shape)
        return (input_shape[0], input_shape[1], dim)

    def macs(self, input_shapes, output_shapes) -> int:
        """Q K^T and A V: 2 T^2 D."""
        tokens, features = input_shapes[0]
        return 2 * tokens * tokens * (features // 3)

    def get_config(self) -> dict:
        return {"num_heads": self.num_heads, "name": self.name}

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}"


@register_layer
class DeiTAttention(Block):
    """Multi-head self-attention on tokens (N, T, ``dim``) as timm's ``Attention``: one fused
    projection ``qkv`` (D -> 3 D), the attention of every head (``attend``,
    :class:`FusedQKVAttention`) and the output projection ``proj``."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "DeiTAttention: dim")
        self.num_heads = positive_int(num_heads, "DeiTAttention: num_heads")
        if dim % num_heads:
            raise ValueError(f"DeiTAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.head_dim = dim // num_heads
        self.qkv = nn.Dense(3 * dim, name="qkv")
        self.attend = FusedQKVAttention(num_heads, name="attend")
        self.proj = nn.Dense(dim, name="proj")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        return step(self.proj, step(self.attend, step(self.qkv, shape)))

    def forward(self, x) -> Tensor:
        _tokens_shape(self, x.shape, self.dim)
        return self.proj(self.attend(self.qkv(x)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}"


@register_layer
class DeiTBlock(Block):
    """A pre-norm transformer block on tokens (N, T, ``dim``): z += attn(norm1(z)),
    z += mlp(norm2(z)); sub-layers ``norm1``, ``attn`` (:class:`DeiTAttention`), ``norm2``,
    ``mlp`` (fc1 of ``mlp_hidden`` units, GELU, fc2)."""

    default_name = "deit_block"

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "DeiTBlock: dim")
        self.mlp_hidden = positive_int(mlp_hidden, "DeiTBlock: mlp_hidden")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = DeiTAttention(dim, num_heads, name="attn")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = timm_mlp(mlp_hidden, dim, "mlp")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        step(self.attn, step(self.norm1, shape))
        return step(self.mlp, step(self.norm2, shape))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.attn(self.norm1(x)))
        return F.add(x, self.mlp(self.norm2(x)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.attn.num_heads, "mlp_hidden": self.mlp_hidden, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.attn.num_heads}, mlp={self.mlp_hidden}"


@register_layer
class DeiT(Block):
    """The DeiT / ViT classifier of the module docstring on (N, H, W, C) images, H and W
    multiples of ``patch_size``: sub-layers ``patch_embed`` (``proj``), ``blocks``, ``norm``,
    ``head`` (and ``head_dist`` when ``distilled``); parameters ``cls_token`` (1, 1, D),
    ``dist_token`` (1, 1, D) when distilled, ``pos_embed`` (1, P + tokens, D)."""

    default_name = "deit"

    def __init__(self, patch_size: int, num_classes: int, dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, distilled: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = positive_int(patch_size, "DeiT: patch_size")
        self.num_classes = positive_int(num_classes, "DeiT: num_classes")
        self.dim = positive_int(dim, "DeiT: dim")
        self.depth = positive_int(depth, "DeiT: depth")
        self.num_heads = positive_int(num_heads, "DeiT: num_heads")
        self.mlp_ratio, self.distilled = float(mlp_ratio), bool(distilled)
        self.num_prefix_tokens = 2 if self.distilled else 1
        self.num_patches: int | None = None
        self.patch_embed = _patch_embedding(dim, patch_size)
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.Sequential(*[DeiTBlock(dim, num_heads, hidden, name=str(k)) for k in range(depth)],
                                    name="blocks")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.head = nn.Dense(num_classes, name="head")
        if self.distilled:
            self.head_dist = nn.Dense(num_classes, name="head_dist")

    def trace(self, shape, step):
        shape = _patch_image_shape(self, shape)
        patches = step(self.patch_embed, shape)
        tokens = step(self.blocks, (patches[0], patches[1] + self.num_prefix_tokens, self.dim))
        pooled = (step(self.norm, tokens)[0], self.dim)
        if self.distilled:
            step(self.head_dist, pooled)
        return step(self.head, pooled)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        shape = _patch_image_shape(self, input_shape)
        self.num_patches = (shape[1] // self.patch_size) * (shape[2] // self.patch_size)
        d, rows, dtype = self.dim, self.num_patches + self.num_prefix_tokens, backend.get_default_dtype()
        normal = initializers.normal(POSITION_STD)
        self.add_parameter("cls_token", normal((1, 1, d), d, d, dtype))
        if self.distilled:
            self.add_parameter("dist_token", normal((1, 1, d), d, d, dtype))
        self.add_parameter("pos_embed", normal((1, rows, d), rows, d, dtype))

    def prefix_tokens(self) -> list[Tensor]:
        """The learned tokens put before the patches: [cls_token] or [cls_token, dist_token]."""
        return [self.cls_token, self.dist_token] if self.distilled else [self.cls_token]

    def forward(self, x):
        patches = _embed_patches(self, x)
        batch = patches.shape[0]
        prefix = [F.broadcast_to(token, (batch, 1, self.dim)) for token in self.prefix_tokens()]
        z = self.norm(self.blocks(F.add(F.concat([*prefix, patches], axis=1), self.pos_embed)))
        scores = self.head(F.getitem(z, (slice(None), 0)))
        if not self.distilled:
            return scores
        scores_dist = self.head_dist(F.getitem(z, (slice(None), 1)))
        if self.training:
            return scores, scores_dist
        return F.mul(F.add(scores, scores_dist), 0.5)

    def get_config(self) -> dict:
        return {"patch_size": self.patch_size, "num_classes": self.num_classes, "dim": self.dim, "depth": self.depth,
                "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "distilled": self.distilled,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, dim={self.dim}, depth={self.depth}, heads={self.num_heads}, "
                f"distilled={self.distilled}")


def hard_distillation_loss(outputs, labels, teacher_logits) -> Tensor:
    """DeiT's hard distillation: L = CE(y_cls, labels) / 2 + CE(y_dist, argmax teacher) / 2.

    ``outputs``: the pair (class-token logits, distillation-token logits) (N, classes) a
    distilled :class:`DeiT` returns in training mode; ``labels`` (N,) class indices;
    ``teacher_logits`` (N, classes), whose argmax gives the distillation targets (no gradient
    flows to the teacher)."""
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        raise TypeError("hard_distillation_loss: outputs must be the pair (class logits, distillation logits) a "
                        f"distilled DeiT returns in training mode, got {type(outputs).__name__}")
    scores, scores_dist = outputs
    teacher = teacher_logits.numpy() if isinstance(teacher_logits, Tensor) else backend.xp.asarray(teacher_logits)
    if tuple(teacher.shape) != tuple(scores_dist.shape):
        raise ShapeError(f"hard_distillation_loss: teacher_logits of shape {tuple(teacher.shape)} do not match the "
                         f"student's logits {tuple(scores_dist.shape)}")
    targets = backend.xp.argmax(teacher, axis=-1)
    return F.add(F.mul(F.cross_entropy(scores, labels), 0.5), F.mul(F.cross_entropy(scores_dist, targets), 0.5))


def deit(patch_size: int = 16, dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
         distilled: bool = False, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
         name: str = "deit") -> DeiT:
    """A DeiT (unbuilt): ``depth`` blocks of width ``dim`` with ``num_heads`` heads and MLPs of
    int(``mlp_ratio`` D) units on ``patch_size`` patches, with a distillation token and head
    when ``distilled``. See the module docstring."""
    input_shape = check_input(input_shape, name)
    if input_shape[0] % patch_size or input_shape[1] % patch_size:
        raise ValueError(f"{name}: the image size {input_shape[:2]} must be a multiple of the patch size {patch_size}")
    model = DeiT(patch_size, num_classes, dim, depth, num_heads, mlp_ratio, distilled, name=name)
    return finish(model, input_shape)


def _variant(variant: str, distilled: bool, num_classes: int, input_shape) -> DeiT:
    dim, heads = DEIT_CONFIGS[variant]
    kind = "_distilled" if distilled else ""
    return deit(16, dim, 12, heads, distilled=distilled, num_classes=num_classes, input_shape=input_shape,
                name=f"deit_{variant}{kind}_patch16_224")


def deit_tiny_patch16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-Ti: width 192, 3 heads, 12 blocks on 16x16 patches; 5,717,416 parameters with 1000 classes."""
    return _variant("tiny", False, num_classes, input_shape)


def deit_small_patch16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-S: width 384, 6 heads, 12 blocks on 16x16 patches; 22,050,664 parameters with 1000 classes."""
    return _variant("small", False, num_classes, input_shape)


def deit_base_patch16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-B: width 768, 12 heads, 12 blocks on 16x16 patches; 86,567,656 parameters with 1000 classes."""
    return _variant("base", False, num_classes, input_shape)


def deit_tiny_distilled_patch16_224(num_classes: int = 1000,
                                    input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-Ti with a distillation token and head; 5,910,800 parameters with 1000 classes."""
    return _variant("tiny", True, num_classes, input_shape)


def deit_small_distilled_patch16_224(num_classes: int = 1000,
                                     input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-S with a distillation token and head; 22,436,432 parameters with 1000 classes."""
    return _variant("small", True, num_classes, input_shape)


def deit_base_distilled_patch16_224(num_classes: int = 1000,
                                    input_shape: tuple[int, int, int] = (224, 224, 3)) -> DeiT:
    """DeiT-B with a distillation token and head; 87,338,192 parameters with 1000 classes."""
    return _variant("base", True, num_classes, input_shape)
