"""PyTorch's ``linear_cross_entropy``: the cross-entropy of a linear layer's logits, computed
``chunk_size`` rows at a time so that the (N, C) logits of a large vocabulary never exist whole.

With z = x W^T + b for a row x (C logits), p = softmax(z), the target class y, class weights
w (all 1 without ``weight``), eps the label smoothing and k = 0 for a target equal to
``ignore_index`` (1 otherwise), each row's loss is

    l = k [ (1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c) ]

('mean' divides the sum of the rows' losses by sum k w_y, as PyTorch's), and its gradient
with respect to the logits is

    dl/dz = k [ (1 - eps) w_y (p - e_y) + (eps / C) ((sum_c w_c) p - w) ].

For the 'mean' and 'sum' reductions the chunked node keeps only the gradients dJ/dx, dJ/dW and
dJ/db, computed chunk by chunk in the forward pass (three products per chunk, as an unfused
linear layer and loss; backward only scales them by the upstream gradient). With
``reduction='none'`` each row has its own upstream gradient, so the node keeps x and W and
backward computes the logits again, chunk by chunk.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional import shape as S
from lamina.functional.arithmetic import add, matmul
from lamina.functional.loss import _check_reduction
from lamina.functional.torch_losses import cross_entropy
from lamina.functional.torch_names import _tensor

__all__ = ["LinearCrossEntropy", "linear_cross_entropy"]


def _chunk_softmax_terms(x, w, b, y, kept, class_weights, smoothing: float):
    """(per-row loss, dl/dz) of one chunk of rows: (r,) and (r, C)."""
    xp = backend.xp
    z = parallel.matmul(x, w.T)
    if b is not None:
        z += b
    z -= z.max(axis=1, keepdims=True)
    p = xp.exp(z)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    log_p = z
    log_p -= xp.log(total)                                     # z is now log p
    rows = xp.arange(len(y))
    w_y = kept if class_weights is None else kept * class_weights[y]
    loss = -(1.0 - smoothing) * w_y * log_p[rows, y]
    grad = p
    if smoothing:
        classes = p.shape[1]
        if class_weights is None:
            loss -= (smoothing / classes) * kept * log_p.sum(axis=1)
            grad *= ((1.0 - smoothing) * w_y + smoothing * kept)[:, None]
            grad -= (smoothing / classes) * kept[:, None]
        else:
            loss -= (smoothing / classes) * kept * (log_p @ class_weights)
            grad *= ((1.0 - smoothing) * w_y + (smoothing / classes) * kept * class_weights.sum())[:, None]
            grad -= (smoothing / classes) * kept[:, None] * class_weights
    else:
        grad *= w_y[:, None]
    grad[rows, y] -= (1.0 - smoothing) * w_y
    return xp.where(kept > 0, loss, 0.0), grad               # an ignored row adds 0, whatever its scores hold


def _backpropagate_chunk(grad, x, w, dx, dw, db) -> None:
    """dJ/dx of the chunk into ``dx``; its dJ/dW and dJ/db added to ``dw`` and ``db``."""
    parallel.matmul(grad, w, out=dx)
    dw += parallel.matmul(grad.T, x)
    if db is not None:
        db += grad.sum(axis=0)


class LinearCrossEntropy(Function):
    """The chunked node: inputs x (N, D), W (C, D) and, when given, b (C,); integer targets,
    class weights and the options are keywords (``targets``, ``class_weights``,
    ``ignore_index``, ``smoothing``, ``reduction``, ``chunk_size``, ``keep_gradients``)."""

    dtype_rule = "promote"

    def forward(self, x, w, b=None):
        xp = backend.xp
        y = self.targets
        kept = (y != self.ignore_index).astype(x.dtype)
        self.safe = xp.where(kept > 0, y, 0)
        self.kept = kept
        weights = None if self.class_weights is None else self.class_weights.astype(x.dtype, copy=False)
        self.weights = weights
        n = x.shape[0]
        losses = xp.empty(n, dtype=x.dtype)
        if self.reduction == "mean":
            norm = float(kept.sum() if weights is None else (kept * weights[self.safe]).sum())
            self.scale = 1.0 / norm if norm else 0.0          # no row kept: the loss is nan, its gradient 0
        else:
            self.scale = 1.0
        keep = self.keep_gradients and self.reduction != "none"
        if keep:
            self.dx = xp.empty_like(x)
            self.dw = xp.zeros_like(w)
            self.db = None if b is None else xp.zeros_like(b)
        for lo in range(0, n, self.chunk_size):
            hi = min(n, lo + self.chunk_size)
            loss, grad = _chunk_softmax_terms(x[lo:hi], w, b, self.safe[lo:hi], kept[lo:hi], weights,
                                              self.smoothing)
            losses[lo:hi] = loss
            if keep:
                grad *= self.scale
                _backpropagate_chunk(grad, x[lo:hi], w, self.dx[lo:hi], self.dw, self.db)
        self.has_bias = b is not None
        if self.reduction == "none":
            self.x, self.w, self.b = x, w, b                       # backward computes the logits again
            return losses
        total = losses.sum()
        if self.reduction == "mean":
            total = total * self.scale if self.scale else math.nan
        return xp.asarray(total, dtype=x.dtype)

    def backward(self, dy):
        if self.reduction != "none":
            g = dy.astype(self.dx.dtype)
            return (self.dx * g, self.dw * g, self.db * g if self.has_bias else None)[:len(self.needs_grad)]
        xp = backend.xp
        x, w, b = self.x, self.w, self.b
        dx, dw = xp.empty_like(x), xp.zeros_like(w)
        db = None if b is None else xp.zeros_like(b)
        for lo in range(0, x.shape[0], self.chunk_size):
            hi = min(x.shape[0], lo + self.chunk_size)
            _, grad = _chunk_softmax_terms(x[lo:hi], w, b, self.safe[lo:hi], self.kept[lo:hi], self.weights,
                                           self.smoothing)
            grad *= dy[lo:hi, None]
            _backpropagate_chunk(grad, x[lo:hi], w, dx[lo:hi], dw, db)
        return (dx, dw, db)[:len(self.needs_grad)]


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,  # noqa: A002
                         reduction: str = "mean", ignore_index: int | None = None, label_smoothing: float = 0.0,
                         chunk_size: int | None = None) -> Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)``, PyTorch's
    ``linear_cross_entropy``: ``input`` (..., D), ``linear_weight`` (C, D), ``linear_bias``
    (C,), ``target`` class indices of the input's shape without its last axis (or class
    probabilities, (..., C)); ``weight``, ``reduction`` and ``label_smoothing`` as in
    :func:`lamina.nn.functional.cross_entropy`; ``ignore_index`` None means -100, as PyTorch's.
    The class axis of the logits is the last one (PyTorch takes only (D,) or (N, D) inputs).

    ``chunk_size=None`` runs the reference composition (every derivative order; the logits
    exist whole). An integer runs the chunked node on that many rows at a time (PyTorch's
    ``options=LinearCrossEntropyOptions(batch_chunk_size=...)``): the largest temporary is
    (chunk_size, C), and gradients of the loss are first-order only. Class-probability targets
    always take the reference path.
    """
    fn = "linear_cross_entropy"
    _check_reduction(reduction, fn)
    x, w = _tensor(input), _tensor(linear_weight)
    if w.ndim != 2:
        raise ShapeError(f"{fn}: linear_weight must be 2-D (classes, in_features), got shape {w.shape}")
    if x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"{fn}: input {x.shape} must end with the weight's in_features {w.shape[1]} "
                         f"(linear_weight {w.shape})")
    b = None if linear_bias is None else _tensor(linear_bias)
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"{fn}: linear_bias must have one value per class, shape ({w.shape[0]},); got {b.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must lie in [0, 1], got {label_smoothing}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: chunk_size must be a positive int or None (the reference path), got {chunk_size!r}")
    ignore = -100 if ignore_index is None else ignore_index
    labels = target.data if isinstance(target, Tensor) else backend.xp.asarray(target)
    indices = labels.dtype.kind in "iub"
    if chunk_size is None or not indices:
        logits = matmul(x, S.transpose(w, (1, 0)))
        if b is not None:
            logits = add(logits, b)
        return cross_entropy(logits, target, weight=weight, ignore_index=ignore, reduction=reduction,
                             label_smoothing=label_smoothing)
    if labels.shape != x.shape[:-1]:
        raise ShapeError(f"{fn}: target must be class indices of shape {x.shape[:-1]} (the input's without its "
                         f"last axis), got shape {labels.shape}")
    classes = w.shape[0]
    flat = labels.reshape(-1).astype(backend.xp.int64)
    bad = (flat != ignore) & ((flat < 0) | (flat >= classes))
    if bad.any():
        raise ValueError(f"{fn}: target {int(flat[bad][0])} is out of range for {classes} classes")
    class_weights = None
    if weight is not None:
        class_weights = backend.xp.asarray(weight.data if isinstance(weight, Tensor) else weight).reshape(-1)
        if class_weights.shape != (classes,):
            raise ShapeError(f"{fn}: weight must hold one value per class ({classes}), got shape "
                             f"{class_weights.shape}")
    rows = S.reshape(x, (math.prod(x.shape[:-1]), w.shape[1]))
    inputs = (rows, w) if b is None else (rows, w, b)
    wants_grad = graph.is_grad_enabled() and any(t.requires_grad for t in inputs)
    out = LinearCrossEntropy.apply(*inputs, targets=flat, class_weights=class_weights, ignore_index=ignore,
                                   smoothing=float(label_smoothing), reduction=reduction, chunk_size=chunk_size,
                                   keep_gradients=wants_grad)
    return S.reshape(out, x.shape[:-1]) if reduction == "none" else out
