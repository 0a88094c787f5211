"""BLIP-2's querying transformer (Li et al. 2023, "BLIP-2: Bootstrapping Language-Image
Pre-training with Frozen Image Encoders and Large Language Models"), stage 1: vision-language
representation learning from a frozen image encoder.

:class:`QFormer`: Q learned query tokens and T text tokens go through the same BERT-style
post-norm layers; one attention mask over the Q + T tokens picks the objective. Every
``cross_attention_every``-th layer (0, k, 2k, ...) the queries alone also read the frozen image
features X; queries and text have feed-forward networks of their own:

    h  = LN(x + SelfAttn(x; mask))                          x = [queries; text]
    hq = LN(hq + CrossAttn(hq, X))                          (query rows, cross-attention layers)
    hq = LN(hq + FFN_q(hq)),   ht = LN(ht + FFN_t(ht))      FFN(z) = W_2 gelu(W_1 z + b_1) + b_2

The masks (:func:`qformer_attention_mask`, True = may attend):

    unimodal       queries see queries, text sees text                  (ITC)
    bidirectional  every token sees every token                          (ITM)
    causal         queries see queries; text token t sees the queries   (ITG)
                   and text tokens 0 .. t

The three stage-1 losses (:meth:`BLIP2Stage1.losses`):

    ITC  s(i, j) = max_q <z_q(i), t(j)> / tau  (z, t: unit projections of the query outputs of
         image i and of the first text token of caption j); L = (CE(S, diag) + CE(S^T, diag)) / 2
    ITM  p(match) from a 2-way head on the query outputs averaged over the queries (bidirectional
         mask), on the N positive pairs, N pairs (text j, a hard negative image) and N pairs
         (image i, a hard negative text); negatives drawn from softmax(s) with the positive left
         out (:func:`mine_hard_negatives`)
    ITG  next-token cross-entropy of the caption under the causal mask: the text reads the image
         only through the queries
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Dense, Embedding, LayerNorm, ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.linear_attention import merge_heads, split_heads
from lamina.nn.module import Module, as_tensor

__all__ = ["BLIP2Stage1", "QFormer", "QFormerLayer", "image_text_contrastive_loss", "mine_hard_negatives",
           "qformer_attention_mask"]

MASK_KINDS = ("unimodal", "bidirectional", "causal")
_EPS = 1e-12            # BERT's LayerNorm epsilon


def _normal():
    return initializers.normal(std=0.02)


def _array(x) -> numpy.ndarray:
    return numpy.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))


def qformer_attention_mask(num_queries: int, num_text: int, kind: str, text_mask=None) -> numpy.ndarray:
    """The boolean mask (B, Q + T, Q + T) (True = may attend) over Q query tokens followed by
    T text tokens, ``kind`` one of 'unimodal', 'bidirectional', 'causal' (module docstring);
    B = 1, or N when ``text_mask`` (N, T) (1 on real tokens, 0 on padding) is given: then no
    token attends to padding."""
    if kind not in MASK_KINDS:
        raise ValueError(f"qformer_attention_mask: kind must be one of {MASK_KINDS}, got {kind!r}")
    q, t = int(num_queries), int(num_text)
    is_query = numpy.arange(q + t) < q
    if kind == "bidirectional":
        allowed = numpy.ones((q + t, q + t), dtype=bool)
    elif kind == "unimodal":
        allowed = is_query[:, None] == is_query[None, :]
    else:
        position = numpy.arange(q + t)
        allowed = is_query[None, :] | (~is_query[:, None] & (position[None, :] <= position[:, None]))
    allowed = allowed[None]
    if text_mask is not None:
        real = _array(text_mask) != 0
        if real.ndim != 2 or real.shape[1] != t:
            raise ShapeError(f"qformer_attention_mask: text_mask of shape {real.shape}; expected (batch, {t})")
        keys = numpy.concatenate([numpy.ones((len(real), q), dtype=bool), real], axis=1)
        allowed = allowed & keys[:, None, :]
    return allowed


class _Attention(Module):
    """Multi-head attention softmax(Q K^T / sqrt(d)) V with biased projections (BERT's)."""

    def __init__(self, hidden: int, heads: int, name: str | None = None):
        super().__init__(name=name)
        self.heads = heads
        self.query, self.key, self.value, self.out = (Dense(hidden, kernel_init=_normal()) for _ in range(4))

    def forward(self, x, context, mask=None) -> Tensor:
        attended = F.scaled_dot_product_attention(split_heads(self.query(x), self.heads),
                                                  split_heads(self.key(context), self.heads),
                                                  split_heads(self.value(context), self.heads), mask=mask)
        return self.out(merge_heads(attended))


class _FeedForward(Module):
    def __init__(self, hidden: int, intermediate: int, name: str | None = None):
        super().__init__(name=name)
        self.dense_in = Dense(intermediate, kernel_init=_normal())
        self.dense_out = Dense(hidden, kernel_init=_normal())

    def forward(self, x) -> Tensor:
        return self.dense_out(F.gelu(self.dense_in(x)))


@register_with_arguments
class QFormerLayer(Module):
    """One Q-Former layer (module docstring): ``layer(x, num_queries, image_features=None,
    mask=None)`` for x (N, Q + T, ``hidden``), the first ``num_queries`` rows being the queries,
    image features (N, S, ``vision_dim``) read by the queries when ``cross_attention``, and a
    boolean self-attention mask broadcastable to (N, Q + T, Q + T)."""

    def __init__(self, hidden: int, heads: int, intermediate: int, cross_attention: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "QFormerLayer: hidden")
        self.heads = positive_int(heads, "QFormerLayer: heads")
        if hidden % heads:
            raise ValueError(f"QFormerLayer: hidden {hidden} is not divisible by heads {heads}")
        self.intermediate = positive_int(intermediate, "QFormerLayer: intermediate")
        self.cross_attention = bool(cross_attention)
        self.self_attention, self.self_norm = _Attention(hidden, heads), LayerNorm(eps=_EPS)
        if self.cross_attention:
            self.cross, self.cross_norm = _Attention(hidden, heads), LayerNorm(eps=_EPS)
        self.query_ffn, self.query_norm = _FeedForward(hidden, intermediate), LayerNorm(eps=_EPS)
        self.text_ffn, self.text_norm = _FeedForward(hidden, intermediate), LayerNorm(eps=_EPS)

    def forward(self, x, num_queries: int, image_features=None, mask=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.hidden or not 0 <= num_queries <= x.shape[1]:
            raise input_error(self, x, f"tokens (batch, >= {num_queries}, {self.hidden})")
        if mask is not None:
            mask = backend.xp.asarray(mask)
            mask = (mask[None] if mask.ndim == 2 else mask)[:, None]          # a heads axis
        h = self.self_norm(x + self.self_attention(x, x, mask))
        q, total = int(num_queries), x.shape[1]
        parts = []
        if q:
            queries = h[:, :q]
            if self.cross_attention:
                if image_features is None:
                    raise ValueError(f"{self._label()}: a cross-attention layer needs the image features")
                queries = self.cross_norm(queries + self.cross(queries, as_tensor(image_features)))
            parts.append(self.query_norm(queries + self.query_ffn(queries)))
        if total > q:
            text = h[:, q:]
            parts.append(self.text_norm(text + self.text_ffn(text)))
        return parts[0] if len(parts) == 1 else F.concat(parts, axis=1)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, heads={self.heads}, cross_attention={self.cross_attention}"


@register_with_arguments
class QFormer(Module):
    """BLIP-2's querying transformer (module docstring): ``num_queries`` learned queries
    (parameter ``query_tokens``, N(0, 0.02)) and text tokens of a ``vocab_size`` vocabulary
    (word and position embeddings, at most ``max_text_len`` tokens) through ``depth`` layers
    of width ``hidden`` with ``heads`` heads and feed-forward width ``intermediate`` (default
    4 hidden); the queries read image features (N, S, ``vision_dim``) in layers 0,
    ``cross_attention_every``, ... Heads: ``vision_proj`` and ``text_proj`` to ``embed_dim``
    (ITC), ``itm_head`` (2 classes) and ``lm_head`` (the vocabulary); ``temperature`` (ITC,
    0.07 at the start, clipped to [0.001, 0.5]).

    ``model(image_features, ids, text_mask=None, mask="bidirectional")`` -> (query outputs
    (N, Q, hidden), text outputs (N, T, hidden)); ``text_mask`` (N, T) is 1 on real tokens."""

    def __init__(self, num_queries: int = 32, hidden: int = 768, depth: int = 12, heads: int = 12,
                 vision_dim: int = 1408, vocab_size: int = 30522, cross_attention_every: int = 2,
                 intermediate: int | None = None, max_text_len: int = 32, embed_dim: int = 256,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_queries = positive_int(num_queries, "QFormer: num_queries")
        self.hidden = positive_int(hidden, "QFormer: hidden")
        self.depth = positive_int(depth, "QFormer: depth")
        self.heads = positive_int(heads, "QFormer: heads")
        self.vision_dim = positive_int(vision_dim, "QFormer: vision_dim")
        self.vocab_size = positive_int(vocab_size, "QFormer: vocab_size")
        self.cross_attention_every = positive_int(cross_attention_every, "QFormer: cross_attention_every")
        self.intermediate = 4 * hidden if intermediate is None else positive_int(intermediate,
                                                                                 "QFormer: intermediate")
        self.max_text_len = positive_int(max_text_len, "QFormer: max_text_len")
        self.embed_dim = positive_int(embed_dim, "QFormer: embed_dim")
        if hidden % heads:
            raise ValueError(f"QFormer: hidden {hidden} is not divisible by heads {heads}")
        dtype = backend.get_default_dtype()
        self.add_parameter("query_tokens", _normal()((num_queries, hidden), hidden, hidden, dtype))
        self.add_parameter("temperature", backend.xp.full((1,), 0.07, dtype=dtype))
        self.word_embeddings = Embedding(vocab_size, hidden, embeddings_init=_normal())
        self.position_embeddings = Embedding(self.max_text_len, hidden, embeddings_init=_normal())
        self.embed_norm = LayerNorm(eps=_EPS)
        self.layers = ModuleList([QFormerLayer(hidden, heads, self.intermediate,
                                               cross_attention=i % self.cross_attention_every == 0)
                                  for i in range(depth)])
        self.vision_proj = Dense(self.embed_dim, kernel_init=_normal())
        self.text_proj = Dense(self.embed_dim, kernel_init=_normal())
        self.itm_head = Dense(2, kernel_init=_normal())
        self.lm_head = Dense(vocab_size, kernel_init=_normal())

    def _ids(self, ids) -> numpy.ndarray:
        ids = _array(ids).astype(numpy.int64)
        if ids.ndim != 2 or ids.shape[1] > self.max_text_len:
            raise ShapeError(f"{self._label()}: token ids of shape {ids.shape}; expected (batch, T <= "
                             f"{self.max_text_len})")
        return ids

    def encode(self, image_features=None, ids=None, text_mask=None, mask: str = "bidirectional"):
        """(query outputs (N, Q, hidden) or None, text outputs (N, T, hidden) or None): the queries
        run when ``image_features`` (N, S, vision_dim) are given, the text when ``ids`` (N, T) are;
        ``mask`` names the attention mask of :func:`qformer_attention_mask`."""
        parts, n = [], None
        if image_features is not None:
            image_features = as_tensor(image_features)
            if image_features.ndim != 3 or image_features.shape[-1] != self.vision_dim:
                raise input_error(self, image_features, f"image features (batch, S, {self.vision_dim})")
            n = image_features.shape[0]
            parts.append(F.broadcast_to(self.query_tokens, (n, self.num_queries, self.hidden)))
        t = 0
        if ids is not None:
            ids = self._ids(ids)
            if n is not None and len(ids) != n:
                raise ShapeError(f"{self._label()}: {len(ids)} captions for {n} images")
            t = ids.shape[1]
            positions = numpy.broadcast_to(numpy.arange(t), ids.shape)
            parts.append(self.word_embeddings(ids) + self.position_embeddings(positions))
        if not parts:
            raise ValueError(f"{self._label()}: give image features, token ids or both")
        q = self.num_queries if image_features is not None else 0
        x = self.embed_norm(parts[0] if len(parts) == 1 else F.concat(parts, axis=1))
        allowed = qformer_attention_mask(q, t, mask, None if ids is None else text_mask)
        for layer in self.layers:
            x = layer(x, q, image_features, allowed)
        return (x[:, :q] if q else None), (x[:, q:] if t else None)

    def forward(self, image_features, ids, text_mask=None, mask: str = "bidirectional"):
        return self.encode(image_features, ids, text_mask, mask)

    def image_embeddings(self, image_features) -> Tensor:
        """Unit ITC embeddings of the query outputs (N, Q, embed_dim)."""
        queries, _ = self.encode(image_features, None)
        return F.normalize(self.vision_proj(queries), axis=-1)

    def text_embeddings(self, ids, text_mask=None) -> Tensor:
        """Unit ITC embedding (N, embed_dim) of the first text token's output."""
        _, text = self.encode(None, ids, text_mask)
        return F.normalize(self.text_proj(text[:, 0]), axis=-1)

    def similarity(self, image_embeddings, text_embeddings) -> Tensor:
        """s(i, j) = max_q <z_q(i), t(j)> / temperature: (N_images, N_texts)."""
        z, t = as_tensor(image_embeddings), as_tensor(text_embeddings)
        per_query = F.matmul(z, F.transpose(t, 1, 0)[None])                 # (N_i, Q, N_t)
        return F.max(per_query, axis=1) / F.clip(self.temperature, 0.001, 0.5)

    def itm_logits(self, image_features, ids, text_mask=None) -> Tensor:
        """Match / no-match scores (N, 2): the ITM head on the query outputs (bidirectional mask),
        averaged over the queries; class 1 is 'match'."""
        queries, _ = self.encode(image_features, ids, text_mask, "bidirectional")
        return F.mean(self.itm_head(queries), axis=1)

    def lm_logits(self, image_features, ids, text_mask=None) -> Tensor:
        """Next-token scores (N, T, vocab_size) of the text under the multimodal causal mask."""
        _, text = self.encode(image_features, ids, text_mask, "causal")
        return self.lm_head(text)

    def extra_repr(self) -> str:
        return (f"num_queries={self.num_queries}, hidden={self.hidden}, depth={self.depth}, heads={self.heads}, "
                f"cross_attention_every={self.cross_attention_every}")


def image_text_contrastive_loss(similarity) -> Tensor:
    """BLIP's ITC loss of the in-batch similarities S (N, N), pair i on the diagonal:
    (CE(S, i) + CE(S^T, i)) / 2, image-to-text and text-to-image."""
    similarity = as_tensor(similarity)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ShapeError(f"image_text_contrastive_loss: similarities of shape {tuple(similarity.shape)}; expected a "
                         "square (N, N) matrix")
    target = numpy.arange(similarity.shape[0])
    return (F.cross_entropy(similarity, target) + F.cross_entropy(F.transpose(similarity, 1, 0), target)) * 0.5


def mine_hard_negatives(similarity, rng: numpy.random.Generator) -> numpy.ndarray:
    """For each row i of the similarities S (N, N), one column j != i drawn with probability
    softmax(S[i])_j renormalized without the positive j = i: hard negatives, similar but wrong."""
    s = _array(similarity).astype(numpy.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or len(s) < 2:
        raise ShapeError(f"mine_hard_negatives: similarities of shape {s.shape}; expected (N, N) with N >= 2")
    weights = numpy.exp(s - s.max(axis=1, keepdims=True))
    numpy.fill_diagonal(weights, 0.0)
    cumulative = numpy.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random(len(s))[:, None]
    picks = (cumulative < draws).sum(axis=1)
    picks = numpy.minimum(picks, len(s) - 1)
    # a draw landing on the zero-width diagonal bin (rounding) moves to its neighbour
    rows = numpy.arange(len(s))
    return numpy.where(picks == rows, (picks + 1) % len(s), picks)


@register_with_arguments(modules=("vision_encoder", "qformer"))
class BLIP2Stage1(Module):
    """BLIP-2 stage 1: a frozen ``vision_encoder`` (images NHWC -> tokens (N, S, vision_dim), a
    feature map (N, h, w, vision_dim) or one vector (N, vision_dim)) whose features, after a
    trainable LayerNorm, the :class:`QFormer` reads. Captions are token ids (N, T) starting with
    ``bos_token_id`` (its output is the ITC text feature, and it starts decoding).

    ``model(images, ids, text_mask=None)`` -> the ITG next-token scores (N, T, vocab);
    :meth:`losses` -> {'itc', 'itm', 'itg'}; :meth:`similarity` for retrieval; :meth:`caption`
    decodes greedily."""

    def __init__(self, vision_encoder: Module, qformer: QFormer, bos_token_id: int = 1,
                 eos_token_id: int | None = None, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(qformer, QFormer):
            raise TypeError(f"BLIP2Stage1: qformer must be a QFormer, got {type(qformer).__name__}")
        self.vision_encoder, self.qformer = vision_encoder, qformer
        self.bos_token_id = int(bos_token_id)
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        self.vision_norm = LayerNorm(eps=1e-5)

    def image_features(self, images) -> Tensor:
        """The frozen encoder's tokens (N, S, vision_dim) of images (N, h, w, c), normalized."""
        with no_grad():
            features = as_tensor(self.vision_encoder(as_tensor(images)))
        self.vision_encoder.freeze()
        if features.ndim == 2:
            features = F.reshape(features, features.shape[0], 1, features.shape[1])
        elif features.ndim == 4:
            n, h, w, c = features.shape
            features = F.reshape(features, n, h * w, c)
        if features.ndim != 3 or features.shape[-1] != self.qformer.vision_dim:
            raise ShapeError(f"{self._label()}: the vision encoder gave features of shape {tuple(features.shape)}; "
                             f"expected (N, S, {self.qformer.vision_dim}), (N, h, w, {self.qformer.vision_dim}) "
                             f"or (N, {self.qformer.vision_dim})")
        return self.vision_norm(Tensor(features.data))

    def forward(self, images, ids, text_mask=None) -> Tensor:
        return self.qformer.lm_logits(self.image_features(images), ids, text_mask)

    def similarity(self, images, ids, text_mask=None) -> Tensor:
        """ITC similarities (N_images, N_texts): max over queries of the cosine, / temperature."""
        q = self.qformer
        features = self.image_features(images)
        return q.similarity(q.image_embeddings(features), q.text_embeddings(ids, text_mask))

    def losses(self, images, ids, text_mask=None, rng: numpy.random.Generator | None = None) -> dict:
        """{'itc', 'itm', 'itg'} (scalar tensors) for N >= 2 matching (image, caption) pairs; ``rng``
        draws the ITM hard negatives (default numpy.random.default_rng())."""
        q, ids = self.qformer, self.qformer._ids(ids)
        n = len(ids)
        mask = numpy.ones(ids.shape, dtype=bool) if text_mask is None else _array(text_mask) != 0
        features = self.image_features(images)
        # one pass with the uni-modal mask gives both ITC embeddings
        queries, text = q.encode(features, ids, mask, "unimodal")
        sim = q.similarity(F.normalize(q.vision_proj(queries), axis=-1),
                           F.normalize(q.text_proj(text[:, 0]), axis=-1))
        itc = image_text_contrastive_loss(sim)
        rng = numpy.random.default_rng() if rng is None else rng
        negative_images = mine_hard_negatives(_array(sim).T, rng)          # for each text
        negative_texts = mine_hard_negatives(_array(sim), rng)             # for each image
        rows = numpy.arange(n)
        image_rows = numpy.concatenate([rows, negative_images, rows])
        text_rows = numpy.concatenate([rows, rows, negative_texts])
        itm_scores = q.itm_logits(F.index_select(features, 0, image_rows), ids[text_rows], mask[text_rows])
        itm = F.cross_entropy(itm_scores, numpy.concatenate([numpy.ones(n), numpy.zeros(2 * n)]).astype(numpy.int64))
        logits = q.lm_logits(features, ids, mask)
        targets = numpy.where(mask[:, 1:], ids[:, 1:], -100)
        itg = F.cross_entropy(logits[:, :-1], targets, ignore_index=-100)
        return {"itc": itc, "itm": itm, "itg": itg}

    def caption(self, images, max_new_tokens: int) -> numpy.ndarray:
        """Greedy decoding through the ITG path: ids (N, 1 + steps) starting with bos_token_id;
        stops after ``max_new_tokens`` or when every row has produced eos_token_id."""
        steps = positive_int(max_new_tokens, "BLIP2Stage1.caption: max_new_tokens")
        with no_grad():
            features = self.image_features(images)
            out = numpy.full((features.shape[0], 1), self.bos_token_id, dtype=numpy.int64)
            done = numpy.zeros(len(out), dtype=bool)
            for _ in range(min(steps, self.qformer.max_text_len - 1)):
                scores = self.qformer.lm_logits(features, out)
                step = _array(scores[:, -1]).argmax(-1)
                if self.eos_token_id is not None:
                    step = numpy.where(done, self.eos_token_id, step)
                    done |= step == self.eos_token_id
                out = numpy.concatenate([out, step[:, None]], axis=1)
                if self.eos_token_id is not None and done.all():
                    break
        return out

    def extra_repr(self) -> str:
        return f"bos_token_id={self.bos_token_id}, eos_token_id={self.eos_token_id}"
