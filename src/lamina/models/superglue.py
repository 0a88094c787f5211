"""SuperGlue (Sarlin et al. 2020): matching two sets of local features with a graph neural
network and optimal transport.

For keypoints p (x, y), detection scores c and descriptors d of two images A (N points) and
B (M points):

    x_i = d_i + MLP_enc((p_i - centre) / (0.7 max(h, w)), c_i)          keypoint encoder
    x_i <- x_i + MLP([x_i || m_{E -> i}]),  m_{E -> i} = attention(x_i, sources)
                                                                         attentional GNN
the sources being the image's own points (self layers) and the other image's (cross
layers), alternately; both images are updated from the same layer input. Then

    f_i = W x_i + b,  S_ij = <f^A_i, f^B_j> / sqrt(d)

is augmented with a dustbin row and column holding one learned score alpha, and
:func:`log_optimal_transport` runs log-space Sinkhorn on it with the marginals
a = [1_N, M] and b = [1_M, N] (divided by N + M): every keypoint has unit mass, the dustbin
of A can absorb all of B's points and the other way round. The result is the log of the
partial assignment P (batch, N + 1, M + 1), scaled so that its inner block sums to at most 1
per row and column.

* :func:`superglue_loss`: the negative log-likelihood of the true matches and of the
  unmatched points' assignment to the dustbins, averaged over those terms.
* :func:`superglue_match`: the mutual-nearest matches of the inner block with an
  assignment probability above a threshold.
* :func:`matching_precision_recall`: precision and recall of predicted matches.
* :func:`synthetic_matching_pairs`: pairs of views of random "scenes" related by a random
  homography, with outliers, for training and testing.

The MLPs normalise with a LayerNorm over the features (the published model uses batch
normalisation), so that a point's output does not depend on the rest of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, LayerNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["MatchingPairs", "SuperGlue", "log_optimal_transport", "matching_precision_recall", "superglue_loss",
           "superglue_match", "synthetic_matching_pairs"]


def log_optimal_transport(scores, bin_score, iterations: int) -> Tensor:
    """log P (batch, N + 1, M + 1) for scores (batch, N, M) and a dustbin score ``bin_score``
    (a scalar tensor): the scores with a dustbin row and column of ``bin_score`` form Z, and
    ``iterations`` log-space Sinkhorn steps from u = v = 0,

        u <- log a - logsumexp_j(Z_ij + v_j),   v <- log b - logsumexp_i(Z_ij + u_i),

    with log a = [log 1, ..., log 1, log M] - log(N + M) and log b = [log 1, ..., log N] -
    log(N + M), give log P = Z + u_i + v_j + log(N + M) (each row of the inner block sums to
    1 once converged)."""
    scores = as_tensor(scores)
    if scores.ndim != 3:
        raise ShapeError(f"log_optimal_transport: scores need shape (batch, N, M), got {tuple(scores.shape)}")
    iterations = positive_int(iterations, "log_optimal_transport: iterations")
    batch, n, m = scores.shape
    alpha = as_tensor(bin_score).reshape(1, 1, 1)
    column = F.broadcast_to(alpha, (batch, n, 1))
    row = F.broadcast_to(alpha, (batch, 1, m + 1))
    z = F.concat([F.concat([scores, column], axis=2), row], axis=1)
    norm = -math.log(n + m)
    dtype = np.dtype(scores.dtype)
    log_a = Tensor(np.r_[np.full(n, norm), math.log(m) + norm], dtype=dtype)
    log_b = Tensor(np.r_[np.full(m, norm), math.log(n) + norm], dtype=dtype)
    u, v = Tensor(np.zeros((batch, n + 1)), dtype=dtype), Tensor(np.zeros((batch, m + 1)), dtype=dtype)
    for _ in range(iterations):
        u = log_a - F.logsumexp(z + v[:, None, :], axis=2)
        v = log_b - F.logsumexp(z + u[:, :, None], axis=1)
    return z + u[:, :, None] + v[:, None, :] - norm


class _MLP(Module):
    """Dense layers of ``widths``, each but the last followed by LayerNorm and ReLU."""

    def __init__(self, widths):
        super().__init__()
        self.dense = ModuleList([Dense(w, kernel_init="xavier_uniform") for w in widths])
        self.norms = ModuleList([LayerNorm() for _ in widths[:-1]])

    def forward(self, x) -> Tensor:
        for k, layer in enumerate(self.dense):
            x = layer(x)
            if k < len(self.norms):
                x = F.relu(self.norms[k](x))
        return x


class _AttentionalPropagation(Module):
    """x + MLP([x || MultiHead(q = x, k = v = source)]) (one GNN layer for one image)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SuperGlue: descriptor_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query, self.key, self.value, self.merge = (Dense(dim, kernel_init="xavier_uniform") for _ in range(4))
        self.mlp = _MLP((2 * dim, dim))

    def _heads(self, x) -> Tensor:
        batch, count, dim = x.shape
        return x.reshape(batch, count, self.num_heads, dim // self.num_heads).transpose(0, 2, 1, 3)

    def forward(self, x, source) -> Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(source)), self._heads(self.value(source))
        weights = F.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]), axis=-1)
        batch, count, dim = x.shape
        message = self.merge((weights @ v).transpose(0, 2, 1, 3).reshape(batch, count, dim))
        return x + self.mlp(F.concat([x, message], axis=2))


