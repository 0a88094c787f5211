"""Knowledge distillation (Hinton, Vinyals and Dean 2015): a small student learns from a
large teacher's softened predictions as well as from the labels.

A trained teacher's probabilities carry more than its top class: that a handwritten 2 looks
a little like a 3 and nothing like a 4 is in the small probabilities it gives the wrong
classes. Dividing the logits by a temperature T > 1 before the softmax, p = softmax(t / T),
spreads those probabilities out, and the student is trained to match them with its own
softened distribution q = softmax(s / T): the soft term is KL(p || q). Its gradient with
respect to the student's logits is (q - p) / T, which shrinks as 1 / T^2 once T is large
(q - p itself is about (s - t) / (K T) there), so the term is multiplied by T^2: the soft
term's share of the gradient then stays about the same whichever T is chosen, and alpha
alone sets the balance with the hard term, the ordinary cross-entropy with the labels at
T = 1.

Only the student's logits get a gradient: the teacher is a constant, as are the labels.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.loss import _check_reduction, _integer_labels, _one_hot, _softmax_parts, _targets
from lamina.functional.losses_more import _check_number, _prediction, _reduce_samples, _sample_scale

__all__ = ["distillation_loss"]


class Distillation(Function):
    """L = alpha T^2 KL(p || q) + (1 - alpha) CE(s, y) per row of student logits s, with
    p = softmax(t / T) the teacher's and q = softmax(s / T) the student's softened
    probabilities, KL(p || q) = sum_j p_j (log p_j - log q_j) and CE(s, y) = -sum_j y_j log y_hat_j,
    y_hat = softmax(s).

    dL/ds = alpha T (q - p) + (1 - alpha)(y_hat sum_j y_j - y); the second term is the usual
    y_hat - y for label rows adding up to 1.

    Hyperparameters: ``teacher`` (the teacher's logits, s's shape and dtype), ``y`` (label
    rows of s's shape, or None when alpha = 1), ``temperature``, ``alpha``, ``reduction``.
    """

    def forward(self, s):
        t = s.dtype.type
        temperature, alpha = t(self.temperature), t(self.alpha)
        shifted, self.soft_student, log_norm = _softmax_parts(s / temperature)
        log_q = shifted - log_norm
        shifted, self.soft_teacher, log_norm = _softmax_parts(self.teacher / temperature)
        log_p = shifted - log_norm
        kl = (self.soft_teacher * (log_p - log_q)).sum(axis=-1)
        losses = alpha * temperature * temperature * kl
        if self.alpha < 1:
            if self.temperature == 1:
                self.hard_student, log_y_hat = self.soft_student, log_q
            else:
                shifted, self.hard_student, log_norm = _softmax_parts(s)
                log_y_hat = shifted - log_norm
            losses = losses + (1 - alpha) * -(self.y * log_y_hat).sum(axis=-1)
        self.shape = s.shape
        return _reduce_samples(losses, self.reduction)

    def backward(self, dy):
        t = dy.dtype.type
        grad = t(self.alpha * self.temperature) * (self.soft_student - self.soft_teacher)
        if self.alpha < 1:
            totals = self.y.sum(axis=-1, keepdims=True)
            grad = grad + t(1 - self.alpha) * (self.hard_student * totals - self.y)
        scale = _sample_scale(dy, self.shape[:-1], self.reduction)
        return (grad * scale[..., None],)

    def backward_graph(self, dy):
        s = self.inputs[0]
        grad = (softmax(s / self.temperature) - self.soft_teacher) * (self.alpha * self.temperature)
        if self.alpha < 1:
            totals = self.y.sum(axis=-1, keepdims=True)
            grad = grad + (softmax(s) * totals - self.y) * (1 - self.alpha)
        scale = _sample_scale(dy, self.shape[:-1], self.reduction)
        return (grad * scale[..., None],)


def _check_alpha(alpha, fn: str) -> float:
    ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0
    if not ok:
        raise ValueError(f"{fn}: alpha (the soft term's weight) must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def check_distillation_settings(temperature, alpha, fn: str) -> tuple[float, float]:
    """(temperature, alpha) as floats, or a ValueError naming ``fn``: T a finite number > 0,
    alpha a number in [0, 1]."""
    return _check_number(temperature, "temperature", fn, 0.0, strict=True), _check_alpha(alpha, fn)


def _teacher_logits(teacher_logits, student: Tensor, fn: str):
    """The teacher's logits as a constant array of the student's dtype, checked against its shape."""
    data = teacher_logits.data if isinstance(teacher_logits, Tensor) else backend.xp.asarray(teacher_logits)
    if data.shape != student.shape:
        raise ShapeError(f"{fn}: student_logits has shape {student.shape} but teacher_logits has shape "
                         f"{data.shape}; they must match (one row of class scores each, the same classes)")
    return data.astype(student.dtype, copy=False)


def _label_rows(labels, student: Tensor, fn: str):
    """Integer labels of shape student.shape[:-1] as one-hot rows, or target rows kept as they are."""
    classes = _integer_labels(labels, student, fn)
    return _targets(labels, student, fn) if classes is None else _one_hot(classes, student)


def distillation_loss(student_logits, teacher_logits, labels=None, temperature: float = 4.0, alpha: float = 0.9,
                      reduction: str = "mean") -> Tensor:
    """The distillation cost of Hinton et al. (2015):

        L = alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(softmax(s), y)

    per row of student logits s (classes on the last axis), t the teacher's logits for the
    same inputs, T the ``temperature`` (> 0) and ``alpha`` in [0, 1] the soft term's
    weight. J = (1/m) sum_i L_i with ``reduction='mean'``; ``'sum'`` adds the samples'
    losses and ``'none'`` returns them (a sample of several rows, a sequence, averages its
    rows). For logits of shape (m, K) the soft term is PyTorch's
    ``kl_div(log_softmax(s / T), softmax(t / T), reduction='batchmean') * T**2``.

    The factor T^2: the soft term's gradient with respect to s is (q - p) / T, and q - p
    itself shrinks about as 1 / T for large T, so without it raising T would quietly scale
    the soft targets' pull down by 1 / T^2 relative to the labels'; with it, T changes how
    soft the targets are and alpha alone sets the balance.

    ``labels``: integer class labels of shape s.shape[:-1], or one-hot (or soft) rows of
    s's shape; None (unlabelled data) uses the soft term alone, alpha taken as 1. One node
    with stable log-softmaxes; the gradient goes to the student's logits only (the teacher's
    logits, a tensor or an array, are a constant).
    """
    fn = "distillation_loss"
    _check_reduction(reduction, fn)
    temperature, alpha = check_distillation_settings(temperature, alpha, fn)
    student = _prediction(student_logits)
    if student.ndim == 0:
        raise ShapeError(f"{fn}: student_logits must have a class axis (the last), got a scalar")
    teacher = _teacher_logits(teacher_logits, student, fn)
    if labels is None:
        alpha = 1.0
    y = None if labels is None else _label_rows(labels, student, fn)
    return Distillation.apply(student, teacher=teacher, y=y if alpha < 1 else None, temperature=temperature,
                              alpha=alpha, reduction=reduction)
