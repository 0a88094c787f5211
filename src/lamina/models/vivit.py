"""ViViT (Arnab et al. 2021, "ViViT: A Video Vision Transformer") on NTHWC clips (batch,
frames, height, width, channels).

Tubelet embedding (:class:`TubeletEmbedding`): the clip is cut into non-overlapping t x h x w
tubes, each projected linearly to D features, one Conv3D with kernel = stride = (t, h, w):
n_t = T / t frame groups of n_s = (H / h)(W / w) tokens each, (N, n_t, n_s, D).

Model 2, the factorised encoder (``variant='factorised_encoder'``): a spatial transformer of
L_s layers reads each frame group on its own with its own class token, then a temporal
transformer of L_t layers reads the n_t class tokens (and a second class token):

    z^s_i = [z_cls^s; x_i,1 E; ...; x_i,n_s E] + E_pos^s     (frame group i = 1..n_t)
    h_i   = LN(Encoder_s(z^s_i))_0                          (its class token's features)
    z^t   = [z_cls^t; h_1; ...; h_n_t] + E_pos^t
    y     = head(LN(Encoder_t(z^t))_0)

Model 3, factorised self-attention (``variant='factorised_self_attention'``): L_s blocks over
all n_t n_s tokens (plus E_pos (1, n_t, n_s, D)) whose attention is split in two
(:class:`FactorisedSelfAttentionBlock`): spatial among the tokens of one frame group, then
temporal among the tokens of one spatial position; the tokens are averaged at the end.

The encoders' layers are pre-norm :class:`lamina.nn.TransformerEncoderLayer` (GELU MLPs,
LayerNorm eps 1e-6). :func:`inflate_patch_embedding` starts a tubelet kernel from a 2-D patch
embedding's: 'central' puts the 2-D kernel at frame floor(t / 2) and zeros elsewhere,
'average' repeats it divided by t; either way a static clip's tubelets equal the 2-D patch
embedding of its frame. :func:`vivit_b_16x2_fe` is ViViT-B/16x2 FE (32 frames of 224x224,
L_s 12, L_t 4, D 768): 115,062,928 parameters with 400 classes, the paper's 115.1M (Table 2);
with ``variant='factorised_self_attention'`` (12 blocks) 117,319,312, the paper's 117.3M.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int
from lamina.nn.module import as_tensor

__all__ = ["VIVIT_VARIANTS", "FactorisedSelfAttentionBlock", "TubeletEmbedding", "ViViT", "inflate_patch_embedding",
           "vivit_b_16x2_fe", "vivit_tiny"]

VIVIT_VARIANTS = ("factorised_encoder", "factorised_self_attention")
LAYER_NORM_EPS = 1e-6
TOKEN_STD = 0.02


def inflate_patch_embedding(w2d, t: int, mode: str = "central") -> np.ndarray:
    """A tubelet kernel (K, t, p_h, p_w, C) from a 2-D patch embedding's (K, p_h, p_w, C):

        central:  E_3d[:, floor(t / 2)] = E_2d, zeros at the other t - 1 frames
        average:  E_3d[:, i] = E_2d / t for every i

    so that a clip of one frame repeated gives the 2-D embedding of that frame (the bias is
    kept as it is)."""
    w = np.asarray(w2d.numpy() if isinstance(w2d, Tensor) else w2d)
    t = positive_int(t, "inflate_patch_embedding: t")
    if w.ndim != 4:
        raise ShapeError(f"inflate_patch_embedding: got a kernel of shape {w.shape}; expected a Conv2D weight "
                         f"(filters, height, width, channels)")
    if mode == "central":
        out = np.zeros((w.shape[0], t, *w.shape[1:]), w.dtype)
        out[:, t // 2] = w
        return out
    if mode == "average":
        return np.repeat(w[:, None] / t, t, axis=1).astype(w.dtype)
    raise ValueError(f"inflate_patch_embedding: mode must be 'central' or 'average', got {mode!r}")


@register_with_arguments
class TubeletEmbedding(Block):
    """Non-overlapping ``tubelet_size`` x p x p tubes of NTHWC clips projected to ``dim``
    features by ``proj`` (a Conv3D, kernel = stride = (t, p, p), with bias): (N, T, H, W, C)
    -> (N, T / t, (H / p)(W / p), dim), the tokens of each frame group row by row."""

    default_name = "tubelet_embedding"

    def __init__(self, dim: int, tubelet_size: int = 2, patch_size=16, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "TubeletEmbedding: dim")
        self.tubelet_size = positive_int(tubelet_size, "TubeletEmbedding: tubelet_size")
        self.patch_size = pair(patch_size, "TubeletEmbedding: patch_size")
        kernel = (self.tubelet_size, *self.patch_size)
        self.proj = nn.Conv3D(self.dim, kernel, stride=kernel, name="proj")

    def _check(self, shape) -> tuple:
        shape = check_shape_ndim(self, shape, 5, "a 5-D NTHWC clip shape (batch, frames, height, width, channels)")
        sizes = (self.tubelet_size, *self.patch_size)
        if any(n is not None and n % s for n, s in zip(shape[1:4], sizes)):
            raise ShapeError(f"{self._label()}: got clips of shape {tuple(shape)}; expected frames, height and width "
                             f"that are multiples of the tubelet {'x'.join(map(str, sizes))}")
        return tuple(shape)

    def trace(self, shape, step):
        out = step(self.proj, self._check(shape))
        tokens = None if None in out[2:4] else out[2] * out[3]
        return (out[0], out[1], tokens, self.dim)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5:
            raise input_error(self, x, "NTHWC clips (batch, frames, height, width, channels)")
        self._check(x.shape)
        z = self.proj(x)
        return F.reshape(z, z.shape[0], z.shape[1], z.shape[2] * z.shape[3], self.dim)


@register_with_arguments
class FactorisedSelfAttentionBlock(Block):
    """ViViT's model-3 block on tokens (N, n_t, n_s, ``dim``):

        z += MSA_s(LN_1(z))   among the n_s tokens of each frame group
        z += MSA_t(LN_t(z))   among the n_t tokens of each spatial position
        z += MLP(LN_2(z))     (fc1 of ``mlp_dim`` units, GELU, fc2)

    Sub-layers ``norm1``, ``spatial_attn``, ``temporal_norm``, ``temporal_attn``, ``norm2``, ``mlp``."""

    default_name = "factorised_block"

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.num_heads = positive_int(dim, "FactorisedSelfAttentionBlock: dim"), int(num_heads)
        if positive_int(num_heads, "FactorisedSelfAttentionBlock: num_heads") and dim % num_heads:
            raise ValueError(f"FactorisedSelfAttentionBlock: dim {dim} is not divisible by num_heads {num_heads}")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.spatial_attn = nn.MultiHeadAttention(dim, num_heads, name="spatial_attn")
        self.temporal_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="temporal_norm")
        self.temporal_attn = nn.MultiHeadAttention(dim, num_heads, name="temporal_attn")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = timm_mlp(positive_int(mlp_dim, "FactorisedSelfAttentionBlock: mlp_dim"), dim, "mlp")

    def _check(self, shape) -> tuple:
        shape = check_shape_ndim(self, shape, 4, f"tokens (batch, frame groups, tokens per group, {self.dim})")
        if shape[3] not in (None, self.dim):
            raise ShapeError(f"{self._label()}: got tokens of shape {tuple(shape)}; expected {self.dim} features")
        return tuple(shape)

    def trace(self, shape, step):
        n, groups, tokens, d = self._check(shape)
        rows = None if None in (n, groups) else n * groups
        step(self.spatial_attn, step(self.norm1, (rows, tokens, d)))
        cols = None if None in (n, tokens) else n * tokens
        step(self.temporal_attn, step(self.temporal_norm, (cols, groups, d)))
        step(self.mlp, step(self.norm2, shape))
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n, groups, tokens, d = self._check(x.shape)
        spatial = F.reshape(self.norm1(x), n * groups, tokens, d)
        x = F.add(x, F.reshape(self.spatial_attn(spatial), n, groups, tokens, d))
        temporal = F.reshape(F.transpose(self.temporal_norm(x), 0, 2, 1, 3), n * tokens, groups, d)
        moved = F.transpose(F.reshape(self.temporal_attn(temporal), n, tokens, groups, d), 0, 2, 1, 3)
        x = F.add(x, moved)
        return F.add(x, self.mlp(self.norm2(x)))


def _encoder(depth: int, dim: int, heads: int, mlp_dim: int, name: str) -> nn.Sequential:
    return nn.Sequential(*[nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation="gelu",
                                                      norm_first=True, layer_norm_eps=LAYER_NORM_EPS, name=str(k))
                           for k in range(depth)], name=name)


@register_with_arguments
class ViViT(Block):
    """The ViViT classifier of the module docstring on (N, ``num_frames``, ``image_size``,
    ``in_channels``) clips: sub-layers ``tubelet_embed``, then for the factorised encoder
    ``spatial_encoder`` (``spatial_depth`` layers), ``spatial_norm``, ``temporal_encoder``
    (``temporal_depth`` layers), or for factorised self-attention ``blocks`` (``spatial_depth``
    :class:`FactorisedSelfAttentionBlock`; ``temporal_depth`` unused), then ``norm``, ``head``.
    Parameters: ``pos_embed`` ((1, 1 + n_s, D) spatial with the class token ``cls_token``
    (1, 1, D), and ``temporal_pos_embed`` (1, 1 + n_t, D) with ``temporal_cls_token``, for
    model 2; (1, n_t, n_s, D) for model 3). Outputs (N, num_classes) scores."""

    default_name = "vivit"

    def __init__(self, num_frames: int = 32, image_size=224, tubelet_size: int = 2, patch_size: int = 16,
                 in_channels: int = 3, dim: int = 768, spatial_depth: int = 12, temporal_depth: int = 4,
                 num_heads: int = 12, mlp_dim: int = 3072, num_classes: int = 400,
                 variant: str = "factorised_encoder", name: str | None = None):
        super().__init__(name=name)
        fn = "ViViT"
        if variant not in VIVIT_VARIANTS:
            raise ValueError(f"{fn}: variant must be one of {VIVIT_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.num_frames, self.image_size = positive_int(num_frames, f"{fn}: num_frames"), pair(image_size, fn)
        self.in_channels, self.dim = positive_int(in_channels, f"{fn}: in_channels"), positive_int(dim, f"{fn}: dim")
        self.tubelet_embed = TubeletEmbedding(dim, tubelet_size, patch_size, name="tubelet_embed")
        sizes = (self.tubelet_embed.tubelet_size, *self.tubelet_embed.patch_size)
        if any(n % s for n, s in zip((self.num_frames, *self.image_size), sizes)):
            raise ValueError(f"{fn}: num_frames and image_size {(self.num_frames, *self.image_size)} must be "
                             f"multiples of the tubelet {sizes}")
        self.groups = self.num_frames // sizes[0]
        self.tokens = (self.image_size[0] // sizes[1]) * (self.image_size[1] // sizes[2])
        if dim % num_heads:
            raise ValueError(f"{fn}: dim {dim} is not divisible by num_heads {num_heads}")
        if variant == "factorised_encoder":
            self.spatial_encoder = _encoder(spatial_depth, dim, num_heads, mlp_dim, "spatial_encoder")
            self.spatial_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="spatial_norm")
            self.temporal_encoder = _encoder(temporal_depth, dim, num_heads, mlp_dim, "temporal_encoder")
        else:
            self.blocks = nn.Sequential(*[FactorisedSelfAttentionBlock(dim, num_heads, mlp_dim, name=str(k))
                                          for k in range(spatial_depth)], name="blocks")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.head = nn.Dense(positive_int(num_classes, f"{fn}: num_classes"), name="head")

    def _check(self, shape) -> tuple:
        shape = check_shape_ndim(self, shape, 5, "a 5-D NTHWC clip shape (batch, frames, height, width, channels)")
        expected = (self.num_frames, *self.image_size, self.in_channels)
        if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
            raise ShapeError(f"{self._label()}: got clips of shape {tuple(shape)}; the model was made for "
                             f"(batch, {', '.join(map(str, expected))})")
        return tuple(shape)

    def trace(self, shape, step):
        n = self._check(shape)[0]
        step(self.tubelet_embed, shape)
        d, groups, tokens = self.dim, self.groups, self.tokens
        if self.variant == "factorised_encoder":
            step(self.spatial_norm, step(self.spatial_encoder, (None if n is None else n * groups, 1 + tokens, d)))
            step(self.temporal_encoder, (n, 1 + groups, d))
        else:
            step(self.blocks, (n, groups, tokens, d))
        return step(self.head, step(self.norm, (n, d)))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype, normal, d = backend.get_default_dtype(), initializers.normal(TOKEN_STD), self.dim
        if self.variant == "factorised_encoder":
            self.add_parameter("cls_token", normal((1, 1, d), 1, 1, dtype))
            self.add_parameter("pos_embed", normal((1, 1 + self.tokens, d), 1, 1, dtype))
            self.add_parameter("temporal_cls_token", normal((1, 1, d), 1, 1, dtype))
            self.add_parameter("temporal_pos_embed", normal((1, 1 + self.groups, d), 1, 1, dtype))
        else:
            self.add_parameter("pos_embed", normal((1, self.groups, self.tokens, d), 1, 1, dtype))

    def forward_features(self, clips) -> Tensor:
        """The (N, D) features before ``head``: the temporal class token after ``norm`` (model 2),
        the mean of the tokens after ``norm`` (model 3)."""
        x = as_tensor(clips)
        if x.ndim != 5:
            raise input_error(self, x, "NTHWC clips (batch, frames, height, width, channels)")
        self._check(x.shape)
        z = self.tubelet_embed(x)                                              # (N, n_t, n_s, D)
        n, groups, tokens, d = z.shape
        if self.variant == "factorised_self_attention":
            z = self.blocks(F.add(z, self.pos_embed))
            return self.norm(F.mean(F.reshape(z, n, groups * tokens, d), axis=1))
        cls = F.broadcast_to(self.cls_token, (n * groups, 1, d))
        z = F.add(F.concat([cls, F.reshape(z, n * groups, tokens, d)], axis=1), self.pos_embed)
        frames = F.getitem(self.spatial_norm(self.spatial_encoder(z)), (slice(None), 0))
        z = F.concat([F.broadcast_to(self.temporal_cls_token, (n, 1, d)), F.reshape(frames, n, groups, d)], axis=1)
        z = self.temporal_encoder(F.add(z, self.temporal_pos_embed))
        return self.norm(F.getitem(z, (slice(None), 0)))

    def forward(self, clips) -> Tensor:
        return self.head(self.forward_features(clips))


def vivit_b_16x2_fe(num_classes: int = 400, num_frames: int = 32, image_size=224) -> ViViT:
    """ViViT-B/16x2 factorised encoder (unbuilt): 2x16x16 tubelets, D 768, 12 heads, MLPs of
    3072, L_s 12 spatial and L_t 4 temporal layers; 115,062,928 parameters with 400 classes."""
    model = ViViT(num_frames, image_size, 2, 16, 3, 768, 12, 4, 12, 3072, num_classes, name="vivit_b_16x2_fe")
    model.input_shape = (None, num_frames, *pair(image_size, "vivit_b_16x2_fe"), 3)
    return model


def vivit_tiny(num_classes: int = 4, input_shape=(8, 16, 16, 1), tubelet_size: int = 2, patch_size: int = 4,
               dim: int = 16, variant: str = "factorised_encoder") -> ViViT:
    """A small ViViT (two spatial and one temporal layer of width ``dim``, 2 heads) for tests and toy clips."""
    frames, h, w, c = input_shape
    model = ViViT(frames, (h, w), tubelet_size, patch_size, c, dim, 2, 1, 2, 2 * dim, num_classes, variant,
                  name="vivit_tiny")
    model.input_shape = (None, *input_shape)
    return model
