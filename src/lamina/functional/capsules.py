"""The operations of capsule networks (Sabour, Frosst & Hinton 2017, "Dynamic Routing Between
Capsules"): the squashing non-linearity, routing by agreement and the margin loss.

    squash(s) = |s|^2 / (1 + |s|^2) * s / |s|                      (eq. 1)

keeps the direction of s and maps its length into [0, 1), the probability that the entity the
capsule stands for is present. Routing by agreement (procedure 1) sends the predictions
u_hat_{j|i} of the child capsules i to the parent capsules j:

    b_ij = 0
    repeat r times:
        c_ij = softmax_j(b_ij)                      (over the parents j of each child i)
        s_j  = sum_i c_ij u_hat_{j|i},   v_j = squash(s_j)
        b_ij = b_ij + u_hat_{j|i} . v_j             (but after the last iteration)

and the margin loss (eq. 4), for capsule lengths |v_k| and T_k = 1 for the true class only:

    L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2

with m+ = 0.9, m- = 0.1, lambda = 0.5, summed over the classes k.
"""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu, softmax
from lamina.functional.reduce import sum as reduce_sum

__all__ = ["capsule_margin_loss", "dynamic_routing", "squash"]

REDUCTIONS = ("mean", "sum", "none")


def squash(s, axis: int = -1, eps: float = 1e-8) -> Tensor:
    """v = |s|^2 / (1 + |s|^2) * s / sqrt(|s|^2 + eps), the lengths along ``axis`` squashed into
    [0, 1) (eq. 1 of Sabour et al.); ``eps`` keeps the zero vector (and its gradient) finite."""
    s = s if isinstance(s, Tensor) else Tensor._wrap(numpy.asarray(s))
    squared = reduce_sum(s * s, axis=axis, keepdims=True)
    return s * (squared / (squared + 1.0) / (squared + eps).sqrt())


def dynamic_routing(predictions, iterations: int = 3, detach_agreement: bool = False) -> Tensor:
    """Routing by agreement (procedure 1 of Sabour et al.): the predictions ``u_hat`` (batch,
    n_in, n_out, d) of the n_in child capsules for the n_out parents -> the parents' output
    capsules v (batch, n_out, d) after ``iterations`` rounds.

    The couplings c_ij = softmax over the parents j of the logits b_ij, which start at zero (so
    one iteration couples every child to every parent by 1 / n_out) and grow by the agreement
    u_hat_{j|i} . v_j. By default the gradient flows through every iteration, the couplings
    included, as in the authors' reference code; ``detach_agreement=True`` treats the
    agreements as constants (the couplings then carry no gradient), as many re-implementations do.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"dynamic_routing: iterations must be an int >= 1, got {iterations!r}")
    u_hat = predictions if isinstance(predictions, Tensor) else Tensor._wrap(numpy.asarray(predictions))
    if u_hat.ndim != 4:
        raise ShapeError(f"dynamic_routing: predictions of shape {tuple(u_hat.shape)}; expected (batch, "
                         "n_in, n_out, d), the vote of each child capsule for each parent")
    logits = None
    for step in range(iterations):
        if logits is None:
            n_out = u_hat.shape[2]
            weighted = u_hat * (1.0 / n_out)
        else:
            weighted = u_hat * softmax(logits, axis=2)[..., None]
        v = squash(reduce_sum(weighted, axis=1))
        if step + 1 < iterations:
            votes = u_hat.detach() if detach_agreement else u_hat
            chosen = v.detach() if detach_agreement else v
            agreement = reduce_sum(votes * chosen[:, None], axis=-1)
            logits = agreement if logits is None else logits + agreement
    return v


def capsule_margin_loss(lengths, labels, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5,
                        reduction: str = "mean") -> Tensor:
    """The margin loss (eq. 4 of Sabour et al.) of capsule ``lengths`` (batch, classes): sum over
    k of T_k relu(m+ - |v_k|)^2 + lam (1 - T_k) relu(|v_k| - m-)^2, with ``labels`` class
    indices (batch,) or targets T (batch, classes) (one-hot, or several ones for several
    objects). ``reduction``: 'mean' over the batch, 'sum' or 'none' (batch,)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"capsule_margin_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    lengths = lengths if isinstance(lengths, Tensor) else Tensor._wrap(numpy.asarray(lengths))
    if lengths.ndim != 2:
        raise ShapeError(f"capsule_margin_loss: lengths of shape {tuple(lengths.shape)}; expected (batch, "
                         "classes), the lengths of the class capsules")
    targets = _targets(labels, lengths.shape, lengths.dtype)
    present = relu(m_plus - lengths)
    absent = relu(lengths - m_minus)
    per_class = present * present * targets + absent * absent * ((1.0 - targets) * lam)
    per_sample = reduce_sum(per_class, axis=1)
    if reduction == "none":
        return per_sample
    total = reduce_sum(per_sample)
    return total * (1.0 / lengths.shape[0]) if reduction == "mean" else total


def _targets(labels, shape, dtype) -> numpy.ndarray:
    labels = numpy.asarray(labels.data if isinstance(labels, Tensor) else labels)
    batch, classes = shape
    if labels.shape == (batch,) and labels.dtype.kind in "iu":
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"capsule_margin_loss: labels must lie in [0, {classes}), got values from "
                             f"{labels.min()} to {labels.max()}")
        return numpy.eye(classes, dtype=dtype)[labels]
    if labels.shape == tuple(shape):
        return labels.astype(dtype)
    raise ShapeError(f"capsule_margin_loss: labels of shape {labels.shape} and dtype {labels.dtype} do not fit "
                     f"lengths {tuple(shape)}; expected class indices ({batch},) or targets {tuple(shape)}")
