"""Training loop for the discrete diffusion language models of
:mod:`lamina.models.discrete_diffusion`: Adam steps on a process's training loss (D3PM's hybrid
bound or MDLM's weighted masked cross-entropy) over shuffled mini-batches of token sequences."""

from __future__ import annotations

import numpy as np

from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models.discrete_diffusion import D3PM, MaskedDiffusion
from lamina.nn import Module
from lamina.nn.layer import describe
from lamina.nn.module import evaluation_mode
from lamina.train.token_sequences import fit_token_sequences

__all__ = ["train_discrete_diffusion"]


def train_discrete_diffusion(model: Module, process: D3PM | MaskedDiffusion, tokens, epochs: int = 1,
                             batch_size: int = 64, lr: float = 1e-3, clip_norm: float | None = 1.0,
                             seed: int | None = None) -> dict[str, list[float]]:
    """Adam steps (learning rate ``lr``, gradients clipped to the global norm ``clip_norm``) on
    ``process.training_loss(model, batch)`` over ``epochs`` epochs of shuffled batches of the ids
    ``tokens`` (n, seq_len), noise and order drawn from ``seed``. Returns ``{'loss': [...]}``, one
    mean per epoch; the model is left in evaluation mode."""
    if not isinstance(process, (D3PM, MaskedDiffusion)):
        raise TypeError(f"train_discrete_diffusion: process must be a D3PM or a MaskedDiffusion, got "
                        f"{type(process).__name__}")
    ids = np.asarray(tokens)
    top = process.vocab_size - 1
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or ids.max() > top)):
        raise ShapeError(f"train_discrete_diffusion: tokens must be integer ids (N, L) in [0, {top}], got "
                         f"{describe(ids)}")
    ids = ids.astype(np.int64)
    if not model.built:
        with no_grad(), evaluation_mode(model):
            model(ids[:1], np.zeros(1))
    rng = np.random.default_rng(seed)
    return fit_token_sequences(model, lambda batch: process.training_loss(model, batch, rng), ids, epochs,
                               batch_size, lr, clip_norm, rng, "train_discrete_diffusion")
