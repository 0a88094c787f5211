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

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional.elementwise import where
from lamina.functional.loss import _check_reduction
from lamina.functional.losses_more import _prediction
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as total
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat, getitem, stack

__all__ = ["ctc_loss"]

_FN = "ctc_loss"


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


def _predecessor_views(padded, positions: int):
    """For ``padded`` (frames, rows, positions + 2), whose two first columns pad positions
    -2 and -1, the (frames, 3, rows, positions) view whose [t, k] holds position s - k of
    frame t for s in [0, positions): one read per frame gives each position's three
    predecessors, without a copy."""
    size = padded.itemsize
    frames, rows = padded.shape[:2]
    return backend.xp.lib.stride_tricks.as_strided(
        padded[:, :, 2:], shape=(frames, 3, rows, positions),
        strides=(padded.strides[0], -size, padded.strides[1], size), writeable=False)


class _LogSumOfThree:
    """log(e^a + e^b + e^c) of the three predecessors of every position, with a preallocated
    scratch. Stable: each sum is shifted by its largest term m (a finite stand-in where all
    three are -inf, so that nothing is inf - inf)."""

    def __init__(self, rows: int, positions: int, dtype):
        xp = backend.xp
        self.terms = xp.empty((3, rows, positions), dtype=dtype)
        self.shift = xp.empty((rows, positions), dtype=dtype)
        self.lowest = xp.asarray(xp.finfo(dtype).min, dtype=dtype)

    def __call__(self, three, penalty, out) -> None:
        """out = log sum_k e^(three[k] + penalty[k]); ``penalty`` is 0 or -inf (a forbidden move)."""
        xp = backend.xp
        terms, shift = self.terms, self.shift
        xp.add(three, penalty, out=terms)
        xp.maximum(terms[0], terms[1], out=shift)
        xp.maximum(shift, terms[2], out=shift)
        xp.maximum(shift, self.lowest, out=shift)
        xp.subtract(terms, shift, out=terms)
        xp.exp(terms, out=terms)
        xp.add(terms[0], terms[1], out=out)
        xp.add(out, terms[2], out=out)
        xp.log(out, out=out)
        xp.add(out, shift, out=out)


def _recursion(emitted, start, penalty, entries=()):
    """The forward recursion on ``rows`` independent sequences at once, frame by frame.

    ``emitted`` (T, rows, P) holds log y_t(l'_s); ``start`` (rows, P) the log probability of
    each position before frame 0's emission; ``penalty`` (3, rows, P) is 0, or -inf where the
    move from s - k to s is not allowed. ``entries`` lists (frame, rows mask, values): rows
    that begin at a later frame, set to ``values`` there (before that they hold -inf).
    Returns (before, after), both (T, rows, P): before_t(s) = log sum over the three
    predecessors (``start`` at t = 0), and after_t(s) = before_t(s) + log y_t(l'_s).
    """
    xp = backend.xp
    frames, rows, positions = emitted.shape
    before = xp.empty((frames, rows, positions), dtype=emitted.dtype)
    after = xp.full((frames, rows, positions + 2), -xp.inf, dtype=emitted.dtype)
    before[0] = start
    predecessors = _predecessor_views(after, positions)
    log_sum = _LogSumOfThree(rows, positions, emitted.dtype)
    entering = {frame: (mask, values) for frame, mask, values in entries}
    with numpy.errstate(divide="ignore"):               # log 0 = -inf: no path reaches there
        for frame in range(frames):
            if frame:
                log_sum(predecessors[frame - 1], penalty, out=before[frame])
            xp.add(before[frame], emitted[frame], out=after[frame, :, 2:])
            if frame in entering:
                mask, values = entering[frame]
                xp.copyto(after[frame, :, 2:], values, where=mask)
    return before, after[:, :, 2:]


