"""Regression tasks drawn from a Gaussian process, for training and testing neural processes
(as the GP curves of Garnelo et al. 2018 and Kim et al. 2019).

Each task is one function f ~ GP(0, k) with k(x, x') = sigma^2 exp(-|x - x'|^2 / (2 l^2)) (a
:class:`~lamina.models.kernels.ScaleKernel` over an :class:`~lamina.models.kernels.RBF`) plus
``noise``^2 on the diagonal, observed at random points:

* training (``testing=False``): n_c ~ U{3, ..., max_num_context - 1} context points and n_t ~
  U{2, ..., max_num_context - 1} more, x ~ U(x_range); the targets are all n_c + n_t points and
  the context is their first n_c (the targets hold the context, as the neural processes'
  ELBO expects);
* testing (``testing=True``): the targets are ``num_test_points`` points evenly spaced over
  x_range, the context n_c of them chosen at random.

One draw of n_c and n_t holds for the whole batch. With ``random_kernel_parameters`` each task
has its own l ~ U(0.1, length_scale) and sigma ~ U(0.1, signal_scale).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.autograd import no_grad
from lamina.models.kernels import RBF, ScaleKernel

__all__ = ["GPCurves", "NPTask"]


class NPTask(NamedTuple):
    """A batch of regression tasks: context (batch, n_c, d_x) and (batch, n_c, d_y), targets
    (batch, n_t, d_x) and (batch, n_t, d_y)."""

    context_x: numpy.ndarray
    context_y: numpy.ndarray
    target_x: numpy.ndarray
    target_y: numpy.ndarray

    @property
    def num_context(self) -> int:
        return self.context_x.shape[1]

    @property
    def num_targets(self) -> int:
        return self.target_x.shape[1]


class GPCurves:
    """Batches of 1-D (or d_x-D) GP functions split into context and targets (module docstring).

    Example::

        curves = GPCurves(batch_size=16, max_num_context=10, seed=0)
        task = curves.sample()
        loss = model.loss(task.context_x, task.context_y, task.target_x, task.target_y)
    """

    def __init__(self, batch_size: int = 16, max_num_context: int = 10, x_size: int = 1, y_size: int = 1,
                 length_scale: float = 0.4, signal_scale: float = 1.0, noise: float = 2e-2,
                 random_kernel_parameters: bool = False, testing: bool = False, num_test_points: int = 400,
                 x_range: tuple[float, float] = (-2.0, 2.0), dtype=numpy.float32, seed: int | None = None):
        for value, what, least in ((batch_size, "batch_size", 1), (max_num_context, "max_num_context", 4),
                                   (x_size, "x_size", 1), (y_size, "y_size", 1),
                                   (num_test_points, "num_test_points", 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"GPCurves: {what} must be an int >= {least}, got {value!r}")
        smallest = 0.1 if random_kernel_parameters else 0.0
        for value, what in ((length_scale, "length_scale"), (signal_scale, "signal_scale")):
            if not value > smallest:
                raise ValueError(f"GPCurves: {what} must be positive (above 0.1 with random_kernel_parameters), "
                                 f"got {value!r}")
        if testing and x_size != 1:
            raise ValueError(f"GPCurves: testing=True lays the targets on a 1-D grid; x_size must be 1, got {x_size}")
        self.batch_size, self.max_num_context = batch_size, max_num_context
        self.x_size, self.y_size = x_size, y_size
        self.length_scale, self.signal_scale, self.noise = float(length_scale), float(signal_scale), float(noise)
        self.random_kernel_parameters, self.testing = bool(random_kernel_parameters), bool(testing)
        self.num_test_points, self.x_range = num_test_points, (float(x_range[0]), float(x_range[1]))
        self.dtype = numpy.dtype(dtype)
        self.rng = numpy.random.default_rng(seed)

    def _kernel_parameters(self) -> tuple[float, float]:
        if not self.random_kernel_parameters:
            return self.length_scale, self.signal_scale
        return self.rng.uniform(0.1, self.length_scale), self.rng.uniform(0.1, self.signal_scale)

    def _function_values(self, x: numpy.ndarray) -> numpy.ndarray:
        """y (n, y_size): independent draws of the GP at the rows x (n, x_size)."""
        length, signal = self._kernel_parameters()
        kernel = ScaleKernel(RBF(length), outputscale=signal ** 2)
        with no_grad():
            covariance = numpy.asarray(kernel(x).numpy(), dtype=numpy.float64)
        covariance[numpy.diag_indices_from(covariance)] += self.noise ** 2
        factor = numpy.linalg.cholesky(covariance)
        return factor @ self.rng.standard_normal((x.shape[0], self.y_size))

    def sample(self) -> NPTask:
        """One batch of tasks."""
        num_context = int(self.rng.integers(3, self.max_num_context))
        low, high = self.x_range
        if self.testing:
            grid = numpy.linspace(low, high, self.num_test_points)[:, None]
            target_x = numpy.broadcast_to(grid, (self.batch_size,) + grid.shape).copy()
        else:
            num_extra = int(self.rng.integers(2, self.max_num_context))
            target_x = self.rng.uniform(low, high, (self.batch_size, num_context + num_extra, self.x_size))
        target_y = numpy.stack([self._function_values(x) for x in target_x])
        if self.testing:
            chosen = numpy.stack([self.rng.permutation(self.num_test_points)[:num_context]
                                  for _ in range(self.batch_size)])
            rows = numpy.arange(self.batch_size)[:, None]
            context_x, context_y = target_x[rows, chosen], target_y[rows, chosen]
        else:
            context_x, context_y = target_x[:, :num_context], target_y[:, :num_context]
        cast = self.dtype.type
        return NPTask(*(numpy.ascontiguousarray(a, dtype=cast) for a in (context_x, context_y, target_x, target_y)))

    def __iter__(self):
        while True:
            yield self.sample()
