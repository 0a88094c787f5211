"""The Temporal Fusion Transformer (Lim, Arik, Loeff & Pfister, 2021): an interpretable
multi-horizon forecaster of quantiles.

Building blocks, in the paper's notation:

* :class:`GatedResidualNetwork`:  GRN(a, c) = LayerNorm(skip(a) + GLU(eta_1)),
  eta_1 = W_1 eta_2 + b_1,  eta_2 = ELU(W_2 a + W_3 c + b_2),
  GLU(g) = sigma(W_4 g + b_4) * (W_5 g + b_5); skip(a) = a, or a linear projection when the
  input and output sizes differ.
* :class:`VariableSelectionNetwork`: v = softmax(GRN_v(Xi, c_s)) over the m variables of the
  flattened embeddings Xi = [xi_1, .., xi_m]; output sum_j v_j GRN_j(xi_j).
* :class:`InterpretableMultiHeadAttention`: heads with their own query and key projections
  and one shared value projection, averaged: H~ = (1 / m_H) sum_h A_h V W_V, output H~ W_H.
* :class:`StaticCovariateEncoder`: four GRNs giving the contexts c_s (variable selection),
  c_e (static enrichment), c_h and c_c (the LSTM's initial state).
* :class:`TemporalFusionTransformer`: the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import dropout_rate, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = [
    "GatedResidualNetwork", "InterpretableMultiHeadAttention", "StaticCovariateEncoder", "TemporalFusionTransformer",
    "VariableSelectionNetwork", "tft",
]


def _built(layer: Module, input_shape: tuple) -> Module:
    """``layer`` with its weights created now for ``input_shape`` (every size is known at construction)."""
    layer.build(input_shape)
    layer.built, layer.build_input_shape = True, input_shape
    return layer


def _check_features(who: str, x: Tensor, features: int, expected: str) -> None:
    if x.ndim < 2 or x.shape[-1] != features:
        raise ShapeError(f"{who}: got an input of shape {tuple(x.shape)}; expected {expected}")


def _along(context: Tensor, ndim: int) -> Tensor:
    """(batch, k) context -> (batch, 1, .., 1, k) of ``ndim`` axes, to broadcast over time."""
    return F.reshape(context, (context.shape[0],) + (1,) * (ndim - context.ndim) + tuple(context.shape[1:]))


class _GateAddNorm(Module):
    """LayerNorm(residual + GLU(dropout(x))): the paper's gated skip connection."""

    def __init__(self, input_size: int, output_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gate = _built(nn.Dense(output_size, activation="sigmoid", kernel_init="xavier_uniform"),
                           (None, input_size))
        self.value = _built(nn.Dense(output_size, kernel_init="xavier_uniform"), (None, input_size))
        self.norm = _built(nn.LayerNorm(), (None, output_size))
        self.built = True

    def forward(self, x, residual) -> Tensor:
        x = self.dropout(x)
        return self.norm(F.add(residual, F.mul(self.gate(x), self.value(x))))


@register_with_arguments
class GatedResidualNetwork(Module):
    """GRN(a, c) = LayerNorm(skip(a) + GLU(eta_1)) on the last axis of ``a``:

        eta_2 = ELU(W_2 a + W_3 c + b_2)          (hidden)   ``input_layer``, ``context_layer``
        eta_1 = W_1 eta_2 + b_1                   (hidden)   ``hidden_layer``
        GLU(g) = sigma(W_4 g + b_4) * (W_5 g + b_5)          ``glu.gate``, ``glu.value``

    with dropout on eta_1 in training. skip(a) = a when ``output_size`` equals ``input_size``,
    else a linear projection (``skip``). The context c (batch, context_size) is optional;
    with ``a`` of more than two axes it is broadcast over the middle ones (time)."""

    def __init__(self, input_size: int, hidden: int, output_size: int | None = None,
                 context_size: int | None = None, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.input_size = positive_int(input_size, "GatedResidualNetwork: input_size")
        self.hidden = positive_int(hidden, "GatedResidualNetwork: hidden")
        self.output_size = self.input_size if output_size is None else \
            positive_int(output_size, "GatedResidualNetwork: output_size")
        self.context_size = None if context_size is None else \
            positive_int(context_size, "GatedResidualNetwork: context_size")
        rate = dropout_rate(dropout, "GatedResidualNetwork")
        self.input_layer = _built(nn.Dense(self.hidden, kernel_init="xavier_uniform"), (None, self.input_size))
        if self.context_size is not None:
            self.context_layer = _built(nn.Dense(self.hidden, use_bias=False, kernel_init="xavier_uniform"),
                                        (None, self.context_size))
        self.hidden_layer = _built(nn.Dense(self.hidden, kernel_init="xavier_uniform"), (None, self.hidden))
        if self.output_size != self.input_size:
            self.skip = _built(nn.Dense(self.output_size, kernel_init="xavier_uniform"), (None, self.input_size))
        self.glu = _GateAddNorm(self.hidden, self.output_size, rate)
        self.built = True

    def forward(self, a, context=None) -> Tensor:
        a = as_tensor(a)
        _check_features(self._label(), a, self.input_size, f"(batch, ..., {self.input_size})")
        z = self.input_layer(a)
        if context is not None:
            if self.context_size is None:
                raise ValueError(f"{self._label()}: got a context, but the network was made without one "
                                 "(give context_size)")
            context = as_tensor(context)
            if context.ndim != 2 or context.shape[0] != a.shape[0] or context.shape[1] != self.context_size:
                raise ShapeError(f"{self._label()}: got a context of shape {tuple(context.shape)} for an input of "
                                 f"shape {tuple(a.shape)}; expected ({a.shape[0]}, {self.context_size})")
            z = F.add(z, _along(self.context_layer(context), a.ndim))
        eta_1 = self.hidden_layer(F.elu(z))
        residual = self.skip(a) if self.output_size != self.input_size else a
        return self.glu(eta_1, residual)


@register_with_arguments
class VariableSelectionNetwork(Module):
    """Soft selection of ``num_inputs`` variables, each embedded in ``input_size`` features:
    xi (..., m, d) -> (sum_j v_j GRN_j(xi_j) (..., d), v (..., m)), with

        v = softmax(GRN_v(flatten(xi), c_s))     ``weights_grn``: m d -> m, context optional
        GRN_j: d -> d                            ``variable_grns[j]``

    The selection weights v sum to 1 over the variables and tell how much each one is used."""

    def __init__(self, num_inputs: int, input_size: int, hidden: int, context_size: int | None = None,
                 dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.num_inputs = positive_int(num_inputs, "VariableSelectionNetwork: num_inputs")
        self.input_size = positive_int(input_size, "VariableSelectionNetwork: input_size")
        self.hidden = positive_int(hidden, "VariableSelectionNetwork: hidden")
        self.context_size = context_size
        self.weights_grn = GatedResidualNetwork(self.num_inputs * self.input_size, self.hidden, self.num_inputs,
                                                context_size, dropout)
        self.variable_grns = nn.ModuleList([GatedResidualNetwork(self.input_size, self.hidden, dropout=dropout)
                                            for _ in range(self.num_inputs)])
        self.built = True

    def forward(self, xi, context=None) -> tuple[Tensor, Tensor]:
        xi = as_tensor(xi)
        m, d = self.num_inputs, self.input_size
        if xi.ndim < 3 or tuple(xi.shape[-2:]) != (m, d):
            raise ShapeError(f"{self._label()}: got embeddings of shape {tuple(xi.shape)}; expected "
                             f"(batch, ..., {m}, {d}): {m} variables of {d} features each")
        flat = F.reshape(xi, tuple(xi.shape[:-2]) + (m * d,))
        weights = F.softmax(self.weights_grn(flat, context), axis=-1)
        processed = F.stack([grn(xi[..., j, :]) for j, grn in enumerate(self.variable_grns)], axis=-2)
        selected = F.sum(F.mul(F.expand_dims(weights, -1), processed), axis=-2)
        return selected, weights


@register_with_arguments
class InterpretableMultiHeadAttention(Module):
    """Multi-head attention whose heads share the value projection, averaged over the heads:

        A_h = softmax(Q W_Q^h (K W_K^h)^T / sqrt(d_attn))   (masked places -> weight 0)
        H~ = (1 / m_H) sum_h A_h V W_V,    output = H~ W_H,    d_attn = d_model / num_heads

    so that the mean attention (1 / m_H) sum_h A_h fully describes how the values are mixed.
    ``forward(query, key, value, mask=None)`` with (batch, T_q, d_model) queries and
    (batch, T_k, d_model) keys and values returns (output (batch, T_q, d_model), the per-head
    weights (batch, num_heads, T_q, T_k)). ``mask`` (broadcast to (batch, num_heads, T_q, T_k))
    is True where a query may attend; each query must be allowed at least one key. Sub-layers
    ``query``, ``key`` (d_model -> d_model, split into heads), ``value`` (d_model -> d_attn),
    ``output`` (d_attn -> d_model); dropout on the weights in training."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "InterpretableMultiHeadAttention: d_model")
        self.num_heads = positive_int(num_heads, "InterpretableMultiHeadAttention: num_heads")
        if self.d_model % self.num_heads:
            raise ValueError(f"InterpretableMultiHeadAttention: d_model {d_model} is not divisible by num_heads "
                             f"{num_heads}")
        self.d_attn = self.d_model // self.num_heads
        self.dropout = nn.Dropout(dropout_rate(dropout, "InterpretableMultiHeadAttention"))
        for part, size in (("query", self.d_model), ("key", self.d_model), ("value", self.d_attn)):
            setattr(self, part, _built(nn.Dense(size, kernel_init="xavier_uniform"), (None, self.d_model)))
        self.output = _built(nn.Dense(self.d_model, kernel_init="xavier_uniform"), (None, self.d_attn))
        self.built = True

    def _heads(self, x: Tensor) -> Tensor:
        n, steps, _ = x.shape
        return F.transpose(F.reshape(x, (n, steps, self.num_heads, self.d_attn)), (0, 2, 1, 3))

    def forward(self, query, key, value, mask=None) -> tuple[Tensor, Tensor]:
        query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
        for what, x in (("query", query), ("key", key), ("value", value)):
            if x.ndim != 3 or x.shape[-1] != self.d_model:
                raise ShapeError(f"{self._label()}: got a {what} of shape {tuple(x.shape)}; expected "
                                 f"(batch, steps, {self.d_model})")
        if key.shape[:2] != value.shape[:2]:
            raise ShapeError(f"{self._label()}: keys {tuple(key.shape)} and values {tuple(value.shape)} must have "
                             "the same batch and steps")
        q, k = self._heads(self.query(query)), self._heads(self.key(key))
        scores = F.mul(F.matmul(q, F.transpose(k, (0, 1, 3, 2))), 1.0 / math.sqrt(self.d_attn))
        if mask is not None:
            allowed = backend.xp.asarray(mask.data if isinstance(mask, Tensor) else mask).astype(bool)
            scores = F.masked_fill(scores, ~allowed, -1e9)
        weights = self.dropout(F.softmax(scores, axis=-1))
        mixed = F.matmul(F.mean(weights, axis=1), self.value(value))
        return self.output(mixed), weights


@register_with_arguments
class StaticCovariateEncoder(Module):
    """The four static contexts of a static embedding zeta (batch, hidden), one GRN each:
    ``forward(zeta)`` -> (c_s, c_e, c_h, c_c): variable selection, static enrichment, and the
    LSTM encoder's initial hidden and cell states."""

    context_names = ("selection", "enrichment", "state_h", "state_c")

    def __init__(self, hidden: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "StaticCovariateEncoder: hidden")
        for part in self.context_names:
            setattr(self, part, GatedResidualNetwork(self.hidden, self.hidden, dropout=dropout))
        self.built = True

    def forward(self, zeta) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        zeta = as_tensor(zeta)
        if zeta.ndim != 2 or zeta.shape[1] != self.hidden:
            raise ShapeError(f"{self._label()}: got a static embedding of shape {tuple(zeta.shape)}; expected "
                             f"(batch, {self.hidden})")
        return tuple(self._modules[part](zeta) for part in self.context_names)


def _check_quantiles(quantiles) -> tuple[float, ...]:
    levels = tuple(quantiles)
    if not levels or any(isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1 for q in levels):
        raise ValueError(f"TemporalFusionTransformer: quantiles must be numbers in (0, 1), got {quantiles!r}")
    return tuple(float(q) for q in levels)


@register_with_arguments
class TemporalFusionTransformer(Module):
    """The Temporal Fusion Transformer on continuous inputs:
    ``forward(static, past, future)`` -> quantile forecasts (batch, horizon, n_quantiles).

    ``static`` (batch, num_static) (None when ``num_static`` is 0), ``past`` (batch, T,
    num_past_inputs) the observed inputs (the target's history among them), ``future``
    (batch, horizon, num_future_inputs) the inputs known in advance (calendar, holidays). Each
    scalar input j becomes xi_j = x_j w_j + b_j (hidden,) (parameters ``*_embedding_weight``
    and ``*_bias``). Then

        static VSN -> zeta -> (c_s, c_e, c_h, c_c)           :class:`StaticCovariateEncoder`
        past / future VSNs with context c_s -> x~ (batch, T + horizon, hidden)
        LSTM encoder over the past from (c_h, c_c), decoder over the future from its state
        phi = LayerNorm(x~ + GLU(lstm outputs))             gated skip
        theta = GRN(phi, c_e)                                static enrichment
        delta = LayerNorm(theta + GLU(IMHA(theta_dec, theta, theta)))   causal attention
        psi = GRN(delta);  out = LayerNorm(phi_dec + GLU(psi))
        forecast = Dense(out)                                one output per quantile level

    where _dec are the horizon positions; each decoder position attends to the past and to the
    future positions up to itself, so a forecast never depends on known inputs of later steps.
    :meth:`interpret` also gives the variable-selection and attention weights. Without static
    inputs the contexts are left out and the LSTM starts from zeros."""

    def __init__(self, num_static: int, num_past_inputs: int, num_future_inputs: int, hidden: int = 16,
                 num_heads: int = 4, horizon: int = 1, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                 dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        if isinstance(num_static, bool) or not isinstance(num_static, int) or num_static < 0:
            raise ValueError(f"TemporalFusionTransformer: num_static must be an int >= 0, got {num_static!r}")
        self.num_static = num_static
        self.num_past_inputs = positive_int(num_past_inputs, "TemporalFusionTransformer: num_past_inputs")
        self.num_future_inputs = positive_int(num_future_inputs, "TemporalFusionTransformer: num_future_inputs")
        self.hidden = positive_int(hidden, "TemporalFusionTransformer: hidden")
        self.num_heads = positive_int(num_heads, "TemporalFusionTransformer: num_heads")
        self.horizon = positive_int(horizon, "TemporalFusionTransformer: horizon")
        self.quantiles = _check_quantiles(quantiles)
        rate = dropout_rate(dropout, "TemporalFusionTransformer")
        d = self.hidden
        context = d if num_static else None
        for kind, count in (("static", num_static), ("past", num_past_inputs), ("future", num_future_inputs)):
            if count:
                bound = math.sqrt(3.0)          # unit variance of each embedding feature for unit inputs
                weight = backend.rng().uniform(-bound, bound, (count, d)).astype(backend.get_default_dtype())
                self.add_parameter(f"{kind}_embedding_weight", backend.xp.asarray(weight))
                self.add_parameter(f"{kind}_embedding_bias", backend.xp.zeros((count, d), backend.get_default_dtype()))
        if num_static:
            self.static_selection = VariableSelectionNetwork(num_static, d, d, dropout=rate)
            self.static_encoder = StaticCovariateEncoder(d, rate)
        self.past_selection = VariableSelectionNetwork(num_past_inputs, d, d, context, rate)
        self.future_selection = VariableSelectionNetwork(num_future_inputs, d, d, context, rate)
        self.encoder = _built(nn.LSTM(d, return_sequences=True, return_state=True), (None, None, d))
        self.decoder = _built(nn.LSTM(d, return_sequences=True, return_state=True), (None, None, d))
        self.lstm_gate = _GateAddNorm(d, d, rate)
        self.enrichment = GatedResidualNetwork(d, d, context_size=context, dropout=rate)
        self.attention = InterpretableMultiHeadAttention(d, self.num_heads, rate)
        self.attention_gate = _GateAddNorm(d, d, rate)
        self.position_wise = GatedResidualNetwork(d, d, dropout=rate)
        self.output_gate = _GateAddNorm(d, d, 0.0)
        self.head = _built(nn.Dense(len(self.quantiles), kernel_init="xavier_uniform"), (None, d))
        self.built = True

    def _embed(self, kind: str, x: Tensor) -> Tensor:
        """(..., m) scalars -> (..., m, hidden): xi_j = x_j w_j + b_j."""
        weight, bias = self._parameters[f"{kind}_embedding_weight"], self._parameters[f"{kind}_embedding_bias"]
        return F.add(F.mul(F.expand_dims(x, -1), weight), bias)

    def _check_inputs(self, static, past, future):
        who = self._label()
        if self.num_static:
            if static is None:
                raise ValueError(f"{who}: the model was made for {self.num_static} static inputs; got static=None")
            static = as_tensor(static)
            if static.ndim != 2 or static.shape[1] != self.num_static:
                raise ShapeError(f"{who}: got static inputs of shape {tuple(static.shape)}; expected "
                                 f"(batch, {self.num_static})")
        elif static is not None:
            raise ValueError(f"{who}: the model was made without static inputs (num_static=0); pass static=None")
        past, future = as_tensor(past), as_tensor(future)
        if past.ndim != 3 or past.shape[2] != self.num_past_inputs or past.shape[1] < 1:
            raise ShapeError(f"{who}: got past inputs of shape {tuple(past.shape)}; expected "
                             f"(batch, steps, {self.num_past_inputs})")
        if future.ndim != 3 or tuple(future.shape[1:]) != (self.horizon, self.num_future_inputs) or \
                future.shape[0] != past.shape[0]:
            raise ShapeError(f"{who}: got future inputs of shape {tuple(future.shape)}; expected "
                             f"({past.shape[0]}, {self.horizon}, {self.num_future_inputs})")
        if static is not None and static.shape[0] != past.shape[0]:
            raise ShapeError(f"{who}: static inputs for {static.shape[0]} series, past inputs for {past.shape[0]}")
        return static, past, future

    def interpret(self, static, past, future) -> dict:
        """The forecast with the model's interpretation: a dict of ``forecast`` (batch, horizon,
        n_quantiles), ``static_weights`` (batch, num_static) (None without static inputs),
        ``past_weights`` (batch, T, num_past_inputs), ``future_weights`` (batch, horizon,
        num_future_inputs) (variable selection), and ``attention`` (batch, num_heads, horizon,
        T + horizon) (each decoder step's weights over every position)."""
        static, past, future = self._check_inputs(static, past, future)
        steps = past.shape[1]
        static_weights = c_s = c_e = state = None
        if self.num_static:
            zeta, static_weights = self.static_selection(self._embed("static", static))
            c_s, c_e, c_h, c_c = self.static_encoder(zeta)
            state = (c_h, c_c)
        past_x, past_weights = self.past_selection(self._embed("past", past), c_s)
        future_x, future_weights = self.future_selection(self._embed("future", future), c_s)
        encoded, h, c = self.encoder(past_x, initial_state=state)
        decoded, _, _ = self.decoder(future_x, initial_state=(h, c))
        phi = self.lstm_gate(F.concat([encoded, decoded], axis=1), F.concat([past_x, future_x], axis=1))
        theta = self.enrichment(phi, c_e)
        theta_dec = theta[:, steps:]
        attended, attention = self.attention(theta_dec, theta, theta, self.causal_mask(steps))
        delta = self.attention_gate(attended, theta_dec)
        out = self.output_gate(self.position_wise(delta), phi[:, steps:])
        return {"forecast": self.head(out), "static_weights": static_weights, "past_weights": past_weights,
                "future_weights": future_weights, "attention": attention}

    def causal_mask(self, steps: int) -> np.ndarray:
        """(horizon, steps + horizon): decoder step i may attend to the positions up to steps + i."""
        return np.arange(steps + self.horizon)[None, :] <= steps + np.arange(self.horizon)[:, None]

    def forward(self, static, past, future) -> Tensor:
        return self.interpret(static, past, future)["forecast"]

    def quantile_loss(self, forecast, target) -> Tensor:
        """The mean pinball loss of ``forecast`` (batch, horizon, n_quantiles) for the targets
        (batch, horizon) at the model's quantile levels."""
        return F.pinball_loss(forecast, target, quantiles=self.quantiles)


def tft(num_static: int = 0, num_past_inputs: int = 1, num_future_inputs: int = 1, horizon: int = 24,
        **options) -> TemporalFusionTransformer:
    """A :class:`TemporalFusionTransformer` (defaults: no static inputs, the target's history as the one
    past input, one known-future input, hidden 16, 4 heads, the quantiles 0.1, 0.5 and 0.9). Unlike
    the window forecasters it reads ``(static, past, future)`` and returns quantile forecasts."""
    return TemporalFusionTransformer(num_static, num_past_inputs, num_future_inputs, horizon=horizon, **options)
