"""Contrastive Predictive Coding (van den Oord, Li and Vinyals, "Representation Learning with
Contrastive Predictive Coding", 2018).

A sequence x (N, L, C) (or raw audio (N, L)) is read in three parts:

    encoder       z_t = g_enc(x)      strided 1-D convolutions, each followed by a ReLU
                                      ('valid' padding: floor((L - f) / s) + 1 frames per layer)
    context       c_t = g_ar(z_<=t)   a GRU over the frames, so c_t sees frames 1..t only
    predictors    W_k, one linear map (no bias) per step k = 1..K

and trained by InfoNCE: for each frame t with t + k inside the sequence the score of a
candidate frame z is f_k(z, c_t) = z^T W_k c_t, the true future frame z_{t+k} competes with M
negative frames z_j drawn from the batch, and

    L_k = mean_{n,t} -log( exp f_k(z_{t+k}, c_t) / (exp f_k(z_{t+k}, c_t) + sum_j exp f_k(z_j, c_t)) )
    L   = (1 / K) sum_k L_k

The accuracy of step k is the share of (n, t) whose positive scores above every negative.

Negatives (:func:`cpc_negative_indices`) are flat indices n' T + s into the frames of the
batch, never the positive itself: ``negative_source`` 'same_sequence' (other frames of the same
sequence, as the paper's same-speaker sampling), 'other_sequences' (any frame of the other
sequences) or 'batch' (any frame of the batch but the positive). They are drawn with the
model's own generator, seeded by ``seed``, or passed in.

:func:`cpc_features` gives c_t, the representation the paper probes with a linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax, relu
from lamina.functional.shape import concat, getitem
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["CPC", "NEGATIVE_SOURCES", "cpc_features", "cpc_info_nce", "cpc_negative_indices"]

NEGATIVE_SOURCES = ("same_sequence", "other_sequences", "batch")


def cpc_negative_indices(batch: int, frames: int, step: int, num_negatives: int, source: str = "same_sequence",
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """Negatives for step k = ``step``: an int array (batch, frames - k, num_negatives) of flat
    frame indices n' * frames + s, drawn uniformly from ``source`` (see the module docstring),
    never the positive n * frames + t + k of row (n, t)."""
    fn = "cpc_negative_indices"
    if source not in NEGATIVE_SOURCES:
        raise ValueError(f"{fn}: source must be one of {NEGATIVE_SOURCES}, got {source!r}")
    positive_int(num_negatives, f"{fn}: num_negatives")
    if not 1 <= step < frames:
        raise ValueError(f"{fn}: step {step} needs 1 <= step < frames = {frames}")
    if source == "same_sequence" and frames < 2 or source == "other_sequences" and batch < 2:
        raise ValueError(f"{fn}: source {source!r} has no negatives with batch={batch}, frames={frames}")
    rng = np.random.default_rng() if rng is None else rng
    shape = (batch, frames - step, num_negatives)
    rows = np.arange(batch)[:, None, None]
    positive_time = np.arange(step, frames)[None, :, None]
    if source == "same_sequence":
        time = rng.integers(0, frames - 1, size=shape)
        return rows * frames + time + (time >= positive_time)
    if source == "other_sequences":
        other = rng.integers(0, batch - 1, size=shape)
        other = other + (other >= rows)
        return other * frames + rng.integers(0, frames, size=shape)
    positive = rows * frames + positive_time
    flat = rng.integers(0, batch * frames - 1, size=shape)
    return flat + (flat >= positive)


def cpc_info_nce(z, predictions: Sequence, negatives: Sequence) -> tuple[Tensor, np.ndarray]:
    """The CPC loss from frames ``z`` (N, T, D), ``predictions[k-1]`` = W_k c_t for t < T - k
    (N, T - k, D) and ``negatives[k-1]`` (N, T - k, M) flat frame indices: returns the loss
    (1/K) sum_k L_k (a 0-d tensor) and the K accuracies (a float array)."""
    fn = "cpc_info_nce"
    z = z if isinstance(z, Tensor) else Tensor(z)
    if z.ndim != 3:
        raise ShapeError(f"{fn}: z must be (batch, frames, dim), got shape {z.shape}")
    if len(predictions) != len(negatives) or not predictions:
        raise ValueError(f"{fn}: {len(predictions)} predictions for {len(negatives)} sets of negatives; "
                         "expected one of each per step (at least one)")
    n, t, d = z.shape
    xp = backend.xp
    flat = z.reshape(n * t, d)
    losses, accuracies = [], []
    for k, (prediction, negative) in enumerate(zip(predictions, negatives), start=1):
        prediction = prediction if isinstance(prediction, Tensor) else Tensor(prediction)
        negative = np.asarray(negative)
        if prediction.shape != (n, t - k, d) or negative.ndim != 3 or negative.shape[:2] != (n, t - k):
            raise ShapeError(f"{fn}: step {k} has predictions {prediction.shape} and negatives {negative.shape}; "
                             f"expected ({n}, {t - k}, {d}) and ({n}, {t - k}, M) for z of shape {z.shape}")
        future = getitem(z, (slice(None), slice(k, None)))
        positive = (future * prediction).sum(axis=-1, keepdims=True)
        candidates = getitem(flat, xp.asarray(negative))                     # (N, T - k, M, D)
        scores = concat([positive, (candidates * prediction.expand_dims(2)).sum(axis=-1)], axis=-1)
        losses.append(-getitem(log_softmax(scores, axis=-1), (Ellipsis, 0)).mean())
        values = backend.to_numpy(scores.data)
        accuracies.append(float((values[..., 0] > values[..., 1:].max(axis=-1)).mean()))
    loss = losses[0]
    for extra in losses[1:]:
        loss = loss + extra
    return loss / len(losses), np.asarray(accuracies)


@register_with_arguments
class CPC(nn.Module):
    """Contrastive Predictive Coding: a strided conv encoder, a GRU context network and one
    linear predictor per future step (module docstring).

    ``encoder``: (filters, kernel_size, stride) of each conv layer; ``in_channels`` C of the
    input; ``context_dim`` the GRU's units; ``prediction_steps`` K; ``num_negatives`` M and
    ``negative_source`` for :meth:`cpc_loss`; ``seed`` seeds its negative sampling. Calling the
    model gives the contexts c (N, T, context_dim); :meth:`encode` the frames z (N, T, D)."""

    def __init__(self, encoder: Sequence = ((32, 8, 4), (32, 4, 2)), context_dim: int = 32,
                 prediction_steps: int = 4, in_channels: int = 1, num_negatives: int = 8,
                 negative_source: str = "same_sequence", seed: int | None = 0, name: str | None = None):
        super().__init__(name=name)
        layers = [tuple(layer) for layer in encoder]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError(f"CPC: encoder must list (filters, kernel_size, stride) for each layer, got {encoder!r}")
        for i, (filters, kernel, stride) in enumerate(layers):
            for what, value in (("filters", filters), ("kernel_size", kernel), ("stride", stride)):
                positive_int(value, f"CPC: encoder layer {i} {what}")
        for what, value in (("context_dim", context_dim), ("prediction_steps", prediction_steps),
                            ("in_channels", in_channels), ("num_negatives", num_negatives)):
            positive_int(value, f"CPC: {what}")
        if negative_source not in NEGATIVE_SOURCES:
            raise ValueError(f"CPC: negative_source must be one of {NEGATIVE_SOURCES}, got {negative_source!r}")
        self.layer_specs, self.in_channels = layers, in_channels
        self.prediction_steps, self.num_negatives = prediction_steps, num_negatives
        self.negative_source = negative_source
        self.rng = np.random.default_rng(seed)
        self.convs = nn.ModuleList([nn.Conv1D(f, k, stride=s) for f, k, s in layers])
        self.gru = nn.GRU(context_dim, return_sequences=True)
        self.predictors = nn.ModuleList([nn.Dense(layers[-1][0], use_bias=False) for _ in range(prediction_steps)])
        channels = [in_channels] + [f for f, _, _ in layers]
        for conv, c_in in zip(self.convs, channels):
            self._build_child(conv, (None, None, c_in))
        self._build_child(self.gru, (None, None, channels[-1]))
        for predictor in self.predictors:
            self._build_child(predictor, (None, None, context_dim))
        self.built = True

    @staticmethod
    def _build_child(layer: nn.Module, shape: tuple) -> None:
        layer.build(shape)
        layer.built, layer.build_input_shape = True, shape

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(size, hop) in input steps: frame t reads inputs t * hop .. t * hop + size - 1."""
        size, hop = 1, 1
        for _, kernel, stride in self.layer_specs:
            size, hop = size + (kernel - 1) * hop, hop * stride
        return size, hop

    def num_frames(self, length: int) -> int:
        """T for inputs of ``length`` steps: floor((L - f) / s) + 1 per layer."""
        for _, kernel, stride in self.layer_specs:
            length = (length - kernel) // stride + 1
        return length

    def encode(self, x) -> Tensor:
        """The frames z (N, T, D) of x (N, L, C), or (N, L) when in_channels is 1."""
        x = x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))
        if x.ndim == 2 and self.in_channels == 1:
            x = x.expand_dims(-1)
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ShapeError(f"CPC: expected inputs (batch, steps, {self.in_channels})"
                             f"{' or (batch, steps)' if self.in_channels == 1 else ''}, got shape {x.shape}")
        size = self.receptive_field[0]
        if x.shape[1] < size:
            raise ShapeError(f"CPC: inputs of {x.shape[1]} steps are shorter than the encoder's receptive field "
                             f"of {size} steps")
        for conv in self.convs:
            x = relu(conv(x))
        return x

    def context(self, z) -> Tensor:
        """c (N, T, context_dim): the GRU's state after each frame."""
        return self.gru(z)

    def forward(self, x) -> Tensor:
        return self.context(self.encode(x))

    def predictions(self, c) -> list[Tensor]:
        """W_k c_t for t < T - k, each (N, T - k, D), for k = 1..K."""
        steps = c.shape[1]
        return [predictor(getitem(c, (slice(None), slice(0, steps - k))))
                for k, predictor in enumerate(self.predictors, start=1)]

    def sample_negatives(self, batch: int, frames: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """One (batch, frames - k, M) array of negatives per step k, drawn with ``rng`` (the
        model's seeded generator by default)."""
        rng = self.rng if rng is None else rng
        return [cpc_negative_indices(batch, frames, k, self.num_negatives, self.negative_source, rng)
                for k in range(1, self.prediction_steps + 1)]

    def cpc_loss(self, x, negatives: Sequence | None = None) -> tuple[Tensor, np.ndarray]:
        """The InfoNCE loss averaged over the K steps and the K accuracies (:func:`cpc_info_nce`);
        ``negatives`` as :meth:`sample_negatives` returns (drawn when None)."""
        z = self.encode(x)
        n, frames = z.shape[:2]
        if frames <= self.prediction_steps:
            raise ShapeError(f"CPC.cpc_loss: {frames} frames leave no frame to predict {self.prediction_steps} "
                             "steps ahead; give longer inputs")
        negatives = self.sample_negatives(n, frames) if negatives is None else negatives
        return cpc_info_nce(z, self.predictions(self.context(z)), negatives)


def cpc_features(model: CPC, x) -> np.ndarray:
    """The contexts c_t (N, T, context_dim) of x as an array, in eval mode and without a graph:
    the features for a linear probe."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            return backend.to_numpy(model(x).data)
    finally:
        model.train(was_training)
