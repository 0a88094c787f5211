"""Keys and values of the attention layers of an encoder-decoder model (T5, Whisper) kept
in a dict between decoding steps."""

from __future__ import annotations

from collections.abc import Callable

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.module import as_tensor

__all__ = ["cached_keys_values"]


def cached_keys_values(project: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, key_value,
                       cache: dict | None, cache_key: str) -> tuple[Tensor, Tensor]:
    """The keys and values (N, heads, Tk, d) one attention layer attends to.

    ``project(source)`` makes them from the queries' input ``x`` (self-attention,
    ``key_value`` None) or from the encoder output ``key_value`` (cross-attention). With a
    ``cache`` dict, entry ``cache_key`` keeps them: cross-attention projects the encoder output
    once and reuses it; self-attention appends the new steps to the cached ones (axis 2)."""
    if key_value is not None and cache is not None and cache_key in cache:
        return cache[cache_key]
    k, v = project(x if key_value is None else as_tensor(key_value))
    if cache is not None and key_value is None and cache_key in cache:
        old_k, old_v = cache[cache_key]
        k, v = F.concat([old_k, k], axis=2), F.concat([old_v, v], axis=2)
    if cache is not None:
        cache[cache_key] = (k, v)
    return k, v
