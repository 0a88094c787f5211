"""More click-through-rate models on categorical fields: Wide & Deep, AutoInt and xDeepFM.

Inputs follow :mod:`lamina.models.ctr`: the ids of ``F`` categorical fields (B, F), optionally
dense features (B, num_dense); the models return click logits (B,).

Wide & Deep (Cheng et al. 2016), a linear model over the fields and their cross products plus
an MLP over the fields' embeddings:

    y_wide = w_0 + sum_i w_{x_i} + sum_c w_{cross_c(x)} + <u, dense>
    y_deep = MLP([e_1 ; ... ; e_F ; dense])
    logit  = y_wide + y_deep

a cross ``c`` of fields (f_1, ..., f_r) is one id per combination of their values. The paper
trains the wide part with FTRL and the deep part with AdaGrad on the joint loss; here one
optimizer can take the whole model, or two take ``wide_parameters()`` and ``deep_parameters()``.

AutoInt (Song et al. 2019): every field becomes a d-vector (categorical: its embedding row;
numerical field j: x_j v_j), and each interacting layer maps the fields' vectors e_m to

    alpha^h_{m,k} = softmax_k(<W_Q^h e_m, W_K^h e_k>)       per head h, no scaling (as the paper)
    e~_m = [sum_k alpha^1_{m,k} W_V^1 e_k ; ... ; sum_k alpha^H_{m,k} W_V^H e_k]
    e_m  <- ReLU(e~_m + W_Res e_m)
    logit = w^T [e_1 ; ... ; e_M] + b                     after the last layer

xDeepFM (Lian et al. 2018): the compressed interaction network (CIN) on X^0 = the (F, d)
embeddings,

    X^k_{h,*} = sum_{i <= H_{k-1}} sum_{j <= F} W^{k,h}_{ij} (X^{k-1}_{i,*} * X^0_{j,*})
    p^k_h     = sum_d X^k_{h,d}                           sum pooling of every feature map

with ``split_half`` every layer but the last passes half its maps on and pools the other half;
logit = linear + w^T [p^1 ; ... ; p^K] + MLP([e ; dense]).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.ctr import _check_fields, _dense_input, _FieldEmbedding, _flat_input, _mlp
from lamina.nn import Dense, ModuleList
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CIN", "AutoInt", "InteractingLayer", "WideAndDeep", "XDeepFM"]


def _linear_part(model, ids, dense, batch: int) -> Tensor:
    """w_0 + sum_i w_{x_i} + <u, dense>: the first-order term over the fields."""
    linear = F.sum(F.reshape(model.first_order(ids), (batch, -1)), axis=1) + model.bias
    dense = _dense_input(model, dense, batch)
    if dense is not None:
        linear = linear + F.reshape(model.dense_linear(dense), (-1,))
    return linear


def _add_linear(model, field_dims: tuple, num_dense: int, who: str) -> None:
    model.first_order = _FieldEmbedding(field_dims, 1, who)
    model.add_parameter("bias", backend.xp.zeros((1,), dtype=backend.get_default_dtype()))
    if num_dense:
        model.dense_linear = Dense(1, use_bias=False)
        model.dense_linear.build((None, num_dense))


@register_layer
class WideAndDeep(Module):
    """(field ids (B, F), dense (B, num_dense) or None) -> logits (B,): a wide linear model over
    the fields and the crosses ``cross_fields`` (tuples of field indices, e.g. ((0, 1), (1, 2, 3)))
    plus a deep MLP (``mlp_dims`` hidden widths, one linear output unit) on the fields' embeddings
    (module docstring)."""

    def __init__(self, field_dims, embed_dim: int = 8, mlp_dims=(32, 16), cross_fields=(), num_dense: int = 0,
                 activation: str = "relu", name: str | None = None):
        super().__init__(name=name)
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, "WideAndDeep")
        self.cross_fields = tuple(tuple(int(f) for f in cross) for cross in cross_fields)
        for cross in self.cross_fields:
            if len(cross) < 2 or len(set(cross)) != len(cross) or not all(0 <= f < len(self.field_dims)
                                                                         for f in cross):
                raise ValueError(f"WideAndDeep: a cross must name two or more distinct fields in "
                                 f"[0, {len(self.field_dims)}), got {cross}")
        self.embed_dim, self.mlp_dims, self.num_dense = embed_dim, tuple(mlp_dims), num_dense
        self.activation = activation
        _add_linear(self, self.field_dims, num_dense, "WideAndDeep")
        if self.cross_fields:
            sizes = tuple(int(np.prod([self.field_dims[f] for f in cross])) for cross in self.cross_fields)
            self.cross_weights = _FieldEmbedding(sizes, 1, "WideAndDeep")
        self.embedding = _FieldEmbedding(self.field_dims, embed_dim, "WideAndDeep")
        self.deep = _mlp(len(self.field_dims) * embed_dim + num_dense, self.mlp_dims, activation, "WideAndDeep",
                         out_units=1)
        self.built = True

    def cross_ids(self, ids) -> np.ndarray:
        """(B, C) ids of the crosses: the mixed-radix number of each cross's field values."""
        ids = np.asarray(backend.to_numpy(ids.data if isinstance(ids, Tensor) else ids))
        columns = []
        for cross in self.cross_fields:
            code = np.zeros(ids.shape[0], dtype=np.int64)
            for f in cross:
                code = code * self.field_dims[f] + ids[:, f]
            columns.append(code)
        return np.stack(columns, axis=1)

    def wide_logit(self, ids, dense=None) -> Tensor:
        ids = np.asarray(backend.to_numpy(ids.data if isinstance(ids, Tensor) else ids))
        if ids.ndim != 2:
            raise ShapeError(f"{self._label()}: field ids must have shape (batch, {len(self.field_dims)}), "
                             f"got {ids.shape}")
        wide = _linear_part(self, ids, dense, ids.shape[0])
        if self.cross_fields:
            wide = wide + F.sum(F.reshape(self.cross_weights(self.cross_ids(ids)), (ids.shape[0], -1)), axis=1)
        return wide

    def deep_logit(self, ids, dense=None) -> Tensor:
        _, x = _flat_input(self, ids, dense)
        return F.reshape(self.deep(x), (-1,))

    def forward(self, ids, dense=None) -> Tensor:
        return self.wide_logit(ids, dense) + self.deep_logit(ids, dense)

    def wide_parameters(self) -> list:
        return [p for name, p in self.named_parameters() if not name.startswith(("embedding.", "deep."))]

    def deep_parameters(self) -> list:
        return [p for name, p in self.named_parameters() if name.startswith(("embedding.", "deep."))]

    def get_config(self) -> dict:
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim, "mlp_dims": list(self.mlp_dims),
                "cross_fields": [list(c) for c in self.cross_fields], "num_dense": self.num_dense,
                "activation": self.activation, "name": self.name}


