"""Transformer building blocks (Vaswani et al., "Attention is all you need", 2017).

* :class:`TransformerEncoderLayer`: self-attention and a position-wise feed-forward network,
  each wrapped in a residual connection and a layer normalization, as
  ``torch.nn.TransformerEncoderLayer(batch_first=True)``.
* :class:`PositionalEncoding`: the fixed sinusoidal position signal added to the inputs.
* :class:`PositionEmbedding`: a learned table of position vectors added to the inputs.

Self-attention treats its inputs as a set: nothing in it tells position 2 from position 7.
The position layers add a vector that depends on the position to each step, so that the
attention scores can depend on where the tokens are. A stack of encoder layers is a
``Sequential``; since ``Sequential`` passes one argument, a layer built with
``causal=True`` applies the causal mask on every call (a decoder-only language model, see
:func:`lamina.models.sequence.transformer_language_model`).

Incremental decoding: a causal encoder layer and the position layers have a key/value
cache mode (``start_caching`` / ``stop_caching``, driven by
:func:`lamina.text.caching_keys_values`). While it is on, consecutive calls continue one
sequence: the attention keeps the keys and values of the steps already read, and the
position layers add the encodings of the positions that follow them. Feeding a sequence
in pieces then gives the outputs of one call on the whole of it, so that sampling reads
each new token once. The layers are ``streamable`` exactly while they cache, and
``reorder_cache(rows)`` keeps and reorders the sequences (rows) of the batch cached, as
beam search does with the parents of its surviving hypotheses.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.activation import activation_config
from lamina.nn.cache_rows import cache_rows
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout, DropoutFunction
from lamina.nn.layer import dropout_rate, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.sample_norm import LayerNorm

__all__ = ["PositionEmbedding", "PositionalEncoding", "TransformerEncoderLayer", "sinusoidal_encoding"]


def _sequence_shape(layer: Module, input_shape, features: int | None) -> tuple:
    """``input_shape`` as a tuple, checked to be (batch, time, features)."""
    shape = None if input_shape is None else tuple(input_shape)
    want = "features" if features is None else features
    if shape is None or len(shape) != 3 or (features is not None and shape[-1] not in (None, features)):
        raise ShapeError(f"{layer._label()}: got an input shape {shape}; expected (batch, time, {want})")
    return shape


def _check_sequence(layer: Module, x: Tensor, features: int | None) -> None:
    if x.ndim != 3 or (features is not None and x.shape[-1] != features):
        raise input_error(layer, x, f"(batch, time, {'features' if features is None else features})")


def set_sizes(layer: Module, d_model: int, num_heads: int, dim_feedforward: int, dropout: float,
              norm_first: bool, layer_norm_eps: float, bias: bool = True) -> None:
    """Check and store a Transformer layer's sizes and options (named errors)."""
    who = type(layer).__name__
    layer.d_model = positive_int(d_model, f"{who}: d_model")
    layer.num_heads = positive_int(num_heads, f"{who}: num_heads")
    layer.dim_feedforward = positive_int(dim_feedforward, f"{who}: dim_feedforward")
    layer.dropout_rate = dropout_rate(dropout, who)
    layer.norm_first = bool(norm_first)
    layer.layer_norm_eps = float(layer_norm_eps)
    layer.use_bias = bool(bias)
    if d_model % num_heads:
        raise ValueError(f"{who}: d_model {d_model} is not divisible by num_heads {num_heads}")


def layer_config(layer: Module) -> dict:
    """The config of a Transformer layer's sizes and options (as :func:`set_sizes` stored
    them), shared by the encoder and decoder layers' ``get_config``."""
    return {
        "d_model": layer.d_model,
        "num_heads": layer.num_heads,
        "dim_feedforward": layer.dim_feedforward,
        "dropout": layer.dropout_rate,
        "activation": activation_config(layer.linear1),
        "norm_first": layer.norm_first,
        "layer_norm_eps": layer.layer_norm_eps,
        **({} if layer.use_bias else {"bias": False}),      # older configs stay as they were
    }


