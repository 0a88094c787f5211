r"""Privacy accounting for DP-SGD: Rényi differential privacy of the Poisson-subsampled
Gaussian mechanism, composed over steps and converted to (epsilon, delta).

One DP-SGD step adds N(0, sigma^2 C^2) noise to a sum of gradients each clipped to norm C,
over a batch in which each sample is present independently with probability q. Its Rényi DP
at order alpha (Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled
Gaussian Mechanism") is, with mu_0 = N(0, sigma^2) and mu = (1 - q) mu_0 + q N(1, sigma^2),

    RDP(alpha) = log(A_alpha) / (alpha - 1),   A_alpha = E_{z ~ mu_0}[(mu(z) / mu_0(z))^alpha].

For an integer alpha the binomial expansion gives

    A_alpha = sum_{k=0}^{alpha} C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2));

for a fractional alpha the integral is split at z_0 = sigma^2 log(1/q - 1) + 1/2, where the
two terms of mu cross, and each side is a convergent binomial series whose terms carry a
normal tail probability (section 3.3 of the paper). q = 1 gives alpha / (2 sigma^2).

RDP adds up over steps. Converted to (epsilon, delta)-DP at the best order, either by the
classic bound epsilon = RDP + log(1/delta) / (alpha - 1) (Mironov 2017) or by the tighter one
of Balle, Barthe, Gaboardi, Hsu and Sato (2020),

    epsilon = RDP + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_ORDERS", "RDPAccountant", "compute_epsilon", "get_noise_multiplier", "rdp_subsampled_gaussian",
           "rdp_to_epsilon"]

#: Rényi orders tried by default: fractional ones near 1 (large noise, many steps) and integers up to 256.
DEFAULT_ORDERS: tuple[float, ...] = tuple([1.0 + k / 10 for k in range(1, 100)] + list(range(11, 64)) + [128, 256])

#: The fractional series stops (past k = alpha, where its terms shrink) at a term e^40 times below the sum.
_NEGLIGIBLE = -40.0


def _log_sub(a: float, b: float) -> float:
    """log(e^a - e^b) for a >= b."""
    if b == -math.inf:
        return a
    if a <= b:
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    from scipy import special  # SciPy loads on first use, not with lamina

    terms = [special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
             + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma ** 2)
             for k in range(alpha + 1)]
    return float(special.logsumexp(terms))


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """The two series of the split integral: below z_0 mu_0 dominates, above it q N(1, sigma^2).
    Terms are summed in blocks until, past k = alpha, they are negligible."""
    from scipy import special

    z0 = sigma ** 2 * math.log(1 / q - 1) + 0.5
    count = 64
    while True:
        k = np.arange(count, dtype=np.float64)
        j = alpha - k
        coefficient = special.binom(alpha, k)                       # generalized: its sign alternates past alpha
        log_coefficient = np.log(np.abs(coefficient))
        below = (log_coefficient + k * math.log(q) + j * math.log1p(-q) + (k * k - k) / (2 * sigma ** 2)
                 + special.log_ndtr((z0 - k) / sigma))
        above = (log_coefficient + j * math.log(q) + k * math.log1p(-q) + (j * j - j) / (2 * sigma ** 2)
                 + special.log_ndtr((j - z0) / sigma))
        terms = np.logaddexp(below, above)
        positive = special.logsumexp(terms[coefficient > 0])
        negative = special.logsumexp(terms[coefficient < 0]) if (coefficient < 0).any() else -math.inf
        if count > alpha + 1 and terms[-1] < max(positive, negative) + _NEGLIGIBLE:
            return _log_sub(float(positive), float(negative))
        if count > 1 << 20:
            raise ArithmeticError(f"rdp_subsampled_gaussian: the series for order {alpha} (q={q}, sigma={sigma}) "
                                  "does not converge")
        count *= 2


def _rdp_one_order(q: float, sigma: float, alpha: float) -> float:
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1.0:
        return alpha / (2 * sigma ** 2)
    if float(alpha).is_integer():
        log_a = _log_a_integer(q, sigma, int(alpha))
    else:
        log_a = _log_a_fractional(q, sigma, float(alpha))
    return log_a / (alpha - 1)


def _check_rate_and_noise(sample_rate: float, noise_multiplier: float, who: str) -> None:
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"{who}: sample_rate must lie in [0, 1], got {sample_rate!r}")
    if not noise_multiplier >= 0:
        raise ValueError(f"{who}: noise_multiplier must be >= 0, got {noise_multiplier!r}")


def rdp_subsampled_gaussian(sample_rate: float, noise_multiplier: float,
                            orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP(alpha) of one step of the Poisson-subsampled Gaussian mechanism (sensitivity 1, noise
    std ``noise_multiplier``, sampling probability ``sample_rate``) at each order (> 1)."""
    _check_rate_and_noise(sample_rate, noise_multiplier, "rdp_subsampled_gaussian")
    if any(a <= 1 for a in orders):
        raise ValueError(f"rdp_subsampled_gaussian: Rényi orders must be > 1, got {min(orders)}")
    return np.array([_rdp_one_order(float(sample_rate), float(noise_multiplier), float(a)) for a in orders])


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float,
                   conversion: str = "balle") -> tuple[float, float]:
    """(epsilon, best order) of (epsilon, delta)-DP from RDP values at ``orders``;
    ``conversion`` 'balle' (Balle et al. 2020, tighter) or 'classic' (Mironov 2017)."""
    if not 0 < delta < 1:
        raise ValueError(f"rdp_to_epsilon: delta must lie in (0, 1), got {delta!r}")
    orders_a, rdp_a = np.asarray(orders, dtype=np.float64), np.asarray(rdp, dtype=np.float64)
    if conversion == "classic":
        eps = rdp_a + math.log(1 / delta) / (orders_a - 1)
    elif conversion == "balle":
        eps = rdp_a + np.log((orders_a - 1) / orders_a) - (math.log(delta) + np.log(orders_a)) / (orders_a - 1)
    else:
        raise ValueError(f"rdp_to_epsilon: conversion must be 'balle' or 'classic', got {conversion!r}")
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(float(eps[best]), 0.0), float(orders_a[best])


