"""The log-likelihood of a hidden Markov model by the forward algorithm, in log space.

A hidden Markov model with K states has the initial distribution pi (K,), the transition
matrix A (K, K) (A[i, j] = p(z_{t+1} = j | z_t = i)) and, for an observed sequence x_1..x_T,
the emission log-probabilities log B[t, j] = log p(x_t | z_t = j). The likelihood sums over
every state path:

    log p(x) = log sum_z pi[z_1] B[1, z_1] prod_{t > 1} A[z_{t-1}, z_t] B[t, z_t],

computed by the forward recursion

    alpha_1 = log pi + log B[1],   alpha_t[j] = log B[t, j] + logsumexp_i (alpha_{t-1}[i] + log A[i, j]),
    log p(x) = logsumexp_j alpha_T[j].

It is the log partition function of a linear-chain CRF whose start scores are log pi, whose
transition scores are log A, whose emission scores are log B and whose end scores are zero, so
it runs as :func:`lamina.functional.crf_log_partition`'s node: its gradient with respect to
log B[t, j] is the posterior p(z_t = j | x) and with respect to log A[i, j] the expected number of
i -> j transitions, and it has second derivatives.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.crf import crf_log_partition
from lamina.functional.shape import transpose

__all__ = ["hmm_log_likelihood"]


def _as_tensor(a) -> Tensor:
    """A tensor of ``a``; floating arrays keep their dtype."""
    if isinstance(a, Tensor):
        return a
    array = backend.xp.asarray(a)
    return Tensor._wrap(array) if array.dtype.kind == "f" else Tensor._constant(array)


def _prefix_mask(lengths, batch: int, steps: int):
    xp = backend.xp
    lengths = xp.asarray(lengths).reshape(-1)
    if lengths.shape[0] != batch:
        raise ShapeError(f"hmm_log_likelihood: lengths has {lengths.shape[0]} entries for a batch of {batch} "
                         "sequences")
    if lengths.size and (lengths.min() < 1 or lengths.max() > steps):
        raise ValueError(f"hmm_log_likelihood: lengths must lie in [1, {steps}] (the padded length); "
                         f"got {lengths.tolist()}")
    return xp.arange(steps)[:, None] < lengths[None, :]


def hmm_log_likelihood(log_pi, log_A, log_B, lengths=None, mask=None) -> Tensor:
    """log p(x) of an HMM: ``log_pi`` (K,), ``log_A`` (K, K), ``log_B`` (T, K) for one sequence
    (a scalar result) or (N, T, K) for a batch (result (N,)), batch first.

    Padded batches give either ``lengths`` (N,) (each row's real length) or a boolean ``mask``
    (N, T) that is True on a prefix of each row; padded steps are ignored. The inputs are
    log-probabilities (``log_softmax`` of free parameters keeps them normalized when training by
    gradient); only their shapes are checked here."""
    log_pi, log_A, log_B = (_as_tensor(a) for a in (log_pi, log_A, log_B))
    if log_B.ndim not in (2, 3):
        raise ShapeError(f"hmm_log_likelihood: log_B must be (T, K) or (N, T, K); got shape {log_B.shape}")
    k = log_B.shape[-1]
    if log_pi.shape != (k,) or log_A.shape != (k, k):
        raise ShapeError(f"hmm_log_likelihood: with log_B of shape {log_B.shape} ({k} states) expected log_pi "
                         f"({k},) and log_A ({k}, {k}); got {log_pi.shape} and {log_A.shape}")
    single = log_B.ndim == 2
    batch, steps = (1, log_B.shape[0]) if single else log_B.shape[:2]
    if steps < 1:
        raise ShapeError("hmm_log_likelihood: log_B has no time steps")
    xp = backend.xp
    if lengths is not None and mask is not None:
        raise ValueError("hmm_log_likelihood: give lengths or mask, not both")
    if lengths is not None:
        time_mask = _prefix_mask(lengths, batch, steps)
    elif mask is not None:
        mask = xp.asarray(mask, dtype=bool).reshape(batch, steps)
        if not mask[:, 0].all() or (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("hmm_log_likelihood: mask must be True on a non-empty prefix of each row")
        time_mask = mask.T
    else:
        time_mask = xp.ones((steps, batch), dtype=bool)
    emissions = log_B.reshape(steps, 1, k) if single else transpose(log_B, 1, 0, 2)
    end = Tensor._wrap(xp.zeros(k, dtype=log_B.dtype))
    result = crf_log_partition(emissions, log_A, log_pi, end, time_mask)
    return result.reshape(()) if single else result
