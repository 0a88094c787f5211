"""Anomaly and out-of-distribution scores from trained models.

Every score here is an *anomaly score*: the higher, the more likely the input is anomalous or
out of distribution (OOD). Confidence scores of the papers are negated to fit.

* :func:`reconstruction_error`, :func:`reconstruction_map`: an autoencoder's per-sample mean
  squared error (1/D) sum_j (x_j - x_hat_j)^2 and its per-pixel squared error.
* :func:`max_softmax_score` (Hendrycks & Gimpel 2017): -max_c softmax(f(x))_c.
* :func:`energy_score` (Liu et al. 2020): E(x; T) = -T log sum_c exp(f_c(x) / T).
* :func:`odin_score` (Liang et al. 2018): -max_c softmax(f(x~) / T)_c at the input moved against
  the gradient of the temperature-scaled softmax confidence,
  x~ = x - eps sign(-d/dx log S_y(x; T)), y = argmax_c f_c(x) (:func:`odin_perturbation`).
* :func:`mahalanobis_score` (Lee et al. 2018): min_c (z - mu_c)^T S^-1 (z - mu_c), the class
  means mu_c and the tied covariance S = (1/N) sum_i (z_i - mu_(y_i))(z_i - mu_(y_i))^T of
  training features (:func:`fit_class_gaussians`); :func:`mahalanobis_input_score` moves the
  input by eps sign(-dM/dx) first (the paper's input preprocessing).
* :func:`knn_ood_score` (Sun et al. 2022): the distance from z/|z| to its k-th nearest neighbour
  among the normalised training features.
* :class:`PatchCore` (Roth et al. 2022): a memory bank of locally aware patch features of a
  CNN, thinned by :func:`greedy_coreset`; an image's score is its farthest patch's distance
  to the bank, reweighted, and its anomaly map is the per-patch distance upsampled and
  blurred.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from lamina import backend
from lamina import functional as F
from lamina.analysis.saliency import as_input_batch, gradient_wrt_input, input_analysis
from lamina.autograd import Tensor, is_grad_enabled, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.nn.sequential import Sequential

__all__ = [
    "ClassGaussians", "PatchCore", "energy_score", "fit_class_gaussians", "greedy_coreset", "knn_ood_score",
    "locally_aware_patches", "mahalanobis_input_score", "mahalanobis_score", "max_softmax_score", "odin_perturbation",
    "odin_score", "reconstruction_error", "reconstruction_map",
]


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
            or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _host(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))


def _matrix(values, what: str) -> np.ndarray:
    array = _host(values).astype(np.float64)
    if array.ndim != 2 or not array.shape[0]:
        raise ShapeError(f"{what}: expected a non-empty matrix of shape (samples, features), got shape {array.shape}")
    return array


# ---------------------------------------------------------------- autoencoders


def _reconstruct(model: Module, x, batch_size: int, fn: str) -> tuple[np.ndarray, np.ndarray]:
    _positive_int(batch_size, f"{fn}: batch_size")
    data = as_input_batch(x, fn)
    parts = []
    with evaluation_mode(model), no_grad():
        for start in range(0, len(data), batch_size):
            out = model(data[start:start + batch_size])
            out = out[0] if isinstance(out, tuple) else out   # a VAE returns (x_hat, mean, log_var)
            parts.append(_host(out))
    reconstruction = np.concatenate(parts)
    if reconstruction.shape != data.shape:
        raise ShapeError(f"{fn}: the model's reconstruction has shape {reconstruction.shape} for inputs of shape "
                         f"{data.shape}; expected an autoencoder whose output has the input's shape")
    return _host(data), reconstruction


def reconstruction_error(model: Module, x, batch_size: int = 256) -> np.ndarray:
    """Per sample, the mean squared error (1/D) sum_j (x_j - x_hat_j)^2 of the model's
    reconstruction x_hat = model(x) over the D values of the sample; shape (N,)."""
    data, reconstruction = _reconstruct(model, x, batch_size, "reconstruction_error")
    squared = (data.astype(np.float64) - reconstruction) ** 2
    return squared.reshape(len(data), -1).mean(axis=1)


def reconstruction_map(model: Module, x, batch_size: int = 256) -> np.ndarray:
    """Per pixel, the squared reconstruction error averaged over the channels: shape (N, H, W)
    for NHWC images; for other inputs the squared error of every value."""
    data, reconstruction = _reconstruct(model, x, batch_size, "reconstruction_map")
    squared = (data.astype(np.float64) - reconstruction) ** 2
    return squared.mean(axis=-1) if squared.ndim == 4 else squared


# ---------------------------------------------------------------- classifier scores


def _logits(logits, fn: str) -> tuple[Tensor, bool]:
    """The logits as a tensor (kept, so that gradients flow) and whether they came as one."""
    given_tensor = isinstance(logits, Tensor)
    if given_tensor:
        t = logits
    else:
        data = as_input_batch(logits, fn)
        t = tensor(data, dtype=data.dtype)
    if t.ndim != 2 or t.shape[1] < 1:
        raise ShapeError(f"{fn}: expected logits of shape (batch, classes), got {tuple(t.shape)}")
    return t, given_tensor


def max_softmax_score(logits) -> Tensor | np.ndarray:
    """-max_c softmax(logits)_c per row (Hendrycks & Gimpel): a tensor for a tensor, else an array."""
    t, given_tensor = _logits(logits, "max_softmax_score")
    score = -F.max(F.softmax(t, axis=-1), axis=-1)
    return score if given_tensor else score.data


def energy_score(logits, temperature: float = 1.0) -> Tensor | np.ndarray:
    """E(x; T) = -T logsumexp(f(x) / T) per row (Liu et al.): a tensor for a tensor, else an array."""
    temperature = _positive_number(temperature, "energy_score: temperature")
    t, given_tensor = _logits(logits, "energy_score")
    score = -temperature * F.logsumexp(t / temperature, axis=-1)
    return score if given_tensor else score.data


def _log_confidence(temperature: float) -> Callable[[Tensor], Tensor]:
    """sum_i log S_(y_i)(x_i; T), S = softmax(f / T), y_i the predicted class."""
    def objective(logits: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits / temperature, axis=-1)
        return F.max(log_probs, axis=-1).sum()    # the predicted class has the largest log-probability
    return objective


def odin_perturbation(model: Module, x, temperature: float = 1000.0, epsilon: float = 0.0014):
    """x~ = x - eps sign(-d/dx log S_y(x; T)): the input moved to raise the temperature-scaled
    softmax confidence of its predicted class (ODIN's input preprocessing)."""
    fn = "odin_perturbation"
    temperature = _positive_number(temperature, f"{fn}: temperature")
    epsilon = _non_negative_number(epsilon, f"{fn}: epsilon")
    data = as_input_batch(x, fn)
    with input_analysis(model):
        grad, _ = gradient_wrt_input(model, data, _log_confidence(temperature), fn)
    return data - data.dtype.type(epsilon) * backend.xp.sign(-grad)


def odin_score(model: Module, x, temperature: float = 1000.0, epsilon: float = 0.0014) -> np.ndarray:
    """-max_c softmax(f(x~) / T)_c with x~ from :func:`odin_perturbation` (Liang et al.)."""
    moved = odin_perturbation(model, x, temperature, epsilon)
    with evaluation_mode(model), no_grad():
        logits = model(moved)
    return max_softmax_score(logits.data / logits.dtype.type(temperature))


class ClassGaussians(NamedTuple):
    """Class-conditional Gaussians with one shared covariance: the class means (C, D) and the
    precision matrix S^-1 (D, D)."""

    means: np.ndarray
    precision: np.ndarray


def fit_class_gaussians(features, labels) -> ClassGaussians:
    """The class means mu_c and the pseudo-inverse of the tied covariance
    S = (1/N) sum_i (z_i - mu_(y_i))(z_i - mu_(y_i))^T of ``features`` (N, D) with integer ``labels``."""
    z = _matrix(features, "fit_class_gaussians: features")
    y = _host(labels).reshape(-1)
    if y.dtype.kind not in "iu" or y.shape != (len(z),):
        raise ValueError(f"fit_class_gaussians: expected one integer label per feature row ({len(z)}), got "
                         f"labels of shape {y.shape} and dtype {y.dtype}")
    classes = np.unique(y)
    means = np.stack([z[y == c].mean(axis=0) for c in classes])
    centred = z - means[np.searchsorted(classes, y)]
    covariance = centred.T @ centred / len(z)
    return ClassGaussians(means, np.linalg.pinv(covariance, hermitian=True))


def _squared_mahalanobis(z: Tensor, gaussians: ClassGaussians) -> Tensor:
    """(N, C): (z_i - mu_c)^T S^-1 (z_i - mu_c)."""
    means = tensor(gaussians.means, dtype=z.dtype)
    precision = tensor(gaussians.precision, dtype=z.dtype)
    diff = F.expand_dims(z, 1) - F.expand_dims(means, 0)             # (N, C, D)
    return ((diff @ precision) * diff).sum(axis=-1)


def _check_gaussians(gaussians, dims: int, fn: str) -> None:
    if not isinstance(gaussians, ClassGaussians):
        raise TypeError(f"{fn}: expected ClassGaussians from fit_class_gaussians, got {type(gaussians).__name__}")
    if gaussians.means.shape[1] != dims:
        raise ShapeError(f"{fn}: features of {dims} dimensions but Gaussians fitted on {gaussians.means.shape[1]}")


def mahalanobis_score(features, gaussians: ClassGaussians) -> Tensor | np.ndarray:
    """min_c (z - mu_c)^T S^-1 (z - mu_c) per row of ``features`` (Lee et al.): a tensor for a
    tensor, else an array."""
    given_tensor = isinstance(features, Tensor)
    z = features if given_tensor else tensor(_matrix(features, "mahalanobis_score: features"), dtype=np.float64)
    if z.ndim != 2:
        raise ShapeError(f"mahalanobis_score: expected features of shape (samples, features), got {tuple(z.shape)}")
    _check_gaussians(gaussians, z.shape[1], "mahalanobis_score")
    score = F.min(_squared_mahalanobis(z, gaussians), axis=-1)
    return score if given_tensor else score.data


def _flat_features(model: Module, inputs) -> Tensor:
    out = model(inputs)
    return out.reshape(out.shape[0], -1) if out.ndim != 2 else out


def mahalanobis_input_score(model: Module, x, gaussians: ClassGaussians, epsilon: float = 0.0) -> np.ndarray:
    """:func:`mahalanobis_score` of ``model``'s features (its output, flattened per sample) at
    x~ = x - eps sign(dM/dx), M the distance to the closest class mean: the input moved towards
    that class, which moves in-distribution inputs further than OOD ones (Lee et al.)."""
    fn = "mahalanobis_input_score"
    epsilon = _non_negative_number(epsilon, f"{fn}: epsilon")
    data = as_input_batch(x, fn)
    with input_analysis(model):
        if epsilon > 0:
            if not is_grad_enabled():
                raise RuntimeError(f"{fn}: epsilon > 0 needs gradients, but it was called inside lamina.no_grad()")
            inputs = tensor(data, requires_grad=True, dtype=data.dtype)
            mahalanobis_score(_flat_features(model, inputs), gaussians).sum().backward()
            grad = inputs.grad if inputs.grad is not None else backend.xp.zeros_like(data)
            data = data - data.dtype.type(epsilon) * backend.xp.sign(grad)
        with no_grad():
            return _host(mahalanobis_score(_flat_features(model, data), gaussians)).astype(np.float64)


def _unit_rows(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(axis=1)[:, None] - 2 * a @ b.T + (b * b).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


def knn_ood_score(features, bank, k: int = 50, batch_size: int = 1024) -> np.ndarray:
    """The Euclidean distance from z/|z| to its k-th nearest neighbour among the rows of
    ``bank`` (training features), also normalised (Sun et al.); shape (N,)."""
    z = _unit_rows(_matrix(features, "knn_ood_score: features"))
    memory = _unit_rows(_matrix(bank, "knn_ood_score: bank"))
    k = _positive_int(k, "knn_ood_score: k")
    if k > len(memory):
        raise ValueError(f"knn_ood_score: k={k} exceeds the {len(memory)} rows of the bank")
    if z.shape[1] != memory.shape[1]:
        raise ShapeError(f"knn_ood_score: features of {z.shape[1]} dimensions but a bank of {memory.shape[1]}")
    parts = [np.partition(_pairwise_distances(z[i:i + batch_size], memory), k - 1, axis=1)[:, k - 1]
             for i in range(0, len(z), batch_size)]
    return np.concatenate(parts)


# ---------------------------------------------------------------- PatchCore


def greedy_coreset(features, count: int, projection_dim: int | None = 128, start: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Indices of ``count`` rows picked by greedy k-center selection: from ``start`` (random
    when None), repeatedly the row farthest from all rows picked so far. Distances are taken
    after a Gaussian random projection to ``projection_dim`` dimensions (the
    Johnson-Lindenstrauss speed-up of PatchCore; None or a larger value: none)."""
    z = _matrix(features, "greedy_coreset: features")
    count = _positive_int(count, "greedy_coreset: count")
    if count > len(z):
        raise ValueError(f"greedy_coreset: count={count} exceeds the {len(z)} feature rows")
    rng = np.random.default_rng(seed)
    if projection_dim is not None and _positive_int(projection_dim, "greedy_coreset: projection_dim") < z.shape[1]:
        z = z @ rng.normal(0.0, 1.0 / np.sqrt(projection_dim), size=(z.shape[1], projection_dim))
    chosen = int(rng.integers(len(z))) if start is None else int(start)
    if not 0 <= chosen < len(z):
        raise ValueError(f"greedy_coreset: start={start} outside [0, {len(z)})")
    picked = [chosen]
    nearest = np.linalg.norm(z - z[chosen], axis=1)
    for _ in range(count - 1):
        chosen = int(nearest.argmax())
        picked.append(chosen)
        nearest = np.minimum(nearest, np.linalg.norm(z - z[chosen], axis=1))
    return np.asarray(picked, dtype=np.int64)


def _resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w, ...) -> (N, H, W, ...) by bilinear interpolation with half-pixel centres
    (align_corners=False)."""
    out = maps
    for axis, target in ((1, size[0]), (2, size[1])):
        source = out.shape[axis]
        if source == target:
            continue
        position = np.maximum((np.arange(target) + 0.5) * source / target - 0.5, 0.0)
        low = np.minimum(np.floor(position).astype(np.int64), source - 1)
        high = np.minimum(low + 1, source - 1)
        weight_shape = [1] * out.ndim
        weight_shape[axis] = target
        weight = (position - low).reshape(weight_shape)
        out = np.take(out, low, axis=axis) * (1 - weight) + np.take(out, high, axis=axis) * weight
    return out


def _neighbourhood_mean(maps: np.ndarray) -> np.ndarray:
    """The mean over each position's 3x3 neighbourhood, zero padded and divided by 9 (the
    adaptive average aggregation of PatchCore), on (N, h, w, C)."""
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = maps.shape[1:3]
    return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def locally_aware_patches(layer_outputs: list[np.ndarray]) -> np.ndarray:
    """PatchCore's patch features from intermediate NHWC feature maps: each map averaged over
    3x3 neighbourhoods, resized to the first map's resolution and concatenated: (N, h, w, D)."""
    if not layer_outputs or any(np.ndim(m) != 4 for m in layer_outputs):
        raise ShapeError(f"locally_aware_patches: expected NHWC feature maps, got shapes "
                         f"{[np.shape(m) for m in layer_outputs]}")
    size = layer_outputs[0].shape[1:3]
    return np.concatenate([_resize_bilinear(_neighbourhood_mean(np.asarray(m, dtype=np.float64)), size)
                           for m in layer_outputs], axis=-1)


class _Captured(BaseException):
    """Ends the forward pass once every wanted layer has run (not an Exception: no forward swallows it)."""


def _resolve_layers(model: Module, layers) -> list[Module]:
    named = dict(model.named_modules())
    resolved = []
    for layer in layers:
        if isinstance(layer, Module) and any(m is layer for m in model.modules()):
            resolved.append(layer)
        elif isinstance(layer, str) and layer in named:
            resolved.append(named[layer])
        elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and isinstance(model, Sequential):
            resolved.append(model[int(layer)])
        else:
            raise ValueError(f"PatchCore: layer {layer!r} is not a layer of {model._label()}; give a layer, a name "
                             f"from named_modules ({[n for n in named if n]}) or a Sequential index")
    return resolved


def _layer_outputs(model: Module, targets: list[Module], batch) -> list[np.ndarray]:
    found: dict[int, np.ndarray] = {}

    def capture(module, inputs, kwargs, forward):
        output = forward()
        for i, target in enumerate(targets):
            if module is target and i not in found:
                found[i] = _host(output)
        if len(found) == len(targets):
            raise _Captured
        return output

    try:
        with intercept_calls(capture):
            model(batch)
    except _Captured:
        pass
    if len(found) != len(targets):
        raise ValueError(f"PatchCore: not every chosen layer is called by {model._label()}'s forward")
    return [found[i] for i in range(len(targets))]


class PatchCore:
    """PatchCore (Roth et al. 2022) on a CNN ``backbone`` with NHWC outputs.

    :meth:`fit` stores the locally aware patch features (:func:`locally_aware_patches` of the
    outputs of ``layers``, two intermediate layers by default) of normal images and keeps a
    greedy coreset of ``coreset_ratio`` of them (:func:`greedy_coreset`). For a test image with
    patch features m_p, s_p = min_(m in M) |m_p - m|; with p* the patch of largest s, m* its
    nearest bank entry and N_b(m*) the ``neighbours`` bank entries nearest to m*, the image score is

        s = (1 - exp|m_p* - m*| / sum_(m in N_b(m*)) exp|m_p* - m|) s_p*

    (``neighbours=1``: s = s_p*). The anomaly map is s_p resized to the image and blurred by a
    Gaussian of standard deviation ``sigma`` pixels.
    """

    def __init__(self, backbone: Module, layers, coreset_ratio: float = 0.1, neighbours: int = 9,
                 projection_dim: int | None = 128, sigma: float = 4.0, batch_size: int = 32, seed: int = 0):
        if not isinstance(backbone, Module):
            raise TypeError(f"PatchCore: backbone must be a lamina Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("PatchCore: layers must name at least one layer of the backbone")
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"PatchCore: coreset_ratio must lie in (0, 1], got {coreset_ratio!r}")
        self.coreset_ratio = float(coreset_ratio)
        self.neighbours = _positive_int(neighbours, "PatchCore: neighbours")
        self.projection_dim = projection_dim
        self.sigma = _non_negative_number(sigma, "PatchCore: sigma")
        self.batch_size = _positive_int(batch_size, "PatchCore: batch_size")
        self.seed = seed
        self.memory_bank: np.ndarray | None = None

    def patch_features(self, x) -> np.ndarray:
        """The locally aware patch features of images ``x`` (N, H, W, C): shape (N, h, w, D)."""
        data = as_input_batch(x, "PatchCore", ndim=(4,))
        targets = _resolve_layers(self.backbone, self.layers)
        with evaluation_mode(self.backbone), no_grad():
            parts = [locally_aware_patches(_layer_outputs(self.backbone, targets, data[i:i + self.batch_size]))
                     for i in range(0, len(data), self.batch_size)]
        return np.concatenate(parts)

    def fit(self, x) -> PatchCore:
        """Build the memory bank from normal images ``x``."""
        patches = self.patch_features(x)
        flat = patches.reshape(-1, patches.shape[-1])
        count = max(1, int(round(self.coreset_ratio * len(flat))))
        if count < len(flat):
            flat = flat[greedy_coreset(flat, count, self.projection_dim, seed=self.seed)]
        self.memory_bank = flat
        return self

    def _patch_distances(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.memory_bank is None:
            raise RuntimeError("PatchCore: call fit on normal images before scoring")
        patches = self.patch_features(x)
        n, h, w, d = patches.shape
        if d != self.memory_bank.shape[1]:
            raise ShapeError(f"PatchCore: patch features of {d} dimensions but a memory bank of "
                             f"{self.memory_bank.shape[1]}")
        flat = patches.reshape(n, h * w, d)
        distances = np.empty((n, h * w))
        nearest = np.empty((n, h * w), dtype=np.int64)
        for i in range(n):
            all_distances = _pairwise_distances(flat[i], self.memory_bank)
            nearest[i] = all_distances.argmin(axis=1)
            distances[i] = all_distances[np.arange(h * w), nearest[i]]
        return flat, distances.reshape(n, h, w), nearest

    def _image_scores(self, flat: np.ndarray, distances: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        n = len(flat)
        per_patch = distances.reshape(n, -1)
        farthest = per_patch.argmax(axis=1)
        largest = per_patch[np.arange(n), farthest]
        b = min(self.neighbours, len(self.memory_bank))
        if b == 1:
            return largest
        scores = np.empty(n)
        for i in range(n):
            anchor = self.memory_bank[nearest[i, farthest[i]]]
            support = np.argsort(np.linalg.norm(self.memory_bank - anchor, axis=1), kind="stable")[:b]
            to_support = np.linalg.norm(self.memory_bank[support] - flat[i, farthest[i]], axis=1)
            to_support[0] = largest[i]          # m* itself (distance 0 from m*, so first in the support)
            weights = np.exp(to_support - to_support.max())
            scores[i] = (1 - weights[0] / weights.sum()) * largest[i]
        return scores

    def score(self, x) -> np.ndarray:
        """The image anomaly scores, shape (N,)."""
        return self._image_scores(*self._patch_distances(x))

    def anomaly_map(self, x) -> np.ndarray:
        """The patch distances resized to the images and blurred: shape (N, H, W)."""
        return self.predict(x)[1]

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(scores, anomaly maps) in one pass over the backbone."""
        data = as_input_batch(x, "PatchCore", ndim=(4,))
        flat, distances, nearest = self._patch_distances(data)
        maps = _resize_bilinear(distances, data.shape[1:3])
        if self.sigma > 0:
            maps = np.stack([gaussian_filter(m, self.sigma, mode="reflect", truncate=4.0) for m in maps])
        return self._image_scores(flat, distances, nearest), maps
