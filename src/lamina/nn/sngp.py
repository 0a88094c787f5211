"""SNGP, the spectral-normalized neural Gaussian process (Liu et al., 2020): a network whose
hidden layers keep distances (spectral normalisation with a bound) and whose output layer is
a Gaussian process approximated by random Fourier features, so that its uncertainty grows
away from the training data.

:class:`RandomFeatureGaussianProcess` maps features h (N, d) to

    phi(h) = sqrt(2 / M) cos(h W / l + b),   W ~ N(0, 1) (d, M),  b ~ U(0, 2 pi) (M,), fixed
    logits = phi(h) beta                     beta (M, K) trainable

so that phi(x) . phi(y) -> exp(-|x - y|^2 / (2 l^2)) (the RBF kernel of length scale l = ``scale``)
as M grows. The Laplace approximation of the posterior of beta has the precision matrix

    P = r I + sum_i w_i phi_i phi_i^T                         (exact sum over the data seen)
    P <- m P + (1 - m) (1/B) sum_{i in batch} w_i phi_i phi_i^T   (momentum form, 0 < m < 1)

with r = ``ridge_penalty`` and w_i = 1 (``likelihood="gaussian"``, one matrix shared by the
classes) or w_i = p_ik (1 - p_ik), p_ik = sigmoid(logit_ik) (``likelihood="logistic"``, the
one-vs-rest Laplace approximation, one matrix per class k). Training calls add to P; call
:meth:`RandomFeatureGaussianProcess.reset_covariance` at the start of the epoch whose data it
should sum. The predictive covariance is Sigma = r P^-1 and an input's variance
phi^T Sigma phi. :func:`mean_field_logits` turns logits and variances into logits whose softmax
approximates the posterior predictive:

    logits / sqrt(1 + lambda var),   lambda = pi / 8.

:class:`BoundedSpectralNorm` divides a weight by its largest singular value sigma only where
sigma exceeds the bound c (w = c W / sigma if sigma > c, else W), as SNGP's residual networks do.
:class:`SNGPResMLP` is the residual MLP of the paper's two-moons experiment: a fixed random
input projection, residual blocks h + dropout(relu(SN(Dense)(h))) and the Gaussian-process head.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.weight_norms import SpectralNorm

__all__ = ["BoundedSpectralNorm", "RandomFeatureGaussianProcess", "SNGPResMLP", "mean_field_logits"]

LIKELIHOODS = ("gaussian", "logistic")
MEAN_FIELD_FACTOR = math.pi / 8
_LAYER_NORM_EPS = 1e-5


def _positive_float(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def mean_field_logits(logits, variance, mean_field_factor: float = MEAN_FIELD_FACTOR) -> Tensor:
    """logits / sqrt(1 + lambda variance): ``variance`` (N,) is shared by the classes of logits
    (N, K), or given per class (N, K). ``mean_field_factor`` lambda = pi / 8 matches the probit
    approximation of the expected sigmoid; a negative value returns the logits unchanged."""
    logits, variance = as_tensor(logits), as_tensor(variance)
    if mean_field_factor < 0:
        return logits
    if variance.ndim == 1 and logits.ndim == 2:
        variance = F.reshape(variance, (variance.shape[0], 1))
    if variance.shape not in (logits.shape, (logits.shape[0], 1)):
        raise ShapeError(f"mean_field_logits: expected variances of shape ({logits.shape[0]},) or {logits.shape} "
                         f"for logits of shape {logits.shape}, got {variance.shape}")
    return F.div(logits, F.sqrt(F.add(F.mul(variance, float(mean_field_factor)), 1.0)))


@register_layer
class RandomFeatureGaussianProcess(Module):
    """(N, d) features -> (N, ``num_classes``) logits of a random-feature Gaussian process
    (module docstring). ``num_inducing`` M random features of length scale ``scale``;
    ``normalize_input`` standardises each row of h first (a layer norm without gain or bias);
    ``momentum`` in (0, 1) selects the momentum form of the precision update, any value <= 0 the
    exact sum; ``likelihood`` ``"gaussian"`` or ``"logistic"``. Called with
    ``return_variance=True`` it returns (logits, variance), the variance (N,) (gaussian) or
    (N, K) (logistic) from the precision matrix accumulated so far. Only training calls add to
    the precision matrix (buffer ``precision``); the random features are buffers ``W``, ``b``.
    """

    def __init__(self, num_classes: int, num_inducing: int = 1024, ridge_penalty: float = 1.0,
                 momentum: float = -1.0, scale: float = 1.0, normalize_input: bool = False,
                 likelihood: str = "gaussian", kernel_init="xavier_uniform", name: str | None = None):
        super().__init__(name=name)
        who = "RandomFeatureGaussianProcess"
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        self.num_inducing = positive_int(num_inducing, f"{who}: num_inducing")
        self.ridge_penalty = _positive_float(ridge_penalty, f"{who}: ridge_penalty")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not momentum < 1:
            raise ValueError(f"{who}: momentum must be a number < 1 (<= 0 for the exact sum), got {momentum!r}")
        self.momentum = float(momentum)
        self.scale = _positive_float(scale, f"{who}: scale")
        self.normalize_input = bool(normalize_input)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"{who}: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.likelihood = likelihood
        self.kernel_init = kernel_init
        initializers.get(kernel_init)
        self._covariance_cache = None

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, features) with known features, "
                             f"got {shape}")
        d, m, dtype = int(shape[-1]), self.num_inducing, backend.get_default_dtype()
        rng = backend.rng()
        self.register_buffer("W", backend.xp.asarray(rng.standard_normal((d, m)).astype(dtype)))
        self.register_buffer("b", backend.xp.asarray(rng.uniform(0.0, 2 * math.pi, m).astype(dtype)))
        self.add_parameter("beta", initializers.get(self.kernel_init)((m, self.num_classes), m, self.num_classes,
                                                                      dtype))
        self.register_buffer("precision", self._initial_precision(dtype))
        self.built = True

    def _initial_precision(self, dtype):
        eye = self.ridge_penalty * np.eye(self.num_inducing, dtype=dtype)
        if self.likelihood == "logistic":
            eye = np.repeat(eye[None], self.num_classes, axis=0)
        return backend.xp.asarray(eye)

    def reset_covariance(self) -> None:
        """Set the precision matrix back to ridge_penalty I (before the epoch it should sum)."""
        if self.built:
            self.precision = self._initial_precision(self.precision.dtype)

    def random_features(self, x) -> Tensor:
        """phi(h) = sqrt(2 / M) cos(h W / scale + b), h the (optionally normalised) input."""
        x = as_tensor(x)
        d = self.W.shape[0]
        if x.ndim != 2 or x.shape[-1] != d:
            raise input_error(self, x, f"(batch, {d}) features")
        if self.normalize_input:
            centred = F.sub(x, F.mean(x, axis=-1, keepdims=True))
            x = F.div(centred, F.sqrt(F.add(F.mean(F.mul(centred, centred), axis=-1, keepdims=True),
                                            _LAYER_NORM_EPS)))
        projected = F.add(F.matmul(x, Tensor._wrap(self.W / self.scale)), Tensor._wrap(self.b))
        return F.mul(F.cos(projected), math.sqrt(2.0 / self.num_inducing))

    def forward(self, x, return_variance: bool = False):
        phi = self.random_features(x)
        logits = F.matmul(phi, self.beta)
        if self.training:
            self._update_precision(phi.data, logits.data)
        if not return_variance:
            return logits
        return logits, Tensor._wrap(self.predictive_variance_of_features(phi.data))

    def _update_precision(self, phi, logits) -> None:
        xp = backend.xp
        if self.likelihood == "gaussian":
            batch = phi.T @ phi
        else:
            p = 1.0 / (1.0 + xp.exp(-logits))
            weights = (p * (1.0 - p)).T                                    # (K, N)
            batch = xp.einsum("kn,nm,nj->kmj", weights, phi, phi)
        if self.momentum > 0:
            self.precision = self.momentum * self.precision + (1.0 - self.momentum) * batch / phi.shape[0]
        else:
            self.precision = self.precision + batch

    def covariance(self):
        """Sigma = ridge_penalty P^-1, (M, M) (gaussian) or (K, M, M) (logistic), as an array."""
        cached = self._covariance_cache
        if cached is not None and cached[0] is self.precision:       # kept until the precision changes
            return cached[1]
        precision = np.asarray(backend.to_numpy(self.precision), dtype=np.float64)
        inverse = np.linalg.solve(precision, np.broadcast_to(np.eye(self.num_inducing), precision.shape))
        covariance = backend.xp.asarray((self.ridge_penalty * inverse).astype(self.precision.dtype))
        self._covariance_cache = (self.precision, covariance)
        return covariance

    def predictive_variance_of_features(self, phi):
        """phi_i^T Sigma phi_i for each row of phi (N, M): (N,), or (N, K) per class (logistic)."""
        sigma = self.covariance()
        if sigma.ndim == 2:
            return ((phi @ sigma) * phi).sum(axis=-1)
        return backend.xp.einsum("nm,kmj,nj->nk", phi, sigma, phi)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_classes,)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "num_inducing": self.num_inducing,
                "ridge_penalty": self.ridge_penalty, "momentum": self.momentum, "scale": self.scale,
                "normalize_input": self.normalize_input, "likelihood": self.likelihood,
                "kernel_init": self.kernel_init, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_inducing={self.num_inducing}, likelihood={self.likelihood!r}"


@register_layer
class BoundedSpectralNorm(SpectralNorm):
    """:class:`~lamina.nn.SpectralNorm` that rescales only weights whose spectral norm sigma
    exceeds ``norm_bound`` c: w = c W / sigma where sigma > c, W itself otherwise (sigma from the
    same power iteration, u and v constants in its gradient)."""

    def __init__(self, layer, norm_bound: float = 0.95, n_power_iterations: int = 1, eps: float = 1e-12,
                 weight: str = "weight", axis: int | None = None, name: str | None = None):
        # read by compute_weight when the base constructor takes a built layer's weight over
        object.__setattr__(self, "norm_bound", _positive_float(norm_bound, "BoundedSpectralNorm: norm_bound"))
        super().__init__(layer, n_power_iterations, eps, weight, axis, name)

    def compute_weight(self) -> Tensor:
        """c W / sigma if sigma > c, else W, with sigma = sum(W * u v^T)."""
        w = self.weight_orig
        if self.shape_only:
            return w.detach()
        xp = backend.xp
        moved_shape = xp.moveaxis(w.data, self.unit_axis, 0).shape
        uv = xp.moveaxis(xp.outer(self.u, self.v).reshape(moved_shape), 0, self.unit_axis)
        sigma = F.sum(F.mul(w, Tensor._wrap(uv)))
        if float(backend.to_numpy(sigma.data)) > self.norm_bound:
            return F.mul(F.div(w, sigma), self.norm_bound)
        return w

    def get_config(self) -> dict:
        return {**super().get_config(), "norm_bound": self.norm_bound}

    def extra_repr(self) -> str:
        return f"norm_bound={self.norm_bound}, n_power_iterations={self.n_power_iterations}"


@register_layer
class SNGPResMLP(Module):
    """(N, d) inputs -> (N, ``num_classes``) logits: a fixed random projection to ``hidden``
    units, ``num_layers`` residual blocks h + dropout(relu(BoundedSpectralNorm(Dense)(h))) with
    bound ``spec_norm_bound``, then a :class:`RandomFeatureGaussianProcess` with ``gp`` as its
    keyword arguments. ``return_variance=True`` returns (logits, variance) as the GP layer does.
    ``spec_norm_bound=None`` leaves the hidden layers unnormalised (a plain residual MLP)."""

    def __init__(self, num_classes: int, hidden: int = 128, num_layers: int = 6, dropout: float = 0.01,
                 spec_norm_bound: float | None = 0.95, gp: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        who = "SNGPResMLP"
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        self.hidden = positive_int(hidden, f"{who}: hidden")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"{who}: num_layers must be an int >= 0, got {num_layers!r}")
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.spec_norm_bound = None if spec_norm_bound is None else _positive_float(spec_norm_bound,
                                                                                    f"{who}: spec_norm_bound")
        self.input_projection = Dense(self.hidden)              # frozen when built
        blocks = []
        for _ in range(num_layers):
            dense = Dense(self.hidden)
            blocks.append(dense if spec_norm_bound is None else BoundedSpectralNorm(dense, self.spec_norm_bound))
        self.blocks = ModuleList(blocks)
        self.drop = Dropout(self.dropout)
        self.gp_config = dict(gp or {})
        self.gp = RandomFeatureGaussianProcess(self.num_classes, **self.gp_config)

    def build(self, input_shape) -> None:
        self.input_projection.build(tuple(input_shape))
        self.input_projection.built = True
        self.input_projection.requires_grad_(False)
        for block in self.blocks:
            block.build((None, self.hidden))
            block.built = True
        self.gp.build((None, self.hidden))
        self.gp.built = True
        self.built = True

    def features(self, x) -> Tensor:
        """The hidden representation the GP layer reads."""
        h = self.input_projection(x)
        for block in self.blocks:
            h = F.add(h, self.drop(F.relu(block(h))))
        return h

    def forward(self, x, return_variance: bool = False):
        return self.gp(self.features(x), return_variance=return_variance)

    def reset_covariance(self) -> None:
        self.gp.reset_covariance()

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_classes,)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "hidden": self.hidden, "num_layers": self.num_layers,
                "dropout": self.dropout, "spec_norm_bound": self.spec_norm_bound, "gp": dict(self.gp_config),
                "name": self.name}
