"""Keys and values of the attention layers of an encoder-decoder model (T5, BART, Whisper)
kept in a dict between decoding steps, and the projections into heads that BART's and
Whisper's attention layers share."""

from __future__ import annotations

from collections.abc import Callable

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.nn.module import Module, as_tensor

__all__ = ["HeadProjections", "cached_keys_values"]


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


class HeadProjections(Module):
    """Base of an attention layer with Dense projections ``q_proj``, ``k_proj``, ``v_proj``
    and ``out_proj`` (made by the subclass) and ``num_heads`` heads of ``head_dim`` values:
    builds the four on the input's shape, splits (N, T, d) into (N, heads, T, head_dim) and
    projects a source into the keys and values that :func:`cached_keys_values` keeps."""

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(layer, shape) for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj)])
        self.built = True

    def _heads(self, x: Tensor) -> Tensor:
        n, t = x.shape[0], x.shape[1]
        return F.transpose(F.reshape(x, n, t, self.num_heads, self.head_dim), 0, 2, 1, 3)

    def _keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
