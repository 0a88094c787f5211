"""Probability paths of conditional flow matching: how a point x_t between a source sample x0
(t = 0) and a data sample x1 (t = 1) is drawn, and the velocity u_t a model learns there
(torchcfm's interface; Lipman et al. 2023, Liu et al. 2023, Tong et al. 2023).

* :class:`ConditionalFlowMatcher` (independent coupling, Gaussian path of constant width):
  mu_t = t x1 + (1 - t) x0, x_t = mu_t + sigma eps, u_t = x1 - x0. With sigma = 0 this is
  rectified flow's straight path.
* :class:`TargetConditionalFlowMatcher` (Lipman et al.'s optimal transport path, x0 the
  Gaussian noise): x_t = (1 - (1 - sigma_min) t) x0 + t x1, u_t = x1 - (1 - sigma_min) x0.
* :class:`ExactOptimalTransportConditionalFlowMatcher`: the first path after re-pairing the
  batch by minibatch optimal transport, the exact assignment on squared distances
  (``method='exact'``) or pairs drawn from a Sinkhorn plan (``method='sinkhorn'``).

:meth:`~ConditionalFlowMatcher.sample_location_and_conditional_flow` ``(x0, x1, t=None)``
returns (t, x_t, u_t) as arrays of the backend (t of shape (n,), uniform on [0, 1] from
lamina's generator unless given); :meth:`~ConditionalFlowMatcher.couple` returns the pairing
(rows of x0, rows of x1) the path uses, which class labels of x1 must follow.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.flow_matching_ot import optimal_assignment, sinkhorn, squared_distances

__all__ = ["OT_METHODS", "ConditionalFlowMatcher", "ExactOptimalTransportConditionalFlowMatcher",
           "TargetConditionalFlowMatcher", "make_matcher"]

OT_METHODS = ("exact", "sinkhorn")


def _array(x, who: str, name: str):
    values = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if values.dtype.kind != "f":
        values = values.astype(backend.get_default_dtype())
    if values.ndim < 1:
        raise ShapeError(f"{who}: {name} must be a batch (n, ...), got a scalar")
    return values


def _non_negative(value, who: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")
    return float(value)


class ConditionalFlowMatcher:
    """The independent-coupling path mu_t = t x1 + (1 - t) x0, x_t = mu_t + sigma eps,
    u_t = x1 - x0 (module notes); ``sigma`` >= 0."""

    def __init__(self, sigma: float = 0.0):
        self.sigma = _non_negative(sigma, type(self).__name__, "sigma")

    @property
    def who(self) -> str:
        return type(self).__name__

    # -- the path ------------------------------------------------------------------------
    def compute_mu_t(self, x0, x1, t):
        """The path's mean at time t (t broadcast over each sample)."""
        t = _expand(t, x1)
        return t * x1 + (1 - t) * x0

    def compute_sigma_t(self, t):
        """The path's standard deviation at time t (constant here)."""
        return self.sigma + 0 * t

    def sample_xt(self, x0, x1, t, eps):
        """x_t = mu_t + sigma_t eps."""
        return self.compute_mu_t(x0, x1, t) + _expand(self.compute_sigma_t(t), x1) * eps

    def compute_conditional_flow(self, x0, x1, t, xt):
        """The target velocity u_t(x_t | x0, x1) = x1 - x0."""
        return x1 - x0

    # -- one batch -------------------------------------------------------------------------
    def couple(self, x0, x1) -> tuple[np.ndarray, np.ndarray]:
        """The rows (i, j) pairing x0[i] with x1[j]: the batch as given here."""
        n = len(x0)
        return np.arange(n), np.arange(n)

    def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise: bool = False):
        """(t, x_t, u_t) for the source batch ``x0`` and the data batch ``x1`` of the same shape
        (paired by :meth:`couple` first; u_t and x_t follow x1's rows); with ``return_noise``
        also eps. ``t``: n times in [0, 1], or one, or None (uniform from lamina's generator)."""
        x0, x1 = self.checked_pair(x0, x1)
        rows, cols = (backend.xp.asarray(index) for index in self.couple(x0, x1))
        return self.path(x0[rows], x1[cols], t, return_noise)

    def path(self, x0, x1, t=None, return_noise: bool = False):
        """(t, x_t, u_t) for x0 and x1 already paired row by row."""
        x0, x1 = self.checked_pair(x0, x1)
        n, xp, rng = len(x1), backend.xp, backend.rng()
        t = xp.asarray(rng.random(n), dtype=x1.dtype) if t is None else self.checked_times(t, n, x1.dtype)
        eps = xp.asarray(rng.standard_normal(x1.shape), dtype=x1.dtype) if self.has_noise else xp.zeros_like(x1)
        xt = self.sample_xt(x0, x1, t, eps)
        ut = self.compute_conditional_flow(x0, x1, t, xt)
        return (t, xt, ut, eps) if return_noise else (t, xt, ut)

    @property
    def has_noise(self) -> bool:
        return self.sigma > 0

    # -- checks --------------------------------------------------------------------------
    def checked_pair(self, x0, x1):
        x0, x1 = _array(x0, self.who, "x0"), _array(x1, self.who, "x1")
        if x0.shape != x1.shape:
            raise ShapeError(f"{self.who}: the source batch x0 of shape {tuple(x0.shape)} and the data batch x1 of "
                             f"shape {tuple(x1.shape)} must have the same shape")
        return x0.astype(x1.dtype, copy=False), x1

    def checked_times(self, t, n: int, dtype):
        values = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64)
        if values.ndim == 0:
            values = np.full(n, float(values))
        if values.shape != (n,):
            raise ShapeError(f"{self.who}: t of shape {values.shape} does not fit a batch of {n}; expected ({n},) "
                             "or one number")
        if not np.all((values >= 0) & (values <= 1)):
            bad = values[~((values >= 0) & (values <= 1))]
            raise ValueError(f"{self.who}: times t must lie in [0, 1], got {bad[:5].tolist()}")
        return backend.xp.asarray(values, dtype=dtype)

    def get_config(self) -> dict:
        return {"kind": "cfm", "sigma": self.sigma}

    def __repr__(self) -> str:
        return f"{self.who}(sigma={self.sigma})"


