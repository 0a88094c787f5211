"""Perturbed optimizers (Berthet, Blondel, Teboul, Cuturi, Vert & Bach 2020, "Learning with
differentiable perturbed optimizers").

For a maximiser y*(theta) = argmax_{y in C} <y, theta> (a one-hot argmax, a top-k mask, a
ranking, ...) and noise Z with density nu(z) ~ exp(-h(z)), the perturbed maximiser

    y_sigma(theta) = E_Z[y*(theta + sigma Z)]

is smooth in theta, with Jacobian J = E_Z[y*(theta + sigma Z) grad h(Z)^T] / sigma, both
estimated here from the same M samples (grad h(z) = z for normal noise, 1 - e^-z for
Gumbel noise). Its Fenchel-Young loss against a target y is

    L(theta; y) = E_Z[max_{y' in C} <y', theta + sigma Z>] - <theta, y>

whose gradient is y_sigma(theta) - y. With Gumbel noise and the one-hot argmax, y_sigma is
exactly softmax(theta / sigma).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina.autograd import Function, Tensor

__all__ = ["PerturbedOptimizer"]

_NOISES = ("gumbel", "normal")


def _noise_score(noise: np.ndarray, kind: str) -> np.ndarray:
    """grad h(z) for the density nu(z) ~ exp(-h(z)) of the noise."""
    return noise if kind == "normal" else 1.0 - np.exp(-noise)


def _maximisers(fn: Callable, theta: np.ndarray, noise: np.ndarray, sigma: float, caller: str) -> np.ndarray:
    perturbed = theta[None] + sigma * noise
    samples = np.asarray(fn(perturbed), dtype=theta.dtype)
    if samples.shape != perturbed.shape:
        raise ValueError(f"{caller}: argmax_fn must return one maximiser per perturbed input, of shape "
                         f"{perturbed.shape}; got shape {samples.shape}")
    return samples


class PerturbedExpectation(Function):
    """y = mean_m y*(theta + sigma Z_m); dJ/dtheta = mean_m <dy, y_m> grad h(Z_m) / sigma."""

    def forward(self, theta):
        self.samples = _maximisers(self.argmax_fn, theta, self.noise, self.sigma, "PerturbedOptimizer")
        self.score = _noise_score(self.noise, self.kind).astype(theta.dtype)
        return self.samples.mean(axis=0)

    def backward(self, dy):
        weights = (dy[None] * self.samples).sum(axis=-1, keepdims=True)
        return ((weights * self.score).mean(axis=0) / self.sigma,)

    def backward_graph(self, dy):
        samples, score = Tensor._wrap(self.samples), Tensor._wrap(self.score)
        weights = (dy * samples).sum(axis=-1, keepdims=True)
        return ((weights * score).mean(axis=0) / self.sigma,)


class PerturbedFenchelYoung(Function):
    """L = mean_m <y_m, theta + sigma Z_m> - <theta, y> per row; dL/dtheta = y_sigma - y, dL/dy = -theta."""

    def forward(self, theta, target):
        samples = _maximisers(self.argmax_fn, theta, self.noise, self.sigma, "PerturbedOptimizer")
        self.expected = samples.mean(axis=0)
        perturbed = theta[None] + self.sigma * self.noise
        return (samples * perturbed).sum(axis=-1).mean(axis=0) - (theta * target).sum(axis=-1)

    def backward(self, dy):
        theta, target = (t.data for t in self.inputs)
        return dy[..., None] * (self.expected - target), -dy[..., None] * theta

    def backward_graph(self, dy):
        theta, target = self.inputs
        expected = PerturbedExpectation.apply(theta, argmax_fn=self.argmax_fn, noise=self.noise,
                                              sigma=self.sigma, kind=self.kind)
        weight = dy.reshape(dy.shape + (1,))
        return weight * (expected - target), -weight * theta


class PerturbedOptimizer:
    """The perturbed maximiser of ``argmax_fn`` (module docstring). ``argmax_fn`` maps a NumPy
    array (num_samples, ..., d) of perturbed scores to maximisers of the same shape (the last
    axis is the one maximised over, e.g. a one-hot argmax). Fresh noise is drawn from ``seed``'s
    generator at every call; ``__call__`` gives y_sigma(theta) with the Monte Carlo Jacobian,
    :meth:`fenchel_young_loss` the per-row loss whose gradient is y_sigma(theta) - target."""

    def __init__(self, argmax_fn: Callable, num_samples: int = 1000, sigma: float = 1.0,
                 noise: str = "gumbel", seed: int | None = None) -> None:
        if not callable(argmax_fn):
            raise TypeError(f"PerturbedOptimizer: argmax_fn must be callable, got {type(argmax_fn).__name__}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"PerturbedOptimizer: num_samples must be an int >= 1, got {num_samples!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"PerturbedOptimizer: sigma must be a number > 0, got {sigma!r}")
        if noise not in _NOISES:
            raise ValueError(f"PerturbedOptimizer: noise must be one of {_NOISES}, got {noise!r}")
        self.argmax_fn, self.num_samples, self.sigma, self.noise = argmax_fn, num_samples, float(sigma), noise
        self.rng = np.random.default_rng(seed)

    def _draw(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = (self.num_samples,) + tuple(shape)
        draw = self.rng.gumbel(size=size) if self.noise == "gumbel" else self.rng.standard_normal(size)
        return draw.astype(dtype)

    def _params(self, theta: Tensor) -> dict:
        return {"argmax_fn": self.argmax_fn, "noise": self._draw(theta.shape, theta.dtype),
                "sigma": self.sigma, "kind": self.noise}

    def __call__(self, theta) -> Tensor:
        theta = theta if isinstance(theta, Tensor) else Tensor._constant(np.asarray(theta, dtype=np.float32))
        return PerturbedExpectation.apply(theta, **self._params(theta))

    def fenchel_young_loss(self, theta, target) -> Tensor:
        """Per-row Fenchel-Young loss of scores ``theta`` (..., d) against maximisers ``target``."""
        theta = theta if isinstance(theta, Tensor) else Tensor._constant(np.asarray(theta, dtype=np.float32))
        target = target if isinstance(target, Tensor) else Tensor._constant(np.asarray(target, dtype=theta.dtype))
        if target.shape != theta.shape:
            raise ValueError(f"PerturbedOptimizer.fenchel_young_loss: target shape {target.shape} must equal "
                             f"theta shape {theta.shape}")
        return PerturbedFenchelYoung.apply(theta, target, **self._params(theta))
