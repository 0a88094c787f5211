"""Prior-fitted networks (Müller et al. 2022, "Transformers can do Bayesian inference"; the idea
behind TabPFN): a Transformer trained on datasets drawn from a prior (:mod:`lamina.data.pfn_priors`)
that predicts, in one forward pass, the posterior predictive distribution of y at query points
x given a training set D = {(x_i, y_i)} in its context.

Each training point becomes one token e_x(x_i) + e_y(y_i) and each query point one token e_x(x);
there is no positional encoding, so the prediction does not depend on the order of the training
set. The encoder layers (:class:`~lamina.nn.TransformerEncoderLayer`) attend under the mask

    M_ij = [j is a training position]

so that training points attend to each other and every query attends to the training points
only (not to itself nor to the other queries): each query is predicted as if it were alone.
The decoder maps each query's output to K logits: for regression those of a bar distribution
over y-buckets (:mod:`lamina.models.bar_distribution`, half-normal tails optional; the borders
are a buffer, set from prior samples by :func:`train_pfn`), for classification class logits.

Training minimizes the prior-data negative log-likelihood

    l = E_{D ~ p(D)} [ -log q(y_query | x_query, D_train) ]

with Adam, a linear warm-up and cosine decay, each step on a fresh batch of datasets split at a
random number of training points (:func:`train_pfn`).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.bar_distribution import BarPrediction, bar_borders, bar_log_density
from lamina.nn import Dense, Embedding, ModuleList, TransformerEncoderLayer
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["PFN", "PFNTrainResult", "pfn_attention_mask", "train_pfn"]

TASKS = ("regression", "classification")


def pfn_attention_mask(n_train: int, n_query: int) -> np.ndarray:
    """The (T, T) boolean mask (True = attend), T = n_train + n_query: every position sees the
    training positions 0 .. n_train - 1 and nothing else."""
    mask = np.zeros((n_train + n_query, n_train + n_query), dtype=bool)
    mask[:, :n_train] = True
    return mask


@register_with_arguments
class PFN(Module):
    """A prior-fitted network (module docstring): ``n_features`` inputs, ``n_outputs`` bar
    buckets (regression) or classes (classification), ``layers`` post-norm GELU encoder layers
    of width ``d_model`` with ``heads`` heads and feed-forward width ``dim_feedforward``
    (default 2 ``d_model``).

    Called as ``pfn(x_train, y_train, x_query)`` with x (B, n, n_features) and y (B, n) (class
    ids for classification) -> logits (B, n_query, n_outputs). :meth:`predict` takes numbers
    (a batch, or one dataset without the batch axis) and gives a
    :class:`~lamina.models.bar_distribution.BarPrediction` (regression) or the class
    probabilities. Sub-layers: ``x_encoder``, ``y_encoder``, ``encoder`` (a ModuleList),
    ``decoder_hidden``, ``decoder``; buffer ``borders`` (n_outputs + 1,) for regression.
    """

    def __init__(self, n_features: int, n_outputs: int, d_model: int = 64, heads: int = 4, layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.0, task: str = "regression",
                 tails: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.n_features = positive_int(n_features, "PFN: n_features")
        self.n_outputs = positive_int(n_outputs, "PFN: n_outputs")
        self.d_model, self.heads = positive_int(d_model, "PFN: d_model"), positive_int(heads, "PFN: heads")
        self.layers = positive_int(layers, "PFN: layers")
        self.dim_feedforward = positive_int(dim_feedforward or 2 * d_model, "PFN: dim_feedforward")
        if task not in TASKS:
            raise ValueError(f"PFN: task must be one of {TASKS}, got {task!r}")
        if self.n_outputs < 2:
            raise ValueError(f"PFN: n_outputs must be at least 2 (buckets or classes), got {n_outputs}")
        self.task, self.tails = task, bool(tails)
        self.x_encoder = Dense(d_model)
        self.y_encoder = Dense(d_model) if task == "regression" else Embedding(n_outputs, d_model)
        self.encoder = ModuleList([TransformerEncoderLayer(d_model, heads, self.dim_feedforward, dropout=dropout,
                                                           activation="gelu") for _ in range(layers)])
        self.decoder_hidden = Dense(self.dim_feedforward, activation="gelu")
        self.decoder = Dense(n_outputs)
        if task == "regression":
            # evenly spaced over [-3, 3] until set_borders (train_pfn sets them from prior samples)
            self.register_buffer("borders", np.linspace(-3.0, 3.0, n_outputs + 1))

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def set_borders(self, borders) -> None:
        """Replace the bar distribution's bucket borders (n_outputs + 1 increasing values)."""
        if not self.regression:
            raise ValueError("PFN.set_borders: a classification PFN has no bucket borders")
        borders = np.asarray(borders, dtype=np.float64)
        if borders.shape != (self.n_outputs + 1,) or not np.all(np.diff(borders) > 0):
            raise ValueError(f"PFN.set_borders: expected {self.n_outputs + 1} increasing borders, got an array of "
                             f"shape {borders.shape}")
        self.register_buffer("borders", borders)

    def build_sample_inputs(self, shapes) -> list:
        """Zeros of the saved input shapes, the training labels as class ids for a classifier
        (what :func:`lamina.load` builds the model on)."""
        dtype = backend.get_default_dtype()
        x_train, y_train, x_query = (np.zeros((1, *[1 if n is None else n for n in s[1:]])) for s in shapes)
        return [x_train.astype(dtype), y_train.astype(dtype if self.regression else np.int64), x_query.astype(dtype)]

    def _as_tensor(self, values, integer: bool = False) -> Tensor:
        if isinstance(values, Tensor):
            return values
        if integer:
            return Tensor(np.asarray(values, dtype=np.int64))
        weights = self.parameters()
        return Tensor(values, dtype=weights[0].dtype if weights else backend.get_default_dtype())

    def _check(self, x_train: Tensor, y_train: Tensor, x_query: Tensor) -> None:
        shapes = [tuple(t.shape) for t in (x_train, y_train, x_query)]
        batch = shapes[0][0] if len(shapes[0]) == 3 else None
        if (len(shapes[0]) != 3 or len(shapes[2]) != 3 or shapes[0][2] != self.n_features
                or shapes[2][:1] + shapes[2][2:] != (batch, self.n_features) or shapes[1] != shapes[0][:2]
                or shapes[0][1] < 1):
            raise ShapeError(f"PFN: got x_train {shapes[0]}, y_train {shapes[1]}, x_query {shapes[2]}; expected "
                             f"(B, n_train >= 1, {self.n_features}), (B, n_train) and (B, n_query, {self.n_features})")
        if not self.regression:
            ids = y_train.numpy()
            if ids.size and (ids.min() < 0 or ids.max() >= self.n_outputs):
                raise ValueError(f"PFN: class ids must be in [0, {self.n_outputs}), got values in "
                                 f"[{ids.min()}, {ids.max()}]")

    def forward(self, x_train, y_train, x_query) -> Tensor:
        x_train, x_query = self._as_tensor(x_train), self._as_tensor(x_query)
        y_train = self._as_tensor(y_train, integer=not self.regression)
        self._check(x_train, y_train, x_query)
        n_train = x_train.shape[1]
        y_tokens = self.y_encoder(y_train[..., None] if self.regression else y_train)
        tokens = F.concat([self.x_encoder(x_train) + y_tokens, self.x_encoder(x_query)], axis=1)
        mask = pfn_attention_mask(n_train, x_query.shape[1])
        for layer in self.encoder:
            tokens = layer(tokens, mask=mask)
        return self.decoder(self.decoder_hidden(tokens[:, n_train:]))

    def loss(self, x_train, y_train, x_query, y_query) -> Tensor:
        """The mean negative log-likelihood of ``y_query`` (B, n_query): -log of the bar density
        (regression; y clipped to the borders without tails) or the cross-entropy."""
        logits = self(x_train, y_train, x_query)
        y = y_query.numpy() if isinstance(y_query, Tensor) else np.asarray(y_query)
        if tuple(y.shape) != tuple(logits.shape[:2]):
            raise ShapeError(f"PFN.loss: got y_query of shape {tuple(y.shape)} for x_query of "
                             f"{tuple(logits.shape[:2])} points; expected {tuple(logits.shape[:2])}")
        if not self.regression:
            return F.cross_entropy(F.reshape(logits, -1, self.n_outputs), y.astype(np.int64).reshape(-1))
        # without tails y is clipped into the support (in float64, which holds the borders exactly)
        y = y.astype(logits.dtype) if self.tails else np.clip(y.astype(np.float64), self.borders[0], self.borders[-1])
        return -F.mean(bar_log_density(logits, self.borders, y, tails=self.tails))

    def predict(self, x_train, y_train, x_query):
        """The posterior predictive at ``x_query`` given (``x_train``, ``y_train``), without a
        graph, in evaluation mode: a :class:`BarPrediction` (regression) or class probabilities
        (..., n_query, n_outputs). Arrays without the batch axis are one dataset."""
        arrays = [np.asarray(a.numpy() if isinstance(a, Tensor) else a) for a in (x_train, y_train, x_query)]
        single = arrays[0].ndim == 2
        if single:
            arrays = [a[None] for a in arrays]
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                logits = self(*arrays).numpy()
        finally:
            self.train(was_training)
        logits = logits[0] if single else logits
        if self.regression:
            return BarPrediction(logits, self.borders, self.tails)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, n_outputs={self.n_outputs}, d_model={self.d_model}, "
                f"heads={self.heads}, layers={self.layers}, task={self.task!r}")


