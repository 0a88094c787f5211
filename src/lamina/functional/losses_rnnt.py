"""The RNN-Transducer loss (Graves, "Sequence Transduction with Recurrent Neural Networks", 2012),
with the arguments and semantics of torchaudio's ``rnnt_loss``.

A transducer scores, for every frame t of the input and every count u of labels emitted so
far, a distribution y(t, u, .) over the V symbols: the labels and a ``blank``. Its outputs form
a lattice of T x (U + 1) cells for a target l = (l_1, ..., l_U). From cell (t, u) a path either
emits the blank and moves to the next frame, (t + 1, u), with log-probability
blank(t, u) = log y(t, u, blank), or emits the next label and stays on the frame, (t, u + 1),
with emit(t, u) = log y(t, u, l_(u+1)). Every path from (0, 0) to (T - 1, U) that ends with a
blank is one alignment; the model gives the target the probability of all of them, and the
loss is L = -log p(l | x). The forward variables, in log space,

    alpha(0, 0) = 0,
    alpha(t, u) = logaddexp(alpha(t - 1, u) + blank(t - 1, u), alpha(t, u - 1) + emit(t, u - 1)),

give L = -(alpha(T - 1, U) + blank(T - 1, U)). The backward variables, the log-probability of
finishing from (t, u),

    beta(T - 1, U) = blank(T - 1, U),
    beta(t, u) = logaddexp(beta(t + 1, u) + blank(t, u), beta(t, u + 1) + emit(t, u)),

give the same total, beta(0, 0) = -L. A transition's posterior probability is that of the
paths through it, so the exact derivatives of L with respect to the log-probabilities are

    dL / d blank(t, u) = -exp(alpha(t, u) + blank(t, u) + beta(t + 1, u) + L),
    dL / d emit(t, u)  = -exp(alpha(t, u) + emit(t, u) + beta(t, u + 1) + L),

with beta(T, U) = 0 for the final blank, and 0 for every other symbol. With the log-softmax
fused in (y = softmax(z) over the symbols), the derivative with respect to the scores z is
that plus y(t, u, k) times the occupancy exp(alpha(t, u) + beta(t, u) + L) of the cell.

Both recursions run over the anti-diagonals t + u = d of the lattice: the cells of one diagonal
depend only on the previous one, so each step is a few vector ops over the batch and the
diagonal's cells, T + U steps in all.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax
from lamina.functional.arithmetic import neg
from lamina.functional.loss import _check_reduction
from lamina.functional.losses_ctc import integer_array, sample_lengths
from lamina.functional.losses_more import _prediction
from lamina.functional.math_parity import logaddexp
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as total
from lamina.functional.shape import getitem, stack

__all__ = ["rnnt_loss"]

_FN = "rnnt_loss"


def _log_softmax(scores):
    """log softmax over the last axis, on arrays."""
    xp = backend.xp
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _diagonals(frames: int, width: int):
    """For d = 0 .. frames + width - 2, the (t, u) indices of the cells with t + u = d."""
    xp = backend.xp
    for d in range(frames + width - 1):
        t = xp.arange(max(0, d - width + 1), min(d, frames - 1) + 1)
        yield t, d - t


def _forward_variables(blank, emit):
    """alpha (B, T, U + 1) from the transition log-probabilities (B, T, U + 1); a transition
    that leaves a sample's lattice holds -inf. All three are padded by one row and column of
    -inf in front, so that the cells on the border need no case of their own."""
    xp = backend.xp
    n, frames, width = blank.shape
    alpha, blank_in, emit_in = (xp.full((n, frames + 1, width + 1), -xp.inf, dtype=blank.dtype) for _ in range(3))
    blank_in[:, 1:, 1:], emit_in[:, 1:, 1:] = blank, emit
    alpha[:, 1, 1] = 0
    for t, u in _diagonals(frames, width):
        if t[0] + u[0] == 0:
            continue
        from_blank = alpha[:, t, u + 1] + blank_in[:, t, u + 1]
        from_emit = alpha[:, t + 1, u] + emit_in[:, t + 1, u]
        alpha[:, t + 1, u + 1] = xp.logaddexp(from_blank, from_emit)
    return alpha[:, 1:, 1:]


def _backward_variables(blank, emit, finish):
    """beta (B, T, U + 1); ``finish`` holds the final blank's log-probability on each sample's
    last cell (T_n - 1, U_n) and -inf elsewhere. Padded by one row and column of -inf behind."""
    xp = backend.xp
    n, frames, width = blank.shape
    beta = xp.full((n, frames + 1, width + 1), -xp.inf, dtype=blank.dtype)
    for t, u in reversed(list(_diagonals(frames, width))):
        to_blank = beta[:, t + 1, u] + blank[:, t, u]
        to_emit = beta[:, t, u + 1] + emit[:, t, u]
        beta[:, t, u] = xp.logaddexp(finish[:, t, u], xp.logaddexp(to_blank, to_emit))
    return beta


class RNNTransducerLoss(Function):
    """The RNN-T losses of (B, T, U + 1, V) scores, reduced in the node.

    Hyperparameters: ``targets`` (B, U), ``logit_lengths`` and ``target_lengths`` (B,),
    ``blank``, ``clamp``, ``reduction`` and ``fused`` (the input holds scores whose
    log-softmax is taken in the node, or log-probabilities used as they are)."""

    def forward(self, logits):
        xp = backend.xp
        n, frames, width, _ = logits.shape
        log_probs = _log_softmax(logits) if self.fused else logits
        rows = xp.arange(n)[:, None, None]
        times = xp.arange(frames)[None, :, None]
        cells = xp.arange(width)[None, None, :]
        labels = xp.zeros((n, width), dtype=xp.intp)
        labels[:, :-1] = self.targets
        last_frame = (self.logit_lengths - 1)[:, None, None]
        last_label = self.target_lengths[:, None, None]
        inside = (times <= last_frame) & (cells <= last_label)
        blank = log_probs[..., self.blank]
        emit = log_probs[rows, times, cells, labels[:, None, :]]
        moves_on = inside & (times < last_frame)
        is_last = inside & (times == last_frame) & (cells == last_label)
        blank_move = xp.where(moves_on, blank, -xp.inf)
        emit_move = xp.where(inside & (cells < last_label), emit, -xp.inf)
        finish = xp.where(is_last, blank, -xp.inf)
        alpha = _forward_variables(blank_move, emit_move)
        beta = _backward_variables(blank_move, emit_move, finish)
        losses = -beta[:, 0, 0]
        self.saved = (log_probs, labels, alpha, beta, blank_move, emit_move, finish, losses)
        self.dtype = logits.dtype
        return self._reduced(losses)

    def _reduced(self, losses):
        if self.reduction == "none":
            return losses
        return losses.sum() if self.reduction == "sum" else losses.mean()

    def _sample_scale(self, dy):
        """dJ / dL_n for each sample."""
        n = self.targets.shape[0]
        if self.reduction == "none":
            return dy
        scale = dy if self.reduction == "sum" else dy / max(n, 1)
        return backend.xp.full(n, scale, dtype=self.dtype)

    def backward(self, dy):
        xp = backend.xp
        log_probs, labels, alpha, beta, blank_move, emit_move, finish, losses = self.saved
        n, frames, width, _ = log_probs.shape
        shift = losses[:, None, None]
        # every term is -inf (a weight of 0) off the paths of a sample's own lattice
        d_blank = -xp.exp(alpha + blank_move + beta[:, 1:, :-1] + shift) - xp.exp(alpha + finish + shift)
        d_emit = -xp.exp(alpha + emit_move + beta[:, :-1, 1:] + shift)
        grad = xp.zeros(log_probs.shape, dtype=self.dtype)
        grad[..., self.blank] = d_blank
        rows = xp.arange(n)[:, None, None]
        times = xp.arange(frames)[None, :, None]
        cells = xp.arange(width)[None, None, :]
        grad[rows, times, cells, labels[:, None, :]] += d_emit
        if self.fused:
            # through the log-softmax: dz = dlp - softmax * sum_k dlp_k, the sum being the two moves'
            grad -= xp.exp(log_probs) * (d_blank + d_emit)[..., None]
        if self.clamp > 0:
            xp.clip(grad, -self.clamp, self.clamp, out=grad)
        return (grad * self._sample_scale(dy)[:, None, None, None],)

    def backward_graph(self, dy):
        if self.clamp > 0:
            raise RuntimeError(f"{_FN}: a clamped gradient is not differentiable again; pass clamp=-1 for "
                               "grad(create_graph=True)")
        return self.composite_backward_graph(dy)

    def composite(self, logits: Tensor) -> Tensor:
        """The same losses from primitive ops, for second derivatives: the alpha recursion
        cell by cell on (B,) columns, with no transition leaving a lattice needed, since a
        sample's loss reads only cells inside its own lattice."""
        xp = backend.xp
        n, frames, width, _ = logits.shape
        log_probs = log_softmax(logits) if self.fused else logits
        labels = self.saved[1]
        rows = xp.arange(n)
        alpha = [[None] * width for _ in range(frames)]
        for t in range(frames):
            for u in range(width):
                terms = []
                if t:
                    terms.append(alpha[t - 1][u] + getitem(log_probs, (rows, t - 1, u, self.blank)))
                if u:
                    terms.append(alpha[t][u - 1] + getitem(log_probs, (rows, t, u - 1, labels[:, u - 1])))
                alpha[t][u] = (Tensor._wrap(xp.zeros(n, dtype=self.dtype)) if not terms
                               else terms[0] if len(terms) == 1 else logaddexp(*terms))
        lattice = stack([stack(row, axis=1) for row in alpha], axis=1)           # (B, T, U + 1)
        last_frame, last_label = self.logit_lengths - 1, self.target_lengths
        losses = neg(getitem(lattice, (rows, last_frame, last_label))
                     + getitem(log_probs, (rows, last_frame, last_label, self.blank)))
        if self.reduction == "none":
            return losses
        return total(losses) if self.reduction == "sum" else mean(losses)


