"""The importance-weighted bound on log p(x) (Burda, Grosse and Salakhutdinov, 2016).

A VAE's encoder gives q(z | x). Drawing k codes z_1, ..., z_k from it, the importance weights

    w_i = p(x, z_i) / q(z_i | x),   log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x),

average to an unbiased estimate of p(x), and by Jensen's inequality

    L_k = E[ log (1/k) sum_i w_i ] <= log p(x).

L_1 is the evidence lower bound (ELBO) of the plain VAE; L_k never decreases as k grows, and it
reaches log p(x) as k -> infinity. :func:`iwae_bound` computes log (1/k) sum_i w_i for one draw
of the k codes as a log-mean-exp, logsumexp_i(log w_i) - log k, which neither overflows nor
underflows however large or small the weights are.

How well q matches the posterior p(z | x) shows in the normalised weights
w~_i = w_i / sum_j w_j: :func:`effective_sample_size`, (sum_i w_i)^2 / sum_i w_i^2
= 1 / sum_i w~_i^2, is k when all weights are equal (q is the posterior) and 1 when one
weight takes all.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.arithmetic import sub
from lamina.functional.loss import _check_reduction
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import reshape

__all__ = ["effective_sample_size", "iwae_bound"]


def _check_k(k, fn: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{fn}: k, the number of importance samples, must be an int >= 1, got {k!r}")
    return int(k)


def _as_tensor(values, fn: str, what: str, dtype=None) -> Tensor:
    if isinstance(values, Tensor):
        return values
    data = backend.xp.asarray(values)
    if data.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {what} must hold numbers, got an array of dtype {data.dtype}")
    if dtype is None:
        dtype = data.dtype if data.dtype.kind == "f" else backend.get_default_dtype()
    return Tensor(data, dtype=dtype)


def _by_sample(values: Tensor, k: int, fn: str, what: str) -> Tensor:
    """``values`` of shape (k, batch), or flat (k * batch,) in k blocks of the batch, as (k, batch)."""
    shape = tuple(values.shape)
    if len(shape) == 2 and shape[0] == k:
        return values
    if len(shape) == 1 and shape[0] % k == 0 and shape[0] > 0:
        return reshape(values, k, shape[0] // k)
    raise ShapeError(f"{fn}: {what} has shape {shape}; expected (k, batch) = ({k}, batch) or (k * batch,), "
                     f"k blocks of the batch, for k={k}")


def _log_weights(log_p_xz, log_q_z, k, fn: str) -> Tensor:
    k = _check_k(k, fn)
    log_p = _as_tensor(log_p_xz, fn, "log_p_xz")
    log_q = _as_tensor(log_q_z, fn, "log_q_z", dtype=log_p.dtype)
    if tuple(log_p.shape) != tuple(log_q.shape):
        raise ShapeError(f"{fn}: log_p_xz has shape {tuple(log_p.shape)} but log_q_z has shape "
                         f"{tuple(log_q.shape)}; expected the same shape")
    return _by_sample(sub(log_p, log_q), k, fn, "log_p_xz")


def iwae_bound(log_p_xz, log_q_z, k: int, reduction: str = "none") -> Tensor:
    """The importance-weighted bound of each input for one draw of its k codes:

        L_k = log (1/k) sum_i exp(log p(x, z_i) - log q(z_i | x))
            = logsumexp_i(log w_i) - log k.

    ``log_p_xz`` holds log p(x, z_i) = log p(x | z_i) + log p(z_i) and ``log_q_z`` holds
    log q(z_i | x), both of shape (k, batch), or flat (k * batch,) with the k draws as k
    consecutive blocks of the batch (the layout of a batch tiled k times). ``reduction``:
    'none' (default) gives the bound of each input, shape (batch,); 'mean' and 'sum' reduce
    them. With k = 1 the bound is log p(x, z) - log q(z | x), the one-sample ELBO. The
    gradient dL_k / d log w_i = w~_i, the normalised weight w_i / sum_j w_j.
    """
    fn = "iwae_bound"
    _check_reduction(reduction, fn)
    log_w = _log_weights(log_p_xz, log_q_z, k, fn)
    bound = logsumexp(log_w, axis=0) - math.log(log_w.shape[0])
    if reduction == "mean":
        return R.mean(bound)
    if reduction == "sum":
        return R.sum(bound)
    return bound


def effective_sample_size(log_weights, k: int) -> np.ndarray:
    """The effective sample size of each input's k importance weights,

        ESS = (sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i w~_i^2,   between 1 and k,

    from the log-weights log w_i (shape (k, batch), or flat (k * batch,) in k blocks of the
    batch), computed as exp(2 logsumexp(log w) - logsumexp(2 log w)). Returns a NumPy array
    of shape (batch,) (a diagnostic: no gradient).
    """
    fn = "effective_sample_size"
    k = _check_k(k, fn)
    log_w = _by_sample(_as_tensor(log_weights, fn, "log_weights"), k, fn, "log_weights")
    values = np.asarray(backend.to_numpy(log_w.data), dtype=np.float64)
    return np.exp(2 * _logsumexp0(values) - _logsumexp0(2 * values))


def _logsumexp0(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(a - top).sum(axis=0))
