"""The Transformer's multi-head attention (course notes, Attention models), as
``torch.nn.MultiheadAttention(batch_first=True)``: h heads, each attending with its own
learned projections of the queries, keys and values, their contexts joined and projected.
For sampling from a causal language model it can keep the keys and values of the steps
already read (``start_caching``), so that each new token costs one row of attention
instead of a rerun over the whole prefix. For cross-attention over a fixed memory (an
encoder-decoder's), :meth:`MultiHeadAttention.project_keys_values` projects the memory once
and later calls take the projections (``keys_values=``) in place of the memory.

Masks are boolean with True = attend (or float, added to the scores), as everywhere in
lamina; PyTorch's masks (``attn_mask``, ``key_padding_mask``) mark the positions to *ignore*
with True, so pass their negation.

The key/value cache is in :mod:`lamina.nn.multi_head_attention_cache`, the masks in
:mod:`lamina.nn.multi_head_attention_masks`; the layer builds on both.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.functional.softcapped_attention import softcapped_attention
from lamina.nn import init as initializers
from lamina.nn.attention import first_shape
from lamina.nn.dense import linear
from lamina.nn.head_hooks import HEAD_OUTPUTS, HeadOutputs
from lamina.nn.layer import dropout_rate, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.multi_head_attention_cache import _KeyValueCache
from lamina.nn.multi_head_attention_masks import _keep_also  # noqa: F401  (moved there, importable from here too)

__all__ = ["MultiHeadAttention"]

LORA_ADAPTERS = ("lora_q", "lora_k", "lora_v")
"""The names of the sub-modules that adapt the projections of the queries, keys and values."""

IA3_SCALES = ("ia3_q", "ia3_k", "ia3_v")
"""The names of the sub-modules whose vector ``scaling`` rescales the projected queries, keys
or values (IA3, :func:`lamina.nn.apply_ia3`)."""


@register_layer
class MultiHeadAttention(_KeyValueCache, Module):
    """Multi-head attention: h heads attend in parallel, each in its own d = E / h subspace.

        Q_i = q W_q[:, i] + b_q,  K_i = k W_k[:, i] + b_k,  V_i = v W_v[:, i] + b_v
        head_i = softmax(Q_i K_i^T / sqrt(d)) V_i
        out = concat(head_1, ..., head_h) W_o + b_o

    with inputs (N, T, E) (batch first) and samples-as-rows weights like :class:`Dense`:
    ``in_weight`` (E, 3E) holds [W_q | W_k | W_v] side by side (the transpose of PyTorch's
    ``in_proj_weight``), ``in_bias`` (3E,), ``out_weight`` (E, E) (the transpose of
    ``out_proj.weight``) and ``out_bias`` (E,).

    Called as ``mha(query, key=None, value=None, mask=None, key_mask=None, causal=False,
    return_weights=False)``: self-attention when ``key`` and ``value`` are omitted (``value``
    defaults to ``key``). ``mask``: boolean (True = attend) or float (added to the scores),
    of shape (T_q, T_k), (N, T_q, T_k) or (N, h, T_q, T_k); ``key_mask``: (N, T_k), True for
    the real keys and False for padding. ``return_weights=True`` also returns the attention
    weights (N, h, T_q, T_k) as a constant tensor. ``dropout`` zeroes attention weights in
    training mode.

    The projections start Xavier-uniform with zero biases, as PyTorch's.

    Key/value cache (incremental decoding): between :meth:`start_caching` and
    :meth:`stop_caching` consecutive calls continue one sequence. Each call must be causal
    self-attention (``mha(x, causal=True)``) in evaluation mode
    under ``no_grad``; the layer keeps K and V of every step read so far, and a call on t new
    steps after s cached ones attends over all s + t keys, its query i (position s + i)
    seeing the keys t' <= s + i. The outputs equal the last t rows of one causal call on the
    whole sequence, at O(t (s + t)) cost instead of O((s + t)^2). :meth:`reorder_cache` keeps
    and reorders the cached rows (the sequences of the batch), as beam search needs. A ``mask``
    (t, s + t) replaces the shifted causal pattern (a tree of candidate continuations, each
    seeing the cache and its ancestors; not with ALiBi or a window), and
    :meth:`keep_cache_steps` then keeps the accepted steps.

    Rotary positions (``rotary=True``; Su et al.'s RoPE, see
    :func:`lamina.functional.rotary_embedding`): each head's queries and keys are rotated by
    their positions (0, 1, ... in each call; while caching, the cached steps count first;
    or the ``positions`` (N, T) a self-attention call is given, as left-padded rows need)
    before the scores, so the scores depend on relative positions and the model needs no
    position layer. ``rotary_base`` is the base of the angles (10000); ``rotary_scaling`` a
    ``rope_scaling`` mapping of Hugging Face's ('linear', 'llama3', 'yarn', 'dynamic' or
    'longrope'; see :func:`lamina.functional.rotary_parameters`) and ``rotary_max_positions``
    the model's context (``max_position_embeddings``, which 'dynamic' needs). The frequencies
    and attention factor are computed once per layer, or, for 'dynamic' and 'longrope', per
    call for its length (cached steps + new ones): a cached key keeps the rotation of the call
    that read it, as in Hugging Face's cached decoding.

    ``head_dim`` (default embed_dim / num_heads): the features d of each head, when they do
    not fill E (Hugging Face's ``head_dim``): the queries then have h d columns of
    ``in_weight`` and ``out_weight`` is (h d, E).

    Fixed keys and values: ``K, V = mha.project_keys_values(key, value)`` gives the heads'
    projections (N, h, T_k, d), and ``mha(query, keys_values=(K, V), mask=..., key_mask=...)``
    equals ``mha(query, key, value, mask=..., key_mask=...)`` without projecting the keys and
    values again: an encoder-decoder's cross-attention projects the memory once per decode.

    Grouped-query attention (``num_kv_heads``; Ainslie et al. 2023): the keys and values get
    g = num_kv_heads heads of d features each (num_kv_heads divides num_heads; 1 is
    multi-query attention), and query head i attends with key/value head
    i // (num_heads / num_kv_heads), as ``torch.nn.functional.scaled_dot_product_attention(
    enable_gqa=True)``. ``in_weight`` is then (E, E + 2 g d): [W_q | W_k | W_v] with W_k and
    W_v of g d columns; the cache and ``project_keys_values`` hold g heads, not h.

    ALiBi (``alibi=True``; see :func:`lamina.functional.alibi_bias`): head h adds
    -m_h |i - j| to the score of query i and key j (positions continue through the cache).
    Sliding window (``window=w``, causal calls only; see
    :func:`lamina.functional.sliding_window_mask`): query i sees the keys i - w < j <= i,
    and the cache keeps only the keys and values of the last w - 1 steps.

    Options of some published language models: ``out_bias`` (default ``use_bias``) gives the
    output projection a bias or not on its own (Qwen2's biased q/k/v and unbiased o);
    ``rotary_dims`` r turns only the first r features of each head, the others passing as they
    are (GPT-NeoX's partial rotary); ``scale`` replaces 1 / sqrt(d) on the scores (Gemma 2's
    query_pre_attn_scalar^-1/2); ``logit_softcap`` c caps the scores softly, s -> c tanh(s / c),
    before the mask (Gemma 2; see :func:`lamina.functional.softcapped_attention`).

    LoRA adapters (:func:`lamina.nn.apply_lora`) are the sub-modules ``lora_q``, ``lora_k``
    and ``lora_v``: when present (and not merged), each adds its low-rank term to the
    projection of the queries, keys or values. IA3 vectors (:func:`lamina.nn.apply_ia3`) are
    the sub-modules ``ia3_q``, ``ia3_k`` and ``ia3_v``, each multiplying its projection by its
    ``scaling``. Prefix tuning (:class:`lamina.nn.PrefixTuningLM`) sets the attribute
    ``prefix_keys_values`` for the duration of a call: keys and values every query sees
    before the call's own.

    PyTorch's remaining options: ``add_bias_kv`` learns a key ``bias_k`` and a value ``bias_v``
    (each (g d,), PyTorch's (1, 1, E) ``bias_k``/``bias_v`` flattened, drawn Xavier-normal as
    PyTorch's) appended as one more key/value position after the call's T_k projected ones,
    and ``add_zero_attn`` appends a zero key and value after those, so that the keys are
    [K; b_k; 0] and the values [V; b_v; 0]. Every query sees the appended positions, whatever
    the ``mask``, ``key_mask`` or ``causal`` (PyTorch pads its masks with an allowed column),
    and the returned weights have T_k + 1 or T_k + 2 columns. ``kdim`` and ``vdim`` (default
    E): the features of the keys and values fed in, when they differ from the queries'; the
    projections are then three parameters, ``q_weight`` (E, h d), ``k_weight`` (kdim, g d)
    and ``v_weight`` (vdim, g d) (the transposes of PyTorch's ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``), in place of ``in_weight``; ``in_bias`` is as
    before. ``average_weights=True`` in a call with ``return_weights=True`` returns the
    weights averaged over the heads, (N, T_q, T_k), as PyTorch's ``average_attn_weights``.
    None of these three options works with the key/value cache (PyTorch has none).

    Per-head outputs: :meth:`enable_head_hooks` adds the sub-module ``head_outputs`` (see
    :mod:`lamina.nn.head_hooks`) through which the heads' contexts z (N, T, h, d) pass just
    before the output projection, in every call (cached ones too), so that forward hooks can
    read or patch each head; :meth:`disable_head_hooks` removes it.
    """

    def __init__(self, embed_dim: int, num_heads: int, use_bias: bool = True, dropout: float = 0.0,
                 kernel_init="xavier_uniform", bias_init="zeros", rotary: bool = False, rotary_base: float = 10000.0,
                 num_kv_heads: int | None = None, alibi: bool = False, window: int | None = None,
                 head_dim: int | None = None, rotary_scaling: Mapping | None = None,
                 rotary_max_positions: int | None = None, out_bias: bool | None = None,
                 rotary_dims: int | None = None, scale: float | None = None, logit_softcap: float | None = None,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, name: str | None = None):
        super().__init__(name=name)
        positive_int(embed_dim, "MultiHeadAttention: embed_dim")
        positive_int(num_heads, "MultiHeadAttention: num_heads")
        if head_dim is None and embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by num_heads "
                             f"{num_heads}; each head gets embed_dim / num_heads features (or pass head_dim)")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads if head_dim is None else positive_int(
            head_dim, "MultiHeadAttention: head_dim")
        self.query_dim = self.num_heads * self.head_dim
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        positive_int(self.num_kv_heads, "MultiHeadAttention: num_kv_heads")
        if num_heads % self.num_kv_heads:
            raise ValueError(f"MultiHeadAttention: num_kv_heads {self.num_kv_heads} must divide num_heads "
                             f"{num_heads}; each key/value head serves a group of query heads")
        self.kv_dim = self.num_kv_heads * self.head_dim
        self.alibi = bool(alibi)
        if window is not None:
            positive_int(window, "MultiHeadAttention: window")
        self.window = window
        self.rotary = bool(rotary)
        self.rotary_dims = self.head_dim if rotary_dims is None else positive_int(
            rotary_dims, "MultiHeadAttention: rotary_dims")
        if self.rotary and self.head_dim % 2 and rotary_dims is None:
            raise ValueError(f"MultiHeadAttention: rotary positions turn pairs of features; each head has "
                             f"{self.head_dim} (embed_dim {embed_dim} / num_heads {num_heads}), expected even")
        if self.rotary and (self.rotary_dims % 2 or self.rotary_dims > self.head_dim):
            raise ValueError(f"MultiHeadAttention: rotary positions turn pairs of features; rotary_dims "
                             f"{self.rotary_dims} rotary features of a head of {self.head_dim}, expected an even "
                             "number at most the head's")
        if scale is not None and not float(scale) > 0:
            raise ValueError(f"MultiHeadAttention: scale must be > 0 or None, got {scale!r}")
        self.scale = None if scale is None else float(scale)
        if logit_softcap is not None and not float(logit_softcap) > 0:
            raise ValueError(f"MultiHeadAttention: logit_softcap must be > 0 or None, got {logit_softcap!r}")
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        if not float(rotary_base) > 0:
            raise ValueError(f"MultiHeadAttention: rotary_base must be > 0, got {rotary_base!r}")
        self.rotary_base = float(rotary_base)
        self.rotary_scaling = None if rotary_scaling is None else dict(rotary_scaling)
        self.rotary_max_positions = None if rotary_max_positions is None else positive_int(
            rotary_max_positions, "MultiHeadAttention: rotary_max_positions")
        # theta_j of the rotary angles and the factor of cos and sin, computed once (within the context)
        self.rotary_frequencies, self.rotary_attention_factor = (F.rotary_parameters(
            self.rotary_dims, self.rotary_base, self.rotary_scaling, self.rotary_max_positions,
            who=f"MultiHeadAttention{'' if name is None else f' {name!r}'}") if self.rotary else (None, 1.0))
        self.use_bias = bool(use_bias)
        self.use_out_bias = self.use_bias if out_bias is None else bool(out_bias)
        self.dropout = dropout_rate(dropout, "MultiHeadAttention")
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)
        self.add_bias_kv, self.add_zero_attn = bool(add_bias_kv), bool(add_zero_attn)
        self.kdim = embed_dim if kdim is None else positive_int(kdim, "MultiHeadAttention: kdim")
        self.vdim = embed_dim if vdim is None else positive_int(vdim, "MultiHeadAttention: vdim")
        self._caching = False
        self._cached_keys = None           # (N, g, s, d) arrays of the steps read, while caching
        self._cached_values = None
        self._steps_read = 0

    def build(self, input_shape) -> None:
        shape = first_shape(input_shape)
        self._check_shape(shape, "query")
        e = self.embed_dim
        dtype = backend.get_default_dtype()
        kernel = initializers.get(self.kernel_init)
        width = self.query_dim + 2 * self.kv_dim
        if self.separate_projections:      # PyTorch draws q_proj_weight, k_proj_weight, v_proj_weight apart
            for part, fan_in in zip("qkv", (e, self.kdim, self.vdim)):
                fan_out = self.query_dim if part == "q" else self.kv_dim
                self.add_parameter(f"{part}_weight", kernel((fan_in, fan_out), fan_in, fan_out, dtype))
        else:                              # PyTorch draws the (3E, E) in-projection as one matrix: fans E and 3E
            self.add_parameter("in_weight", kernel((e, width), e, width, dtype))
        if self.add_bias_kv:               # PyTorch's (1, 1, E) xavier_normal_: fans E and E
            for name in ("bias_k", "bias_v"):
                self.add_parameter(name, initializers.get("xavier_normal")((self.kv_dim,), e, e, dtype))
        if self.use_bias:
            self.add_parameter("in_bias", initializers.get(self.bias_init)((width,), e, width, dtype))
        self.add_parameter("out_weight", kernel((self.query_dim, e), self.query_dim, e, dtype))
        if self.use_out_bias:
            self.add_parameter("out_bias", initializers.get(self.bias_init)((e,), e, e, dtype))
        self.built = True

    @property
    def separate_projections(self) -> bool:
        """Whether the keys or values have their own width (``kdim``/``vdim`` != E), so that
        the projections are ``q_weight``, ``k_weight``, ``v_weight`` instead of ``in_weight``."""
        return self.kdim != self.embed_dim or self.vdim != self.embed_dim

    def require_joint_projection(self, who: str) -> None:
        """Refuse, naming ``who``, a layer whose projections are separate (``kdim``/``vdim``):
        adapters and quantizers that work on the columns of ``in_weight`` do not apply to it."""
        if self.separate_projections:
            raise NotImplementedError(f"{who}: {self._label()} has kdim={self.kdim}, vdim={self.vdim} different "
                                      f"from embed_dim={self.embed_dim}, so its projections are q_weight, k_weight "
                                      "and v_weight, not the in_weight this works on")

    def projection_weight(self, part: int) -> Tensor:
        """W_q (part 0), W_k (1) or W_v (2): columns of ``in_weight``, or the separate weight."""
        if self.separate_projections:
            return self._parameters["qkv"[part] + "_weight"]
        return F.getitem(self.in_weight, (slice(None), self.projection_columns(part)))

    def _check_shape(self, shape, what: str, x=None):
        width = {"key": self.kdim, "value": self.vdim}.get(what, self.embed_dim)
        ok = shape is not None and len(shape) == 3 and shape[-1] in (None, width)
        if not ok:
            expected = f"a {what} of shape (batch, time, {width})"
            if x is not None:
                raise input_error(self, x, expected)
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected {expected}")

    def projection_columns(self, part: int) -> slice:
        """The columns of ``in_weight`` (and entries of ``in_bias``) of the queries (part 0),
        keys (1) or values (2)."""
        q, kv = self.query_dim, self.kv_dim
        return (slice(0, q), slice(q, q + kv), slice(q + kv, q + 2 * kv))[part]

    def _project(self, x, part: int, offset: int = 0, positions=None) -> Tensor:
        """x W_part + b_part, split into heads: (N, T, E) -> (N, h, T, d) (g heads for the keys
        and values); queries and keys turned by their positions from ``offset`` (or
        ``positions`` (N, T)) when the layer is rotary."""
        cols = self.projection_columns(part)
        b = F.getitem(self.in_bias, cols) if self.use_bias else None
        y = linear(x, self.projection_weight(part), b)
        adapter = self._modules.get(LORA_ADAPTERS[part])
        if adapter is not None and not adapter.merged:
            y = y + adapter(x)
        scale = self._modules.get(IA3_SCALES[part])
        if scale is not None and not scale.merged:
            y = y * scale.scaling
        n, t = x.shape[0], x.shape[1]
        heads = self.num_heads if part == 0 else self.num_kv_heads
        heads = F.transpose(F.reshape(y, n, t, heads, self.head_dim), 0, 2, 1, 3)
        if self.rotary and part < 2:
            heads = self._rotate(heads, offset, positions)
        return heads

    def _rotate(self, heads: Tensor, offset: int, positions=None) -> Tensor:
        """Rotary positions offset .. offset + T - 1 (or ``positions`` (N, T)) of ``heads``
        (N, h, T, d), with the frequencies of a call over offset + T positions."""
        theta, factor = self.rotary_frequencies, self.rotary_attention_factor
        if F.rope_depends_on_length(self.rotary_scaling):
            theta, factor = F.rotary_parameters(self.rotary_dims, self.rotary_base, self.rotary_scaling,
                                                self.rotary_max_positions, length=offset + heads.shape[2])
        r = self.rotary_dims
        if r < self.head_dim:             # partial rotary: the features past r pass unturned
            turned = F.rotary_embedding(F.getitem(heads, (Ellipsis, slice(0, r))), offset=offset,
                                        positions=positions, frequencies=theta, attention_factor=factor)
            return F.concat([turned, F.getitem(heads, (Ellipsis, slice(r, None)))], axis=-1)
        return F.rotary_embedding(heads, offset=offset, positions=positions, frequencies=theta,
                                  attention_factor=factor)

    def _project_step(self, x, positions=None) -> tuple:
        """The arrays Q, K and V of a cached call (no graph is recorded): one product with the
        whole ``in_weight`` instead of three, split into heads; the LoRA adapters and rotary
        positions as in :meth:`_project`."""
        modules = self._modules
        if modules and any(modules.get(name) is not None for name in LORA_ADAPTERS + IA3_SCALES):
            return tuple(self._project(x, part, self._steps_read, positions).data for part in range(3))
        bias = read_parameter(self, "in_bias") if self.use_bias else None
        y = linear(x, read_parameter(self, "in_weight"), bias).data
        n, t = x.shape[0], x.shape[1]
        heads = []
        for part in range(3):
            count = self.num_heads if part == 0 else self.num_kv_heads
            split = y[..., self.projection_columns(part)].reshape(n, t, count, self.head_dim).transpose(0, 2, 1, 3)
            if self.rotary and part < 2:
                split = self._rotate(Tensor._wrap(split), self._steps_read, positions).data
            heads.append(split)
        return tuple(heads)

    def forward(self, query, key=None, value=None, mask=None, key_mask=None, causal: bool = False,
                return_weights: bool = False, keys_values: tuple[Tensor, Tensor] | None = None, positions=None,
                average_weights: bool = False):
        sinks = self.__dict__.get("attention_sinks")     # lamina.text.attention_sinks: sinks + a window
        if sinks is not None and self._caching:
            out = sinks(query, key, value, mask, key_mask, causal, return_weights, keys_values, positions)
            return _averaged(out) if return_weights and average_weights else out
        if positions is not None and (not self.rotary or key is not None or value is not None
                                      or keys_values is not None):
            raise ValueError(f"{self._label()}: positions (N, T) turn the queries and keys of rotary "
                             "self-attention; this call is not one")
        if self._caching:
            q, k, v, full = self._cached_inputs(query, key, value, mask, key_mask, causal, keys_values, positions)
            causal, drop = False, 0.0              # the mask already holds the offset causal pattern
        else:
            q, k, v, full = self._inputs(query, key, value, mask, key_mask, keys_values, positions)
            drop = self.dropout if self.training else 0.0
            full, causal = self._positional_mask(full, causal, q.shape[2], k.shape[2])
            prefix = self.__dict__.get("prefix_keys_values")
            if prefix is not None:
                k, v, full, causal = self._attach_prefix(prefix, q, k, v, full, causal)
            if self.add_bias_kv or self.add_zero_attn:
                k, v, full, causal = self._append_keys_values(q, k, v, full, causal)
        if self.logit_softcap is not None:
            if drop or return_weights:
                raise ValueError(f"{self._label()}: soft-capped attention (logit_softcap={self.logit_softcap}) "
                                 "supports neither attention dropout nor return_weights")
            out = softcapped_attention(q, k, v, mask=full, causal=causal, scale=self.scale, cap=self.logit_softcap)
        else:
            out = scaled_dot_product_attention(q, k, v, mask=full, causal=causal, dropout=drop, scale=self.scale,
                                               return_weights=return_weights,
                                               enable_gqa=self.num_kv_heads != self.num_heads)
        heads, weights = out if return_weights else (out, None)
        n, t_q = q.shape[0], q.shape[2]
        hook = self._modules.get(HEAD_OUTPUTS)     # z (N, T, h, d) passes through it when head hooks are on
        if self._caching:                            # no graph: the same values, without two nodes
            z = heads.data.transpose(0, 2, 1, 3)
            if hook is not None:
                z = hook(Tensor._wrap(z)).data
            joined = Tensor._wrap(z.reshape(n, t_q, self.query_dim))
        else:
            z = F.transpose(heads, 0, 2, 1, 3)
            if hook is not None:
                z = hook(z)
            joined = F.reshape(z, n, t_q, self.query_dim)
        y = linear(joined, read_parameter(self, "out_weight"),
                   read_parameter(self, "out_bias") if self.use_out_bias else None)
        if not return_weights:
            return y
        return _averaged((y, weights)) if average_weights else (y, weights)

    def _inputs(self, query, key, value, mask, key_mask, keys_values, positions=None):
        """The heads' (Q, K, V), each (N, h, T, d), and the mask of one ordinary call."""
        if keys_values is not None:
            return self._projected_inputs(query, key, value, mask, key_mask, keys_values)
        query = as_tensor(query)
        key = query if key is None else as_tensor(key)
        value = key if value is None else as_tensor(value)
        for what, x in (("query", query), ("key", key), ("value", value)):
            self._check_shape(x.shape, what, x)
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ShapeError(f"{self._label()}: query {query.shape}, key {key.shape} and value {value.shape} "
                             "must share the batch size, and key and value the number of steps")
        full = self._mask(mask, key_mask, query.shape[0], query.shape[1], key.shape[1])
        return (self._project(query, 0, positions=positions), self._project(key, 1, positions=positions),
                self._project(value, 2), full)

    # -- per-head hook point -----------------------------------------------------
    @property
    def head_hooks_enabled(self) -> bool:
        """Whether the heads' contexts pass through the sub-module ``head_outputs``."""
        return HEAD_OUTPUTS in self._modules

    def enable_head_hooks(self) -> HeadOutputs:
        """Add (once) and return the sub-module ``head_outputs`` that the heads' contexts
        z (N, T, h, d) pass through before the output projection: hooks on it see (and may
        replace) each head's output. Outputs stay bit-identical while no hook changes z."""
        if not self.head_hooks_enabled:
            self.head_outputs = HeadOutputs(self.num_heads, self.head_dim)
        return self._modules[HEAD_OUTPUTS]

    def disable_head_hooks(self) -> None:
        """Remove the sub-module ``head_outputs`` (and the hooks on it), if present."""
        self._modules.pop(HEAD_OUTPUTS, None)

    # -- fixed keys and values, projected once -------------------------------------
    def project_keys_values(self, key, value=None) -> tuple[Tensor, Tensor]:
        """The heads' keys and values (K, V), each (N, h, T_k, d), of ``key`` (N, T_k, kdim) and
        ``value`` (N, T_k, vdim) (default: ``key``): K_i = k W_k[:, i] + b_k and
        V_i = v W_v[:, i] + b_v. Passed back as ``keys_values=(K, V)`` they stand for ``key``
        and ``value`` in any later call (with the weights unchanged), which then projects its
        query alone (and appends ``bias_k``/``bias_v`` and the zero position, when the layer
        has them, as for ``key`` and ``value``)."""
        key = as_tensor(key)
        value = key if value is None else as_tensor(value)
        for what, x in (("key", key), ("value", value)):
            self._check_shape(x.shape, what, x)
        if key.shape[:2] != value.shape[:2]:
            raise ShapeError(f"{self._label()}.project_keys_values: key {key.shape} and value {value.shape} must "
                             "share the batch size and the number of steps")
        if not self.built:
            self.build(key.shape[:2] + (self.embed_dim,))
            self.built = True
        return self._project(key, 1), self._project(value, 2)

    def _projected_inputs(self, query, key, value, mask, key_mask, keys_values):
        """(Q, K, V, mask) of a call given the keys' and values' projections (K, V)."""
        label = self._label()
        if key is not None or value is not None:
            raise ValueError(f"{label}: pass either key and value or their projections keys_values, not both")
        query = as_tensor(query)
        self._check_shape(query.shape, "query", query)
        if not (isinstance(keys_values, (tuple, list)) and len(keys_values) == 2
                and all(isinstance(p, Tensor) for p in keys_values)):
            raise ValueError(f"{label}: keys_values must be the pair of tensors (K, V) that project_keys_values "
                             f"returns, got {type(keys_values).__name__}")
        k, v = keys_values
        n, h, d = query.shape[0], self.num_kv_heads, self.head_dim
        if k.ndim != 4 or k.shape != v.shape or (k.shape[0], k.shape[1], k.shape[3]) != (n, h, d):
            raise ShapeError(f"{label}: keys_values of shapes {k.shape} and {v.shape} for a query {query.shape}; "
                             f"expected both ({n}, {h}, keys, {d}) (batch, heads, keys, head features)")
        full = self._mask(mask, key_mask, n, query.shape[1], k.shape[2])
        return self._project(query, 0), k, v, full

    def macs(self, input_shapes, output_shapes) -> int:
        """Per sample: the projections E^2 (T_q + 2 T_k) + E^2 T_q (kdim E and vdim E in place
        of two E^2 of the keys' and values'), and the scores and the context 2 T_q T_k E (the
        softmax not counted)."""
        t_q = output_shapes[0][0]
        e = self.embed_dim
        key = input_shapes[1] if len(input_shapes) > 1 else None       # self-attention: none
        t_k = key[0] if key is not None and len(key) == 2 and key[-1] == self.kdim else t_q
        q = self.query_dim
        return 2 * e * q * t_q + (self.kdim + self.vdim) * self.kv_dim * t_k + 2 * t_q * t_k * q

    def compute_output_shape(self, input_shape):
        shape = first_shape(input_shape)
        self._check_shape(shape, "query")
        return shape[:-1] + (self.embed_dim,)

    def get_config(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init),
            **({"rotary": True, "rotary_base": self.rotary_base} if self.rotary else {}),
            **({"num_kv_heads": self.num_kv_heads} if self.num_kv_heads != self.num_heads else {}),
            **({"alibi": True} if self.alibi else {}),
            **({"window": self.window} if self.window is not None else {}),
            **({"head_dim": self.head_dim} if self.query_dim != self.embed_dim else {}),
            **({"rotary_scaling": self.rotary_scaling} if self.rotary_scaling is not None else {}),
            **({"rotary_max_positions": self.rotary_max_positions} if self.rotary_max_positions is not None else {}),
            **({"out_bias": self.use_out_bias} if self.use_out_bias != self.use_bias else {}),
            **({"rotary_dims": self.rotary_dims} if self.rotary_dims != self.head_dim else {}),
            **({"scale": self.scale} if self.scale is not None else {}),
            **({"logit_softcap": self.logit_softcap} if self.logit_softcap is not None else {}),
            **({"add_bias_kv": True} if self.add_bias_kv else {}),
            **({"add_zero_attn": True} if self.add_zero_attn else {}),
            **({"kdim": self.kdim} if self.kdim != self.embed_dim else {}),
            **({"vdim": self.vdim} if self.vdim != self.embed_dim else {}),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        text = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        extras = [", use_bias=False" if not self.use_bias else "", ", rotary=True" if self.rotary else "",
                  f", num_kv_heads={self.num_kv_heads}" if self.num_kv_heads != self.num_heads else "",
                  ", alibi=True" if self.alibi else "", f", window={self.window}" if self.window else "",
                  ", add_bias_kv=True" if self.add_bias_kv else "",
                  ", add_zero_attn=True" if self.add_zero_attn else "",
                  f", kdim={self.kdim}" if self.kdim != self.embed_dim else "",
                  f", vdim={self.vdim}" if self.vdim != self.embed_dim else ""]
        return text + "".join(extras)


def _averaged(result: tuple) -> tuple:
    """(y, weights) with the weights (N, h, T_q, T_k) averaged over the heads: (N, T_q, T_k)."""
    y, weights = result
    return y, F.mean(weights, axis=1)
