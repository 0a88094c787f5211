"""Connectionist Temporal Classification (Graves et al. 2006): a sequence loss without alignments.

A recogniser emits, at each of T frames, a distribution over C symbols: the labels and one
extra ``blank``. A path pi (one symbol per frame) is read as a label sequence by the map B
that first merges runs of the same symbol and then drops the blanks, so that
B(a a - b - b) = a b b. The model gives a target l the probability of all its paths,

    p(l | x) = sum_{pi: B(pi) = l} prod_t y_t(pi_t),

and the loss is L = -log p(l | x). The sum over exponentially many paths is a dynamic
programme over the extended target l' = (-, l_1, -, l_2, ..., l_S, -), the S labels with
blanks in between and at both ends (length 2S + 1), in log space:

    alpha_0(0) = log y_0(-),  alpha_0(1) = log y_0(l_1),
    alpha_t(s) = log y_t(l'_s) + logsumexp(alpha_{t-1}(s), alpha_{t-1}(s - 1), alpha_{t-1}(s - 2)),

where the jump from s - 2 (over a blank) is allowed only when l'_s is a label that differs
from l'_{s-2}: two equal labels in a row need a blank between them. Then
log p = logsumexp(alpha_{T-1}(2S), alpha_{T-1}(2S - 1)). The backward variables beta_t(s),
the log probability of finishing the target from position s after frame t, run the same
recursion from the end; alpha_t(s) + beta_t(s) - log p is the log of the posterior
probability gamma_t(s) that a path is at s at frame t. A path takes exactly one symbol per
frame, so dp / d log y_t(k) is the probability of the paths with pi_t = k and

    dL / d log y_t(k) = -sum_{s: l'_s = k} gamma_t(s).

This is the exact derivative with respect to ``log_probs``. PyTorch's ``ctc_loss`` returns
y_t(k) - sum_{s: l'_s = k} gamma_t(s) instead, the gradient with respect to the scores z of
log y = log_softmax(z) (pytorch/pytorch#52241). Both give the same gradient on z once the
log-softmax is in the graph, since the rows of y sum to 1.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.loss import _check_reduction
from lamina.functional.losses_more import _prediction

__all__ = ["ctc_loss"]

_FN = "ctc_loss"


def _log_sum(a, b, c):
    """log(e^a + e^b + e^c), element-wise; -inf where all three are -inf."""
    xp = backend.xp
    return xp.logaddexp(xp.logaddexp(a, b), c)


def _shifted(values, k: int, fill):
    """``values`` (batch, positions) moved k positions to the right (k < 0: to the left),
    the vacated positions filled with ``fill``."""
    xp = backend.xp
    out = xp.full_like(values, fill)
    if k > 0:
        out[:, k:] = values[:, :-k]
    else:
        out[:, :k] = values[:, -k:]
    return out


class ConnectionistTemporalClassification(Function):
    """CTC loss of log-probabilities (N, T, C), reduced in the node.

    Hyperparameters: ``extended`` (N, 2S + 1) the extended targets l' (positions past a
    sample's own 2 S_n + 1 hold the blank), ``input_lengths`` and ``target_lengths`` (N,),
    ``blank``, ``reduction`` and ``zero_infinity``.
    """

    def forward(self, log_probs):
        xp = backend.xp
        n, frames, _ = log_probs.shape
        positions = self.extended.shape[1]
        t = log_probs.dtype.type
        # log y_t(l'_s) for every sample, frame and extended position: (N, T, 2S + 1)
        emitted = xp.take_along_axis(log_probs, self.extended[:, None, :], axis=2)
        previous_label = _shifted(self.extended, 2, self.blank)
        self.may_skip = (self.extended != self.blank) & (self.extended != previous_label)
        alpha = xp.full((n, frames, positions), -xp.inf, dtype=log_probs.dtype)
        alpha[:, 0, 0] = emitted[:, 0, 0]
        if positions > 1:
            alpha[:, 0, 1] = xp.where(self.target_lengths > 0, emitted[:, 0, 1], t(-xp.inf))
        for frame in range(1, frames):
            before = alpha[:, frame - 1]
            skip = xp.where(self.may_skip, _shifted(before, 2, -xp.inf), t(-xp.inf))
            alpha[:, frame] = emitted[:, frame] + _log_sum(before, _shifted(before, 1, -xp.inf), skip)

        rows = xp.arange(n)
        last_frame = self.input_lengths - 1
        end = 2 * self.target_lengths
        log_p = alpha[rows, last_frame, end]
        ends_on_label = xp.where(self.target_lengths > 0, alpha[rows, last_frame, xp.maximum(end - 1, 0)],
                                 t(-xp.inf))
        log_p = xp.logaddexp(log_p, ends_on_label)
        losses = -log_p
        self.finite = xp.isfinite(losses)
        if self.zero_infinity:
            losses = xp.where(self.finite, losses, t(0))
        self.log_probs_shape, self.dtype = log_probs.shape, log_probs.dtype
        self.emitted, self.alpha, self.losses = emitted, alpha, losses
        return self._reduced(losses)

    def _label_counts(self):
        """max(S_n, 1): the 'mean' divides each loss by its target length (as PyTorch)."""
        return backend.xp.maximum(self.target_lengths, 1).astype(self.dtype)

    def _reduced(self, losses):
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return (losses / self._label_counts()).mean()

    def _sample_scale(self, dy):
        """dJ / dL_n for each sample."""
        xp = backend.xp
        n = self.losses.shape[0]
        if self.reduction == "none":
            return dy
        if self.reduction == "sum":
            return xp.full(n, dy, dtype=self.dtype)
        return dy / (self._label_counts() * self.dtype.type(max(n, 1)))

    def _log_beta(self):
        """beta_t(s): the log probability of the frames after t emitting the rest of l' from s."""
        xp = backend.xp
        emitted = self.emitted
        n, frames, positions = emitted.shape
        t = self.dtype.type
        position = xp.arange(positions)[None, :]
        end = 2 * self.target_lengths[:, None]
        finishing = xp.where((position == end) | ((position == end - 1) & (end > 0)), t(0), t(-xp.inf))
        may_skip_next = _shifted(self.may_skip, -2, False)
        beta = xp.full((n, frames, positions), -xp.inf, dtype=self.dtype)
        for frame in range(frames - 1, -1, -1):
            is_last = (self.input_lengths - 1 == frame)[:, None]
            if frame == frames - 1:
                beta[:, frame] = xp.where(is_last, finishing, t(-xp.inf))
                continue
            after = emitted[:, frame + 1] + beta[:, frame + 1]
            skip = xp.where(may_skip_next, _shifted(after, -2, -xp.inf), t(-xp.inf))
            beta[:, frame] = xp.where(is_last, finishing, _log_sum(after, _shifted(after, -1, -xp.inf), skip))
        return beta

    def backward(self, dy):
        xp = backend.xp
        t = self.dtype.type
        # log p = -L; an infinite loss (no path at all) is shifted by 0 so that nothing is inf - inf
        shift = xp.where(self.finite, self.losses, t(0))
        occupancy = xp.exp(self.alpha + self._log_beta() + shift[:, None, None])            # gamma_t(s)
        classes = self.log_probs_shape[2]
        one_hot = (self.extended[:, :, None] == xp.arange(classes)[None, None, :]).astype(self.dtype)
        grad = -xp.matmul(occupancy, one_hot)                                                 # sum over l'_s = k
        scale = self._sample_scale(dy)
        if not self.zero_infinity:
            scale = xp.where(self.finite, scale, t(xp.nan))
        return (grad * scale[:, None, None],)


