"""Text (sequence) conditioning of diffusion U-Nets by cross-attention, as Stable Diffusion's
(Rombach et al. 2022): the image's pixels, read as h * w tokens, attend to a context sequence
c (batch, m, d_context), e.g. the token features of a text encoder.

* :class:`SpatialCrossTransformer`: GroupNorm and a 1x1 projection in, transformer layers over
  the pixels (self-attention, cross-attention to c, a GEGLU feed-forward, each pre-normalised
  and residual), a zero-initialised 1x1 projection out, and a residual around the whole block.
* :class:`CrossAttentionUNet`: a :class:`~lamina.models.DenoisingUNet` with such a block after
  the residual blocks of the chosen levels (and after the middle block when the deepest level is
  chosen), called as ``net(x_t, t, y=None, context=None)``. Without a context it attends to its
  learned "null" context, the unconditional model of classifier-free guidance.

:class:`~lamina.models.DiffusionModel` passes ``context=`` through :meth:`loss` (swapped for
the null context at the rate ``label_dropout``) and :meth:`sample` (guidance mixes the
context's and the null context's predictions by ``guidance_scale``).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.models.diffusion_nets import DenoisingUNet
from lamina.nn import Dense, GroupNorm, LayerNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["CrossAttentionUNet", "SpatialCrossTransformer"]


class _Attention(Module):
    """softmax(Q K^T / sqrt(d)) V over ``heads`` heads of d = dim / heads values, Q = x W_q,
    K = c W_k, V = c W_v (no biases; c = x for self-attention), joined and projected by W_o + b_o."""

    def __init__(self, dim: int, heads: int, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.heads = dim, heads
        self.to_q = Dense(dim, use_bias=False, name="to_q")
        self.to_k = Dense(dim, use_bias=False, name="to_k")
        self.to_v = Dense(dim, use_bias=False, name="to_v")
        self.to_out = Dense(dim, name="to_out")

    def _split(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        return F.transpose(F.reshape(x, n, length, self.heads, self.dim // self.heads), 0, 2, 1, 3)

    def forward(self, x, context=None) -> Tensor:
        source = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(source)), self._split(self.to_v(source))
        out = scaled_dot_product_attention(q, k, v)
        n, _, length, _ = out.shape
        return self.to_out(F.reshape(F.transpose(out, 0, 2, 1, 3), n, length, self.dim))


class _TransformerLayer(Module):
    """t <- t + self_attn(norm1(t)); t <- t + cross_attn(norm2(t), c); t <- t + W_2 (a * gelu(g)),
    [a | g] = W_1 norm3(t) + b_1 (GEGLU, Shazeer 2020)."""

    def __init__(self, dim: int, heads: int, ff_mult: int, name: str | None = None):
        super().__init__(name=name)
        self.hidden = ff_mult * dim
        self.norm1, self.norm2, self.norm3 = (LayerNorm(name=f"norm{k}") for k in (1, 2, 3))
        self.self_attention = _Attention(dim, heads, name="self_attention")
        self.cross_attention = _Attention(dim, heads, name="cross_attention")
        self.ff_in = Dense(2 * self.hidden, name="ff_in")
        self.ff_out = Dense(dim, name="ff_out")

    def forward(self, tokens, context) -> Tensor:
        tokens = tokens + self.self_attention(self.norm1(tokens))
        tokens = tokens + self.cross_attention(self.norm2(tokens), context)
        projected = self.ff_in(self.norm3(tokens))
        gated = projected[..., :self.hidden] * F.gelu(projected[..., self.hidden:])
        return tokens + self.ff_out(gated)


@register_with_arguments
class SpatialCrossTransformer(Module):
    """Stable Diffusion's spatial transformer on NHWC maps x (N, H, W, C) and a context
    c (N, M, ``context_dim``):

        t = reshape(W_in GroupNorm(x) + b_in, (N, H W, C))     1x1 projection in
        t <- layer_k(t, c) for k = 1 .. ``depth``               self-, cross-attention, GEGLU
        out = x + reshape(W_out t + b_out, (N, H, W, C))        W_out, b_out zero at init

    ``num_heads`` must divide ``channels``; the feed-forward is ``ff_mult`` * C wide. At
    initialisation the block is the identity. ``forward(x, context)``.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1, depth: int = 1, groups: int = 8,
                 ff_mult: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SpatialCrossTransformer: channels")
        self.context_dim = positive_int(context_dim, "SpatialCrossTransformer: context_dim")
        self.num_heads = positive_int(num_heads, "SpatialCrossTransformer: num_heads")
        if self.channels % self.num_heads:
            raise ValueError(f"SpatialCrossTransformer: num_heads={num_heads} must divide channels={channels}")
        depth = positive_int(depth, "SpatialCrossTransformer: depth")
        groups = positive_int(groups, "SpatialCrossTransformer: groups")
        ff_mult = positive_int(ff_mult, "SpatialCrossTransformer: ff_mult")
        self.norm = GroupNorm(math.gcd(groups, self.channels), eps=1e-6, name="norm")
        self.proj_in = Dense(self.channels, name="proj_in")
        self.layers = ModuleList([_TransformerLayer(self.channels, self.num_heads, ff_mult, name=f"layer{k}")
                                  for k in range(depth)])
        self.proj_out = Dense(self.channels, kernel_init="zeros", name="proj_out")

    def forward(self, x, context) -> Tensor:
        x, context = as_tensor(x), as_tensor(context)
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, {self.channels})")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != self.context_dim:
            raise ShapeError(f"{self._label()}: got a context of {describe(context)} for inputs of {describe(x)}; "
                             f"expected ({x.shape[0]}, length, {self.context_dim})")
        n, height, width, channels = x.shape
        tokens = F.reshape(self.proj_in(self.norm(x)), n, height * width, channels)
        for layer in self.layers:
            tokens = layer(tokens, context)
        return x + F.reshape(self.proj_out(tokens), n, height, width, channels)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)