@register_layer
class InteractingLayer(Module):
    """(B, M, embed_dim) field vectors -> (B, M, num_heads * attention_dim): AutoInt's multi-head
    self-attention over fields with a residual projection and ReLU (module docstring); without
    ``use_residual`` the output is ReLU(e~)."""

    def __init__(self, embed_dim: int, attention_dim: int = 8, num_heads: int = 2, use_residual: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        for value, what in ((embed_dim, "embed_dim"), (attention_dim, "attention_dim"), (num_heads, "num_heads")):
            positive_int(value, f"InteractingLayer: {what}")
        self.embed_dim, self.attention_dim, self.num_heads = embed_dim, attention_dim, num_heads
        self.use_residual = bool(use_residual)
        dtype, glorot, out = backend.get_default_dtype(), initializers.get("glorot_uniform"), num_heads * attention_dim
        for part in ("query", "key", "value") + (("residual",) if self.use_residual else ()):
            self.add_parameter(part, glorot((embed_dim, out), embed_dim, out, dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected field vectors (batch, fields, {self.embed_dim}), "
                             f"got {tuple(x.shape)}")
        batch, fields, heads, width = x.shape[0], x.shape[1], self.num_heads, self.attention_dim

        def split(w):                                        # (B, M, H d') -> (B, H, M, d')
            return F.swapaxes(F.reshape(F.matmul(x, w), (batch, fields, heads, width)), 1, 2)

        q, k, v = split(self.query), split(self.key), split(self.value)
        attention = F.softmax(F.matmul(q, F.swapaxes(k, 2, 3)), axis=-1)             # (B, H, M, M)
        mixed = F.reshape(F.swapaxes(F.matmul(attention, v), 1, 2), (batch, fields, heads * width))
        if self.use_residual:
            mixed = mixed + F.matmul(x, self.residual)
        return F.relu(mixed)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.num_heads * self.attention_dim)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "attention_dim": self.attention_dim, "num_heads": self.num_heads,
                "use_residual": self.use_residual, "name": self.name}