# -- argument checks ---------------------------------------------------------------------


def _integers(values, name: str):
    xp = backend.xp
    data = values.data if isinstance(values, Tensor) else xp.asarray(values)
    if data.dtype.kind not in "iu":
        raise ValueError(f"{_FN}: {name} must hold integers, got dtype {data.dtype}")
    return data.astype(xp.intp, copy=False)


def _lengths(values, name: str, batch: int, low: int, high: int):
    """One length per sample, each in [low, high]."""
    lengths = _integers(values, name)
    if lengths.shape != (batch,):
        raise ShapeError(f"{_FN}: {name} must have shape ({batch},), one per sample of log_probs, "
                         f"got shape {lengths.shape}")
    outside = (lengths < low) | (lengths > high)
    if bool(outside.any()):
        i = int(backend.xp.argmax(outside))
        raise ValueError(f"{_FN}: {name} must lie in [{low}, {high}], got {int(lengths[i])} for sample {i}")
    return lengths


def _padded_targets(targets, target_lengths, batch: int):
    """((N, S) labels, (N,) lengths) from padded rows or from the labels of all samples one
    after another."""
    xp = backend.xp
    labels = _integers(targets, "targets")
    if labels.ndim == 2:
        if labels.shape[0] != batch:
            raise ShapeError(f"{_FN}: padded targets must have shape ({batch}, S), got shape {labels.shape}")
        return labels, _lengths(target_lengths, "target_lengths", batch, 0, labels.shape[1])
    if labels.ndim != 1:
        raise ShapeError(f"{_FN}: targets must be padded (N, S) or concatenated (sum of target_lengths,), "
                         f"got shape {labels.shape}")
    lengths = _lengths(target_lengths, "target_lengths", batch, 0, labels.size)
    total = int(lengths.sum())
    if total != labels.size:
        raise ShapeError(f"{_FN}: concatenated targets hold {labels.size} labels but target_lengths add up "
                         f"to {total}")
    width = int(lengths.max()) if batch else 0
    starts = xp.cumsum(lengths) - lengths
    columns = xp.arange(width)[None, :]
    inside = columns < lengths[:, None]
    source = xp.where(inside, starts[:, None] + columns, 0)
    return xp.where(inside, labels[source], 0), lengths


