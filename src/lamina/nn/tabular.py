"""Inputs of deep models for tabular data: feature tokens and embeddings of numbers.

* :class:`FeatureTokenizer` (Gorishniy et al. 2021, the FT-Transformer's input): every
  feature becomes a d-dimensional token. A number x_j gives x_j w_j + b_j, a category c of
  feature j gives E[offset_j + c] + b_j (one table for all categorical features, each
  feature's ids shifted by the cardinalities before it), and a learned [CLS] token is
  appended last: (N, n_num + n_cat + 1, d).
* :class:`PeriodicEmbeddings` (Gorishniy et al. 2022): v_j = [cos(2 pi c_j x_j), sin(2 pi c_j x_j)]
  with trainable frequencies c_j ~ N(0, sigma^2), then a linear map per feature and a ReLU.
* :class:`PiecewiseLinearEncoding` (Gorishniy et al. 2022): with bin edges b_0 < ... < b_T of
  feature j, bin t of x holds (x - b_{t-1}) / (b_t - b_{t-1}) clipped to [0, 1] (the first bin
  is not clipped below, the last not above, so values outside the edges stay distinguishable).
  :func:`quantile_bins` computes the edges from training data.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["FeatureTokenizer", "PeriodicEmbeddings", "PiecewiseLinearEncoding", "quantile_bins"]


def _uniform(shape, bound: float):
    dtype = backend.get_default_dtype()
    return backend.xp.asarray((2 * backend.rng().random(shape) - 1) * bound, dtype=dtype)


def check_numbers(who: str, x, n_features: int) -> Tensor:
    """``x`` as a tensor of shape (batch, n_features), or a ShapeError naming ``who``."""
    x = as_tensor(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ShapeError(f"{who}: numerical features must have shape (batch, {n_features}), got {tuple(x.shape)}")
    return x


def check_categories(who: str, x_cat, cardinalities: tuple[int, ...], batch: int | None):
    """The integer ids ``x_cat`` (batch, n_cat) as an array, each column within its cardinality."""
    ids = backend.xp.asarray(x_cat.data if isinstance(x_cat, Tensor) else x_cat)
    n_cat = len(cardinalities)
    if ids.ndim != 2 or ids.shape[1] != n_cat or (batch is not None and ids.shape[0] != batch):
        rows = "batch" if batch is None else batch
        raise ShapeError(f"{who}: categorical features must have shape ({rows}, {n_cat}), got {tuple(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{who}: categorical features must be integer ids, got dtype {ids.dtype}")
    for j, size in enumerate(cardinalities):
        column = ids[:, j]
        if column.size and (column.min() < 0 or column.max() >= size):
            bad = int(column.min() if column.min() < 0 else column.max())
            raise ValueError(f"{who}: categorical feature {j} has id {bad}, out of range [0, {size})")
    return ids


@register_layer
class FeatureTokenizer(Module):
    """(x_num (N, n_num), x_cat (N, n_cat) integer ids) -> tokens (N, n_num + n_cat + 1, d_token),
    the [CLS] token last (module docstring). Every weight starts uniform in +-1/sqrt(d_token)."""

    def __init__(self, n_num: int, cat_cardinalities=(), d_token: int = 192, name: str | None = None):
        super().__init__(name=name)
        if n_num < 0 or isinstance(n_num, bool) or not isinstance(n_num, int):
            raise ValueError(f"FeatureTokenizer: n_num must be a non-negative int, got {n_num!r}")
        self.n_num, self.d_token = n_num, positive_int(d_token, "FeatureTokenizer: d_token")
        self.cat_cardinalities = tuple(cat_cardinalities)
        for size in self.cat_cardinalities:
            positive_int(size, "FeatureTokenizer: a categorical cardinality")
        if n_num + len(self.cat_cardinalities) == 0:
            raise ValueError("FeatureTokenizer: there must be at least one feature")
        bound = 1 / math.sqrt(d_token)
        if n_num:
            self.add_parameter("num_weight", _uniform((n_num, d_token), bound))
            self.add_parameter("num_bias", _uniform((n_num, d_token), bound))
        if self.cat_cardinalities:
            self.add_parameter("cat_embeddings", _uniform((sum(self.cat_cardinalities), d_token), bound))
            self.add_parameter("cat_bias", _uniform((len(self.cat_cardinalities), d_token), bound))
        self.category_offsets = numpy.cumsum((0, *self.cat_cardinalities[:-1]))
        self.add_parameter("cls", _uniform((d_token,), bound))
        self.built = True

    @property
    def n_tokens(self) -> int:
        return self.n_num + len(self.cat_cardinalities) + 1

    def forward(self, x_num=None, x_cat=None) -> Tensor:
        return self.tokenize(x_num, x_cat, self._label())

    def tokenize(self, x_num, x_cat, who: str) -> Tensor:
        """The tokens of the inputs, errors naming ``who`` (the model the tokenizer serves)."""
        tokens, batch = [], None
        if self.n_num:
            if x_num is None:
                raise ShapeError(f"{who}: expected {self.n_num} numerical features, got none")
            x = check_numbers(who, x_num, self.n_num)
            batch = x.shape[0]
            tokens.append(F.expand_dims(x, -1) * self.num_weight + self.num_bias)
        elif x_num is not None:
            raise ShapeError(f"{who}: built without numerical features, got an input of shape {tuple(x_num.shape)}")
        if self.cat_cardinalities:
            if x_cat is None:
                raise ShapeError(f"{who}: expected {len(self.cat_cardinalities)} categorical features, got none")
            ids = check_categories(who, x_cat, self.cat_cardinalities, batch)
            batch = ids.shape[0]
            rows = ids + backend.xp.asarray(self.category_offsets, dtype=ids.dtype)
            tokens.append(self.cat_embeddings[rows] + self.cat_bias)
        elif x_cat is not None:
            raise ShapeError(f"{who}: built without categorical features, got categorical input")
        cls = F.broadcast_to(F.reshape(self.cls, (1, 1, self.d_token)), (batch, 1, self.d_token))
        return F.concat([*tokens, cls], axis=1)

    def get_config(self) -> dict:
        return {"n_num": self.n_num, "cat_cardinalities": list(self.cat_cardinalities), "d_token": self.d_token,
                "name": self.name}


@register_layer
class PeriodicEmbeddings(Module):
    """x (N, n_features) -> (N, n_features, d_embedding): ReLU(W_j [cos(2 pi c_j x_j), sin(2 pi c_j x_j)] + b_j)
    with ``n_frequencies`` trainable frequencies c_j per feature drawn from N(0, sigma^2) cut at
    3 sigma (sigma = ``frequency_scale``); W_j (2 k, d) per feature, or one W shared by all
    features when ``lite``; ``activation=False`` leaves out the ReLU."""

    def __init__(self, n_features: int, d_embedding: int = 24, n_frequencies: int = 48,
                 frequency_scale: float = 0.01, lite: bool = False, activation: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.n_features = positive_int(n_features, "PeriodicEmbeddings: n_features")
        self.d_embedding = positive_int(d_embedding, "PeriodicEmbeddings: d_embedding")
        self.n_frequencies = positive_int(n_frequencies, "PeriodicEmbeddings: n_frequencies")
        if not frequency_scale > 0:
            raise ValueError(f"PeriodicEmbeddings: frequency_scale must be positive, got {frequency_scale!r}")
        self.frequency_scale, self.lite, self.activation = float(frequency_scale), bool(lite), bool(activation)
        draws = numpy.clip(backend.rng().standard_normal((n_features, n_frequencies)), -3, 3) * frequency_scale
        self.add_parameter("frequencies", backend.xp.asarray(draws, dtype=backend.get_default_dtype()))
        width = 2 * n_frequencies
        bound = 1 / math.sqrt(width)
        self.add_parameter("weight", _uniform((width, d_embedding) if lite else (n_features, width, d_embedding),
                                              bound))
        self.add_parameter("bias", _uniform((n_features, d_embedding), bound))
        self.built = True

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.n_features)
        angles = (2 * math.pi) * F.expand_dims(x, -1) * self.frequencies             # (N, n, k)
        periodic = F.concat([F.cos(angles), F.sin(angles)], axis=-1)                  # (N, n, 2k)
        if self.lite:
            out = periodic @ self.weight + self.bias
        else:
            out = F.einsum("nfk,fkd->nfd", periodic, self.weight) + self.bias
        return F.relu(out) if self.activation else out

    def get_config(self) -> dict:
        return {"n_features": self.n_features, "d_embedding": self.d_embedding,
                "n_frequencies": self.n_frequencies, "frequency_scale": self.frequency_scale,
                "lite": self.lite, "activation": self.activation, "name": self.name}


def quantile_bins(x, n_bins: int = 48) -> list[numpy.ndarray]:
    """Bin edges of every column of the training data ``x`` (N, n_features): the quantiles at
    0, 1/n_bins, ..., 1 with repeated values merged, so a column gets at most ``n_bins`` bins
    (fewer where values repeat). A column with a single value has no bins and is refused."""
    x = numpy.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=numpy.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ShapeError(f"quantile_bins: expected training data of shape (N >= 2, n_features), got {x.shape}")
    positive_int(n_bins, "quantile_bins: n_bins")
    levels = numpy.linspace(0.0, 1.0, n_bins + 1)
    edges = []
    for j in range(x.shape[1]):
        column = numpy.unique(numpy.quantile(x[:, j], levels))
        if column.size < 2:
            raise ValueError(f"quantile_bins: feature {j} takes a single value ({column[0]!r}); it cannot be binned")
        edges.append(column)
    return edges


@register_layer
class PiecewiseLinearEncoding(Module):
    """x (N, n_features) -> (N, total number of bins): the piecewise-linear encoding of each
    feature against its edges ``bins`` (a list of increasing arrays, one per feature, as
    :func:`quantile_bins` gives), the features' encodings side by side (module docstring)."""

    def __init__(self, bins, name: str | None = None):
        super().__init__(name=name)
        bins = [numpy.asarray(b, dtype=numpy.float64) for b in bins]
        if not bins:
            raise ValueError("PiecewiseLinearEncoding: bins must list the edges of at least one feature")
        for j, b in enumerate(bins):
            if b.ndim != 1 or b.size < 2 or numpy.any(numpy.diff(b) <= 0):
                raise ValueError(f"PiecewiseLinearEncoding: the edges of feature {j} must be at least two "
                                 f"increasing values, got {b}")
        self.n_features = len(bins)
        self.bins = bins
        counts = [b.size - 1 for b in bins]
        self.feature_of_bin = numpy.repeat(numpy.arange(len(bins)), counts)
        first = numpy.concatenate([[t == 0 for t in range(c)] for c in counts])
        last = numpy.concatenate([[t == c - 1 for t in range(c)] for c in counts])
        dtype = backend.get_default_dtype()
        self.register_buffer("left", backend.xp.asarray(numpy.concatenate([b[:-1] for b in bins]), dtype=dtype))
        self.register_buffer("width", backend.xp.asarray(numpy.concatenate([numpy.diff(b) for b in bins]),
                                                         dtype=dtype))
        self.clip_below, self.clip_above = ~first, ~last
        self.built = True

    @property
    def n_bins(self) -> int:
        return int(self.feature_of_bin.size)

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.n_features)
        xp = backend.xp
        ratio = (x[:, xp.asarray(self.feature_of_bin)] - self.left.astype(x.dtype)) / self.width.astype(x.dtype)
        ratio = F.where(xp.asarray(self.clip_below), F.clip(ratio, 0.0, None), ratio)   # clamps, as rtdl's
        return F.where(xp.asarray(self.clip_above), F.clip(ratio, None, 1.0), ratio)

    def get_config(self) -> dict:
        return {"bins": [b.tolist() for b in self.bins], "name": self.name}
