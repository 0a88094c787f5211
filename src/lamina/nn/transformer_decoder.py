"""The encoder-decoder Transformer (Vaswani et al., 2017), as PyTorch's with ``batch_first=True``.

* :class:`TransformerDecoderLayer`: masked self-attention over the target, cross-attention
  over the encoder's output (the *memory*), then a position-wise feed-forward network,
  each with a residual connection and a layer normalization.
* The stacks (:class:`~lamina.nn.transformer_model.TransformerEncoder`,
  :class:`~lamina.nn.transformer_model.TransformerDecoder`) and the whole
  :class:`~lamina.nn.transformer_model.Transformer` are in :mod:`lamina.nn.transformer_model`.

Cross-attention is the attention model of the course notes with learned projections: the
target step t weighs the encoder activations a^<t'> (t' = 1 .. T_x) by
alpha^<t,t'> = softmax over t' of e^<t,t'>, e^<t,t'> = q^<t> . k^<t'> / sqrt(d), and reads
the context c^<t> = sum_t' alpha^<t,t'> v^<t'>, with q from the target and k, v from a^<t'>.

Masks follow PyTorch here, unlike the rest of lamina: a boolean ``*_mask`` or
``*_key_padding_mask`` is True where attention is *not* allowed, a float one is added to
the scores. Attention masks are (T_q, T_k) or (N * num_heads, T_q, T_k); key padding masks
are (N, T_k). ``tgt_is_causal=True`` masks the future of each target step, with or without
a ``tgt_mask`` (PyTorch takes the flag as a promise that ``tgt_mask`` is that mask).

Weights and names: PyTorch's ``state_dict`` of ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer``, ``nn.TransformerEncoder``, ``nn.TransformerDecoder`` or
``nn.Transformer`` maps key by key onto the lamina module's through
:func:`from_torch_state_dict`:

==============================  ==============================  ==========
PyTorch                         lamina                          layout
==============================  ==============================  ==========
``self_attn.in_proj_weight``    ``self_attention.in_weight``    transposed
``self_attn.in_proj_bias``      ``self_attention.in_bias``      same
``self_attn.out_proj.weight``   ``self_attention.out_weight``   transposed
``self_attn.out_proj.bias``     ``self_attention.out_bias``     same
``multihead_attn.*``            ``cross_attention.*``           as above
``linear1.weight`` (and 2)      same name                       transposed
``linear1.bias`` (and 2)        same name                       same
``norm1.*`` .. ``norm3.*``      same names                      same
``layers.k.*``, ``norm.*``,     same names                      same
``encoder.*``, ``decoder.*``
==============================  ==============================  ==========

(lamina's Dense and attention weights multiply samples as rows, hence the transposes.)

Incremental decoding: between ``start_caching`` and ``stop_caching`` (on a layer, a
:class:`~lamina.nn.transformer_model.TransformerDecoder` or a whole
:class:`~lamina.nn.transformer_model.Transformer`) consecutive calls continue one target
sequence against one memory. The masked self-attention keeps the keys and values of the
target steps already read, and the cross-attention projects the memory on the first call
and reuses its keys and values, so that greedy or beam decoding reads each new target step
once: step t costs O(t + T_src) attention work instead of a rerun over the t-step prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, is_grad_enabled
from lamina.errors import ShapeError
from lamina.nn.attention import mask_array
from lamina.nn.cache_rows import cache_rows
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import layer_config, layer_repr, set_sizes

__all__ = ["TransformerDecoderLayer", "from_torch_state_dict"]


# -- PyTorch masks and weights ---------------------------------------------------------------
def _mask_values(who: str, what: str, mask):
    m = mask_array(mask)
    if m.dtype != bool and m.dtype.kind != "f":
        raise ValueError(f"{who}: {what} must be boolean (True = not allowed) or float (added to the scores), "
                         f"got dtype {m.dtype}")
    return m


def _lamina_masks(who: str, names: tuple[str, str], attn_mask, key_padding_mask, batch: int, t_q: int, t_k: int,
                  num_heads: int):
    """PyTorch's ``attn_mask`` and ``key_padding_mask`` as the ``(mask, key_mask)`` that
    :class:`MultiHeadAttention` takes (True = attend): booleans are negated, a (N * h, T_q, T_k)
    mask becomes (N, h, T_q, T_k), and a float key padding mask is added to the mask (or, without
    one, broadcast to the (N, 1, T_q, T_k) mask). ``who``
    and ``names`` (the two arguments' names) label the errors."""
    mask = key_mask = None
    if attn_mask is not None:
        m = _mask_values(who, names[0], attn_mask)
        if m.ndim == 3 and m.shape == (batch * num_heads, t_q, t_k):
            m = m.reshape(batch, num_heads, t_q, t_k)
        elif m.shape != (t_q, t_k):
            raise ShapeError(f"{who}: {names[0]} of shape {tuple(m.shape)}; expected ({t_q}, {t_k}) or "
                             f"(batch * num_heads, {t_q}, {t_k}) = ({batch * num_heads}, {t_q}, {t_k})")
        mask = ~m if m.dtype == bool else m
    if key_padding_mask is not None:
        k = _mask_values(who, names[1], key_padding_mask)
        if k.shape != (batch, t_k):
            raise ShapeError(f"{who}: {names[1]} of shape {tuple(k.shape)}; expected (batch, keys) = "
                             f"({batch}, {t_k})")
        if k.dtype == bool:
            key_mask = ~k
        else:
            added = k[:, None, None, :]
            if mask is not None and mask.dtype == bool:
                mask = backend.xp.where(mask, 0.0, -backend.xp.inf).astype(k.dtype)
            mask = backend.xp.broadcast_to(added, (batch, 1, t_q, t_k)) if mask is None else mask + added
    return mask, key_mask


_TORCH_RENAMES = (
    # (PyTorch suffix, lamina suffix, transposed)
    ("self_attn.in_proj_weight", "self_attention.in_weight", True),
    ("self_attn.in_proj_bias", "self_attention.in_bias", False),
    ("self_attn.out_proj.weight", "self_attention.out_weight", True),
    ("self_attn.out_proj.bias", "self_attention.out_bias", False),
    ("multihead_attn.in_proj_weight", "cross_attention.in_weight", True),
    ("multihead_attn.in_proj_bias", "cross_attention.in_bias", False),
    ("multihead_attn.out_proj.weight", "cross_attention.out_weight", True),
    ("multihead_attn.out_proj.bias", "cross_attention.out_bias", False),
    ("linear1.weight", "linear1.weight", True),
    ("linear2.weight", "linear2.weight", True),
)


def from_torch_state_dict(state: Mapping) -> OrderedDict:
    """A PyTorch Transformer ``state_dict`` (of an encoder or decoder layer, a stack or a whole
    ``nn.Transformer``) renamed and transposed for the lamina module of the same structure
    (see the table in the module docstring); the other keys pass unchanged. Load the result
    with ``load_state_dict`` once the lamina module is built."""
    converted = OrderedDict()
    for key, value in state.items():
        array = value if isinstance(value, backend.xp.ndarray) else numpy.asarray(value)
        for theirs, ours, transposed in _TORCH_RENAMES:
            if key == theirs or key.endswith("." + theirs):
                key = key[: len(key) - len(theirs)] + ours
                array = array.T if transposed else array
                break
        converted[key] = array
    return converted


def _hides_exactly_the_future(mask, t: int) -> bool:
    """Whether a PyTorch-style ``mask`` (True or -inf = not allowed, 0 = allowed) of shape
    (T, T) or (N * h, T, T) is the causal mask of T steps, as
    ``Transformer.generate_square_subsequent_mask(T)``."""
    m = mask_array(mask)
    if m.ndim not in (2, 3) or m.shape[-2:] != (t, t):
        return False
    xp = backend.xp
    future = xp.triu(xp.ones((t, t), dtype=bool), k=1)
    if m.dtype == bool:
        return bool(xp.all(m == future))
    return bool(xp.all(xp.where(future, m == -xp.inf, m == 0)))


# -- shape checks ----------------------------------------------------------------------------
def _shape_list(input_shape) -> list:
    """The shapes of a call: one shape, or a list of them (several positional inputs)."""
    if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return [tuple(s) for s in input_shape]
    return [None if input_shape is None else tuple(input_shape)]


def _checked_shape(who: str, what: str, shape, d_model: int) -> tuple:
    if shape is None or len(shape) != 3 or shape[-1] not in (None, d_model):
        raise ShapeError(f"{who}: got a {what} shape {shape}; expected (batch, time, {d_model})")
    return tuple(shape)


def _checked_pair(who: str, names: tuple[str, str], first: Tensor, second: Tensor, d_model: int) -> None:
    """Both inputs (batch, time, d_model) with the same batch size."""
    for what, x in zip(names, (first, second)):
        if x.ndim != 3 or x.shape[-1] != d_model:
            raise ShapeError(f"{who}: {names[0]} of shape {tuple(first.shape)} and {names[1]} of shape "
                             f"{tuple(second.shape)}; expected both (batch, time, {d_model}), the {what} is not")
    if first.shape[0] != second.shape[0]:
        raise ShapeError(f"{who}: {names[0]} of shape {tuple(first.shape)} and {names[1]} of shape "
                         f"{tuple(second.shape)} must share the batch size")


# -- the decoder layer -----------------------------------------------------------------------
@register_layer
class TransformerDecoderLayer(Module):
    """One decoder layer: masked self-attention over the target, cross-attention over the
    memory, then a feed-forward network of two Dense layers at every position.

    Post-norm (``norm_first=False``, the original Transformer and PyTorch's default)::

        x = norm1(x + dropout1(self_attention(x)))
        x = norm2(x + dropout2(cross_attention(x, memory)))
        x = norm3(x + dropout3(linear2(dropout(activation(linear1(x))))))

    Pre-norm (``norm_first=True``)::

        x = x + dropout1(self_attention(norm1(x)))
        x = x + dropout2(cross_attention(norm2(x), memory))
        x = x + dropout3(linear2(dropout(activation(linear1(norm3(x))))))

    Called as ``layer(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)`` with tgt
    (N, T_tgt, d_model) and memory (N, T_src, d_model), masks as PyTorch's (see the module
    docstring): ``tgt_mask`` (T_tgt, T_tgt), ``memory_mask`` (T_tgt, T_src), key padding
    masks (N, T_tgt) and (N, T_src). Returns (N, T_tgt, d_model).

    ``dropout`` acts in training mode on both attentions' weights, inside the feed-forward
    network and on the three branches. ``activation``: 'relu', 'gelu' or any activation
    Dense accepts. The Dense layers start Xavier-uniform with zero biases, as the attentions.
    ``bias=False`` (PyTorch's) leaves out every bias: both attentions' ``in_bias`` and
    ``out_bias``, the Dense layers' and the three norms' beta.
    Sub-layers, in PyTorch's order: ``self_attention``, ``cross_attention`` (PyTorch's
    ``multihead_attn``), ``linear1``, ``dropout``, ``linear2``, ``norm1`` .. ``norm3``,
    ``dropout1`` .. ``dropout3``.

    Incremental decoding (:meth:`start_caching`): in evaluation mode under ``no_grad``,
    consecutive calls then continue one target sequence against one memory. A call with T
    new target steps after s cached ones gives the last T rows of one call on all s + T
    steps with ``tgt_is_causal=True``:

    * the self-attention keeps the keys and values of the steps read and is always causal:
      new step i (position s + i) sees the target positions <= s + i. ``tgt_mask`` must be
      None or the causal mask of the T new steps (the flag ``tgt_is_causal`` is then moot);
      ``tgt_key_padding_mask`` is refused.
    * the cross-attention projects the memory's keys and values on the first call and
      reuses them. Every later call must pass the same memory: the same array, or an equal
      one (checked; another memory raises), until :meth:`stop_caching`; decode another
      source after ``stop_caching()`` and ``start_caching()``. ``memory_key_padding_mask``
      (N, T_src) applies at every call; ``memory_mask`` holds the rows of the T new steps,
      (T, T_src) or (N * h, T, T_src); ``memory_is_causal`` is refused.
    """

    # the self-attention of a decoder layer is the target's masked one: the cache always serves it
    cacheable = True

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        set_sizes(self, d_model, num_heads, dim_feedforward, dropout, norm_first, layer_norm_eps, bias)
        rate, bias = self.dropout_rate, self.use_bias
        self.self_attention = MultiHeadAttention(d_model, num_heads, use_bias=bias, dropout=rate)
        self.cross_attention = MultiHeadAttention(d_model, num_heads, use_bias=bias, dropout=rate)
        self.linear1 = Dense(dim_feedforward, activation=activation, use_bias=bias, kernel_init="xavier_uniform")
        self.dropout = Dropout(rate)
        self.linear2 = Dense(d_model, use_bias=bias, kernel_init="xavier_uniform")
        self.norm1 = LayerNorm(-1, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(-1, eps=layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(-1, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(rate)
        self.dropout2 = Dropout(rate)
        self.dropout3 = Dropout(rate)
        self._memory = None                # the memory's array of the decode being cached, else None
        self._memory_keys_values = None    # its cross-attention projections (K, V), each (N, h, T_src, d)

    def build(self, input_shape) -> None:
        """Builds the sub-layers for ``input_shape``: the target's (N, T_tgt, d_model), or the
        list [target, memory] of a call with both."""
        shape = _checked_shape(self._label(), "target", _shape_list(input_shape)[0], self.d_model)
        shape = shape[:-1] + (self.d_model,)
        hidden = shape[:-1] + (self.dim_feedforward,)
        for layer, layer_shape in ((self.self_attention, shape), (self.cross_attention, shape),
                                   (self.linear1, shape), (self.linear2, hidden), (self.norm1, shape),
                                   (self.norm2, shape), (self.norm3, shape)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        self.built = True

    # -- key/value cache ---------------------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether consecutive calls continue one target sequence through the cache."""
        return self.self_attention.caching

    @property
    def cached_steps(self) -> int:
        """The number of target steps s whose keys and values are cached (0 when not caching)."""
        return self.self_attention.cached_steps

    def start_caching(self) -> None:
        """Start an empty cache: the next call reads the first target steps (and its memory is
        projected once), each later call the next ones (see the class docstring)."""
        if self.caching:
            raise ValueError(f"{self._label()}: start_caching while already caching; stop_caching first")
        self.self_attention.start_caching()
        self._memory = self._memory_keys_values = None

    def stop_caching(self) -> None:
        """Drop the cached target keys and values and the memory's projections; calls are
        independent again."""
        self.self_attention.stop_caching()
        self._memory = self._memory_keys_values = None

    def reorder_cache(self, rows) -> None:
        """Keep the cached rows ``rows`` (R,), in that order: row i of the target's keys and
        values, and of the memory and its projections, becomes the old row ``rows[i]``; the
        later calls of the decode then pass the memory's rows reordered alike. Refused when not
        caching."""
        if not self.caching:
            raise ValueError(f"{self._label()}: reorder_cache needs a key/value cache, and the layer is not caching; "
                             "call start_caching first")
        self.self_attention.reorder_cache(rows)
        if self._memory is None:
            return
        index = cache_rows(self, rows, self._memory.shape[0])
        self._memory = self._memory[index]
        self._memory_keys_values = tuple(Tensor._wrap(p.data[index]) for p in self._memory_keys_values)

    def _check_cached_call(self, t: int, tgt_mask, tgt_key_padding_mask, memory_is_causal: bool) -> None:
        who = self._label()
        if self.training or is_grad_enabled():
            raise ValueError(f"{who}: the key/value cache is for evaluation only; call eval() on the model and run "
                             "it under lamina.no_grad()")
        if tgt_mask is not None and not _hides_exactly_the_future(tgt_mask, t):
            raise ValueError(f"{who}: while caching, the self-attention is causal over the cached and new steps; "
                             f"tgt_mask must be None or the causal mask of the {t} new steps "
                             f"(Transformer.generate_square_subsequent_mask({t})), got another mask of shape "
                             f"{tuple(mask_array(tgt_mask).shape)}")
        if tgt_key_padding_mask is not None:
            raise ValueError(f"{who}: tgt_key_padding_mask is not supported while caching: the cached target "
                             "steps carry no padding mask; decode without target padding")
        if memory_is_causal:
            raise ValueError(f"{who}: memory_is_causal=True is not supported while caching; pass memory_mask with "
                             "the rows of the new steps instead")

    def _cached_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-attention's (K, V) of ``memory``: projected on the first call of a decode,
        reused after, once ``memory`` is checked to be the first call's."""
        if self._memory_keys_values is None:
            self._memory_keys_values = self.cross_attention.project_keys_values(memory)
            self._memory = memory.data
            return self._memory_keys_values
        if memory.data is not self._memory:
            who, cached = self._label(), tuple(self._memory.shape)
            if tuple(memory.shape) != cached:
                raise ShapeError(f"{who}: a memory of shape {tuple(memory.shape)} while caching the decode of a "
                                 f"memory of shape {cached}; every call of one decode takes the same memory "
                                 "(stop_caching and start_caching to decode another)")
            if not backend.xp.array_equal(memory.data, self._memory):
                raise ValueError(f"{who}: the memory differs from the one whose keys and values are cached; every "
                                 "call of one decode takes the same memory (stop_caching and start_caching to "
                                 "decode another)")
        return self._memory_keys_values

    # -- the call ----------------------------------------------------------------
    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        x, memory = as_tensor(tgt), as_tensor(memory)
        who = self._label()
        _checked_pair(who, ("tgt", "memory"), x, memory, self.d_model)
        n, t_tgt, t_src = x.shape[0], x.shape[1], memory.shape[1]
        cross_mask, cross_key_mask = _lamina_masks(who, ("memory_mask", "memory_key_padding_mask"), memory_mask,
                                                   memory_key_padding_mask, n, t_tgt, t_src, self.num_heads)
        cross = {"mask": cross_mask, "key_mask": cross_key_mask}
        if self.caching:
            self._check_cached_call(t_tgt, tgt_mask, tgt_key_padding_mask, memory_is_causal)
            attend = {"causal": True}
            cross["keys_values"] = self._cached_memory(memory)
        else:
            mask, key_mask = _lamina_masks(who, ("tgt_mask", "tgt_key_padding_mask"), tgt_mask, tgt_key_padding_mask,
                                           n, t_tgt, t_tgt, self.num_heads)
            attend = {"mask": mask, "key_mask": key_mask, "causal": bool(tgt_is_causal)}
            cross.update(key=memory, causal=bool(memory_is_causal))
        if self.norm_first:
            x = F.add(x, self._self_block(self.norm1(x), attend))
            x = F.add(x, self._cross_block(self.norm2(x), cross))
            return F.add(x, self._feed_forward(self.norm3(x)))
        x = self.norm1(F.add(x, self._self_block(x, attend)))
        x = self.norm2(F.add(x, self._cross_block(x, cross)))
        return self.norm3(F.add(x, self._feed_forward(x)))

    def _self_block(self, x, options: dict) -> Tensor:
        return self.dropout1(self.self_attention(x, **options))

    def _cross_block(self, x, options: dict) -> Tensor:
        return self.dropout2(self.cross_attention(x, **options))

    def _feed_forward(self, x) -> Tensor:
        return self.dropout3(self.linear2(self.dropout(self.linear1(x))))

    def compute_output_shape(self, input_shape):
        shape = _checked_shape(self._label(), "target", _shape_list(input_shape)[0], self.d_model)
        return shape[:-1] + (self.d_model,)

    def get_config(self) -> dict:
        return {**layer_config(self), "name": self.name}

    def extra_repr(self) -> str:
        return layer_repr(self)
