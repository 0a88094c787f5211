"""Visualising feature vectors (course notes, Visualization feature vectors): flatten the
last volume, reduce its dimension, plot.

:func:`reduce_dimensions` maps (N, D) feature vectors to (N, dims) points, by

* PCA: the centred features projected on their ``dims`` directions of largest variance,
  X_c V_dims, with X_c = X - mean(X) and V the right singular vectors of X_c
  (scikit-learn's ``PCA``);
* t-SNE: a non-linear map that keeps each point's neighbours close (scikit-learn's
  ``TSNE``); clusters are meaningful, distances between them much less so.

:func:`plot_embedding` scatters the points coloured by label and saves a PNG. It draws on
a figure of its own with the Agg canvas, outside pyplot: no figure stays open in pyplot
and the user's backend is left alone.
"""

from __future__ import annotations

import os

import numpy as np

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.io import atomic_write

__all__ = ["METHODS", "plot_embedding", "reduce_dimensions"]

METHODS = ("pca", "tsne")


def _features(features, where: str) -> np.ndarray:
    array = np.asarray(features.data if isinstance(features, Tensor) else features)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ShapeError(f"{where}: features must be a 2-D array (N, D) with N >= 2 points, got shape {array.shape}")
    if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: features must be finite numbers (dtype {array.dtype})")
    return array.astype(np.float64)


def _check_method(method: str, where: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{where}: method must be one of {METHODS}, got {method!r}")


def reduce_dimensions(features, method: str = "pca", dims: int = 2, seed: int = 0,
                      perplexity: float = 30.0) -> np.ndarray:
    """``features`` (N, D) reduced to (N, dims) points by ``method``, "pca" or "tsne".

    For t-SNE, ``perplexity`` (about the number of neighbours each point keeps close) is
    capped at (N - 1) / 3, and at least 1, so that small sets work. t-SNE starts from the
    PCA points (from random ones when dims > D); ``seed`` fixes its random state, so that
    the result is reproducible."""
    _check_method(method, "reduce_dimensions")
    x = _features(features, "reduce_dimensions")
    n, d = x.shape
    largest = min(n, d) if method == "pca" else n - 1
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or not 1 <= dims <= largest:
        raise ValueError(f"reduce_dimensions: dims must be an int in [1, {largest}] for {method} on {n} points "
                         f"of {d} features, got {dims!r}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=int(dims), svd_solver="full").fit_transform(x).astype(np.float64)
    if not perplexity > 0:
        raise ValueError(f"reduce_dimensions: perplexity must be positive, got {perplexity!r}")
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=int(dims), perplexity=min(float(perplexity), max((n - 1) / 3, 1.0)),
                init="pca" if dims <= d else "random", random_state=seed,
                method="barnes_hut" if dims < 4 else "exact")
    return tsne.fit_transform(x).astype(np.float64)


def plot_embedding(features_or_points, labels=None, path: str | os.PathLike | None = None, method: str = "pca",
                   title: str | None = None, *, seed: int = 0, figsize: tuple[float, float] = (6.0, 5.0),
                   point_size: float = 12.0, dpi: int = 100):
    """Scatter (N, D) feature vectors, reduced to 2-D by ``method`` when D > 2 (D = 2 is
    plotted as is), one colour per label with a legend. Saves a PNG at ``path``
    (atomically: a failed save leaves nothing behind) when given; returns the matplotlib
    ``Figure``."""
    _check_method(method, "plot_embedding")
    points = _features(features_or_points, "plot_embedding")
    n, d = points.shape
    if d < 2:
        raise ShapeError(f"plot_embedding: need at least 2 features per point to plot, got shape {points.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ShapeError(f"plot_embedding: labels must have shape ({n},), one per point, got {labels.shape}")
    reduced = d > 2
    if reduced:
        points = reduce_dimensions(points, method=method, dims=2, seed=seed)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=point_size, color="C0")
    else:
        classes = np.unique(labels)
        colours = _colours(len(classes))
        for colour, value in zip(colours, classes):
            chosen = labels == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=point_size, color=colour, label=str(value))
        ax.legend(title="label", fontsize="small", loc="best", ncol=1 + len(classes) // 15)
    axis = f"{method.upper()} " if reduced else "feature "
    ax.set(xlabel=f"{axis}1", ylabel=f"{axis}2",
           title=title if title is not None else f"{n} feature vectors" + (f" ({method.upper()})" if reduced else ""))
    fig.tight_layout()
    if path is not None:
        try:
            with atomic_write(path) as handle:
                fig.savefig(handle, format="png", dpi=dpi)
        except OSError as exc:
            raise OSError(f"plot_embedding: cannot write the PNG {os.fspath(path)!r}: {exc}") from exc
    return fig


def _colours(count: int) -> list:
    """Distinct colours: the qualitative tab10 / tab20 maps, a continuous one beyond 20."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["viridis"](i / (count - 1)) for i in range(count)]
