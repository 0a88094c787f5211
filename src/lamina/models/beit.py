"""BEiT (Bao et al. 2022, "BEiT: BERT Pre-Training of Image Transformers"): a ViT pre-trained by
predicting the visual tokens of masked patches; the masking, the loss and the tokenizers are in
:mod:`lamina.models.beit_pretraining`.

The backbone differs from ViT in three places:

* no absolute position embedding: every layer has its own relative position bias, one learned
  scalar per head for each offset between two patches and three more for the class token::

      A = softmax(Q K^T / sqrt(d) + B),   B[i, j] = T[idx(i, j)]   (per head)
      idx(i, j) = (dy + H - 1)(2W - 1) + dx + W - 1     for patches i, j at offset (dy, dx)
      idx(cls, patch) = R,  idx(patch, cls) = R + 1,  idx(cls, cls) = R + 2,  R = (2H - 1)(2W - 1)

  on an H x W patch grid, so the table T has (2H - 1)(2W - 1) + 3 rows
  (:func:`beit_relative_position_index`, :class:`BEiTAttention`);
* LayerScale on both residual branches (:class:`~lamina.models.LayerScale`, from 0.1)::

      x = x + diag(lambda_1) Attn(LN(x)),   x = x + diag(lambda_2) MLP(LN(x))

  and the query and value projections have biases, the key projection none;
* masked image modelling: the embeddings of the masked patches are replaced by a learned
  [MASK] vector e_M before the encoder, x_p <- m_p e_M + (1 - m_p) x_p, and a linear head on the
  final, layer-normed patch tokens scores the ``vocab_size`` visual tokens
  (:meth:`BEiT.masked_token_scores`).

As a classifier (fine-tuning) the patch tokens are mean-pooled, layer-normed (``fc_norm``) and
fed to ``head``. :func:`beit_base_patch16_224` has 86,530,984 parameters with 1000 classes (the
published 86M); :func:`beit_tiny` trains on a CPU in seconds.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, finish, nhwc
from lamina.models.cait import LayerScale
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, pair, positive_int
from lamina.nn.module import as_tensor

__all__ = ["BEiT", "BEiTAttention", "BEiTBlock", "beit", "beit_base_patch16_224", "beit_relative_position_index",
           "beit_tiny"]

LAYER_NORM_EPS = 1e-6
TOKEN_STD = 0.02


def beit_relative_position_index(grid_size) -> np.ndarray:
    """The (T, T) rows of the bias table for T = 1 + H W tokens [cls; patches row by row] on an
    (H, W) patch grid (module docstring): patch pairs by their offset, then R, R + 1, R + 2
    for cls -> patch, patch -> cls and cls -> cls, R = (2H - 1)(2W - 1)."""
    h, w = pair(grid_size, "beit_relative_position_index: grid_size")
    if min(h, w) < 1:
        raise ValueError(f"beit_relative_position_index: grid_size must be positive, got {grid_size!r}")
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    dy = rows[:, None] - rows[None, :] + h - 1
    dx = cols[:, None] - cols[None, :] + w - 1
    offsets = (2 * h - 1) * (2 * w - 1)
    index = np.empty((h * w + 1, h * w + 1), dtype=np.int64)
    index[1:, 1:] = dy * (2 * w - 1) + dx
    index[0, 1:], index[1:, 0], index[0, 0] = offsets, offsets + 1, offsets + 2
    return index


def _split_heads(x, heads: int) -> Tensor:
    n, t, d = x.shape
    return F.transpose(F.reshape(x, n, t, heads, d // heads), 0, 2, 1, 3)


def _check_tokens(layer, x, dim: int, tokens: int) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 3 or tuple(x.shape[1:]) != (tokens, dim):
        raise input_error(layer, x, f"tokens (batch, {tokens}, {dim}): the class token and the {tokens - 1} patches")
    return x


def _tokens_shape(layer, shape, dim: int, tokens: int) -> tuple:
    shape = tuple(shape)
    if len(shape) != 3 or shape[1] not in (None, tokens) or shape[2] not in (None, dim):
        raise ShapeError(f"{layer._label()}: got tokens of shape {shape}; expected (batch, {tokens}, {dim})")
    return shape


@register_with_arguments
class BEiTAttention(Block):
    """Multi-head self-attention with BEiT's relative position bias on tokens (N, 1 + H W,
    ``dim``) of an ``grid_size`` (H, W) patch grid: ``qkv`` (dim -> 3 dim, no bias) plus the
    parameters ``q_bias`` and ``v_bias`` (the key gets none), the bias table
    ``relative_position_bias_table`` ((2H - 1)(2W - 1) + 3, heads), starting at zero, and
    ``proj``."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, grid_size, qkv_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = positive_int(dim, "BEiTAttention: dim"), positive_int(num_heads,
                                                                                          "BEiTAttention: num_heads")
        if dim % num_heads:
            raise ValueError(f"BEiTAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.grid_size = pair(grid_size, "BEiTAttention: grid_size")
        self.relative_position_index = beit_relative_position_index(self.grid_size)
        self.tokens = self.relative_position_index.shape[0]
        self.qkv_bias = bool(qkv_bias)
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Dense(3 * dim, use_bias=False, name="qkv")
        self.proj = nn.Dense(dim, name="proj")
        dtype = backend.get_default_dtype()
        rows = int(self.relative_position_index.max()) + 1
        self.add_parameter("relative_position_bias_table", backend.xp.zeros((rows, num_heads), dtype=dtype))
        if self.qkv_bias:
            self.add_parameter("q_bias", backend.xp.zeros((dim,), dtype=dtype))
            self.add_parameter("v_bias", backend.xp.zeros((dim,), dtype=dtype))

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim, self.tokens)
        step(self.qkv, shape)
        return step(self.proj, shape)

    def relative_position_bias(self) -> Tensor:
        """B of every head, (num_heads, T, T), gathered from the table."""
        rows = F.take_rows(self.relative_position_bias_table, self.relative_position_index.reshape(-1))
        return F.transpose(F.reshape(rows, self.tokens, self.tokens, self.num_heads), 2, 0, 1)

    def forward(self, x) -> Tensor:
        x = _check_tokens(self, x, self.dim, self.tokens)
        qkv = self.qkv(x)
        if self.qkv_bias:
            zeros = Tensor(backend.xp.zeros((self.dim,), dtype=qkv.dtype))
            qkv = F.add(qkv, F.concat([self.q_bias, zeros, self.v_bias], axis=0))
        q, k, v = (_split_heads(F.getitem(qkv, (Ellipsis, slice(i * self.dim, (i + 1) * self.dim))), self.num_heads)
                   for i in range(3))
        logits = F.add(F.matmul(F.mul(q, self.scale), F.swapaxes(k, -1, -2)), self.relative_position_bias())
        out = F.matmul(F.softmax(logits, axis=-1), v)                              # (N, heads, T, d)
        n, heads, t, d = out.shape
        return self.proj(F.reshape(F.transpose(out, 0, 2, 1, 3), n, t, heads * d))

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}, grid={self.grid_size}"