def layer_repr(layer: Module) -> str:
    """The sizes of a Transformer layer, and norm_first and bias=False when set, for ``extra_repr``."""
    text = f"d_model={layer.d_model}, num_heads={layer.num_heads}, dim_feedforward={layer.dim_feedforward}"
    return text + (", norm_first=True" if layer.norm_first else "") + ("" if layer.use_bias else ", bias=False")


@register_layer
class TransformerEncoderLayer(Module):
    """One encoder layer: multi-head self-attention, then a feed-forward network of two
    Dense layers applied at every position, each with a residual connection.

    Post-norm (``norm_first=False``, the original Transformer and PyTorch's default)::

        x = norm1(x + dropout1(self_attention(x)))
        x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))

    Pre-norm (``norm_first=True``, which trains more stably in deep stacks)::

        x = x + dropout1(self_attention(norm1(x)))
        x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    Inputs (N, T, d_model) -> outputs (N, T, d_model). ``dropout`` acts in training mode on
    the attention weights, inside the feed-forward network and on both branches before the
    residual additions. ``activation``: 'relu' or 'gelu' (the exact one, as PyTorch's), or
    any activation Dense accepts.

    Called as ``layer(x, mask=None, key_mask=None, causal=None)`` with lamina's masks
    (True = attend; see :class:`MultiHeadAttention`): ``mask`` (T, T), (N, T, T) or
    (N, h, T, T), ``key_mask`` (N, T) False on padding. ``causal=None`` takes the
    constructor's ``causal`` (default False), so that a layer built with ``causal=True``
    masks the future on every call, also inside a ``Sequential``.

    Sub-layers: ``self_attention``, ``dropout1``, ``norm1``, ``linear1``, ``dropout``,
    ``linear2``, ``dropout2``, ``norm2``. PyTorch's weights map one to one:
    ``self_attention.in_weight`` = ``self_attn.in_proj_weight.T``,
    ``self_attention.out_weight`` = ``self_attn.out_proj.weight.T``, ``linear1.weight`` =
    ``linear1.weight.T``, ``linear2.weight`` = ``linear2.weight.T``, the biases and norms
    as they are. The Dense layers start Xavier-uniform (as ``torch.nn.Transformer`` resets
    its weights) with zero biases (PyTorch's ``nn.Linear`` draws its bias, and a lone
    layer's weights, from U(-1/sqrt(n_in), 1/sqrt(n_in))). ``bias=False`` (PyTorch's) leaves
    out every bias: the attention's ``in_bias`` and ``out_bias``, the Dense layers' and the
    norms' beta (y = gamma (x - mu) / sqrt(var + eps)).

    ``rotary=True`` gives the self-attention rotary positions, ``alibi=True`` ALiBi's linear
    distance biases (either way a stack of such layers needs no position layer),
    ``num_kv_heads`` grouped-query attention and ``window`` sliding-window attention (see
    :class:`MultiHeadAttention`).

    A causal layer can cache keys and values (:meth:`start_caching`): consecutive calls in
    evaluation mode under ``no_grad`` then continue one sequence, each new step attending
    over the cached steps (see :class:`MultiHeadAttention`); the other sub-layers act on
    each step alone and need nothing cached.
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, causal: bool = False,
                 rotary: bool = False, alibi: bool = False, num_kv_heads: int | None = None,
                 window: int | None = None, bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        set_sizes(self, d_model, num_heads, dim_feedforward, dropout, norm_first, layer_norm_eps, bias)
        self.causal = bool(causal)
        self.rotary, self.alibi = bool(rotary), bool(alibi)
        self.num_kv_heads, self.window = num_kv_heads, window
        rate, bias = self.dropout_rate, self.use_bias
        self.self_attention = MultiHeadAttention(d_model, num_heads, use_bias=bias, dropout=rate, rotary=self.rotary,
                                                 alibi=self.alibi, num_kv_heads=num_kv_heads, window=window)
        self.dropout1 = Dropout(rate)
        self.norm1 = LayerNorm(-1, eps=layer_norm_eps, bias=bias)
        self.linear1 = Dense(dim_feedforward, activation=activation, use_bias=bias, kernel_init="xavier_uniform")
        self.dropout = Dropout(rate)
        self.linear2 = Dense(d_model, use_bias=bias, kernel_init="xavier_uniform")
        self.dropout2 = Dropout(rate)
        self.norm2 = LayerNorm(-1, eps=layer_norm_eps, bias=bias)

    def build(self, input_shape) -> None:
        shape = _sequence_shape(self, input_shape, self.d_model)
        shape = shape[:-1] + (self.d_model,)
        hidden = shape[:-1] + (self.dim_feedforward,)
        for layer, layer_shape in ((self.self_attention, shape), (self.norm1, shape), (self.linear1, shape),
                                   (self.linear2, hidden), (self.norm2, shape)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        self.built = True

    # -- key/value cache ---------------------------------------------------------
    @property
    def cacheable(self) -> bool:
        """Whether :meth:`start_caching` can succeed: the layer is causal."""
        return self.causal

    @property
    def caching(self) -> bool:
        return self.self_attention.caching

    @property
    def streamable(self) -> bool:
        """True while caching: a sequence fed in pieces gives the outputs of one call."""
        return self.caching

    def start_caching(self) -> None:
        """Let the next calls continue one sequence, the self-attention caching the keys and
        values of the steps read (refused for a layer built with causal=False)."""
        if not self.causal:
            raise ValueError(f"{self._label()}: cannot cache keys and values: the layer is not causal (built "
                             "with causal=False), so each step attends to later steps, whose arrival changes "
                             "the outputs of the earlier ones")
        self.self_attention.start_caching()

    def stop_caching(self) -> None:
        """Drop the cache; calls are independent again."""
        self.self_attention.stop_caching()

    def reorder_cache(self, rows) -> None:
        """Keep the cached rows ``rows``, in that order (see
        :meth:`MultiHeadAttention.reorder_cache`). Refused when not caching."""
        if not self.caching:
            raise ValueError(f"{self._label()}: reorder_cache needs a key/value cache, and the layer is not caching; "
                             "call start_caching (or use lamina.text.caching_keys_values) first")
        self.self_attention.reorder_cache(rows)

    # The sub-modules are read from the registry: each Module.__getattr__ lookup first fails
    # the ordinary one, at the cost of an exception, a few times per layer call.
    def _attend(self, x, mask, key_mask, causal: bool) -> Tensor:
        layers = self._modules
        return layers["dropout1"](layers["self_attention"](x, mask=mask, key_mask=key_mask, causal=causal))

    def _feed_forward(self, x) -> Tensor:
        layers = self._modules
        return layers["dropout2"](layers["linear2"](layers["dropout"](layers["linear1"](x))))

    def forward(self, x, mask=None, key_mask=None, causal: bool | None = None) -> Tensor:
        x = as_tensor(x)
        _check_sequence(self, x, self.d_model)
        causal = self.causal if causal is None else bool(causal)
        if not causal and self.caching:
            raise ValueError(f"{self._label()}: while caching keys and values a call must be causal (a mask over "
                             f"the cached and new steps may replace the causal one), got causal={causal}")
        norm1, norm2 = self._modules["norm1"], self._modules["norm2"]
        if self.norm_first:
            x = F.add(x, self._attend(norm1(x), mask, key_mask, causal))
            return F.add(x, self._feed_forward(norm2(x)))
        x = norm1(F.add(x, self._attend(x, mask, key_mask, causal)))
        return norm2(F.add(x, self._feed_forward(x)))

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: the self-attention's count (4 T E^2 + 2 T^2 E) and the feed-forward
        network's 2 T E d_ff (normalizations, dropouts and additions count 0)."""
        t = output_shapes[0][0]
        e = self.d_model
        return self.self_attention.macs([(t, e)], [(t, e)]) + 2 * t * e * self.dim_feedforward

    def compute_output_shape(self, input_shape):
        shape = _sequence_shape(self, input_shape, self.d_model)
        return shape[:-1] + (self.d_model,)

    def get_config(self) -> dict:
        return {**layer_config(self), "causal": self.causal, **self._attention_options(), "name": self.name}

    def _attention_options(self) -> dict:
        """The attention options that differ from the defaults (older configs stay as they were)."""
        options = {"rotary": self.rotary, "alibi": self.alibi, "num_kv_heads": self.num_kv_heads, "window": self.window}
        return {key: value for key, value in options.items() if value not in (False, None)}

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value}" for key, value in self._attention_options().items())
        return layer_repr(self) + (", causal=True" if self.causal else "") + options


