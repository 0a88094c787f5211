"""Flamingo (Alayrac et al. 2022, "Flamingo: a Visual Language Model for Few-Shot Learning"):
vision added to a frozen language model by two trained pieces, in the layout of the
OpenFlamingo reference code.

:class:`PerceiverResampler` turns the features of each image (or video frames, with a learned
time embedding added per frame) into ``num_latents`` tokens. Learned latents Z (L, D) read the
features X (S, D) in ``depth`` layers, keys and values being the features and the latents
together:

    Q = LN(Z) W_q,  [K, V] = concat(LN(X), LN(Z)) [W_k, W_v]
    Z = Z + concat_i softmax(Q_i K_i^T / sqrt(d_h)) V_i W_o
    Z = Z + W_2 GELU(W_1 LN(Z))                            (then LN(Z) at the end)

:class:`GatedCrossAttentionBlock` lets text tokens x (T, D) read the visual tokens, its two
residual branches scaled by tanh of scalars that start at 0, so that the language model is
unchanged at the start of training:

    x = x + tanh(alpha_attn) CrossAttn(LN(x), media)
    x = x + tanh(alpha_ff) FFN(LN(x))

Media masking: a token at a position whose media count cumsum(media_locations) is m attends
only to the tokens of image m (the image immediately before it); a token before any image
attends to none and gets nothing from the block (both branches are zero there; the reference
code still applies the gated FFN to such tokens), so text before the first image is scored
exactly as by the language model alone.

:class:`Flamingo` joins a vision encoder and a decoder language model
(:class:`~lamina.models.decoder_lm.DecoderLM`: Llama and the families built on it, GPT-NeoX): a
gated block before every ``cross_attn_every``-th decoder layer, the decoder's own layers called
unchanged. The vision encoder and the language model are frozen; the resampler and the gated
blocks are what trains.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Dense, LayerNorm, ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.linear_attention import merge_heads, split_heads
from lamina.nn.module import Module, as_tensor

__all__ = ["Flamingo", "GatedCrossAttentionBlock", "PerceiverResampler", "media_attention_mask"]


class _FeedForward(Module):
    """LN -> Dense(mult D, no bias) -> GELU -> Dense(D, no bias), the reference FeedForward."""

    def __init__(self, dim: int, mult: int, name: str | None = None):
        super().__init__(name=name)
        self.norm = LayerNorm()
        self.hidden = Dense(mult * dim, use_bias=False, kernel_init="xavier_uniform")
        self.out = Dense(dim, use_bias=False, kernel_init="xavier_uniform")

    def forward(self, x) -> Tensor:
        return self.out(F.gelu(self.hidden(self.norm(x))))


class _ResamplerLayer(Module):
    """One resampler layer: latents attend over concat(features, latents), then a feed-forward."""

    def __init__(self, dim: int, num_heads: int, dim_head: int, ff_mult: int, name: str | None = None):
        super().__init__(name=name)
        self.num_heads, self.dim_head = num_heads, dim_head
        inner = num_heads * dim_head
        self.norm_media, self.norm_latents = LayerNorm(), LayerNorm()
        self.to_q = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_k = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_v = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_out = Dense(dim, use_bias=False, kernel_init="xavier_uniform")
        self.ff = _FeedForward(dim, ff_mult)

    def forward(self, features, latents) -> Tensor:
        x, z = self.norm_media(features), self.norm_latents(latents)
        kv = F.concat([x, z], axis=1)
        attended = F.scaled_dot_product_attention(split_heads(self.to_q(z), self.num_heads),
                                                  split_heads(self.to_k(kv), self.num_heads),
                                                  split_heads(self.to_v(kv), self.num_heads))
        latents = latents + self.to_out(merge_heads(attended))
        return latents + self.ff(latents)


@register_with_arguments
class PerceiverResampler(Module):
    """Visual features -> ``num_latents`` tokens of width ``dim`` per image (module docstring).
    Input (batch, M, S, dim) (M images of S feature tokens each) -> (batch, M, num_latents,
    dim); or (batch, M, F, S, dim) (M videos of F frames) with ``max_frames`` >= F: the learned
    time embedding of frame f (parameter ``frame_embeddings`` (max_frames, dim)) is added to its
    tokens and the F S tokens are read together. Attention has ``num_heads`` heads of
    ``dim_head`` features (default dim / num_heads); the feed-forward is ``ff_mult`` dim wide.
    The latents (parameter ``latents``) start as N(0, 1), as the reference's."""

    def __init__(self, dim: int, depth: int = 2, num_latents: int = 8, num_heads: int = 2,
                 dim_head: int | None = None, ff_mult: int = 4, max_frames: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "PerceiverResampler: dim")
        self.depth = positive_int(depth, "PerceiverResampler: depth")
        self.num_latents = positive_int(num_latents, "PerceiverResampler: num_latents")
        self.num_heads = positive_int(num_heads, "PerceiverResampler: num_heads")
        if dim_head is None and dim % num_heads:
            raise ValueError(f"PerceiverResampler: dim {dim} is not divisible by num_heads {num_heads}; pass dim_head")
        self.dim_head = dim // num_heads if dim_head is None else positive_int(dim_head, "PerceiverResampler: dim_head")
        self.ff_mult = positive_int(ff_mult, "PerceiverResampler: ff_mult")
        self.max_frames = None if max_frames is None else positive_int(max_frames, "PerceiverResampler: max_frames")
        dtype = backend.get_default_dtype()
        self.add_parameter("latents", initializers.normal(std=1.0)((num_latents, dim), dim, dim, dtype))
        if self.max_frames is not None:
            self.add_parameter("frame_embeddings", initializers.normal(std=1.0)((self.max_frames, dim), dim, dim,
                                                                                 dtype))
        self.layers = ModuleList([_ResamplerLayer(dim, num_heads, self.dim_head, ff_mult) for _ in range(depth)])
        self.norm = LayerNorm()

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim == 5 and self.max_frames is not None and x.shape[-1] == self.dim and x.shape[2] <= self.max_frames:
            n, m, frames, s, d = x.shape
            x = x + F.reshape(self.frame_embeddings[:frames], 1, 1, frames, 1, d)
            x = F.reshape(x, n, m, frames * s, d)
        elif x.ndim != 4 or x.shape[-1] != self.dim:
            videos = "" if self.max_frames is None else (
                f" or videos (batch, M, frames <= {self.max_frames}, S, {self.dim})")
            raise input_error(self, x, f"features (batch, M, S, {self.dim}){videos}")
        n, m, s, d = x.shape
        features = F.reshape(x, n * m, s, d)
        latents = F.broadcast_to(self.latents, (n * m, self.num_latents, d))
        for layer in self.layers:
            latents = layer(features, latents)
        return F.reshape(self.norm(latents), n, m, self.num_latents, d)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, depth={self.depth}, num_latents={self.num_latents}, num_heads={self.num_heads}, "
                f"dim_head={self.dim_head}")


