"""ALBERT (Lan et al., "ALBERT: a lite BERT for self-supervised learning of language
representations", 2020) in the layout of Hugging Face's ``AlbertModel``, so that its
published weights load with :func:`load_hf_albert_state_dict`.

Two changes to BERT cut the parameters:

    e   = LayerNorm(W_word[x] + W_pos[0 .. T - 1] + W_type[s])     (E wide: factorised embedding)
    h_0 = e W_in + b_in                                            (the projection E -> H)
    a_l = LayerNorm(h_{l-1} + attention_{g(l)}(h_{l-1}))            (post-norm blocks)
    h_l = LayerNorm(a_l + W_2 act(W_1 a_l + b_1) + b_2)             (feed-forward of block f(l))

With cross-layer sharing ``share='all'`` every application l uses the one block's weights
(g(l) = f(l) = 0), so the gradient of a shared weight is the sum over the L applications;
``'attention'`` shares only the attention (g(l) = 0, f(l) = l), ``'ffn'`` only the
feed-forward network, ``'none'`` nothing (a BERT with a factorised embedding).

Heads: masked LM  LayerNorm(act(h W_t + b_t)) W_word^T + b  (W_t: H -> E, so the decoder is tied
to the E-wide word table) and sentence-order prediction (SOP)  tanh(h[:, 0] W_p + b_p) W_s + b_s,
two classes: 0 = the segments in their order, 1 = swapped (:func:`sop_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.bert import (
    BertEmbeddings,
    _hf_attention_table,
    _hf_dense,
    _hf_embeddings_table,
    _hf_norm,
    _ids_shape,
    _key_mask,
    _normal,
)
from lamina.models.hf_weights import (
    HFWeight,
    build_children,
    copied,
    load_hf_state_dict,
    read_state_dict,
)
from lamina.models.schedulers.base import rng_from
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import dropout_rate, positive_int
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.sample_norm import LayerNorm

__all__ = ["ALBERT_SHARING", "AlbertForMaskedLM", "AlbertForPreTraining", "AlbertLayer", "AlbertModel",
           "AlbertPretrainingOutput", "albert_parameter_count", "albert_pretraining_loss", "load_hf_albert_state_dict",
           "ngram_mask", "sop_pairs"]

ALBERT_SHARING = ("all", "attention", "ffn", "none")
"""The cross-layer sharing options: everything, the attention only, the feed-forward network only, nothing."""


@register_with_arguments
class AlbertLayer(Module):
    """One ALBERT block, a = LayerNorm(x + dropout(attention(x))), then
    LayerNorm(a + dropout(W_2 act(W_1 a + b_1) + b_2)); ``attention=False`` or
    ``feed_forward=False`` leave out a half (the block then only serves the other half to a
    stack that shares the missing one, through :meth:`attend` and :meth:`feed_forward`).
    Sub-modules named as Hugging Face's: ``attention``, ``attention_norm``, ``ffn``,
    ``ffn_output``, ``full_layer_layer_norm``."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 hidden_dropout_prob: float = 0.0, attention_probs_dropout_prob: float = 0.0,
                 layer_norm_eps: float = 1e-12, hidden_act: str = "gelu_tanh", attention: bool = True,
                 feed_forward: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "AlbertLayer: hidden_size")
        if hidden_size % num_attention_heads:
            raise ValueError(f"AlbertLayer: hidden_size {hidden_size} is not divisible by num_attention_heads "
                             f"{num_attention_heads}")
        if not (attention or feed_forward):
            raise ValueError("AlbertLayer: a block needs its attention, its feed-forward network or both")
        self.has_attention, self.has_feed_forward = bool(attention), bool(feed_forward)
        rate = dropout_rate(hidden_dropout_prob, "AlbertLayer")
        if self.has_attention:
            self.attention = MultiHeadAttention(hidden_size, num_attention_heads,
                                                dropout=dropout_rate(attention_probs_dropout_prob, "AlbertLayer"))
            self.attention.kernel_init = _normal()
            self.attention_dropout = Dropout(rate)
            self.attention_norm = LayerNorm(-1, eps=layer_norm_eps)
        if self.has_feed_forward:
            self.ffn = Dense(intermediate_size, activation=hidden_act, kernel_init=_normal())
            self.ffn_output = Dense(hidden_size, kernel_init=_normal())
            self.ffn_dropout = Dropout(rate)
            self.full_layer_layer_norm = LayerNorm(-1, eps=layer_norm_eps)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        parts = []
        if self.has_attention:
            parts += [(self.attention, shape), (self.attention_norm, shape)]
        if self.has_feed_forward:
            parts += [(self.ffn, shape), (self.ffn_output, shape[:-1] + (self.ffn.units,)),
                      (self.full_layer_layer_norm, shape)]
        build_children(parts)
        self.built = True

    def _need(self, part: str, present: bool) -> None:
        if not present:
            raise ValueError(f"{self._label()}: built without its {part} (a block of a partly shared stack)")

    def attend(self, x, key_mask=None) -> Tensor:
        """LayerNorm(x + dropout(attention(x))); ``key_mask`` (N, T) is False on padding."""
        self._need("attention", self.has_attention)
        return self.attention_norm(F.add(x, self.attention_dropout(self.attention(x, key_mask=key_mask))))

    def feed_forward(self, x) -> Tensor:
        """LayerNorm(x + dropout(W_2 act(W_1 x + b_1) + b_2))."""
        self._need("feed-forward network", self.has_feed_forward)
        return self.full_layer_layer_norm(F.add(x, self.ffn_dropout(self.ffn_output(self.ffn(x)))))

    def forward(self, x, key_mask=None) -> Tensor:
        return self.feed_forward(self.attend(x, key_mask))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def _start_normal(model: Module, std: float) -> None:
    """Make every weight matrix and embedding table of ``model`` start N(0, std^2)."""
    for module in model.modules():
        for attribute in ("kernel_init", "embeddings_init"):
            if hasattr(module, attribute):
                setattr(module, attribute, initializers.normal(std=std))