class TargetConditionalFlowMatcher(ConditionalFlowMatcher):
    """Lipman et al.'s path from Gaussian noise x0: x_t = (1 - (1 - sigma_min) t) x0 + t x1,
    u_t = x1 - (1 - sigma_min) x0 (so that x_1 ~ N(x1, sigma_min^2 I)); ``sigma`` is
    sigma_min >= 0."""

    def compute_mu_t(self, x0, x1, t):
        """The mean t x1 (x0 is the path's noise)."""
        return _expand(t, x1) * x1

    def compute_sigma_t(self, t):
        """sigma_t = 1 - (1 - sigma_min) t."""
        return 1 - (1 - self.sigma) * t

    def sample_xt(self, x0, x1, t, eps):
        """x_t = t x1 + sigma_t x0."""
        return self.compute_mu_t(x0, x1, t) + _expand(self.compute_sigma_t(t), x1) * x0

    def compute_conditional_flow(self, x0, x1, t, xt):
        """u_t = x1 - (1 - sigma_min) x0."""
        return x1 - (1 - self.sigma) * x0

    @property
    def has_noise(self) -> bool:
        return False

    def get_config(self) -> dict:
        return {"kind": "target", "sigma": self.sigma}


class ExactOptimalTransportConditionalFlowMatcher(ConditionalFlowMatcher):
    """The independent path after minibatch optimal transport (Tong et al. 2023): the batch
    is re-paired by the exact assignment on squared distances (``method='exact'``, each
    sample used once), or by n pairs drawn with replacement from the Sinkhorn plan of
    regularisation ``reg`` (relative to the mean cost) after ``iters`` iterations
    (``method='sinkhorn'``)."""

    def __init__(self, sigma: float = 0.0, method: str = "exact", reg: float = 0.05, iters: int = 100):
        super().__init__(sigma)
        if method not in OT_METHODS:
            raise ValueError(f"{self.who}: method must be one of {OT_METHODS}, got {method!r}")
        if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not reg > 0:
            raise ValueError(f"{self.who}: reg must be a number > 0, got {reg!r}")
        self.method, self.reg, self.iters = method, float(reg), int(iters)

    def couple(self, x0, x1) -> tuple[np.ndarray, np.ndarray]:
        """Rows (i, j) of an optimal pairing (module notes)."""
        points0, points1 = backend.to_numpy(x0), backend.to_numpy(x1)
        n = len(points0)
        if self.method == "exact":
            return np.arange(n), optimal_assignment(points0, points1, self.who)
        cost = squared_distances(points0, points1, self.who)
        plan = sinkhorn(np.full(n, 1 / n), np.full(n, 1 / n), cost, self.reg * max(cost.mean(), 1e-12), self.iters)
        probabilities = plan.ravel() / plan.sum()
        picks = backend.rng().choice(n * n, size=n, p=probabilities)
        return picks // n, picks % n

    def get_config(self) -> dict:
        return {"kind": "exact_ot", "sigma": self.sigma, "method": self.method, "reg": self.reg, "iters": self.iters}

    def __repr__(self) -> str:
        return f"{self.who}(sigma={self.sigma}, method={self.method!r})"


MATCHERS = {"cfm": ConditionalFlowMatcher, "target": TargetConditionalFlowMatcher,
            "exact_ot": ExactOptimalTransportConditionalFlowMatcher}


def make_matcher(matcher="cfm", **options) -> ConditionalFlowMatcher:
    """A matcher from its kind ('cfm', 'target', 'exact_ot'), its config dict, or itself."""
    if isinstance(matcher, ConditionalFlowMatcher):
        return matcher
    if isinstance(matcher, dict):
        options = {**matcher, **options}
        matcher = options.pop("kind")
    if matcher not in MATCHERS:
        raise ValueError(f"make_matcher: matcher must be one of {tuple(MATCHERS)} or a ConditionalFlowMatcher, "
                         f"got {matcher!r}")
    return MATCHERS[matcher](**options)


def _expand(t, x):
    """n times (or a number) shaped (n, 1, ..., 1) to broadcast over a batch like ``x``."""
    if np.ndim(t) == 0:
        return t
    return t.reshape(len(t), *([1] * (x.ndim - 1)))