class PFNTrainResult(NamedTuple):
    """What :func:`train_pfn` returns: the model, the loss of every step and the seconds taken."""

    model: PFN
    losses: list
    seconds: float


def _learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1.0 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def train_pfn(model: PFN, prior, steps: int, batch_size: int = 16, n_points: int = 50, min_train: int = 1,
              lr: float = 1e-3, warmup: float = 0.1, border_samples: int = 100_000, seed: int | None = None,
              max_seconds: float | None = None) -> PFNTrainResult:
    """Fit ``model`` to ``prior`` (anything with ``sample(batch_size, n_points, rng)`` giving
    x (B, n, d) and y (B, n), as :class:`~lamina.data.GPPrior`) for ``steps`` Adam steps of the
    prior-data NLL (module docstring). Each step draws ``batch_size`` datasets of ``n_points``
    points and splits them at n_train ~ U{min_train, ..., n_points - 1}. The learning rate warms
    up linearly over the first ``warmup`` fraction of the steps, then decays on a cosine. A
    regression PFN first gets borders at the quantiles of ``border_samples`` prior values of y
    (:func:`bar_borders`). ``max_seconds`` stops early after that much time."""
    from lamina.optim import Adam  # same rank as models: imported when used

    if not isinstance(model, PFN):
        raise TypeError(f"train_pfn: model must be a PFN, got {type(model).__name__}")
    steps = positive_int(steps, "train_pfn: steps")
    if not 1 <= min_train < n_points:
        raise ValueError(f"train_pfn: need 1 <= min_train < n_points, got min_train={min_train}, n_points={n_points}")
    if getattr(prior, "task", model.task) != model.task:
        raise ValueError(f"train_pfn: a {prior.task} prior ({prior!r}) cannot train a {model.task} PFN")
    rng = np.random.default_rng(seed)
    if model.regression:
        draws = max(1, border_samples // n_points)
        model.set_borders(bar_borders(prior.sample(draws, n_points, rng).y, model.n_outputs))
    if not model.parameters():
        first = prior.sample(1, 2, rng)
        with no_grad():
            model(first.x[:, :1], first.y[:, :1], first.x[:, 1:])
    optimizer = Adam(model.parameters(), lr=lr)
    warm = max(1, int(round(warmup * steps)))
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(steps):
        data = prior.sample(batch_size, n_points, rng)
        n_train = int(rng.integers(min_train, n_points))
        optimizer.lr = _learning_rate(step, steps, lr, warm)
        optimizer.zero_grad()
        loss = model.loss(data.x[:, :n_train], data.y[:, :n_train], data.x[:, n_train:], data.y[:, n_train:])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.numpy()))
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    model.eval()
    return PFNTrainResult(model, losses, time.perf_counter() - start)
