r"""Small biased tasks for fairness tests and examples.

* :func:`make_biased_classification`: a binary group A (P(A = 1) = ``group_share``), features
  z ~ N(0, I) with the first shifted by ``shift`` (2A - 1) so that it is a proxy of A, labels
  y ~ Bernoulli(sigmoid(1.5 x_0 + z_1 - 0.5 z_2)) (so the base rate differs by group), then
  label noise that differs by group: a positive label of group a is flipped to 0 with
  probability ``flip_rates[a]`` (under-recorded positives of one group, a historical bias).
* :func:`breast_cancer_with_group`: scikit-learn's breast-cancer data (standardised features,
  y = 1 for benign) with a synthetic group A correlated with the mean radius:
  A = [mean radius + noise > its median], the noise N(0, ``noise``^2) in standard units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["breast_cancer_with_group", "make_biased_classification"]


def make_biased_classification(n: int = 1000, features: int = 4, shift: float = 0.5, group_share: float = 0.5,
                               flip_rates: tuple[float, float] = (0.3, 0.0),
                               seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x of shape (n, features) float64, y in {0, 1}, group in {0, 1}); see the module docstring."""
    if features < 3 or n < 1:
        raise ValueError(f"make_biased_classification: needs n >= 1 and features >= 3, got {n}, {features}")
    if not all(0 <= r <= 1 for r in flip_rates) or len(flip_rates) != 2:
        raise ValueError(f"make_biased_classification: flip_rates must be two probabilities, got {flip_rates!r}")
    rng = np.random.default_rng(seed)
    group = (rng.random(n) < group_share).astype(np.int64)
    z = rng.normal(size=(n, features))
    x = z.copy()
    x[:, 0] += shift * (2 * group - 1)
    logits = 1.5 * x[:, 0] + z[:, 1] - 0.5 * z[:, 2]
    labels = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    flipped = (labels == 1) & (rng.random(n) < np.asarray(flip_rates)[group])
    labels[flipped] = 0
    return x, labels, group


def breast_cancer_with_group(noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (569, 30) standardised, y (1 benign), group) with the group tied to the mean radius."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    radius = x[:, list(data.feature_names).index("mean radius")]
    noisy = radius + np.random.default_rng(seed).normal(scale=noise, size=len(radius))
    return x, data.target.astype(np.int64), (noisy > np.median(noisy)).astype(np.int64)