@register_with_arguments
class SuperGlue(Module):
    """SuperGlue's matcher (module docstring). Called as ``model(keypoints0, scores0,
    descriptors0, keypoints1, scores1, descriptors1, image_size=None)`` with keypoints
    (batch, N, 2) as (x, y) pixels, detection scores (batch, N) and descriptors (batch, N,
    ``descriptor_dim``) (M points for the second image); ``image_size`` (height, width)
    normalises the keypoints (None: they are used as given). Returns the log partial
    assignment (batch, N + 1, M + 1).

    ``keypoint_encoder``: the encoder MLP's hidden widths; ``num_layers`` pairs of a self- and
    a cross-attention layer with ``num_heads`` heads; ``sinkhorn_iterations`` T; the dustbin
    score starts at ``bin_score``. The published model: 256, (32, 64, 128, 256), 9, 4, 100."""

    def __init__(self, descriptor_dim: int = 256, keypoint_encoder=(32, 64, 128, 256), num_layers: int = 9,
                 num_heads: int = 4, sinkhorn_iterations: int = 100, bin_score: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.descriptor_dim = positive_int(descriptor_dim, "SuperGlue: descriptor_dim")
        self.num_layers = positive_int(num_layers, "SuperGlue: num_layers")
        self.sinkhorn_iterations = positive_int(sinkhorn_iterations, "SuperGlue: sinkhorn_iterations")
        positive_int(num_heads, "SuperGlue: num_heads")
        self.encoder = _MLP(tuple(keypoint_encoder) + (self.descriptor_dim,))
        self.gnn = ModuleList([_AttentionalPropagation(self.descriptor_dim, num_heads)
                               for _ in range(2 * self.num_layers)])
        self.final_proj = Dense(self.descriptor_dim, kernel_init="xavier_uniform")
        self.add_parameter("bin_score", np.array(bin_score, dtype=backend.get_default_dtype()))

    def _encode(self, keypoints, scores, descriptors, image_size, which: str) -> Tensor:
        keypoints, scores, descriptors = as_tensor(keypoints), as_tensor(scores), as_tensor(descriptors)
        batch, count = descriptors.shape[:2] if descriptors.ndim == 3 else (None, None)
        if (descriptors.ndim != 3 or descriptors.shape[2] != self.descriptor_dim
                or tuple(keypoints.shape) != (batch, count, 2) or tuple(scores.shape) != (batch, count)):
            raise ShapeError(f"SuperGlue: image {which} needs keypoints (batch, n, 2), scores (batch, n) and "
                             f"descriptors (batch, n, {self.descriptor_dim}); got {tuple(keypoints.shape)}, "
                             f"{tuple(scores.shape)} and {tuple(descriptors.shape)}")
        if image_size is not None:
            height, width = image_size
            centre = Tensor(np.array([width / 2, height / 2]), dtype=keypoints.dtype)
            keypoints = (keypoints - centre) / (0.7 * max(height, width))
        return descriptors + self.encoder(F.concat([keypoints, scores[:, :, None]], axis=2))

    def forward(self, keypoints0, scores0, descriptors0, keypoints1, scores1, descriptors1,
                image_size=None) -> Tensor:
        x0 = self._encode(keypoints0, scores0, descriptors0, image_size, "0")
        x1 = self._encode(keypoints1, scores1, descriptors1, image_size, "1")
        for k, layer in enumerate(self.gnn):
            cross = k % 2 == 1
            x0, x1 = layer(x0, x1 if cross else x0), layer(x1, x0 if cross else x1)
        f0, f1 = self.final_proj(x0), self.final_proj(x1)
        scores = f0 @ f1.transpose(0, 2, 1) / math.sqrt(self.descriptor_dim)
        return log_optimal_transport(scores, self.bin_score, self.sinkhorn_iterations)

    def extra_repr(self) -> str:
        return (f"descriptor_dim={self.descriptor_dim}, num_layers={self.num_layers}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}")


def superglue_loss(log_assignment, matches, unmatched0, unmatched1) -> Tensor:
    """The mean negative log-likelihood over the ground truth:

        -(sum_{(b, i, j) in matches} log P_bij + sum_{(b, i) in unmatched0} log P_{b,i,M}
          + sum_{(b, j) in unmatched1} log P_{b,N,j}) / (number of terms)

    for the log assignment (batch, N + 1, M + 1), ``matches`` (K, 3) integer rows (batch, i,
    j), ``unmatched0`` (K0, 2) rows (batch, i) and ``unmatched1`` (K1, 2) rows (batch, j)."""
    log_assignment = as_tensor(log_assignment)
    if log_assignment.ndim != 3:
        raise ShapeError(f"superglue_loss: log_assignment needs shape (batch, N + 1, M + 1), "
                         f"got {tuple(log_assignment.shape)}")
    batch, rows, cols = log_assignment.shape
    weights = np.zeros((batch, rows, cols))
    for what, index, width in (("matches", matches, 3), ("unmatched0", unmatched0, 2), ("unmatched1", unmatched1, 2)):
        index = np.asarray(index, dtype=np.int64).reshape(-1, width) if np.size(index) else np.zeros((0, width), int)
        if index.ndim != 2 or index.shape[1] != width:
            raise ShapeError(f"superglue_loss: {what} needs shape (K, {width}), got {index.shape}")
        if what == "matches":
            np.add.at(weights, (index[:, 0], index[:, 1], index[:, 2]), 1.0)
        elif what == "unmatched0":
            np.add.at(weights, (index[:, 0], index[:, 1], cols - 1), 1.0)
        else:
            np.add.at(weights, (index[:, 0], rows - 1, index[:, 1]), 1.0)
    total = weights.sum()
    if total == 0:
        raise ValueError("superglue_loss: no matches and no unmatched points were given")
    weights = Tensor(weights / total, dtype=log_assignment.dtype)
    return -(log_assignment * weights).sum()


def superglue_match(log_assignment, threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches from a log assignment (batch, N + 1, M + 1): i in A and j in B match when each
    is the other's best in the inner block (mutual nearest) and exp(log P_ij) > ``threshold``.
    Returns (matches0 (batch, N), matches1 (batch, M), confidence0 (batch, N)): the index of
    the match or -1, and exp(log P_ij) for the matched points (0 elsewhere)."""
    values = np.asarray(log_assignment.numpy() if hasattr(log_assignment, "numpy") else log_assignment)
    if values.ndim != 3:
        raise ShapeError(f"superglue_match: log_assignment needs shape (batch, N + 1, M + 1), got {values.shape}")
    inner = values[:, :-1, :-1]
    best0, best1 = inner.argmax(axis=2), inner.argmax(axis=1)
    mutual0 = np.take_along_axis(best1, best0, axis=1) == np.arange(inner.shape[1])[None]
    confidence0 = np.where(mutual0, np.exp(inner.max(axis=2)), 0.0)
    valid0 = mutual0 & (confidence0 > threshold)
    mutual1 = np.take_along_axis(best0, best1, axis=1) == np.arange(inner.shape[2])[None]
    valid1 = mutual1 & np.take_along_axis(valid0, best1, axis=1)
    return np.where(valid0, best0, -1), np.where(valid1, best1, -1), np.where(valid0, confidence0, 0.0)


def matching_precision_recall(matches0, true_matches0) -> tuple[float, float]:
    """(precision, recall) of predicted matches (batch, N) against the true ones (index in the
    other image or -1 for none): correct / predicted and correct / true (0 when a count is 0)."""
    matches0, true_matches0 = np.asarray(matches0), np.asarray(true_matches0)
    if matches0.shape != true_matches0.shape:
        raise ShapeError(f"matching_precision_recall: predicted {matches0.shape} and true {true_matches0.shape} "
                         "matches must have the same shape")
    predicted, true = matches0 >= 0, true_matches0 >= 0
    correct = (predicted & (matches0 == true_matches0)).sum()
    return float(correct / max(predicted.sum(), 1)), float(correct / max(true.sum(), 1))


@dataclass
class MatchingPairs:
    """A batch of synthetic image pairs (:func:`synthetic_matching_pairs`): keypoints (batch,
    n, 2), scores (batch, n), unit descriptors (batch, n, d) of both views, the true matches
    as indices into the other view (-1: an outlier) and the image size (height, width)."""

    keypoints0: np.ndarray
    scores0: np.ndarray
    descriptors0: np.ndarray
    keypoints1: np.ndarray
    scores1: np.ndarray
    descriptors1: np.ndarray
    matches0: np.ndarray
    matches1: np.ndarray
    image_size: tuple[int, int]

    def inputs(self) -> tuple[np.ndarray, ...]:
        """The SuperGlue call's six positional inputs."""
        return (self.keypoints0, self.scores0, self.descriptors0, self.keypoints1, self.scores1, self.descriptors1)

    def loss_targets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(matches, unmatched0, unmatched1) in :func:`superglue_loss`'s form."""
        b, i = np.nonzero(self.matches0 >= 0)
        matches = np.stack([b, i, self.matches0[b, i]], axis=1)
        return matches, np.argwhere(self.matches0 < 0), np.argwhere(self.matches1 < 0)


def _random_homography(rng, height: int, width: int) -> np.ndarray:
    """A mild random homography about the image centre: rotation within +-30 degrees, scale
    in [0.8, 1.25], a shift up to 10% of the size and a small perspective term."""
    angle, scale = rng.uniform(-np.pi / 6, np.pi / 6), np.exp(rng.uniform(-0.22, 0.22))
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    back = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    shift = rng.uniform(-0.1, 0.1, size=2) * (width, height)
    similarity = np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1]])
    perspective = np.eye(3)
    perspective[2, :2] = rng.uniform(-2e-4, 2e-4, size=2) * 64 / max(height, width)
    return centre @ perspective @ similarity @ back


