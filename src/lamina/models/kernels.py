"""Covariance functions (kernels) for Gaussian processes, as small modules.

A kernel k maps two sets of rows, x1 (n, d) and x2 (m, d), to the covariance matrix
K_ij = k(x1_i, x2_j) of shape (n, m); ``kernel(x)`` (no second set) is the covariance of
x with itself, the one :class:`~lamina.models.GaussianProcessRegressor` factors.
``kernel.diag(x)`` is its diagonal, without forming the matrix. Kernels combine:
``k1 + k2`` is a :class:`Sum`, ``k1 * k2`` a :class:`Product`, and a number c in
``c * k`` or ``k + c`` becomes a :class:`Constant` kernel.

Every hyperparameter is positive and stored through its logarithm: the parameter
``log_length_scale`` holds log(l), and the value used is exp(log_length_scale), so any
step of an optimizer keeps it positive. These are the ``theta`` of scikit-learn's kernels
(the log of each hyperparameter), so gradients match its ``eval_gradient`` directly. The
properties (``length_scale``, ``period``, ...) give the values as tensors on the graph;
:meth:`Kernel.hyperparameters` gives them as arrays. ``parameter.freeze()`` holds one fixed
during fitting.

Every kernel class is registered (under ``kernels.<class name>``) with its constructor
arguments as its config, a composite kernel with its parts' configs, so that a model holding
a kernel saves with :func:`lamina.save`; an ARD length scale repeated for d features on the
first call is repeated again when a state dict of d length scales is loaded.

Parameters are created in float64 (Gaussian processes factor n x n matrices, whose
conditioning costs float32 most of its digits); ``kernel.to(numpy.float32)`` casts them.
Inputs are cast to the parameters' dtype.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import cdist
from lamina.nn import Module, Parameter
from lamina.nn.constructor_config import register_with_arguments

MATERN_NUS = (0.5, 1.5, 2.5)


def as_rows(x, dtype, who: str) -> Tensor:
    """``x`` as a tensor of rows (n, d) in ``dtype``: a 1-D input is n rows of one feature.
    A tensor keeps its graph (gradients with respect to the inputs flow)."""
    if isinstance(x, Tensor):
        t = x if x.dtype == dtype else x.astype(dtype)
    else:
        t = Tensor._wrap(backend.xp.asarray(x, dtype=dtype))
    if t.ndim == 1:
        t = t.reshape(-1, 1)
    if t.ndim != 2:
        raise ShapeError(f"{who}: expected inputs of shape (n, d) or (n,), got shape {tuple(t.shape)}")
    return t


def _log_parameter(value, name: str, who: str) -> Parameter:
    """A parameter holding log(value) for a positive hyperparameter ``value``."""
    array = numpy.asarray(value, dtype=numpy.float64)
    if array.ndim > 1 or array.size == 0 or not numpy.all(numpy.isfinite(array)) or numpy.any(array <= 0):
        raise ValueError(f"{who}: {name} must be a positive finite number or 1-D array of them, got {value!r}")
    return Parameter(backend.xp.asarray(numpy.log(array)), dtype=numpy.float64)


class Kernel(Module):
    """Base class: subclasses implement :meth:`forward` (x1, x2 or None -> (n, m)) and :meth:`diag`."""

    def __init__(self):
        super().__init__()
        self.built = True  # the hyperparameters exist from the start

    def __call__(self, x1, x2=None) -> Tensor:
        dtype = self.dtype
        x1 = as_rows(x1, dtype, type(self).__name__)
        if x2 is not None:
            x2 = as_rows(x2, dtype, type(self).__name__)
            if x2.shape[1] != x1.shape[1]:
                raise ShapeError(f"{type(self).__name__}: inputs of shapes {tuple(x1.shape)} and {tuple(x2.shape)} "
                                 "have different numbers of features; expected (n, d) and (m, d)")
        self._check_features(x1.shape[1])
        return super().__call__(x1, x2)

    def forward(self, x1: Tensor, x2: Tensor | None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def diag(self, x) -> Tensor:
        """k(x_i, x_i) for every row of x: shape (n,)."""
        x = as_rows(x, self.dtype, f"{type(self).__name__}.diag")
        self._check_features(x.shape[1])
        return self._diag(x)

    def _diag(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.diag is not implemented")

    def _check_features(self, d: int) -> None:
        for child in self.children():
            if isinstance(child, Kernel):
                child._check_features(d)

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else numpy.dtype(numpy.float64)

    def load_state_dict(self, state: dict, strict: bool = True):
        """Module.load_state_dict, after :func:`match_length_scales`."""
        match_length_scales(self, state)
        return super().load_state_dict(state, strict=strict)

    def hyperparameters(self) -> dict[str, numpy.ndarray]:
        """Every hyperparameter's value (not its log) by dotted name, as arrays."""
        return {name.replace("log_", "", 1): numpy.exp(backend.to_numpy(p.data))
                for name, p in self.named_parameters()}

    def __add__(self, other) -> Sum:
        return Sum(self, _as_kernel(other))

    def __radd__(self, other) -> Kernel:
        if isinstance(other, int) and other == 0:  # sum(kernels) starts from 0
            return self
        return Sum(_as_kernel(other), self)

    def __mul__(self, other) -> Product:
        return Product(self, _as_kernel(other))

    def __rmul__(self, other) -> Product:
        return Product(_as_kernel(other), self)

    def extra_repr(self) -> str:
        values = {k: v for k, v in self.hyperparameters().items() if "." not in k}
        return ", ".join(f"{k}={numpy.array2string(v, precision=4) if v.ndim else f'{float(v):.4g}'}"
                         for k, v in values.items())


