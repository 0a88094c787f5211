"""PointRend (Kirillov, Wu, He & Girshick 2020, "PointRend: Image Segmentation as Rendering")
for semantic segmentation: a coarse network's prediction refined at a few adaptively chosen
points by a small point head reading a finer feature map.

* :func:`point_sample` reads an (N, H, W, C) map at points p = (x, y) in [0, 1]^2 (x along
  the columns), bilinearly with ``align_corners=False``: the map spans the unit square, pixel
  (i, j) covering [j / W, (j + 1) / W] x [i / H, (i + 1) / H]. It is lamina's
  :func:`~lamina.functional.grid_sample` at g = 2 p - 1.
* Uncertainty of a prediction with logits z: u = -(z_(1) - z_(2)), minus the margin between
  the two largest logits (-|z| for a single logit); the largest u is the least certain point.
* Training points (:func:`uncertain_points_with_randomness`): k N candidates drawn uniformly,
  the beta N most uncertain of them by the coarse logits sampled there, and (1 - beta) N
  more drawn uniformly (the paper's k = 3, beta = 0.75).
* The point head (:class:`PointHead`): an MLP shared by all points (1x1 convolutions in the
  paper) over [fine features; coarse logits] at each point, the coarse logits joined again to
  each hidden layer's output::

      h_0 = [f(p); c(p)],   h_l = [relu(W_l h_(l-1) + b_l); c(p)],   logits(p) = W_o h_L + b_o

* Inference by adaptive subdivision (:meth:`PointRendSemSeg.subdivide`): the logits are
  upsampled x2 (bilinear), the N cells of the new grid with the largest uncertainty are
  re-predicted by the point head at their centres (fine features and the original coarse
  logits read there), and the step repeats.

:class:`PointRendSemSeg` wraps any coarse network given as a fine feature map ``features(x)``
and a ``coarse_head`` producing coarse logits from it (:func:`pointrend_from_segmentation`
takes both from a :class:`~lamina.models.SegmentationModel`, e.g. FCN or DeepLabv3); its loss is
the coarse cross-entropy (logits upsampled to the labels) plus the point head's
cross-entropy at the training points, labels read at the nearest pixel.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["PointHead", "PointRendSemSeg", "point_sample", "point_uncertainty", "pointrend_from_segmentation",
           "uncertain_points_on_grid", "uncertain_points_with_randomness"]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _array(x):
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def point_sample(features, points, align_corners: bool = False) -> Tensor:
    """The map ``features`` (N, H, W, C) read bilinearly at ``points`` (N, P, 2), each (x, y)
    in [0, 1] (module docstring): (N, P, C). Outside the map the values fall off to zero
    (``grid_sample``'s 'zeros' padding). Differentiable in the features and in the points."""
    features, points = _as_tensor(features), _as_tensor(points)
    if len(features.shape) != 4:
        raise ShapeError(f"point_sample: expected features of shape (N, H, W, C), got shape {tuple(features.shape)}")
    if len(points.shape) != 3 or points.shape[2] != 2 or points.shape[0] != features.shape[0]:
        raise ShapeError(f"point_sample: expected points of shape (N, P, 2) with N = {features.shape[0]} for features "
                         f"of shape {tuple(features.shape)}, got shape {tuple(points.shape)}")
    n, p = points.shape[:2]
    grid = (points * 2.0 - 1.0).reshape(n, p, 1, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return out.reshape(n, p, features.shape[3])


def point_uncertainty(logits):
    """u = -(z_(1) - z_(2)) over the last axis (the top two logits), or -|z| for a single
    logit: an array of the logits' shape without its last axis."""
    z = _array(logits)
    if z.shape[-1] == 1:
        return -backend.xp.abs(z[..., 0])
    top = backend.xp.sort(z, axis=-1)
    return top[..., -2] - top[..., -1]


def _top(values, count: int):
    """The indices of the ``count`` largest entries of each row (earlier index first on ties)."""
    return backend.xp.argsort(-values, axis=1, kind="stable")[:, :count]


def uncertain_points_with_randomness(coarse_logits, num_points: int, oversample_ratio: float = 3.0,
                                     importance_sample_ratio: float = 0.75,
                                     rng: np.random.Generator | None = None):
    """PointRend's training points for the coarse logits (N, H, W, K): (N, ``num_points``, 2),
    (x, y) in [0, 1]. Draws ``rng.random((N, int(k num_points), 2))`` candidates (k the
    ``oversample_ratio``), keeps the ``int(beta num_points)`` whose sampled coarse logits are
    the most uncertain (:func:`point_uncertainty`; beta the ``importance_sample_ratio``), in
    decreasing uncertainty, then appends ``rng.random((N, rest, 2))`` (``rng`` a NumPy Generator,
    a fresh unseeded one when None). Not differentiable."""
    num_points = positive_int(num_points, "uncertain_points_with_randomness: num_points")
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"uncertain_points_with_randomness: expected oversample_ratio >= 1 and "
                         f"importance_sample_ratio in [0, 1], got {oversample_ratio} and {importance_sample_ratio}")
    logits = _array(coarse_logits)
    if logits.ndim != 4:
        raise ShapeError(f"uncertain_points_with_randomness: expected coarse logits of shape (N, H, W, K), got shape "
                         f"{tuple(logits.shape)}")
    rng = np.random.default_rng() if rng is None else rng
    n, dtype = logits.shape[0], logits.dtype
    candidates = backend.xp.asarray(rng.random((n, int(num_points * oversample_ratio), 2)).astype(dtype))
    num_uncertain = int(importance_sample_ratio * num_points)
    with no_grad():
        sampled = point_sample(Tensor(logits), Tensor(candidates)).data
    chosen = _top(point_uncertainty(sampled), num_uncertain)
    uncertain = backend.xp.take_along_axis(candidates, chosen[..., None], axis=1)
    extra = backend.xp.asarray(rng.random((n, num_points - num_uncertain, 2)).astype(dtype))
    return backend.xp.concatenate([uncertain, extra], axis=1)


def uncertain_points_on_grid(uncertainty_map, num_points: int):
    """The min(``num_points``, H W) most uncertain cells of the map (N, H, W): their flat
    indices i W + j (N, n), in decreasing uncertainty, and their centres
    ((j + 1/2) / W, (i + 1/2) / H) (N, n, 2)."""
    u = _array(uncertainty_map)
    if u.ndim != 3:
        raise ShapeError(f"uncertain_points_on_grid: expected an uncertainty map of shape (N, H, W), got shape "
                         f"{tuple(u.shape)}")
    n, h, w = u.shape
    index = _top(u.reshape(n, h * w), min(positive_int(num_points, "uncertain_points_on_grid: num_points"), h * w))
    points = backend.xp.stack([(index % w + 0.5) / w, (index // w + 0.5) / h], axis=-1).astype(u.dtype)
    return index, points


@register_with_arguments
class PointHead(Module):
    """PointRend's point head (module docstring): ``num_fc`` shared layers of ``fc_dim`` units
    with ReLU over [fine features; coarse logits] (the coarse logits joined again after each
    layer when ``coarse_pred_each_layer``), then a linear ``predictor`` to ``num_classes``.
    Called on (fine (N, P, C_f), coarse (N, P, K)): (N, P, num_classes)."""

    def __init__(self, num_classes: int, fc_dim: int = 256, num_fc: int = 3, coarse_pred_each_layer: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "PointHead: num_classes")
        fc_dim = positive_int(fc_dim, "PointHead: fc_dim")
        self.coarse_pred_each_layer = bool(coarse_pred_each_layer)
        self.fcs = nn.ModuleList([nn.Dense(fc_dim, name=str(i)) for i in range(int(num_fc))])
        self.predictor = nn.Dense(self.num_classes, name="predictor")

    def forward(self, fine, coarse) -> Tensor:
        fine, coarse = _as_tensor(fine), _as_tensor(coarse)
        if len(fine.shape) != 3 or len(coarse.shape) != 3 or fine.shape[:2] != coarse.shape[:2]:
            raise ShapeError(f"{self._label()}: expected fine features (N, P, C) and coarse predictions (N, P, K) at "
                             f"the same points, got shapes {tuple(fine.shape)} and {tuple(coarse.shape)}")
        h = F.concat([fine, coarse], axis=-1)
        for fc in self.fcs:
            h = F.relu(fc(h))
            if self.coarse_pred_each_layer:
                h = F.concat([h, coarse], axis=-1)
        return self.predictor(h)


@register_with_arguments(modules=("features", "coarse_head", "point_head"))
class PointRendSemSeg(Module):
    """PointRend on a coarse segmentation network (module docstring): ``features`` maps the
    images (N, H, W, C) to the fine feature map, ``coarse_head`` maps that to the coarse logits
    (N, h, w, K), ``point_head`` is a :class:`PointHead`.

    ``forward`` gives (N, H, W, K) scores: in training mode the coarse logits resized to the
    input (bilinear, differentiable), in evaluation mode those of :meth:`subdivide` (resized
    to the input when the subdivided grid differs from it). :meth:`loss` is the training
    objective."""

    def __init__(self, features: Module, coarse_head: Module, point_head: PointHead, num_points: int = 2048,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, subdivision_steps: int = 2,
                 subdivision_num_points: int = 8192, name: str | None = None):
        super().__init__(name=name)
        self.features, self.coarse_head, self.point_head = features, coarse_head, point_head
        self.num_points = positive_int(num_points, "PointRendSemSeg: num_points")
        self.oversample_ratio, self.importance_sample_ratio = float(oversample_ratio), float(importance_sample_ratio)
        self.subdivision_steps = int(subdivision_steps)
        self.subdivision_num_points = positive_int(subdivision_num_points, "PointRendSemSeg: subdivision_num_points")

    def coarse(self, x) -> tuple[Tensor, Tensor]:
        """(fine feature map, coarse logits) of the images x."""
        x = _as_tensor(x)
        if len(x.shape) != 4:
            raise ShapeError(f"{self._label()}: expected images of shape (N, H, W, C), got shape {tuple(x.shape)}")
        fine = self.features(x)
        return fine, self.coarse_head(fine)

    def point_logits(self, fine, coarse_logits, points) -> Tensor:
        """The point head's logits (N, P, K) at ``points`` (N, P, 2), from the fine features and
        the coarse logits sampled there."""
        return self.point_head(point_sample(fine, points), point_sample(coarse_logits, points))

    def subdivide(self, fine, coarse_logits, steps: int | None = None, num_points: int | None = None) -> Tensor:
        """Adaptive subdivision: ``steps`` times, upsample the logits x2 (bilinear,
        align_corners=False) and replace those of the ``num_points`` most uncertain cells by
        the point head's prediction at their centres (its coarse input read from the original
        coarse logits, as at training). Returns (N, 2^steps h, 2^steps w, K)."""
        steps = self.subdivision_steps if steps is None else int(steps)
        num_points = self.subdivision_num_points if num_points is None else num_points
        xp = backend.xp
        with no_grad():
            coarse_logits = logits = _as_tensor(coarse_logits)
            for _ in range(steps):
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
                n, h, w, k = logits.shape
                index, points = uncertain_points_on_grid(point_uncertainty(logits), num_points)
                refined = self.point_logits(fine, coarse_logits, Tensor(points)).data
                flat = logits.data.reshape(n, h * w, k).copy()
                flat[xp.arange(n)[:, None], index] = refined
                logits = Tensor(flat.reshape(n, h, w, k))
        return logits

    def forward(self, x) -> Tensor:
        x = _as_tensor(x)
        fine, coarse = self.coarse(x)
        size = tuple(x.shape[1:3])
        scores = coarse if self.training else self.subdivide(fine, coarse)
        if tuple(scores.shape[1:3]) == size:
            return scores
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)

    def loss(self, x, labels, rng: np.random.Generator | None = None, ignore_index: int = -100) -> Tensor:
        """L = CE(coarse logits resized to the labels, labels) + CE(point logits, labels at the
        points), the training points from :func:`uncertain_points_with_randomness` on the
        coarse logits and the labels (N, H, W) read at the pixel holding each point."""
        labels = _array(labels)
        fine, coarse = self.coarse(x)
        if labels.ndim != 3 or labels.shape[0] != coarse.shape[0]:
            raise ShapeError(f"{self._label()}.loss: expected labels of shape (N, H, W) with N = {coarse.shape[0]}, "
                             f"got shape {tuple(labels.shape)}")
        n, h, w = labels.shape
        resized = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        coarse_loss = F.cross_entropy(resized, labels, ignore_index=ignore_index)
        points = uncertain_points_with_randomness(coarse.data, self.num_points, self.oversample_ratio,
                                                  self.importance_sample_ratio, rng)
        cols = backend.xp.minimum((points[..., 0] * w).astype(int), w - 1)
        rows = backend.xp.minimum((points[..., 1] * h).astype(int), h - 1)
        point_labels = labels[backend.xp.arange(n)[:, None], rows, cols]
        point_loss = F.cross_entropy(self.point_logits(fine, coarse, Tensor(points)), point_labels,
                                     ignore_index=ignore_index)
        return coarse_loss + point_loss


def pointrend_from_segmentation(model, point_head: PointHead | None = None, **options) -> PointRendSemSeg:
    """PointRend on a :class:`~lamina.models.SegmentationModel` (FCN, DeepLabv3): its backbone
    gives the fine features and its classifier the coarse logits; ``point_head`` defaults to
    ``PointHead(classes)`` with the classifier's last layer's number of filters as classes."""
    if point_head is None:
        classes = list(model.classifier.children())[-1].filters
        point_head = PointHead(classes)
    return PointRendSemSeg(model.backbone, model.classifier, point_head, **options)
