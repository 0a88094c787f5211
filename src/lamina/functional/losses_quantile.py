"""The pinball (quantile) loss of quantile regression, Keras-style: ``loss(y_pred, y_true)``.

For a quantile level q in (0, 1) and the residual r = y - y_hat,

    rho_q(r) = max(q r, (q - 1) r)     (q r above the prediction, (1 - q) |r| below it),

whose expectation over y is smallest at the q-th quantile of y given x. ``y_pred`` holds one
prediction per level on its last axis when several levels are given (the lower and upper
quantiles of conformalised quantile regression, for instance). Composed from
:func:`lamina.functional.maximum`, so it has first and second derivatives (0 at r = 0 apart
from the kink's subgradient).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import maximum
from lamina.functional.loss import _check_reduction, _per_sample, _reduce
from lamina.functional.losses_more import _prediction, _target

__all__ = ["pinball_loss"]


def _levels(quantiles, fn: str) -> list[float]:
    levels = [quantiles] if isinstance(quantiles, numbers.Real) else list(quantiles)
    for q in levels:
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < q < 1.0:
            raise ValueError(f"{fn}: quantile levels must be numbers in (0, 1), got {quantiles!r}")
    if not levels:
        raise ValueError(f"{fn}: give at least one quantile level")
    return [float(q) for q in levels]


def pinball_loss(y_pred, y_true, quantiles: float | Sequence[float] = 0.5, reduction: str = "mean") -> Tensor:
    """mean of rho_q(y - y_hat) = max(q (y - y_hat), (q - 1)(y - y_hat)) over the values.

    ``quantiles``: one level q (``y_true`` of ``y_pred``'s shape) or a sequence of levels, one
    per entry of ``y_pred``'s last axis, when ``y_true`` has ``y_pred``'s shape, or that shape
    without the last axis (or with 1 there): the target is then shared by every level.
    ``reduction``: 'mean' over every value, 'sum', or 'none' for one loss per sample (the mean
    over its values). 0.5 gives half the mean absolute error.
    """
    fn = "pinball_loss"
    _check_reduction(reduction, fn)
    levels = _levels(quantiles, fn)
    y_pred = _prediction(y_pred)
    several = not isinstance(quantiles, numbers.Real)
    if several and (y_pred.ndim == 0 or y_pred.shape[-1] != len(levels)):
        raise ShapeError(f"{fn}: {len(levels)} quantile levels need y_pred with {len(levels)} entries on its last "
                         f"axis, got shape {y_pred.shape}")
    shape = tuple(y_true.shape) if isinstance(y_true, Tensor) else backend.xp.shape(y_true)
    if several and shape in (y_pred.shape[:-1], y_pred.shape[:-1] + (1,)):
        if isinstance(y_true, Tensor):
            y_true = y_true.reshape(y_pred.shape[:-1] + (1,)) * backend.xp.ones(y_pred.shape, y_pred.dtype)
        else:
            y_true = backend.xp.broadcast_to(backend.xp.reshape(backend.xp.asarray(y_true), y_pred.shape[:-1] + (1,)),
                                             y_pred.shape)
    y_true = _target(y_true, y_pred, fn)
    q = backend.xp.asarray(levels, dtype=y_pred.dtype) if several else levels[0]
    residual = (y_true if isinstance(y_true, Tensor) else Tensor._wrap(y_true)) - y_pred
    losses = maximum(residual * q, residual * (q - 1.0))
    return _reduce(_per_sample(losses), reduction) if reduction == "none" else _reduce(losses, reduction)