@register_with_arguments
class CrossAttentionUNet(DenoisingUNet):
    """A :class:`DenoisingUNet` whose levels listed in ``attention_levels`` (0: full size) get a
    :class:`SpatialCrossTransformer` (``num_heads``, ``transformer_depth``) after their down and up
    residual blocks, and the middle block one too when the deepest level is listed; they attend to
    the context (N, M, ``context_dim``) given to ``forward(x, t, y=None, context=None)``.

    ``context=None`` stands for the learned null context (a ``context_dim`` vector ``null_token``,
    zero at init, as one token): the unconditional model that classifier-free guidance contrasts
    with. With no ``attention_levels`` the net is exactly the :class:`DenoisingUNet` of its other
    arguments.
    """

    def __init__(self, base_filters: int = 16, multipliers=(1, 2), groups: int = 8, time_dim: int | None = None,
                 embed_dim: int | None = None, num_classes: int | None = None, context_dim: int | None = None,
                 attention_levels=(), num_heads: int = 1, transformer_depth: int = 1, name: str | None = None):
        super().__init__(base_filters, multipliers, groups, time_dim, embed_dim, num_classes, name)
        levels = sorted({int(level) for level in attention_levels})
        if any(not 0 <= level < len(self.multipliers) for level in levels):
            raise ValueError(f"CrossAttentionUNet: attention_levels must be levels in [0, {len(self.multipliers)}), "
                             f"got {attention_levels!r}")
        if bool(levels) != (context_dim is not None):
            raise ValueError("CrossAttentionUNet: attention_levels and context_dim go together (the levels that attend "
                             f"and the size of the context they attend to), got attention_levels={attention_levels!r} "
                             f"and context_dim={context_dim!r}")
        self.context_dim = None if context_dim is None else positive_int(context_dim, "CrossAttentionUNet: context_dim")
        self.attention_levels = tuple(levels)
        if self.context_dim is not None:
            self.add_parameter("null_token", backend.xp.zeros(self.context_dim, dtype=backend.get_default_dtype()))
        filters = [self.base_filters * m for m in self.multipliers]

        def transformer(level: int, where: str) -> SpatialCrossTransformer:
            return SpatialCrossTransformer(filters[level], self.context_dim, num_heads, transformer_depth, self.groups,
                                           name=f"{where}_transformer{level}")

        self.down_transformers = ModuleList([transformer(level, "down") for level in levels])
        self.up_transformers = ModuleList([transformer(level, "up") for level in levels])
        if len(filters) - 1 in levels:
            self.middle_transformer = transformer(len(filters) - 1, "middle")

    def null_context(self, n: int, length: int = 1) -> Tensor:
        """The learned null context repeated to (n, ``length``, context_dim) (attention to
        ``length`` equal tokens is attention to one); it carries the gradient of its vector."""
        if self.context_dim is None:
            raise ValueError(f"{self._label()}: the net has no context_dim, so no null context")
        ones = Tensor._wrap(backend.xp.ones((n, length, 1), dtype=self.null_token.dtype))
        return ones * F.reshape(self.null_token, 1, 1, self.context_dim)

    def _context(self, context, n: int):
        if self.context_dim is None:
            if context is not None:
                raise ValueError(f"{self._label()}: got a context but the net has no context_dim")
            return None
        if context is None:
            return self.null_context(n)
        context = as_tensor(context)
        if context.ndim != 3 or context.shape[0] != n or context.shape[2] != self.context_dim:
            raise ShapeError(f"{self._label()}: got a context of {describe(context)}; expected ({n}, length, "
                             f"{self.context_dim})")
        return context

    def forward(self, x, t, y=None, residuals=None, context=None) -> Tensor:
        """The denoised prediction for the context ``context`` (None: the null context);
        ``residuals`` as :meth:`DenoisingUNet.forward`'s."""
        if not self.attention_levels:
            self._context(context, as_tensor(x).shape[0])
            return super().forward(x, t, y, residuals)
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, {self.channels})")
        self._check_size(x.shape)
        context = self._context(context, x.shape[0])
        e = self.time_features(t, y, x)
        attend = {level: k for k, level in enumerate(self.attention_levels)}
        skips, h = [], self.stem(x)
        for level, block in enumerate(self.down_blocks):
            h = block(h, e)
            if level in attend:
                h = self.down_transformers[attend[level]](h, context)
            skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
        h = self.middle(h, e)
        if "middle_transformer" in self._modules:
            h = self.middle_transformer(h, context)
        if residuals is not None:
            skips, h = self._with_residuals(skips, h, residuals)
        for level in range(len(self.up_blocks) - 1, -1, -1):
            h = self.up_blocks[level](F.concat([skips[level], h], axis=-1), e)
            if level in attend:
                h = self.up_transformers[attend[level]](h, context)
            if level > 0:
                h = self.up_convs[level - 1](self.upsamplers[level - 1](h))
        return self.head(F.silu(self.head_norm(h)))

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", context_dim={self.context_dim}, attention_levels={self.attention_levels}"
                                       if self.context_dim else "")
