"""The sparse variational Gaussian process (SVGP; Hensman, Fusi & Lawrence 2013, "Gaussian
processes for big data"; Hensman, Matthews & Ghahramani 2015), in the whitened form.

M inducing points Z (M, d) carry u = f(Z) ~ N(0, K_mm), K_mm = k(Z, Z) + jitter I = L L^T.
Whitened, u = L v with v ~ N(0, I), and the variational posterior is q(v) = N(m, S) with
S = L_S L_S^T (L_S lower triangular, ``variational_scale_tril``). At inputs X, with
A = L^-1 K_mn (M, n), the marginals of q(f) are

    mu_i = A_i^T m,        s_i = k(x_i, x_i) - ||A_i||^2 + ||L_S^T A_i||^2.

For the Gaussian likelihood y_i ~ N(f_i, sigma_n^2) the expected log-likelihood is closed form:

    E_q[log p(y_i | f_i)] = -1/2 log(2 pi sigma_n^2) - ((y_i - mu_i)^2 + s_i) / (2 sigma_n^2),

and the evidence lower bound on log p(y | X), over a minibatch B of the N training points,

    ELBO = N / |B| sum_{i in B} E_q[log p(y_i | f_i)] - KL[q(v) || N(0, I)],
    KL   = 1/2 (tr S + m^T m - M - log|S|),    log|S| = sum_j log (L_S)_jj^2.

With Z = X (M = N) and the optimal q (:meth:`SVGP.set_optimal_variational`: precision
Lambda = I + A A^T / sigma_n^2, m = Lambda^-1 A y / sigma_n^2, S = Lambda^-1) the bound
equals the exact log marginal likelihood (less the jitter's share).

Hyperparameters (the kernel's, ``log_noise``), the inducing points and q are learned together
by Adam on minibatches (:meth:`SVGP.fit`), through lamina's autodiff.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional import diagonal, tril
from lamina.functional.linalg import cholesky, solve_triangular
from lamina.models.kernels import RBF, Kernel, ScaleKernel, as_rows
from lamina.nn import Module, Parameter
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["SVGP"]


@register_with_arguments(modules=("kernel",))
class SVGP(Module):
    """Sparse variational GP regression with a Gaussian likelihood (GPyTorch's
    ``ApproximateGP`` with a whitened ``VariationalStrategy``, GPflow's ``SVGP``).

    Args:
        inducing_points: the initial inducing inputs Z, (M, d) or (M,) for one feature.
        kernel: the prior covariance (:mod:`lamina.models.kernels`); ``ScaleKernel(RBF())`` by default.
        noise: the initial variance sigma_n^2 of the observation noise (positive), stored as ``log_noise``.
        learn_inducing: whether :meth:`fit` moves Z (else it stays fixed).
        jitter: added to the diagonal of K_mm before its Cholesky factorization.
        dtype: of the parameters and computations (float64 by default).

    Example::

        gp = SVGP(x[:20], ScaleKernel(RBF()), noise=0.1)
        gp.fit(x, y, steps=300, batch_size=64)
        mean, variance = gp.predict(x_new)
    """

    def __init__(self, inducing_points, kernel: Kernel | None = None, noise: float = 0.1,
                 learn_inducing: bool = True, jitter: float = 1e-8, dtype=numpy.float64):
        super().__init__()
        self.dtype = numpy.dtype(dtype)
        z = backend.to_numpy(as_rows(inducing_points, self.dtype, "SVGP").data)
        if z.shape[0] == 0 or not numpy.all(numpy.isfinite(z)):
            raise ValueError(f"SVGP: expected finite inducing points of shape (M, d) with M >= 1, got shape {z.shape}")
        noise_value = numpy.asarray(noise, dtype=numpy.float64)
        if noise_value.ndim != 0 or not numpy.isfinite(noise_value) or noise_value <= 0:
            raise ValueError(f"SVGP: noise must be a positive number, got {noise!r}")
        if not jitter >= 0:
            raise ValueError(f"SVGP: jitter must be >= 0, got {jitter!r}")
        self.kernel = ScaleKernel(RBF()) if kernel is None else kernel
        if not isinstance(self.kernel, Kernel):
            raise TypeError(f"SVGP: kernel must be a lamina.models.kernels.Kernel, got {type(kernel).__name__}")
        self.kernel.to(self.dtype)
        self.kernel._check_features(z.shape[1])
        m = z.shape[0]
        self.inducing_points = Parameter(backend.xp.asarray(z), trainable=learn_inducing, dtype=self.dtype)
        self.variational_mean = Parameter(backend.xp.zeros(m, dtype=self.dtype), dtype=self.dtype)
        self.variational_scale_tril = Parameter(backend.xp.eye(m, dtype=self.dtype), dtype=self.dtype)
        self.log_noise = Parameter(backend.xp.asarray(numpy.log(noise_value), dtype=self.dtype), dtype=self.dtype)
        self.jitter = float(jitter)
        self.built = True

    @property
    def num_inducing(self) -> int:
        return self.inducing_points.shape[0]

    @property
    def noise(self) -> Tensor:
        return self.log_noise.exp()

    def _rows(self, x, who: str) -> Tensor:
        x = as_rows(x, self.dtype, who)
        if x.shape[1] != self.inducing_points.shape[1]:
            raise ShapeError(f"{who}: inputs of shape {tuple(x.shape)} have {x.shape[1]} features; the inducing "
                             f"points have {self.inducing_points.shape[1]} (shape {tuple(self.inducing_points.shape)})")
        return x

    def _targets(self, y, n: int, who: str) -> Tensor:
        y = numpy.asarray(backend.to_numpy(y.data if isinstance(y, Tensor) else y), dtype=self.dtype)
        if y.shape != (n,):
            raise ShapeError(f"{who}: expected targets of shape ({n},) for {n} inputs, got {y.shape}")
        if not numpy.all(numpy.isfinite(y)):
            raise ValueError(f"{who}: the targets hold NaN or infinite values")
        return Tensor._wrap(backend.xp.asarray(y))

    def _projection(self, x: Tensor) -> Tensor:
        """A = L^-1 K_mn (M, n), L the Cholesky factor of K_mm + jitter I."""
        z = self.inducing_points
        eye = Tensor._wrap(backend.xp.eye(self.num_inducing, dtype=self.dtype))
        l_mm = cholesky(self.kernel(z) + eye * self.jitter)
        return solve_triangular(l_mm, self.kernel(z, x), upper=False)

    def _scale_tril(self) -> Tensor:
        return tril(self.variational_scale_tril)

    def marginals(self, x) -> tuple[Tensor, Tensor]:
        """Mean mu (n,) and variance s (n,) of q(f) at the rows of x, on the graph."""
        x = self._rows(x, "SVGP.marginals")
        a = self._projection(x)
        mean = (a * self.variational_mean.reshape(-1, 1)).sum(axis=0)
        spread = self._scale_tril().T @ a
        variance = self.kernel.diag(x) - (a * a).sum(axis=0) + (spread * spread).sum(axis=0)
        return mean, variance

    def kl_divergence(self) -> Tensor:
        """KL[q(v) || N(0, I)] = 1/2 (tr S + m^T m - M - log|S|)."""
        l_s = self._scale_tril()
        m = self.variational_mean
        log_det = (diagonal(l_s) ** 2).log().sum()
        return 0.5 * ((l_s * l_s).sum() + (m * m).sum() - self.num_inducing - log_det)

    def expected_log_likelihood(self, x, y) -> Tensor:
        """E_q[log p(y_i | f_i)] for each row (n,), in closed form."""
        x = self._rows(x, "SVGP.expected_log_likelihood")
        y = self._targets(y, x.shape[0], "SVGP.expected_log_likelihood")
        mean, variance = self.marginals(x)
        noise = self.noise
        return -0.5 * ((noise * (2 * math.pi)).log() + ((y - mean) ** 2 + variance) / noise)

    def elbo(self, x, y, num_data: int | None = None) -> Tensor:
        """The evidence lower bound N / |B| sum_B E_q[log p(y_i | f_i)] - KL, x and y a minibatch B
        of ``num_data`` = N training points (N = |B| by default: the full-data bound)."""
        terms = self.expected_log_likelihood(x, y)
        n = terms.shape[0] if num_data is None else int(num_data)
        if n < terms.shape[0]:
            raise ValueError(f"SVGP.elbo: num_data={num_data} is smaller than the batch of {terms.shape[0]} points")
        return terms.sum() * (n / terms.shape[0]) - self.kl_divergence()

    def set_optimal_variational(self, x, y) -> SVGP:
        """Set q(v) to the optimum for the data (x, y) at the current hyperparameters and Z
        (Titsias 2009, whitened): Lambda = I + A A^T / sigma_n^2, m = Lambda^-1 A y / sigma_n^2,
        S = Lambda^-1. Returns self."""
        x = self._rows(x, "SVGP.set_optimal_variational")
        y = backend.to_numpy(self._targets(y, x.shape[0], "SVGP.set_optimal_variational").data)
        with no_grad():
            a = backend.to_numpy(self._projection(x).data)
            noise = float(self.noise.item())
        precision = numpy.eye(self.num_inducing) + a @ a.T / noise
        l_p = numpy.linalg.cholesky(precision)
        mean = numpy.linalg.solve(precision, a @ y / noise)
        inv_t = numpy.linalg.inv(l_p).T  # S = Lambda^-1 = L_p^-T L_p^-1
        l_s = numpy.linalg.cholesky(inv_t @ inv_t.T)
        self.variational_mean.data = backend.xp.asarray(mean, dtype=self.dtype)
        self.variational_scale_tril.data = backend.xp.asarray(l_s, dtype=self.dtype)
        return self

    def fit(self, x, y, steps: int = 200, batch_size: int | None = None, lr: float = 0.05,
            seed: int = 0, verbose: bool = False) -> SVGP:
        """Maximize the ELBO over every trainable parameter with ``steps`` Adam steps, each on a
        minibatch of ``batch_size`` rows drawn without replacement (all rows when None); the
        learning rate falls from ``lr`` to ``lr / 100`` along a half cosine, so that the
        minibatch noise settles. Returns self."""
        from lamina.optim import Adam

        x = self._rows(x, "SVGP.fit").detach()
        y = self._targets(y, x.shape[0], "SVGP.fit")
        n = x.shape[0]
        batch = n if batch_size is None else min(int(batch_size), n)
        rng = numpy.random.default_rng(seed)
        opt = Adam(self.parameters(trainable_only=True), lr=lr)
        for step in range(steps):
            rows = rng.choice(n, batch, replace=False) if batch < n else numpy.arange(n)
            opt.lr = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            self.zero_grad()
            loss = -self.elbo(x[rows], y[rows], num_data=n) / n
            loss.backward()
            opt.step()
            if verbose:
                print(f"step {step + 1}/{steps}: -ELBO/n = {loss.item():.6f}")
        self.zero_grad()
        return self

    def predict(self, x, include_noise: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The predictive mean (n,) and variance (n,) at the rows of x, as arrays: of the latent
        f, or of y = f + noise with ``include_noise``."""
        with no_grad():
            mean, variance = self.marginals(x)
            if include_noise:
                variance = variance + self.noise
        return mean.data, backend.xp.maximum(variance.data, 0)

    def forward(self, x) -> Tensor:
        """The predictive mean of f at the rows of x (n,), on the graph."""
        return self.marginals(x)[0]

    def extra_repr(self) -> str:
        return f"num_inducing={self.num_inducing}, noise={float(self.noise.item()):.4g}, jitter={self.jitter:g}"
