"""The encoders and the convolutional decoder of data2vec (Baevski et al. 2022) and data2vec 2.0
(Baevski et al. 2023); the method itself is :class:`lamina.models.Data2Vec`.

An encoder is split in two so that the student can put its mask embedding in between:

    tokens  e = embed(x)                          (N, T, D), no positions yet
    encode  z_0 = e + E_pos;  z_l = block_l(z_{l-1}),  l = 1 .. L;  output LN(z_L)

with pre-norm blocks (:class:`~lamina.models.DeiTBlock`; Dense and convolution weights start
N(0, 0.02^2) truncated at +-2 std, biases 0): h_l = z_{l-1} + attn(LN(z_{l-1})),
a_l = FFN(LN(h_l)), z_l = h_l + a_l. :meth:`Data2VecEncoderBase.encode` can also return each
block's a_l (the output of the feed-forward part before its residual connection, the paper's
target layer) or z_l. The modalities differ only in ``embed`` and E_pos:

* :class:`Data2VecImageEncoder`: NHWC images, p x p patches projected by a p x p / p
  convolution (as ViT), T = (H / p)(W / p); E_pos the fixed 2-D sin-cos table of MAE.
* :class:`Data2VecSequenceEncoder`: sequences of vectors (N, T, F) (speech features, any
  time series) through one Dense layer; E_pos a fixed 1-D sin-cos table,
  E[t, k] = sin(t w_k), E[t, D / 2 + k] = cos(t w_k), w_k = 10000^(-2k / D).

:class:`Data2VecDecoder` is data2vec 2.0's light decoder: ``layers`` times (a grouped
convolution of ``kernel_size`` with 'same' padding, a LayerNorm without parameters, GELU), a
residual connection around every layer after the first, then a Dense layer back to D. On
images (``grid_size`` given) the convolutions are 2-D over the patch grid, else 1-D over time.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.models.ijepa import target_layer_norm, trace_patch_encoder, truncated_normal_weights
from lamina.models.mae import setup_patch_encoder, sincos_position_embedding, vit_blocks
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int
from lamina.nn.module import as_tensor

__all__ = ["Data2VecDecoder", "Data2VecEncoderBase", "Data2VecImageEncoder", "Data2VecSequenceEncoder",
           "sincos_1d_position_embedding"]

LAYER_NORM_EPS = 1e-6
INIT_STD = 0.02
TARGET_LAYERS = ("ffn", "block")


def sincos_1d_position_embedding(length: int, dim: int) -> np.ndarray:
    """(length, dim) float64: E[t, k] = sin(t w_k), E[t, dim / 2 + k] = cos(t w_k) with
    w_k = 10000^(-2k / dim), k < dim / 2 (``dim`` even)."""
    length = positive_int(length, "sincos_1d_position_embedding: length")
    dim = positive_int(dim, "sincos_1d_position_embedding: dim")
    if dim % 2:
        raise ValueError(f"sincos_1d_position_embedding: dim must be even (sin and cos halves), got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(np.arange(length, dtype=np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


class Data2VecEncoderBase(Block):
    """What both encoders share (module docstring): ``blocks``, the final ``norm``,
    :meth:`encode` and ``forward(x) = encode(embed(x))``. Subclasses give ``embed`` and
    ``_positions``."""

    def _common(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, fn: str) -> None:
        self.embed_dim = positive_int(embed_dim, f"{fn}: embed_dim")
        self.depth = positive_int(depth, f"{fn}: depth")
        self.num_heads = positive_int(num_heads, f"{fn}: num_heads")
        self.mlp_ratio = float(mlp_ratio)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{fn}: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    def build(self, input_shape) -> None:
        """Build, then the reference's initialisation: every Dense and convolution weight
        N(0, 0.02^2) truncated at +-2 std, biases zero (LayerNorms keep 1 and 0)."""
        super().build(input_shape)
        if initializers.is_meta():
            return
        truncated_normal_weights(self, INIT_STD)

    def embed(self, x) -> Tensor:
        raise NotImplementedError

    def _positions(self, length: int) -> np.ndarray:
        raise NotImplementedError

    def encode(self, tokens, collect: str | None = None) -> tuple[Tensor, list[Tensor]]:
        """(LN(z_L), [per-block outputs]) for tokens (N, T, D) from :meth:`embed`; ``collect``
        None (no list), 'ffn' (a_l) or 'block' (z_l)."""
        if collect is not None and collect not in TARGET_LAYERS:
            raise ValueError(f"{self._label()}.encode: collect must be None or one of {TARGET_LAYERS}, "
                             f"got {collect!r}")
        x = as_tensor(tokens)
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ShapeError(f"{self._label()}.encode: got tokens of shape {tuple(x.shape)}; expected (batch, "
                             f"steps, {self.embed_dim})")
        x = F.add(x, Tensor(self._positions(x.shape[1]).astype(x.dtype)[None]))
        outputs = []
        for block in self.blocks.children():
            if collect is None:
                x = block(x)
                continue
            h = F.add(x, block.attn(block.norm1(x)))
            ffn = block.mlp(block.norm2(h))
            x = F.add(h, ffn)
            outputs.append(ffn if collect == "ffn" else x)
        return self.norm(x), outputs

    def forward(self, x) -> Tensor:
        return self.encode(self.embed(x))[0]

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, depth={self.depth}, heads={self.num_heads}"


@register_with_arguments
class Data2VecImageEncoder(Data2VecEncoderBase):
    """A ViT without class token on NHWC images of ``img_size`` (module docstring): sub-layers
    ``patch_embed`` (``proj``), ``blocks``, ``norm``; (N, H, W, C) -> (N, T, D)."""

    default_name = "data2vec_image_encoder"

    def __init__(self, img_size=32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "Data2VecImageEncoder"
        setup_patch_encoder(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, fn)
        self._common(embed_dim, depth, num_heads, mlp_ratio, fn)
        if self.embed_dim % 4:
            raise ValueError(f"{fn}: embed_dim must be a multiple of 4 for the 2-D sin-cos positions, got {embed_dim}")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self._table = sincos_position_embedding(self.embed_dim, self.grid_size)

    def trace(self, shape, step):
        return trace_patch_encoder(self, shape, step)

    def embed(self, x) -> Tensor:
        """Patch tokens (N, T, D) of NHWC images, without positions."""
        x = as_tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.img_size, self.in_chans):
            raise input_error(self, x, f"NHWC images (batch, {self.img_size[0]}, {self.img_size[1]}, "
                                       f"{self.in_chans})")
        return self.patch_embed(x)

    def _positions(self, length: int) -> np.ndarray:
        if length != self.num_patches:
            raise ShapeError(f"{self._label()}: got {length} tokens; the {self.grid_size} patch grid has "
                             f"{self.num_patches}")
        return self._table


@register_with_arguments
class Data2VecSequenceEncoder(Data2VecEncoderBase):
    """A Transformer on sequences of ``in_features``-vectors (module docstring): sub-layers
    ``proj`` (Dense to D), ``blocks``, ``norm``; (N, T, F) -> (N, T, D), any T."""

    default_name = "data2vec_sequence_encoder"

    def __init__(self, in_features: int, embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "Data2VecSequenceEncoder"
        self.in_features = positive_int(in_features, f"{fn}: in_features")
        self._common(embed_dim, depth, num_heads, mlp_ratio, fn)
        if self.embed_dim % 2:
            raise ValueError(f"{fn}: embed_dim must be even for the sin-cos positions, got {embed_dim}")
        self.proj = nn.Dense(self.embed_dim, name="proj")
        self.blocks = vit_blocks(self.embed_dim, self.depth, self.num_heads, self.mlp_ratio, "blocks")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")

    def trace(self, shape, step):
        shape = check_shape_ndim(self, shape, 3, f"sequences (batch, steps, {self.in_features})")
        if shape[2] is not None and shape[2] != self.in_features:
            raise ShapeError(f"{self._label()}: got sequences of shape {tuple(shape)}; expected {self.in_features} "
                             "features per step (in_features)")
        return step(self.norm, step(self.blocks, step(self.proj, shape)))

    def embed(self, x) -> Tensor:
        """Step tokens (N, T, D) of sequences (N, T, F), without positions."""
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.in_features:
            raise input_error(self, x, f"sequences (batch, steps, {self.in_features})")
        return self.proj(x)

    def _positions(self, length: int) -> np.ndarray:
        return sincos_1d_position_embedding(length, self.embed_dim)


@register_with_arguments
class Data2VecDecoder(Block):
    """data2vec 2.0's convolutional decoder (module docstring): (N, T, ``embed_dim``) ->
    (N, T, ``embed_dim``); sub-layers ``convs`` (named 0, 1, ...) and ``proj``. With
    ``grid_size`` (rows, cols) the T = rows * cols tokens are a patch grid (row by row) and
    the convolutions 2-D."""

    default_name = "data2vec_decoder"

    def __init__(self, embed_dim: int, decoder_dim: int = 384, layers: int = 5, kernel_size: int = 3,
                 groups: int = 16, grid_size=None, name: str | None = None):
        super().__init__(name=name)
        fn = "Data2VecDecoder"
        self.embed_dim = positive_int(embed_dim, f"{fn}: embed_dim")
        self.decoder_dim = positive_int(decoder_dim, f"{fn}: decoder_dim")
        self.layers = positive_int(layers, f"{fn}: layers")
        self.kernel_size = positive_int(kernel_size, f"{fn}: kernel_size")
        self.groups = positive_int(groups, f"{fn}: groups")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{fn}: kernel_size must be odd for 'same' padding, got {kernel_size}")
        for width, what in ((self.embed_dim, "embed_dim"), (self.decoder_dim, "decoder_dim")):
            if width % self.groups:
                raise ValueError(f"{fn}: groups={groups} must divide {what}={width}")
        self.grid_size = None if grid_size is None else pair(grid_size, f"{fn}: grid_size")
        conv = nn.Conv1D if self.grid_size is None else nn.Conv2D
        self.convs = nn.Sequential(*[conv(self.decoder_dim, self.kernel_size, padding="same", groups=self.groups,
                                          name=str(k)) for k in range(self.layers)], name="convs")
        self.proj = nn.Dense(self.embed_dim, name="proj")

    def _maps(self, shape) -> tuple:
        n, t = shape[0], shape[1]
        return (n, t, self.embed_dim) if self.grid_size is None else (n, *self.grid_size, self.embed_dim)

    def trace(self, shape, step):
        shape = check_shape_ndim(self, shape, 3, f"tokens (batch, steps, {self.embed_dim})")
        self._check(shape)
        out = self._maps(shape)
        for conv in self.convs.children():
            out = step(conv, out)
        return step(self.proj, (shape[0], shape[1], self.decoder_dim))

    def _check(self, shape) -> None:
        bad_grid = self.grid_size is not None and shape[1] not in (None, self.grid_size[0] * self.grid_size[1])
        if shape[2] not in (None, self.embed_dim) or bad_grid:
            grid = "" if self.grid_size is None else f", steps = {self.grid_size[0] * self.grid_size[1]} patches"
            raise ShapeError(f"{self._label()}: got tokens of shape {tuple(shape)}; expected (batch, steps, "
                             f"{self.embed_dim}){grid}")

    def forward(self, tokens) -> Tensor:
        x = as_tensor(tokens)
        if x.ndim != 3:
            raise input_error(self, x, f"tokens (batch, steps, {self.embed_dim})")
        self._check(tuple(x.shape))
        n, t = x.shape[0], x.shape[1]
        x = F.reshape(x, *self._maps((n, t)))
        for k, conv in enumerate(self.convs.children()):
            y = F.gelu(target_layer_norm(conv(x), eps=1e-5))
            x = y if k == 0 else F.add(x, y)
        return self.proj(F.reshape(x, n, t, self.decoder_dim))

    def extra_repr(self) -> str:
        kind = "1-D" if self.grid_size is None else f"2-D on {self.grid_size}"
        return f"{self.embed_dim} -> {self.decoder_dim} x {self.layers}, kernel={self.kernel_size}, {kind}"