@register_with_arguments
class BEiTBlock(Block):
    """A BEiT layer on tokens (N, 1 + H W, ``dim``): x += ls1(attn(norm1(x))),
    x += ls2(mlp(norm2(x))), ``attn`` a :class:`BEiTAttention` for ``grid_size``, ``ls1`` and
    ``ls2`` :class:`~lamina.models.LayerScale` from ``layer_scale_init``, ``mlp`` fc1 of
    int(``mlp_ratio`` dim) units, GELU, fc2."""

    default_name = "beit_block"

    def __init__(self, dim: int, num_heads: int, grid_size, mlp_ratio: float = 4.0, layer_scale_init: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "BEiTBlock: dim")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = BEiTAttention(dim, num_heads, grid_size, name="attn")
        self.ls1 = LayerScale(dim, layer_scale_init, name="ls1")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = timm_mlp(positive_int(int(dim * mlp_ratio), "BEiTBlock: dim * mlp_ratio"), dim, "mlp")
        self.ls2 = LayerScale(dim, layer_scale_init, name="ls2")

    def trace(self, shape, step):
        step(self.ls1, step(self.attn, step(self.norm1, shape)))
        return step(self.ls2, step(self.mlp, step(self.norm2, shape)))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.ls1(self.attn(self.norm1(x))))
        return F.add(x, self.ls2(self.mlp(self.norm2(x))))


