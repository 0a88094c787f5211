"""Attention sinks (Xiao et al. 2024, "Efficient Streaming Language Models with Attention
Sinks"; StreamingLLM): generation past a model's context with a key/value cache of constant size.

A causal model with rotary positions puts much of its attention on the first tokens of a
text, whatever they are (the "sinks"); a cache that keeps only the last tokens (window
attention) evicts them and the model breaks down. The sink cache of each attention layer
keeps the first S = ``sink_tokens`` tokens and the last W = ``window``: the query of token i
attends over the keys

    j in {0 .. S - 1}  union  {i - W + 1 .. i}           (at most S + W keys)

with positions assigned within the cache, not in the text: the n keys held get the rotary
positions 0 .. n - 1 and the query n - 1. So the keys are held before rotation and turned
by their place in the cache at each call (an O(S + W) cost per step, constant in the
length), and no position exceeds S + W - 1. While the text has at most S + W tokens nothing
is evicted and the scores are those of the plain cache.

A call on t new tokens reads at once those that fit in the cache; past S + W tokens it reads
one token at a time, evicting the oldest of the window before each (only the attention
layer loops; the rest of the model runs once on the t steps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional import concat
from lamina.text.generate import caching_keys_values

__all__ = ["attention_sinks", "check_sink_options"]

_ADAPTERS = ("lora_q", "lora_k", "lora_v", "ia3_q", "ia3_k", "ia3_v")


def check_sink_options(who: str, sink_tokens, window) -> None:
    """Refuse (ValueError naming ``who``) a ``sink_tokens`` that is not an int >= 0 or a
    ``window`` that is not an int >= 1."""
    for name, value, least in (("sink_tokens", sink_tokens, 0), ("window", window, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{who}: {name} must be an int >= {least}, got {value!r}")


class _SinkCache:
    """The sink cache of one attention layer (set on it as ``attention_sinks`` while the
    layer caches): the unrotated keys and the values (N, g, n, d) of the n tokens held."""

    def __init__(self, layer, sink_tokens: int, window: int):
        self.layer, self.sinks, self.window = layer, int(sink_tokens), int(window)
        self.keys = self.values = None

    @property
    def held(self) -> int:
        """The number n of tokens whose keys and values the cache holds."""
        return 0 if self.keys is None else int(self.keys.shape[2])

    def __call__(self, query, key=None, value=None, mask=None, key_mask=None, causal: bool = False,
                 return_weights: bool = False, keys_values=None, positions=None):
        label = self.layer._label()
        extra = [name for name, given in (("key", key), ("value", value), ("mask", mask), ("key_mask", key_mask),
                                          ("keys_values", keys_values), ("positions", positions),
                                          ("return_weights", return_weights or None)) if given is not None]
        if extra or not causal:
            raise ValueError(f"{label}: the attention-sink cache serves causal self-attention calls "
                             f"mha(x, causal=True) only; got {', '.join(extra) if extra else 'causal=False'}")
        t, pieces, start = query.shape[1], [], 0
        while start < t:
            room = self.sinks + self.window - self.held
            steps = min(t - start, room) if room > 0 else 1
            if room <= 0:
                self._evict(1 - room)
            pieces.append(self._read(query[:, start:start + steps]))
            start += steps
        return pieces[0] if len(pieces) == 1 else concat(pieces, axis=1)

    def _read(self, x) -> Tensor:
        """The layer's cached call on the steps ``x`` (N, m, E), the cache then holding them too."""
        layer = self.layer
        del layer.__dict__["attention_sinks"]            # the plain cached call, on the keys held
        try:
            out = layer.forward(x, causal=True)
        finally:
            layer.__dict__["attention_sinks"] = self
        n, m = x.shape[0], x.shape[1]
        columns = layer.projection_columns(1)
        y = x.data @ layer.in_weight.data[:, columns]
        if layer.use_bias:
            y = y + layer.in_bias.data[columns]
        keys = y.reshape(n, m, layer.num_kv_heads, layer.head_dim)
        keys = keys.transpose(0, 2, 1, 3)
        values = layer._cached_values[:, :, -m:]
        xp = backend.xp
        if self.keys is None:
            self.keys, self.values = xp.ascontiguousarray(keys), xp.ascontiguousarray(values)
        else:
            self.keys = xp.concatenate([self.keys, keys], axis=2)
            self.values = xp.concatenate([self.values, values], axis=2)
        return out

    def _evict(self, count: int) -> None:
        """Drop the ``count`` oldest tokens after the sinks, and give the layer the keys held
        turned by their new places 0 .. n - 1 in the cache."""
        xp, s = backend.xp, self.sinks
        self.keys = xp.concatenate([self.keys[:, :, :s], self.keys[:, :, s + count:]], axis=2)
        self.values = xp.concatenate([self.values[:, :, :s], self.values[:, :, s + count:]], axis=2)
        layer = self.layer
        turned = layer._rotate(Tensor._wrap(self.keys), 0).data
        layer.__dict__.update(_cached_keys=turned, _cached_values=self.values, _key_store=None, _value_store=None,
                              _steps_read=self.held)

    def reorder(self, index) -> None:
        """Keep the rows ``index`` of the cache (beam search), as the layer's own cache."""
        if self.keys is not None:
            self.keys, self.values = self.keys[index], self.values[index]


