"""Treatment-effect estimation: meta-learners, training of the neural estimators of
:mod:`lamina.models.causal`, and the metrics of causal inference and uplift modelling.

Meta-learners take any regressor: an object with ``fit(x, y)`` and ``predict(x)`` (a
scikit-learn estimator, :class:`LinearRegressor`, :class:`MLPRegressor`; copied for each role)
or a callable returning a fresh one.

* S-learner: one model mu(x, t); tau(x) = mu(x, 1) - mu(x, 0).
* T-learner: mu_0 on the controls, mu_1 on the treated; tau = mu_1 - mu_0.
* X-learner (Kunzel et al. 2019): imputed effects D1 = y - mu_0(x) on the treated and
  D0 = mu_1(x) - y on the controls, regressed as tau_1 and tau_0;
  tau = e(x) tau_0(x) + (1 - e(x)) tau_1(x), e the propensity.
* DR-learner (Kennedy 2023): with K-fold cross-fitting of mu_0, mu_1 and e, the pseudo-outcome
  phi = mu_1 - mu_0 + t (y - mu_1) / e - (1 - t)(y - mu_0) / (1 - e) is regressed on x.

Uplift metrics follow causalml's definitions (rows sorted by decreasing score, a leading 0):
cumulative gain (mean_T - mean_C over the top k) * k, Qini Y_T(k) - Y_C(k) N_T(k) / N_C(k),
AUUC = the mean of the (normalised) cumulative gain curve, and the Qini coefficient = the mean
of the Qini curve minus the random line from 0 to its final value.
"""

from __future__ import annotations

import copy

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.data.causal import check_treatment
from lamina.nn import Dense, Sequential
from lamina.nn.module import Module
from lamina.optim import Adam

__all__ = [
    "DRLearner", "LinearRegressor", "MLPRegressor", "PropensityModel", "SLearner", "TLearner", "XLearner",
    "auuc_score", "average_treatment_effect", "average_treatment_effect_on_treated", "cumulative_gain_curve",
    "fit_causal_net", "pehe", "policy_risk", "qini_coefficient", "qini_curve",
]


def _inputs(x, t, y, who: str):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{who}: covariates must be (n, features), got shape {x.shape}")
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{who}: lengths differ: {len(x)} rows of covariates but {len(y)} outcomes")
    return x, check_treatment(t, len(x), who), y


# -- regressors -------------------------------------------------------------------------------

class LinearRegressor:
    """Ridge regression with an unpenalised intercept: w = (X'X + l2 I)^-1 X'y on centred data."""

    def __init__(self, l2: float = 1e-6):
        self.l2 = float(l2)

    def fit(self, x, y) -> LinearRegressor:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        mx, my = x.mean(axis=0), y.mean()
        xc = x - mx
        self.coef_ = np.linalg.solve(xc.T @ xc + self.l2 * np.eye(x.shape[1]), xc.T @ (y - my))
        self.intercept_ = my - mx @ self.coef_
        return self

    def predict(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_


class MLPRegressor:
    """A lamina multilayer perceptron (Dense layers of ``hidden`` widths, one linear output)
    trained by Adam on the squared error, with standardised inputs and outputs."""

    def __init__(self, hidden=(32, 32), activation: str = "elu", epochs: int = 100, lr: float = 0.01,
                 batch_size: int = 128, seed: int = 0):
        self.hidden, self.activation, self.epochs = tuple(hidden), activation, epochs
        self.lr, self.batch_size, self.seed = lr, batch_size, seed

    def fit(self, x, y) -> MLPRegressor:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.x_mean_, self.x_std_ = x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        self.y_mean_, self.y_std_ = y.mean(), (y.std() if y.std() > 0 else 1.0)
        xs, ys = (x - self.x_mean_) / self.x_std_, (y - self.y_mean_) / self.y_std_
        backend.manual_seed(self.seed)
        self.model_ = Sequential(*[Dense(w, activation=self.activation) for w in self.hidden], Dense(1))
        self.model_(xs[:1].astype(np.float32))
        optimizer = Adam(self.model_.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.epochs):
            order = rng.permutation(len(xs))
            for start in range(0, len(xs), self.batch_size):
                rows = order[start:start + self.batch_size]
                optimizer.zero_grad()
                residual = self.model_(xs[rows].astype(np.float32))[:, 0] - ys[rows].astype(np.float32)
                (residual * residual).mean().backward()
                optimizer.step()
        return self

    def predict(self, x) -> np.ndarray:
        xs = (np.asarray(x, dtype=np.float64) - self.x_mean_) / self.x_std_
        return self.model_(xs.astype(np.float32)).numpy()[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_


class PropensityModel:
    """Logistic regression e(x) = P(t = 1 | x) = sigmoid(x w + b), fitted by Newton's method on
    the log-likelihood with an L2 penalty l2 |w|^2 / 2; predictions clipped to [clip, 1 - clip]."""

    def __init__(self, l2: float = 1e-3, iterations: int = 50, clip: float = 0.01):
        self.l2, self.iterations, self.clip = float(l2), int(iterations), float(clip)

    def fit(self, x, t) -> PropensityModel:
        x = np.asarray(x, dtype=np.float64)
        t = check_treatment(t, len(x), "PropensityModel.fit").astype(np.float64)
        design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        penalty = self.l2 * np.eye(design.shape[1])
        penalty[-1, -1] = 0.0
        w = np.zeros(design.shape[1])
        for _ in range(self.iterations):
            p = 1.0 / (1.0 + np.exp(-design @ w))
            gradient = design.T @ (p - t) + penalty @ w
            hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.max(np.abs(step)) < 1e-10:
                break
        self.coef_, self.intercept_ = w[:-1], w[-1]
        return self

    def predict_proba(self, x) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_)))
        return np.clip(p, self.clip, 1.0 - self.clip)


