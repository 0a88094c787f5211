"""Training loop for :class:`lamina.models.MaskGIT`: Adam steps on its masked-token loss over
shuffled mini-batches of token sequences (masks drawn from lamina's generator)."""

from __future__ import annotations

import numpy as np

from lamina.autograd import no_grad
from lamina.models.maskgit import MaskGIT
from lamina.nn.layer import describe
from lamina.train.token_sequences import fit_token_sequences

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
    if not model.built:
        with no_grad():
            model(ids[:1])     # builds the weights before Adam is made
    return fit_token_sequences(model, model.loss, ids, epochs, batch_size, lr, clip_norm,
                               np.random.default_rng(seed), "train_maskgit")
