"""Scores of a generative model's samples, computed on feature vectors (N, D).

Any feature extractor can be used: an Inception network's pool features as in the papers, or
the penultimate layer of a small classifier (:func:`extract_features` runs a Module over images
in batches, in evaluation mode and without the graph). All sums are taken in float64.

* :func:`fid` (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the real
  and the generated features, ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``.
* :func:`kid` (Binkowski et al. 2018): the unbiased squared MMD with the polynomial kernel
  ``k(x, y) = (gamma x.y + coef)^degree``, averaged over random subsets.
* :func:`inception_score` (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` from class
  probabilities.
* :func:`precision_recall_density_coverage`: the k-nearest-neighbour precision and recall of
  Kynkäänniemi et al. 2019, density and coverage of Naeem et al. 2020.
* :class:`FID`, :class:`KID`: the same scores accumulated batch by batch (``update``,
  ``compute``, ``reset``; ``result`` as the epoch metrics of :mod:`lamina.train`, whose
  :class:`~lamina.train.FIDMetric` and :class:`~lamina.train.KIDMetric` give them to the Trainer).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from lamina import backend
from lamina.analysis.retrieval import extract_features
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["FID", "KID", "GenerativeScores", "extract_features", "feature_statistics", "fid", "frechet_distance",
           "inception_score", "kid", "polynomial_mmd2", "precision_recall_density_coverage"]


def _features(features, where: str, min_rows: int = 1) -> np.ndarray:
    array = backend.to_numpy(features.data if isinstance(features, Tensor) else features)
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ShapeError(f"{where}: features must be a 2-D array (samples, dims), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{where}: features must be numbers, got dtype {array.dtype}")
    if len(array) < min_rows:
        raise ValueError(f"{where}: needs at least {min_rows} samples, got {len(array)}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: features hold {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def _same_dims(a: np.ndarray, b: np.ndarray, where: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{where}: real features have {a.shape[1]} dims but generated ones {b.shape[1]}")


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and the covariance (D, D) of the rows, with ddof=1 (as pytorch-fid)."""
    x = _features(features, "feature_statistics", min_rows=2)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, max_imaginary: float = 1e-3) -> float:
    """The Fréchet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The square root is scipy's ``sqrtm``; when the product is singular, ``eps`` is added to both
    diagonals first. An imaginary part of the root from round-off is dropped; one larger than
    ``max_imaginary`` on the diagonal raises."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ShapeError(f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, "
                         f"{sigma2.shape}; expected (D,) and (D, D) with one D")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values")
    root = _product_root(sigma1, sigma2)
    if not np.isfinite(root).all():
        offset = np.eye(d) * eps
        root = _product_root(sigma1 + offset, sigma2 + offset)
    if np.iscomplexobj(root):
        imaginary = np.abs(np.diagonal(root).imag).max()
        if imaginary > max_imaginary:
            raise ValueError(f"frechet_distance: the square root of sigma1 @ sigma2 has an imaginary part of "
                             f"{imaginary:.3g} on its diagonal (> {max_imaginary}); are the covariances "
                             "symmetric positive semi-definite?")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def _product_root(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """sqrtm(sigma1 @ sigma2), all NaN when scipy finds the product singular."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            return scipy.linalg.sqrtm(sigma1 @ sigma2)
        except scipy.linalg.LinAlgWarning:
            return np.full(sigma1.shape, np.nan)