class _AlbertLayerGroup(Module):
    """Hugging Face's layer group: ``albert_layers``, here always one block."""

    def __init__(self, block: AlbertLayer):
        super().__init__()
        self.albert_layers = ModuleList([block])


class _AlbertTransformer(Module):
    """The projection E -> H (``embedding_hidden_mapping_in``) and the (shared) blocks
    (``albert_layer_groups``): one group with ``share='all'``, else one per layer, the shared
    half living in group 0 only."""

    def __init__(self, hidden_size: int, num_hidden_layers: int, share: str, block_options: dict):
        super().__init__()
        self.num_hidden_layers, self.share = num_hidden_layers, share
        self.embedding_hidden_mapping_in = Dense(hidden_size, kernel_init=_normal())
        groups = 1 if share == "all" else num_hidden_layers
        self.albert_layer_groups = ModuleList([
            _AlbertLayerGroup(AlbertLayer(hidden_size, attention=i == 0 or share not in ("all", "attention"),
                                          feed_forward=i == 0 or share not in ("all", "ffn"), **block_options))
            for i in range(groups)])

    def block(self, i: int) -> AlbertLayer:
        return self.albert_layer_groups[i].albert_layers[0]

    def build(self, input_shape) -> None:
        embedded = tuple(input_shape)
        hidden = embedded[:-1] + (self.embedding_hidden_mapping_in.units,)
        build_children([(self.embedding_hidden_mapping_in, embedded),
                        *((group.albert_layers[0], hidden) for group in self.albert_layer_groups)])
        self.built = True

    def forward(self, x, key_mask=None) -> Tensor:
        x = self.embedding_hidden_mapping_in(x)
        for i in range(self.num_hidden_layers):
            x = self.block(0 if self.share in ("all", "attention") else i).attend(x, key_mask)
            x = self.block(0 if self.share in ("all", "ffn") else i).feed_forward(x)
        return x


