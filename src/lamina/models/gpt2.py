"""GPT-2 (Radford et al., "Language models are unsupervised multitask learners", 2019) in
the layout of Hugging Face's ``GPT2LMHeadModel``, so that its published weights load with
:func:`load_hf_gpt2_state_dict`.

    h_0 = dropout(W_te[x] + W_pe[0 .. T - 1])
    h_l = h_{l-1} + dropout(attention(ln_1(h_{l-1})))          (causal, n_head heads)
    h_l = h_l + dropout(c_proj(gelu_tanh(c_fc(ln_2(h_l)))))     (a 4 n_embd feed-forward network)
    logits = ln_f(h_L) W_te^T                                   (the head tied to the token table)

The blocks are lamina's pre-norm causal :class:`~lamina.nn.TransformerEncoderLayer` (no
dropout inside the feed-forward network, as GPT-2), so the model caches keys and values for
:func:`lamina.text.sample_text`, :func:`lamina.text.beam_search_ids` and the other decoders
of :mod:`lamina.text`. Hugging Face's ``Conv1D`` stores its weights (in, out), as lamina's
Dense and attention layers do: ``attn.c_attn.weight`` (E, 3E) is [W_q | W_k | W_v], lamina's
``in_weight``, and no weight is transposed when loading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import HFWeight, copied, load_hf_state_dict, read_state_dict
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import PositionEmbedding, TransformerEncoderLayer
from lamina.text.generation_ids import GenerationMixin

__all__ = ["GPT2", "GPT2Block", "gpt2", "gpt2_parameter_count", "load_hf_gpt2_state_dict"]

GPT2_SIZES = {
    "small": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
    "xl": {"n_embd": 1600, "n_layer": 48, "n_head": 25},
}
"""Hugging Face's gpt2, gpt2-medium, gpt2-large and gpt2-xl (vocabulary 50257, 1024 positions)."""

INITIALIZER_RANGE = 0.02
"""The standard deviation of GPT-2's (and BERT's) normal initialization of every weight matrix."""


@register_layer
class GPT2Block(TransformerEncoderLayer):
    """One GPT-2 block: x + dropout(attention(ln_1(x))), then x + dropout(mlp(ln_2(x))) with
    mlp = c_proj(gelu_tanh(c_fc(.))); a causal pre-norm encoder layer whose feed-forward
    network has no inner dropout. ``attn_pdrop`` acts on the attention weights,
    ``resid_pdrop`` on both branches."""

    def __init__(self, n_embd: int, n_head: int, n_inner: int | None = None, resid_pdrop: float = 0.1,
                 attn_pdrop: float = 0.1, layer_norm_epsilon: float = 1e-5, activation="gelu_tanh",
                 name: str | None = None):
        n_inner = 4 * n_embd if n_inner is None else n_inner
        super().__init__(n_embd, n_head, n_inner, dropout=resid_pdrop, activation=activation, norm_first=True,
                         layer_norm_eps=layer_norm_epsilon, causal=True, name=name)
        self.attn_pdrop = dropout_rate(attn_pdrop, "GPT2Block")
        self.self_attention.dropout = self.attn_pdrop
        self.activation = activation
        del self.dropout

    def _feed_forward(self, x) -> Tensor:
        return self.dropout2(self.linear2(self.linear1(x)))

    def get_config(self) -> dict:
        return {"n_embd": self.d_model, "n_head": self.num_heads, "n_inner": self.dim_feedforward,
                "resid_pdrop": self.dropout_rate, "attn_pdrop": self.attn_pdrop,
                "layer_norm_epsilon": self.layer_norm_eps, "activation": self.activation, "name": self.name}


def _normal(std: float):
    return initializers.normal(std=std)