def fid(features_real, features_fake) -> float:
    """The Fréchet Inception Distance between two feature sets (N_r, D) and (N_g, D)."""
    real = _features(features_real, "fid: features_real", min_rows=2)
    fake = _features(features_fake, "fid: features_fake", min_rows=2)
    _same_dims(real, fake, "fid")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def polynomial_mmd2(x, y, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> float:
    """The unbiased squared MMD between the rows of ``x`` (m, D) and ``y`` (n, D) with the kernel
    ``k(a, b) = (gamma a.b + coef)^degree``, ``gamma = 1 / D`` by default:
    ``sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1)) - 2 sum_ij k(x_i, y_j) / (m n)``."""
    x, y = _features(x, "polynomial_mmd2: x", min_rows=2), _features(y, "polynomial_mmd2: y", min_rows=2)
    _same_dims(x, y, "polynomial_mmd2")
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    m, n = len(x), len(y)
    k_xx = (gamma * (x @ x.T) + coef) ** degree
    k_yy = (gamma * (y @ y.T) + coef) ** degree
    k_xy = (gamma * (x @ y.T) + coef) ** degree
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def kid(features_real, features_fake, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef: float = 1.0, seed: int | None = 0) -> tuple[float, float]:
    """The Kernel Inception Distance: the mean and the standard deviation (ddof=0) over
    ``subsets`` draws of :func:`polynomial_mmd2` between ``subset_size`` real and
    ``subset_size`` generated rows, each drawn without replacement (as torchmetrics' KID)."""
    real = _features(features_real, "kid: features_real")
    fake = _features(features_fake, "kid: features_fake")
    _same_dims(real, fake, "kid")
    if not isinstance(subsets, (int, np.integer)) or subsets < 1:
        raise ValueError(f"kid: subsets must be a positive int, got {subsets!r}")
    if not isinstance(subset_size, (int, np.integer)) or subset_size < 2:
        raise ValueError(f"kid: subset_size must be an int >= 2, got {subset_size!r}")
    if subset_size > min(len(real), len(fake)):
        raise ValueError(f"kid: subset_size {subset_size} is more than the {len(real)} real or {len(fake)} "
                         "generated samples; lower it")
    rng = np.random.default_rng(seed)
    scores = np.array([polynomial_mmd2(real[rng.permutation(len(real))[:subset_size]],
                                       fake[rng.permutation(len(fake))[:subset_size]], degree, gamma, coef)
                       for _ in range(subsets)])
    return float(scores.mean()), float(scores.std())


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """The Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` of class probabilities (N, K), with
    ``p(y)`` the mean of the rows of each split: the mean and the standard deviation (ddof=0, as
    the original code) over ``splits`` contiguous splits of (nearly) equal size."""
    p = _features(probs, "inception_score: probs")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("inception_score: probs must be probabilities: rows of values >= 0 summing to 1 "
                         "(apply a softmax to logits)")
    if not isinstance(splits, (int, np.integer)) or not 1 <= splits <= len(p):
        raise ValueError(f"inception_score: splits must be an int in [1, {len(p)}], got {splits!r}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        ratio = np.divide(part, marginal, out=np.ones_like(part), where=part > 0)
        kl = (part * np.log(ratio)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


class GenerativeScores(NamedTuple):
    precision: float
    recall: float
    density: float
    coverage: float


def precision_recall_density_coverage(features_real, features_fake, k: int = 5,
                                      chunk_size: int = 1024) -> GenerativeScores:
    """k-nearest-neighbour fidelity and diversity scores, with r_i the Euclidean distance of
    real sample i to its k-th nearest real neighbour and s_j that of generated sample j:

    * precision: the fraction of generated samples inside some real ball B(real_i, r_i);
    * recall: the fraction of real samples inside some generated ball B(fake_j, s_j);
    * density: ``(1 / (k M)) sum_j sum_i [fake_j in B(real_i, r_i)]``;
    * coverage: the fraction of real balls holding at least one generated sample.

    Distances are exact, computed ``chunk_size`` rows at a time (memory ~ chunk_size * N)."""
    real = _features(features_real, "precision_recall_density_coverage: features_real")
    fake = _features(features_fake, "precision_recall_density_coverage: features_fake")
    _same_dims(real, fake, "precision_recall_density_coverage")
    if not isinstance(k, (int, np.integer)) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"precision_recall_density_coverage: k must be an int in [1, {min(len(real), len(fake))})"
                         f" for {len(real)} real and {len(fake)} generated samples, got {k!r}")
    real_radii = _kth_neighbour_distances(real, k, chunk_size)
    fake_radii = _kth_neighbour_distances(fake, k, chunk_size)
    inside_counts = np.zeros(len(fake), np.int64)          # real balls holding each generated sample
    nearest_fake = np.full(len(real), np.inf)
    recalled = np.zeros(len(real), bool)
    for start in range(0, len(fake), chunk_size):
        distances = _distances(real, fake[start:start + chunk_size])       # (N_real, chunk)
        inside_counts[start:start + chunk_size] = (distances < real_radii[:, None]).sum(axis=0)
        nearest_fake = np.minimum(nearest_fake, distances.min(axis=1))
        recalled |= (distances < fake_radii[None, start:start + chunk_size]).any(axis=1)
    return GenerativeScores(precision=float((inside_counts > 0).mean()), recall=float(recalled.mean()),
                            density=float(inside_counts.sum() / (k * len(fake))),
                            coverage=float((nearest_fake < real_radii).mean()))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


def _kth_neighbour_distances(x: np.ndarray, k: int, chunk_size: int) -> np.ndarray:
    """The distance of each row to its k-th nearest other row (the row itself, at 0, is the 0-th)."""
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk_size):
        distances = _distances(x[start:start + chunk_size], x)
        distances[np.arange(len(distances)), np.arange(start, start + len(distances))] = 0.0
        radii[start:start + chunk_size] = np.partition(distances, k, axis=1)[:, k]
    return radii


class _GaussianAccumulator:
    """The count, mean and centred scatter sum(x - mean)(x - mean)^T of rows met batch by batch,
    merged by Chan et al.'s pairwise update (float64)."""

    def __init__(self):
        self.count, self.mean, self.scatter = 0, None, None

    def add(self, x: np.ndarray) -> None:
        n, batch_mean = len(x), x.mean(axis=0)
        centred = x - batch_mean
        batch_scatter = centred.T @ centred
        if self.count == 0:
            self.count, self.mean, self.scatter = n, batch_mean, batch_scatter
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.scatter = self.scatter + batch_scatter + np.outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def covariance(self) -> np.ndarray:
        return self.scatter / (self.count - 1)


class FID:
    """FID accumulated over batches without keeping the features: ``update(real=..., fake=...)``
    (either or both), ``compute()`` (or ``result()``), ``reset()``. With ``reset_real=False``,
    ``reset()`` keeps the real statistics, so the real set is fed once for many evaluations."""

    name = "fid"

    def __init__(self, reset_real: bool = True):
        self.reset_real = reset_real
        self.real, self.fake = _GaussianAccumulator(), _GaussianAccumulator()

    def reset(self) -> None:
        if self.reset_real:
            self.real = _GaussianAccumulator()
        self.fake = _GaussianAccumulator()

    def update(self, real=None, fake=None) -> None:
        for accumulator, features, which in ((self.real, real, "real"), (self.fake, fake, "fake")):
            if features is None:
                continue
            x = _features(features, f"FID.update: {which}")
            other = self.fake if which == "real" else self.real
            for seen in (accumulator, other):
                if seen.count and seen.mean.shape[0] != x.shape[1]:
                    raise ShapeError(f"FID.update: {which} features have {x.shape[1]} dims, earlier features "
                                     f"{seen.mean.shape[0]}")
            accumulator.add(x)

    def compute(self) -> float:
        for accumulator, which in ((self.real, "real"), (self.fake, "fake")):
            if accumulator.count < 2:
                raise ValueError(f"FID.compute: needs at least 2 {which} samples for a covariance, "
                                 f"got {accumulator.count}")
        return frechet_distance(self.real.mean, self.real.covariance(), self.fake.mean, self.fake.covariance())

    result = compute


class KID:
    """KID accumulated over batches (the features are kept: the subsets are drawn from all of
    them): ``update(real=..., fake=...)``, ``compute()`` -> (mean, std), ``reset()``; the keyword
    arguments are those of :func:`kid`."""

    name = "kid"

    def __init__(self, subsets: int = 100, subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                 coef: float = 1.0, seed: int | None = 0, reset_real: bool = True):
        self.options = dict(subsets=subsets, subset_size=subset_size, degree=degree, gamma=gamma, coef=coef,
                            seed=seed)
        self.reset_real = reset_real
        self.real, self.fake = [], []

    def reset(self) -> None:
        if self.reset_real:
            self.real = []
        self.fake = []

    def update(self, real=None, fake=None) -> None:
        for store, features, which in ((self.real, real, "real"), (self.fake, fake, "fake")):
            if features is None:
                continue
            x = _features(features, f"KID.update: {which}")
            for earlier in self.real[:1] + self.fake[:1]:
                if earlier.shape[1] != x.shape[1]:
                    raise ShapeError(f"KID.update: {which} features have {x.shape[1]} dims, earlier features "
                                     f"{earlier.shape[1]}")
            store.append(x)

    def compute(self) -> tuple[float, float]:
        if not self.real or not self.fake:
            raise ValueError("KID.compute: needs real and generated features; call update(real=..., fake=...)")
        return kid(np.concatenate(self.real), np.concatenate(self.fake), **self.options)

    result = compute
