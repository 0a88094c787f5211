"""ELECTRA (Clark et al., "ELECTRA: pre-training text encoders as discriminators rather than
generators", 2020).

A small generator G (a masked language model) and a discriminator D share one embedding
module (word, position and segment tables, LayerNorm). Pre-training on ids x with masked
positions M:

    x_masked  = x with [MASK] at M
    L_MLM     = mean over i in M of -log p_G(x_i | x_masked)
    x_hat_i   ~ p_G(. | x_masked)_i for i in M, x_hat_i = x_i elsewhere     (sampled, no gradient)
    y_i       = 1 if x_hat_i != x_i else 0                                 (a sample equal to x_i is "original")
    L_RTD     = mean over all tokens of BCE(sigma(D(x_hat)_i), y_i)
    L         = L_MLM + lambda L_RTD                                       (lambda = 50)

Both encoders are stacks of :class:`~lamina.models.BertLayer`; each has a Dense projection
from the embedding size when its width differs. The generator's head is
LayerNorm(gelu(h W_t + b_t)) E^T + b with E the shared word table; the discriminator's is
w^T gelu(h W_d + b_d) + c, one logit per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.bert import BertEmbeddings, BertLayer, _key_mask, _normal
from lamina.models.id_inputs import token_ids
from lamina.models.schedulers.base import rng_from
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module, build_on_first_call
from lamina.nn.sample_norm import LayerNorm

__all__ = ["ELECTRA", "ElectraPretrainingOutput", "electra_pretraining_loss", "random_token_mask",
           "replaced_token_labels"]


@register_layer
class ELECTRA(Module):
    """ELECTRA's generator and discriminator over one shared :class:`~lamina.models.BertEmbeddings`
    (``embedding_size`` wide): :meth:`generator_logits` gives masked-LM scores (N, T, V),
    :meth:`discriminator_logits` (and calling the model) one replaced-token logit per token
    (N, T). ``attention_mask`` (N, T): 1 on tokens, 0 on padding. The ``generator_*``
    sizes describe the generator (a fraction of the discriminator in the paper). Weight
    matrices and embedding tables start N(0, ``initializer_range``^2), biases at zero.
    """

    def __init__(self, vocab_size: int, embedding_size: int = 128, hidden_size: int = 256,
                 num_hidden_layers: int = 12, num_attention_heads: int = 4, intermediate_size: int = 1024,
                 generator_hidden_size: int = 64, generator_num_hidden_layers: int = 12,
                 generator_num_attention_heads: int = 1, generator_intermediate_size: int = 256,
                 max_position_embeddings: int = 512, type_vocab_size: int = 2, hidden_dropout_prob: float = 0.1,
                 attention_probs_dropout_prob: float = 0.1, layer_norm_eps: float = 1e-12,
                 initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "ELECTRA: vocab_size")
        self.embedding_size = positive_int(embedding_size, "ELECTRA: embedding_size")
        self.sizes = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                      "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                      "generator_hidden_size": generator_hidden_size,
                      "generator_num_hidden_layers": generator_num_hidden_layers,
                      "generator_num_attention_heads": generator_num_attention_heads,
                      "generator_intermediate_size": generator_intermediate_size}
        for key, value in self.sizes.items():
            positive_int(value, f"ELECTRA: {key}")
        self.max_position_embeddings = positive_int(max_position_embeddings, "ELECTRA: max_position_embeddings")
        self.type_vocab_size = positive_int(type_vocab_size, "ELECTRA: type_vocab_size")
        self.hidden_dropout_prob = dropout_rate(hidden_dropout_prob, "ELECTRA")
        self.attention_probs_dropout_prob = dropout_rate(attention_probs_dropout_prob, "ELECTRA")
        self.layer_norm_eps = float(layer_norm_eps)
        self.embeddings = BertEmbeddings(vocab_size, embedding_size, max_position_embeddings, type_vocab_size,
                                         self.hidden_dropout_prob, self.layer_norm_eps)
        self.generator_projection = self._projection(generator_hidden_size)
        self.generator_layers = self._stack(generator_hidden_size, generator_num_hidden_layers,
                                            generator_num_attention_heads, generator_intermediate_size)
        self.generator_transform = Dense(embedding_size, activation="gelu", kernel_init=_normal())
        self.generator_norm = LayerNorm(-1, eps=self.layer_norm_eps)
        self.discriminator_projection = self._projection(hidden_size)
        self.discriminator_layers = self._stack(hidden_size, num_hidden_layers, num_attention_heads,
                                                intermediate_size)
        self.discriminator_transform = Dense(hidden_size, activation="gelu", kernel_init=_normal())
        self.discriminator_head = Dense(1, kernel_init=_normal())
        self.initializer_range = float(initializer_range)
        if not self.initializer_range > 0.0:
            raise ValueError(f"ELECTRA: initializer_range must be > 0, got {initializer_range}")
        for module in self.modules():                  # every weight matrix and table starts N(0, range^2)
            for attribute in ("kernel_init", "embeddings_init"):
                if hasattr(module, attribute):
                    setattr(module, attribute, initializers.normal(std=self.initializer_range))

    def _projection(self, width: int) -> Dense | None:
        return None if width == self.embedding_size else Dense(width, kernel_init=_normal())

    def _stack(self, width: int, depth: int, heads: int, intermediate: int) -> ModuleList:
        if width % heads:
            raise ValueError(f"ELECTRA: a hidden size {width} is not divisible by its {heads} attention heads")
        return ModuleList([BertLayer(width, heads, intermediate, self.hidden_dropout_prob,
                                     self.attention_probs_dropout_prob, self.layer_norm_eps) for _ in range(depth)])

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        ids = tuple(ids[0]) if ids and isinstance(ids[0], (tuple, list)) else ids
        embedded = ids + (self.embedding_size,)
        generated, discriminated = ids + (self.sizes["generator_hidden_size"],), ids + (self.sizes["hidden_size"],)
        parts = [(self.embeddings, ids), (self.generator_projection, embedded),
                 *((block, generated) for block in self.generator_layers), (self.generator_transform, generated),
                 (self.generator_norm, embedded), (self.discriminator_projection, embedded),
                 *((block, discriminated) for block in self.discriminator_layers),
                 (self.discriminator_transform, discriminated), (self.discriminator_head, discriminated)]
        for layer, shape in parts:
            if layer is not None and not layer.built:
                layer.build(shape)
                layer.built = True
        self.add_parameter("generator_bias", backend.xp.zeros(self.vocab_size, dtype=backend.get_default_dtype()))
        self.built = True

    def _encode(self, projection, layers, ids, token_type_ids, attention_mask) -> Tensor:
        ids = token_ids(ids, self._label())
        if not self.built:
            build_on_first_call(self, ids.shape)
        x = self.embeddings(ids, token_type_ids)
        if projection is not None:
            x = projection(x)
        key_mask = _key_mask(attention_mask, ids.shape, self._label())
        for block in layers:
            x = block(x, key_mask=key_mask)
        return x

    def generator_logits(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        """The generator's masked-LM scores (N, T, V), tied to the shared word table."""
        h = self._encode(self.generator_projection, self.generator_layers, ids, token_type_ids, attention_mask)
        h = self.generator_norm(self.generator_transform(h))
        table = self.embeddings.word_embeddings.weight
        return F.add(F.matmul(h, F.swapaxes(table, 0, 1)), self.generator_bias)

    def discriminator_logits(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        """The discriminator's logit (N, T) that each token was replaced."""
        h = self._encode(self.discriminator_projection, self.discriminator_layers, ids, token_type_ids,
                         attention_mask)
        logits = self.discriminator_head(self.discriminator_transform(h))
        return F.reshape(logits, *logits.shape[:-1])

    def forward(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        return self.discriminator_logits(ids, token_type_ids, attention_mask)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return tuple(shape[0]) if shape and isinstance(shape[0], (tuple, list)) else shape

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embedding_size": self.embedding_size, **self.sizes,
                "max_position_embeddings": self.max_position_embeddings, "type_vocab_size": self.type_vocab_size,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "layer_norm_eps": self.layer_norm_eps, "initializer_range": self.initializer_range, "name": self.name}


def random_token_mask(ids, probability: float = 0.15, generator=None, attention_mask=None) -> np.ndarray:
    """A boolean mask (N, T) choosing each real token with ``probability`` (at least one per
    row); padding (``attention_mask`` 0) is never chosen."""
    ids = token_ids(ids, "random_token_mask")
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"random_token_mask: probability must lie in (0, 1], got {probability}")
    real = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask) != 0
    rng = rng_from(generator)
    draws = rng.random(ids.shape)
    mask = (draws < probability) & real
    scores = np.where(real, draws, np.inf)
    empty = np.flatnonzero(~mask.any(axis=1) & real.any(axis=1))
    mask[empty, scores[empty].argmin(axis=1)] = True
    return mask