@register_layer
class GPT2(GenerationMixin, Module):
    """GPT-2 language model: token ids (N, T), T <= ``n_positions``, -> next-token scores
    (N, T, ``vocab_size``) (see the module docstring for the formulas).

    Sub-modules carry Hugging Face's names: ``wte`` (token table), ``wpe`` (learned
    positions), ``drop``, ``h`` (a ModuleList of :class:`GPT2Block`), ``ln_f``; the output
    layer reuses ``wte.weight`` (no bias). ``embd_pdrop``, ``resid_pdrop``, ``attn_pdrop``:
    Hugging Face's dropout rates (0.1 each by default; 0 gives the deterministic model in
    training mode too). Weights start as Hugging Face initializes them: N(0, 0.02) for the
    tables and matrices, N(0, 0.02 / sqrt(2 n_layer)) for the projections that end a
    residual branch (``c_proj``), zero biases, unit LayerNorm scales.

    ``model(ids, key_mask=None, position_ids=None)``: ``key_mask`` (N, T), False for padding
    tokens that no query may attend to (while caching: (N, S) over every step read, this
    call's included); ``position_ids`` (N, T), the rows of ``wpe`` of each step (default
    0 .. T - 1, continuing while caching; a left-padded row counts from its first real token,
    as Hugging Face's cumsum(attention_mask) - 1). Within :func:`lamina.text.caching_keys_values` consecutive calls
    continue one sequence (the blocks cache keys and values, the positions continue), so
    generation reads each token once.
    """

    def __init__(self, vocab_size: int = 50257, n_positions: int = 1024, n_embd: int = 768, n_layer: int = 12,
                 n_head: int = 12, n_inner: int | None = None, embd_pdrop: float = 0.1, resid_pdrop: float = 0.1,
                 attn_pdrop: float = 0.1, layer_norm_epsilon: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "GPT2: vocab_size")
        self.n_positions = positive_int(n_positions, "GPT2: n_positions")
        self.n_embd = positive_int(n_embd, "GPT2: n_embd")
        self.n_layer = positive_int(n_layer, "GPT2: n_layer")
        self.n_head = positive_int(n_head, "GPT2: n_head")
        if n_embd % n_head:
            raise ValueError(f"GPT2: n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_inner = 4 * n_embd if n_inner is None else positive_int(n_inner, "GPT2: n_inner")
        self.embd_pdrop = dropout_rate(embd_pdrop, "GPT2")
        self.resid_pdrop = dropout_rate(resid_pdrop, "GPT2")
        self.attn_pdrop = dropout_rate(attn_pdrop, "GPT2")
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.wte = Embedding(vocab_size, n_embd, embeddings_init=_normal(INITIALIZER_RANGE))
        self.wpe = PositionEmbedding(n_positions, embeddings_init=_normal(INITIALIZER_RANGE))
        self.drop = Dropout(self.embd_pdrop)
        self.h = ModuleList([self._block() for _ in range(n_layer)])
        self.ln_f = LayerNorm(-1, eps=self.layer_norm_epsilon)

    def _block(self) -> GPT2Block:
        block = GPT2Block(self.n_embd, self.n_head, self.n_inner, self.resid_pdrop, self.attn_pdrop,
                          self.layer_norm_epsilon)
        block.self_attention.kernel_init = _normal(INITIALIZER_RANGE)
        block.linear1.kernel_init = _normal(INITIALIZER_RANGE)
        block.linear2.kernel_init = _normal(INITIALIZER_RANGE / math.sqrt(2 * self.n_layer))
        return block

    @property
    def max_len(self) -> int:
        """The longest sequence the model reads (its context): ``n_positions``."""
        return self.n_positions

    @property
    def streamable(self) -> bool:
        """True while caching keys and values: a sequence fed in pieces gives one call's scores."""
        layers = (self.wte, self.wpe, self.drop, *self.h, self.ln_f)
        return all(layer.streamable for layer in layers)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.n_embd,)
        for layer, shape in ((self.wte, ids), (self.wpe, hidden), *((block, hidden) for block in self.h),
                             (self.ln_f, hidden)):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        for block in self.h:
            out = block.self_attention.out_weight
            if not initializers.is_meta_array(out):   # c_proj of the attention: the scaled normal too
                out.data = out.data * (1.0 / math.sqrt(2 * self.n_layer))
        self.built = True

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        return self.logits(self.hidden_states(ids, key_mask=key_mask, position_ids=position_ids))

    def hidden_states(self, ids, key_mask=None, position_ids=None, mask=None) -> Tensor:
        """The final hidden states ln_f(h_L) (N, T, ``n_embd``) of ``ids``; ``mask`` (T, T)
        (while caching (T, S + T) over the S cached steps and the new ones), True = attend,
        replaces the causal mask (a tree of candidates, :func:`lamina.models.medusa_generate`)."""
        x = self.drop(self.wpe(self.wte(ids), positions=position_ids))
        for block in self.h:
            x = block(x, mask=mask, key_mask=key_mask)
        return self.ln_f(x)

    def logits(self, hidden) -> Tensor:
        """The next-token scores hidden W_te^T (..., ``vocab_size``) of final hidden states."""
        return F.matmul(hidden, F.transpose(self.wte.weight, 1, 0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "n_positions": self.n_positions, "n_embd": self.n_embd,
                "n_layer": self.n_layer, "n_head": self.n_head, "n_inner": self.n_inner,
                "embd_pdrop": self.embd_pdrop, "resid_pdrop": self.resid_pdrop, "attn_pdrop": self.attn_pdrop,
                "layer_norm_epsilon": self.layer_norm_epsilon, "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, n_positions={self.n_positions}, n_embd={self.n_embd}, "
                f"n_layer={self.n_layer}, n_head={self.n_head}")


def _size(size: str, table: Mapping, who: str) -> dict:
    if size not in table:
        raise ValueError(f"{who}: size must be one of {tuple(table)}, got {size!r}")
    return dict(table[size])


def gpt2(size: str = "small", **options) -> GPT2:
    """Hugging Face's GPT-2 of ``size`` 'small' (124,439,808 parameters), 'medium'
    (354,823,168), 'large' (774,030,080) or 'xl' (1,557,611,200); ``options`` override
    :class:`GPT2`'s arguments (dropout rates, ``n_positions``...). Unbuilt: the weights are
    created on the first call or by ``model.build((None, 1))``."""
    return GPT2(**{**_size(size, GPT2_SIZES, "gpt2"), **options})


def gpt2_parameter_count(vocab_size: int = 50257, n_positions: int = 1024, n_embd: int = 768, n_layer: int = 12,
                         n_inner: int | None = None) -> int:
    """The parameters of :class:`GPT2` by formula, without building it:
    V E + P E (tables) + L (4 E^2 + 4 E (attention) + 2 E F + F + E (MLP) + 4 E (two
    LayerNorms)) + 2 E (ln_f), F = n_inner (4 E by default); the head shares the token table."""
    e = n_embd
    f = 4 * e if n_inner is None else n_inner
    block = 4 * e * e + 4 * e + 2 * e * f + f + e + 4 * e
    return vocab_size * e + n_positions * e + n_layer * block + 2 * e


# -- Hugging Face weights -------------------------------------------------------------------
_BLOCK_KEYS = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "self_attention.in_weight": "attn.c_attn.weight", "self_attention.in_bias": "attn.c_attn.bias",
    "self_attention.out_weight": "attn.c_proj.weight", "self_attention.out_bias": "attn.c_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "linear1.weight": "mlp.c_fc.weight", "linear1.bias": "mlp.c_fc.bias",
    "linear2.weight": "mlp.c_proj.weight", "linear2.bias": "mlp.c_proj.bias",
}
_TOP_KEYS = ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")
# the causal-mask buffers some checkpoints carry, and the head tied to wte
_GPT2_IGNORED = ("attn.bias", "attn.masked_bias", "lm_head.weight")


