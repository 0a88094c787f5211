"""MNRL over a batch larger than memory allows, by gradient caching (Gao et al. 2021, GradCache),
as sentence-transformers' ``CachedMultipleNegativesRankingLoss``.

The loss needs every embedding of the batch at once (each is a negative for the others), but
its gradient reaches the encoder only through the embeddings. So: (1) embed the batch in
mini-batches without recording the graph; (2) compute the loss and its gradient G = dL/dE on
the embeddings alone; (3) embed each mini-batch again, recording it, and back-propagate its
rows of G. The parameters' gradients are those of the whole batch at once, while only one
mini-batch's graph is held. The encoder must give the same embeddings both times (dropout
off, or its random state repeated).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.losses_sentence import multiple_negatives_ranking_loss
from lamina.functional.shape import concat

__all__ = ["cached_mnrl_backward"]


def _embed(encoder, items: Sequence) -> Tensor:
    return encoder(*encoder.tokenize(items))


def cached_mnrl_backward(encoder, anchors: Sequence, positives: Sequence, mini_batch_size: int = 32,
                         scale: float = 20.0, negatives: Sequence[Sequence] = ()) -> float:
    """Accumulate into ``encoder``'s parameters the gradient of
    :func:`lamina.functional.multiple_negatives_ranking_loss` over the whole batch
    (``anchors``, ``positives`` and any ``negatives`` columns: texts or id lists, as
    ``encoder.tokenize`` takes them), computing ``mini_batch_size`` rows at a time; returns
    the loss. ``encoder`` is a :class:`lamina.text.embeddings.SentenceEncoder` (anything with
    ``tokenize`` and a call on its output). Call the optimizer's ``step`` afterwards."""
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
        raise ValueError(f"cached_mnrl_backward: mini_batch_size must be an int >= 1, got {mini_batch_size!r}")
    columns = [list(anchors), list(positives), *(list(n) for n in negatives)]
    if len(columns[0]) != len(columns[1]):
        raise ValueError(f"cached_mnrl_backward: {len(columns[0])} anchors but {len(columns[1])} positives")

    def chunks(items):
        return [items[i:i + mini_batch_size] for i in range(0, len(items), mini_batch_size)]

    with no_grad():
        cached = [concat([_embed(encoder, part) for part in chunks(items)], axis=0) for items in columns]
    leaves = [Tensor(e.data, dtype=e.dtype, requires_grad=True) for e in cached]
    loss = multiple_negatives_ranking_loss(leaves[0], leaves[1], leaves[2:] or None, scale=scale)
    loss.backward()
    for items, leaf in zip(columns, leaves):
        for k, part in enumerate(chunks(items)):
            rows = leaf.grad[k * mini_batch_size:k * mini_batch_size + len(part)]
            _embed(encoder, part).backward(backend.xp.asarray(rows))
    return float(loss.item())