def _check_labels(padded, lengths, classes: int, blank: int) -> None:
    """Each sample's labels lie in [0, C) and are not the blank."""
    xp = backend.xp
    inside = xp.arange(padded.shape[1])[None, :] < lengths[:, None]
    bad = inside & ((padded < 0) | (padded >= classes) | (padded == blank))
    if bool(bad.any()):
        n, s = (int(i) for i in xp.argwhere(bad)[0])
        raise ValueError(f"{_FN}: target labels must lie in [0, {classes}) and differ from blank={blank}, "
                         f"got {int(padded[n, s])} at position {s} of sample {n}")


def _frames_needed(padded, lengths):
    """S_n + (number of equal neighbours in target n): the fewest frames that can emit it,
    as two equal labels in a row need a blank frame between them."""
    xp = backend.xp
    if padded.shape[1] < 2:
        return lengths
    inside = xp.arange(1, padded.shape[1])[None, :] < lengths[:, None]
    repeats = (inside & (padded[:, 1:] == padded[:, :-1])).sum(axis=1)
    return lengths + repeats


def _extended(padded, lengths, blank: int):
    """l' = (blank, l_1, blank, ..., l_S, blank) per sample, (N, 2S + 1); the blank past S_n."""
    xp = backend.xp
    n, width = padded.shape
    inside = xp.arange(width)[None, :] < lengths[:, None]
    extended = xp.full((n, 2 * width + 1), blank, dtype=xp.intp)
    extended[:, 1::2] = xp.where(inside, padded, blank)
    return extended


# -- the loss ------------------------------------------------------------------------------


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank: int = 0, reduction: str = "mean",
             zero_infinity: bool = False) -> Tensor:
    """Connectionist Temporal Classification loss, L_n = -log p(l_n | x_n) (module docstring).

    ``log_probs``: (N, T, C) log-probabilities over C symbols, e.g. ``log_softmax`` of a
    recurrent layer's outputs. lamina's recurrent layers are batch-first, so the batch comes
    first; PyTorch's ``ctc_loss`` takes (T, N, C). ``targets``: integer labels, either padded
    (N, S) (values past a sample's length are ignored) or the labels of all samples one after
    another, of length sum(target_lengths). ``input_lengths`` (N,) in [1, T] and
    ``target_lengths`` (N,) >= 0 give each sample's frames and labels. Labels lie in
    [0, C) and differ from ``blank``.

    A target of S_n labels with r_n pairs of equal neighbours needs T_n >= S_n + r_n frames
    (a blank must separate equal labels); a shorter input has no path, p = 0 and an
    infinite loss. That is an error unless ``zero_infinity=True``, which makes such a loss 0
    with a zero gradient (as does any other infinite loss, e.g. from log-probabilities of -inf).

    ``reduction``: 'mean' divides each loss by max(S_n, 1) and averages over the batch (as
    PyTorch), 'sum' adds the losses and 'none' returns them, shape (N,). The gradient is the
    exact dL/dlog_probs (see the module docstring for how it differs from PyTorch's).
    """
    _check_reduction(reduction, _FN)
    log_probs = _prediction(log_probs)
    if log_probs.ndim != 3 or log_probs.data.dtype.kind != "f":
        raise ShapeError(f"{_FN}: log_probs must be floating (N, T, C) log-probabilities (batch first), got "
                         f"shape {log_probs.shape} and dtype {log_probs.data.dtype}")
    batch, frames, classes = log_probs.shape
    if not isinstance(blank, numbers.Integral) or isinstance(blank, bool) or not 0 <= blank < classes:
        raise ValueError(f"{_FN}: blank must be an integer in [0, {classes}), got {blank!r}")
    inputs = _lengths(input_lengths, "input_lengths", batch, 1, frames)
    padded, lengths = _padded_targets(targets, target_lengths, batch)
    _check_labels(padded, lengths, classes, blank)
    needed = _frames_needed(padded, lengths)
    too_short = inputs < needed
    if not zero_infinity and bool(too_short.any()):
        n = int(backend.xp.argmax(too_short))
        raise ValueError(
            f"{_FN}: sample {n} has {int(inputs[n])} frames but its target of {int(lengths[n])} labels needs at "
            f"least {int(needed[n])} (its length plus one blank between each pair of equal neighbours); "
            "pass zero_infinity=True to give such samples a loss of 0"
        )
    return ConnectionistTemporalClassification.apply(
        log_probs, extended=_extended(padded, lengths, blank), input_lengths=inputs, target_lengths=lengths,
        blank=int(blank), reduction=reduction, zero_infinity=bool(zero_infinity))