def _fresh(regressor):
    if not isinstance(regressor, type) and hasattr(regressor, "fit") and hasattr(regressor, "predict"):
        return copy.deepcopy(regressor)
    if callable(regressor):
        made = regressor()
        if not (hasattr(made, "fit") and hasattr(made, "predict")):
            raise TypeError(f"meta-learner: the regressor factory returned {type(made).__name__}, "
                            "which has no fit/predict")
        return made
    raise TypeError(f"meta-learner: expected a regressor with fit/predict or a factory, got {type(regressor).__name__}")


def _fit(regressor, x, y):
    model = _fresh(regressor)
    model.fit(x, y)
    return model


def _predict(model, x) -> np.ndarray:
    return np.asarray(model.predict(x), dtype=np.float64).reshape(-1)


# -- meta-learners ------------------------------------------------------------------------------

class SLearner:
    """One regressor on [x, t]; tau(x) = mu(x, 1) - mu(x, 0)."""

    def __init__(self, regressor=LinearRegressor):
        self.regressor = regressor

    def fit(self, x, t, y) -> SLearner:
        x, t, y = _inputs(x, t, y, "SLearner.fit")
        self.model_ = _fit(self.regressor, np.column_stack([x, t]), y)
        return self

    def effect(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        ones, zeros = np.ones((len(x), 1)), np.zeros((len(x), 1))
        return _predict(self.model_, np.hstack([x, ones])) - _predict(self.model_, np.hstack([x, zeros]))


class TLearner:
    """mu_0 fitted on the controls, mu_1 on the treated; tau = mu_1 - mu_0."""

    def __init__(self, regressor=LinearRegressor):
        self.regressor = regressor

    def fit(self, x, t, y) -> TLearner:
        x, t, y = _inputs(x, t, y, f"{type(self).__name__}.fit")
        self.mu0_ = _fit(self.regressor, x[t == 0], y[t == 0])
        self.mu1_ = _fit(self.regressor, x[t == 1], y[t == 1])
        return self

    def effect(self, x) -> np.ndarray:
        return _predict(self.mu1_, x) - _predict(self.mu0_, x)


class XLearner(TLearner):
    """Kunzel et al.'s X-learner; ``effect_regressor`` (default: ``regressor``) fits tau_0,
    tau_1; ``propensity`` (default :class:`PropensityModel`) weighs them."""

    def __init__(self, regressor=LinearRegressor, effect_regressor=None, propensity=None):
        super().__init__(regressor)
        self.effect_regressor = effect_regressor if effect_regressor is not None else regressor
        self.propensity = propensity

    def fit(self, x, t, y) -> XLearner:
        super().fit(x, t, y)
        x, t, y = _inputs(x, t, y, "XLearner.fit")
        imputed1 = y[t == 1] - _predict(self.mu0_, x[t == 1])
        imputed0 = _predict(self.mu1_, x[t == 0]) - y[t == 0]
        self.tau1_ = _fit(self.effect_regressor, x[t == 1], imputed1)
        self.tau0_ = _fit(self.effect_regressor, x[t == 0], imputed0)
        self.propensity_ = copy.deepcopy(self.propensity or PropensityModel()).fit(x, t)
        return self

    def effect(self, x) -> np.ndarray:
        e = self.propensity_.predict_proba(x)
        return e * _predict(self.tau0_, x) + (1 - e) * _predict(self.tau1_, x)


class DRLearner:
    """Kennedy's doubly robust learner with ``folds``-fold cross-fitting of the nuisances
    (mu_0, mu_1, e clipped to [clip, 1 - clip]); ``final_regressor`` regresses the pseudo-outcome."""

    def __init__(self, regressor=LinearRegressor, final_regressor=None, propensity=None, folds: int = 2,
                 clip: float = 0.01, seed: int = 0):
        if folds < 2:
            raise ValueError(f"DRLearner: folds must be >= 2 for cross-fitting, got {folds}")
        self.regressor, self.folds, self.clip, self.seed = regressor, int(folds), float(clip), seed
        self.final_regressor = final_regressor if final_regressor is not None else regressor
        self.propensity = propensity

    def pseudo_outcomes(self, x, t, y) -> np.ndarray:
        x, t, y = _inputs(x, t, y, "DRLearner.fit")
        fold = np.random.default_rng(self.seed).permutation(len(x)) % self.folds
        phi = np.empty(len(x))
        for k in range(self.folds):
            train, held = fold != k, fold == k
            xs, ts, ys = x[train], t[train], y[train]
            check_treatment(ts, None, f"DRLearner.fit (cross-fitting fold {k})")
            mu0 = _predict(_fit(self.regressor, xs[ts == 0], ys[ts == 0]), x[held])
            mu1 = _predict(_fit(self.regressor, xs[ts == 1], ys[ts == 1]), x[held])
            model = copy.deepcopy(self.propensity or PropensityModel()).fit(xs, ts)
            e = np.clip(model.predict_proba(x[held]), self.clip, 1 - self.clip)
            th, yh = t[held], y[held]
            phi[held] = mu1 - mu0 + th * (yh - mu1) / e - (1 - th) * (yh - mu0) / (1 - e)
        return phi

    def fit(self, x, t, y) -> DRLearner:
        self.final_ = _fit(self.final_regressor, np.asarray(x, dtype=np.float64), self.pseudo_outcomes(x, t, y))
        return self

    def effect(self, x) -> np.ndarray:
        return _predict(self.final_, x)


# -- neural estimators ----------------------------------------------------------------------------

def fit_causal_net(model: Module, x, t, y, epochs: int = 100, lr: float = 1e-3, batch_size: int = 128,
                   weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """Train a :class:`lamina.models.TARNet` / ``CFRNet`` / ``DragonNet`` (anything with
    ``loss(x, t, y)``) by Adam on shuffled mini-batches (each must hold both groups: a batch
    without one is merged into the previous one); returns the mean loss per epoch. ``seed``
    seeds the shuffling, and the initial weights when the model is not built yet."""
    x, t, y = _inputs(x, t, y, "fit_causal_net")
    dtype = backend.get_default_dtype()
    if not model.built:
        backend.manual_seed(seed)
    model(x[:2].astype(dtype))
    optimizer = Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    history = []
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        batches = [order[s:s + batch_size] for s in range(0, len(x), batch_size)]
        if len(batches) > 1 and len(batches[-1]) < batch_size // 2:
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        total = 0.0
        for rows in batches:
            if t[rows].min() == t[rows].max():
                continue
            optimizer.zero_grad()
            loss: Tensor = model.loss(x[rows].astype(dtype), t[rows], y[rows].astype(dtype))
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(rows)
        history.append(total / len(x))
    model.eval()
    return history


# -- metrics ------------------------------------------------------------------------------------------

def average_treatment_effect(tau_hat) -> float:
    return float(np.mean(np.asarray(tau_hat, dtype=np.float64)))


def average_treatment_effect_on_treated(tau_hat, t) -> float:
    tau_hat = np.asarray(tau_hat, dtype=np.float64)
    t = check_treatment(t, len(tau_hat), "average_treatment_effect_on_treated", need_both=False)
    if t.sum() == 0:
        raise ValueError("average_treatment_effect_on_treated: there are no treated units")
    return float(np.mean(tau_hat[t == 1]))


def pehe(tau_hat, tau) -> float:
    """sqrt(mean_i (tau_hat_i - tau_i)^2): the precision in estimating heterogeneous effects."""
    tau_hat, tau = np.asarray(tau_hat, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    if tau_hat.shape != tau.shape:
        raise ValueError(f"pehe: lengths differ: estimates {tau_hat.shape} vs true effects {tau.shape}")
    return float(np.sqrt(np.mean((tau_hat - tau) ** 2)))


def policy_risk(tau_hat, t, y) -> float:
    """Shalit et al.'s risk of the policy pi(x) = [tau_hat(x) > 0] from randomised data:
    1 - (E[y | pi = 1, t = 1] P(pi = 1) + E[y | pi = 0, t = 0] P(pi = 0)) (a group with no
    matching units counts 0)."""
    tau_hat = np.asarray(tau_hat, dtype=np.float64)
    t = check_treatment(t, len(tau_hat), "policy_risk")
    y = np.asarray(y, dtype=np.float64)
    treat = tau_hat > 0
    p_treat = treat.mean()
    value1 = y[treat & (t == 1)].mean() if np.any(treat & (t == 1)) else 0.0
    value0 = y[~treat & (t == 0)].mean() if np.any(~treat & (t == 0)) else 0.0
    return float(1.0 - (value1 * p_treat + value0 * (1 - p_treat)))


def _cumulative(score, t, y, who: str):
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(score):
        raise ValueError(f"{who}: lengths differ: {len(score)} scores but {len(y)} outcomes")
    t = check_treatment(t, len(score), who)
    order = np.argsort(-score, kind="stable")
    t, y = t[order], y[order]
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * (1 - t))
    return n_t, n_c, y_t, y_c


def _normalised(curve: np.ndarray, normalize: bool) -> np.ndarray:
    curve = np.concatenate([[0.0], curve])
    if normalize and curve[-1] != 0:
        curve = curve / abs(curve[-1])
    return curve


def cumulative_gain_curve(score, t, y, normalize: bool = False) -> np.ndarray:
    """G(k) = (Y_T(k)/N_T(k) - Y_C(k)/N_C(k)) k over the top k = 0..n rows by score (a mean
    over an empty group counts 0); ``normalize`` divides by |G(n)|."""
    n_t, n_c, y_t, y_c = _cumulative(score, t, y, "cumulative_gain_curve")
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.where(n_t > 0, y_t / np.maximum(n_t, 1), 0.0) - np.where(n_c > 0, y_c / np.maximum(n_c, 1), 0.0)
    return _normalised(lift * np.arange(1, len(lift) + 1), normalize)


def qini_curve(score, t, y, normalize: bool = False) -> np.ndarray:
    """Q(k) = Y_T(k) - Y_C(k) N_T(k) / N_C(k) over the top k = 0..n rows (0 while N_C(k) = 0)."""
    n_t, n_c, y_t, y_c = _cumulative(score, t, y, "qini_curve")
    return _normalised(y_t - np.where(n_c > 0, y_c * n_t / np.maximum(n_c, 1), 0.0), normalize)


def auuc_score(score, t, y, normalize: bool = True) -> float:
    """The area under the cumulative gain curve as causalml computes it: the mean of its n + 1 points."""
    return float(np.mean(cumulative_gain_curve(score, t, y, normalize)))


def qini_coefficient(score, t, y, normalize: bool = False) -> float:
    """mean_k (Q(k) - Q(n) k / n): the Qini curve's area above the random-targeting line."""
    curve = qini_curve(score, t, y, normalize)
    random = curve[-1] * np.arange(len(curve)) / (len(curve) - 1)
    return float(np.mean(curve - random))
