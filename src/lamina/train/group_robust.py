r"""Training that cares about the worst group, and the metrics to judge it.

Group DRO (Sagawa et al. 2020) minimises the largest expected loss over groups g (e.g.
label x spurious attribute) with an online exponentiated-gradient game. At each step, with
L_g the mean loss of group g in the batch (0 when absent) and n_g its training count,

    q_g <- q_g exp(eta (L_g + C / sqrt(n_g))),   q <- q / sum q,   loss = sum_g q_g L_g.

C = 0 is plain Group DRO; C > 0 the generalization adjustment favouring small groups.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.nn.module import as_tensor

__all__ = ["GroupDRO", "group_accuracies", "jtt_weights"]


def _group_ids(groups, num_groups: int, caller: str) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.dtype.kind not in "iu":
        raise ValueError(f"{caller}: group ids must be a 1-D integer array, got {groups.dtype} {groups.shape}")
    if groups.size and (groups.min() < 0 or groups.max() >= num_groups):
        raise ValueError(f"{caller}: group ids must lie in [0, {num_groups}), got values from {groups.min()} "
                         f"to {groups.max()}")
    return groups


class GroupDRO:
    """The group weights q (start uniform) and the robust loss of each batch.

    ``eta`` is the step of q; ``group_counts`` (n_g, needed when ``adjustment`` C > 0) the
    training-set group sizes."""

    def __init__(self, num_groups: int, eta: float = 0.01, adjustment: float = 0.0, group_counts=None):
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 2:
            raise ValueError(f"GroupDRO: needs at least 2 groups, got num_groups={num_groups!r}")
        if eta <= 0:
            raise ValueError(f"GroupDRO: eta must be positive, got {eta!r}")
        self.num_groups, self.eta = num_groups, float(eta)
        self.q = np.full(num_groups, 1.0 / num_groups)
        self.bonus = np.zeros(num_groups)
        if adjustment:
            if group_counts is None or np.shape(group_counts) != (num_groups,) or np.min(group_counts) <= 0:
                raise ValueError(f"GroupDRO: adjustment C > 0 needs {num_groups} positive group_counts, got "
                                 f"{group_counts!r}")
            self.bonus = float(adjustment) / np.sqrt(np.asarray(group_counts, dtype=np.float64))

    def group_losses(self, per_sample_losses, groups) -> Tensor:
        """(num_groups,) mean loss of each group in the batch, 0 for absent groups."""
        losses = as_tensor(per_sample_losses)
        groups = _group_ids(groups, self.num_groups, "GroupDRO")
        if losses.shape != groups.shape:
            raise ValueError(f"GroupDRO: one loss per sample expected, got losses {losses.shape} and groups "
                             f"{groups.shape}")
        counts = np.bincount(groups, minlength=self.num_groups)
        averaging = np.zeros((groups.size, self.num_groups))
        averaging[np.arange(groups.size), groups] = 1.0 / counts[groups]
        return losses.reshape(1, -1) @ Tensor(averaging, dtype=losses.dtype)

    def loss(self, per_sample_losses, groups) -> Tensor:
        """Update q with this batch's group losses, then return sum_g q_g L_g."""
        group_losses = self.group_losses(per_sample_losses, groups).reshape(-1)
        q = self.q * np.exp(self.eta * (np.asarray(group_losses.data, dtype=np.float64) + self.bonus))
        self.q = q / q.sum()
        return (group_losses * Tensor(self.q, dtype=group_losses.dtype)).sum()


def group_accuracies(predictions, labels, groups, num_groups: int | None = None) -> dict:
    """``{"average", "worst_group", "per_group"}``: the accuracy over all samples, the lowest
    group accuracy (over the groups present) and each group's (NaN when absent)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    num_groups = int(np.max(groups)) + 1 if num_groups is None else num_groups
    groups = _group_ids(groups, num_groups, "group_accuracies")
    if not predictions.shape == labels.shape == groups.shape:
        raise ValueError(f"group_accuracies: predictions {predictions.shape}, labels {labels.shape} and groups "
                         f"{groups.shape} must match")
    correct = (predictions == labels).astype(np.float64)
    per_group = np.array([correct[groups == g].mean() if np.any(groups == g) else np.nan
                          for g in range(num_groups)])
    return {"average": float(correct.mean()), "worst_group": float(np.nanmin(per_group)), "per_group": per_group}


def jtt_weights(predictions, labels, lambda_up: float) -> np.ndarray:
    """Just Train Twice (Liu et al. 2021): per-sample loss weights for the second model,
    lambda_up for the error set of the first (ERM, briefly trained) model's ``predictions``
    and 1 elsewhere. The second model minimises sum_i w_i L_i / sum_i w_i (equivalent to
    upsampling the error set lambda_up times)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"jtt_weights: predictions {predictions.shape} and labels {labels.shape} must match")
    if lambda_up < 1:
        raise ValueError(f"jtt_weights: lambda_up must be >= 1, got {lambda_up!r}")
    return np.where(predictions != labels, float(lambda_up), 1.0)