def hf_gpt2_table(n_layer: int) -> dict[str, HFWeight]:
    """:class:`GPT2`'s state-dict key -> Hugging Face's ``GPT2Model`` weight. ``Conv1D``
    weights are (in, out) like lamina's: every array is copied as it is."""
    table = {key: copied(key) for key in _TOP_KEYS}
    for i in range(n_layer):
        table.update({f"h.{i}.{ours}": copied(f"h.{i}.{hf}") for ours, hf in _BLOCK_KEYS.items()})
    return table


def load_hf_gpt2_state_dict(model: GPT2, state_dict, strict: bool = True) -> None:
    """Load Hugging Face GPT-2 weights into ``model``: ``state_dict`` maps Hugging Face's
    names (``GPT2LMHeadModel``'s, 'transformer.h.0.attn.c_attn.weight', or
    ``GPT2Model``'s, 'h.0.attn.c_attn.weight') to arrays or torch tensors, or is the path of
    a .safetensors file. The ``Conv1D`` weights (in, out) copy as they are; ``lm_head.weight``
    (tied to ``wte``) and the attention-mask buffers are ignored. An unbuilt model is built
    first. ``strict``: every weight present and every key used, else a KeyError listing them;
    a mis-shaped value raises :class:`lamina.ShapeError`."""
    who = "load_hf_gpt2_state_dict"
    if not isinstance(model, GPT2):
        raise TypeError(f"{who}: expected a GPT2 model, got {type(model).__name__}")
    arrays = {key.removeprefix("transformer."): value for key, value in read_state_dict(state_dict, who).items()}
    if not model.built:
        model.build((None, 1))
    load_hf_state_dict(model, arrays, hf_gpt2_table(model.n_layer), lambda key: key.endswith(_GPT2_IGNORED),
                       strict, who)
