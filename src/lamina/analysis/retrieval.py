"""Image retrieval (course notes, Image retrieval): similar images have close signatures.

The output of a trained network's last flattened volume (or of any layer) serves as the
*signature* of an image. :func:`extract_features` computes the signatures of a data set;
:class:`FeatureIndex` stores those of a database and returns, for each query signature,
the k database entries at the smallest distance. Euclidean distances use the expansion

    ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2

one matrix product per block of queries and block of database rows, so memory is bounded
by the block size however large the database; cosine distance is 1 - a.b / (||a|| ||b||).
:func:`precision_at_k` and :func:`mean_average_precision_at_k` score a retrieval by labels.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.io import atomic_write
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.nn.sequential import Sequential

__all__ = ["FeatureIndex", "extract_features", "mean_average_precision_at_k", "precision_at_k"]

METRICS = ("euclidean", "cosine")


class _Captured(BaseException):
    """Carries the target layer's output out of the forward pass, skipping the layers after
    it (a BaseException, so that no ``except Exception`` inside a forward swallows it)."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def _resolve_layer(model: Module, layer) -> Module | None:
    if layer is None or layer is model:
        return None
    if isinstance(layer, Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"extract_features: {layer._label()} is not a layer of {model._label()}")
        return layer
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            raise ValueError(f"extract_features: {model._label()} has no layer named {layer!r}; "
                             f"layers: {[name for name in named if name]}")
        return named[layer]
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not isinstance(model, Sequential):
            raise TypeError(f"extract_features: an integer layer index needs a Sequential, got "
                            f"{type(model).__name__}; name the layer instead")
        return model[int(layer)]
    raise TypeError(f"extract_features: layer must be None, an int, a name or a Module, got {type(layer).__name__}")


def _signatures(model: Module, target: Module | None, batch) -> np.ndarray:
    if target is None:
        out = model(batch)
    else:
        def capture(module, inputs, kwargs, forward):
            output = forward()
            if module is target:
                raise _Captured(output)
            return output

        try:
            with intercept_calls(capture):
                model(batch)
        except _Captured as found:
            out = found.output
        else:
            raise ValueError(f"extract_features: {target._label()} was not called by {model._label()}'s forward")
    if not isinstance(out, Tensor) and not hasattr(out, "shape"):
        raise TypeError(f"extract_features: expected one output array or tensor, got {type(out).__name__}")
    values = backend.to_numpy(out.data if isinstance(out, Tensor) else out)
    return np.array(values.reshape(len(values), -1))  # a copy: never a view of a reused buffer


