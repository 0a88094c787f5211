"""Training a :class:`~lamina.models.SparseAutoencoder` on stored activations.

Each step draws a batch, takes a gradient step on the autoencoder's cost with Adam (the part
of W_dec's gradient along its rows removed first), then scales the decoder rows back to unit
norm. :class:`~lamina.models.sparse_autoencoder.FeatureActivity` counts how long each feature
has been silent; with ``resample_every`` set, features silent for ``dead_after`` samples are
resampled as Bricken et al. (2023) do (:func:`resample_dead_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lamina import backend, optim
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.sparse_autoencoder import FeatureActivity, SparseAutoencoder

__all__ = ["SAETrainingHistory", "resample_dead_features", "train_sparse_autoencoder"]


@dataclass
class SAETrainingHistory:
    """Per step: the cost, the reconstruction error and L0 of the batch; ``resampled``: how many
    features each resampling replaced; ``activity``: the final feature counts."""

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)
    activity: FeatureActivity | None = None


def _reset_optimizer_rows(optimizer, parameter, rows, axis: int) -> None:
    """Zero the optimiser's running statistics of ``parameter`` along ``rows`` of ``axis``."""
    for i, p, _ in optimizer._indexed():
        if p is not parameter or i not in optimizer.state:
            continue
        for value in optimizer.state[i].values():
            if hasattr(value, "shape") and value.shape == p.shape:
                index = [slice(None)] * value.ndim
                index[axis] = rows
                value[tuple(index)] = 0


def resample_dead_features(sae: SparseAutoencoder, dead, activations, optimizer=None, seed: int = 0) -> int:
    """Give each dead feature (``dead``: a mask or indices) a new direction: an input x drawn with
    probability proportional to its squared reconstruction error squared, centred by b_dec and
    normalised, becomes W_dec[i]; W_enc[:, i] is the same direction scaled to 0.2 times the mean
    encoder norm of the live features; b_enc[i] = 0. The optimiser's statistics of those rows are
    zeroed. Returns the number of features resampled."""
    indices = np.flatnonzero(dead) if np.asarray(dead).dtype == bool else np.asarray(dead, dtype=np.int64)
    if indices.size == 0:
        return 0
    x = np.asarray(backend.to_numpy(activations), dtype=np.float64).reshape(-1, sae.d_in)
    with no_grad():
        error = ((backend.to_numpy(sae(x.astype(sae.W_dec.dtype)).data) - x) ** 2).sum(axis=1)
    weights = error ** 2
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(x), 1.0 / len(x))
    chosen = np.random.default_rng(seed).choice(len(x), size=indices.size, p=weights)
    directions = x[chosen] - backend.to_numpy(sae.b_dec.data)
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    alive = np.setdiff1d(np.arange(sae.d_sae), indices)
    encoder = backend.to_numpy(sae.W_enc.data)
    scale = 0.2 * (np.linalg.norm(encoder[:, alive], axis=0).mean() if alive.size else 1.0)
    w_dec, w_enc, b_enc = (backend.to_numpy(p.data).copy() for p in (sae.W_dec, sae.W_enc, sae.b_enc))
    w_dec[indices] = directions
    w_enc[:, indices] = (directions * scale).T
    b_enc[indices] = 0
    for parameter, value in ((sae.W_dec, w_dec), (sae.W_enc, w_enc), (sae.b_enc, b_enc)):
        parameter.data = backend.xp.asarray(value, dtype=parameter.dtype)
    if optimizer is not None:
        _reset_optimizer_rows(optimizer, sae.W_dec, indices, 0)
        _reset_optimizer_rows(optimizer, sae.W_enc, indices, 1)
        _reset_optimizer_rows(optimizer, sae.b_enc, indices, 0)
    return int(indices.size)


def train_sparse_autoencoder(sae: SparseAutoencoder, activations, steps: int = 1000, batch_size: int = 256,
                             lr: float = 1e-3, seed: int = 0, init_decoder_bias: bool = True,
                             resample_every: int | None = None, dead_after: int | None = None) -> SAETrainingHistory:
    """Train ``sae`` on ``activations`` (n, d_in) for ``steps`` Adam steps of ``batch_size`` rows
    drawn at random. ``init_decoder_bias``: start b_dec at the data mean. Every ``resample_every``
    steps, features silent for ``dead_after`` samples (default 5 * resample_every * batch_size)
    are resampled."""
    who = "train_sparse_autoencoder"
    data = np.asarray(backend.to_numpy(activations.data if isinstance(activations, Tensor) else activations))
    if data.ndim != 2 or data.shape[1] != sae.d_in:
        raise ShapeError(f"{who}: expected activations (samples, {sae.d_in}), got shape {data.shape}")
    data = data.astype(sae.W_dec.dtype, copy=False)
    if init_decoder_bias:
        sae.initialize_decoder_bias(data)
    if dead_after is None and resample_every is not None:
        dead_after = 5 * resample_every * batch_size
    generator = np.random.default_rng(seed)
    optimizer = optim.Adam(sae.parameters(), lr=lr)
    history = SAETrainingHistory(activity=FeatureActivity(sae.d_sae))
    for step in range(1, steps + 1):
        batch = data[generator.integers(0, len(data), size=min(batch_size, len(data)))]
        out = sae.loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        sae.remove_parallel_gradient()
        optimizer.step()
        sae.normalize_decoder()
        history.activity.update(out.features)
        history.loss.append(float(out.loss.numpy()))
        history.mse.append(float(out.mse.numpy()))
        history.l0.append(float((backend.to_numpy(out.features.data) > 0).sum(axis=-1).mean()))
        if resample_every and step % resample_every == 0 and step < steps:
            dead = history.activity.dead(dead_after)
            count = resample_dead_features(sae, dead, data, optimizer, seed=seed + step)
            history.activity.reset(dead)
            history.resampled.append(count)
    return history
