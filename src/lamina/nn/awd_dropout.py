"""The regularisers of AWD-LSTM (Merity, Keskar and Socher, "Regularizing and Optimizing LSTM
Language Models", 2018), all inverted (kept values scaled by 1 / keep_prob = 1 / (1 - rate) in
training, the identity in evaluation; masks from :func:`lamina.backend.rng`):

* :class:`LockedDropout`, variational dropout: one mask m (N, 1, D) per sequence, shared by
  every step, d^<t> = x^<t> * m / keep_prob;
* :class:`WeightDrop`, DropConnect on a recurrent layer's hidden-to-hidden weights: one mask
  M per forward pass, the layer run with W_aa * M / keep_prob at every step (the raw W_aa is
  what is learned);
* :func:`embedding_dropout`: whole words dropped, rows of the table E (W, A) zeroed,
  E' = E * m / keep_prob with m (W, 1), before the lookup;
* :func:`activation_regularization` (AR), alpha * mean(h^2), and
  :func:`temporal_activation_regularization` (TAR), beta * mean((h^<t> - h^<t-1>)^2).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.dropout import _check_rate, _RateDropout, _WeightDropout, dropout_mask
from lamina.nn.embedding import Embedding, EmbeddingFunction, check_ids
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import as_tensor
from lamina.nn.recurrent import _Recurrent

__all__ = ["LockedDropout", "WeightDrop", "activation_regularization", "embedding_dropout",
           "temporal_activation_regularization"]


@register_layer
class LockedDropout(_RateDropout):
    """Variational (locked) dropout on sequences (N, T, D): in training one mask per sequence
    and feature, drawn once and applied at every step, d^<t> = x^<t> * m / keep_prob with
    m (N, 1, D) ~ Bernoulli(1 - ``rate``); the identity in evaluation."""

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3:
            raise input_error(self, x, "(batch, time, features): one mask per sequence is shared over the time axis")
        if not self._dropping():
            return x
        n, _, d = x.shape
        dtype = x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()
        return F.mul(x, Tensor._wrap(dropout_mask((n, 1, d), self.rate, dtype)))


@register_layer
class WeightDrop(_WeightDropout):
    """DropConnect on the hidden-to-hidden weights of a recurrent layer (an LSTM, GRU or
    SimpleRNN): in training each forward pass draws one mask M of ``recurrent_kernel``'s shape
    (H, G H) and runs the wrapped layer with W_aa * M / keep_prob at every step, so the
    gradient reaches the raw W_aa through the mask; the input weights and biases are not
    dropped. In evaluation it is the wrapped layer unchanged. Calls take the wrapped layer's
    arguments (``initial_state``, ``lengths``, ``mask``); its parameters appear under
    ``layer.`` (e.g. ``weight_drop.layer.recurrent_kernel``)."""

    _expected = "a recurrent layer (LSTM, GRU or SimpleRNN)"

    def _accepts(self, layer) -> bool:
        return isinstance(layer, _Recurrent)

    def build(self, input_shape) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
            self.layer.build_input_shape = tuple(input_shape)
        self.built = True

    def dropped_recurrent_kernel(self) -> Tensor:
        """W_aa * M / keep_prob with a fresh mask M (on the graph of the raw W_aa)."""
        return self._dropped(self.layer.recurrent_kernel)

    def forward(self, x, **kwargs):
        if not self.training or self.rate == 0.0:
            return self.layer(x, **kwargs)
        layer = self.layer
        dropped = self.dropped_recurrent_kernel()
        kernel, _, bias, recurrent_bias = layer._weights()
        layer.__dict__["_weights"] = lambda: (kernel, dropped, bias, recurrent_bias)
        try:
            return layer(x, **kwargs)
        finally:
            del layer.__dict__["_weights"]

    @property
    def streamable(self) -> bool:
        return self.layer.streamable

    def reset_states(self) -> None:
        self.layer.reset_states()


def embedding_dropout(embedding: Embedding, ids, rate: float, training: bool = True) -> Tensor:
    """The lookup of ``ids`` in ``embedding``'s table with whole words dropped: in training
    E' = E * m / keep_prob, m (W, 1) ~ Bernoulli(1 - ``rate``), so a dropped word is a zero
    vector at every place it occurs in the batch; the plain lookup otherwise."""
    if not isinstance(embedding, Embedding):
        raise TypeError(f"embedding_dropout: expected an Embedding layer, got {type(embedding).__name__}")
    rate = _check_rate(rate, "embedding_dropout")
    if not training or rate == 0.0:
        return embedding(ids)
    if not embedding.built:
        embedding.build(tuple(getattr(ids, "shape", ())))
        embedding.built = True
    data = check_ids(ids, embedding.input_dim, "embedding_dropout")
    weight = embedding.weight
    table = F.mul(weight, Tensor._wrap(dropout_mask((weight.shape[0], 1), rate, weight.dtype)))
    params = {} if embedding.padding_idx is None else {"padding_idx": embedding.padding_idx}
    return EmbeddingFunction.apply(Tensor._wrap(data), table, **params)


def activation_regularization(h, alpha: float) -> Tensor:
    """AR: alpha * mean(h^2) over every element of h (AWD-LSTM: the last layer's outputs after
    dropout), a pull of the activations towards zero."""
    h = as_tensor(h)
    return F.mul(F.mean(F.mul(h, h)), float(alpha))


def temporal_activation_regularization(h, beta: float) -> Tensor:
    """TAR: beta * mean((h^<t> - h^<t-1>)^2) over batch, steps t = 2..T and features, for h
    (N, T, H) (AWD-LSTM: the last layer's outputs before dropout), a penalty on fast changes."""
    h = as_tensor(h)
    if h.ndim != 3 or h.shape[1] < 2:
        raise ValueError(f"temporal_activation_regularization: expected outputs (batch, time, features) with at "
                         f"least two steps, got shape {tuple(h.shape)}")
    step = F.sub(h[:, 1:], h[:, :-1])
    return F.mul(F.mean(F.mul(step, step)), float(beta))
