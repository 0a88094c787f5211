"""A reward model for preference learning: a causal language model's trunk with a scalar head,
as Hugging Face's ``AutoModelForSequenceClassification`` with one label that TRL's
``RewardTrainer`` trains.

    r(x, y) = w . h_last,   h_last the trunk's final hidden state at the last real token of x + y

The trunk of a :class:`~lamina.models.GPT2` or :class:`~lamina.models.Llama` (any subclass, such as
Mistral) is read up to its final norm, its language-model head left unused; any other backbone
is taken to map ``(ids, key_mask=...)`` to hidden states (N, T, H) itself.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.gpt2 import GPT2
from lamina.models.llama import Llama
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.module import Module

__all__ = ["RewardModel", "final_hidden_states"]


def final_hidden_states(backbone: Module, ids, key_mask=None) -> Tensor:
    """The hidden states (N, T, H) a causal language model's head would read (see the module notes)."""
    if isinstance(backbone, GPT2):
        x = backbone.drop(backbone.wpe(backbone.wte(ids)))
        for block in backbone.h:
            x = block(x, key_mask=key_mask)
        return backbone.ln_f(x)
    if isinstance(backbone, Llama):
        x = backbone.embed_tokens(ids)
        for layer in backbone.layers:
            x = layer(x, key_mask=key_mask)
        return backbone.norm(x)
    return backbone(ids, key_mask=key_mask)


class RewardModel(Module):
    """r(x, y): the scalar reward of each row of token ids (N, T), read at its last real token.

    ``backbone``: a GPT2 or Llama (or a module giving hidden states, see the module notes); its
    weights are shared, not copied. ``head``: the score layer, a bias-free Dense(1) with N(0, 0.02)
    weights as Hugging Face initializes it. ``model(ids, key_mask=None)`` -> rewards (N,);
    ``key_mask`` (N, T), True on real tokens, is for right-padded rows: row i is read at its last
    True position (without it, at the last position).
    """

    def __init__(self, backbone: Module, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(backbone, Module):
            raise TypeError(f"RewardModel: the backbone must be a Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = Dense(1, use_bias=False, kernel_init=initializers.normal(std=0.02))

    def build(self, input_shape) -> None:
        if not self.backbone.built:
            self.backbone.build(tuple(input_shape))
            self.backbone.built = True
        self.built = True

    def forward(self, ids, key_mask=None) -> Tensor:
        shape = ids.shape
        if len(shape) != 2:
            raise ShapeError(f"RewardModel: expected token ids of shape (batch, time), got {tuple(shape)}")
        hidden = final_hidden_states(self.backbone, ids, key_mask)
        if key_mask is None:
            last = np.full(shape[0], shape[1] - 1)
        else:
            mask = np.asarray(key_mask.numpy() if isinstance(key_mask, Tensor) else key_mask, dtype=bool)
            if mask.shape != tuple(shape) or not mask.any(axis=1).all():
                raise ValueError(f"RewardModel: key_mask must have the ids' shape {tuple(shape)} and mark at least "
                                 f"one real token per row, got shape {mask.shape}")
            last = shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
        index = np.broadcast_to(last[:, None, None], (shape[0], 1, hidden.shape[-1]))
        picked = F.gather(hidden, 1, np.ascontiguousarray(index))[:, 0]
        return self.head(picked)[:, 0]

    def extra_repr(self) -> str:
        return f"backbone={type(self.backbone).__name__}"
