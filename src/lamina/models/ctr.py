"""Click-through-rate models on categorical fields: DeepFM, DCN-v2 and DIN.

Inputs are the ids of ``F`` categorical fields, (B, F) (field f's ids in [0, field_dims[f])),
and, optionally, dense features (B, num_dense). Every field's ids index one shared table
(field f's rows start after those of the fields before it); ``e_i`` is field i's embedding.
The models return click logits (B,) (train with binary cross-entropy ``from_logits=True``).

DeepFM (Guo et al. 2017), FM and deep parts on the same embeddings:

    y_FM   = w_0 + sum_i w_{x_i} + 0.5 sum_k ((sum_i e_ik)^2 - sum_i e_ik^2)
    y_deep = MLP([e_1 ; ... ; e_F ; dense])
    logit  = y_FM + y_deep

the last FM term equals sum_{i<j} <e_i, e_j> in O(k n) instead of O(k n^2).

DCN-v2 (Wang et al. 2021), on x_0 = [e_1 ; ... ; e_F ; dense] of width D:

    x_{l+1} = x_0 * (W x_l + b) + x_l                      full rank, W (D, D)
    W = U V^T                                              low rank r, U and V (D, r)
    x_{l+1} = sum_i g_i(x_l) x_0 * (U_i V_i^T x_l + b_i) + x_l   a mixture of low-rank experts,
                                                           g = softmax(x_l G) over the experts
    stacked:  logit = h^T MLP(cross(x_0)) + c;    parallel: logit = h^T [cross(x_0) ; MLP(x_0)] + c

DIN (Zhou et al. 2018), a user's behaviours b_1..b_T (padded with ``padding_idx``) and a
candidate a, each embedded as [item ; category] when categories are given:

    w_j    = MLP_att([e_bj, e_a, e_bj - e_a, e_bj * e_a])   a scalar, no softmax (as the paper)
    v_U    = sum_{j unpadded} w_j e_bj                     the user's interest in a
    logit  = MLP([v_U ; e_a ; dense])

With ``use_attention=False`` every w_j is 1 (the paper's sum-pooled base model). The MLPs'
hidden activation is ReLU, PReLU or :class:`Dice`.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, Embedding, ModuleList, PReLU, ReLU, Sequential
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DCNv2", "DIN", "DeepFM", "Dice", "fm_interaction"]

EMBEDDING_INIT = {"name": "normal", "std": 0.05}


def fm_interaction(embeddings) -> Tensor:
    """Factorization-machine second-order term of (B, n, k) embeddings: 0.5 sum_k ((sum_i e_ik)^2
    - sum_i e_ik^2), shape (B,); equal to the sum over pairs i < j of <e_i, e_j>."""
    e = as_tensor(embeddings)
    if e.ndim != 3:
        raise ShapeError(f"fm_interaction: expected embeddings of shape (batch, fields, dim), got {tuple(e.shape)}")
    square_of_sum = F.sum(e, axis=1) ** 2
    sum_of_squares = F.sum(e * e, axis=1)
    return 0.5 * F.sum(square_of_sum - sum_of_squares, axis=1)


@register_layer
class Dice(Module):
    """Dice activation (DIN): f(s) = p(s) s + (1 - p(s)) alpha s, p(s) = sigmoid((s - E[s]) /
    sqrt(Var[s] + eps)), with a learned alpha per unit (last axis). In training E and Var are the
    batch's (over every axis but the last, biased variance) and running averages follow
    running = momentum running + (1 - momentum) batch; in evaluation the running ones are used."""

    def __init__(self, momentum: float = 0.99, eps: float = 1e-8, name: str | None = None):
        super().__init__(name=name)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Dice: momentum must be in [0, 1), got {momentum}")
        self.momentum, self.eps = float(momentum), float(eps)

    def build(self, input_shape) -> None:
        units = input_shape[-1]
        if units is None:
            raise ShapeError(f"{self._label()}: the last axis of {tuple(input_shape)} must be known")
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("alpha", xp.zeros((units,), dtype=dtype))
        self.register_buffer("running_mean", xp.zeros((units,), dtype=dtype))
        self.register_buffer("running_var", xp.ones((units,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        units = self.alpha.shape[0]
        if x.ndim < 2 or x.shape[-1] != units:
            raise ShapeError(f"{self._label()}: expected inputs (batch, ..., {units}), got {tuple(x.shape)}")
        if self.training:
            axes = tuple(range(x.ndim - 1))
            mean, var = F.mean(x, axis=axes), F.var(x, axis=axes)
            dtype, mom = self.running_mean.dtype, self.momentum
            self.running_mean = (mom * self.running_mean + (1 - mom) * mean.data).astype(dtype, copy=False)
            self.running_var = (mom * self.running_var + (1 - mom) * var.data).astype(dtype, copy=False)
        else:
            mean, var = Tensor._wrap(self.running_mean), Tensor._wrap(self.running_var)
        p = F.sigmoid((x - mean) / F.sqrt(var + self.eps))
        return p * x + (1.0 - p) * self.alpha * x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "eps": self.eps, "name": self.name}


def _activation(kind: str, who: str) -> Module:
    if kind == "relu":
        return ReLU()
    if kind == "prelu":
        return PReLU()
    if kind == "dice":
        return Dice()
    raise ValueError(f"{who}: activation must be 'relu', 'prelu' or 'dice', got {kind!r}")


def _mlp(input_dim: int, widths, activation: str, who: str, out_units: int | None = None) -> Sequential:
    """Dense layers of ``widths`` each followed by ``activation``, then a linear layer of
    ``out_units`` when given; built for an ``input_dim`` input."""
    layers = []
    for units in widths:
        positive_int(units, f"{who}: layer width")
        layers.append(Dense(units))
        layers.append(_activation(activation, who))
    if out_units is not None:
        layers.append(Dense(out_units))
    mlp = Sequential(*layers)
    mlp.build((None, input_dim))
    return mlp


def _width(widths, input_dim: int) -> int:
    return widths[-1] if widths else input_dim


class _FieldEmbedding(Module):
    """(B, F) field ids -> (B, F, dim) rows of one table shared by the fields."""

    def __init__(self, field_dims: tuple, dim: int, who: str):
        super().__init__()
        self.field_dims, self.who = field_dims, who
        self.offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]]).astype(np.int64)
        self.table = Embedding(int(sum(field_dims)), dim, embeddings_init=EMBEDDING_INIT)
        self.table.build(None)
        self.built = True

    def forward(self, ids) -> Tensor:
        ids = backend.to_numpy(ids.data if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2 or ids.shape[1] != len(self.field_dims):
            raise ShapeError(f"{self.who}: field ids must have shape (batch, {len(self.field_dims)}), "
                             f"got {tuple(ids.shape)}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{self.who}: field ids must be integers, got {ids.dtype}")
        bad = (ids < 0) | (ids >= np.asarray(self.field_dims))
        if bad.any():
            row, f = np.argwhere(bad)[0]
            raise ValueError(f"{self.who}: field {f} has id {int(ids[row, f])}, out of range "
                             f"[0, {self.field_dims[f]})")
        return self.table(backend.xp.asarray(ids + self.offsets))


def _check_fields(field_dims, embed_dim: int, num_dense: int, who: str) -> tuple:
    field_dims = tuple(int(n) for n in field_dims)
    if not field_dims:
        raise ValueError(f"{who}: field_dims must list at least one field")
    for n in field_dims:
        positive_int(n, f"{who}: field size")
    positive_int(embed_dim, f"{who}: embed_dim")
    if num_dense < 0:
        raise ValueError(f"{who}: num_dense must be >= 0, got {num_dense}")
    return field_dims


def _dense_input(model, dense, batch: int):
    if model.num_dense == 0:
        if dense is not None:
            raise ShapeError(f"{model._label()}: built with num_dense=0, but dense features were given")
        return None
    if dense is None:
        raise ShapeError(f"{model._label()}: expected dense features of shape (batch, {model.num_dense})")
    dense = as_tensor(dense)
    if dense.shape != (batch, model.num_dense):
        raise ShapeError(f"{model._label()}: dense features must have shape ({batch}, {model.num_dense}), "
                         f"got {tuple(dense.shape)}")
    return dense


def _flat_input(model, ids, dense) -> tuple[Tensor, Tensor]:
    e = model.embedding(ids)                                              # (B, F, k)
    x = F.reshape(e, (e.shape[0], -1))
    dense = _dense_input(model, dense, e.shape[0])
    return e, (x if dense is None else F.concat([x, dense], axis=1))


@register_layer
class DeepFM(Module):
    """(field ids (B, F), dense (B, num_dense) or None) -> logits (B,): FM plus a deep MLP on
    shared embeddings (module docstring). ``mlp_dims``: the hidden widths of the deep part
    (ReLU, or ``activation``), which ends with one linear unit; dense features enter the deep
    part and a first-order linear term."""

    def __init__(self, field_dims, embed_dim: int = 8, mlp_dims=(32, 16), num_dense: int = 0,
                 activation: str = "relu", name: str | None = None):
        super().__init__(name=name)
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, "DeepFM")
        self.embed_dim, self.mlp_dims, self.num_dense = embed_dim, tuple(mlp_dims), num_dense
        self.activation = activation
        self.embedding = _FieldEmbedding(self.field_dims, embed_dim, "DeepFM")
        self.first_order = _FieldEmbedding(self.field_dims, 1, "DeepFM")
        self.add_parameter("bias", backend.xp.zeros((1,), dtype=backend.get_default_dtype()))
        if num_dense:
            self.dense_linear = Dense(1, use_bias=False)
            self.dense_linear.build((None, num_dense))
        width = len(self.field_dims) * embed_dim + num_dense
        self.deep = _mlp(width, self.mlp_dims, activation, "DeepFM", out_units=1)
        self.built = True

    def forward(self, ids, dense=None) -> Tensor:
        e, x = _flat_input(self, ids, dense)
        linear = F.sum(F.reshape(self.first_order(ids), (e.shape[0], -1)), axis=1) + self.bias
        if self.num_dense:
            linear = linear + F.reshape(self.dense_linear(x[:, x.shape[1] - self.num_dense:]), (-1,))
        return linear + fm_interaction(e) + F.reshape(self.deep(x), (-1,))

    def get_config(self) -> dict:
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim, "mlp_dims": list(self.mlp_dims),
                "num_dense": self.num_dense, "activation": self.activation, "name": self.name}


class _CrossLayer(Module):
    """x_{l+1} = x_0 * (W x_l + b) + x_l, W full rank, U V^T, or a gated mixture of U_i V_i^T."""

    def __init__(self, width: int, low_rank: int | None, num_experts: int):
        super().__init__()
        dtype, glorot = backend.get_default_dtype(), initializers.get("glorot_uniform")
        self.low_rank, self.num_experts = low_rank, num_experts
        if low_rank is None:
            self.add_parameter("weight", glorot((width, width), width, width, dtype))
            self.add_parameter("bias", backend.xp.zeros((width,), dtype=dtype))
        else:
            self.add_parameter("u", glorot((num_experts, width, low_rank), low_rank, width, dtype))
            self.add_parameter("v", glorot((num_experts, width, low_rank), width, low_rank, dtype))
            self.add_parameter("bias", backend.xp.zeros((num_experts, width), dtype=dtype))
            if num_experts > 1:
                self.add_parameter("gate", glorot((width, num_experts), width, num_experts, dtype))
        self.built = True

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        if self.low_rank is None:                       # weight holds W^T: x W^T = (W x)^T per row
            return x0 * (F.matmul(x, self.weight) + self.bias) + x
        if self.num_experts == 1:
            projected = F.matmul(F.matmul(x, self.v[0]), F.swapaxes(self.u[0], 0, 1)) + self.bias[0]
            return x0 * projected + x
        low = F.einsum("bd,edr->ber", x, self.v)
        experts = F.einsum("ber,edr->bed", low, self.u) + self.bias               # (B, E, D)
        gates = F.softmax(F.matmul(x, self.gate), axis=-1)                        # (B, E)
        mixed = F.sum(F.reshape(gates, (gates.shape[0], -1, 1)) * experts, axis=1)
        return x0 * mixed + x


@register_layer
class DCNv2(Module):
    """(field ids (B, F), dense (B, num_dense) or None) -> logits (B,): the deep & cross network
    v2 (module docstring). ``low_rank``: None for full-rank W, else r of W = U V^T;
    ``num_experts`` > 1 mixes that many low-rank experts; ``structure``: "stacked" or
    "parallel". The deep MLP has ``mlp_dims`` hidden widths (may be empty when stacked)."""

    def __init__(self, field_dims, embed_dim: int = 8, num_cross_layers: int = 2, mlp_dims=(32, 16),
                 structure: str = "stacked", low_rank: int | None = None, num_experts: int = 1,
                 num_dense: int = 0, activation: str = "relu", name: str | None = None):
        super().__init__(name=name)
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, "DCNv2")
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"DCNv2: structure must be 'stacked' or 'parallel', got {structure!r}")
        if num_cross_layers < 0:
            raise ValueError(f"DCNv2: num_cross_layers must be >= 0, got {num_cross_layers}")
        if low_rank is not None:
            positive_int(low_rank, "DCNv2: low_rank")
        positive_int(num_experts, "DCNv2: num_experts")
        if num_experts > 1 and low_rank is None:
            raise ValueError("DCNv2: a mixture of experts (num_experts > 1) needs a low_rank")
        self.embed_dim, self.num_cross_layers, self.mlp_dims = embed_dim, num_cross_layers, tuple(mlp_dims)
        self.structure, self.low_rank, self.num_experts = structure, low_rank, num_experts
        self.num_dense, self.activation = num_dense, activation
        width = len(self.field_dims) * embed_dim + num_dense
        self.embedding = _FieldEmbedding(self.field_dims, embed_dim, "DCNv2")
        self.cross = ModuleList([_CrossLayer(width, low_rank, num_experts) for _ in range(num_cross_layers)])
        self.deep = _mlp(width, self.mlp_dims, activation, "DCNv2")
        head_width = _width(self.mlp_dims, width) + (width if structure == "parallel" else 0)
        self.head = Dense(1)
        self.head.build((None, head_width))
        self.built = True

    def forward(self, ids, dense=None) -> Tensor:
        _, x0 = _flat_input(self, ids, dense)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        features = self.deep(x) if self.structure == "stacked" else F.concat([x, self.deep(x0)], axis=1)
        return F.reshape(self.head(features), (-1,))

    def get_config(self) -> dict:
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim,
                "num_cross_layers": self.num_cross_layers, "mlp_dims": list(self.mlp_dims),
                "structure": self.structure, "low_rank": self.low_rank, "num_experts": self.num_experts,
                "num_dense": self.num_dense, "activation": self.activation, "name": self.name}


@register_layer
class DIN(Module):
    """(history (B, T) item ids, candidate (B,) item ids[, history_categories (B, T),
    candidate_categories (B,)][, dense (B, num_dense)]) -> logits (B,): the deep interest network
    (module docstring). History positions equal to ``padding_idx`` are left out. With
    ``category_vocab`` every behaviour is embedded as [item ; category] (width 2 embed_dim).
    ``activation`` ("dice", "prelu" or "relu") follows every hidden layer of both MLPs."""

    def __init__(self, item_vocab: int, embed_dim: int = 8, attention_mlp=(80, 40), mlp_dims=(200, 80),
                 category_vocab: int | None = None, num_dense: int = 0, activation: str = "dice",
                 use_attention: bool = True, padding_idx: int = 0, name: str | None = None):
        super().__init__(name=name)
        positive_int(item_vocab, "DIN: item_vocab")
        positive_int(embed_dim, "DIN: embed_dim")
        if category_vocab is not None:
            positive_int(category_vocab, "DIN: category_vocab")
        if not 0 <= padding_idx < item_vocab:
            raise ValueError(f"DIN: padding_idx must be in [0, {item_vocab}), got {padding_idx}")
        self.item_vocab, self.embed_dim, self.category_vocab = item_vocab, embed_dim, category_vocab
        self.attention_mlp, self.mlp_dims = tuple(attention_mlp), tuple(mlp_dims)
        self.num_dense, self.activation = num_dense, activation
        self.use_attention, self.padding_idx = bool(use_attention), padding_idx
        self.items = Embedding(item_vocab, embed_dim, embeddings_init=EMBEDDING_INIT)
        self.items.build(None)
        if category_vocab is not None:
            self.categories = Embedding(category_vocab, embed_dim, embeddings_init=EMBEDDING_INIT)
            self.categories.build(None)
        width = embed_dim * (1 if category_vocab is None else 2)
        self.attention = _mlp(4 * width, self.attention_mlp, activation, "DIN", out_units=1)
        self.mlp = _mlp(2 * width + num_dense, self.mlp_dims, activation, "DIN", out_units=1)
        self.built = True

    def _embed(self, items, categories, what: str) -> Tensor:
        e = self.items(items)
        if self.category_vocab is None:
            if categories is not None:
                raise ShapeError(f"{self._label()}: built without category_vocab, but {what} categories were given")
            return e
        if categories is None:
            raise ShapeError(f"{self._label()}: built with category_vocab, so {what} categories are needed")
        categories = np.asarray(backend.to_numpy(categories.data if isinstance(categories, Tensor) else categories))
        if categories.shape != tuple(e.shape[:-1]):
            raise ShapeError(f"{self._label()}: {what} categories must have shape {tuple(e.shape[:-1])}, got "
                             f"{categories.shape}")
        return F.concat([e, self.categories(backend.xp.asarray(categories))], axis=-1)

    def attention_weights(self, behaviours: Tensor, candidate: Tensor, mask) -> Tensor:
        """w_j (B, T) of behaviour embeddings (B, T, w) for candidate embeddings (B, w); 0 where
        ``mask`` (B, T) is False. Only the unmasked behaviours go through the attention MLP (so
        padding changes no Dice batch statistic)."""
        mask = np.asarray(backend.to_numpy(mask), dtype=bool)
        batch, steps, width = behaviours.shape
        if not self.use_attention:
            return Tensor._wrap(backend.xp.asarray(mask.astype(behaviours.dtype)))
        rows, cols = np.nonzero(mask)
        flat = backend.xp.asarray(rows * steps + cols)
        scores = Tensor._wrap(backend.xp.zeros((batch * steps,), dtype=behaviours.dtype))
        if rows.size == 0:
            return F.reshape(scores, (batch, steps))
        b = F.reshape(behaviours, (batch * steps, width))[flat]
        a = candidate[backend.xp.asarray(rows)]
        features = F.concat([b, a, b - a, b * a], axis=-1)
        valid_scores = F.reshape(self.attention(features), (-1,))
        return F.reshape(F.index_add(scores, 0, flat, valid_scores), (batch, steps))

    def forward(self, history, candidate, history_categories=None, candidate_categories=None,
                dense=None) -> Tensor:
        history = np.asarray(backend.to_numpy(history.data if isinstance(history, Tensor) else history))
        candidate = np.asarray(backend.to_numpy(candidate.data if isinstance(candidate, Tensor) else candidate))
        if history.ndim != 2 or candidate.shape != (history.shape[0],):
            raise ShapeError(f"{self._label()}: expected history (batch, steps) and candidate (batch,), got "
                             f"{history.shape} and {candidate.shape}")
        behaviours = self._embed(backend.xp.asarray(history), history_categories, "history")        # (B, T, w)
        target = self._embed(backend.xp.asarray(candidate), candidate_categories, "candidate")       # (B, w)
        weights = self.attention_weights(behaviours, target, history != self.padding_idx)        # (B, T)
        interest = F.sum(F.reshape(weights, (*weights.shape, 1)) * behaviours, axis=1)
        features = [interest, target]
        extra = _dense_input(self, dense, history.shape[0])
        if extra is not None:
            features.append(extra)
        return F.reshape(self.mlp(F.concat(features, axis=1)), (-1,))

    def get_config(self) -> dict:
        return {"item_vocab": self.item_vocab, "embed_dim": self.embed_dim,
                "attention_mlp": list(self.attention_mlp), "mlp_dims": list(self.mlp_dims),
                "category_vocab": self.category_vocab, "num_dense": self.num_dense,
                "activation": self.activation, "use_attention": self.use_attention,
                "padding_idx": self.padding_idx, "name": self.name}
