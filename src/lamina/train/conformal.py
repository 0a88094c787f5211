"""Split conformal prediction: prediction sets (classification) and intervals (regression)
that hold the true label with probability at least 1 - alpha, whatever the model, from n
held-out calibration samples exchangeable with the test ones (Angelopoulos & Bates, "A gentle
introduction to conformal prediction"; MAPIE's methods).

A score s(x, y) says how badly y fits the model's output at x. With the scores s_1..s_n of
the calibration samples, the threshold is their k-th smallest,

    q_hat = s_(k),    k = ceil((n + 1)(1 - alpha))     (the ceil((n+1)(1-alpha))/n quantile),

and the set of x is {y : s(x, y) <= q_hat}. Then 1 - alpha <= P(y in set) <= 1 - alpha
+ 1 / (n + 1) over calibration and test draws (the upper bound for scores without ties).
k <= n needs n >= 1/alpha - 1 calibration samples.

Classification scores from the probabilities p(x) (classes sorted by decreasing p, o(x, y)
the rank of y in that order, counted from 1):

* ``"lac"`` (least ambiguous set-valued classifier): s = 1 - p_y;
* ``"aps"`` (adaptive prediction sets): s = sum of the p_j ranked at or before y; randomised,
  s = that sum - u p_y with u ~ U(0, 1) (one u per sample, shared by its classes);
* ``"raps"`` (regularised APS): APS's score plus lambda max(0, o(x, y) - k_reg), which keeps
  sets small by penalising long tails; lambda = 0 is APS.

Regression scores from a point prediction mu(x) (and a scale sigma(x) or quantiles):
``"absolute"`` |y - mu| (interval mu -+ q_hat), ``"normalized"`` |y - mu| / sigma (interval
mu -+ q_hat sigma) and ``"cqr"`` (conformalised quantile regression, Romano et al. 2019) from a
lower and an upper quantile prediction, s = max(lo - y, y - hi) (interval [lo - q_hat,
hi + q_hat]). :func:`cv_plus_intervals` is the jackknife+ / CV+ of Barber et al. (2021).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from lamina.autograd import Tensor, no_grad
from lamina.nn.module import Module, evaluation_mode
from lamina.train.uncertainty import model_input

__all__ = ["CLASSIFICATION_SCORES", "REGRESSION_SCORES", "ConformalClassifier", "ConformalRegressor",
           "conformal_quantile", "coverage", "cv_plus_intervals", "interval_coverage", "mean_set_size",
           "mean_width", "size_stratified_coverage"]

CLASSIFICATION_SCORES = ("lac", "aps", "raps")
REGRESSION_SCORES = ("absolute", "normalized", "cqr")


def _check_alpha(alpha, who: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha < 1.0:
        raise ValueError(f"{who}: alpha is the miscoverage rate and must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def conformal_quantile(scores, alpha: float) -> float:
    """q_hat = the ceil((n + 1)(1 - alpha))-th smallest of the n calibration scores."""
    return _quantile(scores, alpha, "conformal_quantile")


def _quantile(scores, alpha: float, who: str) -> float:
    alpha = _check_alpha(alpha, who)
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(scores)
    rank = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)      # guard against (n + 1)(1 - alpha) rounding up
    if rank > n:
        raise ValueError(f"{who}: {n} calibration scores are too few for alpha={alpha}: the "
                         f"ceil((n+1)(1-alpha)) = {rank}-th smallest needs n >= 1/alpha - 1 = "
                         f"{math.ceil(1.0 / alpha - 1.0)} samples")
    return float(scores[rank - 1])


def _numpy(values) -> np.ndarray:
    return np.asarray(values.numpy() if isinstance(values, Tensor) else values)


def _predictor(model_or_fn, who: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function x -> the model's output as a float64 array (a Module runs in evaluation mode)."""
    if isinstance(model_or_fn, Module):
        def predict(x):
            with no_grad(), evaluation_mode(model_or_fn):
                return _numpy(model_or_fn(model_input(model_or_fn, x))).astype(np.float64)
        return predict
    if not callable(model_or_fn):
        raise TypeError(f"{who}: expected a lamina Module or a function x -> outputs, got "
                        f"{type(model_or_fn).__name__}")
    return lambda x: _numpy(model_or_fn(x)).astype(np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _labels(y, n: int, classes: int, who: str) -> np.ndarray:
    y = _numpy(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be {n} integer class indices (shape ({n},)), got shape {y.shape} "
                         f"and dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{who}: labels must lie in [0, {classes - 1}] for {classes} classes, got "
                         f"[{y.min()}, {y.max()}]")
    return y.astype(np.int64)


class ConformalClassifier:
    """Split conformal prediction sets for a classifier (see the module's docstring).

    ``model_or_predict_fn``: a lamina Module or a function x -> (N, C) outputs; ``outputs``:
    ``"logits"`` (softmax is applied) or ``"probs"``. ``method``: ``"lac"``, ``"aps"`` or
    ``"raps"`` (with ``k_reg`` >= 0 and ``lam`` >= 0); ``randomized`` draws u ~ U(0, 1) for
    APS and RAPS from a generator seeded by ``seed``, the calibration samples' first, then each
    call's test samples' (without it, sets can only be larger, and coverage above 1 - alpha).
    :meth:`calibrate` keeps the calibration scores, :meth:`predict_sets` returns an (N, C)
    boolean mask: True for the classes in each set.
    """

    def __init__(self, model_or_predict_fn, method: str = "aps", outputs: str = "logits", randomized: bool = False,
                 k_reg: int = 1, lam: float = 0.01, seed: int | None = 0):
        who = "ConformalClassifier"
        if method not in CLASSIFICATION_SCORES:
            raise ValueError(f"{who}: method must be one of {CLASSIFICATION_SCORES}, got {method!r}")
        if outputs not in ("logits", "probs"):
            raise ValueError(f"{who}: outputs must be 'logits' or 'probs', got {outputs!r}")
        if isinstance(k_reg, bool) or not isinstance(k_reg, numbers.Integral) or k_reg < 0:
            raise ValueError(f"{who}: k_reg must be an integer >= 0, got {k_reg!r}")
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0:
            raise ValueError(f"{who}: lam must be a number >= 0, got {lam!r}")
        self.predict_fn = _predictor(model_or_predict_fn, who)
        self.method, self.outputs, self.randomized = method, outputs, bool(randomized)
        self.k_reg, self.lam = int(k_reg), float(lam)
        self.rng = np.random.default_rng(seed)
        self.scores: np.ndarray | None = None

    def predict_proba(self, x) -> np.ndarray:
        """The model's (N, C) class probabilities."""
        out = self.predict_fn(x)
        if out.ndim != 2:
            raise ValueError(f"ConformalClassifier: the model must give (N, C) outputs, got shape {out.shape}")
        return _softmax(out) if self.outputs == "logits" else out

    def class_scores(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """s(x, y) for every class y: an (N, C) array from (N, C) probabilities; ``u`` the
        (N,) uniform draws of the randomised scores (drawn here when needed and not given)."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.method == "lac":
            return 1.0 - probs
        order = np.argsort(-probs, axis=1, kind="stable")
        ranked = np.take_along_axis(probs, order, axis=1)
        if self.method == "raps":
            ranks = np.arange(1, probs.shape[1] + 1)
            ranked = ranked + self.lam * (ranks > self.k_reg)   # the cumulative sum adds lam (o - k_reg)^+
        cumulative = np.cumsum(ranked, axis=1)
        if self.randomized:
            u = self.rng.random(len(probs)) if u is None else np.asarray(u, dtype=np.float64)
            cumulative = cumulative - u[:, None] * ranked
        scores = np.empty_like(cumulative)
        np.put_along_axis(scores, order, cumulative, axis=1)
        return scores

    def calibrate(self, x, y, alpha: float | None = None) -> ConformalClassifier:
        """Score the calibration samples (x, y); with ``alpha``, check that there are enough."""
        probs = self.predict_proba(x)
        labels = _labels(y, len(probs), probs.shape[1], "ConformalClassifier.calibrate")
        self.scores = self.class_scores(probs)[np.arange(len(labels)), labels]
        if alpha is not None:
            _quantile(self.scores, alpha, "ConformalClassifier.calibrate")
        return self

    def threshold(self, alpha: float) -> float:
        """q_hat at level alpha from the calibration scores."""
        if self.scores is None:
            raise RuntimeError("ConformalClassifier: call calibrate(x, y) on held-out data first")
        return _quantile(self.scores, alpha, "ConformalClassifier")

    def predict_sets(self, x, alpha: float) -> np.ndarray:
        """{y : s(x, y) <= q_hat} per sample, as an (N, C) boolean mask."""
        q_hat = self.threshold(alpha)
        return self.class_scores(self.predict_proba(x)) <= q_hat


class ConformalRegressor:
    """Split conformal intervals for a regressor (see the module's docstring).

    ``model_or_predict_fn`` gives (N,) or (N, 1) point predictions mu(x) for ``"absolute"``
    and ``"normalized"`` (which also needs ``scale_fn``: x -> sigma(x) > 0, such as a model of
    |y - mu|), or (N, 2) lower and upper quantile predictions for ``"cqr"`` (a model trained with
    :func:`lamina.functional.pinball_loss` at alpha/2 and 1 - alpha/2). :meth:`predict_intervals`
    returns the (N,) lower and upper ends.
    """

    def __init__(self, model_or_predict_fn, method: str = "absolute", scale_fn=None):
        who = "ConformalRegressor"
        if method not in REGRESSION_SCORES:
            raise ValueError(f"{who}: method must be one of {REGRESSION_SCORES}, got {method!r}")
        if (method == "normalized") != (scale_fn is not None):
            raise ValueError(f"{who}: scale_fn (x -> sigma(x)) is needed by, and only by, method='normalized'")
        self.method = method
        self.predict_fn = _predictor(model_or_predict_fn, who)
        self.scale_fn = None if scale_fn is None else _predictor(scale_fn, who)
        self.scores: np.ndarray | None = None

    def _outputs(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(centre or lower quantile, scale or upper quantile), each (N,)."""
        out = self.predict_fn(x)
        if self.method == "cqr":
            if out.ndim != 2 or out.shape[1] != 2:
                raise ValueError(f"ConformalRegressor: method='cqr' needs (N, 2) lower and upper quantile "
                                 f"predictions, got shape {out.shape}")
            return out[:, 0], out[:, 1]
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1:
            raise ValueError(f"ConformalRegressor: expected (N,) or (N, 1) predictions, got shape {out.shape}")
        if self.scale_fn is None:
            return out, np.ones_like(out)
        scale = self.scale_fn(x).reshape(out.shape)
        if not np.all(scale > 0):
            raise ValueError("ConformalRegressor: scale_fn must give sigma(x) > 0 for every sample")
        return out, scale

    def calibrate(self, x, y, alpha: float | None = None) -> ConformalRegressor:
        first, second = self._outputs(x)
        y = _numpy(y).astype(np.float64).reshape(-1)
        if y.shape != first.shape:
            raise ValueError(f"ConformalRegressor.calibrate: {len(first)} predictions but targets of shape {y.shape}")
        if self.method == "cqr":
            self.scores = np.maximum(first - y, y - second)
        else:
            self.scores = np.abs(y - first) / second
        if alpha is not None:
            _quantile(self.scores, alpha, "ConformalRegressor.calibrate")
        return self

    def predict_intervals(self, x, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        if self.scores is None:
            raise RuntimeError("ConformalRegressor: call calibrate(x, y) on held-out data first")
        q_hat = _quantile(self.scores, alpha, "ConformalRegressor.predict_intervals")
        first, second = self._outputs(x)
        if self.method == "cqr":
            return first - q_hat, second + q_hat
        return first - q_hat * second, first + q_hat * second


def cv_plus_intervals(fit_fn: Callable, x, y, x_test, alpha: float, folds: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Jackknife+ (``folds=None``: leave one out) or CV+ (``folds`` = K) intervals.

    ``fit_fn(x, y)`` trains a model and returns its predict function x -> (N,) predictions.
    With mu_{-i} the model trained without sample i's fold and R_i = |y_i - mu_{-i}(x_i)|:

        lower = the floor(alpha (n + 1))-th smallest of mu_{-i}(x) - R_i,
        upper = the ceil((1 - alpha)(n + 1))-th smallest of mu_{-i}(x) + R_i,

    which cover with probability at least 1 - 2 alpha (Barber et al. 2021). Sample i lies in
    fold i mod K: shuffle the data first for random folds.
    """
    who = "cv_plus_intervals"
    alpha = _check_alpha(alpha, who)
    x, y = _numpy(x), _numpy(y).astype(np.float64).reshape(-1)
    n = len(y)
    folds = n if folds is None else folds
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or not 2 <= folds <= n:
        raise ValueError(f"{who}: folds must be an integer in [2, n={n}], got {folds!r}")
    low_rank, high_rank = math.floor(alpha * (n + 1) + 1e-9), math.ceil((1 - alpha) * (n + 1) - 1e-9)
    if low_rank < 1 or high_rank > n:
        raise ValueError(f"{who}: {n} samples are too few for alpha={alpha}: need n >= 1/alpha - 1 = "
                         f"{math.ceil(1 / alpha - 1)}")
    fold_of = np.arange(n) % folds
    below, above = [], []
    for fold in range(folds):
        held = fold_of == fold
        predict = fit_fn(x[~held], y[~held])
        residuals = np.abs(y[held] - np.asarray(predict(x[held]), dtype=np.float64).reshape(-1))
        centre = np.asarray(predict(x_test), dtype=np.float64).reshape(-1)
        below.append(centre[:, None] - residuals[None, :])
        above.append(centre[:, None] + residuals[None, :])
    below, above = np.concatenate(below, axis=1), np.concatenate(above, axis=1)
    return np.sort(below, axis=1)[:, low_rank - 1], np.sort(above, axis=1)[:, high_rank - 1]


def coverage(sets, y) -> float:
    """The fraction of samples whose label is in its set."""
    sets = np.asarray(sets, dtype=bool)
    labels = _labels(y, len(sets), sets.shape[1], "coverage")
    return float(np.mean(sets[np.arange(len(labels)), labels]))


def mean_set_size(sets) -> float:
    return float(np.mean(np.asarray(sets, dtype=bool).sum(axis=1)))


def size_stratified_coverage(sets, y) -> dict[int, tuple[float, int]]:
    """{set size: (coverage among the samples with sets of that size, how many)}; a method
    that covers only by giving easy samples large sets shows a low coverage at small sizes."""
    sets = np.asarray(sets, dtype=bool)
    labels = _labels(y, len(sets), sets.shape[1], "size_stratified_coverage")
    sizes, covered = sets.sum(axis=1), sets[np.arange(len(labels)), labels]
    return {int(size): (float(covered[sizes == size].mean()), int(np.sum(sizes == size)))
            for size in np.unique(sizes)}


def interval_coverage(lower, upper, y) -> float:
    """The fraction of targets with lower <= y <= upper."""
    y = _numpy(y).astype(np.float64).reshape(-1)
    return float(np.mean((np.asarray(lower) <= y) & (y <= np.asarray(upper))))


def mean_width(lower, upper) -> float:
    return float(np.mean(np.asarray(upper) - np.asarray(lower)))
