"""TabTransformer (Huang et al. 2020, "TabTransformer: Tabular Data Modeling Using Contextual
Embeddings"):

    e_j  = [c_j ; E_j[x_cat_j]]                    categorical column j: a shared column part c_j (l dims)
                                                   and a per-value part (d - l dims), l = d / 8 by default
    T    = Transformer(e_1 .. e_m)                  (N, m, d), over the categorical tokens only
    y    = MLP([flatten(T) ; LayerNorm(x_num)])     continuous features skip the Transformer

The layer normalisation of x_num (the paper's) works over the continuous features of a row,
so it drops their mean and scale (with two features, little more than which one is larger);
``continuous_normalization="batch"`` uses a BatchNorm of each feature instead, "none" none.

Each Transformer layer is pre-norm (as the FT-Transformer and SAINT reference code):

    T = T + Dropout(MultiHeadAttention(LayerNorm(T)))
    T = T + W_2 Dropout(GELU(W_1 LayerNorm(T)))

Multi-head attention has query, key, value and output maps of d x d and weights
softmax(Q K^T / sqrt(d / heads)) with dropout. The MLP is ReLU layers of widths ``mlp_hidden``
(by default 4 l and 2 l, l the width of its input, as the paper) and a linear output.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.ft_transformer import _layer_norm
from lamina.models.tabular_baselines import _probability, torch_style_dense
from lamina.nn import BatchNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module
from lamina.nn.tabular import check_categories, check_numbers

__all__ = ["TabTransformer"]

_NORMALIZATIONS = ("layer", "batch", "none")


def _normal(shape):
    return backend.xp.asarray(backend.rng().standard_normal(shape), dtype=backend.get_default_dtype())


def _continuous_normalization(kind: str, n_num: int) -> Module | None:
    if kind == "none":
        return None
    if kind == "layer":
        return _layer_norm(n_num)
    norm = BatchNorm()
    norm.build((None, n_num))
    return norm


class _MultiHeadAttention(Module):
    """(B, L, d) -> (B, L, d): self-attention of the L positions of each of the B sequences."""

    def __init__(self, d: int, heads: int, attention_dropout: float, who: str):
        super().__init__()
        if d % heads:
            raise ValueError(f"{who}: the attention width ({d}) must be divisible by the number of heads ({heads})")
        self.heads, self.attention_dropout = heads, attention_dropout
        self.query, self.key, self.value, self.out = (torch_style_dense(d, d) for _ in range(4))
        self.built = True

    def _split(self, x) -> Tensor:
        b, length, d = x.shape
        return F.swapaxes(F.reshape(x, (b, length, self.heads, d // self.heads)), 1, 2)

    def forward(self, x) -> Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ F.swapaxes(k, 2, 3) / math.sqrt(q.shape[-1])
        weights = dropout(F.softmax(scores, axis=-1), self.attention_dropout, training=self.training)
        mixed = F.swapaxes(weights @ v, 1, 2)                                 # (B, L, heads, d_head)
        return self.out(F.reshape(mixed, (x.shape[0], x.shape[1], -1)))


class _FeedForward(Module):
    """(..., d) -> (..., d): W_2 Dropout(GELU(W_1 x)) with hidden width ``multiplier`` d."""

    def __init__(self, d: int, multiplier: int, ffn_dropout: float):
        super().__init__()
        self.linear_first = torch_style_dense(d, multiplier * d)
        self.linear_second = torch_style_dense(multiplier * d, d)
        self.ffn_dropout = ffn_dropout
        self.built = True

    def forward(self, x) -> Tensor:
        h = dropout(F.gelu(self.linear_first(x)), self.ffn_dropout, training=self.training)
        return self.linear_second(h)


class _TransformerLayer(Module):
    """(B, L, d) -> (B, L, d): a pre-norm attention sub-layer and feed-forward sub-layer."""

    def __init__(self, d: int, heads: int, ffn_multiplier: int, attention_dropout: float, ffn_dropout: float,
                 who: str):
        super().__init__()
        self.attention_normalization = _layer_norm(d)
        self.attention = _MultiHeadAttention(d, heads, attention_dropout, who)
        self.ffn_normalization = _layer_norm(d)
        self.ffn = _FeedForward(d, ffn_multiplier, ffn_dropout)
        self.built = True

    def forward(self, x) -> Tensor:
        x = x + self.attention(self.attention_normalization(x))
        return x + self.ffn(self.ffn_normalization(x))


class _MLP(Module):
    """(N, d_in) -> (N, d_out): ReLU layers of widths ``hidden`` and a linear output layer."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int):
        super().__init__()
        widths = (d_in, *hidden)
        self.hidden = ModuleList([torch_style_dense(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.output = torch_style_dense(widths[-1], d_out)
        self.built = True

    def forward(self, x) -> Tensor:
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.output(x)


@register_with_arguments
class TabTransformer(Module):
    """(x_num (N, n_num) or None, x_cat (N, n_cat) integer ids) -> (N, d_out) (module docstring).

    ``cat_cardinalities``: the number of categories of each categorical column (at least one);
    ``shared_embedding_dim``: l, the width of the column part of each token (default d_token // 8,
    0 for none); ``mlp_hidden``: the MLP's hidden widths (default (4 l, 2 l));
    ``continuous_normalization``: "layer" (the paper's), "batch" or "none" (module docstring). The value
    embeddings start N(0, 1), as ``torch.nn.Embedding``."""

    def __init__(self, n_num: int, cat_cardinalities, d_out: int = 1, d_token: int = 32, n_blocks: int = 6,
                 attention_heads: int = 8, shared_embedding_dim: int | None = None, ffn_multiplier: int = 4,
                 attention_dropout: float = 0.1, ffn_dropout: float = 0.1, mlp_hidden=None,
                 continuous_normalization: str = "layer", name: str | None = None):
        super().__init__(name=name)
        who = "TabTransformer"
        if isinstance(n_num, bool) or not isinstance(n_num, int) or n_num < 0:
            raise ValueError(f"{who}: n_num must be a non-negative int, got {n_num!r}")
        self.cat_cardinalities = tuple(positive_int(c, f"{who}: a categorical cardinality")
                                       for c in cat_cardinalities)
        if not self.cat_cardinalities:
            raise ValueError(f"{who}: needs at least one categorical column (the Transformer's tokens)")
        self.n_num, self.d_token = n_num, positive_int(d_token, f"{who}: d_token")
        shared = d_token // 8 if shared_embedding_dim is None else shared_embedding_dim
        if isinstance(shared, bool) or not isinstance(shared, int) or not 0 <= shared < d_token:
            raise ValueError(f"{who}: shared_embedding_dim must be an int in [0, d_token={d_token}), got {shared!r}")
        self.shared_embedding_dim = shared
        n_cat = len(self.cat_cardinalities)
        self.add_parameter("value_embeddings", _normal((sum(self.cat_cardinalities), d_token - shared)))
        if shared:
            self.add_parameter("column_embeddings", _normal((n_cat, shared)))
        self.category_offsets = backend.xp.asarray([0, *self.cat_cardinalities[:-1]]).cumsum()
        attention_dropout = _probability(attention_dropout, f"{who}: attention_dropout")
        ffn_dropout = _probability(ffn_dropout, f"{who}: ffn_dropout")
        self.blocks = ModuleList([
            _TransformerLayer(d_token, positive_int(attention_heads, f"{who}: attention_heads"),
                              positive_int(ffn_multiplier, f"{who}: ffn_multiplier"), attention_dropout,
                              ffn_dropout, who) for _ in range(positive_int(n_blocks, f"{who}: n_blocks"))])
        if continuous_normalization not in _NORMALIZATIONS:
            raise ValueError(f"{who}: continuous_normalization must be one of {_NORMALIZATIONS}, "
                             f"got {continuous_normalization!r}")
        self.continuous_normalization = continuous_normalization
        self.num_normalization = _continuous_normalization(continuous_normalization, n_num) if n_num else None
        d_mlp = n_cat * d_token + n_num
        hidden = (4 * d_mlp, 2 * d_mlp) if mlp_hidden is None else tuple(mlp_hidden)
        self.mlp = _MLP(d_mlp, tuple(positive_int(w, f"{who}: an MLP width") for w in hidden),
                        positive_int(d_out, f"{who}: d_out"))
        self.built = True

    def embed(self, x_cat) -> Tensor:
        """The categorical tokens (N, n_cat, d_token) before the Transformer."""
        ids = check_categories(self._label(), x_cat, self.cat_cardinalities, None)
        values = self.value_embeddings[ids + self.category_offsets.astype(ids.dtype)]
        if not self.shared_embedding_dim:
            return values
        columns = F.broadcast_to(F.expand_dims(self.column_embeddings, 0),
                                 (ids.shape[0], *self.column_embeddings.shape))
        return F.concat([columns, values], axis=-1)

    def contextual_embeddings(self, x_cat) -> Tensor:
        """The categorical tokens after the Transformer, (N, n_cat, d_token)."""
        x = self.embed(x_cat)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x_num=None, x_cat=None) -> Tensor:
        who = self._label()
        if x_cat is None:
            raise ShapeError(f"{who}: expected {len(self.cat_cardinalities)} categorical features, got none")
        tokens = self.contextual_embeddings(x_cat)
        parts = [F.reshape(tokens, (tokens.shape[0], -1))]
        if self.n_num:
            if x_num is None:
                raise ShapeError(f"{who}: expected {self.n_num} numerical features, got none")
            x = check_numbers(who, x_num, self.n_num)
            if x.shape[0] != tokens.shape[0]:
                raise ShapeError(f"{who}: {x.shape[0]} rows of numerical features but {tokens.shape[0]} of "
                                 f"categorical ones")
            parts.append(x if self.num_normalization is None else self.num_normalization(x))
        elif x_num is not None:
            raise ShapeError(f"{who}: built without numerical features, got an input of shape {tuple(x_num.shape)}")
        return self.mlp(F.concat(parts, axis=-1))