def media_attention_mask(media_locations, num_media: int, tokens_per_media: int):
    """(attend (N, T, M L) bool, has_media (N, T) bool) of Flamingo's masking: token t of row n
    may attend to the L = ``tokens_per_media`` tokens of image m - 1 where m = the number of
    True entries of ``media_locations[n, :t + 1]`` (the image immediately before it, a marker
    at t included); ``has_media`` is False for tokens before any image."""
    locations = numpy.asarray(backend.to_numpy(media_locations.data if isinstance(media_locations, Tensor)
                                               else media_locations)).astype(bool)
    if locations.ndim != 2:
        raise ShapeError(f"media_attention_mask: media_locations must be (batch, time) booleans, got shape "
                         f"{locations.shape}")
    count = numpy.cumsum(locations, axis=1)                                   # (N, T), 0 = no image yet
    if count.size and count.max() > num_media:
        raise ValueError(f"media_attention_mask: a row marks {int(count.max())} images but {num_media} were given")
    media_index = numpy.repeat(numpy.arange(1, num_media + 1), tokens_per_media)   # (M L,)
    attend = count[:, :, None] == media_index[None, None, :]
    return attend, count > 0


@register_with_arguments
class GatedCrossAttentionBlock(Module):
    """Flamingo's gated cross-attention dense block (module docstring): text (batch, T, ``dim``)
    reads visual tokens media (batch, M, L, ``media_dim``) (default media_dim = dim), each text
    token only the image immediately before it; ``media_locations`` (batch, T) is True where an
    image is placed in the text (its marker token); tokens before any image pass through
    unchanged. ``num_heads`` heads of ``dim_head``
    features (default dim / num_heads); FFN ``ff_mult`` dim wide. The gates are the parameters
    ``attn_gate`` and ``ff_gate`` (shape (1,)), 0 at the start. Called as
    ``block(x, media, media_locations)``."""

    def __init__(self, dim: int, num_heads: int = 2, dim_head: int | None = None, ff_mult: int = 4,
                 media_dim: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "GatedCrossAttentionBlock: dim")
        self.num_heads = positive_int(num_heads, "GatedCrossAttentionBlock: num_heads")
        if dim_head is None and dim % num_heads:
            raise ValueError(f"GatedCrossAttentionBlock: dim {dim} is not divisible by num_heads {num_heads}; pass "
                             "dim_head")
        self.dim_head = dim // num_heads if dim_head is None else positive_int(
            dim_head, "GatedCrossAttentionBlock: dim_head")
        self.ff_mult = positive_int(ff_mult, "GatedCrossAttentionBlock: ff_mult")
        self.media_dim = dim if media_dim is None else positive_int(media_dim, "GatedCrossAttentionBlock: media_dim")
        inner = self.num_heads * self.dim_head
        self.norm = LayerNorm()
        self.to_q = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_k = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_v = Dense(inner, use_bias=False, kernel_init="xavier_uniform")
        self.to_out = Dense(dim, use_bias=False, kernel_init="xavier_uniform")
        self.ff = _FeedForward(dim, ff_mult)
        dtype = backend.get_default_dtype()
        self.add_parameter("attn_gate", backend.xp.zeros((1,), dtype=dtype))
        self.add_parameter("ff_gate", backend.xp.zeros((1,), dtype=dtype))

    def _masks(self, x, media, media_locations):
        n, t, _ = x.shape
        _, m, tokens, _ = media.shape
        attend, has_media = media_attention_mask(media_locations, m, tokens)
        if attend.shape != (n, t, m * tokens):
            raise ShapeError(f"{self._label()}: media_locations of shape {has_media.shape} for text of shape "
                             f"{tuple(x.shape)}; expected ({n}, {t})")
        # rows with no image attend everywhere (to keep the softmax finite) and are zeroed by keep
        attend = attend | ~has_media[:, :, None]
        return backend.xp.asarray(attend[:, None]), Tensor(backend.xp.asarray(has_media[:, :, None], dtype=x.dtype))

    def cross_attention(self, x, media, media_locations) -> Tensor:
        """The attention branch before its gate: zero for tokens before any image."""
        return self._cross_attention(x, media, *self._masks(x, media, media_locations))

    def _cross_attention(self, x, media, attend, keep) -> Tensor:
        n, m, tokens, width = media.shape
        flat = F.reshape(media, n, m * tokens, width)
        attended = F.scaled_dot_product_attention(split_heads(self.to_q(self.norm(x)), self.num_heads),
                                                  split_heads(self.to_k(flat), self.num_heads),
                                                  split_heads(self.to_v(flat), self.num_heads),
                                                  mask=attend)
        return self.to_out(merge_heads(attended)) * keep

    def forward(self, x, media, media_locations) -> Tensor:
        x, media = as_tensor(x), as_tensor(media)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise input_error(self, x, f"text (batch, T, {self.dim})")
        if media.ndim != 4 or media.shape[0] != x.shape[0] or media.shape[-1] != self.media_dim:
            raise input_error(self, media, f"media (batch {x.shape[0]}, M, L, {self.media_dim})")
        attend, keep = self._masks(x, media, media_locations)
        x = x + F.tanh(self.attn_gate) * self._cross_attention(x, media, attend, keep)
        return x + F.tanh(self.ff_gate) * self.ff(x) * keep

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, dim_head={self.dim_head}, media_dim={self.media_dim}"