@register_layer
class AutoInt(Module):
    """(field ids (B, F), dense (B, num_dense) or None) -> logits (B,): every categorical and
    numerical field as a vector, ``num_layers`` :class:`InteractingLayer` s, a linear output on
    the flattened last layer (module docstring)."""

    def __init__(self, field_dims, embed_dim: int = 16, num_layers: int = 3, num_heads: int = 2,
                 attention_dim: int = 8, use_residual: bool = True, num_dense: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, "AutoInt")
        positive_int(num_layers, "AutoInt: num_layers")
        self.embed_dim, self.num_layers, self.num_heads = embed_dim, num_layers, num_heads
        self.attention_dim, self.use_residual, self.num_dense = attention_dim, bool(use_residual), num_dense
        self.embedding = _FieldEmbedding(self.field_dims, embed_dim, "AutoInt")
        if num_dense:
            normal = initializers.get({"name": "normal", "std": 0.05})
            self.add_parameter("dense_embedding",
                               normal((num_dense, embed_dim), num_dense, embed_dim, backend.get_default_dtype()))
        widths = [embed_dim] + [num_heads * attention_dim] * num_layers
        self.interacting = ModuleList([InteractingLayer(widths[i], attention_dim, num_heads, use_residual)
                                       for i in range(num_layers)])
        self.head = Dense(1)
        self.head.build((None, (len(self.field_dims) + num_dense) * widths[-1]))
        self.built = True

    def field_vectors(self, ids, dense=None) -> Tensor:
        """(B, F + num_dense, embed_dim): the categorical embeddings, then x_j v_j per numerical field."""
        e = self.embedding(ids)
        dense = _dense_input(self, dense, e.shape[0])
        if dense is None:
            return e
        numerical = F.reshape(dense, (e.shape[0], self.num_dense, 1)) * self.dense_embedding
        return F.concat([e, numerical], axis=1)

    def forward(self, ids, dense=None) -> Tensor:
        x = self.field_vectors(ids, dense)
        for layer in self.interacting:
            x = layer(x)
        return F.reshape(self.head(F.reshape(x, (x.shape[0], -1))), (-1,))

    def get_config(self) -> dict:
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "attention_dim": self.attention_dim,
                "use_residual": self.use_residual, "num_dense": self.num_dense, "name": self.name}


