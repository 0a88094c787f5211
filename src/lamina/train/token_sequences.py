"""The epoch loop shared by the trainers of token-sequence models (MaskGIT, discrete diffusion):
Adam steps on a batch cost over shuffled mini-batches of integer ids (n, seq_len)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from lamina.autograd import Tensor
from lamina.nn import Module
from lamina.nn.layer import positive_int
from lamina.optim import Adam, clip_grad_norm


def fit_token_sequences(model: Module, batch_loss: Callable[[np.ndarray], Tensor], ids: np.ndarray, epochs: int,
                        batch_size: int, lr: float, clip_norm: float | None, order_rng: np.random.Generator,
                        who: str) -> dict[str, list[float]]:
    """``epochs`` epochs over ``ids`` in orders drawn from ``order_rng``, each batch an Adam step
    (learning rate ``lr``, gradients clipped to the global norm ``clip_norm``, None: not
    clipped) on ``batch_loss(batch)``. ``model`` must be built. Returns ``{'loss': [...]}``, the
    mean cost of each epoch; the model is left in evaluation mode. ``who`` names the caller in
    errors."""
    epochs = positive_int(epochs, f"{who}: epochs")
    batch_size = positive_int(batch_size, f"{who}: batch_size")
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                  or not clip_norm > 0):
        raise ValueError(f"{who}: clip_norm must be None or a number > 0, got {clip_norm!r}")
    optimizer = Adam(model, lr=lr)
    history: dict[str, list[float]] = {"loss": []}
    model.train()
    for _ in range(epochs):
        order, total = order_rng.permutation(len(ids)), 0.0
        for first in range(0, len(ids), batch_size):
            batch = ids[order[first:first + batch_size]]
            optimizer.zero_grad()
            loss = batch_loss(batch)
            loss.backward()
            if clip_norm is not None:
                clip_grad_norm(model, clip_norm)
            optimizer.step()
            total += float(loss.item()) * len(batch)
        history["loss"].append(total / len(ids))
    model.eval()
    return history
