"""The masks of :class:`~lamina.nn.MultiHeadAttention`: a call's ``mask`` and ``key_mask``
made one mask broadcastable to the scores (N, h, T_q, T_k), the sliding window and the ALiBi
bias folded into it, the keys and values of prefix tuning placed before the call's own, and
PyTorch's extra positions (``add_bias_kv``, ``add_zero_attn``) after them.
``_AttentionMasks`` is a base class of the layer (through its key/value cache,
:mod:`lamina.nn.multi_head_attention_cache`).

Masks are boolean with True = attend, or float, added to the scores.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.attention import mask_array


class _AttentionMasks:
    """The masks of a :class:`~lamina.nn.MultiHeadAttention` call (a base class of it, whose
    ``num_heads``, ``window`` and ``alibi`` they read)."""

    def _mask(self, mask, key_mask, n: int, t_q: int, t_k: int):
        """One mask broadcastable to the scores (N, h, T_q, T_k)."""
        m = mask_array(mask)
        if m is not None:
            if m.ndim == 3:
                m = m[:, None]
            if m.ndim not in (2, 4) or m.shape[-2:] != (t_q, t_k):
                raise ShapeError(f"{self._label()}: mask of shape {tuple(m.shape)}; expected ({t_q}, {t_k}), "
                                 f"({n}, {t_q}, {t_k}) or ({n}, {self.num_heads}, {t_q}, {t_k})")
        km = mask_array(key_mask)
        if km is None:
            return m
        if km.dtype != bool or km.shape != (n, t_k):
            raise ShapeError(f"{self._label()}: key_mask must be boolean of shape ({n}, {t_k}) (True = a real "
                             f"key), got {km.dtype} {tuple(km.shape)}")
        km = km[:, None, None, :]
        if m is None:
            return km
        if m.dtype == bool:
            return m & km
        return backend.xp.where(km, m, -backend.xp.inf).astype(m.dtype)

    def _positional_mask(self, full, causal: bool, t_q: int, t_k: int, offset: int = 0):
        """(mask, causal) with the sliding window and the ALiBi bias folded into ``full``
        for queries at positions offset + i and keys at j."""
        xp = backend.xp
        if self.window is not None:
            if not causal:
                raise ValueError(f"{self._label()}: a sliding window (window={self.window}) is causal; call the "
                                 "layer with causal=True")
            keep = F.sliding_window_mask(t_q, t_k, self.window, offset=offset).data
            full, causal = _keep_also(full, keep), False
        if self.alibi:
            bias = F.alibi_bias(self.num_heads, t_q, t_k, offset=offset).data
            if full is None:
                full = bias
            elif full.dtype == bool:
                full = xp.where(full, bias, -xp.inf).astype(bias.dtype)
            else:
                full = full + bias
        return full, causal

    def _attach_prefix(self, prefix, q, k, v, full, causal: bool):
        """(K, V, mask, causal) with the keys and values ``prefix`` = (P_k, P_v), each
        (N or 1, g, P, d), placed before the call's own (prefix tuning,
        :class:`lamina.nn.PrefixTuningLM`): every query sees all P of them, then the keys the
        mask lets it see among the call's own."""
        pk, pv = prefix
        n, t_q, t_k = q.shape[0], q.shape[2], k.shape[2]
        p = pk.shape[2]
        if self.alibi or self.window is not None:
            raise ValueError(f"{self._label()}: prefix keys and values do not combine with ALiBi or a sliding window")
        if pk.shape[0] != n:
            pk, pv = (F.broadcast_to(a, (n,) + tuple(a.shape[1:])) for a in (pk, pv))
        xp = backend.xp
        keep = xp.ones((t_q, p + t_k), dtype=bool)
        if causal:
            keep[:, p:] = xp.arange(t_k)[None, :] <= xp.arange(t_q)[:, None]
        if full is not None:
            pad = xp.ones(full.shape[:-1] + (p,), dtype=full.dtype) if full.dtype == bool else \
                xp.zeros(full.shape[:-1] + (p,), dtype=full.dtype)
            full = xp.concatenate([pad, xp.broadcast_to(full, full.shape[:-1] + (t_k,))], axis=-1)
        return F.concat([pk, k], axis=2), F.concat([pv, v], axis=2), _keep_also(full, keep), False

    def _append_keys_values(self, q, k, v, full, causal: bool):
        """(K, V, mask, causal) with PyTorch's extra positions after the T_k keys and values
        (N, g, T_k, d): K' = [K; b_k; 0], V' = [V; b_v; 0], the learned ``bias_k``/``bias_v``
        when ``add_bias_kv`` and the zeros when ``add_zero_attn``. The causal pattern (over
        the T_k keys) is folded into the mask, and the mask gets an allowed column per extra
        position: every query sees them (as PyTorch's padded ``attn_mask`` and
        ``key_padding_mask``), so a query whose keys are all masked still attends somewhere."""
        xp = backend.xp
        n, g, t_k, d = k.shape
        keys, values = [k], [v]
        if self.add_bias_kv:
            for parts, name in ((keys, "bias_k"), (values, "bias_v")):
                parts.append(F.broadcast_to(F.reshape(getattr(self, name), 1, g, 1, d), (n, g, 1, d)))
        if self.add_zero_attn:
            zero = xp.zeros((n, g, 1, d), dtype=k.dtype)
            keys.append(Tensor._wrap(zero))
            values.append(Tensor._wrap(zero))
        extra = len(keys) - 1
        if causal:
            full = _keep_also(full, xp.arange(t_k)[None, :] <= xp.arange(q.shape[2])[:, None])
        if full is not None:
            shape = full.shape[:-1] + (extra,)
            pad = xp.ones(shape, dtype=bool) if full.dtype == bool else xp.zeros(shape, dtype=full.dtype)
            full = xp.concatenate([full, pad], axis=-1)
        return F.concat(keys, axis=2), F.concat(values, axis=2), full, False


def _keep_also(full, keep):
    """The mask ``full`` (None, boolean or additive) also hiding the keys ``keep`` leaves out."""
    if full is None:
        return keep
    if full.dtype == bool:
        return full & keep
    return backend.xp.where(keep, full, -backend.xp.inf).astype(full.dtype)
