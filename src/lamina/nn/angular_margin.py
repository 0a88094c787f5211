"""Classification losses for embeddings, each with its own learnable class centres (the face-
recognition losses of InsightFace and pytorch-metric-learning).

Each module holds ``weight`` (num_classes, embedding_size), one centre per class, and is
called as ``loss(embeddings, labels)`` with embeddings (N, embedding_size) and integer
labels in [0, num_classes); train it with the embedding network (its parameters go to the
optimizer too). With cos_j = cos(x, W_j) = cos(theta_j), the margin losses are the
softmax cross-entropy of the logits s cos_j, whose target entry j = y is made harder:

- :class:`ArcFaceLoss` (Deng et al. 2019): s cos(theta_y + m);
- :class:`CosFaceLoss` (Wang et al. 2018, additive cosine margin): s (cos_y - m);
- :class:`SphereFaceLoss` (Liu et al. 2017, A-Softmax): ||x|| psi(theta_y), psi(theta) =
  (-1)^k cos(m theta) - 2k on [k pi / m, (k + 1) pi / m];
- :class:`CombinedMarginLoss` (InsightFace): s (cos(m1 theta_y + m2) - m3);
- :class:`SubCenterArcFace` (Deng et al. 2020): ArcFace on the nearest of k sub-centres;
- :class:`NormalizedSoftmaxLoss` (Zhai and Wu 2019): cos_j / temperature, no margin.

:class:`CenterLoss` (Wen et al. 2016) pulls each embedding to its class centre instead.
The centres are a layout (num_classes, D): rows, not pytorch-metric-learning's (D, num_classes).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import clip, sqrt, where
from lamina.functional.similarity import normalize
from lamina.functional.torch_losses import cross_entropy
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = [
    "ArcFaceLoss", "CenterLoss", "CombinedMarginLoss", "CosFaceLoss", "NormalizedSoftmaxLoss", "SphereFaceLoss",
    "SubCenterArcFace",
]


def _number(value, what: str, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
            high_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    inside = ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not inside:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{what} must be a finite number in {bounds}, got {value!r}")
    return float(value)


class _ClassCenters(Module):
    """``weight`` (rows, embedding_size) ~ N(0, 0.01^2), and the checks of a call."""

    def __init__(self, num_classes: int, embedding_size: int, rows_per_class: int = 1, name: str | None = None,
                 learnable: bool = True):
        super().__init__(name=name)
        who = type(self).__name__
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        self.embedding_size = positive_int(embedding_size, f"{who}: embedding_size")
        shape = (self.num_classes * rows_per_class, self.embedding_size)
        table = backend.xp.asarray(backend.rng().normal(0.0, 0.01, shape), dtype=backend.get_default_dtype())
        if learnable:
            self.add_parameter("weight", table)
        else:
            self.register_buffer("weight", table)
        self.built = True

    def _inputs(self, embeddings, labels) -> tuple[Tensor, np.ndarray]:
        x = as_tensor(embeddings)
        if x.ndim != 2 or x.shape[1] != self.embedding_size:
            raise ShapeError(f"{self._label()}: embeddings must have shape (N, {self.embedding_size}) "
                             f"(embedding_size={self.embedding_size}), got shape {tuple(x.shape)}")
        y = np.asarray(backend.to_numpy(labels.data if isinstance(labels, Tensor) else labels))
        if y.shape != (x.shape[0],):
            raise ShapeError(f"{self._label()}: labels must have shape ({x.shape[0]},), one per embedding, got "
                             f"shape {y.shape}")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{self._label()}: labels must be integers, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"{self._label()}: labels must lie in [0, {self.num_classes}) (num_classes="
                             f"{self.num_classes}), got labels in [{int(y.min())}, {int(y.max())}]")
        return x, y.astype(np.int64)

    def extra_repr(self) -> str:
        return f"{self.num_classes}, {self.embedding_size}"


class _MarginSoftmaxLoss(_ClassCenters):
    """Cross-entropy of s * cos_j with the target entry replaced by ``_target(cos_y)``."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float, rows_per_class: int = 1,
                 name: str | None = None):
        super().__init__(num_classes, embedding_size, rows_per_class, name)
        self.scale = _number(scale, f"{type(self).__name__}: scale", low=0.0, low_open=True)

    def cosines(self, embeddings) -> Tensor:
        """cos(x_i, W_j), shape (N, num_classes)."""
        x = as_tensor(embeddings)
        return normalize(x, axis=-1) @ normalize(self.weight, axis=-1).T

    def _target(self, cos: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _logits(self, cos: Tensor, x: Tensor, y: np.ndarray) -> Tensor:
        target = np.zeros(cos.shape, dtype=bool)
        target[np.arange(len(y)), y] = True
        return where(backend.xp.asarray(target), self._target(cos, x), cos) * self.scale

    def logits(self, embeddings, labels) -> Tensor:
        """The (N, num_classes) logits whose cross-entropy is the loss."""
        x, y = self._inputs(embeddings, labels)
        return self._logits(self.cosines(x), x, y)

    def forward(self, embeddings, labels) -> Tensor:
        x, y = self._inputs(embeddings, labels)
        return cross_entropy(self._logits(self.cosines(x), x, y), backend.xp.asarray(y))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


def _sine(cos: Tensor) -> Tensor:
    """sin(theta) = sqrt(1 - cos^2), kept off the square root's infinite slope at |cos| = 1."""
    return sqrt(clip(1 - cos * cos, 1e-12, 1.0))


class ArcFaceLoss(_MarginSoftmaxLoss):
    """ArcFace, additive angular margin: the target logit s cos(theta_y + m) =
    s (cos_y cos m - sin_y sin m). ``margin`` m in radians, in [0, pi/2) (0.5 rad = 28.6 deg,
    pytorch-metric-learning's default given in degrees); ``scale`` s = 64.

    cos(theta + m) stops decreasing past theta = pi - m; there (cos_y <= cos(pi - m))
    InsightFace's reference falls back to the CosFace-like cos_y - m sin(m), which starts at
    -cos(m) - m sin(m) < -1, so the target logit keeps decreasing in theta (with a step down
    at the switch). ``easy_margin=True`` instead applies the margin only where cos_y > 0
    (theta < pi/2) and leaves the logit as cos_y elsewhere.
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.5, scale: float = 64.0,
                 easy_margin: bool = False, name: str | None = None):
        super().__init__(num_classes, embedding_size, scale, name=name)
        self._set_margin(margin, easy_margin)

    def _set_margin(self, margin: float, easy_margin: bool) -> None:
        self.margin = _number(margin, f"{type(self).__name__}: margin (radians)", 0.0, math.pi / 2, high_open=True)
        self.easy_margin = bool(easy_margin)
        self.threshold = math.cos(math.pi - self.margin)
        self.fallback = math.sin(math.pi - self.margin) * self.margin

    def _target(self, cos: Tensor, x: Tensor) -> Tensor:
        shifted = cos * math.cos(self.margin) - _sine(cos) * math.sin(self.margin)
        values = backend.xp.asarray(cos.data)
        if self.easy_margin:
            return where(values > 0, shifted, cos)
        return where(values > self.threshold, shifted, cos - self.fallback)

    def extra_repr(self) -> str:
        easy = ", easy_margin=True" if self.easy_margin else ""
        return f"{super().extra_repr()}, margin={self.margin:g}{easy}"


class SubCenterArcFace(ArcFaceLoss):
    """Sub-center ArcFace: ``sub_centers`` k centres per class (``weight`` row c k + j is
    sub-centre j of class c), cos_c = max_j cos(x, W_cj), then :class:`ArcFaceLoss`'s margin.
    Noisy samples gather on non-dominant sub-centres instead of pulling the main one."""

    def __init__(self, num_classes: int, embedding_size: int, sub_centers: int = 3, margin: float = 0.5,
                 scale: float = 64.0, easy_margin: bool = False, name: str | None = None):
        rows = positive_int(sub_centers, "SubCenterArcFace: sub_centers")
        _MarginSoftmaxLoss.__init__(self, num_classes, embedding_size, scale, rows, name)
        self.sub_centers = rows
        self._set_margin(margin, easy_margin)

    def cosines(self, embeddings) -> Tensor:
        every = super().cosines(embeddings)
        return every.reshape(every.shape[0], self.num_classes, self.sub_centers).max(axis=2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sub_centers={self.sub_centers}"


class CosFaceLoss(_MarginSoftmaxLoss):
    """CosFace (large margin cosine loss): target logit s (cos_y - m); ``margin`` m in
    [0, 1] (0.35), ``scale`` s (64), pytorch-metric-learning's defaults."""

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64.0,
                 name: str | None = None):
        super().__init__(num_classes, embedding_size, scale, name=name)
        self.margin = _number(margin, "CosFaceLoss: margin", 0.0, 1.0)

    def _target(self, cos: Tensor, x: Tensor) -> Tensor:
        return cos - self.margin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin:g}"


