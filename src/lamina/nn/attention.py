"""Attention layers (course notes, Attention models): each query position takes a context
c^<t> = sum_t' alpha^<t,t'> a^<t'>, a weighted sum over the attended sequence with weights
alpha^<t,t'> = softmax over t' of the scores e^<t,t'>
(:func:`lamina.functional.attention.scaled_dot_product_attention`).

* :class:`Attention`: Luong's dot-product attention with no weights of its own, e = q a^T
  (Keras's ``Attention``): ``Attention()([query, values])``.
* :class:`AdditiveAttention`: Bahdanau's attention, whose scores come from a small network,
  e = v^T tanh(W_q q + W_k a + b) (the notes' "e^<t,t'> learned by a neural network").

The Transformer's attention with learned projections, :class:`MultiHeadAttention`, is in
:mod:`lamina.nn.multi_head_attention`. Masks are boolean with True = attend (or float,
added to the scores) everywhere in lamina.

PyTorch's ``torch.nn.attention.flex_attention`` names (:func:`flex_attention`,
:func:`create_block_mask`, :class:`BlockMask`, :func:`and_masks`, :func:`or_masks`,
:func:`noop_mask`) can be imported from here as well (:mod:`lamina.functional.flex`).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.functional.flex import flex_attention
from lamina.functional.flex_masks import BlockMask, and_masks, create_block_mask, noop_mask, or_masks
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AdditiveAttention", "Attention", "first_shape", "mask_array"]
# where torch has them (torch.nn.attention.flex_attention)
__all__ += ["BlockMask", "and_masks", "create_block_mask", "flex_attention", "noop_mask", "or_masks"]


def first_shape(input_shape):
    """The query's shape from a call's shape or list of shapes."""
    if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return tuple(input_shape[0])
    if input_shape is None:
        return None
    return tuple(input_shape)


def mask_array(mask):
    if mask is None:
        return None
    return backend.xp.asarray(mask.data if isinstance(mask, Tensor) else mask)


def _query_value_key(layer: Module, inputs, same_features: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(query, value, key) from a call's [query, value] or [query, value, key], checked;
    ``same_features``: the query and the key must share their feature size (dot products)."""
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = inputs[0]
    if len(inputs) not in (2, 3):
        raise ShapeError(f"{layer._label()}: expected [query, value] or [query, value, key], got "
                         f"{len(inputs)} inputs")
    xs = [as_tensor(x) for x in inputs]
    query, value = xs[0], xs[1]
    key = xs[2] if len(xs) == 3 else value
    for what, x in (("query", query), ("value", value), ("key", key)):
        if x.ndim != 3:
            raise input_error(layer, x, f"a {what} of shape (batch, time, features)")
    if ((same_features and query.shape[-1] != key.shape[-1]) or key.shape[:2] != value.shape[:2]
            or query.shape[0] != key.shape[0]):
        shared = "the feature size and the batch" if same_features else "the batch"
        raise ShapeError(f"{layer._label()}: query {query.shape} and key {key.shape} must share {shared}, and "
                         f"key and value {value.shape} the batch and number of steps")
    return query, value, key


def _attention_output_shape(layer: Module, input_shape):
    """(N, T_q, d_v) for the shapes [query, value(, key)]."""
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) not in (2, 3) or not all(
            isinstance(s, (list, tuple)) and len(s) == 3 for s in input_shape):
        raise ShapeError(f"{layer._label()}: expected the shapes [query, value(, key)], each (batch, time, "
                         f"features), got {input_shape!r}")
    q, v = tuple(input_shape[0]), tuple(input_shape[1])
    return q[:2] + v[2:]


