"""Exact Gaussian-process regression, its hyperparameters learned through autodiff.

The model: f ~ GP(m, k), y = f(x) + eps with eps ~ N(0, noise). For training inputs X
(n rows) and targets y, with K = k(X, X) + noise I = L L^T (Cholesky) and alpha = K^-1 (y - m):

    log p(y | X) = -1/2 (y - m)^T alpha - sum_i log L_ii - n/2 log(2 pi)

(summed over the columns of a 2-D y). :meth:`GaussianProcessRegressor.fit` maximizes it
over the kernel's hyperparameters, the noise and the constant mean by gradient steps
(Adam or L-BFGS); the gradients come from lamina's autodiff through the Cholesky factor.
The prediction at new inputs X* (K* = k(X*, X), v = L^-1 K*^T) is Gaussian with

    mean = m + K* alpha,        cov = k(X*, X*) - v^T v

(Rasmussen & Williams, *Gaussian Processes for Machine Learning*, algorithm 2.1).
The predictive variance is that of f, without the likelihood's ``noise`` (``predict(...,
include_noise=True)`` adds it); a
:class:`~lamina.models.kernels.White` kernel in the kernel adds its noise level to it,
as in scikit-learn.

Jitter: where K is not numerically positive definite (the Cholesky factorization fails),
jitter * mean(diag K) is added to the diagonal and the factorization tried again, with
jitter = 1e-10, 1e-9, ..., 1e-4 in turn (float32 starts at 1e-6); beyond that the
LinAlgError is raised. ``jitter_`` tells the last amount used (0 when none was needed).

The training data are buffers of the state dict, so :func:`lamina.save` keeps them with the
hyperparameters (the kernel saved by its config) and a loaded model predicts as the saved one.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional import diagonal
from lamina.functional.linalg import cholesky, cholesky_solve, solve_triangular
from lamina.models.kernels import RBF, Kernel, ScaleKernel, as_rows, match_length_scales
from lamina.nn import Module, Parameter
from lamina.nn.constructor_config import register_with_arguments

MEANS = ("zero", "constant")
OPTIMIZERS = ("adam", "lbfgs")
_DATA_BUFFERS = ("train_x", "train_y", "y_offset", "y_scale")


def _jitters(dtype) -> list[float]:
    first = -10 if numpy.dtype(dtype) == numpy.float64 else -6
    return [0.0] + [10.0 ** k for k in range(first, -3)]


@register_with_arguments(modules=("kernel",))
class GaussianProcessRegressor(Module):
    """Exact GP regression, as scikit-learn's GaussianProcessRegressor and GPyTorch's ExactGP.

    Args:
        kernel: the covariance function (:mod:`lamina.models.kernels`); by default
            ``ScaleKernel(RBF())``.
        noise: the variance of the Gaussian observation noise added to K's diagonal (positive;
            stored through its log as ``log_noise``). scikit-learn's ``alpha``.
        learn_noise: whether :meth:`fit` learns the noise (else it stays fixed).
        mean: ``'zero'`` or ``'constant'`` (a learned constant ``mean_constant``, set to the
            mean of the targets when fitting starts).
        normalize_y: targets are centred and scaled to unit variance before fitting (as
            scikit-learn's option; the predictions are scaled back).
        dtype: of the computations (float64 by default: the Cholesky factor of an n x n
            covariance loses digits with its conditioning).

    Example::

        gp = GaussianProcessRegressor(ScaleKernel(RBF()), noise=0.1)
        gp.fit(x, y, optimizer="lbfgs")
        mean, std = gp.predict(x_new, return_std=True)
    """

    def __init__(self, kernel: Kernel | None = None, noise: float = 1e-2, learn_noise: bool = True,
                 mean: str = "zero", normalize_y: bool = False, dtype=numpy.float64):
        super().__init__()
        if mean not in MEANS:
            raise ValueError(f"GaussianProcessRegressor: mean must be one of {MEANS}, got {mean!r}")
        noise_value = numpy.asarray(noise, dtype=numpy.float64)
        if noise_value.ndim != 0 or not numpy.isfinite(noise_value) or noise_value <= 0:
            raise ValueError(f"GaussianProcessRegressor: noise must be a positive number, got {noise!r}")
        self.dtype = numpy.dtype(dtype)
        self.kernel = (ScaleKernel(RBF()) if kernel is None else kernel)
        if not isinstance(self.kernel, Kernel):
            raise TypeError(f"GaussianProcessRegressor: kernel must be a lamina.models.kernels.Kernel, "
                            f"got {type(kernel).__name__}")
        self.kernel.to(self.dtype)
        self.log_noise = Parameter(backend.xp.asarray(numpy.log(noise_value), dtype=self.dtype),
                                   trainable=learn_noise, dtype=self.dtype)
        self.mean = mean
        if mean == "constant":
            self.mean_constant = Parameter(backend.xp.zeros((), dtype=self.dtype), dtype=self.dtype)
        self.normalize_y = bool(normalize_y)
        for name in _DATA_BUFFERS:
            self.register_buffer(name, None)
        self.jitter_ = 0.0
        self._cache = None
        self.built = True

    @property
    def noise(self) -> Tensor:
        return self.log_noise.exp()

    @property
    def fitted(self) -> bool:
        return self.train_x is not None

    # -- data ------------------------------------------------------------------
    def _targets(self, y, n: int) -> numpy.ndarray:
        y = numpy.asarray(backend.to_numpy(y.data if isinstance(y, Tensor) else y), dtype=self.dtype)
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ShapeError(f"GaussianProcessRegressor.fit: targets of shape {y.shape} do not fit {n} inputs; "
                             f"expected ({n},) or ({n}, n_targets)")
        if not numpy.all(numpy.isfinite(y)):
            raise ValueError("GaussianProcessRegressor.fit: the targets hold NaN or infinite values")
        return y

    def set_data(self, x, y) -> GaussianProcessRegressor:
        """Store the training data (and, with ``normalize_y``, its mean and scale) without
        fitting the hyperparameters."""
        x = as_rows(x, self.dtype, "GaussianProcessRegressor.fit").detach()
        y = self._targets(y, x.shape[0])
        if self.normalize_y:
            offset, scale = y.mean(axis=0), y.std(axis=0)
            scale = numpy.where(scale == 0, 1.0, scale)
        else:
            offset, scale = numpy.zeros(y.shape[1:], self.dtype), numpy.ones(y.shape[1:], self.dtype)
        self.train_x, self.train_y = x.data, backend.xp.asarray(y)
        self.y_offset = backend.xp.asarray(offset, dtype=self.dtype)
        self.y_scale = backend.xp.asarray(scale, dtype=self.dtype)
        self._cache = None
        return self

    def _normalized_targets(self) -> numpy.ndarray:
        y = (self.train_y - self.y_offset) / self.y_scale
        return y.reshape(y.shape[0], -1)

    # -- the marginal likelihood -----------------------------------------------
    def _mean_value(self):
        return self.mean_constant if self.mean == "constant" else 0.0

    def _factor(self, x: Tensor) -> Tensor:
        """The Cholesky factor of k(x, x) + noise I, with jitter where it fails (module docstring)."""
        k = self.kernel(x)
        eye = backend.xp.eye(x.shape[0], dtype=self.dtype)
        k = k + self.noise * Tensor._wrap(eye)
        scale = float(backend.xp.mean(backend.xp.diagonal(k.data)))
        for jitter in _jitters(self.dtype):
            try:
                l_factor = cholesky(k + Tensor._wrap(eye * (jitter * scale)) if jitter else k)
            except numpy.linalg.LinAlgError:
                continue
            self.jitter_ = jitter
            return l_factor
        raise numpy.linalg.LinAlgError(
            f"GaussianProcessRegressor: the covariance matrix of {x.shape[0]} training inputs is not positive "
            f"definite even with jitter {_jitters(self.dtype)[-1]:g} * mean(diag K) added; check the kernel "
            f"{self.kernel!r} and the noise {float(self.noise.item()):g}")

    def _posterior_terms(self) -> tuple[Tensor, Tensor, Tensor]:
        """(L, alpha, centred targets), on the graph."""
        if not self.fitted:
            raise RuntimeError("GaussianProcessRegressor: no training data; call fit(x, y) first")
        x = Tensor._wrap(self.train_x)
        y = Tensor._wrap(self._normalized_targets()) - self._mean_value()
        l_factor = self._factor(x)
        return l_factor, cholesky_solve(y, l_factor), y

    def log_marginal_likelihood(self) -> Tensor:
        """log p(y | X) at the current hyperparameters (of the normalized targets with
        ``normalize_y``), a scalar tensor on the graph: ``backward()`` gives the gradients
        with respect to every log hyperparameter."""
        l_factor, alpha, y = self._posterior_terms()
        n, targets = y.shape
        data_fit = -0.5 * (y * alpha).sum()
        complexity = diagonal(l_factor).log().sum() * targets
        return data_fit - complexity - 0.5 * n * targets * math.log(2 * math.pi)

    # -- fitting ---------------------------------------------------------------
    def fit(self, x, y, steps: int = 100, lr: float | None = None, optimizer: str | None = "lbfgs",
            verbose: bool = False) -> GaussianProcessRegressor:
        """Store the data and maximize the log marginal likelihood over the trainable
        hyperparameters: ``steps`` Adam steps (lr 0.1 by default) or ``steps`` L-BFGS
        iterations with a strong Wolfe line search (lr 1 by default). ``optimizer=None`` or
        ``steps=0`` keeps the hyperparameters as they are. The cost minimized is
        -log p(y | X) / (n * targets). The Cholesky factor for prediction is computed at the
        end (and again by ``predict`` only if the hyperparameters change). Returns self."""
        from lamina.optim import LBFGS, Adam

        if optimizer not in OPTIMIZERS + (None,):
            raise ValueError(f"GaussianProcessRegressor.fit: optimizer must be one of {OPTIMIZERS} or None, "
                             f"got {optimizer!r}")
        self.set_data(x, y)
        if self.mean == "constant" and self.mean_constant.trainable:
            self.mean_constant.data = backend.xp.asarray(self._normalized_targets().mean(), dtype=self.dtype)
        self.kernel._check_features(self.train_x.shape[1])
        params = self.parameters(trainable_only=True)
        if optimizer is None or steps <= 0 or not params:
            self._posterior_cache()
            return self
        count = self.train_y.size

        def cost():
            self.zero_grad()
            value = -self.log_marginal_likelihood() / count
            value.backward()
            return value

        if optimizer == "adam":
            opt = Adam(params, lr=0.1 if lr is None else lr)
            for step in range(steps):
                value = cost()
                opt.step()
                if verbose:
                    print(f"step {step + 1}/{steps}: -log p(y|X)/n = {value.item():.6f}")
        else:
            opt = LBFGS(params, lr=1.0 if lr is None else lr, max_iter=steps, tolerance_grad=1e-9,
                        tolerance_change=1e-12, line_search_fn="strong_wolfe")
            opt.step(cost)
            if verbose:
                print(f"L-BFGS: -log p(y|X)/n = {cost().item():.6f}")
        self.zero_grad()
        self._posterior_cache()
        return self

    # -- prediction ------------------------------------------------------------
    def _state_key(self) -> tuple:
        return tuple(backend.to_numpy(p.data).tobytes() for p in self.parameters()) + (id(self.train_x),)

    def _posterior_cache(self) -> tuple:
        """(L, alpha) for the current hyperparameters and data, computed once."""
        key = self._state_key()
        if self._cache is None or self._cache[0] != key:
            with no_grad():
                l_factor, alpha, _ = self._posterior_terms()
            self._cache = (key, l_factor, alpha)
        return self._cache[1:]

    def _latent(self, x, full_cov: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Mean (m, targets) and variance (m,) or covariance (m, m) of f at x, normalized scale."""
        x = as_rows(x, self.dtype, "GaussianProcessRegressor.predict").detach()
        with no_grad():
            prior = self.kernel(x) if full_cov else self.kernel.diag(x)
            mean_value = self._mean_value()
            mean_value = float(mean_value.item()) if isinstance(mean_value, Tensor) else mean_value
            if not self.fitted:
                return backend.xp.full((x.shape[0], 1), mean_value, dtype=self.dtype), prior.data
            if x.shape[1] != self.train_x.shape[1]:
                raise ShapeError(f"GaussianProcessRegressor.predict: inputs of shape {tuple(x.shape)} have "
                                 f"{x.shape[1]} features; the model was fitted on {self.train_x.shape[1]}")
            l_factor, alpha = self._posterior_cache()
            cross = self.kernel(x, Tensor._wrap(self.train_x))
            mean = cross @ alpha + mean_value
            v = solve_triangular(l_factor, cross.T, upper=False)
            if full_cov:
                cov = prior - v.T @ v
            else:
                cov = prior - (v * v).sum(axis=0)
        return mean.data, cov.data

    def predict(self, x, return_std: bool = False, return_cov: bool = False, include_noise: bool = False):
        """The posterior mean at x (m rows), and its standard deviation (``return_std``) or
        covariance (``return_cov``), as arrays in the targets' units: shapes (m,), (m,) and
        (m, m) for 1-D targets, (m, t), (m, t) and (m, m, t) for t targets. Before ``fit`` it
        is the prior. The spread is that of f, or of y = f + eps with ``include_noise`` (the
        likelihood's noise added to the variance). Negative variances from rounding are set to 0."""
        if return_std and return_cov:
            raise ValueError("GaussianProcessRegressor.predict: return_std and return_cov cannot both be True")
        mean, spread = self._latent(x, full_cov=return_cov)
        if include_noise:
            noise = backend.xp.asarray(self.noise.data, dtype=self.dtype)
            spread = spread + (noise * backend.xp.eye(spread.shape[0], dtype=self.dtype) if return_cov else noise)
        one_target = not self.fitted or self.train_y.ndim == 1
        offset = 0.0 if not self.fitted else self.y_offset
        scale = backend.xp.ones((1,), self.dtype) if not self.fitted else self.y_scale.reshape(-1)
        mean = mean * scale + offset
        mean = mean[:, 0] if one_target else mean
        if return_cov:
            cov = spread[..., None] * (scale * scale)
            return mean, (cov[..., 0] if one_target else cov)
        if return_std:
            std = backend.xp.sqrt(backend.xp.maximum(spread, 0))[:, None] * scale
            return mean, (std[:, 0] if one_target else std)
        return mean

    def forward(self, x) -> Tensor:
        """:meth:`predict`'s mean at the rows of x, as a tensor off the graph (what calling the
        model gives)."""
        return Tensor._wrap(backend.xp.asarray(self.predict(x)))

    def sample_y(self, x, n_samples: int = 1, random_state: int | numpy.random.Generator | None = 0):
        """Draws of the posterior process at x (the prior before ``fit``): shape (m, n_samples)
        for 1-D targets, (m, t, n_samples) for t targets, as scikit-learn's. The covariance
        is factored by its eigendecomposition (negative rounding eigenvalues taken as 0)."""
        rng = random_state if isinstance(random_state, numpy.random.Generator) else \
            numpy.random.default_rng(random_state)
        mean, cov = self.predict(x, return_cov=True)
        mean, cov = backend.to_numpy(mean), backend.to_numpy(cov)
        one_target = mean.ndim == 1
        mean, cov = (mean[:, None], cov[..., None]) if one_target else (mean, cov)
        draws = []
        for t in range(mean.shape[1]):
            values, vectors = numpy.linalg.eigh(cov[..., t])
            factor = vectors * numpy.sqrt(numpy.maximum(values, 0))
            draws.append(mean[:, t, None] + factor @ rng.standard_normal((mean.shape[0], n_samples)))
        samples = numpy.stack(draws, axis=1)
        return samples[:, 0] if one_target else samples

    # -- saving ----------------------------------------------------------------
    def load_state_dict(self, state: dict, strict: bool = True):
        """The hyperparameters and, where the state holds them, the training data (of any size)."""
        state = dict(state)
        for name in _DATA_BUFFERS:
            if name in state:
                self.register_buffer(name, backend.xp.asarray(state[name], dtype=self.dtype))
        if self.fitted:
            self.kernel._check_features(self.train_x.shape[1])
        match_length_scales(self, state)
        self._cache = None
        return super().load_state_dict(state, strict=strict)

    def extra_repr(self) -> str:
        return f"noise={float(self.noise.item()):.4g}, mean={self.mean!r}, normalize_y={self.normalize_y}"