class CombinedMarginLoss(_MarginSoftmaxLoss):
    """InsightFace's combined margin: target logit s (cos(m1 theta_y + m2) - m3), with
    theta_y = arccos(cos_y) (cos_y clipped to [-1 + 1e-7, 1 - 1e-7]). (m1, m2, m3) = (1, 0.5, 0)
    is ArcFace without its fallback, (1, 0, 0.35) CosFace, (1.35, 0, 0) SphereFace's
    multiplicative angle without its piecewise psi; InsightFace's default is (1, 0.3, 0.2)."""

    def __init__(self, num_classes: int, embedding_size: int, m1: float = 1.0, m2: float = 0.3, m3: float = 0.2,
                 scale: float = 64.0, name: str | None = None):
        super().__init__(num_classes, embedding_size, scale, name=name)
        self.m1 = _number(m1, "CombinedMarginLoss: m1", 1.0, 4.0)
        self.m2 = _number(m2, "CombinedMarginLoss: m2 (radians)", 0.0, math.pi / 2, high_open=True)
        self.m3 = _number(m3, "CombinedMarginLoss: m3", 0.0, 1.0)

    def _target(self, cos: Tensor, x: Tensor) -> Tensor:
        theta = clip(cos, -1 + 1e-7, 1 - 1e-7).acos()
        return (theta * self.m1 + self.m2).cos() - self.m3

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m1={self.m1:g}, m2={self.m2:g}, m3={self.m3:g}"


