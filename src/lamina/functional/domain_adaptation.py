r"""Ops for unsupervised domain adaptation: features of labelled source samples and of
unlabelled target samples are pulled together.

- :func:`gradient_reversal` (Ganin et al. 2016, DANN): y = x forward, dJ/dx = -lambda dJ/dy
  backward. Placed between a feature extractor and a domain classifier, the classifier
  learns to tell the domains apart while the features receive the opposite gradient and
  learn to make them indistinguishable.
- :func:`mmd_loss` (Long et al. 2015, DAN): the squared maximum mean discrepancy between
  the two feature samples under a sum of Gaussian kernels.
- :func:`coral_loss` (Sun and Saenko 2016, Deep CORAL): the distance between the two
  feature covariance matrices.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import exp
from lamina.functional.shape import concat

__all__ = ["coral_loss", "gradient_reversal", "mmd_loss"]


class GradientReversalFunction(Function):
    """y = x; dJ/dx = -lambda dJ/dy (hyperparameter ``lambda_``). The backward is linear in
    dJ/dy, so its own derivative is -lambda as well: gradients of gradients are consistent."""

    def forward(self, x):
        return x

    def backward(self, dy):
        return (dy * dy.dtype.type(-self.lambda_),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy * -self.lambda_,)


def gradient_reversal(x, lambda_: float = 1.0) -> Tensor:
    """The gradient reversal layer of DANN (Ganin et al. 2016): the identity forward, the
    upstream gradient times -``lambda_`` backward (``lambda_`` = 0 blocks it)."""
    if isinstance(lambda_, bool) or not isinstance(lambda_, numbers.Real) or lambda_ != lambda_:
        raise ValueError(f"gradient_reversal: lambda_ must be a real number, got {lambda_!r}")
    return GradientReversalFunction.apply(x, lambda_=float(lambda_))


def _features(x, who: str, what: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x), None)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ShapeError(f"{who}: {what} must be (samples, features) with at least one sample, got shape "
                         f"{tuple(x.shape)}")
    return x


def _pair(source, target, who: str) -> tuple[Tensor, Tensor]:
    source, target = _features(source, who, "source"), _features(target, who, "target")
    if source.shape[1] != target.shape[1]:
        raise ShapeError(f"{who}: source and target must have the same number of features, got shapes "
                         f"{tuple(source.shape)} and {tuple(target.shape)}")
    return source, target


def mmd_loss(source, target, bandwidths: Sequence[float] | None = None, kernel_mul: float = 2.0,
             kernel_num: int = 5) -> Tensor:
    r"""The biased estimate of the squared maximum mean discrepancy with a multi-kernel
    Gaussian kernel (DAN, Long et al. 2015):

        MMD^2 = mean_ij k(s_i, s_j) + mean_ij k(t_i, t_j) - 2 mean_ij k(s_i, t_j),
        k(a, b) = sum_u exp(-||a - b||^2 / gamma_u),

    for source features s (n, d) and target features t (m, d). ``bandwidths``: the gamma_u;
    by default ``kernel_num`` of them, gamma_u = base * kernel_mul^(u - kernel_num // 2),
    around base = the mean squared distance between distinct samples of the joint set (a
    constant of the batch: no gradient flows through it)."""
    who = "mmd_loss"
    source, target = _pair(source, target, who)
    joint = concat([source, target], axis=0)
    distances = ((joint[:, None, :] - joint[None, :, :]) ** 2).sum(axis=-1)
    if bandwidths is None:
        if isinstance(kernel_num, bool) or not isinstance(kernel_num, int) or kernel_num < 1:
            raise ValueError(f"{who}: kernel_num must be a positive integer, got {kernel_num!r}")
        if not (isinstance(kernel_mul, numbers.Real) and kernel_mul > 0):
            raise ValueError(f"{who}: kernel_mul must be a positive number, got {kernel_mul!r}")
        total = len(joint.data)
        base = float(distances.data.sum()) / max(total * total - total, 1)
        base = base if base > 0 else 1.0
        bandwidths = [base * kernel_mul ** (u - kernel_num // 2) for u in range(kernel_num)]
    bandwidths = [float(g) for g in bandwidths]
    if not bandwidths or any(not g > 0 for g in bandwidths):
        raise ValueError(f"{who}: bandwidths must be positive numbers, got {bandwidths!r}")
    kernel = None
    for gamma in bandwidths:
        term = exp(distances * (-1.0 / gamma))
        kernel = term if kernel is None else kernel + term
    n = source.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - kernel[:n, n:].mean() * 2.0


def _covariance(x: Tensor) -> Tensor:
    centred = x - x.mean(axis=0, keepdims=True)
    return (centred.T @ centred) * (1.0 / (x.shape[0] - 1))


def coral_loss(source, target) -> Tensor:
    r"""Deep CORAL (Sun and Saenko 2016): L = ||C_s - C_t||_F^2 / (4 d^2), C_s and C_t the
    (d, d) covariance matrices (normalised by n - 1) of source features (n, d) and target
    features (m, d); n, m >= 2."""
    who = "coral_loss"
    source, target = _pair(source, target, who)
    if source.shape[0] < 2 or target.shape[0] < 2:
        raise ShapeError(f"{who}: a covariance needs at least 2 samples per domain, got {source.shape[0]} "
                         f"source and {target.shape[0]} target samples")
    d = source.shape[1]
    gap = _covariance(source) - _covariance(target)
    return (gap * gap).sum() * (1.0 / (4.0 * d * d))