@register_with_arguments
class AlbertModel(Module):
    """The ALBERT encoder as Hugging Face's ``AlbertModel``: ids (N, T) -> hidden states
    (N, T, ``hidden_size``); :meth:`pool` gives tanh(h[:, 0] W_p + b_p).

    ``model(ids, token_type_ids=None, attention_mask=None)`` as :class:`~lamina.models.BERT`.
    Sub-modules ``embeddings`` (a :class:`~lamina.models.BertEmbeddings` ``embedding_size``
    wide), ``encoder`` (``embedding_hidden_mapping_in`` and ``albert_layer_groups``, see
    ``share`` in the module notes) and, with ``add_pooling_layer``, ``pooler``. The defaults
    are albert-base-v2's (11,683,584 parameters with the pooler). Weight matrices and tables
    start N(0, ``initializer_range``^2), biases at zero.
    """

    def __init__(self, vocab_size: int = 30000, embedding_size: int = 128, hidden_size: int = 768,
                 num_hidden_layers: int = 12, num_attention_heads: int = 12, intermediate_size: int = 3072,
                 share: str = "all", max_position_embeddings: int = 512, type_vocab_size: int = 2,
                 hidden_dropout_prob: float = 0.0, attention_probs_dropout_prob: float = 0.0,
                 layer_norm_eps: float = 1e-12, hidden_act: str = "gelu_tanh", add_pooling_layer: bool = True,
                 initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        if share not in ALBERT_SHARING:
            raise ValueError(f"AlbertModel: share must be one of {ALBERT_SHARING}, got {share!r}")
        self.vocab_size = positive_int(vocab_size, "AlbertModel: vocab_size")
        self.embedding_size = positive_int(embedding_size, "AlbertModel: embedding_size")
        self.hidden_size = positive_int(hidden_size, "AlbertModel: hidden_size")
        self.share, self.hidden_act, self.add_pooling_layer = share, hidden_act, bool(add_pooling_layer)
        self.layer_norm_eps = float(layer_norm_eps)
        self.embeddings = BertEmbeddings(vocab_size, embedding_size, max_position_embeddings, type_vocab_size,
                                         dropout_rate(hidden_dropout_prob, "AlbertModel"), self.layer_norm_eps)
        block_options = {"num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                         "hidden_dropout_prob": hidden_dropout_prob,
                         "attention_probs_dropout_prob": attention_probs_dropout_prob,
                         "layer_norm_eps": self.layer_norm_eps, "hidden_act": hidden_act}
        self.encoder = _AlbertTransformer(hidden_size, positive_int(num_hidden_layers, "AlbertModel: "
                                                                    "num_hidden_layers"), share, block_options)
        if self.add_pooling_layer:
            self.pooler = Dense(hidden_size, activation="tanh", kernel_init=_normal())
        self.initializer_range = float(initializer_range)
        if not self.initializer_range > 0.0:
            raise ValueError(f"AlbertModel: initializer_range must be > 0, got {initializer_range}")
        _start_normal(self, self.initializer_range)

    def build(self, input_shape) -> None:
        ids = _ids_shape(input_shape)
        if len(ids) != 2:
            raise ShapeError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        parts = [(self.embeddings, ids), (self.encoder, ids + (self.embedding_size,))]
        if self.add_pooling_layer:
            parts.append((self.pooler, (ids[0], self.hidden_size)))
        build_children(parts)
        self.built = True

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        x = self.embeddings(ids, token_type_ids)
        return self.encoder(x, _key_mask(attention_mask, tuple(x.shape[:2]), self._label()))

    def pool(self, hidden) -> Tensor:
        """The pooled output tanh(h[:, 0] W_p + b_p) of hidden states (N, T, hidden_size)."""
        if not self.add_pooling_layer:
            raise ValueError(f"{self._label()}: built with add_pooling_layer=False; it has no pooler")
        return self.pooler(F.getitem(hidden, (slice(None), 0)))

    def compute_output_shape(self, input_shape):
        return _ids_shape(input_shape) + (self.hidden_size,)


@register_with_arguments
class AlbertForMaskedLM(Module):
    """ALBERT with the masked-LM head: ids (N, T) -> scores (N, T, V),
    LayerNorm(act(h W_t + b_t)) W_word^T + b with W_t: H -> E and the decoder tied to the
    E-wide word table. Sub-modules ``albert`` (an :class:`AlbertModel`, without pooler here),
    ``predictions_dense``, ``predictions_norm``; parameter ``predictions_bias`` (V,). The
    keyword arguments are :class:`AlbertModel`'s."""

    _pooled = False

    def __init__(self, name: str | None = None, **config):
        super().__init__(name=name)
        self.albert = AlbertModel(**{**config, "add_pooling_layer": self._pooled})
        self.predictions_dense = Dense(self.albert.embedding_size, activation=self.albert.hidden_act,
                                       kernel_init=_normal())
        self.predictions_norm = LayerNorm(-1, eps=self.albert.layer_norm_eps)
        _start_normal(self, self.albert.initializer_range)

    def build(self, input_shape) -> None:
        ids = _ids_shape(input_shape)
        build_children([(self.albert, ids), (self.predictions_dense, ids + (self.albert.hidden_size,)),
                        (self.predictions_norm, ids + (self.albert.embedding_size,))])
        self.add_parameter("predictions_bias",
                           backend.xp.zeros(self.albert.vocab_size, dtype=backend.get_default_dtype()))
        self.built = True

    def mlm_logits(self, hidden) -> Tensor:
        """The masked-LM scores (N, T, V) of hidden states (N, T, H)."""
        h = self.predictions_norm(self.predictions_dense(hidden))
        table = self.albert.embeddings.word_embeddings.weight
        return F.add(F.matmul(h, F.transpose(table, 1, 0)), self.predictions_bias)

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        return self.mlm_logits(self.albert(ids, token_type_ids, attention_mask))

    def compute_output_shape(self, input_shape):
        return _ids_shape(input_shape) + (self.albert.vocab_size,)


@register_with_arguments
class AlbertForPreTraining(AlbertForMaskedLM):
    """ALBERT with both pre-training heads: ``model(ids, token_type_ids, attention_mask)``
    -> (masked-LM scores (N, T, V), sentence-order scores (N, 2)), the second from the pooled
    [CLS] vector through ``sop_classifier`` (class 1: the segments were swapped)."""

    _pooled = True

    def __init__(self, name: str | None = None, **config):
        super().__init__(name=name, **config)
        self.sop_classifier = Dense(2, kernel_init=initializers.normal(std=self.albert.initializer_range))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        build_children([(self.sop_classifier, (_ids_shape(input_shape)[0], self.albert.hidden_size))])

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> tuple[Tensor, Tensor]:
        hidden = self.albert(ids, token_type_ids, attention_mask)
        return self.mlm_logits(hidden), self.sop_classifier(self.albert.pool(hidden))

    def compute_output_shape(self, input_shape):
        ids = _ids_shape(input_shape)
        return [ids + (self.albert.vocab_size,), (ids[0], 2)]


def albert_parameter_count(vocab_size: int = 30000, embedding_size: int = 128, hidden_size: int = 768,
                           num_hidden_layers: int = 12, intermediate_size: int = 3072, share: str = "all",
                           max_position_embeddings: int = 512, type_vocab_size: int = 2, pooler: bool = True) -> int:
    """The parameters of :class:`AlbertModel` by formula: (V + P + S) E + 2 E (embeddings),
    E H + H (projection), the attention half 4 H^2 + 4 H + 2 H and the feed-forward half
    2 H F + F + H + 2 H, each counted once if shared else L times, H^2 + H (pooler).
    albert-base-v2 (the defaults): 11,683,584."""
    if share not in ALBERT_SHARING:
        raise ValueError(f"albert_parameter_count: share must be one of {ALBERT_SHARING}, got {share!r}")
    e, h, f = embedding_size, hidden_size, intermediate_size
    attention, feed_forward = 4 * h * h + 6 * h, 2 * h * f + f + 3 * h
    total = (vocab_size + max_position_embeddings + type_vocab_size) * e + 2 * e + e * h + h
    total += attention * (1 if share in ("all", "attention") else num_hidden_layers)
    total += feed_forward * (1 if share in ("all", "ffn") else num_hidden_layers)
    return total + (h * h + h if pooler else 0)


# -- pre-training data and loss --------------------------------------------------------------
def sop_pairs(segments_a, segments_b, rng=None) -> tuple[list, list, np.ndarray]:
    """Sentence-order pairs from consecutive segments (a_i followed by b_i in the text): each
    pair is kept in order (label 0) or swapped, (b_i, a_i) (label 1), with probability 1/2.
    ``rng``: a NumPy Generator, a seed or None. Returns (firsts, seconds, labels (int64))."""
    segments_a, segments_b = list(segments_a), list(segments_b)
    if len(segments_a) != len(segments_b):
        raise ValueError(f"sop_pairs: got {len(segments_a)} first segments and {len(segments_b)} second ones; "
                         "each first segment needs the segment that follows it")
    labels = (rng_from(rng).random(len(segments_a)) < 0.5).astype(np.int64)
    firsts = [b if swap else a for a, b, swap in zip(segments_a, segments_b, labels)]
    seconds = [a if swap else b for a, b, swap in zip(segments_a, segments_b, labels)]
    return firsts, seconds, labels


def ngram_mask(ids, probability: float = 0.15, max_n: int = 3, generator=None, attention_mask=None,
               special=None) -> np.ndarray:
    """ALBERT's n-gram masking: spans of n tokens, P(n) proportional to 1/n for n <= ``max_n``,
    are chosen at random start positions until ``probability`` of each row's real tokens are
    masked (at least one). Padding (``attention_mask`` 0) and ``special`` ids are never chosen.
    Returns a boolean mask (N, T)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ShapeError(f"ngram_mask: expected token ids of shape (batch, time), got shape {ids.shape}")
    if not 0.0 < probability <= 1.0 or max_n < 1:
        raise ValueError(f"ngram_mask: probability must lie in (0, 1] and max_n be >= 1, got {probability}, {max_n}")
    rng = rng_from(generator)
    allowed = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask) != 0
    if special is not None:
        allowed &= ~np.isin(ids, list(special))
    weights = 1.0 / np.arange(1, max_n + 1)
    mask = np.zeros(ids.shape, dtype=bool)
    for row in range(ids.shape[0]):
        goal = max(1, int(round(probability * allowed[row].sum()))) if allowed[row].any() else 0
        for start in rng.permutation(np.flatnonzero(allowed[row])):
            if mask[row].sum() >= goal:
                break
            n = int(rng.choice(max_n, p=weights / weights.sum())) + 1
            span = np.arange(start, min(start + n, ids.shape[1]))
            span = span[allowed[row, span]][: goal - int(mask[row].sum())]
            mask[row, span] = True
    return mask


@dataclass
class AlbertPretrainingOutput:
    """The terms of :func:`albert_pretraining_loss`: ``loss`` = ``mlm_loss`` + ``sop_loss`` and the logits."""

    loss: Tensor
    mlm_loss: Tensor
    sop_loss: Tensor
    mlm_logits: Tensor
    sop_logits: Tensor


def albert_pretraining_loss(model: AlbertForPreTraining, ids, mask, mask_token_id: int, sop_labels,
                            token_type_ids=None, attention_mask=None) -> AlbertPretrainingOutput:
    """L = mean over masked i of -log p(x_i | x_masked) + mean over pairs of -log p(sop label):
    the ``mask`` (N, T, bool) positions of ``ids`` are replaced by ``mask_token_id``."""
    ids, mask = np.asarray(ids), np.asarray(mask, dtype=bool)
    labels = np.asarray(sop_labels, dtype=np.int64)
    if mask.shape != ids.shape or not mask.any() or labels.shape != ids.shape[:1]:
        raise ValueError(f"albert_pretraining_loss: expected a mask of the ids' shape {ids.shape} choosing a "
                         f"token and {ids.shape[0]} sentence-order labels, got a mask of shape {mask.shape} "
                         f"choosing {int(mask.sum())} and labels of shape {labels.shape}")
    mlm_logits, sop_logits = model(np.where(mask, mask_token_id, ids), token_type_ids, attention_mask)
    mlm_loss = F.cross_entropy(mlm_logits, np.where(mask, ids, -100).astype(np.int64), ignore_index=-100)
    sop_loss = F.cross_entropy(sop_logits, labels)
    return AlbertPretrainingOutput(F.add(mlm_loss, sop_loss), mlm_loss, sop_loss, mlm_logits, sop_logits)


# -- Hugging Face weights -------------------------------------------------------------------
def _block_table(group: int) -> dict[str, HFWeight]:
    hf = ours = f"encoder.albert_layer_groups.{group}.albert_layers.0."
    return {
        **_hf_attention_table(f"{ours}attention.", f"{hf}attention.", f"{hf}attention.dense"),
        **_hf_norm(f"{ours}attention_norm", f"{hf}attention.LayerNorm"),
        **_hf_dense(f"{ours}ffn", f"{hf}ffn"),
        **_hf_dense(f"{ours}ffn_output", f"{hf}ffn_output"),
        **_hf_norm(f"{ours}full_layer_layer_norm", f"{hf}full_layer_layer_norm"),
    }


def hf_albert_table(model: AlbertModel, prefix: str = "") -> dict[str, HFWeight]:
    """:class:`AlbertModel`'s state-dict keys (each after ``prefix``) -> Hugging Face's names."""
    mapping_in = "encoder.embedding_hidden_mapping_in"
    table = {**_hf_embeddings_table(), **_hf_dense(mapping_in, mapping_in)}
    for group in range(len(model.encoder.albert_layer_groups)):
        table.update(_block_table(group))
    if model.add_pooling_layer:
        table.update(_hf_dense("pooler", "pooler"))
    return {prefix + ours: weight for ours, weight in table.items()}


_HEADS = {**_hf_dense("predictions_dense", "predictions.dense"),
          **_hf_norm("predictions_norm", "predictions.LayerNorm"),
          "predictions_bias": copied("predictions.bias")}


def load_hf_albert_state_dict(model: AlbertModel | AlbertForMaskedLM, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ALBERT weights (``AlbertModel``'s names, or with the 'albert.' prefix
    of ``AlbertForMaskedLM`` / ``AlbertForPreTraining``; arrays, torch tensors or a
    .safetensors path) into ``model``, whose ``share`` must be 'all' (the published models:
    one layer group of one layer) or 'none' (one group per layer). ``Linear`` weights are
    transposed, query/key/value joined. Ignored: ``position_ids``, the tied decoder weight
    and its bias copy, and heads the model lacks. ``strict`` as :func:`load_hf_bert_state_dict`."""
    who = "load_hf_albert_state_dict"
    if not isinstance(model, (AlbertModel, AlbertForMaskedLM)):
        raise TypeError(f"{who}: expected an AlbertModel, AlbertForMaskedLM or AlbertForPreTraining, got "
                        f"{type(model).__name__}")
    albert = model.albert if isinstance(model, AlbertForMaskedLM) else model
    if albert.share not in ("all", "none"):
        raise ValueError(f"{who}: Hugging Face's layout holds whole layers; share={albert.share!r} has none")
    arrays = {key.removeprefix("albert."): value for key, value in read_state_dict(state_dict, who).items()}
    if not model.built:
        model.build((None, 1))
    if isinstance(model, AlbertForPreTraining):
        table = {**hf_albert_table(albert, "albert."), **_HEADS,
                 **_hf_dense("sop_classifier", "sop_classifier.classifier")}
        extra = ()
    elif isinstance(model, AlbertForMaskedLM):
        table, extra = {**hf_albert_table(albert, "albert."), **_HEADS}, ("pooler.", "sop_classifier.")
    else:
        table, extra = hf_albert_table(albert), ("predictions.", "sop_classifier.")

    def ignored(key: str) -> bool:
        return (key.startswith(extra) or key.endswith("position_ids")
                or key in ("predictions.decoder.weight", "predictions.decoder.bias"))

    load_hf_state_dict(model, arrays, table, ignored, strict, who)