def chebyshev_cos_multiple(cos: Tensor, m: int) -> Tensor:
    """cos(m theta) as the Chebyshev polynomial T_m(cos theta): T_0 = 1, T_1 = c,
    T_(k+1) = 2 c T_k - T_(k-1)."""
    previous, current = cos * 0 + 1, cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, cos * current * 2 - previous
    return current


class SphereFaceLoss(_MarginSoftmaxLoss):
    """SphereFace (A-Softmax): normalised class centres, raw embeddings; the logits are
    ||x|| cos_j, the target's ||x|| psi(theta_y) with

        psi(theta) = (-1)^k cos(m theta) - 2k,   theta in [k pi / m, (k + 1) pi / m]

    (monotone in theta; cos(m theta) is the Chebyshev polynomial of cos theta, as the
    reference code). ``margin`` m an int >= 1 (4); ``scale`` multiplies every logit (1, as
    pytorch-metric-learning's). The paper's annealing of psi with softmax is left out.
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: int = 4, scale: float = 1.0,
                 name: str | None = None):
        super().__init__(num_classes, embedding_size, scale, name=name)
        if isinstance(margin, bool) or not isinstance(margin, numbers.Integral) or not 1 <= margin <= 10:
            raise ValueError(f"SphereFaceLoss: margin must be an int in [1, 10] (the angle multiplier), "
                             f"got {margin!r}")
        self.margin = int(margin)

    def _logits(self, cos: Tensor, x: Tensor, y: np.ndarray) -> Tensor:
        return super()._logits(cos, x, y) * sqrt((x * x).sum(axis=1, keepdims=True))

    def _target(self, cos: Tensor, x: Tensor) -> Tensor:
        values = np.clip(backend.to_numpy(cos.data).astype(np.float64), -1.0, 1.0)
        k = np.minimum(np.floor(np.arccos(values) * self.margin / math.pi), self.margin - 1)
        sign = backend.xp.asarray(np.where(k % 2 == 0, 1.0, -1.0), dtype=cos.dtype)
        return chebyshev_cos_multiple(cos, self.margin) * sign - backend.xp.asarray(2 * k, dtype=cos.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


class NormalizedSoftmaxLoss(_MarginSoftmaxLoss):
    """Normalized softmax (Zhai and Wu 2019): cross-entropy of cos(x, W_j) / temperature,
    unit embeddings and class centres, no margin; ``temperature`` 0.05."""

    def __init__(self, num_classes: int, embedding_size: int, temperature: float = 0.05, name: str | None = None):
        temperature = _number(temperature, "NormalizedSoftmaxLoss: temperature", 0.0, math.inf, low_open=True)
        super().__init__(num_classes, embedding_size, 1.0 / temperature, name=name)
        self.temperature = temperature

    def _logits(self, cos: Tensor, x: Tensor, y: np.ndarray) -> Tensor:
        return cos * self.scale

    def extra_repr(self) -> str:
        return f"{self.num_classes}, {self.embedding_size}, temperature={self.temperature:g}"


class CenterLoss(_ClassCenters):
    """Center loss (Wen et al. 2016): L = 1/(2N) sum_i ||x_i - c_(y_i)||^2 over a batch of N
    (``reduction='sum'``: the paper's sum, without 1/N), used beside a softmax loss
    (total = softmax + lambda L).

    Two ways to move the centres ``weight`` (num_classes, D):

    - ``learnable=False`` (the paper): a buffer, not a parameter. Each call in training mode,
      after the loss is computed, moves the centres of the batch's classes by
      c_j <- c_j - alpha sum_(i: y_i = j) (c_j - x_i) / (1 + n_j), n_j the class's count in
      the batch, alpha = ``alpha`` in [0, 1]; the gradient reaches the embeddings only.
    - ``learnable=True`` (pytorch-metric-learning): a parameter trained by the optimizer
      through dL/dc; ``alpha`` is unused.
    """

    def __init__(self, num_classes: int, embedding_size: int, alpha: float = 0.5, learnable: bool = False,
                 reduction: str = "mean", name: str | None = None):
        super().__init__(num_classes, embedding_size, name=name, learnable=bool(learnable))
        self.alpha = _number(alpha, "CenterLoss: alpha", 0.0, 1.0)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CenterLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.learnable = bool(learnable)

    def forward(self, embeddings, labels) -> Tensor:
        x, y = self._inputs(embeddings, labels)
        centers = self.weight if self.learnable else Tensor._wrap(self.weight)
        index = backend.xp.asarray(y)
        diff = x - centers[index]
        total = (diff * diff).sum() * 0.5
        loss = total / x.shape[0] if self.reduction == "mean" else total
        if not self.learnable and self.training:
            self._update(backend.xp.asarray(x.data), index)
        return loss

    def _update(self, x, y) -> None:
        xp = backend.xp
        centers = self.weight
        members = (y[:, None] == xp.arange(self.num_classes)[None, :]).astype(centers.dtype)   # (N, C)
        pulls = members.T @ (centers[y] - x.astype(centers.dtype))
        self.weight = centers - self.alpha * pulls / (1 + members.sum(axis=0))[:, None]

    def extra_repr(self) -> str:
        mode = "learnable=True" if self.learnable else f"alpha={self.alpha:g}"
        return f"{super().extra_repr()}, {mode}"