def _as_kernel(other) -> Kernel:
    if isinstance(other, Kernel):
        return other
    if isinstance(other, (int, float)) and not isinstance(other, bool):
        return Constant(float(other))
    raise TypeError(f"kernels combine with kernels or positive numbers, got {type(other).__name__}")


def match_length_scales(root: Module, state: dict) -> None:
    """Repeat the single length scale of every ARD kernel in ``root`` whose entry in ``state``
    holds d of them (a kernel sized for d features on its first call, then saved), so that
    loading that state into a freshly made copy finds the shapes it holds."""
    for path, module in root.named_modules():
        key = f"{path}.log_length_scale" if path else "log_length_scale"
        if isinstance(module, Stationary) and module.ard and key in state:
            size = int(numpy.size(state[key]))
            if module.log_length_scale.size == 1 and size > 1:
                module._check_features(size)


def _ones(x: Tensor, dtype) -> Tensor:
    return Tensor._wrap(backend.xp.ones(x.shape[0], dtype=dtype))


class Stationary(Kernel):
    """A kernel of the scaled distance r = ||(x1 - x2) / l|| with one length scale l, or one
    per feature (``ard=True``, automatic relevance determination, or an array ``length_scale``).
    With ``ard`` and a scalar length scale, it is repeated for every feature on the first call."""

    def __init__(self, length_scale=1.0, ard: bool = False):
        super().__init__()
        self.ard = bool(ard) or numpy.ndim(length_scale) == 1
        self.log_length_scale = _log_parameter(length_scale, "length_scale", type(self).__name__)

    @property
    def length_scale(self) -> Tensor:
        return self.log_length_scale.exp()

    def _check_features(self, d: int) -> None:
        size = self.log_length_scale.size
        if not self.ard or size == d:
            return
        if size != 1:
            raise ShapeError(f"{type(self).__name__}: {size} length scales for inputs with {d} features")
        data = backend.xp.repeat(self.log_length_scale.data.reshape(1), d)
        self.log_length_scale = Parameter(data, trainable=self.log_length_scale.trainable, dtype=data.dtype)

    def distance(self, x1: Tensor, x2: Tensor | None) -> Tensor:
        """r_ij = ||(x1_i - x2_j) / l|| (lamina's cdist: exact for near-equal rows, a zero
        gradient at r = 0)."""
        scale = self.length_scale
        z1 = x1 / scale
        return cdist(z1, z1 if x2 is None else x2 / scale)

    def _diag(self, x: Tensor) -> Tensor:
        return _ones(x, self.dtype)


@register_with_arguments(name="kernels.RBF")
class RBF(Stationary):
    """Squared exponential: k = exp(-r^2 / 2), r = ||x1 - x2|| / l (scikit-learn's RBF)."""

    def forward(self, x1, x2):
        r = self.distance(x1, x2)
        return (-0.5 * (r * r)).exp()


@register_with_arguments(name="kernels.Matern")
class Matern(Stationary):
    """Matern kernels of smoothness nu, r = ||x1 - x2|| / l:

    * nu = 1/2: exp(-r) (the exponential kernel);
    * nu = 3/2: (1 + sqrt(3) r) exp(-sqrt(3) r);
    * nu = 5/2: (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r).
    """

    def __init__(self, length_scale=1.0, nu: float = 1.5, ard: bool = False):
        if nu not in MATERN_NUS:
            raise ValueError(f"Matern: nu must be one of {MATERN_NUS}, got {nu!r}")
        super().__init__(length_scale, ard)
        self.nu = float(nu)

    def forward(self, x1, x2):
        r = self.distance(x1, x2)
        if self.nu == 0.5:
            return (-r).exp()
        if self.nu == 1.5:
            s = math.sqrt(3.0) * r
            return (1.0 + s) * (-s).exp()
        s = math.sqrt(5.0) * r
        return (1.0 + s + s * s / 3.0) * (-s).exp()

    def extra_repr(self) -> str:
        return f"nu={self.nu}, {super().extra_repr()}"


@register_with_arguments(name="kernels.RationalQuadratic")
class RationalQuadratic(Stationary):
    """k = (1 + r^2 / (2 alpha))^-alpha, r = ||x1 - x2|| / l: a scale mixture of RBF kernels
    (alpha -> infinity gives the RBF)."""

    def __init__(self, length_scale=1.0, alpha: float = 1.0):
        super().__init__(length_scale, ard=False)
        self.log_alpha = _log_parameter(alpha, "alpha", "RationalQuadratic")

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def forward(self, x1, x2):
        r = self.distance(x1, x2)
        alpha = self.alpha
        return (-alpha * (1.0 + r * r / (2.0 * alpha)).log()).exp()