@register_layer
class Attention(Module):
    """Luong's dot-product attention, no projections: for queries (N, T_q, d) and values
    (N, T_v, d) (the notes' a^<t'>), e = q a^T, alpha = softmax over the values and
    c = alpha a; the output is (N, T_q, d). Called as ``Attention()([query, value])`` or
    ``Attention()([query, value, key])`` (keys scored, values summed; the key defaults to the
    value), with keywords ``mask`` (boolean, True = attend, or float; broadcastable to
    (N, T_q, T_v)), ``causal`` and ``return_weights``.

    ``use_scale=True`` learns a scalar multiplying the scores (starting at 1), as Keras's
    ``Attention(use_scale=True)``; the scores are never divided by sqrt(d).
    """

    def __init__(self, use_scale: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.use_scale = bool(use_scale)

    def build(self, input_shape) -> None:
        if self.use_scale:
            self.add_parameter("scale", backend.xp.ones((), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, *inputs, mask=None, causal: bool = False, return_weights: bool = False):
        query, value, key = _query_value_key(self, inputs)
        if self.use_scale:
            query = F.mul(query, self.scale)
        return scaled_dot_product_attention(query, key, value, mask=mask, causal=causal, scale=1.0,
                                            return_weights=return_weights)

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: scores T_q T_v d and context T_q T_v d_v."""
        (t_q, d), (t_v, d_v) = input_shapes[0], input_shapes[1]
        return t_q * t_v * (d + d_v)

    def compute_output_shape(self, input_shape):
        return _attention_output_shape(self, input_shape)

    def get_config(self) -> dict:
        return {"use_scale": self.use_scale, "name": self.name}

    def extra_repr(self) -> str:
        return "use_scale=True" if self.use_scale else ""



@register_layer
class AdditiveAttention(Module):
    """Bahdanau's additive attention (course notes, Attention models: the scores e^<t,t'>
    learned by a small network). For queries q^<t> (N, T_q, d_q) (a decoder's states) and
    the attended activations a^<t'> (N, T_v, d_v), keyed by k^<t'> (N, T_v, d_k) (default:
    the activations themselves):

        e^<t,t'> = v^T tanh(q^<t> W_q + k^<t'> W_k + b)          (one hidden layer of ``units``)
        alpha^<t,t'> = softmax over t' of e^<t,t'>,   c^<t> = sum_t' alpha^<t,t'> a^<t'>

    Parameters ``query_kernel`` W_q (d_q, units), ``key_kernel`` W_k (d_k, units), ``bias``
    b (units,) and ``score_vector`` v (units,). Called as ``AdditiveAttention(units)([query,
    value])`` or ``([query, value, key])``, with keywords ``mask`` (boolean, True = attend,
    broadcastable to (N, T_q, T_v)) and ``return_weights``; returns the contexts (N, T_q, d_v).
    The hidden layer is formed for every (t, t') pair, (N, T_q, T_v, units) values: meant for
    the sequence lengths of the course's translation models, not for long documents. Masked
    scores are set to -1e9, so a query with every key masked weighs them all alike (the
    dot-product layers give it zero weights instead).
    """

    def __init__(self, units: int, use_bias: bool = True, kernel_init="xavier_uniform", name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "AdditiveAttention: units")
        self.use_bias = bool(use_bias)
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    def build(self, input_shape) -> None:
        if (not isinstance(input_shape, (list, tuple)) or len(input_shape) not in (2, 3)
                or not all(isinstance(s, (list, tuple)) and len(s) == 3 for s in input_shape)):
            raise ShapeError(f"{self._label()}: expected the shapes [query, value(, key)], each (batch, time, "
                             f"features), got {input_shape!r}")
        d_q, d_k = input_shape[0][-1], input_shape[-1][-1]
        u, dtype = self.units, backend.get_default_dtype()
        kernel = initializers.get(self.kernel_init)
        self.add_parameter("query_kernel", kernel((d_q, u), d_q, u, dtype))
        self.add_parameter("key_kernel", kernel((d_k, u), d_k, u, dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((u,), u, u, dtype))
        self.add_parameter("score_vector", kernel((u, 1), u, 1, dtype).reshape(u))
        self.built = True

    def forward(self, *inputs, mask=None, return_weights: bool = False):
        query, value, key = _query_value_key(self, inputs, same_features=False)
        for what, x, weight in (("query", query, self.query_kernel), ("key", key, self.key_kernel)):
            if x.shape[-1] != weight.shape[0]:
                raise input_error(self, x, f"a {what} of shape (batch, time, {weight.shape[0]}), the features "
                                           "the layer was built for")
        n, t_q, t_v = query.shape[0], query.shape[1], key.shape[1]
        q = linear(query, self.query_kernel, self.bias if self.use_bias else None)     # (N, T_q, u)
        k = linear(key, self.key_kernel)                                               # (N, T_v, u)
        hidden = F.tanh(F.add(F.reshape(q, n, t_q, 1, self.units), F.reshape(k, n, 1, t_v, self.units)))
        scores = F.reshape(linear(hidden, F.reshape(self.score_vector, self.units, 1)), n, t_q, t_v)
        m = mask_array(mask)
        if m is not None:
            if m.dtype != bool:
                raise TypeError(f"{self._label()}: mask must be boolean (True = attend), got dtype {m.dtype}")
            try:
                keep = backend.xp.broadcast_to(m, (n, t_q, t_v))
            except ValueError:
                raise ShapeError(f"{self._label()}: a mask of shape {tuple(m.shape)} does not broadcast to the "
                                 f"scores ({n}, {t_q}, {t_v})") from None
            # a large negative score: weight 0 after the softmax, and no inf - inf anywhere
            scores = F.where(keep, scores, backend.xp.asarray(-1e9, dtype=scores.dtype))
        weights = F.softmax(scores, axis=-1)
        context = F.matmul(weights, value)
        return (context, Tensor._wrap(weights.data.copy())) if return_weights else context

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: the projections (T_q d_q + T_v d_k) units, the scores T_q T_v units
        and the contexts T_q T_v d_v."""
        (t_q, d_q), (t_v, d_v) = input_shapes[0], input_shapes[1]
        d_k = input_shapes[2][-1] if len(input_shapes) > 2 else d_v
        return (t_q * d_q + t_v * d_k) * self.units + t_q * t_v * (self.units + d_v)

    def compute_output_shape(self, input_shape):
        return _attention_output_shape(self, input_shape)

    def get_config(self) -> dict:
        return {"units": self.units, "use_bias": self.use_bias, "kernel_init": initializers.serialize(self.kernel_init),
                "name": self.name}

    def extra_repr(self) -> str:
        return f"units={self.units}" + ("" if self.use_bias else ", use_bias=False")
