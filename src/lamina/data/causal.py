"""Synthetic causal-inference benchmarks with known potential outcomes.

Every generator returns a :class:`CausalData` with covariates ``x`` (n, d), a binary
treatment ``t``, the observed outcome ``y = t y1 + (1 - t) y0`` and the noiseless potential
outcomes ``mu0`` = E[Y(0) | x] and ``mu1`` = E[Y(1) | x], so that the individual effect
tau(x) = mu1 - mu0 is known and estimators can be scored (PEHE, ATE error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CausalData", "check_treatment", "confounded_data", "ihdp_like"]


@dataclass
class CausalData:
    """Covariates x (n, d), treatment t (n,) in {0, 1}, outcome y (n,), mu0 and mu1 (n,)."""

    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray

    @property
    def tau(self) -> np.ndarray:
        """The true individual effects mu1 - mu0."""
        return self.mu1 - self.mu0

    @property
    def ate(self) -> float:
        return float(np.mean(self.tau))

    @property
    def att(self) -> float:
        return float(np.mean(self.tau[self.t == 1]))

    def subset(self, rows) -> CausalData:
        return CausalData(self.x[rows], self.t[rows], self.y[rows], self.mu0[rows], self.mu1[rows])


def check_treatment(t, n: int | None, who: str, need_both: bool = True) -> np.ndarray:
    """``t`` as an int64 vector of 0s and 1s of length ``n``, else a ValueError naming ``who``."""
    t = np.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"{who}: the treatment must be a vector (n,), got shape {t.shape}")
    if n is not None and len(t) != n:
        raise ValueError(f"{who}: lengths differ: {n} rows of covariates/outcomes but {len(t)} treatments")
    values = np.unique(t)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"{who}: the treatment must be binary (0 or 1), got values {values[:6].tolist()}")
    t = t.astype(np.int64)
    if need_both and (t.sum() == 0 or t.sum() == len(t)):
        missing = "treated" if t.sum() == 0 else "control"
        raise ValueError(f"{who}: there are no {missing} units among the {len(t)} rows")
    return t


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def ihdp_like(n: int = 747, continuous: int = 6, binary: int = 19, target_att: float = 4.0,
              confounding: float = 1.0, seed: int = 0) -> CausalData:
    """Hill (2011)'s response surface B on synthetic covariates: ``continuous`` standard normal
    and ``binary`` Bernoulli(0.5) columns (standardised together), coefficients beta drawn from
    (0, 0.1, 0.2, 0.3, 0.4) with probabilities (0.6, 0.1, 0.1, 0.1, 0.1) and

        mu0 = exp((x + W) beta),   W = 0.5 everywhere,     mu1 = x beta - omega,

    omega chosen so that the effect on the treated is ``target_att``; Y(a) = mu_a + N(0, 1).
    Treatment is confounded: P(t = 1 | x) = sigmoid(confounding * x gamma - 1) with gamma a
    random unit direction (Hill removed a non-random part of the treated group instead)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal((n, continuous)),
                        rng.binomial(1, 0.5, (n, binary)).astype(np.float64)], axis=1)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    d = x.shape[1]
    beta = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], size=d, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    gamma = rng.standard_normal(d)
    gamma /= np.linalg.norm(gamma)
    t = rng.binomial(1, _sigmoid(confounding * x @ gamma - 1.0)).astype(np.int64)
    if t.sum() == 0:
        t[0] = 1
    mu0 = np.exp((x + 0.5) @ beta)
    linear = x @ beta
    omega = float(np.mean(linear[t == 1] - mu0[t == 1])) - target_att
    mu1 = linear - omega
    y = np.where(t == 1, mu1, mu0) + rng.standard_normal(n)
    return CausalData(x, t, y, mu0, mu1)


def confounded_data(n: int = 1000, features: int = 5, effect: str = "constant", overlap: float = 1.0,
                    tau: float = 2.0, noise: float = 0.5, seed: int = 0) -> CausalData:
    """x ~ N(0, I); P(t = 1 | x) = sigmoid(overlap * (x_0 + x_1) / sqrt(2)) (``overlap`` 0: a
    randomised trial; larger: less overlap, stronger confounding); mu0 = x_0 + 0.5 x_1 (the
    confounders also drive the outcome) and, by ``effect``,

        'constant':  tau(x) = tau,   'linear': tau(x) = tau + x_0,
        'nonlinear': tau(x) = tau + 2 sin(2 x_0) + x_1^2 - 1,   with mu0 += sin(3 x_1) too,

    mu1 = mu0 + tau(x); y adds N(0, noise^2)."""
    if effect not in ("constant", "linear", "nonlinear"):
        raise ValueError(f"confounded_data: effect must be 'constant', 'linear' or 'nonlinear', got {effect!r}")
    if features < 2:
        raise ValueError(f"confounded_data: needs at least 2 features, got {features}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    t = rng.binomial(1, _sigmoid(overlap * (x[:, 0] + x[:, 1]) / np.sqrt(2.0))).astype(np.int64)
    mu0 = x[:, 0] + 0.5 * x[:, 1]
    if effect == "constant":
        effects = np.full(n, float(tau))
    elif effect == "linear":
        effects = tau + x[:, 0]
    else:
        mu0 = mu0 + np.sin(3.0 * x[:, 1])
        effects = tau + 2.0 * np.sin(2.0 * x[:, 0]) + x[:, 1] ** 2 - 1.0
    mu1 = mu0 + effects
    y = np.where(t == 1, mu1, mu0) + noise * rng.standard_normal(n)
    return CausalData(x, t, y, mu0, mu1)