@register_with_arguments(name="kernels.Periodic")
class Periodic(Stationary):
    """Exp-sine-squared: k = exp(-2 sin^2(pi d / p) / l^2), d = ||x1 - x2|| (unscaled), period p."""

    def __init__(self, length_scale=1.0, period: float = 1.0):
        super().__init__(length_scale, ard=False)
        self.log_period = _log_parameter(period, "period", "Periodic")

    @property
    def period(self) -> Tensor:
        return self.log_period.exp()

    def forward(self, x1, x2):
        d = cdist(x1, x1 if x2 is None else x2)
        s = (math.pi * d / self.period).sin() / self.length_scale
        return (-2.0 * (s * s)).exp()


ExpSineSquared = Periodic


@register_with_arguments(name="kernels.DotProduct")
class DotProduct(Kernel):
    """k = sigma_0^2 + x1 . x2: Bayesian linear regression with a N(0, sigma_0^2) bias."""

    def __init__(self, sigma_0: float = 1.0):
        super().__init__()
        self.log_sigma_0 = _log_parameter(sigma_0, "sigma_0", "DotProduct")

    @property
    def sigma_0(self) -> Tensor:
        return self.log_sigma_0.exp()

    def forward(self, x1, x2):
        sigma = self.sigma_0
        return x1 @ (x1 if x2 is None else x2).T + sigma * sigma

    def _diag(self, x):
        sigma = self.sigma_0
        return (x * x).sum(axis=1) + sigma * sigma


Linear = DotProduct


@register_with_arguments(name="kernels.White")
class White(Kernel):
    """Independent noise: K(x, x) = noise_level I; between two different sets of inputs
    (``kernel(x1, x2)``) it is 0, as scikit-learn's WhiteKernel, so a prediction's
    variance (from ``diag``) includes the noise."""

    def __init__(self, noise_level: float = 1.0):
        super().__init__()
        self.log_noise_level = _log_parameter(noise_level, "noise_level", "White")

    @property
    def noise_level(self) -> Tensor:
        return self.log_noise_level.exp()

    def forward(self, x1, x2):
        xp = backend.xp
        if x2 is not None:
            return Tensor._wrap(xp.zeros((x1.shape[0], x2.shape[0]), dtype=self.dtype))
        return self.noise_level * Tensor._wrap(xp.eye(x1.shape[0], dtype=self.dtype))

    def _diag(self, x):
        return self.noise_level * _ones(x, self.dtype)


@register_with_arguments(name="kernels.Constant")
class Constant(Kernel):
    """k = c for every pair: a constant offset (in a sum) or an amplitude (in a product)."""

    def __init__(self, constant_value: float = 1.0):
        super().__init__()
        self.log_constant_value = _log_parameter(constant_value, "constant_value", "Constant")

    @property
    def constant_value(self) -> Tensor:
        return self.log_constant_value.exp()

    def forward(self, x1, x2):
        m = x1.shape[0] if x2 is None else x2.shape[0]
        return self.constant_value * Tensor._wrap(backend.xp.ones((x1.shape[0], m), dtype=self.dtype))

    def _diag(self, x):
        return self.constant_value * _ones(x, self.dtype)


@register_with_arguments(modules=("base",), name="kernels.ScaleKernel")
class ScaleKernel(Kernel):
    """k = outputscale * base: the base kernel with a learned amplitude (GPyTorch's name;
    scikit-learn writes it ConstantKernel * base)."""

    def __init__(self, base: Kernel, outputscale: float = 1.0):
        super().__init__()
        self.log_outputscale = _log_parameter(outputscale, "outputscale", "ScaleKernel")
        self.base = _as_kernel(base)

    @property
    def outputscale(self) -> Tensor:
        return self.log_outputscale.exp()

    def forward(self, x1, x2):
        return self.outputscale * self.base.forward(x1, x2)

    def _diag(self, x):
        return self.outputscale * self.base._diag(x)


@register_with_arguments(modules=("k1", "k2"), name="kernels.Sum")
class Sum(Kernel):
    """k = k1 + k2."""

    def __init__(self, k1: Kernel, k2: Kernel):
        super().__init__()
        self.k1, self.k2 = k1, k2

    def forward(self, x1, x2):
        return self.k1.forward(x1, x2) + self.k2.forward(x1, x2)

    def _diag(self, x):
        return self.k1._diag(x) + self.k2._diag(x)


@register_with_arguments(modules=("k1", "k2"), name="kernels.Product")
class Product(Kernel):
    """k = k1 * k2 (entry by entry)."""

    def __init__(self, k1: Kernel, k2: Kernel):
        super().__init__()
        self.k1, self.k2 = k1, k2

    def forward(self, x1, x2):
        return self.k1.forward(x1, x2) * self.k2.forward(x1, x2)

    def _diag(self, x):
        return self.k1._diag(x) * self.k2._diag(x)
