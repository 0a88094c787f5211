r"""In-processing by reductions: fair classification as a sequence of weighted classification
problems (Agarwal, Beygelzimer, Dudik, Langford & Wallach 2018, "A reductions approach to fair
classification"; fairlearn's ExponentiatedGradient).

A constraint (a "moment") compares, within each event e, the mean prediction of each group a
with that of the whole event: gamma_{e,a}(h) = E[h | E = e, A = a] - E[h | E = e], and asks
|gamma_{e,a}| <= eps. :class:`DemographicParity` has one event (every sample), so it equalises
selection rates; :class:`EqualizedOdds` has the events y = 0 and y = 1 (FPR and TPR);
:class:`TruePositiveRateParity` only y = 1. Each signed constraint k gets a multiplier
lambda_k >= 0 and the Lagrangian of a randomized classifier Q (a distribution over classifiers)

    L(Q, lambda) = err(Q) + sum_k lambda_k (gamma_k(Q) - eps)

is solved as a zero-sum game by exponentiated gradient on lambda (the multipliers are
lambda = B exp(theta) / (1 + sum exp(theta)), theta += eta (gamma(h_t) - eps)), the learner
playing best responses: h_t = argmin_h L(h, lambda_t) is a cost-sensitive classification
whose per-sample cost of predicting 1 rather than 0 is

    c_i = w_i [ (1 - 2 y_i) / W + lambda_{e_i,a_i} / W_{e_i,a_i} - sum_a lambda_{e_i,a} / W_{e_i} ]

(lambda_{e,a} = lambda^+ - lambda^-), fitted as a weighted classification with label [c_i < 0]
and weight |c_i|. As in fairlearn, the mixture weights q over the classifiers found so far
solve the linear program min_q sum_j q_j err(h_j) + B s subject to
sum_j q_j gamma_k(h_j) - eps <= s, q in the simplex, s >= 0, whose duals give multipliers
lambda; the rounds stop after ``max_iter`` or once the duality gap of (q, lambda),
max(L(q, best lambda) - L(q, lambda), L(q, lambda) - L(best h, lambda)), is under ``nu``.
The result is randomized: :meth:`ExponentiatedGradient.predict_proba` gives
P(y_hat = 1) = sum_j q_j h_j(x); :meth:`~ExponentiatedGradient.predict` draws from it.

The learner is any object with ``fit(X, y, sample_weight)`` and ``predict(X)`` (copied for each
round); :class:`WeightedLogisticRegression` (L2-regularised, fitted by L-BFGS) is the default.
"""

from __future__ import annotations

import copy

import numpy as np

from lamina.analysis.fairness.metric_frame import check_lengths, group_labels

__all__ = ["DemographicParity", "EqualizedOdds", "ExponentiatedGradient", "Moment", "TruePositiveRateParity",
           "WeightedLogisticRegression"]


