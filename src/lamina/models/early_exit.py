"""Early-exit networks (BranchyNet, Teerapittayanon et al. 2016).

A backbone cut into stages s_1, ..., s_n with a classifier branch b_i after each stage:
h_i = s_i(h_{i-1}), z_i = b_i(h_i); the last branch is the network's own classifier.

* Training minimises the joint loss  L = sum_i w_i CE(z_i, y).
* Inference runs the stages one after the other and lets a sample leave at the first branch
  that is confident enough (the last branch takes whoever is left):
    - criterion 'entropy':          exit when H(softmax(z_i)) = -sum_c p_c log p_c < threshold_i
    - criterion 'max_probability':  exit when max_c softmax(z_i)_c > threshold_i
  A sample leaving at branch i has cost sum_{j <= i} (MACs(s_j) + MACs(b_j)); the MACs of
  each stage and branch come from ``lamina.analysis.summary``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional import cross_entropy
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.module import Module, as_tensor, evaluation_mode

CRITERIA = ("entropy", "max_probability")


@dataclass
class EarlyExitResult:
    """predictions (N,), exit_index (N,) branch each sample left at, exit_fractions per branch,
    macs_per_sample (N,), full_macs (one sample through every stage and branch) and
    saved_fraction = 1 - mean(macs_per_sample) / full_macs."""

    predictions: np.ndarray
    exit_index: np.ndarray
    exit_fractions: np.ndarray
    macs_per_sample: np.ndarray
    full_macs: int
    saved_fraction: float


def _probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@register_with_arguments(modules=("stages", "exits"))
class EarlyExitNetwork(Module):
    """``stages`` and ``exits`` (one classifier per stage, same count); ``loss_weights`` w_i
    (default all 1). Calling the network returns the list of every branch's logits."""

    def __init__(self, stages, exits, loss_weights=None, name: str | None = None):
        super().__init__(name=name)
        stages, exits = list(stages), list(exits)
        if not stages or len(stages) != len(exits):
            raise ValueError(f"EarlyExitNetwork: needs as many exits as stages (at least one), got {len(stages)} "
                             f"stages and {len(exits)} exits")
        weights = [1.0] * len(exits) if loss_weights is None else [float(w) for w in loss_weights]
        if len(weights) != len(exits) or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"EarlyExitNetwork: loss_weights must be {len(exits)} finite non-negative numbers, "
                             f"got {loss_weights!r}")
        self.stages = ModuleList(stages)
        self.exits = ModuleList(exits)
        self.loss_weights = weights
        self.stage_input_shapes = None

    def forward(self, x) -> list[Tensor]:
        h, outputs, shapes = as_tensor(x), [], []
        for stage, branch in zip(self.stages, self.exits):
            shapes.append(tuple(h.shape[1:]))
            h = stage(h)
            outputs.append(branch(h))
        self.stage_input_shapes = shapes + [tuple(h.shape[1:])]
        return outputs

    def joint_loss(self, outputs: list[Tensor], labels) -> Tensor:
        """sum_i w_i CE(z_i, y) (mean cross-entropy per branch)."""
        if len(outputs) != len(self.loss_weights):
            raise ValueError(f"EarlyExitNetwork.joint_loss: expected {len(self.loss_weights)} branch outputs, "
                             f"got {len(outputs)}")
        total = None
        for w, logits in zip(self.loss_weights, outputs):
            term = cross_entropy(logits, labels) * w
            total = term if total is None else total + term
        return total

    def branch_macs(self) -> list[int]:
        """Per branch i: MACs of one sample through stage i and exit i (needs one call first)."""
        from lamina.analysis import summary  # analysis sits at the same rank as models

        if self.stage_input_shapes is None:
            raise ValueError("EarlyExitNetwork.branch_macs: call the network once first (the shapes are unknown)")
        shapes = self.stage_input_shapes
        return [summary(stage, shapes[i]).total_macs + summary(branch, shapes[i + 1]).total_macs
                for i, (stage, branch) in enumerate(zip(self.stages, self.exits))]

    def _thresholds(self, threshold, criterion: str) -> list[float]:
        if criterion not in CRITERIA:
            raise ValueError(f"EarlyExitNetwork: criterion must be one of {CRITERIA}, got {criterion!r}")
        n = len(self.exits) - 1
        values = [threshold] * n if np.isscalar(threshold) else list(threshold)
        if len(values) != n:
            raise ValueError(f"EarlyExitNetwork: give one threshold or {n} (one per early exit), got {len(values)}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                    criterion == "max_probability" and v > 1):
                bound = "[0, 1]" if criterion == "max_probability" else "[0, inf)"
                raise ValueError(f"EarlyExitNetwork: {criterion} thresholds must lie in {bound}, got {threshold!r}")
        return [float(v) for v in values]

    def infer(self, x, threshold, criterion: str = "entropy") -> EarlyExitResult:
        """Run with early exits (evaluation mode, no gradients); see the module docstring."""
        thresholds = self._thresholds(threshold, criterion)
        h = as_tensor(x)
        n = h.shape[0]
        predictions = np.zeros(n, dtype=np.int64)
        exit_index = np.full(n, len(self.exits) - 1, dtype=np.int64)
        remaining = np.arange(n)
        with no_grad(), evaluation_mode(self):
            for i, (stage, branch) in enumerate(zip(self.stages, self.exits)):
                h = stage(h)
                probs = _probabilities(backend.to_numpy(branch(h).data).astype(np.float64))
                if i == len(self.exits) - 1:
                    leave = np.ones(len(remaining), dtype=bool)
                elif criterion == "entropy":
                    entropy = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(axis=-1)
                    leave = entropy < thresholds[i]
                else:
                    leave = probs.max(axis=-1) > thresholds[i]
                predictions[remaining[leave]] = probs[leave].argmax(axis=-1)
                exit_index[remaining[leave]] = i
                remaining = remaining[~leave]
                if not remaining.size:
                    break
                h = Tensor._wrap(h.data[~leave])
        costs = np.cumsum(self.branch_macs())
        fractions = np.bincount(exit_index, minlength=len(self.exits)) / max(n, 1)
        per_sample = costs[exit_index]
        saved = 1.0 - float(per_sample.mean()) / float(costs[-1]) if n and costs[-1] else 0.0
        return EarlyExitResult(predictions, exit_index, fractions, per_sample, int(costs[-1]), saved)