def compute_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                    orders: Sequence[float] = DEFAULT_ORDERS, conversion: str = "balle") -> float:
    """Epsilon spent by ``steps`` DP-SGD steps at ``noise_multiplier`` and ``sample_rate``, for ``delta``."""
    rdp = steps * rdp_subsampled_gaussian(sample_rate, noise_multiplier, orders)
    return rdp_to_epsilon(orders, rdp, delta, conversion)[0]


def get_noise_multiplier(target_epsilon: float, target_delta: float, sample_rate: float, steps: int,
                         orders: Sequence[float] = DEFAULT_ORDERS, conversion: str = "balle",
                         tolerance: float = 0.01) -> float:
    """The smallest noise multiplier (to within the bisection) whose ``steps`` steps at ``sample_rate``
    spend at most ``target_epsilon`` for ``target_delta``: epsilon falls as sigma grows, so sigma is
    bracketed by doubling and then bisected until epsilon lies in [target - tolerance, target]."""
    if not target_epsilon > 0:
        raise ValueError(f"get_noise_multiplier: target_epsilon must be > 0, got {target_epsilon!r}")

    def spent(sigma: float) -> float:
        return compute_epsilon(sigma, sample_rate, steps, target_delta, orders, conversion)

    low, high = 0.0, 1.0
    while spent(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise ValueError(f"get_noise_multiplier: no noise multiplier up to 1e6 reaches epsilon "
                             f"{target_epsilon} for delta {target_delta} over {steps} steps at rate {sample_rate}")
    while True:
        middle = (low + high) / 2
        eps = spent(middle)
        if eps > target_epsilon:
            low = middle
        else:
            high = middle
            if eps >= target_epsilon - tolerance:
                return high
        if high - low < 1e-9:
            return high


class RDPAccountant:
    """Adds up the RDP of the DP-SGD steps taken (each with its own sigma and q) and reports the
    epsilon spent for a given delta."""

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS):
        self.orders = tuple(orders)
        self.history: list[list[float]] = []          # [noise_multiplier, sample_rate, steps]

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        _check_rate_and_noise(sample_rate, noise_multiplier, "RDPAccountant.step")
        last = self.history[-1] if self.history else None
        if last is not None and last[0] == noise_multiplier and last[1] == sample_rate:
            last[2] += steps
        else:
            self.history.append([float(noise_multiplier), float(sample_rate), int(steps)])

    @property
    def steps(self) -> int:
        return sum(entry[2] for entry in self.history)

    def rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for sigma, q, steps in self.history:
            total += steps * rdp_subsampled_gaussian(q, sigma, self.orders)
        return total

    def get_epsilon(self, delta: float, conversion: str = "balle") -> float:
        return rdp_to_epsilon(self.orders, self.rdp(), delta, conversion)[0]

    def state_dict(self) -> dict:
        return {"orders": list(self.orders), "history": [list(entry) for entry in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.orders = tuple(state["orders"])
        self.history = [[float(s), float(q), int(n)] for s, q, n in state["history"]]
