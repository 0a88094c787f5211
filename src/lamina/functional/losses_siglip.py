"""The sigmoid loss of SigLIP (Zhai et al., "Sigmoid loss for language image pre-training", 2023).

Each of the N x N image-text pairs of a batch is its own binary classification, matching or
not, instead of a softmax over the batch as in CLIP:

    x_i = image_i / |image_i|,  y_j = text_j / |text_j|,  logits_ij = t x_i . y_j + b,  t = exp(t')
    z_ij = 1 if i == j (a matching pair) else -1
    L = -1/N sum_i sum_j log sigmoid(z_ij logits_ij)

t' (the log temperature) and b (the bias) are learned; the paper starts them at t' = log 10
and b = -10, so that the many negative pairs begin with small losses. No term couples one
pair's loss to another's, so the sum may be taken block by block (:func:`siglip_block_loss`),
which is what the chunked multi-device form does.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation_extra import log_sigmoid
from lamina.functional.arithmetic import add, matmul, mul, neg
from lamina.functional.elementwise import exp
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.shape import reshape, transpose
from lamina.functional.similarity import normalize as unit_rows

__all__ = ["SIGLIP_BIAS_INIT", "SIGLIP_LOG_TEMPERATURE_INIT", "siglip_block_loss", "siglip_logits", "siglip_loss"]

SIGLIP_LOG_TEMPERATURE_INIT = math.log(10.0)
"""The paper's initial t' (t = exp(t') = 10)."""
SIGLIP_BIAS_INIT = -10.0
"""The paper's initial bias b."""


def _embeddings(value, name: str, fn: str) -> Tensor:
    value = value if isinstance(value, Tensor) else Tensor(backend.xp.asarray(value))
    if value.ndim != 2:
        raise ShapeError(f"{fn}: {name} must be a batch of embeddings of shape (N, D), got shape {value.shape}")
    return value


def _scalar(value, name: str, fn: str, dtype) -> Tensor:
    value = value if isinstance(value, Tensor) else Tensor(value, dtype=dtype)
    if value.size != 1:
        raise ShapeError(f"{fn}: {name} must be a scalar (a 0-d or one-element tensor), got shape {value.shape}")
    return value


def siglip_logits(x, y, t_prime, b) -> Tensor:
    """exp(t') x y^T + b: (N, M) logits of the rows ``x`` (N, D) against the rows ``y`` (M, D),
    taken as given (normalise them first for SigLIP's cosine similarities)."""
    fn = "siglip_logits"
    x, y = _embeddings(x, "x", fn), _embeddings(y, "y", fn)
    if x.shape[1] != y.shape[1]:
        raise ShapeError(f"{fn}: x of shape {x.shape} and y of shape {y.shape} differ in their embedding size")
    t_prime, b = _scalar(t_prime, "t_prime", fn, x.dtype), _scalar(b, "b", fn, x.dtype)
    scale = exp(reshape(t_prime, ()))
    return add(mul(matmul(x, transpose(y, 1, 0)), scale), reshape(b, ()))


def siglip_block_loss(x, y, t_prime, b, positives_on_diagonal: bool) -> Tensor:
    """-sum_ij log sigmoid(z_ij (exp(t') x_i . y_j + b)) over one block of the pairs: z_ij = 1 on
    the diagonal of a square block when ``positives_on_diagonal`` (the images' own texts),
    -1 everywhere else. A 0-d sum, not divided by the batch size; ``x``, ``y`` as given."""
    logits = siglip_logits(x, y, t_prime, b)
    if not positives_on_diagonal:
        return neg(reduce_sum(log_sigmoid(neg(logits))))
    n, m = logits.shape
    if n != m:
        raise ShapeError(f"siglip_block_loss: a block with positives on its diagonal must be square (matching "
                         f"pairs), got {n} images and {m} texts")
    signs = backend.xp.asarray(2.0 * np.eye(n) - 1.0, dtype=logits.dtype)
    return neg(reduce_sum(log_sigmoid(mul(logits, signs))))


def siglip_loss(image_emb, text_emb, t_prime=SIGLIP_LOG_TEMPERATURE_INIT, b=SIGLIP_BIAS_INIT,
                normalize: bool = True) -> Tensor:
    """SigLIP's sigmoid loss of N matching (image, text) pairs (see the module docstring):
    -1/N sum_ij log sigmoid(z_ij (exp(t') x_i . y_j + b)), z = 2 I - 1. ``image_emb`` and
    ``text_emb`` (N, D); ``t_prime`` and ``b`` scalars (learnable Tensors, or numbers);
    ``normalize=False`` takes the embeddings as already of unit length. A 0-d Tensor."""
    fn = "siglip_loss"
    x, y = _embeddings(image_emb, "image_emb", fn), _embeddings(text_emb, "text_emb", fn)
    if x.shape != y.shape:
        raise ShapeError(f"{fn}: image_emb has shape {x.shape} but text_emb has shape {y.shape}; expected N "
                         "matching pairs of one shape (N, D)")
    if x.shape[0] == 0:
        raise ShapeError(f"{fn}: needs at least one pair, got embeddings of shape {x.shape}")
    if normalize:
        x, y = unit_rows(x, axis=-1), unit_rows(y, axis=-1)
    return mul(siglip_block_loss(x, y, t_prime, b, positives_on_diagonal=True), 1.0 / x.shape[0])