@register_with_arguments(modules=("vision_encoder", "language_model"))
class Flamingo(Module):
    """A frozen ``vision_encoder`` and a frozen decoder ``language_model`` (a
    :class:`~lamina.models.decoder_lm.DecoderLM`) joined by a :class:`PerceiverResampler`
    (``resampler_depth`` layers, ``num_latents`` tokens, at the encoder's width ``vision_dim``)
    and a :class:`GatedCrossAttentionBlock` before decoder layers 0, ``cross_attn_every``,
    2 ``cross_attn_every``, ... (``num_heads`` heads each).

    ``model(ids, images, media_locations=None)``: token ids (N, T), images (N, M, h, w, c)
    (NHWC; M per row, placed in order at the markers) -> next-token scores (N, T, vocab).
    ``media_locations`` (N, T) defaults to ``ids == media_token_id``. The encoder maps
    (N M, h, w, c) to tokens (N M, S, vision_dim), or a feature map (N M, h', w', vision_dim)
    read as h' w' tokens, or one vector (N M, vision_dim). The encoder and the language model
    are frozen after the first call (when their weights exist); :meth:`generate` decodes
    greedily."""

    def __init__(self, vision_encoder: Module, language_model: Module, vision_dim: int, media_token_id: int = 0,
                 cross_attn_every: int = 1, num_latents: int = 8, resampler_depth: int = 2, num_heads: int = 2,
                 ff_mult: int = 4, name: str | None = None):
        super().__init__(name=name)
        if not hasattr(language_model, "layers") or not hasattr(language_model, "token_embedding"):
            raise TypeError(f"Flamingo: language_model must be a decoder language model with token_embedding() "
                            f"and layers (Llama, GPTNeoX, ...), got {type(language_model).__name__}")
        self.vision_encoder, self.language_model = vision_encoder, language_model
        self.vision_dim = positive_int(vision_dim, "Flamingo: vision_dim")
        self.media_token_id = int(media_token_id)
        self.cross_attn_every = positive_int(cross_attn_every, "Flamingo: cross_attn_every")
        self.resampler = PerceiverResampler(self.vision_dim, resampler_depth, num_latents, num_heads,
                                            ff_mult=ff_mult)
        hidden = language_model.hidden_size
        if hidden % num_heads:
            raise ValueError(f"Flamingo: the language model's hidden_size {hidden} is not divisible by num_heads "
                             f"{num_heads}")
        count = -(-len(language_model.layers) // self.cross_attn_every)
        self.gated_blocks = ModuleList([GatedCrossAttentionBlock(hidden, num_heads, ff_mult=ff_mult,
                                                                 media_dim=self.vision_dim) for _ in range(count)])
        self._frozen = False

    def freeze_pretrained(self) -> None:
        """Freeze the vision encoder and the language model (their weights must exist)."""
        self.vision_encoder.freeze()
        self.language_model.freeze()
        self._frozen = True

    def encode_images(self, images) -> Tensor:
        """Images (N, M, h, w, c) -> visual tokens (N, M, num_latents, vision_dim)."""
        images = as_tensor(images)
        if images.ndim != 5:
            raise input_error(self, images, "images (batch, M, height, width, channels)")
        n, m = images.shape[:2]
        features = self.vision_encoder(F.reshape(images, n * m, *images.shape[2:]))
        if features.ndim == 2:
            features = F.reshape(features, n * m, 1, features.shape[-1])
        elif features.ndim == 4:
            features = F.reshape(features, n * m, features.shape[1] * features.shape[2], features.shape[3])
        if features.ndim != 3 or features.shape[-1] != self.vision_dim:
            raise ShapeError(f"{self._label()}: the vision encoder gave features of shape {tuple(features.shape)}; "
                             f"expected (N M, S, {self.vision_dim}), (N M, h, w, {self.vision_dim}) or "
                             f"(N M, {self.vision_dim})")
        return self.resampler(F.reshape(features, n, m, features.shape[1], self.vision_dim))

    def forward(self, ids, images, media_locations=None, key_mask=None, position_ids=None) -> Tensor:
        ids_array = numpy.asarray(backend.to_numpy(ids.data if isinstance(ids, Tensor) else ids))
        if ids_array.ndim != 2:
            raise ShapeError(f"{self._label()}: token ids of shape {ids_array.shape}; expected (batch, time)")
        if media_locations is None:
            media_locations = ids_array == self.media_token_id
        scores = self.text_scores(ids, self.encode_images(images), media_locations, key_mask, position_ids)
        if not self._frozen:
            self.freeze_pretrained()
        return scores

    def text_scores(self, ids, media, media_locations, key_mask=None, position_ids=None) -> Tensor:
        """The language model's scores of ``ids`` (N, T) with the gated blocks reading
        ``media`` (N, M, num_latents, vision_dim) at ``media_locations`` (N, T)."""
        lm = self.language_model
        x = lm.token_embedding()(ids)
        for index, layer in enumerate(lm.layers):
            if index % self.cross_attn_every == 0:
                x = self.gated_blocks[index // self.cross_attn_every](x, media, media_locations)
            x = layer(x, key_mask=key_mask, position_ids=position_ids)
        return lm.logits(lm.final_norm()(x))

    def generate(self, ids, images, max_new_tokens: int, eos_token_id: int | None = None):
        """Greedy decoding: each step appends the top-scoring next token to ``ids`` (N, T), the
        images (N, M, h, w, c) read at the markers in ``ids``; stops after ``max_new_tokens``
        or when every row has produced ``eos_token_id``. Returns the ids (N, T + steps)."""
        out = numpy.asarray(backend.to_numpy(ids.data if isinstance(ids, Tensor) else ids)).astype(numpy.int64)
        done = numpy.zeros(len(out), dtype=bool)
        with no_grad():
            media = self.encode_images(images)
            for _ in range(positive_int(max_new_tokens, "Flamingo.generate: max_new_tokens")):
                scores = self.text_scores(out, media, out == self.media_token_id)
                step = backend.to_numpy(scores.data[:, -1]).argmax(-1)
                if eos_token_id is not None:
                    step = numpy.where(done, eos_token_id, step)
                    done |= step == eos_token_id
                out = numpy.concatenate([out, step[:, None]], axis=1)
                if eos_token_id is not None and done.all():
                    break
        return out

    def extra_repr(self) -> str:
        return (f"vision_dim={self.vision_dim}, cross_attn_every={self.cross_attn_every}, "
                f"gated_blocks={len(self.gated_blocks)}")
