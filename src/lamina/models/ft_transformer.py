"""FT-Transformer (Gorishniy et al. 2021, "Revisiting Deep Learning Models for Tabular Data"),
in the layout of the authors' reference code:

    T_0  = FeatureTokenizer(x_num, x_cat)                      (N, n_num + n_cat + 1, d), [CLS] last
    T    = T + Dropout_r(Attention(LayerNorm(T)))               (no LayerNorm in the first block)
    T    = T + Dropout_r(W_2 Dropout_f(ReGLU(W_1 LayerNorm(T)) ))
    y    = Linear(ReLU(LayerNorm(T[:, -1])))                   from the [CLS] token

ReGLU(a ; b) = a * ReLU(b) halves the width 2 h of W_1's output. Attention has query, key,
value and output maps of d x d (no output map with one head), softmax(Q K^T / sqrt(d / heads))
with dropout on the attention weights. In the last block only the [CLS] token's row is
computed, the only one the head reads.
"""

from __future__ import annotations

import math

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.tabular_baselines import _probability, torch_style_dense
from lamina.nn import LayerNorm, ModuleList
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module
from lamina.nn.tabular import FeatureTokenizer

__all__ = ["FTTransformer", "reglu"]


def reglu(x) -> Tensor:
    """a * ReLU(b) of the two halves (a ; b) of the last axis."""
    a, b = F.chunk(x, 2, axis=-1)
    return a * F.relu(b)


def _layer_norm(d: int) -> LayerNorm:
    norm = LayerNorm()
    norm.build((None, d))
    return norm


class _Attention(Module):
    def __init__(self, d: int, heads: int, attention_dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"FTTransformer: d_token ({d}) must be divisible by attention_heads ({heads})")
        self.heads, self.attention_dropout = heads, attention_dropout
        self.query, self.key, self.value = (torch_style_dense(d, d) for _ in range(3))
        self.out = torch_style_dense(d, d) if heads > 1 else None
        for layer in (self.query, self.key, self.value, self.out):
            if layer is not None:
                layer.bias.data[...] = 0
        self.built = True

    def _split(self, x) -> Tensor:
        n, tokens, d = x.shape
        return F.swapaxes(F.reshape(x, (n, tokens, self.heads, d // self.heads)), 1, 2)

    def forward(self, queries, keys) -> Tensor:
        q, k, v = self._split(self.query(queries)), self._split(self.key(keys)), self._split(self.value(keys))
        scores = q @ F.swapaxes(k, 2, 3) / math.sqrt(q.shape[-1])
        weights = dropout(F.softmax(scores, axis=-1), self.attention_dropout, training=self.training)
        mixed = weights @ v                                                  # (N, heads, tokens, d_head)
        n, _, tokens, _ = mixed.shape
        mixed = F.reshape(F.swapaxes(mixed, 1, 2), (n, tokens, -1))
        return mixed if self.out is None else self.out(mixed)


class _Block(Module):
    def __init__(self, d: int, heads: int, d_hidden: int, first: bool, last: bool, dropouts: tuple):
        super().__init__()
        self.attention_dropout, self.ffn_dropout, self.residual_dropout = dropouts
        self.attention_normalization = None if first else _layer_norm(d)
        self.attention = _Attention(d, heads, self.attention_dropout)
        self.ffn_normalization = _layer_norm(d)
        self.linear_first = torch_style_dense(d, 2 * d_hidden)
        self.linear_second = torch_style_dense(d_hidden, d)
        self.last = last
        self.built = True

    def _residual(self, x, update) -> Tensor:
        return x + dropout(update, self.residual_dropout, training=self.training)

    def forward(self, x) -> Tensor:
        h = x if self.attention_normalization is None else self.attention_normalization(x)
        if self.last:
            x, queries = x[:, -1:], h[:, -1:]
        else:
            queries = h
        x = self._residual(x, self.attention(queries, h))
        h = reglu(self.linear_first(self.ffn_normalization(x)))
        return self._residual(x, self.linear_second(dropout(h, self.ffn_dropout, training=self.training)))


@register_layer
class FTTransformer(Module):
    """(x_num (N, n_num), x_cat (N, n_cat) integer ids or None) -> (N, d_out) (module docstring).

    ``cat_cardinalities``: the number of categories of each categorical feature;
    ``ffn_d_hidden``: the ReGLU width h (default 4/3 d_token, the reference's choice);
    defaults are the reference's default configuration (3 blocks of 192, 8 heads, dropouts
    0.2 on attention weights, 0.1 in the feed-forward net, none on residual branches)."""

    def __init__(self, n_num: int, cat_cardinalities=(), d_out: int = 1, d_token: int = 192, n_blocks: int = 3,
                 attention_heads: int = 8, ffn_d_hidden: int | None = None, attention_dropout: float = 0.2,
                 ffn_dropout: float = 0.1, residual_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.d_out = positive_int(d_out, "FTTransformer: d_out")
        self.n_blocks = positive_int(n_blocks, "FTTransformer: n_blocks")
        self.attention_heads = positive_int(attention_heads, "FTTransformer: attention_heads")
        self.ffn_d_hidden = positive_int(ffn_d_hidden if ffn_d_hidden is not None else int(d_token * 4 / 3),
                                         "FTTransformer: ffn_d_hidden")
        dropouts = (_probability(attention_dropout, "FTTransformer: attention_dropout"),
                    _probability(ffn_dropout, "FTTransformer: ffn_dropout"),
                    _probability(residual_dropout, "FTTransformer: residual_dropout"))
        self.attention_dropout, self.ffn_dropout, self.residual_dropout = dropouts
        self.tokenizer = FeatureTokenizer(n_num, cat_cardinalities, d_token)
        self.d_token = d_token
        self.blocks = ModuleList([_Block(d_token, attention_heads, self.ffn_d_hidden, first=i == 0,
                                         last=i == n_blocks - 1, dropouts=dropouts) for i in range(n_blocks)])
        self.head_normalization = _layer_norm(d_token)
        self.head = torch_style_dense(d_token, self.d_out)
        self.built = True

    @property
    def n_num(self) -> int:
        return self.tokenizer.n_num

    @property
    def cat_cardinalities(self) -> tuple[int, ...]:
        return self.tokenizer.cat_cardinalities

    def forward(self, x_num=None, x_cat=None) -> Tensor:
        x = self.tokenizer.tokenize(x_num, x_cat, self._label())
        for block in self.blocks:
            x = block(x)
        return self.head(F.relu(self.head_normalization(x[:, -1])))

    def get_config(self) -> dict:
        return {"n_num": self.n_num, "cat_cardinalities": list(self.cat_cardinalities), "d_out": self.d_out,
                "d_token": self.d_token, "n_blocks": self.n_blocks, "attention_heads": self.attention_heads,
                "ffn_d_hidden": self.ffn_d_hidden, "attention_dropout": self.attention_dropout,
                "ffn_dropout": self.ffn_dropout, "residual_dropout": self.residual_dropout, "name": self.name}
