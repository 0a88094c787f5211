"""Token-level divergences between a teacher's and a student's next-token distributions, as
used to distil language models (Agarwal et al., "On-policy distillation of language models:
learning from self-generated mistakes", ICLR 2024, GKD).

At every kept position the teacher's and the student's logits (vocabulary on the last axis)
are divided by a temperature T and turned into P = softmax(t / T) (teacher) and
Q = softmax(s / T) (student). Per token:

* forward KL, KL(P || Q) = sum_v P_v (log P_v - log Q_v): mode covering, the supervised KD loss;
* reverse KL, KL(Q || P) = sum_v Q_v (log Q_v - log P_v): mode seeking;
* generalized Jensen-Shannon, with M = beta P + (1 - beta) Q,

      JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),   0 < beta < 1.

  As beta -> 0, JSD(beta) / beta -> KL(P || Q); as beta -> 1, JSD(beta) / (1 - beta) -> KL(Q || P)
  (the paper's statement that JSD(beta) behaves as the forward and the reverse KL at its ends).
  At beta = 0 and beta = 1 exactly, where JSD(beta) itself is 0, the loss is those limits: the
  forward and the reverse KL (as Hugging Face TRL's ``generalized_jsd_loss``).

No T^2 factor is applied. Only the student's logits get a gradient: the teacher's are a constant.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax
from lamina.functional.elementwise import exp, log
from lamina.functional.reduce import sum as reduce_sum

__all__ = ["TOKEN_DIVERGENCES", "generalized_jsd", "token_divergence"]

TOKEN_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _check_settings(fn: str, divergence: str, beta, temperature, reduction: str) -> tuple[float, float]:
    if divergence not in TOKEN_DIVERGENCES:
        raise ValueError(f"{fn}: divergence must be one of {TOKEN_DIVERGENCES}, got {divergence!r}")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"{fn}: beta must be a number in [0, 1], got {beta!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not 0.0 < temperature < math.inf):
        raise ValueError(f"{fn}: temperature must be a finite number > 0, got {temperature!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return float(beta), float(temperature)


def _inputs(fn: str, student_logits, teacher_logits, mask):
    student = student_logits if isinstance(student_logits, Tensor) else tensor(student_logits)
    teacher = teacher_logits.data if isinstance(teacher_logits, Tensor) else backend.xp.asarray(teacher_logits)
    if student.ndim < 1 or teacher.shape != student.shape:
        raise ShapeError(f"{fn}: student_logits {student.shape} and teacher_logits {teacher.shape} must share one "
                         "shape (..., vocabulary)")
    positions = student.shape[:-1]
    if mask is None:
        keep = np.ones(positions, dtype=np.float64)
    else:
        keep = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask)
        if keep.shape != positions:
            raise ShapeError(f"{fn}: mask must have the logits' shape without the vocabulary axis {positions}, got "
                             f"{keep.shape}")
    return student, tensor(teacher, dtype=student.dtype), keep.astype(student.dtype)


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(A || B) per position from log-probabilities on the last axis."""
    return reduce_sum(exp(log_a) * (log_a - log_b), axis=-1)


def _per_token(log_p: Tensor, log_q: Tensor, divergence: str, beta: float) -> Tensor:
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if divergence == "reverse_kl" or beta == 1.0:
        return _kl(log_q, log_p)
    # log M = logaddexp(log P + log beta, log Q + log(1 - beta)), by hand to stay stable
    a, b = log_p + math.log(beta), log_q + math.log1p(-beta)
    top = tensor(np.maximum(a.data, b.data), dtype=a.dtype)
    log_m = top + log(exp(a - top) + exp(b - top))
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def token_divergence(student_logits, teacher_logits, mask=None, divergence: str = "jsd", beta: float = 0.5,
                     temperature: float = 1.0, reduction: str = "mean") -> Tensor:
    """The divergence between the teacher's P = softmax(t / T) and the student's Q = softmax(s / T)
    at every position of ``student_logits`` and ``teacher_logits`` (..., V): ``divergence``
    'forward_kl' KL(P || Q), 'reverse_kl' KL(Q || P) or 'jsd' JSD(beta) (module docstring).

    ``mask`` (the logits' shape without V; None keeps all) selects the positions that count:
    ``reduction='mean'`` averages over them (sum / number kept), ``'sum'`` adds them, ``'none'``
    returns the per-position divergences with 0 at the dropped ones.
    """
    fn = "token_divergence"
    beta, temperature = _check_settings(fn, divergence, beta, temperature, reduction)
    student, teacher, keep = _inputs(fn, student_logits, teacher_logits, mask)
    log_q = log_softmax(student / temperature if temperature != 1.0 else student, axis=-1)
    log_p = log_softmax(teacher / temperature if temperature != 1.0 else teacher, axis=-1)
    per_token = _per_token(log_p, log_q, divergence, beta) * tensor(keep, dtype=student.dtype)
    if reduction == "none":
        return per_token
    total = reduce_sum(per_token)
    return total / max(float(keep.sum()), 1.0) if reduction == "mean" else total


def generalized_jsd(student_logits, teacher_logits, mask=None, beta: float = 0.5, temperature: float = 1.0,
                    reduction: str = "mean") -> Tensor:
    """GKD's generalized Jensen-Shannon divergence JSD(beta)(P || Q) = beta KL(P || M) +
    (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q, P the teacher's and Q the student's
    softened next-token distributions: :func:`token_divergence` with ``divergence='jsd'``."""
    return token_divergence(student_logits, teacher_logits, mask, "jsd", beta, temperature, reduction)