class ConnectionistTemporalClassification(Function):
    """CTC loss of log-probabilities (N, T, C), reduced in the node.

    Hyperparameters: ``extended`` (N, 2S + 1) the extended targets l' (positions past a
    sample's own 2 S_n + 1 hold the blank), ``input_lengths`` and ``target_lengths`` (N,),
    ``blank``, ``reduction``, ``zero_infinity`` and ``with_beta`` (also run the backward
    variables in the forward, for a backward to come).

    Both recursions are one :func:`_recursion`, a few vector ops per frame over the batch
    and all positions. The backward variables are the forward recursion run on time and
    positions reversed: the emitting beta b_t(s) = log y_t(l'_s) + beta_t(s) satisfies
    b_t(s) = log y_t(l'_s) + log sum over s, s + 1, s + 2 of b_(t+1), and its start is
    b_(T_n - 1)(s) = log y_(T_n - 1)(l'_s) at the two end positions. With ``with_beta`` the
    two run as one stacked batch of 2N rows, half the steps of running them one after the
    other. The forward keeps r_t(s) = alpha_t(s) - log y_t(l'_s), the log probability before
    frame t's emission, so that alpha_t(s) + beta_t(s) = r_t(s) + b_t(s) needs no subtraction
    (which a log y of -inf would turn into nan).

    The recursions stay in log space. Probabilities rescaled at every frame (Rabiner's
    scaling) take fewer ops per frame, but drop every path more than about 700 nats below the
    best one at a frame even in float64; with scores of scale 50 that moved losses by percents.
    """

    def forward(self, log_probs):
        xp = backend.xp
        n, frames, _ = log_probs.shape
        positions = self.extended.shape[1]
        t = log_probs.dtype.type
        # log y_t(l'_s) for every frame, sample and extended position: (T, N, 2S + 1)
        emitted = xp.ascontiguousarray(log_probs.transpose(1, 0, 2)[:, xp.arange(n)[:, None], self.extended])
        previous_label = _shifted(self.extended, 2, self.blank)
        skip = xp.where((self.extended != self.blank) & (self.extended != previous_label), t(0), t(-xp.inf))
        start = xp.full((n, positions), -xp.inf, dtype=log_probs.dtype)   # before frame 0: at s = 0, or s = 1
        start[:, 0] = 0
        if positions > 1:
            start[:, 1] = xp.where(self.target_lengths > 0, t(0), t(-xp.inf))
        penalty = xp.zeros((3, n, positions), dtype=log_probs.dtype)
        penalty[2] = skip
        self.log_probs_shape, self.dtype = log_probs.shape, log_probs.dtype
        self.emitted, self.beta = emitted, None
        if self.with_beta:
            b_emitted, b_start, b_penalty, entries = self._reversed(skip, rows_before=n)
            before, after = _recursion(xp.concatenate([emitted, b_emitted], axis=1),
                                       xp.concatenate([start, b_start]), xp.concatenate([penalty, b_penalty], axis=1),
                                       entries)
            self.beta = self._unreversed(after[:, n:])
            before, after = before[:, :n], after[:, :n]
        else:
            before, after = _recursion(emitted, start, penalty)
        self.before, self.skip = before, skip

        rows = xp.arange(n)
        last_frame = self.input_lengths - 1
        end = 2 * self.target_lengths
        log_p = after[last_frame, rows, end]
        ends_on_label = xp.where(self.target_lengths > 0, after[last_frame, rows, xp.maximum(end - 1, 0)],
                                 t(-xp.inf))
        log_p = xp.logaddexp(log_p, ends_on_label)
        losses = -log_p
        self.finite = xp.isfinite(losses)
        if self.zero_infinity:
            losses = xp.where(self.finite, losses, t(0))
        self.losses = losses
        return self._reduced(losses)

    def _reversed(self, skip, rows_before: int = 0):
        """The inputs of :func:`_recursion` that give the emitting beta: its frame t is frame
        T - 1 - t and its position q is position P - 1 - q (P = 2S + 1, the padded width). Rows
        are numbered from ``rows_before`` (their place in a stacked batch)."""
        xp = backend.xp
        emitted = self.emitted
        frames, n, positions = emitted.shape
        t = self.dtype.type
        position = xp.arange(positions)[None, :]
        end = 2 * self.target_lengths[:, None]
        finishing = xp.where((position == end) | ((position == end - 1) & (end > 0)), t(0), t(-xp.inf))
        b_emitted = emitted[::-1, :, ::-1]
        b_penalty = xp.zeros((3, n, positions), dtype=self.dtype)
        b_penalty[2] = _shifted(skip, -2, -xp.inf)[:, ::-1]     # from s to s + 2 where s + 2 may be skipped to
        # a sample enters at its last frame T_n - 1, recursion frame T - T_n
        entries = []
        for first in sorted(set((frames - self.input_lengths).tolist())):
            mask = xp.zeros((rows_before + n, 1), dtype=bool)
            mask[rows_before:, 0] = frames - self.input_lengths == first
            values = xp.zeros((rows_before + n, positions), dtype=self.dtype)
            values[rows_before:] = finishing[:, ::-1] + b_emitted[first]
            entries.append((first, mask, values))
        b_start = xp.full((n, positions), -xp.inf, dtype=self.dtype)
        return b_emitted, b_start, b_penalty, entries

    def _unreversed(self, b_after):
        """b_t(s), (T, N, 2S + 1), from the reversed recursion's output."""
        return b_after[::-1, :, ::-1]

    def _log_emitting_beta(self):
        """b_t(s) = log y_t(l'_s) + beta_t(s), (T, N, 2S + 1): beta_t(s) is the log probability
        of the frames after t emitting the rest of l' from s."""
        if self.beta is None:
            b_emitted, b_start, b_penalty, entries = self._reversed(self.skip)
            self.beta = self._unreversed(_recursion(b_emitted, b_start, b_penalty, entries)[1])
        return self.beta

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

    def backward(self, dy):
        xp = backend.xp
        t = self.dtype.type
        # log p = -L; an infinite loss (no path at all) is shifted by 0 so that nothing is inf - inf
        shift = xp.where(self.finite, self.losses, t(0))
        occupancy = self.before + self._log_emitting_beta()                             # log gamma_t(s) - shift
        occupancy += shift[None, :, None]
        xp.exp(occupancy, out=occupancy)                                               # gamma_t(s), (T, N, 2S + 1)
        frames, n, _ = occupancy.shape
        classes = self.log_probs_shape[2]
        # sum over the positions s with l'_s = k, for every frame and sample, as one weighted count
        # into the (N, T, C) layout of log_probs
        sample_frame = xp.arange(n)[None, :, None] * frames + xp.arange(frames)[:, None, None]
        slot = (sample_frame * classes + self.extended[None, :, :]).ravel()
        grad = -xp.bincount(slot, weights=occupancy.ravel(), minlength=n * frames * classes)
        grad = grad.astype(self.dtype, copy=False).reshape(self.log_probs_shape)
        scale = self._sample_scale(dy)
        if not self.zero_infinity:
            scale = xp.where(self.finite, scale, t(xp.nan))
        return (grad * scale[:, None, None],)


    def backward_graph(self, dy):
        return self.composite_backward_graph(dy)

    def composite(self, log_probs: Tensor) -> Tensor:
        """The same losses from primitive ops, for second derivatives: the alpha recursion
        frame by frame with ``logsumexp`` over the three predecessors. Unreachable positions
        hold a large finite negative number instead of -inf, so that no exp(-inf + inf) turns
        a derivative into nan; they weigh exactly 0 in every sum that matters."""
        xp = backend.xp
        n, frames, _ = log_probs.shape
        positions = self.extended.shape[1]
        dtype = self.dtype
        unreachable = dtype.type(-1e30)
        rows = xp.arange(n)
        emitted = getitem(log_probs, (rows[:, None, None], xp.arange(frames)[None, :, None],
                                      self.extended[:, None, :]))                  # (N, T, 2S + 1)
        skip = xp.where(xp.isfinite(self.skip), dtype.type(0), unreachable)
        start = xp.full((n, positions), unreachable, dtype=dtype)
        start[:, 0] = 0
        if positions > 1:
            start[:, 1] = xp.where(self.target_lengths > 0, dtype.type(0), unreachable)
        fill = Tensor._constant(xp.full((n, 2), unreachable, dtype=dtype), dtype)
        alpha = getitem(emitted, (slice(None), 0)) + start
        alphas = [alpha]
        for t in range(1, frames):
            padded = concat([fill, alpha], axis=1)
            one_back = getitem(padded, (slice(None), slice(1, positions + 1)))
            two_back = getitem(padded, (slice(None), slice(0, positions))) + skip
            alpha = logsumexp(stack([alpha, one_back, two_back]), axis=0) + getitem(emitted, (slice(None), t))
            alphas.append(alpha)
        last = getitem(stack(alphas, axis=1), (rows, self.input_lengths - 1))          # (N, 2S + 1)
        end = 2 * self.target_lengths
        on_blank = getitem(last, (rows, end))
        on_label = where(self.target_lengths > 0, getitem(last, (rows, xp.maximum(end - 1, 0))), unreachable)
        losses = -logsumexp(stack([on_blank, on_label]), axis=0)
        if self.zero_infinity:
            losses = where(self.finite, losses, dtype.type(0))
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return total(losses)
        return mean(losses / self._label_counts())