# -- argument checks ---------------------------------------------------------------------




def _checked_targets(targets, target_lengths, batch: int, width: int, classes: int, blank: int):
    labels = integer_array(targets, "targets", _FN)
    if labels.shape != (batch, width - 1):
        raise ShapeError(f"{_FN}: targets must have shape (batch, max target length) = ({batch}, {width - 1}) "
                         f"for logits with U + 1 = {width} label positions, got shape {labels.shape}")
    lengths = sample_lengths(target_lengths, "target_lengths", batch, 0, width - 1, _FN, "logits")
    xp = backend.xp
    inside = xp.arange(width - 1)[None, :] < lengths[:, None]
    bad = inside & ((labels < 0) | (labels >= classes) | (labels == blank))
    if bool(bad.any()):
        b, u = (int(i) for i in xp.argwhere(bad)[0])
        raise ValueError(f"{_FN}: target labels must lie in [0, {classes}) and differ from blank={blank}, got "
                         f"{int(labels[b, u])} at position {u} of sample {b}")
    return xp.where(inside, labels, 0), lengths


# -- the loss ------------------------------------------------------------------------------


def rnnt_loss(logits, targets, logit_lengths, target_lengths, blank: int = -1, clamp: float = -1,
              reduction: str = "mean", fused_log_softmax: bool = True) -> Tensor:
    """RNN-Transducer loss L_n = -log p(l_n | x_n) (module docstring), as torchaudio's.

    ``logits``: (B, T, U + 1, V) joiner outputs, for T frames, targets of up to U labels and V
    symbols; with ``fused_log_softmax`` (default) the log-softmax over V is taken inside,
    otherwise ``logits`` must already be log-probabilities. ``targets``: (B, U) integer labels
    (values past a sample's length are ignored). ``logit_lengths`` (B,) in [1, T] and
    ``target_lengths`` (B,) in [0, U]: each sample's frames and labels. ``blank``: the blank's
    index, negative counting from the end (default -1, the last symbol); labels lie in [0, V)
    and differ from it.

    ``clamp`` > 0 clips every element of each sample's gradient to [-clamp, clamp] before it is
    scaled by the reduction. ``reduction``: 'mean' averages the losses over the batch (not
    divided by the target lengths, as torchaudio), 'sum' adds them, 'none' returns them (B,).
    """
    _check_reduction(reduction, _FN)
    logits = _prediction(logits)
    if logits.ndim != 4 or logits.data.dtype.kind != "f":
        raise ShapeError(f"{_FN}: logits must be floating (batch, frames, max target length + 1, classes), got "
                         f"shape {logits.shape} and dtype {logits.data.dtype}")
    batch, frames, width, classes = logits.shape
    if not isinstance(blank, numbers.Integral) or isinstance(blank, bool) or not -classes <= blank < classes:
        raise ValueError(f"{_FN}: blank must be an integer in [{-classes}, {classes}), got {blank!r}")
    blank = int(blank) % classes
    if not isinstance(clamp, numbers.Real) or isinstance(clamp, bool):
        raise ValueError(f"{_FN}: clamp must be a number (<= 0 for no clamping), got {clamp!r}")
    lengths = sample_lengths(logit_lengths, "logit_lengths", batch, 1, frames, _FN, "logits")
    labels, label_counts = _checked_targets(targets, target_lengths, batch, width, classes, blank)
    return RNNTransducerLoss.apply(
        logits, targets=labels, logit_lengths=lengths, target_lengths=label_counts, blank=blank,
        clamp=float(clamp), reduction=reduction, fused=bool(fused_log_softmax))
