"""Perceiver (Jaegle et al. 2021, "Perceiver: General Perception with Iterative Attention") and
Perceiver IO (Jaegle et al. 2022, "Perceiver IO: A General Architecture for Structured Inputs
& Outputs"), with the attention blocks of the Perceiver IO reference code.

A small latent array Z (L, D), learned, reads the M inputs (M, C) by cross-attention (queries
from the latents, keys and values from the inputs: O(M L) rather than O(M^2)), then a latent
transformer of self-attention blocks refines it; the cross-attention and latent transformer
repeat, with weights shared across the repeats (all cross-attentions but the first share one
set, all latent transformers another). The blocks are pre-norm:

    cross-attention:  x = Z + Attn(LN(Z), LN(X));   x = x + MLP(LN(x))
    self-attention:   x = Z + Attn(LN(Z), LN(Z));   x = x + MLP(LN(x))
    Attn(q, kv) = concat_i softmax(Q_i K_i^T / sqrt(d_k)) V_i W_o + b_o,  Q = q W_q + b_q, ...
    MLP = Dense(w C, GELU) -> Dense(C)     (w the widening factor: 1 for cross, 4 for self)

Images (batch, h, w, c) (NHWC) become h w inputs: each pixel's values with Fourier features of
its position (:func:`fourier_position_features`, the paper's: the position in [-1, 1] per axis
and sin, cos of pi f x for K bands f from 1 to half the resolution). Sets (batch, n, c) are
read as they are, with no position features (so the output does not depend on their order),
and a padding mask (batch, n) keeps padding out of the cross-attention.

* :class:`Perceiver` classifies from the mean of the final latents (a Dense layer).
* :class:`PerceiverIO` decodes with an output query array (O, D_q): the queries cross-attend to
  the latents (no query residual, as the reference decoder), then a Dense layer gives (batch,
  O, outputs); classification uses one query.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, LayerNorm, ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.set_attention import multihead_attention
from lamina.nn.set_layers import set_mask

__all__ = ["Perceiver", "PerceiverBlock", "PerceiverEncoder", "PerceiverIO", "fourier_position_features"]


def fourier_position_features(index_shape: tuple[int, ...], num_bands: int,
                              max_resolution: tuple[int, ...] | None = None, dtype=None):
    """The Perceiver's position features of a grid ``index_shape`` (d axes), one row per
    position in row-major order: (prod(index_shape), d (2 K + 1)) with K = ``num_bands``,

        [x_1 .. x_d,  sin(pi f_jk x_j) for j, k,  cos(pi f_jk x_j) for j, k]

    x_j in [-1, 1] the position along axis j (``linspace(-1, 1, size)``) and f_j1 .. f_jK
    spaced linearly from 1 to max_resolution_j / 2 (default: the grid's size)."""
    index_shape = tuple(positive_int(s, "fourier_position_features: a size") for s in index_shape)
    positive_int(num_bands, "fourier_position_features: num_bands")
    resolution = index_shape if max_resolution is None else tuple(max_resolution)
    if len(resolution) != len(index_shape):
        raise ValueError(f"fourier_position_features: max_resolution {resolution} needs one entry per axis of "
                         f"{index_shape}")
    axes = [numpy.linspace(-1.0, 1.0, size) for size in index_shape]
    positions = numpy.stack(numpy.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(index_shape))
    bands = numpy.stack([numpy.linspace(1.0, r / 2, num_bands) for r in resolution])       # (d, K)
    angles = numpy.pi * (positions[:, :, None] * bands[None]).reshape(len(positions), -1)
    features = numpy.concatenate([positions, numpy.sin(angles), numpy.cos(angles)], axis=-1)
    return backend.xp.asarray(features, dtype=dtype or backend.get_default_dtype())


@register_with_arguments
class PerceiverBlock(Module):
    """One pre-norm attention block of the Perceiver IO reference (module docstring): queries
    (batch, T, ``dim``) attend over a context (batch, S, c) (cross-attention) or over themselves
    (``context=None``), then an MLP of width ``widening_factor`` dim. ``qk_channels`` (default
    dim) and ``v_channels`` (default qk_channels) are the widths of the projections, split into
    ``num_heads`` heads; the output has ``dim`` features. ``query_residual=False`` leaves out
    the first residual (the reference decoder's). Called as ``block(x, context=None,
    mask=None)``, ``mask`` (batch, S) the context's padding mask."""

    def __init__(self, dim: int, num_heads: int = 1, widening_factor: int = 1, query_residual: bool = True,
                 qk_channels: int | None = None, v_channels: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "PerceiverBlock: dim")
        self.num_heads = positive_int(num_heads, "PerceiverBlock: num_heads")
        self.widening_factor = positive_int(widening_factor, "PerceiverBlock: widening_factor")
        self.query_residual = bool(query_residual)
        self.qk_channels = dim if qk_channels is None else positive_int(qk_channels, "PerceiverBlock: qk_channels")
        self.v_channels = self.qk_channels if v_channels is None else positive_int(
            v_channels, "PerceiverBlock: v_channels")
        for what, width in (("qk_channels", self.qk_channels), ("v_channels", self.v_channels)):
            if width % num_heads:
                raise ValueError(f"PerceiverBlock: {what} {width} is not divisible by num_heads {num_heads}")
        self.norm_query, self.norm_context, self.norm_mlp = LayerNorm(), LayerNorm(), LayerNorm()
        self.to_q = Dense(self.qk_channels, kernel_init="xavier_uniform")
        self.to_k = Dense(self.qk_channels, kernel_init="xavier_uniform")
        self.to_v = Dense(self.v_channels, kernel_init="xavier_uniform")
        self.to_out = Dense(dim, kernel_init="xavier_uniform")
        self.mlp_hidden = Dense(self.widening_factor * dim, activation="gelu")
        self.mlp_out = Dense(dim)

    def forward(self, x, context=None, mask=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or (self.query_residual and x.shape[-1] != self.dim):
            raise input_error(self, x, f"queries (batch, T, {self.dim})")
        q = self.norm_query(x)
        if context is None:
            kv = q
        else:
            context = as_tensor(context)
            if context.ndim != 3 or context.shape[0] != x.shape[0]:
                raise input_error(self, context, f"a context (batch {x.shape[0]}, S, channels)")
            kv = self.norm_context(context)
        keep = None if mask is None else set_mask(self, mask, kv)
        attended = self.to_out(multihead_attention(self.to_q(q), self.to_k(kv), self.to_v(kv), self.num_heads, keep))
        h = x + attended if self.query_residual else attended
        return h + self.mlp_out(self.mlp_hidden(self.norm_mlp(h)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, widening_factor={self.widening_factor}"


@register_with_arguments
class PerceiverEncoder(Module):
    """Inputs -> the final latent array (batch, ``num_latents``, ``latent_dim``) (module
    docstring): ``num_repeats`` times a cross-attention (``cross_heads`` heads, MLP widening
    ``cross_widening``) then ``latent_blocks`` self-attention blocks (``latent_heads``,
    ``latent_widening``); ``share_weights`` shares them across the repeats as the paper does
    (the first cross-attention keeps its own). ``num_bands`` (None: no position features)
    gives images that many Fourier bands per axis, for ``max_resolution`` (default: the image
    size). The latent array is the parameter ``latents`` (truncated normal, std 0.02)."""

    def __init__(self, num_latents: int = 64, latent_dim: int = 128, num_repeats: int = 1, latent_blocks: int = 2,
                 cross_heads: int = 1, latent_heads: int = 4, cross_widening: int = 1, latent_widening: int = 4,
                 share_weights: bool = True, num_bands: int | None = None,
                 max_resolution: tuple[int, int] | None = None, name: str | None = None):
        super().__init__(name=name)
        self.num_latents = positive_int(num_latents, "Perceiver: num_latents")
        self.latent_dim = positive_int(latent_dim, "Perceiver: latent_dim")
        self.num_repeats = positive_int(num_repeats, "Perceiver: num_repeats")
        self.latent_blocks = positive_int(latent_blocks, "Perceiver: latent_blocks")
        self.share_weights = bool(share_weights)
        self.num_bands = None if num_bands is None else positive_int(num_bands, "Perceiver: num_bands")
        self.max_resolution = None if max_resolution is None else tuple(max_resolution)
        std = initializers.truncated_normal(std=0.02)
        self.add_parameter("latents", std((num_latents, latent_dim), latent_dim, latent_dim,
                                          backend.get_default_dtype()))
        crosses = min(self.num_repeats, 2) if self.share_weights else self.num_repeats
        stacks = 1 if self.share_weights else self.num_repeats
        self.cross_attention = ModuleList(
            [PerceiverBlock(latent_dim, cross_heads, cross_widening) for _ in range(crosses)])
        self.latent_transformers = ModuleList(
            [ModuleList([PerceiverBlock(latent_dim, latent_heads, latent_widening) for _ in range(latent_blocks)])
             for _ in range(stacks)])

    def input_array(self, x, mask=None) -> tuple[Tensor, object]:
        """(inputs (batch, M, C'), padding mask or None): an NHWC image flattened to its pixels
        with their position features, or a set as it is."""
        x = as_tensor(x)
        if x.ndim == 4:
            n, h, w, c = x.shape
            x = F.reshape(x, n, h * w, c)
            if self.num_bands is not None:
                features = fourier_position_features((h, w), self.num_bands, self.max_resolution, x.dtype)
                x = F.concat([x, F.broadcast_to(Tensor(features, dtype=x.dtype), (n,) + features.shape)], axis=-1)
        elif x.ndim != 3:
            raise input_error(self, x, "images (batch, height, width, channels) or sets (batch, n, channels)")
        return x, set_mask(self, mask, x)

    def forward(self, x, mask=None) -> Tensor:
        inputs, keep = self.input_array(x, mask)
        z = F.broadcast_to(self.latents, (inputs.shape[0],) + tuple(self.latents.shape))
        for repeat in range(self.num_repeats):
            z = self.cross_attention[min(repeat, len(self.cross_attention) - 1)](z, inputs, mask=keep)
            for block in self.latent_transformers[min(repeat, len(self.latent_transformers) - 1)]:
                z = block(z)
        return z

    def extra_repr(self) -> str:
        return (f"num_latents={self.num_latents}, latent_dim={self.latent_dim}, num_repeats={self.num_repeats}, "
                f"latent_blocks={self.latent_blocks}, share_weights={self.share_weights}, num_bands={self.num_bands}")


@register_with_arguments
class Perceiver(Module):
    """The Perceiver classifier: :class:`PerceiverEncoder` (``encoder_options`` are its keyword
    arguments), the final latents averaged over their index, a Dense layer to ``num_classes``
    logits: images (batch, h, w, c) or sets (batch, n, c) -> (batch, num_classes). Called as
    ``model(x, mask=None)``."""

    def __init__(self, num_classes: int, name: str | None = None, **encoder_options):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "Perceiver: num_classes")
        self.encoder = PerceiverEncoder(**encoder_options)
        self.head = Dense(self.num_classes, kernel_init="xavier_uniform")

    def forward(self, x, mask=None) -> Tensor:
        return self.head(F.mean(self.encoder(x, mask), axis=1))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


@register_with_arguments
class PerceiverIO(Module):
    """Perceiver IO: :class:`PerceiverEncoder` (``encoder_options``), then ``num_outputs``
    learned output queries (parameter ``queries`` (O, ``query_dim``), default query_dim the
    latent width) cross-attend to the latents (``decoder_heads`` heads, MLP widening 1, no
    query residual) and a Dense layer maps each to ``output_dim``: (batch, O, output_dim).
    ``model(x, mask=None, queries=None)``: ``queries`` (batch, O', query_dim) replaces the
    learned ones (structured outputs). For classification (O = 1) the logits are
    ``model(x)[:, 0]``."""

    def __init__(self, output_dim: int, num_outputs: int = 1, query_dim: int | None = None, decoder_heads: int = 1,
                 name: str | None = None, **encoder_options):
        super().__init__(name=name)
        self.output_dim = positive_int(output_dim, "PerceiverIO: output_dim")
        self.num_outputs = positive_int(num_outputs, "PerceiverIO: num_outputs")
        self.encoder = PerceiverEncoder(**encoder_options)
        self.query_dim = self.encoder.latent_dim if query_dim is None else positive_int(
            query_dim, "PerceiverIO: query_dim")
        std = initializers.truncated_normal(std=0.02)
        self.add_parameter("queries", std((self.num_outputs, self.query_dim), self.query_dim, self.query_dim,
                                          backend.get_default_dtype()))
        self.decoder = PerceiverBlock(self.query_dim, decoder_heads, 1, query_residual=False)
        self.head = Dense(self.output_dim, kernel_init="xavier_uniform")

    def forward(self, x, mask=None, queries=None) -> Tensor:
        z = self.encoder(x, mask)
        if queries is None:
            queries = F.broadcast_to(self.queries, (z.shape[0],) + tuple(self.queries.shape))
        else:
            queries = as_tensor(queries)
            if queries.ndim != 3 or queries.shape[0] != z.shape[0] or queries.shape[-1] != self.query_dim:
                raise ShapeError(f"{self._label()}: output queries of shape {tuple(queries.shape)}; expected "
                                 f"({z.shape[0]}, outputs, {self.query_dim}) (batch, outputs, query_dim)")
        return self.head(self.decoder(queries, z))

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, num_outputs={self.num_outputs}, query_dim={self.query_dim}"
