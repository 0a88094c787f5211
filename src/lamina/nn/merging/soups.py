"""Averages of fine-tuned models: model soups (Wortsman et al. 2022) and spherical
interpolation of two models (SLERP, as mergekit does it)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from lamina import backend
from lamina.nn.merging.states import (
    ModelLike,
    check_unit_interval,
    collect,
    merge_entries,
    per_model,
)

__all__ = ["greedy_soup", "slerp", "uniform_soup"]

# Cosine of the angle above which two tensors count as colinear and are interpolated linearly.
COLINEAR = 0.9995


def uniform_soup(models: Sequence[ModelLike], weights: Sequence[float] | None = None) -> OrderedDict:
    """The uniform soup theta = (1/K) sum_k theta_k of K models of one architecture (with
    ``weights`` w_k: sum_k w_k theta_k / sum_k w_k). Buffers are averaged by the same rule.
    Returns a new state dict; load it with ``model.load_state_dict(...)``."""
    who = "uniform_soup"
    states = collect(models, who)
    coefficients = per_model(1.0 if weights is None else weights, len(states.dicts), who, "weights")
    total = sum(coefficients)
    if any(c < 0 for c in coefficients) or total <= 0:
        raise ValueError(f"{who}: weights must be non-negative with a positive sum, got {coefficients}")

    def average(key, values):
        return sum(c * v for c, v in zip(coefficients, values)) / total

    return merge_entries(states, average, average)


def greedy_soup(models: Sequence[ModelLike], evaluate: Callable[[OrderedDict], float],
                scores: Sequence[float] | None = None, return_ingredients: bool = False):
    """The greedy soup: models sorted by their own held-out score (best first), then each added
    to the uniform soup of those kept so far if the soup's score does not fall.

    ``evaluate(state_dict) -> float`` scores a state dict on held-out data (higher is better;
    load it into a model of the architecture and measure accuracy, say). ``scores``: the
    models' own scores when already known (otherwise ``evaluate`` computes them). Returns the
    soup's state dict, or (state dict, indices of the models kept in the order added) with
    ``return_ingredients``. The soup never scores below the best single model on the data
    ``evaluate`` uses."""
    who = "greedy_soup"
    collect(models, who)
    if not callable(evaluate):
        raise TypeError(f"{who}: evaluate must be a function state_dict -> score, got {type(evaluate).__name__}")
    if scores is None:
        scores = [float(evaluate(uniform_soup([model]))) for model in models]
    scores = per_model(scores, len(models), who, "scores")
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    kept = [order[0]]
    soup, best = uniform_soup([models[order[0]]]), scores[order[0]]
    for index in order[1:]:
        candidate = uniform_soup([models[i] for i in kept + [index]])
        score = float(evaluate(candidate))
        if score >= best:
            kept.append(index)
            soup, best = candidate, score
    return (soup, kept) if return_ingredients else soup


def slerp(a: ModelLike, b: ModelLike, t: float) -> OrderedDict:
    """Spherical linear interpolation between two models, tensor by tensor.

    Each tensor is flattened; the angle Omega between a and b comes from their normalised
    directions, cos Omega = <a/|a|, b/|b|>, and

        slerp(a, b; t) = sin((1 - t) Omega) / sin Omega * a + sin(t Omega) / sin Omega * b

    (t = 0 gives a, t = 1 gives b; unit a and b give a unit result). Nearly colinear tensors
    (|cos Omega| > 0.9995) and zero ones are interpolated linearly, (1 - t) a + t b, as are
    buffers."""
    who = "slerp"
    t = check_unit_interval(t, who, "t", closed_low=True)
    states = collect([a, b], who)

    def linear(key, values):
        return (1.0 - t) * values[0] + t * values[1]

    def spherical(key, values):
        return slerp_arrays(values[0], values[1], t)

    return merge_entries(states, spherical, linear)


def slerp_arrays(a, b, t: float):
    """SLERP of two arrays of one shape (see :func:`slerp`), computed on their flattened values."""
    xp = backend.xp
    norm_a, norm_b = float(xp.linalg.norm(a)), float(xp.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return (1.0 - t) * a + t * b
    cosine = float(xp.sum((a / norm_a) * (b / norm_b)))
    if abs(cosine) > COLINEAR:
        return (1.0 - t) * a + t * b
    omega = float(np.arccos(np.clip(cosine, -1.0, 1.0)))
    sin_omega = np.sin(omega)
    return (np.sin((1.0 - t) * omega) / sin_omega) * a + (np.sin(t * omega) / sin_omega) * b
