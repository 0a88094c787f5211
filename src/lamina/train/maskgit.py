"""Training loop for :class:`lamina.models.MaskGIT`: Adam steps on its masked-token loss over
shuffled mini-batches of token sequences (masks drawn from lamina's generator)."""

from __future__ import annotations

import numbers

import numpy as np

from lamina.autograd import no_grad
from lamina.models.maskgit import MaskGIT
from lamina.nn.layer import describe, positive_int
from lamina.optim import Adam, clip_grad_norm

__all__ = ["train_maskgit"]


def train_maskgit(model: MaskGIT, tokens, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3,
                  clip_norm: float | None = 1.0, seed: int | None = None) -> dict[str, list[float]]:
    """Train ``model`` on the token sequences ``tokens`` (n, seq_len) for ``epochs`` epochs of
    shuffled batches (order fixed by ``seed``), each an Adam step (learning rate ``lr``,
    gradients clipped to the global norm ``clip_norm``, None: not clipped) on
    :meth:`MaskGIT.loss`. Returns ``{'loss': [...]}``, one mean per epoch; the model is left in
    evaluation mode."""
    if not isinstance(model, MaskGIT):
        raise TypeError(f"train_maskgit: model must be a MaskGIT, got {type(model).__name__}")
    ids = np.asarray(tokens)
    if ids.ndim != 2 or len(ids) == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"train_maskgit: tokens must be integer ids (n, seq_len) with n >= 1, got {describe(ids)}")
    epochs = positive_int(epochs, "train_maskgit: epochs")
    batch_size = positive_int(batch_size, "train_maskgit: batch_size")
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                  or not clip_norm > 0):
        raise ValueError(f"train_maskgit: clip_norm must be None or a number > 0, got {clip_norm!r}")
    if not model.built:
        with no_grad():
            model(ids[:1])     # builds the weights before Adam is made
    optimizer = Adam(model, lr=lr)
    order_rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {"loss": []}
    model.train()
    for _ in range(epochs):
        order, total = order_rng.permutation(len(ids)), 0.0
        for first in range(0, len(ids), batch_size):
            batch = ids[order[first:first + batch_size]]
            optimizer.zero_grad()
            loss = model.loss(batch)
            loss.backward()
            if clip_norm is not None:
                clip_grad_norm(model, clip_norm)
            optimizer.step()
            total += float(loss.item()) * len(batch)
        history["loss"].append(total / len(ids))
    model.eval()
    return history
