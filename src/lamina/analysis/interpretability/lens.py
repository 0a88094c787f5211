"""The logit lens (nostalgebraist, 2020): read a decoder language model's residual stream after
every block as if it were the last one,

    logits_l = unembed(final_norm(h_l)),   l = 0 (embeddings) .. L,

so logits_L are the model's own. How early a target token rises to the top (its rank and
probability per layer) shows where the prediction forms.

The tuned lens (Belrose et al., 2023) first maps h_l by an affine "translator" A_l h + c_l per
layer, trained (:func:`lamina.train.train_tuned_lens`) so that its logits match the model's final
ones in KL divergence; it starts at the identity, i.e. as the logit lens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.analysis.interpretability.activation_cache import run_with_cache, transformer_parts
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.module import Module, evaluation_mode

__all__ = ["LogitLens", "TunedLens", "logit_lens"]


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _targets(target, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))


@dataclass
class LogitLens:
    """``logits[l]`` (N, T, V): the scores read from ``names[l]`` (h_0 .. h_L)."""

    names: list[str]
    logits: np.ndarray

    def probabilities(self, position: int = -1) -> np.ndarray:
        """softmax of the scores at ``position``: (L + 1, N, V)."""
        return _softmax(self.logits[:, :, position].astype(np.float64))

    def top_tokens(self, k: int = 5, position: int = -1) -> np.ndarray:
        """The ``k`` highest-scoring token ids per layer and sample at ``position``, best first: (L + 1, N, k)."""
        scores = self.logits[:, :, position]
        if not 1 <= k <= scores.shape[-1]:
            raise ValueError(f"LogitLens.top_tokens: k must be in 1..{scores.shape[-1]}, got {k}")
        return np.argsort(-scores, axis=-1, kind="stable")[..., :k]

    def target_rank(self, target, position: int = -1) -> np.ndarray:
        """The rank (0: the top token) of ``target`` (an id, or one per sample) per layer: (L + 1, N)."""
        scores = self.logits[:, :, position]
        wanted = _targets(target, scores.shape[1])
        own = scores[:, np.arange(scores.shape[1]), wanted]
        return (scores > own[..., None]).sum(axis=-1)

    def target_probability(self, target, position: int = -1) -> np.ndarray:
        """The probability of ``target`` (an id, or one per sample) per layer: (L + 1, N)."""
        probabilities = self.probabilities(position)
        wanted = _targets(target, probabilities.shape[1])
        return probabilities[:, np.arange(probabilities.shape[1]), wanted]


class TunedLens(Module):
    """One affine translator per residual stream h_0 .. h_{L-1} of width ``width`` (h_L is read as
    it is), each starting at the identity: ``translators[l](h)`` = h A_l + c_l."""

    def __init__(self, width: int, layers: int, name: str | None = None):
        super().__init__(name=name)
        self.width, self.layers = int(width), int(layers)
        self.translators = ModuleList([Dense(self.width) for _ in range(self.layers)])
        for translator in self.translators:
            translator.build((None, self.width))
            translator.weight.data = backend.xp.eye(self.width, dtype=translator.weight.dtype)
            translator.bias.data = backend.xp.zeros(self.width, dtype=translator.bias.dtype)
            translator.built = True
        self.built = True

    def translate(self, hidden, layer: int):
        """h_l mapped by translator ``layer`` (h_L, ``layer`` = L, unchanged)."""
        if layer == self.layers:
            return hidden
        if not 0 <= layer < self.layers:
            raise ValueError(f"TunedLens: layer must be in 0..{self.layers}, got {layer}")
        return self.translators[layer](hidden)

    def get_config(self) -> dict:
        return {"width": self.width, "layers": self.layers, "name": self.name}


def logit_lens(model: Module, tokens, tuned: TunedLens | None = None, **kwargs) -> LogitLens:
    """The logit lens of a decoder language model (GPT-2, Llama...) on ``tokens`` (N, T), in
    evaluation mode, or the tuned lens with the translators ``tuned``; ``kwargs`` go to the
    model (``key_mask``...)."""
    if np.ndim(tokens) != 2:
        raise ShapeError(f"logit_lens: expected token ids (batch, position), got shape {np.shape(tokens)}")
    parts = transformer_parts(model)
    if tuned is not None and tuned.layers != len(parts.blocks):
        raise ValueError(f"logit_lens: the tuned lens has {tuned.layers} translators; the model has "
                         f"{len(parts.blocks)} blocks")
    _, cache = run_with_cache(model, tokens, parts.residual_names, **kwargs)
    layers = []
    with no_grad(), evaluation_mode(model):
        for layer, name in enumerate(parts.residual_names):
            hidden = cache[name] if tuned is None else tuned.translate(backend.xp.asarray(cache[name]), layer)
            layers.append(backend.to_numpy(parts.logits(hidden).data))
    return LogitLens(list(parts.residual_names), np.stack(layers))