@register_with_arguments
class BEiT(Block):
    """BEiT (module docstring) on (N, H, W, ``channels``) images of ``image_size``:
    ``patch_embed`` (Conv2D ``proj`` of kernel = stride = ``patch_size``, ``flatten``),
    the parameter ``cls_token`` (1, 1, D), ``blocks`` (``depth`` :class:`BEiTBlock`), and

    * with ``num_classes``: ``fc_norm`` and ``head``; ``model(images)`` gives (N, num_classes)
      scores from the mean of the patch tokens;
    * with ``vocab_size``: the parameter ``mask_token`` (1, 1, D), ``norm`` and ``lm_head``;
      :meth:`masked_token_scores` gives (N, P, vocab_size) visual-token scores.
    """

    default_name = "beit"

    def __init__(self, image_size, patch_size: int = 16, num_classes: int | None = 1000, dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, layer_scale_init: float = 0.1,
                 vocab_size: int | None = None, channels: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.image_size = pair(image_size, "BEiT: image_size")
        self.patch_size = positive_int(patch_size, "BEiT: patch_size")
        if min(self.image_size) < 1 or any(s % self.patch_size for s in self.image_size):
            raise ValueError(f"BEiT: the image size {self.image_size} must be a positive multiple of the patch size "
                             f"{self.patch_size}")
        if num_classes is None and vocab_size is None:
            raise ValueError("BEiT: give num_classes (a classifier), vocab_size (masked image modelling) or both")
        self.grid_size = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dim, self.depth = positive_int(dim, "BEiT: dim"), positive_int(depth, "BEiT: depth")
        self.channels = positive_int(channels, "BEiT: channels")
        self.num_classes, self.vocab_size = num_classes, vocab_size
        self.patch_embed = nn.Sequential(nn.Conv2D(dim, self.patch_size, stride=self.patch_size, name="proj"),
                                         nn.Reshape((-1, dim), name="flatten"), name="patch_embed")
        self.blocks = nn.Sequential(*[BEiTBlock(dim, num_heads, self.grid_size, mlp_ratio, layer_scale_init,
                                                name=str(k)) for k in range(self.depth)], name="blocks")
        normal, dtype = initializers.truncated_normal(TOKEN_STD), backend.get_default_dtype()
        self.add_parameter("cls_token", normal((1, 1, dim), dim, dim, dtype))
        if num_classes is not None:
            self.num_classes = positive_int(num_classes, "BEiT: num_classes")
            self.fc_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="fc_norm")
            self.head = nn.Dense(self.num_classes, name="head")
        if vocab_size is not None:
            self.vocab_size = positive_int(vocab_size, "BEiT: vocab_size")
            self.add_parameter("mask_token", normal((1, 1, dim), dim, dim, dtype))
            self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
            self.lm_head = nn.Dense(self.vocab_size, name="lm_head")

    def _image_shape(self, shape) -> tuple:
        shape = nhwc(self, shape)
        expected = (*self.image_size, self.channels)
        if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; expected (batch, "
                             f"{expected[0]}, {expected[1]}, {expected[2]}) (the grid of the relative position bias)")
        return shape

    def trace(self, shape, step):
        shape = self._image_shape(shape)
        patches = step(self.patch_embed, shape)
        tokens = step(self.blocks, (patches[0], self.num_patches + 1, self.dim))
        out = tokens
        if self.vocab_size is not None:
            out = step(self.lm_head, step(self.norm, (tokens[0], self.num_patches, self.dim)))
        if self.num_classes is not None:
            out = step(self.head, step(self.fc_norm, (tokens[0], self.dim)))
        return out

    def features(self, images, masks=None) -> Tensor:
        """The tokens (N, 1 + P, D) after the last block, the class token first; the patches
        marked True in ``masks`` (N, P) (or (N, H/p, W/p)) have their embedding replaced by
        ``mask_token`` first."""
        x = as_tensor(images)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        self._image_shape(x.shape)
        tokens = self.patch_embed(x)
        if masks is not None:
            if self.vocab_size is None:
                raise ValueError(f"{self._label()}: masks need the [MASK] embedding of a model made with vocab_size")
            m = np.asarray(backend.to_numpy(masks.data) if isinstance(masks, Tensor) else masks).astype(bool)
            if m.size != x.shape[0] * self.num_patches or m.shape[0] != x.shape[0]:
                raise ShapeError(f"{self._label()}: masks of shape {m.shape}; expected ({x.shape[0]}, "
                                 f"{self.num_patches}) or ({x.shape[0]}, {self.grid_size[0]}, {self.grid_size[1]})")
            weight = backend.xp.asarray(m.reshape(x.shape[0], self.num_patches, 1).astype(tokens.dtype))
            tokens = F.add(F.mul(tokens, 1.0 - weight), F.mul(self.mask_token, weight))
        cls = F.broadcast_to(self.cls_token, (x.shape[0], 1, self.dim))
        return self.blocks(F.concat([cls, tokens], axis=1))

    def masked_token_scores(self, images, masks) -> Tensor:
        """The visual-token scores (N, P, vocab_size) of every patch, lm_head(norm(z_p)), with
        the ``masks`` patches replaced by [MASK]; the loss reads the masked ones
        (:func:`~lamina.models.beit_mim_loss`)."""
        if self.vocab_size is None:
            raise ValueError(f"{self._label()}: masked_token_scores needs a model made with vocab_size")
        tokens = self.features(images, masks)
        return self.lm_head(self.norm(F.getitem(tokens, (slice(None), slice(1, None)))))

    def forward(self, images) -> Tensor:
        if self.num_classes is None:
            raise ValueError(f"{self._label()}: classifying needs a model made with num_classes; use "
                             "masked_token_scores for masked image modelling")
        patches = F.getitem(self.features(images), (slice(None), slice(1, None)))
        return self.head(self.fc_norm(F.mean(patches, axis=1)))

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}, dim={self.dim}, depth={self.depth}"


