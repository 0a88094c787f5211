"""ProtoPNet-lite (Chen et al. 2019, "This Looks Like That"): a CNN gives a feature map z
(N, H, W, D); each of the m prototypes per class is a 1x1 patch p_j in R^D. For every image and
prototype, with d = min over patches ||z_hw - p_j||^2,

    similarity_j = log((d + 1) / (d + eps)),        logits = similarity @ W   (W: (M, C)),

where W starts at 1 for a prototype's own class and -0.5 for the others. Training adds the
cluster cost (mean over images of the distance to the closest prototype of the image's class)
and subtracts a weight times the separation cost (the same to the closest prototype of another
class): :func:`prototype_cluster_cost`, :func:`prototype_separation_cost`. :meth:`ProtoPNet.push`
projects each prototype onto its nearest training patch of its own class, and
:meth:`ProtoPNet.explain` lists the prototypes that drove a prediction and where they matched.

After a push the paper trains the last layer alone (features and prototypes fixed) on

    CE(logits, y) + lambda * sum_{j, k: class(j) != k} |W_jk|,        lambda = 1e-4,

the L1 term (:func:`last_layer_l1`) pulling the weights from prototypes to the classes they do
not belong to towards 0: :func:`fine_tune_last_layer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["PrototypeMatch", "ProtoPNet", "fine_tune_last_layer", "last_layer_l1", "prototype_cluster_cost",
           "prototype_distances", "prototype_separation_cost", "prototype_similarity"]


def prototype_distances(features, prototypes) -> Tensor:
    """||z_nhw - p_j||^2 = |z|^2 - 2 z.p + |p|^2, clamped at 0: (N, H, W, D), (M, D) -> (N, H, W, M)."""
    z, p = as_tensor(features), as_tensor(prototypes)
    if z.ndim != 4 or p.ndim != 2 or z.shape[-1] != p.shape[-1]:
        raise ShapeError(f"prototype_distances: expected features (N, H, W, D) and prototypes (M, D), "
                         f"got {tuple(z.shape)} and {tuple(p.shape)}")
    squared = (z * z).sum(axis=-1, keepdims=True) - 2 * F.matmul(z, p.T) + (p * p).sum(axis=-1)
    return F.relu(squared)


def prototype_similarity(min_distances, eps: float = 1e-4) -> Tensor:
    """log((d + 1) / (d + eps)), large for a close patch and ~0 for a far one."""
    d = as_tensor(min_distances)
    return F.log((d + 1) / (d + eps))


def _own_class_mask(labels, prototype_class: np.ndarray) -> np.ndarray:
    return np.asarray(labels)[:, None] == prototype_class[None, :]


def prototype_cluster_cost(min_distances, labels, prototype_class) -> Tensor:
    """mean_n min over prototypes j of class y_n of d_nj (min_distances (N, M))."""
    d = as_tensor(min_distances)
    own = _own_class_mask(labels, np.asarray(prototype_class))
    far = float(np.asarray(d.data).max()) + 1.0 if d.shape[0] else 1.0
    return (d + far * (~own)).min(axis=1).mean()


def prototype_separation_cost(min_distances, labels, prototype_class) -> Tensor:
    """mean_n min over prototypes j of the other classes of d_nj (to be subtracted from the loss)."""
    d = as_tensor(min_distances)
    own = _own_class_mask(labels, np.asarray(prototype_class))
    far = float(np.asarray(d.data).max()) + 1.0 if d.shape[0] else 1.0
    return (d + far * own).min(axis=1).mean()


def last_layer_l1(last_layer, prototype_class) -> Tensor:
    """sum over prototypes j and classes k with class(j) != k of |W_jk|, for W (M, C) and
    ``prototype_class`` (M,): the L1 norm of the weights to the wrong classes."""
    w = as_tensor(last_layer)
    prototype_class = np.asarray(prototype_class)
    if w.ndim != 2 or prototype_class.shape != (w.shape[0],):
        raise ShapeError(f"last_layer_l1: expected a last layer (M, C) and prototype classes (M,), got "
                         f"{tuple(w.shape)} and {prototype_class.shape}")
    wrong = prototype_class[:, None] != np.arange(w.shape[1])[None, :]
    return (F.abs(w) * Tensor(wrong.astype(w.dtype))).sum()


@dataclass
class PrototypeMatch:
    """One prototype's part in a prediction: its index and class, its similarity to the image and
    weight to the predicted class, the (row, column) of the closest patch in the feature map, and
    the training patch it was pushed onto as (image index, row, column) (None before a push)."""

    prototype: int
    prototype_class: int
    similarity: float
    contribution: float
    location: tuple[int, int]
    source: tuple[int, int, int] | None


@register_with_arguments(modules=("features",))
class ProtoPNet(Module):
    """images -> logits (N, n_classes) through prototypes (module docstring). ``features`` maps
    NHWC images to (N, H, W, prototype_dim) feature maps."""

    def __init__(self, features: Module, n_classes: int, prototypes_per_class: int, prototype_dim: int,
                 eps: float = 1e-4, name: str | None = None):
        super().__init__(name=name)
        if isinstance(prototypes_per_class, bool) or not isinstance(prototypes_per_class, int) \
                or prototypes_per_class <= 0:
            raise ValueError(f"ProtoPNet: prototypes_per_class must be a positive int, got {prototypes_per_class!r}")
        if n_classes < 2 or prototype_dim < 1:
            raise ValueError(f"ProtoPNet: need n_classes >= 2 and prototype_dim >= 1, got {n_classes}, {prototype_dim}")
        self.features = features
        self.n_classes, self.prototypes_per_class = int(n_classes), prototypes_per_class
        self.prototype_dim, self.eps = int(prototype_dim), float(eps)
        self.prototype_class = np.repeat(np.arange(n_classes), prototypes_per_class)
        dtype = backend.get_default_dtype()
        n_prototypes = len(self.prototype_class)
        self.add_parameter("prototypes", backend.rng().uniform(0, 1, (n_prototypes, prototype_dim)).astype(dtype))
        connection = np.where(self.prototype_class[:, None] == np.arange(n_classes)[None, :], 1.0, -0.5)
        self.add_parameter("last_layer", connection.astype(dtype))
        self.push_sources: list[tuple[int, int, int] | None] = [None] * n_prototypes
        self.built = True

    def feature_map(self, images) -> Tensor:
        z = self.features(images)
        if z.ndim != 4 or z.shape[-1] != self.prototype_dim:
            raise ShapeError(f"ProtoPNet: features must give (N, H, W, {self.prototype_dim}), got {tuple(z.shape)}")
        return z

    def head(self, z) -> tuple[Tensor, Tensor]:
        """Feature maps (N, H, W, D) -> (logits (N, C), min distances (N, M))."""
        d = prototype_distances(z, self.prototypes)
        n, h, w, m = d.shape
        min_d = d.reshape(n, h * w, m).min(axis=1)
        return F.matmul(prototype_similarity(min_d, self.eps), self.last_layer), min_d

    def forward(self, images) -> Tensor:
        logits, self.last_min_distances = self.head(self.feature_map(images))
        return logits

    def loss(self, images, labels, cluster_weight: float = 0.8, separation_weight: float = 0.08) -> Tensor:
        """CE + cluster_weight * cluster cost - separation_weight * separation cost."""
        logits, min_d = self.head(self.feature_map(images))
        return (F.cross_entropy(logits, labels) + cluster_weight * prototype_cluster_cost(
            min_d, labels, self.prototype_class) - separation_weight * prototype_separation_cost(
            min_d, labels, self.prototype_class))

    def last_layer_loss(self, images, labels, l1: float = 1e-4) -> Tensor:
        """CE + l1 * :func:`last_layer_l1`: the objective of the last-layer stage."""
        return F.cross_entropy(self(images), labels) + l1 * last_layer_l1(self.last_layer, self.prototype_class)

    def similarities(self, images, batch_size: int = 256) -> np.ndarray:
        """log((d + 1) / (d + eps)) (N, M) of every image and prototype, without a graph."""
        with no_grad():
            parts = [prototype_similarity(self.head(self.feature_map(images[start:start + batch_size]))[1],
                                          self.eps).numpy() for start in range(0, len(images), batch_size)]
        return np.concatenate(parts)

    def push(self, images, labels, batch_size: int = 256) -> None:
        """Set each prototype to its nearest feature-map patch among the training images of its
        class (exactly that patch's vector); records the patch in ``push_sources``."""
        labels = np.asarray(labels)
        best = np.full(len(self.prototype_class), np.inf)
        chosen = np.zeros((len(self.prototype_class), self.prototype_dim))
        with no_grad():
            for start in range(0, len(labels), batch_size):
                z = np.asarray(self.feature_map(images[start:start + batch_size]).numpy(), dtype=np.float64)
                d = ((z[..., None, :] - np.asarray(self.prototypes.numpy(), np.float64)) ** 2).sum(-1)
                for j, cls in enumerate(self.prototype_class):
                    rows = np.flatnonzero(labels[start:start + batch_size] == cls)
                    if rows.size == 0:
                        continue
                    flat = d[rows, :, :, j].reshape(-1)
                    k = int(flat.argmin())
                    if flat[k] < best[j]:
                        r, y, x = np.unravel_index(k, d[rows, :, :, j].shape)
                        best[j] = flat[k]
                        chosen[j] = z[rows[r], y, x]
                        self.push_sources[j] = (start + int(rows[r]), int(y), int(x))
        self.prototypes.data[...] = chosen.astype(self.prototypes.dtype)

    def explain(self, image, top: int = 3) -> tuple[int, list[PrototypeMatch]]:
        """(predicted class, the ``top`` prototypes with the largest similarity * weight to it)."""
        with no_grad():
            z = self.feature_map(image[None] if np.ndim(image) == 3 else image[:1])
            logits, min_d = self.head(z)
            d = prototype_distances(z, self.prototypes).numpy()[0]
        predicted = int(logits.numpy()[0].argmax())
        similarity = prototype_similarity(min_d, self.eps).numpy()[0]
        contribution = similarity * self.last_layer.numpy()[:, predicted]
        matches = []
        for j in np.argsort(-contribution)[:top]:
            row, col = np.unravel_index(int(d[:, :, j].argmin()), d.shape[:2])
            matches.append(PrototypeMatch(int(j), int(self.prototype_class[j]), float(similarity[j]),
                                          float(contribution[j]), (int(row), int(col)), self.push_sources[j]))
        return predicted, matches


def fine_tune_last_layer(model: ProtoPNet, images, labels, epochs: int = 20, lr: float = 0.01, l1: float = 1e-4,
                         batch_size: int = 64, seed: int = 0) -> list[float]:
    """Train only ``model.last_layer`` with Adam on CE + l1 * :func:`last_layer_l1` (the stage
    that follows :meth:`ProtoPNet.push`); the features and prototypes stay as they are, so the
    similarities are computed once. Returns the mean loss of each epoch."""
    from lamina.optim import Adam  # same rank as models: imported when used

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fine_tune_last_layer: epochs must be a positive int, got {epochs!r}")
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ShapeError(f"fine_tune_last_layer: {len(images)} images but {len(labels)} labels")
    model.eval()
    similarity = model.similarities(images).astype(model.last_layer.dtype)
    optimizer = Adam([model.last_layer], lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        total = 0.0
        for rows in np.array_split(rng.permutation(len(labels)), max(1, -(-len(labels) // batch_size))):
            optimizer.zero_grad()
            logits = F.matmul(Tensor(similarity[rows]), model.last_layer)
            loss = F.cross_entropy(logits, labels[rows]) + l1 * last_layer_l1(model.last_layer, model.prototype_class)
            loss.backward()
            optimizer.step()
            total += float(loss.numpy()) * len(rows)
        history.append(total / len(labels))
    return history
