"""BERT (Devlin et al., "BERT: pre-training of deep bidirectional Transformers for language
understanding", 2019) in the layout of Hugging Face's ``BertModel`` and
``BertForMaskedLM``, so that their published weights load with :func:`load_hf_bert_state_dict`.

    h_0 = dropout(LayerNorm(W_word[x] + W_pos[0 .. T - 1] + W_type[s]))    (s: the segment ids)
    a   = LayerNorm(h_{l-1} + dropout(attention(h_{l-1})))                  (post-norm blocks)
    h_l = LayerNorm(a + dropout(W_2 gelu(W_1 a + b_1) + b_2))               (exact GELU)
    pooled = tanh(h_L[:, 0] W_p + b_p)                                      (the [CLS] token)
    mlm logits = LayerNorm(gelu(h_L W_t + b_t)) W_word^T + b                (tied to the word table)

The blocks are lamina's post-norm :class:`~lamina.nn.TransformerEncoderLayer` (no dropout
inside the feed-forward network, as BERT). The attention mask (N, T), 1 on real tokens and
0 on padding, keeps every query from attending to padding, as Hugging Face's additive mask.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.gpt2 import INITIALIZER_RANGE
from lamina.models.hf_weights import HFWeight, copied, joined_linear, linear, load_hf_state_dict, read_state_dict
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["BERT", "BertEmbeddings", "BertForMaskedLM", "BertLayer", "bert", "bert_parameter_count",
           "load_hf_bert_state_dict"]

BERT_SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
"""bert-base-uncased and bert-large-uncased (vocabulary 30522, 512 positions, 2 segment types)."""


def _normal():
    return initializers.normal(std=INITIALIZER_RANGE)


@register_layer
class BertLayer(TransformerEncoderLayer):
    """One BERT block: a = LayerNorm(x + dropout(attention(x))), then
    LayerNorm(a + dropout(W_2 gelu(W_1 a + b_1) + b_2)); a post-norm encoder layer whose
    feed-forward network has no inner dropout. ``attention_probs_dropout_prob`` acts on the
    attention weights, ``hidden_dropout_prob`` on both branches. Weights start N(0, 0.02)."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 layer_norm_eps: float = 1e-12, activation="gelu", name: str | None = None):
        super().__init__(hidden_size, num_attention_heads, intermediate_size, dropout=hidden_dropout_prob,
                         activation=activation, norm_first=False, layer_norm_eps=layer_norm_eps, name=name)
        self.attention_dropout = dropout_rate(attention_probs_dropout_prob, "BertLayer")
        self.self_attention.dropout = self.attention_dropout
        self.activation = activation
        for layer in (self.self_attention, self.linear1, self.linear2):
            layer.kernel_init = _normal()
        del self.dropout

    def _feed_forward(self, x) -> Tensor:
        return self.dropout2(self.linear2(self.linear1(x)))

    def get_config(self) -> dict:
        return {"hidden_size": self.d_model, "num_attention_heads": self.num_heads,
                "intermediate_size": self.dim_feedforward, "hidden_dropout_prob": self.dropout_rate,
                "attention_probs_dropout_prob": self.attention_dropout, "layer_norm_eps": self.layer_norm_eps,
                "activation": self.activation, "name": self.name}


