"""SAINT (Somepalli et al. 2021, "SAINT: Improved Neural Networks for Tabular Data via Row
Attention and Contrastive Pre-Training"):

    T_0 = [CLS ; E_j[x_cat_j] for each categorical j ; MLP_j(x_num_j) for each continuous j]
                                                  (N, 1 + n_cat + n_num, d); MLP_j: 1 -> h -> d, ReLU
    each block:
        T = T + MSA(LN(T)),   T = T + FF(LN(T))              attention over the features of a row
        R = reshape(T, (1, N, n d))                          the batch as one sequence of rows
        R = R + MISA(LN(R)),  R = R + FF(LN(R))              intersample attention: rows attend to rows
    y   = W_2 ReLU(W_1 T[:, 0])                              from the [CLS] token

Intersample attention mixes the rows of the batch, so a row's prediction depends on the rows
it is batched with, in evaluation too (as the paper). Attention and feed-forward sub-layers are
those of :mod:`lamina.models.tab_transformer` (pre-norm, GELU, d x d maps); the intersample
ones work on the width n d of a flattened row. ``attention_type`` "col" keeps only the attention
over features, "row" only the intersample attention, "colrow" both (the paper's SAINT).

Self-supervised pre-training (``pretraining=True`` adds its heads; :meth:`SAINT.pretraining_loss`):
a noisy view of each row takes each value, with probability ``cutmix_probability``, from another
row of the batch (CutMix in input space), and its tokens are mixed with those of another row,
alpha p + (1 - alpha) p_b (mixup in embedding space). Both views go through the blocks; the
InfoNCE loss of the projections z = normalize(g_1(flatten(r))), z' = normalize(g_2(flatten(r')))
with temperature tau, mean of the two directions, pulls each row's views together, and the
denoising loss asks a small MLP per feature to recover the clean row from the noisy view's
tokens (cross-entropy for categories, squared error for numbers):

    loss = contrastive_weight * InfoNCE(z, z') + denoising_weight * sum_j loss_j(head_j(r'_j), x_j)
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.ft_transformer import _layer_norm
from lamina.models.tab_transformer import _MLP, _FeedForward, _MultiHeadAttention, _normal, _TransformerLayer
from lamina.models.tabular_baselines import _probability
from lamina.nn import ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.tabular import check_categories, check_numbers

__all__ = ["SAINT", "IntersampleAttention"]

_ATTENTION_TYPES = ("col", "row", "colrow")


@register_with_arguments
class IntersampleAttention(Module):
    """x (N, n, d) -> (N, n, d) with n d = ``width``: multi-head self-attention across the N rows
    of the batch, each row one position of a single sequence, its n d values flattened:

        R = reshape(x, (1, N, n d)),   y = reshape(W_o softmax(Q K^T / sqrt(n d / heads)) V, (N, n, d))

    with Q, K, V = R W_q + b_q, R W_k + b_k, R W_v + b_v per head. Permuting the rows of x permutes
    the rows of y the same way."""

    def __init__(self, width: int, heads: int = 1, attention_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.width = positive_int(width, "IntersampleAttention: width")
        self.heads = positive_int(heads, "IntersampleAttention: heads")
        rate = _probability(attention_dropout, "IntersampleAttention: attention_dropout")
        self.attention = _MultiHeadAttention(self.width, self.heads, rate, "IntersampleAttention")
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.width:
            raise ShapeError(f"{self._label()}: expected rows (N, ...) of {self.width} values each, "
                             f"got shape {tuple(x.shape)}")
        rows = F.reshape(x, (1, x.shape[0], self.width))
        return F.reshape(self.attention(rows), x.shape)


class _IntersampleLayer(Module):
    """(N, n, d) -> (N, n, d): the pre-norm intersample attention and feed-forward sub-layers on
    the flattened rows (N, n d)."""

    def __init__(self, width: int, heads: int, ffn_multiplier: int, attention_dropout: float, ffn_dropout: float):
        super().__init__()
        self.attention_normalization = _layer_norm(width)
        self.attention = IntersampleAttention(width, heads, attention_dropout)
        self.ffn_normalization = _layer_norm(width)
        self.ffn = _FeedForward(width, ffn_multiplier, ffn_dropout)
        self.built = True

    def forward(self, x) -> Tensor:
        shape = x.shape
        rows = F.reshape(x, (shape[0], -1))
        rows = rows + self.attention(self.attention_normalization(rows))
        rows = rows + self.ffn(self.ffn_normalization(rows))
        return F.reshape(rows, shape)


class _NumericalEmbeddings(Module):
    """x (N, n_num) -> (N, n_num, d): each feature through its own MLP 1 -> h -> d with a ReLU."""

    def __init__(self, n_num: int, hidden: int, d: int):
        super().__init__()
        first, second = 1.0, 1 / math.sqrt(hidden)              # torch.nn.Linear's bounds (fan-in 1 and h)
        for key, shape, bound in (("weight_first", (n_num, hidden), first), ("bias_first", (n_num, hidden), first),
                                  ("weight_second", (n_num, hidden, d), second), ("bias_second", (n_num, d), second)):
            values = (2 * backend.rng().random(shape) - 1) * bound
            self.add_parameter(key, backend.xp.asarray(values, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        hidden = F.relu(F.expand_dims(x, -1) * self.weight_first + self.bias_first)        # (N, n_num, h)
        out = F.swapaxes(hidden, 0, 1) @ self.weight_second                              # (n_num, N, d)
        return F.swapaxes(out, 0, 1) + self.bias_second


@register_with_arguments
class SAINT(Module):
    """(x_num (N, n_num) or None, x_cat (N, n_cat) integer ids or None) -> (N, d_out) (module docstring).

    ``cat_cardinalities``: the number of categories of each categorical feature;
    ``num_hidden``: h, the hidden width of each continuous feature's embedding MLP;
    ``intersample_heads`` must divide the row width (1 + n_cat + n_num) d_token;
    ``head_hidden``: the hidden width of the output MLP on the [CLS] token. The category and [CLS]
    embeddings start N(0, 1), as ``torch.nn.Embedding``."""

    def __init__(self, n_num: int, cat_cardinalities=(), d_out: int = 1, d_token: int = 32, n_blocks: int = 2,
                 attention_heads: int = 8, intersample_heads: int = 1, attention_type: str = "colrow",
                 ffn_multiplier: int = 4, attention_dropout: float = 0.1, ffn_dropout: float = 0.1,
                 num_hidden: int = 100, head_hidden: int = 128, pretraining: bool = False,
                 projection_dim: int = 16, name: str | None = None):
        super().__init__(name=name)
        who = "SAINT"
        if isinstance(n_num, bool) or not isinstance(n_num, int) or n_num < 0:
            raise ValueError(f"{who}: n_num must be a non-negative int, got {n_num!r}")
        if attention_type not in _ATTENTION_TYPES:
            raise ValueError(f"{who}: attention_type must be one of {_ATTENTION_TYPES}, got {attention_type!r}")
        self.cat_cardinalities = tuple(positive_int(c, f"{who}: a categorical cardinality")
                                       for c in cat_cardinalities)
        if n_num + len(self.cat_cardinalities) == 0:
            raise ValueError(f"{who}: there must be at least one feature")
        self.n_num, self.d_token = n_num, positive_int(d_token, f"{who}: d_token")
        self.attention_type = attention_type
        self.add_parameter("cls", _normal((d_token,)))
        if self.cat_cardinalities:
            self.add_parameter("cat_embeddings", _normal((sum(self.cat_cardinalities), d_token)))
        self.category_offsets = backend.xp.asarray([0, *self.cat_cardinalities[:-1]]).cumsum()
        self.num_embeddings = (_NumericalEmbeddings(n_num, positive_int(num_hidden, f"{who}: num_hidden"), d_token)
                               if n_num else None)
        dropouts = (_probability(attention_dropout, f"{who}: attention_dropout"),
                    _probability(ffn_dropout, f"{who}: ffn_dropout"))
        heads = positive_int(attention_heads, f"{who}: attention_heads")
        multiplier = positive_int(ffn_multiplier, f"{who}: ffn_multiplier")
        width = (1 + len(self.cat_cardinalities) + n_num) * d_token
        if width % positive_int(intersample_heads, f"{who}: intersample_heads"):
            raise ValueError(f"{who}: the row width (1 + n_cat + n_num) d_token = {width} must be divisible by "
                             f"intersample_heads ({intersample_heads})")
        layers = []
        for _ in range(positive_int(n_blocks, f"{who}: n_blocks")):
            if attention_type != "row":
                layers.append(_TransformerLayer(d_token, heads, multiplier, *dropouts, who))
            if attention_type != "col":
                layers.append(_IntersampleLayer(width, intersample_heads, multiplier, *dropouts))
        self.layers = ModuleList(layers)
        self.head = _MLP(d_token, (positive_int(head_hidden, f"{who}: head_hidden"),),
                         positive_int(d_out, f"{who}: d_out"))
        self.pretraining = bool(pretraining)
        if self.pretraining:
            self._add_pretraining_heads(width, positive_int(projection_dim, f"{who}: projection_dim"))
        self.built = True

    def embed(self, x_num=None, x_cat=None) -> Tensor:
        """The tokens (N, 1 + n_cat + n_num, d_token) before the first block, [CLS] first."""
        who, tokens, batch = self._label(), [], None
        if self.cat_cardinalities:
            if x_cat is None:
                raise ShapeError(f"{who}: expected {len(self.cat_cardinalities)} categorical features, got none")
            ids = check_categories(who, x_cat, self.cat_cardinalities, None)
            batch = ids.shape[0]
            tokens.append(self.cat_embeddings[ids + self.category_offsets.astype(ids.dtype)])
        elif x_cat is not None:
            raise ShapeError(f"{who}: built without categorical features, got categorical input")
        if self.n_num:
            if x_num is None:
                raise ShapeError(f"{who}: expected {self.n_num} numerical features, got none")
            x = check_numbers(who, x_num, self.n_num)
            if batch is not None and x.shape[0] != batch:
                raise ShapeError(f"{who}: {x.shape[0]} rows of numerical features but {batch} of categorical ones")
            batch = x.shape[0]
            tokens.append(self.num_embeddings(x))
        elif x_num is not None:
            raise ShapeError(f"{who}: built without numerical features, got an input of shape {tuple(x_num.shape)}")
        cls = F.broadcast_to(F.reshape(self.cls, (1, 1, self.d_token)), (batch, 1, self.d_token))
        return F.concat([cls, *tokens], axis=1)

    def encode(self, x_num=None, x_cat=None) -> Tensor:
        """The tokens after every block, (N, 1 + n_cat + n_num, d_token)."""
        return self._blocks(self.embed(x_num, x_cat))

    def _blocks(self, x) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def _add_pretraining_heads(self, width: int, projection_dim: int) -> None:
        d = self.d_token
        self.projection_clean = _MLP(width, (width // 2,), projection_dim)
        self.projection_noisy = _MLP(width, (width // 2,), projection_dim)
        self.reconstruction = ModuleList([_MLP(d, (d,), size) for size in self.cat_cardinalities]
                                         + [_MLP(d, (d,), 1) for _ in range(self.n_num)])

    def pretraining_loss(self, x_num=None, x_cat=None, cutmix_probability: float = 0.3, mixup_alpha: float = 0.8,
                         temperature: float = 0.7, contrastive_weight: float = 1.0, denoising_weight: float = 1.0,
                         rng=None) -> Tensor:
        """The self-supervised loss of a batch (module docstring); ``rng`` a NumPy Generator for
        the CutMix mask and the rows mixed in (default lamina's)."""
        who = self._label()
        if not self.pretraining:
            raise ValueError(f"{who}: built without pre-training heads; pass pretraining=True")
        _probability(cutmix_probability, f"{who}: cutmix_probability")
        rng = backend.rng() if rng is None else rng
        clean = self.embed(x_num, x_cat)
        n = clean.shape[0]
        donors = rng.permutation(n)
        noisy_num = noisy_cat = None
        if self.n_num:
            x_num = check_numbers(who, x_num, self.n_num)
            swap = backend.xp.asarray(rng.random(x_num.shape) < cutmix_probability, dtype=x_num.dtype)
            noisy_num = x_num * (1 - swap) + x_num[donors] * swap
        if self.cat_cardinalities:
            ids = check_categories(who, x_cat, self.cat_cardinalities, n)
            noisy_cat = backend.xp.where(rng.random(ids.shape) < cutmix_probability, ids[donors], ids)
        noisy = self.embed(noisy_num, noisy_cat)
        noisy = mixup_alpha * noisy + (1 - mixup_alpha) * noisy[rng.permutation(n)]
        clean, noisy = self._blocks(clean), self._blocks(noisy)
        z = F.normalize(self.projection_clean(F.reshape(clean, (n, -1))))
        z_noisy = F.normalize(self.projection_noisy(F.reshape(noisy, (n, -1))))
        logits = z @ F.transpose(z_noisy) / temperature
        same_row = backend.xp.arange(n)
        contrastive = (F.cross_entropy(logits, same_row) + F.cross_entropy(F.transpose(logits), same_row)) / 2
        denoising = 0
        n_cat = len(self.cat_cardinalities)
        for j, head in enumerate(self.reconstruction):
            guess = head(noisy[:, 1 + j])
            if j < n_cat:
                denoising = denoising + F.cross_entropy(guess, ids[:, j])
            else:
                denoising = denoising + F.mse_loss(guess[:, 0], x_num[:, j - n_cat])
        return contrastive_weight * contrastive + denoising_weight * denoising

    def forward(self, x_num=None, x_cat=None) -> Tensor:
        return self.head(self.encode(x_num, x_cat)[:, 0])