def beit(image_size=224, patch_size: int = 16, num_classes: int | None = 1000, dim: int = 768, depth: int = 12,
         num_heads: int = 12, mlp_ratio: float = 4.0, layer_scale_init: float = 0.1, vocab_size: int | None = None,
         channels: int = 3, name: str = "beit") -> BEiT:
    """A :class:`BEiT` (unbuilt) for ``image_size`` (an int or (height, width)) images of
    ``channels`` channels."""
    model = BEiT(image_size, patch_size, num_classes, dim, depth, num_heads, mlp_ratio, layer_scale_init, vocab_size,
                 channels, name=name)
    return finish(model, (*model.image_size, model.channels))


def beit_base_patch16_224(num_classes: int | None = 1000, vocab_size: int | None = None) -> BEiT:
    """BEiT-Base/16 at 224x224x3: 12 layers of width 768, 12 heads, MLPs of 3072, LayerScale
    from 0.1; 86,530,984 parameters with 1000 classes (the published 86M). ``vocab_size=8192``
    gives the pre-training model of the paper (DALL-E's tokenizer has 8192 codes)."""
    return beit(224, 16, num_classes, vocab_size=vocab_size, name="beit_base_patch16_224")


def beit_tiny(num_classes: int | None = 10, vocab_size: int | None = None, image_size=16, patch_size: int = 4,
              channels: int = 1) -> BEiT:
    """A BEiT small enough to train on a CPU in seconds: width 32, 2 layers, 4 heads, MLPs of
    64 units, 4x4 patches of 16x16 single-channel images."""
    return beit(image_size, patch_size, num_classes, 32, 2, 4, 2.0, 0.1, vocab_size, channels, name="beit_tiny")