def sinusoidal_encoding(length: int, d: int, dtype=numpy.float64):
    """The (length, d) table of Vaswani et al.: for position p and column j, with
    i = floor(j / 2), PE[p, j] = sin(p / 10000^(2i / d)) for even j and cos(...) for odd j.

    Each pair of columns is a rotation at its own frequency, from one turn per 2 pi
    positions down to one per 10000 * 2 pi, so that PE[p + k] is a fixed linear function
    of PE[p] for every offset k.
    """
    positions = numpy.arange(length, dtype=numpy.float64)[:, None]
    pair = numpy.arange(d) // 2
    angles = positions / numpy.power(10000.0, 2.0 * pair / d)
    table = numpy.where(numpy.arange(d) % 2 == 0, numpy.sin(angles), numpy.cos(angles))
    return backend.xp.asarray(table.astype(dtype))


class _Positions(Module):
    """Shared checks of the layers adding a (max_len, d) table to (N, T, d) inputs, and
    their cache mode: between ``start_caching`` and ``stop_caching`` a call on T steps after
    s steps already seen adds the rows s .. s + T - 1 of the table instead of 0 .. T - 1."""

    cacheable = True

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self._seen: int | None = None      # the steps read so far while caching, else None

    @property
    def caching(self) -> bool:
        return self._seen is not None

    @property
    def streamable(self) -> bool:
        """True while caching: the positions continue from one call to the next."""
        return self.caching

    def start_caching(self) -> None:
        """Let the next calls continue one sequence, from position 0."""
        if self.caching:
            raise ValueError(f"{self._label()}: start_caching while already caching; stop_caching first")
        self._seen = 0

    def stop_caching(self) -> None:
        """Forget the positions seen; every call starts at position 0 again."""
        self._seen = None

    def reorder_cache(self, rows) -> None:
        """The rows of a batch all continue from the same position, so reordering them keeps
        the count of positions seen as it is; ``rows`` is only checked. Refused when not
        caching."""
        if not self.caching:
            raise ValueError(f"{self._label()}: reorder_cache needs the cache mode, and the layer is not caching; "
                             "call start_caching (or use lamina.text.caching_keys_values) first")
        cache_rows(self, rows, None)

    def crop_cache(self, steps: int) -> None:
        """Continue from position ``steps`` (at most the steps seen): the later steps are
        forgotten. Refused when not caching."""
        if not self.caching:
            raise ValueError(f"{self._label()}: crop_cache needs the cache mode, and the layer is not caching")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= self._seen:
            raise ValueError(f"{self._label()}: crop_cache keeps 0 .. {self._seen} positions, got {steps!r}")
        self._seen = steps

    def _next_positions(self, x) -> slice:
        """The table rows of the input's steps: 0 .. T - 1, or s .. s + T - 1 while caching
        after s steps (which then count as seen)."""
        t = x.shape[1]
        start = self._seen or 0
        if start + t > self.max_len:
            steps = f"{t} steps" + (f", {start + t} with the {start} steps already cached" if start else "")
            raise ShapeError(f"{self._label()}: the input of shape {tuple(x.shape)} has {steps}, more than "
                             f"max_len={self.max_len}; build the layer with a larger max_len")
        if self.caching:
            self._seen = start + t
        return slice(start, start + t)

    def compute_output_shape(self, input_shape):
        shape = _sequence_shape(self, input_shape, getattr(self, "features", None))
        if shape[1] is not None and shape[1] > self.max_len:
            raise ShapeError(f"{self._label()}: the input shape {shape} has {shape[1]} steps, more than "
                             f"max_len={self.max_len}")
        return shape


