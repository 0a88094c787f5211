"""ROCKET / MiniRocket / MultiRocket features and a ridge classifier, the papers' pipeline.

The features are standardised with the training mean and standard deviation, then a one-vs-rest
ridge regression to +-1 targets is fitted for each alpha of ``alphas`` (by default 10 values
from 1e-3 to 1e3, log-spaced, as the papers) and the one with the smallest leave-one-out error
is kept (scikit-learn's ``RidgeClassifierCV``, efficient leave-one-out cross-validation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.models.tsc.minirocket import MiniRocket
from lamina.models.tsc.multirocket import MultiRocket
from lamina.models.tsc.rocket import Rocket

__all__ = ["RocketClassifier"]


class RocketClassifier:
    """``transform``: 'rocket', 'minirocket', 'multirocket', or an object with ``fit`` and
    ``transform`` (e.g. a configured :class:`Rocket`). ``num_kernels``: ROCKET's kernels, or
    MiniRocket's or MultiRocket's number of features. ``fit(x, y)``, ``predict(x)``, ``score(x, y)``
    (accuracy); ``alpha_`` is the chosen ridge penalty after fitting."""

    def __init__(self, transform: Any = "rocket", num_kernels: int | None = None, seed: int | None = None,
                 alphas=None):
        if isinstance(transform, str):
            if transform == "rocket":
                transform = Rocket(num_kernels or 10_000, seed=seed)
            elif transform == "minirocket":
                transform = MiniRocket(num_kernels or 10_000, seed=seed)
            elif transform == "multirocket":
                transform = MultiRocket(num_kernels or 50_000, seed=seed)
            else:
                raise ValueError(f"RocketClassifier: transform must be 'rocket', 'minirocket', 'multirocket' or "
                                 f"a transform object, got {transform!r}")
        elif not (hasattr(transform, "fit") and hasattr(transform, "transform")):
            raise TypeError(f"RocketClassifier: transform must have fit and transform methods, got {transform!r}")
        self.transform = transform
        self.alphas = np.logspace(-3, 3, 10) if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.ridge = None

    def _scaled(self, features: np.ndarray) -> np.ndarray:
        return (features - self._mean) / self._scale

    def fit(self, x: Any, y: Any) -> RocketClassifier:
        from sklearn.linear_model import RidgeClassifierCV

        features = self.transform.fit(x).transform(x)
        y = np.asarray(y)
        if len(y) != len(features):
            raise ValueError(f"RocketClassifier.fit: got {len(features)} series but {len(y)} labels")
        self._mean = features.mean(axis=0)
        std = features.std(axis=0)
        self._scale = np.where(std > 0, std, 1.0)
        self.ridge = RidgeClassifierCV(alphas=self.alphas).fit(self._scaled(features), y)
        self.alpha_ = float(self.ridge.alpha_)
        self.classes_ = self.ridge.classes_
        return self

    def decision_function(self, x: Any) -> np.ndarray:
        if self.ridge is None:
            from lamina.data.preprocessing import NotFittedError
            raise NotFittedError("RocketClassifier: call fit(x, y) before predicting")
        return self.ridge.decision_function(self._scaled(self.transform.transform(x)))

    def predict(self, x: Any) -> np.ndarray:
        scores = self.decision_function(x)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.int64)]
        return self.classes_[scores.argmax(axis=1)]

    def score(self, x: Any, y: Any) -> float:
        """Accuracy on (x, y)."""
        return float(np.mean(self.predict(x) == np.asarray(y)))