@register_with_arguments
class BertEmbeddings(Module):
    """dropout(LayerNorm(word_embeddings[ids] + position_embeddings[0 .. T - 1] +
    token_type_embeddings[token_type_ids])) for ids (N, T), T <= ``max_position_embeddings``."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int, type_vocab_size: int,
                 hidden_dropout_prob: float, layer_norm_eps: float, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.word_embeddings = Embedding(vocab_size, hidden_size, embeddings_init=_normal())
        self.position_embeddings = Embedding(max_position_embeddings, hidden_size, embeddings_init=_normal())
        self.token_type_embeddings = Embedding(type_vocab_size, hidden_size, embeddings_init=_normal())
        self.layer_norm = LayerNorm(-1, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout_prob)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(ids)
            table.built = True
        self.layer_norm.build(ids + (self.hidden_size,))
        self.layer_norm.built = True
        self.built = True

    def forward(self, ids, token_type_ids=None) -> Tensor:
        ids = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2:
            raise ShapeError(f"{self._label()}: expected token ids of shape (batch, time), got shape {ids.shape}")
        n, t = ids.shape
        if t > self.max_position_embeddings:
            raise ShapeError(f"{self._label()}: the ids of shape {ids.shape} have {t} tokens, more than "
                             f"max_position_embeddings={self.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = np.zeros_like(ids)
        token_type_ids = np.asarray(token_type_ids.numpy() if isinstance(token_type_ids, Tensor) else token_type_ids)
        if token_type_ids.shape != ids.shape:
            raise ShapeError(f"{self._label()}: token_type_ids of shape {token_type_ids.shape} must match the ids' "
                             f"shape {ids.shape}")
        positions = np.broadcast_to(np.arange(t), (n, t))
        x = F.add(F.add(self.word_embeddings(ids), self.position_embeddings(positions)),
                  self.token_type_embeddings(token_type_ids))
        return self.dropout(self.layer_norm(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_size,)


def _key_mask(attention_mask, shape: tuple, who: str):
    """Hugging Face's attention mask (N, T), 1 on tokens and 0 on padding, as lamina's boolean key mask."""
    if attention_mask is None:
        return None
    mask = np.asarray(attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask)
    if mask.shape != shape:
        raise ShapeError(f"{who}: attention_mask of shape {mask.shape} must match the ids' shape {shape}")
    return backend.xp.asarray(mask != 0)


def _ids_shape(input_shape) -> tuple:
    """The shape of the ids, out of one shape or the list of shapes of a call with several inputs."""
    shape = tuple(input_shape)
    return tuple(shape[0]) if shape and isinstance(shape[0], (tuple, list)) else shape


@register_layer
class BERT(Module):
    """The BERT encoder as Hugging Face's ``BertModel``: ids (N, T) -> hidden states
    (N, T, ``hidden_size``); :meth:`pool` gives the pooled [CLS] vector tanh(h[:, 0] W + b).

    ``model(ids, token_type_ids=None, attention_mask=None)``: ``token_type_ids`` (N, T)
    segment ids (default 0); ``attention_mask`` (N, T), 1 on real tokens and 0 on padding,
    which no query attends to (the outputs at the real tokens do not depend on the padding).
    Sub-modules: ``embeddings`` (:class:`BertEmbeddings`), ``layer`` (a ModuleList of
    :class:`BertLayer`) and, with ``add_pooling_layer``, ``pooler`` (a tanh Dense).
    Dropout rates and ``layer_norm_eps`` as Hugging Face's ``BertConfig``; weights start
    N(0, 0.02) with zero biases, as Hugging Face initializes them.
    """

    def __init__(self, vocab_size: int = 30522, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072, max_position_embeddings: int = 512,
                 type_vocab_size: int = 2, hidden_dropout_prob: float = 0.1,
                 attention_probs_dropout_prob: float = 0.1, layer_norm_eps: float = 1e-12,
                 add_pooling_layer: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "BERT: vocab_size")
        self.hidden_size = positive_int(hidden_size, "BERT: hidden_size")
        self.num_hidden_layers = positive_int(num_hidden_layers, "BERT: num_hidden_layers")
        self.num_attention_heads = positive_int(num_attention_heads, "BERT: num_attention_heads")
        self.intermediate_size = positive_int(intermediate_size, "BERT: intermediate_size")
        self.max_position_embeddings = positive_int(max_position_embeddings, "BERT: max_position_embeddings")
        self.type_vocab_size = positive_int(type_vocab_size, "BERT: type_vocab_size")
        if hidden_size % num_attention_heads:
            raise ValueError(f"BERT: hidden_size {hidden_size} is not divisible by num_attention_heads "
                             f"{num_attention_heads}")
        self.hidden_dropout_prob = dropout_rate(hidden_dropout_prob, "BERT")
        self.attention_probs_dropout_prob = dropout_rate(attention_probs_dropout_prob, "BERT")
        self.layer_norm_eps = float(layer_norm_eps)
        self.add_pooling_layer = bool(add_pooling_layer)
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                                         self.hidden_dropout_prob, self.layer_norm_eps)
        self.layer = ModuleList([
            BertLayer(hidden_size, num_attention_heads, intermediate_size, self.hidden_dropout_prob,
                      self.attention_probs_dropout_prob, self.layer_norm_eps)
            for _ in range(num_hidden_layers)])
        if self.add_pooling_layer:
            self.pooler = Dense(hidden_size, activation="tanh", kernel_init=_normal())

    def build(self, input_shape) -> None:
        ids = _ids_shape(input_shape)
        if len(ids) != 2:
            raise ShapeError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.hidden_size,)
        layers = [(self.embeddings, ids), *((block, hidden) for block in self.layer)]
        if self.add_pooling_layer:
            layers.append((self.pooler, (ids[0], self.hidden_size)))
        for layer, shape in layers:
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        x = self.embeddings(ids, token_type_ids)
        key_mask = _key_mask(attention_mask, tuple(x.shape[:2]), self._label())
        for block in self.layer:
            x = block(x, key_mask=key_mask)
        return x

    def pool(self, hidden) -> Tensor:
        """The pooled output tanh(h[:, 0] W_p + b_p) of hidden states (N, T, hidden_size)."""
        if not self.add_pooling_layer:
            raise ValueError(f"{self._label()}: built with add_pooling_layer=False; it has no pooler")
        return self.pooler(F.getitem(hidden, (slice(None), 0)))

    def compute_output_shape(self, input_shape):
        return _ids_shape(input_shape) + (self.hidden_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size, "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "layer_norm_eps": self.layer_norm_eps, "add_pooling_layer": self.add_pooling_layer,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
                f"num_hidden_layers={self.num_hidden_layers}, num_attention_heads={self.num_attention_heads}")


@register_layer
class BertForMaskedLM(Module):
    """BERT with Hugging Face's masked-language-model head: ids (N, T) -> scores (N, T, V) of
    the token at every position, LayerNorm(gelu(h W_t + b_t)) W_word^T + b, the decoder tied
    to the word table. Sub-modules ``bert`` (a :class:`BERT` without pooler), ``transform``
    (the gelu Dense), ``transform_norm``; parameter ``decoder_bias`` (V,). Called as
    :class:`BERT` is; the keyword arguments are :class:`BERT`'s."""

    def __init__(self, name: str | None = None, **config):
        super().__init__(name=name)
        config["add_pooling_layer"] = False
        self.bert = BERT(**config)
        self.transform = Dense(self.bert.hidden_size, activation="gelu", kernel_init=_normal())
        self.transform_norm = LayerNorm(-1, eps=self.bert.layer_norm_eps)

    def build(self, input_shape) -> None:
        ids = _ids_shape(input_shape)
        hidden = ids + (self.bert.hidden_size,)
        for layer, shape in ((self.bert, ids), (self.transform, hidden), (self.transform_norm, hidden)):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.add_parameter("decoder_bias", backend.xp.zeros(self.bert.vocab_size, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        h = self.transform_norm(self.transform(self.bert(ids, token_type_ids, attention_mask)))
        table = self.bert.embeddings.word_embeddings.weight
        return F.add(F.matmul(h, F.transpose(table, 1, 0)), self.decoder_bias)

    def compute_output_shape(self, input_shape):
        return _ids_shape(input_shape) + (self.bert.vocab_size,)

    def get_config(self) -> dict:
        config = self.bert.get_config()
        del config["add_pooling_layer"]
        return {**config, "name": self.name}


def bert(size: str = "base", masked_lm: bool = False, **options) -> BERT | BertForMaskedLM:
    """Hugging Face's bert-base-uncased ('base': ``BertModel`` 109,482,240 parameters,
    ``BertForMaskedLM`` 109,514,298) or bert-large-uncased ('large': 335,141,888 and
    335,174,458); ``masked_lm=True`` gives :class:`BertForMaskedLM`, else :class:`BERT`.
    ``options`` override the arguments. Unbuilt: the weights are created on the first call
    or by ``model.build((None, 1))``."""
    if size not in BERT_SIZES:
        raise ValueError(f"bert: size must be one of {tuple(BERT_SIZES)}, got {size!r}")
    config = {**BERT_SIZES[size], **options}
    return BertForMaskedLM(**config) if masked_lm else BERT(**config)


def bert_parameter_count(vocab_size: int = 30522, hidden_size: int = 768, num_hidden_layers: int = 12,
                         intermediate_size: int = 3072, max_position_embeddings: int = 512, type_vocab_size: int = 2,
                         pooler: bool = True, masked_lm: bool = False) -> int:
    """The parameters of :class:`BERT` (or, ``masked_lm=True``, :class:`BertForMaskedLM`,
    which has no pooler) by formula, without building it: (V + P + S) E + 2 E (embeddings),
    L (4 E^2 + 4 E (attention) + 2 E F + F + E (feed-forward) + 4 E (two LayerNorms)),
    E^2 + E (pooler); the masked-LM head E^2 + E + 2 E + V (its decoder shares the word table)."""
    e, f = hidden_size, intermediate_size
    block = 4 * e * e + 4 * e + 2 * e * f + f + e + 4 * e
    total = (vocab_size + max_position_embeddings + type_vocab_size) * e + 2 * e + num_hidden_layers * block
    if masked_lm:
        return total + e * e + 3 * e + vocab_size
    return total + (e * e + e if pooler else 0)


# -- Hugging Face weights -------------------------------------------------------------------
def _hf_dense(ours: str, hf: str) -> dict[str, HFWeight]:
    """A Dense layer's 'weight' and 'bias' (lamina prefix ``ours``) from a PyTorch ``Linear`` ``hf``."""
    return {f"{ours}.weight": linear(f"{hf}.weight"), f"{ours}.bias": copied(f"{hf}.bias")}


def _hf_norm(ours: str, hf: str) -> dict[str, HFWeight]:
    """A LayerNorm's 'weight' and 'bias' (lamina prefix ``ours``) copied from Hugging Face's ``hf``."""
    return {f"{ours}.weight": copied(f"{hf}.weight"), f"{ours}.bias": copied(f"{hf}.bias")}


def _hf_attention_table(ours: str, hf_qkv: str, hf_out: str) -> dict[str, HFWeight]:
    """An attention layer's weights (lamina prefix ``ours``) from Hugging Face's separate
    'query', 'key', 'value' projections (after ``hf_qkv``), joined into ``in_weight`` and
    ``in_bias``, and its output projection ``hf_out``."""
    qkv = [f"{hf_qkv}{part}" for part in ("query", "key", "value")]
    return {
        f"{ours}in_weight": joined_linear(*(f"{key}.weight" for key in qkv)),
        f"{ours}in_bias": joined_linear(*(f"{key}.bias" for key in qkv)),
        f"{ours}out_weight": linear(f"{hf_out}.weight"),
        f"{ours}out_bias": copied(f"{hf_out}.bias"),
    }


def _hf_embeddings_table() -> dict[str, HFWeight]:
    """:class:`BertEmbeddings`' word, position and token-type tables and LayerNorm (key prefix
    'embeddings.') from Hugging Face's ``BertEmbeddings`` (also ALBERT's)."""
    table = {f"embeddings.{name}.weight": copied(f"embeddings.{name}.weight")
             for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    return {**table, **_hf_norm("embeddings.layer_norm", "embeddings.LayerNorm")}


def _layer_table(i: int) -> dict[str, HFWeight]:
    hf, ours = f"encoder.layer.{i}.", f"layer.{i}."
    return {
        **_hf_attention_table(f"{ours}self_attention.", f"{hf}attention.self.", f"{hf}attention.output.dense"),
        **_hf_norm(f"{ours}norm1", f"{hf}attention.output.LayerNorm"),
        **_hf_dense(f"{ours}linear1", f"{hf}intermediate.dense"),
        **_hf_dense(f"{ours}linear2", f"{hf}output.dense"),
        **_hf_norm(f"{ours}norm2", f"{hf}output.LayerNorm"),
    }


def hf_bert_table(model: BERT, prefix: str = "") -> dict[str, HFWeight]:
    """:class:`BERT`'s state-dict keys (after ``prefix``) -> Hugging Face's ``BertModel`` weights."""
    table = _hf_embeddings_table()
    for i in range(model.num_hidden_layers):
        table.update(_layer_table(i))
    if model.add_pooling_layer:
        table.update(_hf_dense("pooler", "pooler.dense"))
    return {prefix + ours: weight for ours, weight in table.items()}


_MLM_HEAD = {**_hf_dense("transform", "cls.predictions.transform.dense"),
             **_hf_norm("transform_norm", "cls.predictions.transform.LayerNorm"),
             "decoder_bias": copied("cls.predictions.bias")}


def _hf_key(key: str) -> str:
    """A checkpoint key in today's spelling: no 'bert.' prefix, LayerNorm 'gamma'/'beta'
    (older checkpoints) as 'weight'/'bias'."""
    key = key.removeprefix("bert.")
    if "LayerNorm" in key:
        stem, _, last = key.rpartition(".")
        key = f"{stem}.{ {'gamma': 'weight', 'beta': 'bias'}.get(last, last)}"
    return key


def load_hf_bert_state_dict(model: BERT | BertForMaskedLM, state_dict, strict: bool = True) -> None:
    """Load Hugging Face BERT weights into ``model``: ``state_dict`` maps Hugging Face's
    names (``BertModel``'s 'encoder.layer.0.attention.self.query.weight', or with the
    'bert.' prefix of ``BertForMaskedLM`` / ``BertForPreTraining``) to arrays or torch
    tensors, or is the path of a .safetensors file. ``Linear`` weights (out, in) are
    transposed; each layer's query, key and value projections are joined into the
    attention's ``in_weight``; old 'gamma'/'beta' LayerNorm names are accepted.

    Ignored: the ``position_ids`` buffer, the decoder weight (tied to the word table) and
    bias (a copy of 'cls.predictions.bias'), and the heads the model lacks (the 'cls.'
    heads for a :class:`BERT`; the pooler and next-sentence head for a
    :class:`BertForMaskedLM`), so a pretraining checkpoint loads into either. An unbuilt
    model is built first. ``strict``: every weight present and every other key used, else
    a KeyError listing them; a mis-shaped value raises :class:`lamina.ShapeError`."""
    who = "load_hf_bert_state_dict"
    if not isinstance(model, (BERT, BertForMaskedLM)):
        raise TypeError(f"{who}: expected a BERT or BertForMaskedLM model, got {type(model).__name__}")
    arrays = {_hf_key(key): value for key, value in read_state_dict(state_dict, who).items()}
    if not model.built:
        model.build((None, 1))
    if isinstance(model, BertForMaskedLM):
        table = {**hf_bert_table(model.bert, "bert."), **_MLM_HEAD}
        extra = ("pooler.", "cls.seq_relationship.")
    else:
        table = hf_bert_table(model)
        extra = ("cls.",)

    def ignored(key: str) -> bool:
        return (key.startswith(extra) or key.endswith("position_ids")
                or key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))

    load_hf_state_dict(model, arrays, table, ignored, strict, who)