@register_layer
class PositionalEncoding(_Positions):
    """Adds the sinusoidal position encoding of :func:`sinusoidal_encoding` to inputs
    (N, T, d), T <= ``max_len``: x[:, p] + PE[p], then dropout (in training) as in the
    original Transformer. No parameters: the (max_len, d) table is a buffer named
    ``encoding``, computed on the first call for the input's d (and saved with the weights)."""

    def __init__(self, max_len: int = 5000, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.max_len = positive_int(max_len, "PositionalEncoding: max_len")
        self.rate = dropout_rate(dropout, "PositionalEncoding")
        self.features: int | None = None

    def build(self, input_shape) -> None:
        shape = _sequence_shape(self, input_shape, None)
        if shape[-1] is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        self.features = int(shape[-1])
        self.register_buffer("encoding", sinusoidal_encoding(self.max_len, self.features,
                                                             backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_sequence(self, x, self.features)
        table = self.encoding[self._next_positions(x)]
        if table.dtype != x.dtype:
            table = table.astype(x.dtype)
        y = F.add(x, Tensor._wrap(table))
        return DropoutFunction.apply(y, rate=self.rate) if self.training and self.rate else y

    def get_config(self) -> dict:
        return {"max_len": self.max_len, "dropout": self.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}" + (f", dropout={self.rate}" if self.rate else "")


@register_layer
class PositionEmbedding(_Positions):
    """Adds a learned position vector to each step: x[:, p] + P[p] for inputs (N, T, d),
    T <= ``max_len``, with the table ``weight`` P of shape (max_len, d) created on the first
    call (Xavier-uniform by default, as Keras's ``PositionEmbedding``; ``embeddings_init``
    takes any initializer spec). Keras's layer returns the position vectors alone, for the
    caller to add; this one adds them."""

    def __init__(self, max_len: int, embeddings_init="xavier_uniform", name: str | None = None):
        super().__init__(name=name)
        self.max_len = positive_int(max_len, "PositionEmbedding: max_len")
        self.embeddings_init = embeddings_init
        initializers.get(embeddings_init)
        self.features: int | None = None

    def build(self, input_shape) -> None:
        shape = _sequence_shape(self, input_shape, None)
        if shape[-1] is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        self.features = d = int(shape[-1])
        table = initializers.get(self.embeddings_init)((self.max_len, d), self.max_len, d,
                                                       backend.get_default_dtype())
        self.add_parameter("weight", table)
        self.built = True

    def forward(self, x, positions=None) -> Tensor:
        """x + P[p] with p = 0 .. T - 1 (continuing while caching), or the integer
        ``positions`` (N, T) of each step when given (left-padded rows count from their
        first real token)."""
        x = as_tensor(x)
        _check_sequence(self, x, self.features)
        rows = self._next_positions(x)
        if positions is None:
            return F.add(x, F.getitem(self.weight, rows))
        positions = backend.xp.asarray(positions.data if isinstance(positions, Tensor) else positions)
        if positions.shape != tuple(x.shape[:2]) or positions.dtype.kind not in "iu":
            raise ShapeError(f"{self._label()}: positions must be integers of shape {tuple(x.shape[:2])} (one per "
                             f"step), got {positions.dtype} {tuple(positions.shape)}")
        if positions.size and not (0 <= int(positions.min()) and int(positions.max()) < self.max_len):
            raise ShapeError(f"{self._label()}: positions must lie in [0, max_len={self.max_len}), got "
                             f"[{int(positions.min())}, {int(positions.max())}]")
        return F.add(x, F.getitem(self.weight, positions))

    def get_config(self) -> dict:
        return {"max_len": self.max_len, "embeddings_init": initializers.serialize(self.embeddings_init),
                "name": self.name}

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}"

