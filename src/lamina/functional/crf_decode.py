"""The best tag paths of a linear-chain CRF (see :mod:`lamina.functional.crf` for the score s(y)).

The Viterbi recursion replaces the forward algorithm's logsumexp by a max and remembers the
argmax:

    delta_1 = start + E[1],   delta_t[j] = E[t, j] + max_i (delta_{t-1}[i] + A[i, j]),

and the best path is read back from argmax_j (delta_L[j] + end[j]). For the n best paths
(list Viterbi) each tag keeps its n best partial scores: the n best paths ending in tag j at
step t extend some of the n best paths ending in each tag at step t - 1, so delta_t[j] holds
the n best of the K n candidates max over (i, r) of delta_{t-1}[i, r] + A[i, j], with a back
pointer to (i, r) for each.

Arrays are time first: emissions (T, N, K), mask (T, N) on a prefix of each column. A padded
step keeps delta and points each (tag, rank) back to itself, so reading back through it
repeats the last real tag; the paths are cut to each row's length.
"""

from __future__ import annotations

from lamina import backend

__all__ = ["crf_nbest_paths"]


def crf_nbest_paths(emissions, transitions, start, end, mask, nbest: int = 1):
    """The ``nbest`` highest-scoring tag paths of each row, best first: a list (N) of lists of
    (path, score), each path a list of the row's real-step tags. Rows with fewer than
    ``nbest`` distinct paths (K^L < nbest) get all they have."""
    xp = backend.xp
    steps, batch, k = emissions.shape
    mask = xp.asarray(mask, dtype=bool)
    scores = xp.full((batch, k, nbest), -xp.inf, dtype=emissions.dtype)
    scores[:, :, 0] = start + emissions[0]
    keep = xp.arange(k * nbest).reshape(k, nbest)         # the back pointer of a padded step
    pointers = []
    for t in range(1, steps):
        # candidates (N, to-tag, from-tag x rank), then the nbest best per to-tag
        candidates = (scores[:, :, None, :] + transitions[None, :, :, None]).transpose(0, 2, 1, 3)
        candidates = candidates.reshape(batch, k, k * nbest)
        order = xp.argsort(-candidates, axis=2, kind="stable")[:, :, :nbest]
        best = xp.take_along_axis(candidates, order, axis=2) + emissions[t][:, :, None]
        on = mask[t][:, None, None]
        scores = xp.where(on, best, scores)
        pointers.append(xp.where(on, order, keep))
    final = (scores + end[None, :, None]).reshape(batch, k * nbest)
    order = xp.argsort(-final, axis=1, kind="stable")[:, :nbest]      # (N, nbest): tag x rank
    totals = xp.take_along_axis(final, order, axis=1)
    paths = xp.empty((steps, batch, nbest), dtype=xp.int64)
    at = order
    rows = xp.arange(batch)[:, None]
    for t in range(steps - 1, -1, -1):
        tag, rank = at // nbest, at % nbest
        paths[t] = tag
        if t:
            at = pointers[t - 1][rows, tag, rank]
    lengths = mask.sum(axis=0)
    result = []
    for n in range(batch):
        found = [(paths[:lengths[n], n, r].tolist(), float(totals[n, r]))
                 for r in range(nbest) if totals[n, r] > -xp.inf]
        result.append(found)
    return result
