r"""Fisher merging (Matena & Raffel 2022): an average of models in which each weight counts
as much as the model's data pins it down, measured by the diagonal of the Fisher information.

The diagonal empirical Fisher of a model with weights theta on N samples (x_i, y_i) is
F = (1/N) sum_i g_i^2, g_i = d l(x_i, y_i) / d theta the gradient of sample i's loss (for the
negative log-likelihood, -log p(y_i | x_i)), squared entry by entry. The merge is

    theta* = sum_k w_k F_k theta_k / sum_k w_k F_k            (entry by entry),

the maximiser of sum_k w_k log p(theta | theta_k, F_k) under Gaussian posteriors with
precisions F_k. With equal F_k it is the uniform soup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.merging.states import ModelLike, as_float64, collect, mean_of, merge_entries, per_model
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.per_sample import per_sample_gradients

__all__ = ["diagonal_fisher", "fisher_merge"]


def diagonal_fisher(model: Module, loss_fn: Callable, x, y, batch_size: int = 64) -> OrderedDict:
    """The diagonal empirical Fisher F = (1/N) sum_i g_i^2 of ``model``'s trainable weights on
    the samples (x, y): parameter name -> array of the parameter's shape, in float64.

    ``loss_fn(output, y)`` returns the batch's summed loss (a vector of per-sample losses is
    summed); the per-sample gradients g_i come from :func:`lamina.nn.per_sample_gradients`,
    ``batch_size`` samples at a time, with the model in evaluation mode (dropout off, batch
    norm on its running statistics)."""
    if not isinstance(model, Module):
        raise TypeError(f"diagonal_fisher: expected a Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"diagonal_fisher: batch_size must be a positive integer, got {batch_size!r}")
    count = len(x)
    if count == 0 or len(y) != count:
        raise ValueError(f"diagonal_fisher: x and y must hold the same positive number of samples, "
                         f"got {count} and {len(y)}")
    totals: OrderedDict = OrderedDict()
    with evaluation_mode(model):
        for start in range(0, count, batch_size):
            found = per_sample_gradients(model, loss_fn, x[start:start + batch_size], y[start:start + batch_size])
            for name, per_sample in found.items():
                squares = (as_float64(per_sample) ** 2).sum(axis=0)
                totals[name] = squares if name not in totals else totals[name] + squares
    return OrderedDict((name, total / count) for name, total in totals.items())


def fisher_merge(models: Sequence[ModelLike], fishers: Sequence[Mapping], weights: Sequence[float] | None = None,
                 epsilon: float = 1e-8) -> OrderedDict:
    """theta* = sum_k w_k (F_k + eps) theta_k / sum_k w_k (F_k + eps), entry by entry, for
    models of one architecture and their diagonal Fishers ``fishers`` (from
    :func:`diagonal_fisher`; name -> array). ``weights`` w_k default to 1; ``epsilon`` keeps
    entries no model's data touches (F = 0 everywhere) at the weighted mean. A weight entry
    missing from every Fisher (a frozen parameter) and the buffers are averaged with the
    weights w_k; non-float entries are copied from model 0."""
    who = "fisher_merge"
    states = collect(models, who)
    if isinstance(fishers, Mapping) or len(fishers) != len(states.dicts):
        raise ValueError(f"{who}: needs one Fisher (a state dict) per model ({len(states.dicts)}), got "
                         f"{'one mapping' if isinstance(fishers, Mapping) else len(fishers)}")
    coefficients = per_model(1.0 if weights is None else weights, len(states.dicts), who, "weights")
    if any(c < 0 for c in coefficients) or sum(coefficients) <= 0:
        raise ValueError(f"{who}: weights must be non-negative with a positive sum, got {coefficients}")
    if not epsilon >= 0:
        raise ValueError(f"{who}: epsilon must be >= 0, got {epsilon!r}")
    _check_fishers(fishers, states.dicts[0], who)

    def weighted_mean(key, values):
        return sum(c * v for c, v in zip(coefficients, values)) / sum(coefficients)

    def merge_weight(key, values):
        present = [key in fisher for fisher in fishers]
        if not any(present):
            return weighted_mean(key, values)
        if not all(present):
            missing = [k for k, here in enumerate(present) if not here]
            raise KeyError(f"{who}: {key!r} has a Fisher for some models but not for model(s) {missing}")
        precisions = [c * (as_float64(fisher[key]) + epsilon) for c, fisher in zip(coefficients, fishers)]
        total = sum(precisions)
        merged = sum(p * v for p, v in zip(precisions, values))
        xp = backend.xp
        return xp.where(total > 0, merged / xp.where(total > 0, total, 1.0), mean_of(values))

    return merge_entries(states, merge_weight, weighted_mean)


def _check_fishers(fishers: Sequence[Mapping], reference: dict, who: str) -> None:
    for index, fisher in enumerate(fishers):
        if not isinstance(fisher, Mapping):
            raise TypeError(f"{who}: Fisher {index} must be a mapping name -> array, got {type(fisher).__name__}")
        for key, value in fisher.items():
            if key not in reference:
                raise KeyError(f"{who}: Fisher {index} has {key!r}, which the models do not")
            if tuple(np.shape(value)) != tuple(reference[key].shape):
                raise ShapeError(f"{who}: {key!r} has shape {tuple(np.shape(value))} in Fisher {index} but "
                                 f"{tuple(reference[key].shape)} in the models")
            if bool((as_float64(value) < 0).any()):
                raise ValueError(f"{who}: Fisher {index} has negative entries in {key!r}; a diagonal Fisher "
                                 "is a mean of squares")