@register_layer
class CIN(Module):
    """(B, num_fields, d) embeddings X^0 -> (B, pooled width) sum-pooled feature maps: the
    compressed interaction network (module docstring). ``layer_sizes``: H_1 .. H_K; with
    ``split_half`` every size but the last must be even, and the output width is
    sum_{k<K} H_k / 2 + H_K (else sum_k H_k). ``weight_k`` holds W^k as (H_{k-1} F, H_k), row
    i F + j for the pair (i, j)."""

    def __init__(self, num_fields: int, layer_sizes=(16, 16), split_half: bool = True, name: str | None = None):
        super().__init__(name=name)
        positive_int(num_fields, "CIN: num_fields")
        self.num_fields, self.layer_sizes, self.split_half = num_fields, tuple(layer_sizes), bool(split_half)
        if not self.layer_sizes:
            raise ValueError("CIN: layer_sizes must list at least one layer")
        for k, size in enumerate(self.layer_sizes):
            positive_int(size, "CIN: layer size")
            if self.split_half and k < len(self.layer_sizes) - 1 and size % 2:
                raise ValueError(f"CIN: with split_half every layer size but the last must be even, got "
                                 f"{self.layer_sizes}")
        dtype, glorot = backend.get_default_dtype(), initializers.get("glorot_uniform")
        previous = num_fields
        for k, size in enumerate(self.layer_sizes):
            fan_in = previous * num_fields
            self.add_parameter(f"weight_{k}", glorot((fan_in, size), fan_in, size, dtype))
            last = k == len(self.layer_sizes) - 1
            previous = size // 2 if self.split_half and not last else size
        self.output_width = sum(self.pooled_sizes())
        self.built = True

    def pooled_sizes(self) -> list[int]:
        last = len(self.layer_sizes) - 1
        return [size // 2 if self.split_half and k < last else size for k, size in enumerate(self.layer_sizes)]

    def forward(self, x0) -> Tensor:
        x0 = as_tensor(x0)
        if x0.ndim != 3 or x0.shape[1] != self.num_fields:
            raise ShapeError(f"{self._label()}: expected embeddings (batch, {self.num_fields}, dim), "
                             f"got {tuple(x0.shape)}")
        batch, fields, dim = x0.shape
        x, pooled, last = x0, [], len(self.layer_sizes) - 1
        for k, size in enumerate(self.layer_sizes):
            outer = F.reshape(x, (batch, -1, 1, dim)) * F.reshape(x0, (batch, 1, fields, dim))   # (B, H, F, d)
            x = F.einsum("bzd,zh->bhd", F.reshape(outer, (batch, -1, dim)), getattr(self, f"weight_{k}"))
            if self.split_half and k < last:
                half = size // 2
                pooled.append(F.sum(x[:, half:], axis=2))
                x = x[:, :half]
            else:
                pooled.append(F.sum(x, axis=2))
        return F.concat(pooled, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_width)

    def get_config(self) -> dict:
        return {"num_fields": self.num_fields, "layer_sizes": list(self.layer_sizes),
                "split_half": self.split_half, "name": self.name}


@register_layer
class XDeepFM(Module):
    """(field ids (B, F), dense (B, num_dense) or None) -> logits (B,): a linear part, a
    :class:`CIN` on the fields' embeddings followed by one linear unit, and a DNN (``mlp_dims``
    hidden widths, one linear output unit) on [embeddings ; dense] (module docstring)."""

    def __init__(self, field_dims, embed_dim: int = 8, cin_layer_sizes=(16, 16), split_half: bool = True,
                 mlp_dims=(32, 16), num_dense: int = 0, activation: str = "relu", name: str | None = None):
        super().__init__(name=name)
        self.field_dims = _check_fields(field_dims, embed_dim, num_dense, "XDeepFM")
        self.embed_dim, self.cin_layer_sizes, self.split_half = embed_dim, tuple(cin_layer_sizes), bool(split_half)
        self.mlp_dims, self.num_dense, self.activation = tuple(mlp_dims), num_dense, activation
        _add_linear(self, self.field_dims, num_dense, "XDeepFM")
        self.embedding = _FieldEmbedding(self.field_dims, embed_dim, "XDeepFM")
        self.cin = CIN(len(self.field_dims), self.cin_layer_sizes, split_half)
        self.cin_head = Dense(1, use_bias=False)
        self.cin_head.build((None, self.cin.output_width))
        self.deep = _mlp(len(self.field_dims) * embed_dim + num_dense, self.mlp_dims, activation, "XDeepFM",
                         out_units=1)
        self.built = True

    def forward(self, ids, dense=None) -> Tensor:
        e, x = _flat_input(self, ids, dense)
        linear = _linear_part(self, ids, dense, e.shape[0])
        return linear + F.reshape(self.cin_head(self.cin(e)), (-1,)) + F.reshape(self.deep(x), (-1,))

    def get_config(self) -> dict:
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim,
                "cin_layer_sizes": list(self.cin_layer_sizes), "split_half": self.split_half,
                "mlp_dims": list(self.mlp_dims), "num_dense": self.num_dense, "activation": self.activation,
                "name": self.name}
