"""T5 (Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", 2020) in the layout of Hugging Face's ``T5ForConditionalGeneration``, so that its
published weights load with :func:`load_hf_t5_state_dict`.

    encoder:  h = dropout(E[x]);  per block
              h = h + dropout(SelfAttention(layer_norm(h), bias = B_enc))
              h = h + dropout(FF(layer_norm(h)));   enc = dropout(final_layer_norm(h))
    decoder:  g = dropout(E[y]);  per block
              g = g + dropout(SelfAttention(layer_norm(g), bias = B_dec + causal mask))
              g = g + dropout(EncDecAttention(layer_norm(g), enc, enc))
              g = g + dropout(FF(layer_norm(g)));   dec = dropout(final_layer_norm(g))
    logits = (dec * d_model^-0.5) E^T   (tied)   or   lm_head(dec)   (untied, T5 v1.1)

``layer_norm`` is T5's, an RMS norm without mean subtraction nor bias:
y = x / sqrt(mean(x^2) + eps) * weight. Attention is softmax(q k^T + B) v over ``num_heads``
heads of ``d_kv`` features, with NO 1/sqrt(d_kv) scaling (T5 folds it into the initialisation)
and no projection biases. B is a learned relative position bias: the key-minus-query distance
is put in one of ``relative_attention_num_buckets`` buckets (:func:`relative_position_bucket`:
exact for small distances, logarithmic up to ``relative_attention_max_distance``, signed in
the encoder, only the past in the decoder) and each bucket holds one scalar per head. Only the
first block of each stack owns the table (``relative_attention_bias``); the others reuse it.
FF is ``DenseReluDense``: wo(dropout(relu(wi(x)))) for T5 v1.0, or
wo(dropout(gelu_tanh(wi_0(x)) * wi_1(x))) for ``feed_forward_proj="gated-gelu"`` (v1.1).

Generation (:meth:`T5.generate`; greedy, sampling and beam search as Hugging Face's, see
:mod:`lamina.models.t5_generation`) decodes all rows of the batch together: it encodes the
inputs once and caches each decoder block's self-attention keys and values and its
cross-attention keys and values, the relative bias of a new step being computed for the
query at the cached length.

The layers (attention, feed-forward, block, stack) are in :mod:`lamina.models.t5_layers`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import (
    HFWeight,
    build_children,
    copied,
    linear,
    load_hf_state_dict,
    main_input_shape,
    read_state_dict,
)
from lamina.models.t5_generation import generate_from_inputs
from lamina.models.t5_layers import (  # noqa: F401  (moved there, importable from here too)
    _NEG,
    T5Attention,
    T5Block,
    T5DenseFF,
    T5Stack,
    _ids,
    _normal,
    _Residual,
    relative_position_bucket,
)
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["T5", "T5_CONFIGS", "T5Attention", "T5Block", "T5DenseFF", "T5Stack", "load_hf_t5_state_dict",
           "relative_position_bucket", "t5"]

T5_CONFIGS = {
    "tiny": {"vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
             "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16},
    "small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
    "base": {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12},
    "v1_1_small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8, "num_heads": 6,
                   "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "flan_small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8,
                   "num_decoder_layers": 8, "num_heads": 6, "feed_forward_proj": "gated-gelu",
                   "tie_word_embeddings": False},
    "flan_base": {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12,
                  "num_decoder_layers": 12, "num_heads": 12, "feed_forward_proj": "gated-gelu",
                  "tie_word_embeddings": False},
}
"""Hugging Face configurations: 't5-small', 't5-base', 'google/t5-v1_1-small', 'google/flan-t5-small',
'google/flan-t5-base' and a 'tiny' one."""


@register_layer
class T5(Module):
    """T5 encoder-decoder with a language-model head (HF's ``T5ForConditionalGeneration``).

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> scores (N, Ty, vocab);
    ``model.loss(input_ids, labels, attention_mask=None)`` the mean cross-entropy over labels
    that are not -100, the decoder fed the labels shifted right (start token
    ``decoder_start_token_id`` = ``pad_token_id`` = 0, -100 read as padding), as HF.
    Sub-modules carry HF's names: ``shared``, ``encoder``, ``decoder``, ``lm_head`` (only
    when ``tie_word_embeddings`` is False). The arguments are ``T5Config``'s, with its
    defaults (t5-small's sizes); weights start as HF initializes them."""

    def __init__(self, vocab_size: int = 32128, d_model: int = 512, d_kv: int = 64, d_ff: int = 2048,
                 num_layers: int = 6, num_decoder_layers: int | None = None, num_heads: int = 8,
                 relative_attention_num_buckets: int = 32, relative_attention_max_distance: int = 128,
                 dropout_rate: float = 0.1, layer_norm_epsilon: float = 1e-6, initializer_factor: float = 1.0,
                 feed_forward_proj: str = "relu", tie_word_embeddings: bool = True, pad_token_id: int = 0,
                 eos_token_id: int = 1, decoder_start_token_id: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "T5: vocab_size")
        self.d_model = positive_int(d_model, "T5: d_model")
        self.num_layers = positive_int(num_layers, "T5: num_layers")
        self.num_decoder_layers = positive_int(num_layers if num_decoder_layers is None else num_decoder_layers,
                                               "T5: num_decoder_layers")
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.pad_token_id, self.eos_token_id = int(pad_token_id), int(eos_token_id)
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.dropout_rate = checked_rate(dropout_rate, "T5")
        self.block_options = {"d_model": d_model, "d_kv": positive_int(d_kv, "T5: d_kv"),
                              "d_ff": positive_int(d_ff, "T5: d_ff"),
                              "num_heads": positive_int(num_heads, "T5: num_heads"),
                              "relative_attention_num_buckets": relative_attention_num_buckets,
                              "relative_attention_max_distance": relative_attention_max_distance,
                              "dropout_rate": self.dropout_rate, "layer_norm_epsilon": float(layer_norm_epsilon),
                              "feed_forward_proj": feed_forward_proj, "initializer_factor": float(initializer_factor)}
        self.shared = Embedding(vocab_size, d_model, embeddings_init=_normal(float(initializer_factor)))
        self.encoder = T5Stack(self.num_layers, is_decoder=False, **self.block_options)
        self.decoder = T5Stack(self.num_decoder_layers, is_decoder=True, **self.block_options)
        if not self.tie_word_embeddings:
            self.lm_head = Dense(vocab_size, use_bias=False,
                                 kernel_init=_normal(float(initializer_factor) * d_model ** -0.5))

    def build(self, input_shape) -> None:
        ids = main_input_shape(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.d_model,)
        head = () if self.tie_word_embeddings else ((self.lm_head, hidden),)
        build_children([(self.shared, ids), (self.encoder, hidden), (self.decoder, hidden), *head])
        self.built = True

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder output (N, Tx, d_model)."""
        return self.encoder(self.shared(_ids(input_ids)), mask=attention_mask)

    def decode(self, decoder_input_ids, encoder_output, attention_mask=None, caches=None, offset: int = 0,
               decoder_attention_mask=None) -> Tensor:
        """Scores (N, Ty, vocab) of the decoder fed ``decoder_input_ids`` (after ``offset``
        cached steps when ``caches``, one dict per decoder block, is given).
        ``decoder_attention_mask`` (N, offset + Ty): False at decoder inputs no query may
        attend to (padding), on top of the causal mask, as Hugging Face's."""
        if decoder_attention_mask is not None:
            expected = (np.shape(decoder_input_ids)[0], offset + np.shape(decoder_input_ids)[1])
            if np.shape(decoder_attention_mask) != expected:
                raise ValueError(f"{self._label()}: decoder_attention_mask of shape "
                                 f"{np.shape(decoder_attention_mask)} for decoder inputs "
                                 f"{np.shape(decoder_input_ids)} after {offset} cached steps; expected {expected}")
        x = self.decoder(self.shared(_ids(decoder_input_ids)), mask=decoder_attention_mask,
                         encoder_output=encoder_output, encoder_mask=attention_mask, caches=caches, offset=offset)
        if self.tie_word_embeddings:
            x = F.mul(x, self.d_model ** -0.5)
            return F.matmul(x, F.transpose(self.shared.weight, 1, 0))
        return self.lm_head(x)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        if not self.built:
            self.build(np.shape(input_ids))
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask,
                           decoder_attention_mask=decoder_attention_mask)

    def shift_right(self, labels) -> np.ndarray:
        """The decoder input for ``labels``: the start token, then the labels but the last,
        -100 replaced by the pad id."""
        labels = _ids(labels)
        shifted = np.full_like(labels, self.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1]
        return np.where(shifted == -100, self.pad_token_id, shifted)

    def loss(self, input_ids, labels, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        """Mean cross-entropy of the scores against ``labels`` (N, Ty), -100 ignored."""
        logits = self(input_ids, self.shift_right(labels), attention_mask, decoder_attention_mask)
        return F.categorical_cross_entropy(logits, _ids(labels), from_logits=True,
                                           ignore_index=-100)

    def generate(self, input_ids, max_length: int = 20, beam_width: int = 1, attention_mask=None,
                 use_cache: bool = True, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, return_scores: bool = False):
        """Decode every input (Hugging Face's ``generate``; see
        :mod:`lamina.models.t5_generation`): ids (N, <= max_length) starting with the start
        token, each row ending with ``eos_token_id`` (then padded with the pad id) unless it
        reached ``max_length``. All rows decode together; the encoder runs once; with
        ``use_cache`` each step feeds only the new tokens (cached keys and values), otherwise
        the decoder reruns the prefixes.

        * ``beam_width`` 1, ``do_sample`` False: greedy search.
        * ``do_sample``: tokens drawn from softmax(scores / ``temperature``) kept to the
          ``top_k`` likeliest and the nucleus ``top_p`` (:func:`lamina.text.sample_token`),
          row i with ``numpy.random.default_rng(seed + i)`` (None: fresh draws).
        * ``beam_width`` > 1: beam search, hypotheses ranked by log P / L^``length_penalty``
          (L: tokens generated), stopping by ``early_stopping`` (True, False or 'never'), as
          Hugging Face's defaults (1.0, False).

        ``return_scores``: also the (N,) score of each beam-search result (its ranking score)."""
        who = "T5.generate"
        max_length = positive_int(max_length, f"{who}: max_length")
        beam_width = positive_int(beam_width, f"{who}: beam_width")
        if do_sample and beam_width > 1:
            raise ValueError(f"{who}: sampling draws one sequence per row; got do_sample=True with beam_width "
                             f"{beam_width} (beam sampling is not supported)")
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"{who}: early_stopping must be True, False or 'never', got {early_stopping!r}")
        if return_scores and beam_width == 1:
            raise ValueError(f"{who}: return_scores gives beam-search scores; pass beam_width > 1")
        if not temperature > 0:
            raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
        if top_k is not None and not 1 <= top_k <= self.vocab_size:
            raise ValueError(f"{who}: top_k must lie in [1, {self.vocab_size}], got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"{who}: top_p must lie in (0, 1], got {top_p!r}")
        input_ids = _ids(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"{who}: expected input_ids of shape (batch, time), got {input_ids.shape}")
        mask = None if attention_mask is None else _ids(attention_mask).astype(bool)
        if mask is not None and mask.shape != input_ids.shape:
            raise ValueError(f"{who}: attention_mask of shape {mask.shape} for input_ids {input_ids.shape}")
        if not self.built:
            self.build(input_ids.shape)
        return generate_from_inputs(self, input_ids, mask, max_length, beam_width, use_cache, length_penalty,
                                    early_stopping, return_scores, do_sample, temperature, top_k, top_p, seed)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        options = self.block_options
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": options["d_kv"],
                "d_ff": options["d_ff"], "num_layers": self.num_layers, "num_decoder_layers": self.num_decoder_layers,
                "num_heads": options["num_heads"],
                "relative_attention_num_buckets": options["relative_attention_num_buckets"],
                "relative_attention_max_distance": options["relative_attention_max_distance"],
                "dropout_rate": self.dropout_rate, "layer_norm_epsilon": options["layer_norm_epsilon"],
                "initializer_factor": options["initializer_factor"], "feed_forward_proj": options["feed_forward_proj"],
                "tie_word_embeddings": self.tie_word_embeddings, "pad_token_id": self.pad_token_id,
                "eos_token_id": self.eos_token_id, "decoder_start_token_id": self.decoder_start_token_id,
                "name": self.name}


