"""The relative error of operator learning (Li et al.'s ``LpLoss``), Keras-style:
``loss(y_pred, y_true)``.

For each sample i, the values of all its axes after the first form one vector:

    L_i = ||y_pred_i - y_true_i||_p / ||y_true_i||_p,

a resolution-free error, the same for a field sampled on any grid (the grid's cell size
cancels). ``reduction='mean'`` averages the L_i, ``'sum'`` adds them, ``'none'`` returns them.
Composed from :func:`lamina.functional.norm` (whose gradient at a zero difference is 0), so
gradients reach the target too when it is a tensor that asks for one.
"""

from __future__ import annotations

import math
import numbers

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.loss import _check_reduction, _reduce
from lamina.functional.losses_more import _prediction, _target
from lamina.functional.stats_parity import vector_norm

__all__ = ["relative_lp_loss"]


def relative_lp_loss(y_pred, y_true, p: float = 2, reduction: str = "mean") -> Tensor:
    """mean_i ||y_pred_i - y_true_i||_p / ||y_true_i||_p over the samples i (the first axis);
    ``p`` > 0 (inf: the largest absolute value). A sample whose target is all zeros gives inf
    or nan, as the ratio does."""
    fn = "relative_lp_loss"
    _check_reduction(reduction, fn)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p > 0:
        raise ValueError(f"{fn}: p must be a number > 0 (or math.inf), got {p!r}")
    y_pred = _prediction(y_pred)
    if y_pred.ndim < 2:
        raise ShapeError(f"{fn}: expected a batch of samples (batch, ...) with at least one axis per sample, got "
                         f"shape {y_pred.shape}")
    y_true = _target(y_true, y_pred, fn)
    axes = tuple(range(1, y_pred.ndim))
    p = math.inf if p == math.inf else float(p)
    per_sample = vector_norm(y_pred - y_true, p, axes, keepdims=False) / vector_norm(
        y_true if isinstance(y_true, Tensor) else Tensor._wrap(y_true), p, axes, keepdims=False)
    return _reduce(per_sample, reduction)
