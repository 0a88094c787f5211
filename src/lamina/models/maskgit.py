"""MaskGIT (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer"): a
bidirectional transformer over sequences of discrete tokens (e.g. the codes of a VQ-VAE)
with a [MASK] token, trained to fill in masked tokens and sampled by iterative parallel
decoding.

Training (:meth:`MaskGIT.loss`): for each sequence of L tokens draw u ~ U(0, 1), mask
ceil(gamma(u) L) random positions (at least one), gamma(r) = cos(pi r / 2) the cosine mask
schedule (:func:`cosine_mask_schedule`), and take the cross-entropy of the predicted tokens
at the masked positions only (their mean over the batch).

Decoding (:meth:`MaskGIT.generate`) in T steps from a sequence whose M_0 unknown tokens are
[MASK] (all of them by default). At step t = 1 .. T:

1. the net predicts every position; each unknown one draws a token from softmax(logits /
   temperature) (argmax for temperature 0); known tokens stay as they are;
2. confidence = log p(drawn token) + tau (1 - t / T) g, g ~ Gumbel(0, 1), tau the
   ``choice_temperature`` (annealed to 0); known tokens get +inf;
3. the M_t = max(1, min(M_{t-1} - 1, floor(M_0 gamma(t / T)))) least confident positions are
   masked again (M_T = 0: after the last step every token is kept)
   (:func:`mask_schedule_counts`).

A token kept once is never changed again.

Example::

    model = MaskGIT(vocab_size=16, seq_len=16, d_model=64, num_heads=4, num_layers=2)
    train_maskgit(model, tokens, epochs=20, batch_size=64, lr=1e-3)
    samples = model.generate(8, steps=8)                       # (8, 16) token ids
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.schedulers.base import rng_from
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import describe, positive_int, register_layer
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import PositionEmbedding, TransformerEncoderLayer
from lamina.nn.transformer_model import TransformerEncoder

__all__ = ["MaskGIT", "cosine_mask_schedule", "mask_schedule_counts", "masked_token_loss"]

IGNORED = -100


def cosine_mask_schedule(r) -> np.ndarray:
    """gamma(r) = cos(pi r / 2): the fraction of tokens masked at progress r in [0, 1]."""
    r = np.asarray(r, dtype=np.float64)
    if np.any((r < 0) | (r > 1)):
        raise ValueError(f"cosine_mask_schedule: r must lie in [0, 1], got {describe(r)}")
    return np.cos(0.5 * math.pi * r)


def mask_schedule_counts(num_masked: int, steps: int) -> np.ndarray:
    """The numbers of tokens still masked after each of ``steps`` decoding steps, starting from
    ``num_masked`` (module notes): M_t = max(1, min(M_{t-1} - 1, floor(M_0 gamma(t / T)))) for
    t < T (never more than M_{t-1}), and M_T = 0."""
    if isinstance(num_masked, bool) or not isinstance(num_masked, numbers.Integral) or num_masked < 0:
        raise ValueError(f"mask_schedule_counts: num_masked must be an int >= 0, got {num_masked!r}")
    steps = positive_int(steps, "mask_schedule_counts: steps")
    counts, remaining = [], int(num_masked)
    for t in range(1, steps + 1):
        if t == steps:
            remaining = 0
        else:
            wanted = math.floor(num_masked * float(cosine_mask_schedule(t / steps)))
            remaining = min(remaining, max(1, min(remaining - 1, wanted)))
        counts.append(remaining)
    return np.array(counts, dtype=np.int64)


def masked_token_loss(logits, tokens, mask) -> Tensor:
    """The mean cross-entropy of ``logits`` (N, L, V) for the true ``tokens`` (N, L) over the
    positions where ``mask`` (N, L, bool) is True; the other positions add nothing."""
    logits = logits if isinstance(logits, Tensor) else Tensor._wrap(backend.xp.asarray(logits))
    tokens, mask = np.asarray(tokens), np.asarray(mask, dtype=bool)
    if logits.ndim != 3 or tokens.shape != logits.shape[:2] or mask.shape != tokens.shape:
        raise ShapeError(f"masked_token_loss: need logits (N, L, V) with tokens and mask (N, L), got logits of "
                         f"{describe(logits)}, tokens of {describe(tokens)}, mask of {describe(mask)}")
    if not mask.any():
        raise ValueError("masked_token_loss: the mask selects no position")
    targets = np.where(mask, tokens, IGNORED).astype(np.int64)
    return F.cross_entropy(logits, targets, ignore_index=IGNORED)


@register_layer
class MaskGIT(Module):
    """A bidirectional transformer over sequences of ``seq_len`` tokens from a vocabulary of
    ``vocab_size`` (the id ``vocab_size`` is [MASK], :attr:`mask_id`): token embeddings plus
    learned positions, ``num_layers`` pre-norm :class:`~lamina.nn.TransformerEncoderLayer`
    (``d_model``, ``num_heads``, ``dim_feedforward`` = 4 d_model by default, GELU,
    ``dropout``), a final LayerNorm and a Dense head to ``vocab_size`` logits. Calling it on
    token ids (N, seq_len) gives logits (N, seq_len, vocab_size)."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 64, num_heads: int = 4, num_layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "MaskGIT: vocab_size")
        self.seq_len = positive_int(seq_len, "MaskGIT: seq_len")
        self.d_model = positive_int(d_model, "MaskGIT: d_model")
        self.num_layers = positive_int(num_layers, "MaskGIT: num_layers")
        self.num_heads, self.dropout = num_heads, dropout
        self.dim_feedforward = feedforward = positive_int(dim_feedforward or 4 * self.d_model,
                                                          "MaskGIT: dim_feedforward")
        self.token_embedding = Embedding(self.vocab_size + 1, self.d_model, name="token_embedding")
        self.positions = PositionEmbedding(self.seq_len, name="positions")
        layer = TransformerEncoderLayer(self.d_model, num_heads, feedforward, dropout=dropout, activation="gelu",
                                        norm_first=True)
        self.encoder = TransformerEncoder(layer, self.num_layers, name="encoder")
        self.norm = LayerNorm(-1, name="norm")
        self.head = Dense(self.vocab_size, name="head")

    @property
    def mask_id(self) -> int:
        """The id of the [MASK] token (``vocab_size``)."""
        return self.vocab_size

    def _tokens(self, tokens, who: str, allow_mask: bool) -> np.ndarray:
        ids = np.asarray(backend.to_numpy(tokens.data) if isinstance(tokens, Tensor) else tokens)
        top = self.vocab_size if allow_mask else self.vocab_size - 1
        if ids.ndim != 2 or ids.shape[1] != self.seq_len or ids.dtype.kind not in "iu" or (
                ids.size and (ids.min() < 0 or ids.max() > top)):
            what = f"[0, {top}] ({self.mask_id}: [MASK])" if allow_mask else f"[0, {top}]"
            raise ShapeError(f"{self._label()}.{who}: tokens must be integer ids (N, {self.seq_len}) in {what}, got "
                             f"{describe(ids)}")
        return ids.astype(np.int64)

    def forward(self, tokens) -> Tensor:
        ids = self._tokens(tokens, "forward", allow_mask=True)
        h = self.positions(self.token_embedding(ids))
        return self.head(self.norm(self.encoder(h)))

    # -- training ------------------------------------------------------------------------
    def random_mask(self, n: int, generator=None) -> np.ndarray:
        """A (n, seq_len) boolean mask: per row ceil(gamma(u) L) random positions (at least one),
        u ~ U(0, 1) (module notes)."""
        rng = rng_from(generator)
        counts = np.clip(np.ceil(cosine_mask_schedule(rng.random(n)) * self.seq_len), 1, self.seq_len)
        ranks = np.argsort(np.argsort(rng.random((n, self.seq_len)), axis=1), axis=1)
        return ranks < counts[:, None]

    def loss(self, tokens, mask=None, generator=None) -> Tensor:
        """The cross-entropy over the masked positions (module notes) of the batch ``tokens``
        (N, seq_len); ``mask`` (N, seq_len, True = masked) is drawn by :meth:`random_mask` unless
        given."""
        ids = self._tokens(tokens, "loss", allow_mask=False)
        mask = self.random_mask(len(ids), generator) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != ids.shape:
            raise ShapeError(f"{self._label()}.loss: mask of shape {mask.shape} does not match tokens {ids.shape}")
        logits = self(np.where(mask, self.mask_id, ids))
        return masked_token_loss(logits, ids, mask)

    # -- decoding ------------------------------------------------------------------------
    def generate(self, n: int | None = None, steps: int = 8, temperature: float = 1.0,
                 choice_temperature: float = 4.5, start=None, generator=None, return_history: bool = False):
        """Token ids (n, seq_len) by iterative parallel decoding (module notes) in ``steps``
        steps. ``start``: (N, seq_len) ids with [MASK] (:attr:`mask_id`) where tokens are to be
        generated (default: n rows all masked). ``temperature`` scales the logits the tokens are
        drawn from (0: argmax); ``choice_temperature`` the Gumbel noise of the confidences.
        ``generator``: a NumPy Generator or seed (lamina's by default). With
        ``return_history``, also the (steps + 1, N, seq_len) sequences before and after each
        step."""
        who = f"{self._label()}.generate"
        steps = positive_int(steps, f"{who}: steps")
        for value, what in ((temperature, "temperature"), (choice_temperature, "choice_temperature")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ValueError(f"{who}: {what} must be a number >= 0, got {value!r}")
        if start is None:
            if n is None:
                raise ValueError(f"{who}: give the number of samples n or the start tokens")
            start = np.full((positive_int(n, f"{who}: n"), self.seq_len), self.mask_id, dtype=np.int64)
        tokens = self._tokens(start, "generate", allow_mask=True).copy()
        rng = rng_from(generator)
        unknown_at_start = (tokens == self.mask_id).sum(axis=1)
        schedules = [mask_schedule_counts(int(m), steps) for m in unknown_at_start]
        history = [tokens.copy()]
        with no_grad(), evaluation_mode(self):
            for step in range(steps):
                unknown = tokens == self.mask_id
                logits = np.asarray(backend.to_numpy(self(tokens).data), dtype=np.float64)
                log_probs = logits - logits.max(axis=-1, keepdims=True)
                log_probs -= np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
                drawn = self._draw(log_probs, temperature, rng)
                drawn = np.where(unknown, drawn, tokens)
                chosen = np.take_along_axis(log_probs, drawn[..., None], axis=-1)[..., 0]
                gumbel = -np.log(-np.log(rng.uniform(np.finfo(np.float64).tiny, 1.0, chosen.shape)))
                confidence = chosen + choice_temperature * (1.0 - (step + 1) / steps) * gumbel
                confidence = np.where(unknown, confidence, np.inf)
                order = np.argsort(confidence, axis=1, kind="stable")
                masked_again = np.zeros_like(unknown)
                for row, schedule in enumerate(schedules):
                    masked_again[row, order[row, :schedule[step]]] = True
                tokens = np.where(masked_again, self.mask_id, drawn)
                history.append(tokens.copy())
        return (tokens, np.stack(history)) if return_history else tokens

    @staticmethod
    def _draw(log_probs: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """One token per position from softmax(log_probs / temperature) (argmax for 0)."""
        if temperature == 0:
            return log_probs.argmax(axis=-1)
        scaled = log_probs / temperature
        probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
        cumulative = np.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)
        draws = rng.random(cumulative.shape[:-1] + (1,))
        return np.minimum((cumulative < draws).sum(axis=-1), log_probs.shape[-1] - 1)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "d_model": self.d_model,
                "num_heads": self.num_heads, "num_layers": self.num_layers, "dim_feedforward": self.dim_feedforward,
                "dropout": self.dropout, "name": self.name}

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, seq_len={self.seq_len}, d_model={self.d_model}"