# -- argument checks ---------------------------------------------------------------------


def integer_array(values, name: str, who: str):
    """``values`` (a tensor or array-like) as an array of integers, or a ValueError naming ``who``."""
    xp = backend.xp
    data = values.data if isinstance(values, Tensor) else xp.asarray(values)
    if data.dtype.kind not in "iu":
        raise ValueError(f"{who}: {name} must hold integers, got dtype {data.dtype}")
    return data.astype(xp.intp, copy=False)


def sample_lengths(values, name: str, batch: int, low: int, high: int, who: str, per: str):
    """One length per sample of ``per`` (the batch's main input), each in [low, high]."""
    lengths = integer_array(values, name, who)
    if lengths.shape != (batch,):
        raise ShapeError(f"{who}: {name} must have shape ({batch},), one per sample of {per}, got shape "
                         f"{lengths.shape}")
    outside = (lengths < low) | (lengths > high)
    if bool(outside.any()):
        i = int(backend.xp.argmax(outside))
        raise ValueError(f"{who}: {name} must lie in [{low}, {high}], got {int(lengths[i])} for sample {i}")
    return lengths


def _padded_targets(targets, target_lengths, batch: int):
    """((N, S) labels, (N,) lengths) from padded rows or from the labels of all samples one
    after another."""
    xp = backend.xp
    labels = integer_array(targets, "targets", _FN)
    if labels.ndim == 2:
        if labels.shape[0] != batch:
            raise ShapeError(f"{_FN}: padded targets must have shape ({batch}, S), got shape {labels.shape}")
        return labels, sample_lengths(target_lengths, "target_lengths", batch, 0, labels.shape[1], _FN, "log_probs")
    if labels.ndim != 1:
        raise ShapeError(f"{_FN}: targets must be padded (N, S) or concatenated (sum of target_lengths,), "
                         f"got shape {labels.shape}")
    lengths = sample_lengths(target_lengths, "target_lengths", batch, 0, labels.size, _FN, "log_probs")
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
    inputs = sample_lengths(input_lengths, "input_lengths", batch, 1, frames, _FN, "log_probs")
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
        blank=int(blank), reduction=reduction, zero_infinity=bool(zero_infinity),
        with_beta=graph.is_grad_enabled() and log_probs.requires_grad)