def synthetic_matching_pairs(batch: int, num_keypoints: int = 32, descriptor_dim: int = 16,
                             inlier_fraction: float = 0.6, descriptor_noise: float = 0.3,
                             nuisance_dims: int = 0, nuisance_scale: float = 1.0, position_noise: float = 1.0,
                             image_size: tuple[int, int] = (64, 64), seed=None) -> MatchingPairs:
    """``batch`` pairs of views of random scenes. Each view has ``num_keypoints`` points, of
    which round(``inlier_fraction`` n) are seen in both: uniform positions in view 0 mapped to
    view 1 by a random homography (:func:`_random_homography`) plus Gaussian noise of
    ``position_noise`` pixels; the rest of each view are outliers at uniform positions. A
    scene point's descriptor is a random Gaussian vector, each view's copy with Gaussian noise
    of ``descriptor_noise`` times its scale; the last ``nuisance_dims`` dimensions are
    replaced in every view by independent noise of ``nuisance_scale`` (view-specific clutter
    a learned matcher can learn to ignore). Descriptors are scaled to unit length; view 1's
    points are shuffled; scores are uniform in [0.5, 1)."""
    batch = positive_int(batch, "synthetic_matching_pairs: batch")
    n = positive_int(num_keypoints, "synthetic_matching_pairs: num_keypoints")
    d = positive_int(descriptor_dim, "synthetic_matching_pairs: descriptor_dim")
    if not 0 <= inlier_fraction <= 1 or not 0 <= nuisance_dims < d:
        raise ValueError(f"synthetic_matching_pairs: need 0 <= inlier_fraction <= 1 and 0 <= nuisance_dims < "
                         f"descriptor_dim, got {inlier_fraction!r} and {nuisance_dims!r}")
    rng = np.random.default_rng(seed)
    height, width = image_size
    inliers = int(round(inlier_fraction * n))
    size = np.array([width, height], dtype=float)
    kp0, kp1 = rng.uniform(0, 1, (batch, n, 2)) * size, rng.uniform(0, 1, (batch, n, 2)) * size
    scene = rng.normal(size=(batch, n, d)) / math.sqrt(d)
    desc0 = scene + descriptor_noise * rng.normal(size=scene.shape) / math.sqrt(d)
    desc1 = rng.normal(size=scene.shape) / math.sqrt(d)
    desc1[:, :inliers] = scene[:, :inliers] + descriptor_noise * rng.normal(size=(batch, inliers, d)) / math.sqrt(d)
    for b in range(batch):
        homogeneous = np.c_[kp0[b, :inliers], np.ones(inliers)] @ _random_homography(rng, height, width).T
        kp1[b, :inliers] = homogeneous[:, :2] / homogeneous[:, 2:] + position_noise * rng.normal(size=(inliers, 2))
    for desc in (desc0, desc1):
        if nuisance_dims:
            desc[:, :, d - nuisance_dims:] = nuisance_scale * rng.normal(size=(batch, n, nuisance_dims)) / math.sqrt(d)
        desc /= np.linalg.norm(desc, axis=2, keepdims=True)
    order = np.stack([rng.permutation(n) for _ in range(batch)])        # view 1's point k is scene point order[k]
    kp1, desc1 = np.take_along_axis(kp1, order[:, :, None], 1), np.take_along_axis(desc1, order[:, :, None], 1)
    matches1 = np.where(order < inliers, order, -1)
    matches0 = np.full((batch, n), -1)
    rows, cols = np.nonzero(matches1 >= 0)
    matches0[rows, matches1[rows, cols]] = cols
    dtype = backend.get_default_dtype()
    return MatchingPairs(kp0.astype(dtype), rng.uniform(0.5, 1, (batch, n)).astype(dtype), desc0.astype(dtype),
                         kp1.astype(dtype), rng.uniform(0.5, 1, (batch, n)).astype(dtype), desc1.astype(dtype),
                         matches0, matches1, (height, width))