def t5(config: str = "small", **options) -> T5:
    """The T5 of Hugging Face configuration ``config`` (see :data:`T5_CONFIGS`): 'small'
    (t5-small, 60,506,624 parameters), 'base' (t5-base, 222,903,552), 'v1_1_small'
    (google/t5-v1_1-small, 76,961,152), 'flan_small' (google/flan-t5-small, 76,961,152),
    'flan_base' (google/flan-t5-base, 247,577,856) or 'tiny'; ``options`` override :class:`T5`'s
    arguments. Unbuilt: ``model.build((None, 1))`` makes the weights (shape-only inside
    :func:`lamina.nn.init.meta`)."""
    if config not in T5_CONFIGS:
        raise ValueError(f"t5: config must be one of {tuple(T5_CONFIGS)}, got {config!r}")
    return T5(**{**T5_CONFIGS[config], **options})


# -- Hugging Face weights -------------------------------------------------------------------
def hf_t5_table(model: T5) -> dict[str, HFWeight]:
    """:class:`T5`'s state-dict key -> Hugging Face's weight. The names are the same; the
    ``Linear`` weights are transposed."""
    table: dict[str, HFWeight] = {}
    for key in model.state_dict():
        is_linear = key.endswith((".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi.weight", ".wi_0.weight",
                                  ".wi_1.weight", ".wo.weight")) or key == "lm_head.weight"
        table[key] = linear(key) if is_linear else copied(key)
    return table


def _ignored_keys(model: T5):
    def ignored(key: str) -> bool:
        return key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight") or (
            model.tie_word_embeddings and key == "lm_head.weight")
    return ignored


def load_hf_t5_state_dict(model: T5, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ``T5ForConditionalGeneration`` weights into ``model`` (a mapping of
    arrays or torch tensors, or safetensors files, see
    :func:`lamina.models.hf_weights.read_state_dict`). The stacks' ``embed_tokens`` copies
    of ``shared`` and, when tied, ``lm_head.weight`` are ignored. ``strict``: every weight
    present and every key used, else a KeyError listing them; a mis-shaped value raises
    :class:`lamina.ShapeError` naming the weight."""
    who = "load_hf_t5_state_dict"
    if not isinstance(model, T5):
        raise TypeError(f"{who}: expected a T5 model, got {type(model).__name__}")
    arrays: Mapping = read_state_dict(state_dict, who)
    if not model.built:
        model.build((None, 1))
    load_hf_state_dict(model, arrays, hf_t5_table(model), _ignored_keys(model), strict, who)
