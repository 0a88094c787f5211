"""The key/value cache of :class:`~lamina.nn.MultiHeadAttention`, for incremental decoding.

Between ``start_caching`` and ``stop_caching`` the layer keeps the keys and values of every
step read, and a causal self-attention call on t new steps after s cached ones attends over
all s + t keys, at O(t (s + t)) cost instead of O((s + t)^2), its mask the causal pattern
shifted by s. ``reorder_cache`` (beam search), ``crop_cache`` (a rejected draft of
speculative decoding) and ``keep_cache_steps`` (the accepted path of a tree of candidates)
edit the cache. ``_KeyValueCache`` is a base class of the layer.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor, is_grad_enabled
from lamina.errors import ShapeError
from lamina.nn.attention import mask_array
from lamina.nn.cache_rows import cache_rows
from lamina.nn.module import as_tensor
from lamina.nn.multi_head_attention_masks import _AttentionMasks


class _KeyValueCache(_AttentionMasks):
    """The key/value cache of a :class:`~lamina.nn.MultiHeadAttention` (a base class of it;
    the layer's ``__init__`` starts it empty, not caching)."""

    _key_store = _value_store = None     # while caching without a window: (N, g, capacity, d) arrays

    # -- key/value cache ---------------------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether consecutive calls continue one sequence through the key/value cache."""
        return self._caching

    @property
    def cached_steps(self) -> int:
        """The number of steps s read through the cache (0 when not caching); with a sliding
        window only the last window - 1 of them keep their keys and values."""
        return self._steps_read

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`start_caching` can succeed: none of the options the cache does not
        serve is on."""
        return not self._uncached_options()

    def _uncached_options(self) -> list[str]:
        """The options of the layer that the cache does not serve (PyTorch's, which has no
        cache): the appended bias and zero keys and values, and keys and values of their own width."""
        options = [name for name in ("add_bias_kv", "add_zero_attn") if getattr(self, name)]
        return options + [f"{name}={getattr(self, name)}" for name in ("kdim", "vdim")
                          if getattr(self, name) != self.embed_dim]

    def start_caching(self) -> None:
        """Start an empty key/value cache: the next call reads the first steps of a sequence,
        each later call its next steps (see the class docstring). Refused for a layer with
        ``add_bias_kv``, ``add_zero_attn``, ``kdim`` or ``vdim``."""
        options = self._uncached_options()
        if options:
            raise ValueError(f"{self._label()}: cannot cache keys and values with {', '.join(options)}; the cache "
                             "serves causal self-attention over the projected steps alone")
        if self._caching:
            raise ValueError(f"{self._label()}: start_caching while already caching keys and values; "
                             "stop_caching first")
        self._caching = True
        self._clear_cache()

    def stop_caching(self) -> None:
        """Drop the cached keys and values; calls are independent again."""
        self._caching = False
        self._clear_cache()

    def _clear_cache(self) -> None:
        self._cached_keys = self._cached_values = None
        self._key_store = self._value_store = None
        self._steps_read = 0

    def reorder_cache(self, rows) -> None:
        """Keep the cached rows ``rows`` (R,), in that order: row i of the cache becomes the
        old row ``rows[i]``, so that the next call continues R sequences (rows may repeat, as
        the parents of a beam's hypotheses do, or be left out). Refused when not caching."""
        if not self._caching:
            raise ValueError(f"{self._label()}: reorder_cache needs a key/value cache, and the layer is not caching; "
                             "call start_caching (or use lamina.text.caching_keys_values) first")
        if self._cached_keys is None:                   # nothing read yet: no rows to reorder
            cache_rows(self, rows, None)
            return
        index = cache_rows(self, rows, self._cached_keys.shape[0])
        if self.__dict__.get("attention_sinks") is not None:     # lamina.text.attention_sinks keeps its own
            self.attention_sinks.reorder(index)
        if self._key_store is not None and len(index) == self._key_store.shape[0]:
            held = self._cached_keys.shape[2]         # the same number of rows: reordered in the stores
            for store in (self._key_store, self._value_store):
                store[:, :, :held] = store[index, :, :held]
            return
        self._key_store = self._value_store = None
        self._cached_keys = self._cached_keys[index]
        self._cached_values = self._cached_values[index]

    def _cached_inputs(self, query, key, value, mask, key_mask, causal: bool, keys_values, positions=None):
        """(Q, K, V, mask) of a call that continues the cached sequence: Q of the t new steps,
        K and V of the c cached and the t new ones, and keep (t, c + t) with
        keep[i, t'] = (t' <= c + i), the causal mask shifted by the c steps held (also
        limited to the window, and turned into the ALiBi bias, when the layer has them). A
        ``mask`` (t, c + t), (N, t, c + t) or (N, h, t, c + t), boolean or additive, replaces
        the shifted causal one (a tree of candidate continuations read in one call)."""
        label = self._label()
        if key is not None or value is not None or keys_values is not None:
            raise ValueError(f"{label}: cannot cache keys and values for cross-attention (a key, value or "
                             "keys_values was passed); the cache serves causal self-attention only")
        if not causal:
            raise ValueError(f"{label}: cannot cache keys and values for non-causal self-attention: every step "
                             "would see later steps, which change with each new token; call it with causal=True")
        if mask is not None and (self.window is not None or self.alibi):
            raise ValueError(f"{label}: while caching, a mask over the cached and new steps does not combine with "
                             "a sliding window or ALiBi (both assume the steps follow one another)")
        if self.training or is_grad_enabled():
            raise ValueError(f"{label}: the key/value cache is for evaluation only; call eval() on the model "
                             "and run it under lamina.no_grad()")
        query = as_tensor(query)
        self._check_shape(query.shape, "query", query)
        q, k, v = self._project_step(query, positions)
        xp = backend.xp
        held = 0 if self._cached_keys is None else int(self._cached_keys.shape[2])
        if self._cached_keys is not None and self._cached_keys.shape[0] != query.shape[0]:
            raise ShapeError(f"{label}: a query of batch size {query.shape[0]} continues a cached sequence "
                             f"of batch size {self._cached_keys.shape[0]}; stop_caching to start another")
        t = query.shape[1]
        if mask is not None:                # e.g. a tree of candidates: each sees the cache and its ancestors
            full = self._mask(mask, None, query.shape[0], t, held + t)
        k, v = self._extend_cache(k, v)
        self.__dict__["_steps_read"] += t
        if mask is None:
            # one new step sees every key held (nothing to mask); t steps see the causal pattern shifted by held
            keep = None if t == 1 else xp.arange(k.shape[2])[None, :] <= (held + xp.arange(t))[:, None]
            full, _ = self._positional_mask(keep, True, t, k.shape[2], offset=held)
        if key_mask is not None:
            full = self._cached_key_mask(full, key_mask, query.shape[0], k.shape[2])
        return Tensor._wrap(q), Tensor._wrap(k), Tensor._wrap(v), full

    def _extend_cache(self, k, v) -> tuple:
        """K and V (N, g, c + t, d) of the c cached steps and the t new ones ``k``, ``v``, the
        cache updated. Without a window the cache is the first c steps of two stores that
        grow by doubling, so a step copies its own keys and values only, not the whole cache
        (the same values as concatenating); a window keeps the last window - 1 steps."""
        xp = backend.xp
        cached = self._cached_keys
        if self.window is not None:
            if cached is not None:
                k = xp.concatenate([cached, k], axis=2)
                v = xp.concatenate([self._cached_values, v], axis=2)
            start = max(k.shape[2] - (self.window - 1), 0)
            self._cached_keys, self._cached_values = k[:, :, start:], v[:, :, start:]
            return k, v
        held = 0 if cached is None else cached.shape[2]
        total = held + k.shape[2]
        store = self._key_store
        if store is None or store.shape[2] < total or store.shape[0] != k.shape[0] or store.dtype != k.dtype:
            n, g, _, d = k.shape
            stores = []
            for old, new in ((cached, k), (self._cached_values, v)):
                grown = xp.empty((n, g, max(16, 2 * total), d), dtype=new.dtype)
                if held:
                    grown[:, :, :held] = old
                stores.append(grown)
            self._key_store, self._value_store = store, _ = stores
        store[:, :, held:total] = k
        self._value_store[:, :, held:total] = v
        keys, values = store[:, :, :total], self._value_store[:, :, :total]
        # plain attributes, set each step without Module.__setattr__'s checks for weights and sub-layers
        self.__dict__.update(_cached_keys=keys, _cached_values=values)
        return keys, values

    def _cached_key_mask(self, full, key_mask, n: int, t_k: int):
        """``full`` with the keys that ``key_mask`` (N, S), False on padding, marks out masked
        too; S = the steps read so far (this call's included), of which the cache attends over
        the last ``t_k``."""
        km = mask_array(key_mask)
        steps = self._steps_read
        if km.dtype != bool or km.shape != (n, steps):
            raise ShapeError(f"{self._label()}: while caching, key_mask must be boolean of shape ({n}, {steps}) "
                             f"(every step read so far, this call's included; True = a real key), got {km.dtype} "
                             f"{tuple(km.shape)}")
        km = km[:, None, None, steps - t_k:]
        if full is None:
            return km
        if full.dtype == bool:
            return full & km
        return backend.xp.where(km, full, -backend.xp.inf).astype(full.dtype)

    def crop_cache(self, steps: int) -> None:
        """Forget every cached step after the first ``steps``: the next call continues the
        sequence from step ``steps`` (as a rejected draft of speculative decoding needs).
        Refused when not caching, for more steps than read, and for a sliding-window layer
        whose dropped keys the shorter sequence would need again."""
        label = self._label()
        if not self._caching:
            raise ValueError(f"{label}: crop_cache needs a key/value cache, and the layer is not caching")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= self._steps_read:
            raise ValueError(f"{label}: crop_cache keeps 0 .. {self._steps_read} steps (those read), got {steps!r}")
        if self._cached_keys is None or steps == self._steps_read:
            return
        held = int(self._cached_keys.shape[2])
        dropped = self._steps_read - steps
        kept = held - dropped
        if self.window is not None and kept < min(steps, self.window - 1):
            raise ValueError(f"{label}: crop_cache to {steps} steps needs keys the sliding window "
                             f"(window={self.window}) already dropped")
        self._cached_keys = self._cached_keys[:, :, :kept]
        self._cached_values = self._cached_values[:, :, :kept]
        self._steps_read = steps

    def keep_cache_steps(self, steps) -> None:
        """Keep only the cached steps ``steps`` (increasing indices among the steps read), in
        that order: the next call continues the sequence they make (the accepted path of a
        tree of candidates read in one call, :func:`lamina.models.medusa_generate`). Refused
        when not caching and for a sliding-window layer."""
        label = self._label()
        if not self._caching:
            raise ValueError(f"{label}: keep_cache_steps needs a key/value cache, and the layer is not caching")
        if self.window is not None:
            raise ValueError(f"{label}: keep_cache_steps is not available with a sliding window "
                             f"(window={self.window})")
        index = numpy.asarray(steps)
        if (index.ndim != 1 or (index.size and index.dtype.kind not in "iu")
                or (index.size and (index[0] < 0 or index[-1] >= self._steps_read))
                or numpy.any(numpy.diff(index) <= 0)):
            raise ValueError(f"{label}: keep_cache_steps takes increasing step indices in [0, {self._steps_read}), "
                             f"got {steps!r}")
        if self._cached_keys is not None:
            xp = backend.xp
            keys, values = self._cached_keys[:, :, xp.asarray(index)], self._cached_values[:, :, xp.asarray(index)]
            if self._key_store is not None:     # written back into the stores, which keep their room to grow
                self._key_store[:, :, :len(index)] = keys
                self._value_store[:, :, :len(index)] = values
                keys, values = self._key_store[:, :, :len(index)], self._value_store[:, :, :len(index)]
            self.__dict__.update(_cached_keys=keys, _cached_values=values)
        self._steps_read = len(index)