class WeightedLogisticRegression:
    """P(y = 1 | x) = sigmoid(w . x + b), minimising
    sum_i s_i [log(1 + exp(z_i)) - y_i z_i] / sum_i s_i + (l2 / 2) |w|^2 by L-BFGS."""

    def __init__(self, l2: float = 1e-3, max_iter: int = 200):
        self.l2, self.max_iter = float(l2), int(max_iter)
        self.coef_: np.ndarray | None = None

    def fit(self, x, y, sample_weight=None) -> WeightedLogisticRegression:
        from scipy.optimize import minimize

        features, labels = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64).ravel()
        check_lengths("WeightedLogisticRegression.fit", X=features, y=labels)
        weights = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        weights = weights / max(weights.sum(), 1e-300)
        design = np.hstack([features, np.ones((len(features), 1))])

        def cost(params):
            z = design @ params
            loss = np.sum(weights * (np.logaddexp(0, z) - labels * z)) + 0.5 * self.l2 * params[:-1] @ params[:-1]
            gradient = design.T @ (weights * (_sigmoid(z) - labels))
            gradient[:-1] += self.l2 * params[:-1]
            return loss, gradient

        result = minimize(cost, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter})
        self.coef_, self.intercept_ = result.x[:-1], float(result.x[-1])
        return self

    def decision_function(self, x) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("WeightedLogisticRegression: call fit first")
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict_proba(self, x) -> np.ndarray:
        """P(y = 1 | x) for each row."""
        return _sigmoid(self.decision_function(x))

    def predict(self, x) -> np.ndarray:
        return (self.decision_function(x) > 0).astype(np.int64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


class Moment:
    """A constraint family: ``events(y)`` gives each sample's event (-1: not constrained)."""

    name = "moment"

    def events(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class DemographicParity(Moment):
    """E[h | A = a] = E[h] for every group a."""

    name = "demographic_parity"

    def events(self, y: np.ndarray) -> np.ndarray:
        return np.zeros(len(y), dtype=np.int64)


class EqualizedOdds(Moment):
    """E[h | A = a, Y = y] = E[h | Y = y] for every group a and label y (equal TPR and FPR)."""

    name = "equalized_odds"

    def events(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.int64)


class TruePositiveRateParity(Moment):
    """E[h | A = a, Y = 1] = E[h | Y = 1] (equal opportunity)."""

    name = "true_positive_rate_parity"

    def events(self, y: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(y) == 1, 1, -1)


MOMENTS = {m.name: m for m in (DemographicParity, EqualizedOdds, TruePositiveRateParity)}


def _moment(constraints) -> Moment:
    if isinstance(constraints, Moment):
        return constraints
    if isinstance(constraints, str) and constraints in MOMENTS:
        return MOMENTS[constraints]()
    raise ValueError(f"ExponentiatedGradient: unknown constraints {constraints!r}; expected a Moment or one of "
                     f"{sorted(MOMENTS)}")


class _Constraints:
    """gamma_{e,a}(h) over the training data, and the best-response costs."""

    def __init__(self, moment: Moment, labels: np.ndarray, keys: list, weights: np.ndarray, who: str):
        events = moment.events(labels)
        groups = list(dict.fromkeys(keys))
        group_index = np.array([groups.index(k) for k in keys])
        self.cells = []  # (event mask, cell mask)
        for event in np.unique(events[events >= 0]):
            in_event = events == event
            for g, group in enumerate(groups):
                cell = in_event & (group_index == g)
                if weights[cell].sum() <= 0:
                    raise ValueError(f"{who}: group {group!r} has no samples in event {event} of "
                                     f"{moment.name!r}; the constraint needs some")
                self.cells.append((in_event, cell))
        self.weights = weights

    def gamma(self, h: np.ndarray) -> np.ndarray:
        w = self.weights
        return np.array([(w * h)[cell].sum() / w[cell].sum() - (w * h)[event].sum() / w[event].sum()
                         for event, cell in self.cells])

    def cost_of_positive(self, labels: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
        """c_i for lambda_{e,a} = multipliers (lambda^+ - lambda^-)."""
        w = self.weights
        per_sample = (1 - 2 * labels) / w.sum()
        for (event, cell), lam in zip(self.cells, multipliers, strict=True):
            per_sample = per_sample + lam * (cell / w[cell].sum() - event / w[event].sum())
        return w * per_sample


class ExponentiatedGradient:
    """A randomized classifier meeting ``constraints`` up to ``eps`` (see the module docstring).

    ``estimator``: the learner (default :class:`WeightedLogisticRegression`); ``bound`` B on
    sum lambda (default 1 / eps); ``eta0``: the step is eta0 / B. After ``fit``: ``predictors_``,
    ``weights_`` (q), ``n_iter_``, ``gaps_`` (the duality gap per round; with an approximate
    best response, such as a logistic regression, it may level off above ``nu``)."""

    def __init__(self, estimator=None, constraints="demographic_parity", eps: float = 0.01, max_iter: int = 50,
                 nu: float = 1e-4, eta0: float = 2.0, bound: float | None = None):
        self.moment = _moment(constraints)
        if eps <= 0 or max_iter < 1:
            raise ValueError(f"ExponentiatedGradient: eps must be > 0 and max_iter >= 1, got {eps!r}, {max_iter!r}")
        self.estimator = estimator if estimator is not None else WeightedLogisticRegression()
        self.eps, self.max_iter, self.nu, self.eta0 = float(eps), int(max_iter), float(nu), float(eta0)
        self.bound = float(bound) if bound is not None else 1.0 / self.eps
        self.predictors_: list | None = None

    def _best_response(self, x, labels, constraints, lam: np.ndarray):
        half = len(lam) // 2
        costs = constraints.cost_of_positive(labels, lam[:half] - lam[half:])
        learner = copy.deepcopy(self.estimator)
        learner.fit(x, (costs < 0).astype(np.int64), sample_weight=np.abs(costs))
        h = np.asarray(learner.predict(x), dtype=np.float64).ravel()
        return learner, h

    def _lagrangian(self, error: float, gamma: np.ndarray, lam: np.ndarray) -> float:
        return error + float(lam @ (np.concatenate([gamma, -gamma]) - self.eps))

    def fit(self, x, y_true, sensitive_features, sample_weight=None) -> ExponentiatedGradient:
        who = "ExponentiatedGradient.fit"
        labels = np.asarray(y_true).ravel()
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{who}: y_true must hold 0/1 labels, got values {np.unique(labels)[:5]}")
        labels = labels.astype(np.float64)
        keys = group_labels(sensitive_features, who)
        weights = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        check_lengths(who, X=np.asarray(x), y_true=labels, sensitive_features=keys, sample_weight=weights)
        constraints = _Constraints(self.moment, labels, keys, weights, who)
        errors_of = lambda h: float(weights @ np.abs(h - labels) / weights.sum())  # noqa: E731
        theta = np.zeros(2 * len(constraints.cells))
        eta = self.eta0 / self.bound
        learners, errors, gammas, gaps = [], [], [], []
        for _ in range(self.max_iter):
            lam = self.bound * np.exp(theta) / (1 + np.exp(theta).sum())
            learner, h = self._best_response(x, labels, constraints, lam)
            learners.append(learner)
            errors.append(errors_of(h))
            gammas.append(constraints.gamma(h))
            q, lam_q = self._best_mixture(np.array(errors), np.array(gammas))
            gaps.append(self._gap(q, lam_q, np.array(errors), np.array(gammas),
                                  self._best_response(x, labels, constraints, lam_q)[1], constraints, errors_of))
            if gaps[-1] <= self.nu:
                break
            theta = theta + eta * (np.concatenate([gammas[-1], -gammas[-1]]) - self.eps)
        kept = q > 1e-9
        self.predictors_ = [learner for learner, keep in zip(learners, kept, strict=True) if keep]
        self.weights_ = q[kept] / q[kept].sum()
        self.n_iter_, self.gaps_ = len(learners), gaps
        return self

    def _best_mixture(self, errors: np.ndarray, gammas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The LP's weights q over the classifiers so far, and its multipliers lambda (the duals
        of the constraint rows, which sum to at most B)."""
        from scipy.optimize import linprog

        m, k = len(errors), 2 * gammas.shape[1]
        signed = np.hstack([gammas, -gammas]).T  # (k, m)
        solution = linprog(np.concatenate([errors, [self.bound]]),
                           A_ub=np.hstack([signed, -np.ones((k, 1))]), b_ub=np.full(k, self.eps),
                           A_eq=np.concatenate([np.ones(m), [0.0]])[None], b_eq=[1.0],
                           bounds=(0, None), method="highs")
        if not solution.success:
            return np.full(m, 1.0 / m), np.zeros(k)
        return np.clip(solution.x[:m], 0, None), np.clip(-solution.ineqlin.marginals, 0, None)

    def _gap(self, q, lam, errors, gammas, h_best, constraints, errors_of) -> float:
        """max(L(Q, best lambda) - L(Q, lambda), L(Q, lambda) - L(best h, lambda)): how far
        (Q, lambda) is from the game's equilibrium."""
        mixture_error, mixture_gamma = float(q @ errors), q @ gammas
        violation = np.concatenate([mixture_gamma, -mixture_gamma]) - self.eps
        value = self._lagrangian(mixture_error, mixture_gamma, lam)
        worst = mixture_error + (self.bound * violation.max() if violation.max() > 0 else 0.0)
        best = self._lagrangian(errors_of(h_best), constraints.gamma(h_best), lam)
        return max(worst - value, value - best)

    def predict_proba(self, x) -> np.ndarray:
        """P(y_hat = 1 | x) = sum_j q_j h_j(x)."""
        if self.predictors_ is None:
            raise RuntimeError("ExponentiatedGradient.predict_proba: call fit first")
        return sum(q * np.asarray(h.predict(x), dtype=np.float64).ravel()
                   for q, h in zip(self.weights_, self.predictors_, strict=True))

    def predict(self, x, random_state: int | np.random.Generator | None = 0) -> np.ndarray:
        """0/1 predictions drawn from :meth:`predict_proba`."""
        probability = self.predict_proba(x)
        return (np.random.default_rng(random_state).random(len(probability)) < probability).astype(np.int64)
