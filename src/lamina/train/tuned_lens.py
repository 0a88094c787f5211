"""Training a tuned lens (Belrose et al., 2023, "Eliciting latent predictions from transformers
with the tuned lens"): for each block l < L an affine translator, fitted with the model frozen to

    min_{A_l, c_l}  mean over tokens of KL( softmax(z_L) || softmax(unembed(final_norm(h_l A_l + c_l))) )

z_L being the model's own logits. Translators start at the identity (the logit lens).
"""

from __future__ import annotations

import numpy as np

from lamina import backend, optim
from lamina import functional as F
from lamina.analysis.interpretability.activation_cache import run_with_cache, transformer_parts
from lamina.analysis.interpretability.lens import TunedLens
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["train_tuned_lens"]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def train_tuned_lens(model: Module, tokens, steps: int = 200, lr: float = 1e-3, batch_size: int = 256,
                     seed: int = 0, lens: TunedLens | None = None, **kwargs) -> tuple[TunedLens, list[float]]:
    """A :class:`~lamina.analysis.interpretability.TunedLens` for the decoder language model
    ``model``, trained with Adam for ``steps`` steps on the residual streams of ``tokens`` (N, T)
    (``batch_size`` token positions per step, one translator's KL each, summed over layers); the
    model's parameters are left untouched. Returns the lens and the summed KL per step."""
    if np.ndim(tokens) != 2:
        raise ShapeError(f"train_tuned_lens: expected token ids (batch, position), got shape {np.shape(tokens)}")
    parts = transformer_parts(model)
    logits, cache = run_with_cache(model, tokens, parts.residual_names, **kwargs)
    width = cache[parts.embedding_output].shape[-1]
    lens = TunedLens(width, len(parts.blocks)) if lens is None else lens
    target_log_p = _log_softmax(logits.reshape(-1, logits.shape[-1]).astype(np.float64))
    hidden = [cache[name].reshape(-1, width) for name in parts.residual_names[:-1]]
    generator = np.random.default_rng(seed)
    optimizer = optim.Adam(lens.parameters(), lr=lr)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    history = []
    try:
        for p, _ in frozen:
            p.requires_grad = False
        with evaluation_mode(model):
            for _ in range(steps):
                rows = generator.integers(0, len(target_log_p), size=min(batch_size, len(target_log_p)))
                log_p = target_log_p[rows]
                p_target = Tensor._wrap(backend.xp.asarray(np.exp(log_p), dtype=hidden[0].dtype))
                entropy_term = float((np.exp(log_p) * log_p).sum(axis=-1).mean())
                total = None
                for layer, values in enumerate(hidden):
                    translated = lens.translate(backend.xp.asarray(values[rows]), layer)
                    log_q = F.log_softmax(parts.logits(translated), axis=-1)
                    cross = F.mean(F.sum(F.mul(p_target, log_q), axis=-1))
                    total = F.neg(cross) if total is None else F.sub(total, cross)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                history.append(float(total.numpy()) + len(hidden) * entropy_term)
    finally:
        for p, requires_grad in frozen:
            p.requires_grad = requires_grad
    return lens, history