def extract_features(model: Module, x, layer: int | str | Module | None = None, batch_size: int = 256) -> np.ndarray:
    """The signature of each image of ``x``: the output of ``model``, or of its layer
    ``layer`` (a Sequential index such as -2, a name from ``named_modules``, or the layer
    itself; the layers after it are not run), flattened to shape (N, D).

    Computed in evaluation mode without the graph, ``batch_size`` images at a time; the
    training mode of every module is restored afterwards."""
    _check_int(batch_size, 1, None, "extract_features: batch_size")
    data = x.data if isinstance(x, Tensor) else x
    if getattr(data, "ndim", 0) < 1 or len(data) == 0:
        raise ShapeError(f"extract_features: x must hold at least one image, got shape {getattr(data, 'shape', None)}")
    target = _resolve_layer(model, layer)
    with evaluation_mode(model), no_grad():
        parts = [_signatures(model, target, data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    return np.concatenate(parts)


def _check_int(value, low: int, high: int | None, what: str) -> int:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        raise ValueError(f"{what} must be an int in [{low}, {'inf' if high is None else high}], got {value!r}")
    return int(value)


def _matrix(features, where: str) -> np.ndarray:
    array = np.asarray(features.data if isinstance(features, Tensor) else features)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ShapeError(f"{where}: features must be a non-empty 2-D array (N, D), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{where}: features must be numbers, got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def _unit_rows(array: np.ndarray, where: str) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{where}: the cosine distance is undefined for {int(np.sum(norms == 0))} zero vector(s)")
    return array / norms


def _smallest(distances: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances of each row with their indices, sorted by (distance, index)."""
    if distances.shape[1] > k:
        keep = np.argpartition(distances, k - 1, axis=1)[:, :k]
        distances, indices = np.take_along_axis(distances, keep, 1), np.take_along_axis(indices, keep, 1)
    order = np.lexsort((indices, distances), axis=1)
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


class FeatureIndex:
    """The signatures of a database (N, D), with optional ``labels`` and ``ids`` (N,) of
    numbers or strings, searched ``chunk_size`` queries by ``chunk_size`` rows at a time."""

    def __init__(self, features, labels=None, ids=None, chunk_size: int = 2048):
        self.features = _matrix(features, "FeatureIndex")
        self.chunk_size = _check_int(chunk_size, 1, None, "FeatureIndex: chunk_size")
        self.labels, self.ids = self._column(labels, "labels"), self._column(ids, "ids")
        self._prepared: dict[str, np.ndarray] = {}

    def _column(self, values, what: str) -> np.ndarray | None:
        if values is None:
            return None
        array = np.asarray(values)
        if array.shape != (len(self),):
            raise ShapeError(f"FeatureIndex: {what} must have shape ({len(self)},), one per row, got {array.shape}")
        if array.dtype.kind not in "biufUS":
            raise ValueError(f"FeatureIndex: {what} must be numbers or strings, got dtype {array.dtype}")
        return array

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def _database(self, metric: str) -> np.ndarray:
        """Squared norms (euclidean) or unit rows (cosine), computed once."""
        if metric not in self._prepared:
            rows = self.features
            self._prepared[metric] = (np.einsum("nd,nd->n", rows, rows, dtype=np.float64) if metric == "euclidean"
                                      else _unit_rows(rows.astype(np.float64), "FeatureIndex.query"))
        return self._prepared[metric]

    def query(self, features, k: int = 5, metric: str = "euclidean",
              exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest database rows of each query (Q, D): ``(indices, distances)``,
        both (Q, k), sorted by increasing distance (ties by index). ``exclude_self``: the
        queries are the database itself, and row i is not its own neighbour."""
        queries = _matrix(features, "FeatureIndex.query").astype(np.float64)
        if queries.shape[1] != self.dim:
            raise ShapeError(f"FeatureIndex.query: queries have {queries.shape[1]} features but the database "
                             f"rows have {self.dim}")
        if metric not in METRICS:
            raise ValueError(f"FeatureIndex.query: metric must be one of {METRICS}, got {metric!r}")
        if exclude_self and len(queries) != len(self):
            raise ShapeError(f"FeatureIndex.query: exclude_self needs the {len(self)} database rows as queries, "
                             f"got {len(queries)}")
        _check_int(k, 1, len(self) - bool(exclude_self), "FeatureIndex.query: k")
        database = self._database(metric)
        if metric == "cosine":
            queries = _unit_rows(queries, "FeatureIndex.query")
        step, found = self.chunk_size, []
        for start in range(0, len(queries), step):
            block = queries[start:start + step]
            block_sq = np.einsum("qd,qd->q", block, block)[:, None]
            best_d, best_i = np.empty((len(block), 0)), np.empty((len(block), 0), dtype=np.int64)
            for first in range(0, len(self), step):
                part, rows = slice(first, first + step), np.arange(first, min(first + step, len(self)))
                if metric == "euclidean":  # squared distances; the square root only for the k kept
                    d = block_sq - 2.0 * block @ self.features[part].T.astype(np.float64) + database[part]
                else:
                    d = 1.0 - block @ database[part].T
                if exclude_self:
                    d[rows[None, :] == np.arange(start, start + len(block))[:, None]] = np.inf
                candidates = np.broadcast_to(rows, d.shape)
                best_d, best_i = _smallest(np.concatenate([best_d, d], 1), np.concatenate([best_i, candidates], 1), k)
            found.append((best_i, best_d))
        indices = np.concatenate([i for i, _ in found])
        distances = np.concatenate([d for _, d in found])
        distances = np.sqrt(np.maximum(distances, 0.0)) if metric == "euclidean" else np.clip(distances, 0.0, 2.0)
        return indices, distances

    def save(self, path: str | os.PathLike) -> None:
        """Write the index as a NumPy ``.npz`` archive at ``path`` (exactly; no suffix is
        added), atomically: a failed save leaves no partial file."""
        arrays = {"features": self.features}
        arrays.update((name, value) for name, value in (("labels", self.labels), ("ids", self.ids))
                      if value is not None)
        with atomic_write(path) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, chunk_size: int = 2048) -> FeatureIndex:
        """Read an index written by :meth:`save` (never unpickles anything)."""
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"FeatureIndex.load: {os.fspath(path)!r} is not a readable feature index: {exc}") from exc
        unknown = set(arrays) - {"features", "labels", "ids"}
        if "features" not in arrays or unknown:
            raise ValueError(f"FeatureIndex.load: {os.fspath(path)!r} holds arrays {sorted(arrays)}; "
                             "expected 'features' and optionally 'labels' and 'ids'")
        return cls(arrays["features"], arrays.get("labels"), arrays.get("ids"), chunk_size=chunk_size)


def _relevance(query_labels, retrieved_labels, where: str) -> np.ndarray:
    queries, retrieved = np.asarray(query_labels), np.asarray(retrieved_labels)
    if queries.ndim != 1 or retrieved.ndim != 2 or retrieved.shape[0] != queries.shape[0] or retrieved.size == 0:
        raise ShapeError(f"{where}: expected query labels (Q,) and retrieved labels (Q, k) with k >= 1, "
                         f"got {queries.shape} and {retrieved.shape}")
    return retrieved == queries[:, None]


def precision_at_k(query_labels, retrieved_labels) -> float:
    """P@k: the fraction of the k retrieved items that share the query's label, averaged
    over the queries."""
    return float(_relevance(query_labels, retrieved_labels, "precision_at_k").mean())


def mean_average_precision_at_k(query_labels, retrieved_labels, num_relevant=None) -> float:
    """mAP@k: the mean over queries of AP@k = (1/R) sum_i P@i rel_i, where rel_i says whether
    the i-th item is relevant and P@i is the precision of the first i items. R is the number
    of relevant items among the k retrieved, or min(k, num_relevant) when the number of
    relevant items in the database is given (per query or for all); AP = 0 where R = 0."""
    relevant = _relevance(query_labels, retrieved_labels, "mean_average_precision_at_k")
    k = relevant.shape[1]
    hits = np.cumsum(relevant, axis=1)
    total = hits[:, -1] if num_relevant is None else np.minimum(k, np.broadcast_to(num_relevant, hits[:, -1].shape))
    summed = (hits / np.arange(1, k + 1) * relevant).sum(axis=1)
    return float(np.mean(np.where(total > 0, summed / np.maximum(total, 1), 0.0)))
