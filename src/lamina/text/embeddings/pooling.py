"""From token vectors to one sentence vector: the pooling modes of sentence-transformers.

A transformer gives hidden states h (N, T, H) and an attention mask m (N, T), 1 on real
tokens and 0 on padding (on either side). :class:`SentencePooling` reduces the time axis:

- ``'mean'``: sum_t m_t h_t / max(sum_t m_t, 1e-9);
- ``'max'``: max_t of h_t with padded positions set to -1e9;
- ``'cls'``: h_0, the first token;
- ``'weightedmean'``: as mean with weights m_t (t + 1), later tokens counting more;
- ``'lasttoken'``: h at the last real token (the last t with m_t = 1; position 0 if none),
  right or left padding alike;
- ``'mean_sqrt_len'``: sum_t m_t h_t / sqrt(max(sum_t m_t, 1e-9)).

Both classes are plain callables of tensors (no parameters), recorded on the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.shape import concat, getitem
from lamina.functional.similarity import normalize

__all__ = ["POOLING_MODES", "Normalize", "SentencePooling"]

POOLING_MODES = ("cls", "lasttoken", "max", "mean", "mean_sqrt_len", "weightedmean")


class SentencePooling:
    """Pool hidden states (N, T, H) under an attention mask (N, T) into (N, H * len(modes)).

    ``mode``: one of :data:`POOLING_MODES` or a sequence of them, whose results are
    concatenated in sentence-transformers' order (cls, max, mean, mean_sqrt_len,
    weightedmean, lasttoken). ``include_prompt=False`` masks the first ``prompt_length``
    tokens (an instruction prefix) out of the pooling, as sentence-transformers' ``Pooling``.
    """

    def __init__(self, mode: str | Sequence[str] = "mean", include_prompt: bool = True):
        modes = [mode] if isinstance(mode, str) else list(mode)
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown or not modes:
            raise ValueError(f"SentencePooling: unknown pooling mode {unknown[0] if unknown else mode!r}; "
                             f"allowed: {', '.join(POOLING_MODES)}")
        order = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
        self.modes = [m for m in order if m in modes]
        self.include_prompt = bool(include_prompt)

    def output_dim(self, hidden_size: int) -> int:
        return hidden_size * len(self.modes)

    def __call__(self, hidden, attention_mask=None, prompt_length: int | None = None) -> Tensor:
        xp = backend.xp
        hidden = hidden if isinstance(hidden, Tensor) else Tensor(hidden)
        if hidden.ndim != 3:
            raise ShapeError(f"SentencePooling: hidden states must have shape (N, T, H), got shape {hidden.shape}")
        n, t = hidden.shape[:2]
        if attention_mask is None:
            mask = xp.ones((n, t), dtype=hidden.dtype)
        else:
            mask = xp.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
            if mask.shape != (n, t):
                raise ShapeError(f"SentencePooling: attention_mask must have shape {(n, t)} to match hidden states "
                                 f"{hidden.shape}, got shape {mask.shape}")
            mask = mask.astype(hidden.dtype)
        if not self.include_prompt and prompt_length:
            mask = mask.copy()
            mask[:, :prompt_length] = 0
        pooled = [self._pool(mode, hidden, mask) for mode in self.modes]
        return pooled[0] if len(pooled) == 1 else concat(pooled, axis=-1)

    @staticmethod
    def _pool(mode: str, hidden: Tensor, mask) -> Tensor:
        xp = backend.xp
        n, t = mask.shape
        if mode == "cls":
            return getitem(hidden, (slice(None), 0))
        if mode == "max":
            filler = xp.where(mask[..., None] > 0, 0.0, -1e9).astype(hidden.dtype)
            masked = hidden * mask[..., None] + filler
            return masked.max(axis=1)
        if mode == "lasttoken":
            real = mask > 0
            last = t - 1 - xp.argmax(real[:, ::-1], axis=1)
            last = xp.where(real.any(axis=1), last, 0)
            return getitem(hidden, (xp.arange(n), last))
        weights = mask * (xp.arange(1, t + 1, dtype=hidden.dtype)[None, :] if mode == "weightedmean" else 1)
        total = (hidden * weights[..., None]).sum(axis=1)
        count = xp.maximum(weights.sum(axis=1, keepdims=True), hidden.dtype.type(1e-9))
        return total / (xp.sqrt(count) if mode == "mean_sqrt_len" else count)

    def __repr__(self) -> str:
        return f"SentencePooling(mode={self.modes}, include_prompt={self.include_prompt})"


class Normalize:
    """Rows scaled to unit L2 norm, x / max(||x||, 1e-12) (sentence-transformers' ``Normalize``)."""

    def __call__(self, embeddings) -> Tensor:
        return normalize(embeddings, axis=-1)

    def __repr__(self) -> str:
        return "Normalize()"