def _attention_layers(model, who: str) -> list:
    """The multi-head attention layers of ``model``, checked to be able to hold a sink cache."""
    layers = [m for m in model.modules() if hasattr(m, "projection_columns") and hasattr(m, "start_caching")]
    if not layers:
        raise ValueError(f"{who}: {type(model).__name__} has no multi-head attention layer to keep attention sinks")
    tables = [type(m).__name__ for m in model.modules()
              if isinstance(getattr(m, "max_len", None), int) and hasattr(m, "start_caching")]
    if tables:
        raise ValueError(f"{who}: attention sinks assign positions within the cache; {type(model).__name__} has "
                         f"position tables ({', '.join(sorted(set(tables)))}) that would need positions past their "
                         "max_len; only models with rotary positions are supported")
    for layer in layers:
        problem = ("has no rotary positions (rotary=False)" if not layer.rotary
                   else f"has a sliding window (window={layer.window})" if layer.window is not None
                   else "uses ALiBi" if layer.alibi
                   else "has LoRA or IA3 adapters (merge them first)" if any(
                       layer._modules.get(a) is not None and not layer._modules[a].merged for a in _ADAPTERS)
                   else None)
        if problem:
            raise ValueError(f"{who}: attention sinks need rotary self-attention; {layer._label()} {problem}")
    return layers


@contextlib.contextmanager
def attention_sinks(model, sink_tokens: int = 4, window: int = 252) -> Iterator[None]:
    """Within: ``model`` caches keys and values as in :func:`lamina.text.caching_keys_values`,
    each of its (rotary) attention layers keeping only the first ``sink_tokens`` tokens and the
    last ``window`` ones, their positions assigned within the cache (module docstring); so
    consecutive calls continue one text past the model's context in constant memory. For
    evaluation only (``model.eval()``, under ``lamina.no_grad()``). Refused (ValueError) for
    ``sink_tokens`` < 0, ``window`` < 1, and a model without multi-head attention, with a
    position table, or with an attention layer that is not rotary (or has a sliding window,
    ALiBi, unmerged adapters). After: the caches cleared."""
    check_sink_options("attention_sinks", sink_tokens, window)
    layers = _attention_layers(model, "attention_sinks")
    try:
        for layer in layers:
            layer.__dict__["attention_sinks"] = _SinkCache(layer, sink_tokens, window)
        with caching_keys_values(model):
            yield
    finally:
        for layer in layers:
            layer.__dict__.pop("attention_sinks", None)
