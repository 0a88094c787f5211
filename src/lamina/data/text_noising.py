"""The document corruptions BART is pre-trained to undo (Lewis et al., 2020, section 2.2), on
one document given as a 1-D array of token ids. Every function is seeded: ``seed`` an int,
a ``numpy.random.Generator`` or None (fresh draws).

* :func:`token_masking`: round(ratio n) tokens, drawn without replacement, become ``mask_id``.
* :func:`token_deletion`: round(ratio n) tokens, drawn without replacement, are removed.
* :func:`text_infilling`: spans with lengths drawn from Poisson(``poisson_lambda``) (3 in the
  paper) are each replaced by ONE ``mask_id``, until round(ratio n) tokens are covered; a
  zero-length span inserts a mask. Spans neither overlap nor touch: a kept token always lies
  between two masks (:func:`infill_spans` does the replacement for given spans).
* :func:`sentence_permutation`: the sentences (each ending after a token of ``end_ids``; a
  trailing fragment is one more) are shuffled.
* :func:`document_rotation`: a token is drawn uniformly and the document rotated to start
  with it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["document_rotation", "infill_spans", "sentence_permutation", "text_infilling", "token_deletion",
           "token_masking"]


def _generator(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _tokens(tokens, who: str) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"{who}: expected a 1-D array of integer token ids, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    return array.astype(np.int64)


def _ratio(ratio: float, who: str) -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{who}: ratio must lie in [0, 1], got {ratio!r}")
    return float(ratio)


def token_masking(tokens, mask_id: int, ratio: float = 0.15, seed=None) -> np.ndarray:
    """``tokens`` with round(``ratio`` n) positions, drawn without replacement, set to ``mask_id``."""
    tokens = _tokens(tokens, "token_masking").copy()
    count = round(_ratio(ratio, "token_masking") * tokens.size)
    tokens[_generator(seed).choice(tokens.size, size=count, replace=False)] = mask_id
    return tokens


def token_deletion(tokens, ratio: float = 0.15, seed=None) -> np.ndarray:
    """``tokens`` without round(``ratio`` n) positions drawn without replacement (order kept)."""
    tokens = _tokens(tokens, "token_deletion")
    count = round(_ratio(ratio, "token_deletion") * tokens.size)
    keep = np.ones(tokens.size, dtype=bool)
    keep[_generator(seed).choice(tokens.size, size=count, replace=False)] = False
    return tokens[keep]


def infill_spans(tokens, spans, mask_id: int) -> np.ndarray:
    """``tokens`` with each span ``(start, length)`` replaced by one ``mask_id`` (a length of 0
    inserts a mask before ``start``). Spans must be sorted and must not overlap."""
    tokens = _tokens(tokens, "infill_spans")
    pieces, position = [], 0
    for start, length in spans:
        if start < position or length < 0 or start + length > tokens.size:
            raise ValueError(f"infill_spans: span ({start}, {length}) overlaps an earlier one, is negative or "
                             f"runs past the {tokens.size} tokens; spans must be sorted and disjoint")
        pieces.extend([tokens[position:start], np.asarray([mask_id])])
        position = start + length
    pieces.append(tokens[position:])
    return np.concatenate(pieces).astype(np.int64)


def _span_lengths(count: int, poisson_lambda: float, rng: np.random.Generator) -> list[int]:
    """Poisson lengths drawn until they cover ``count`` tokens, the last cut to fit."""
    lengths, covered = [], 0
    while covered < count:
        length = min(int(rng.poisson(poisson_lambda)), count - covered)
        lengths.append(length)
        covered += length
    return lengths


def text_infilling(tokens, mask_id: int, ratio: float = 0.3, poisson_lambda: float = 3.0, seed=None,
                   return_spans: bool = False):
    """Text infilling: spans of Poisson(``poisson_lambda``) lengths covering round(``ratio`` n)
    tokens, each replaced by one ``mask_id`` (zero-length spans insert one). The spans are put
    in distinct gaps between the tokens left, in random places (as many gaps as there are
    tokens left, plus one, bound the number of spans). ``return_spans``: also the sorted list
    of ``(start, length)`` spans of the original tokens."""
    who = "text_infilling"
    tokens = _tokens(tokens, who)
    if not poisson_lambda >= 0:
        raise ValueError(f"{who}: poisson_lambda must be >= 0, got {poisson_lambda!r}")
    rng = _generator(seed)
    count = round(_ratio(ratio, who) * tokens.size)
    lengths = _span_lengths(count, poisson_lambda, rng)
    kept = tokens.size - count
    lengths = lengths[:kept + 1]
    if sum(lengths) < count:                 # too many zero-length spans: the last one takes the rest
        lengths[-1] += count - sum(lengths)
    order = rng.permutation(len(lengths))
    gaps = np.sort(rng.choice(kept + 1, size=len(lengths), replace=False))
    spans, start, before = [], 0, 0
    for gap, length in zip(gaps, (lengths[k] for k in order)):
        start += int(gap) - before           # the kept tokens between the previous span and this one
        spans.append((start, int(length)))
        start += int(length)
        before = int(gap)
    corrupted = infill_spans(tokens, spans, mask_id)
    return (corrupted, spans) if return_spans else corrupted


def sentence_permutation(tokens, end_ids=(), seed=None) -> np.ndarray:
    """The sentences of ``tokens`` in a random order; a sentence ends after any token of
    ``end_ids`` (a full stop), and what follows the last one is a sentence too."""
    tokens = _tokens(tokens, "sentence_permutation")
    ends = np.flatnonzero(np.isin(tokens, np.asarray(list(end_ids), dtype=np.int64))) + 1
    sentences = [s for s in np.split(tokens, ends) if s.size]
    if len(sentences) < 2:
        return tokens.copy()
    order = _generator(seed).permutation(len(sentences))
    return np.concatenate([sentences[k] for k in order])


def document_rotation(tokens, seed=None) -> np.ndarray:
    """``tokens`` rotated to begin with a token drawn uniformly at random."""
    tokens = _tokens(tokens, "document_rotation")
    if tokens.size == 0:
        return tokens.copy()
    return np.roll(tokens, -int(_generator(seed).integers(tokens.size)))