def replaced_token_labels(original, corrupted) -> np.ndarray:
    """y_i = 1 where the corrupted id differs from the original, else 0 (a sampled token equal
    to the original counts as original), as floats (N, T)."""
    original, corrupted = np.asarray(original), np.asarray(corrupted)
    if original.shape != corrupted.shape:
        raise ShapeError(f"replaced_token_labels: original ids {original.shape} and corrupted ids "
                         f"{corrupted.shape} must share one shape")
    return (original != corrupted).astype(backend.get_default_dtype())


@dataclass
class ElectraPretrainingOutput:
    """The terms of :func:`electra_pretraining_loss`: the total ``loss`` = ``mlm_loss`` +
    lambda ``rtd_loss``, the ``corrupted_ids`` the discriminator saw, its ``rtd_labels``
    (1 = replaced) and both heads' logits."""

    loss: Tensor
    mlm_loss: Tensor
    rtd_loss: Tensor
    corrupted_ids: np.ndarray
    rtd_labels: np.ndarray
    generator_logits: Tensor
    discriminator_logits: Tensor


def _sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of softmax(logits) (Gumbel-max)."""
    gumbel = -np.log(-np.log(rng.random(logits.shape).clip(1e-300, 1.0 - 1e-16)))
    return (logits.astype(np.float64) + gumbel).argmax(axis=-1)


def electra_pretraining_loss(model: ELECTRA, ids, mask, mask_token_id: int, rtd_weight: float = 50.0,
                             generator=None, token_type_ids=None, attention_mask=None) -> ElectraPretrainingOutput:
    """ELECTRA's objective L_MLM + ``rtd_weight`` L_RTD (module notes) on ids (N, T) whose
    ``mask`` (N, T, bool) positions are replaced by ``mask_token_id`` for the generator; the
    replacements are sampled from the generator with ``generator`` (a NumPy Generator, a seed
    or None), no gradient flowing through the sampling. With ``attention_mask``, L_RTD
    averages over the real tokens only."""
    ids = token_ids(ids, "electra_pretraining_loss")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != ids.shape or not mask.any():
        raise ValueError(f"electra_pretraining_loss: mask must be a boolean array of the ids' shape {ids.shape} "
                         f"choosing at least one token, got shape {mask.shape} with {int(mask.sum())} chosen")
    masked_ids = np.where(mask, mask_token_id, ids)
    generator_logits = model.generator_logits(masked_ids, token_type_ids, attention_mask)
    mlm_loss = F.cross_entropy(generator_logits, np.where(mask, ids, -100).astype(np.int64), ignore_index=-100)
    with no_grad():
        chosen = backend.to_numpy(generator_logits.data)[mask]
        corrupted = ids.copy()
        corrupted[mask] = _sample(chosen, rng_from(generator))
    discriminator_logits = model.discriminator_logits(corrupted, token_type_ids, attention_mask)
    labels = replaced_token_labels(ids, corrupted).astype(discriminator_logits.dtype)
    if attention_mask is None:
        rtd_loss = F.binary_cross_entropy_with_logits(discriminator_logits, labels)
    else:
        weight = (np.asarray(attention_mask) != 0).astype(labels.dtype)
        total = F.binary_cross_entropy_with_logits(discriminator_logits, labels, weight=weight, reduction="sum")
        rtd_loss = F.mul(total, 1.0 / max(float(weight.sum()), 1.0))
    loss = F.add(mlm_loss, F.mul(rtd_loss, float(rtd_weight)))
    return ElectraPretrainingOutput(loss, mlm_loss, rtd_loss, corrupted, labels, generator_logits,
                                    discriminator_logits)
