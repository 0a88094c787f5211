"""Merges through task vectors tau_k = theta_k - theta_base, the change fine-tuning made to a
shared base: task arithmetic (Ilharco et al. 2023), TIES merging (Yadav et al. 2023) and
DARE (Yu et al. 2024) combined with either."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.merging.states import (
    ModelLike,
    as_float64,
    check_unit_interval,
    collect,
    is_float,
    mean_of,
    merge_entries,
    per_model,
    state_of,
)
from lamina.nn.module import Module

__all__ = ["dare", "drop_and_rescale", "elect_and_disjoint_mean", "task_arithmetic", "task_vectors",
           "ties_merge", "trim_to_top"]

DARE_COMBINES = ("linear", "ties")


def _as_list(finetuned) -> list:
    return [finetuned] if isinstance(finetuned, (Module, Mapping)) else list(finetuned)


def task_vectors(base: ModelLike, finetuned: ModelLike | Sequence[ModelLike]) -> list[OrderedDict]:
    """tau_k = theta_k - theta_base for each fine-tuned model (one model or a list; a list is
    returned either way): a state dict of the float entries (buffers included), in float64."""
    who = "task_vectors"
    finetuned = _as_list(finetuned)
    states = collect([base, *finetuned], who, at_least=2)
    base_state = states.dicts[0]
    return [OrderedDict((key, as_float64(state[key]) - as_float64(value))
                        for key, value in base_state.items() if is_float(value))
            for state in states.dicts[1:]]


def task_arithmetic(base: ModelLike, vectors: Sequence[Mapping], scaling: float | Sequence[float] = 1.0
                    ) -> OrderedDict:
    """theta = theta_base + sum_k lambda_k tau_k: the base moved along the task vectors
    ``vectors`` (from :func:`task_vectors`) by ``scaling`` lambda (one number, or one per
    vector). A negative lambda subtracts a task ("forgetting" it). Buffers known from a Module
    base are not scaled: they become theta_base + mean_k tau_k, the fine-tuned models' mean.
    Non-float entries are copied from the base."""
    who = "task_arithmetic"
    base_state, buffers = state_of(base, who)
    vectors = _as_list(vectors)
    if not vectors:
        raise ValueError(f"{who}: needs at least one task vector")
    scales = per_model(scaling, len(vectors), who, "scaling")
    float_keys = [key for key, value in base_state.items() if is_float(value)]
    for index, vector in enumerate(vectors):
        _check_task_vector(vector, base_state, float_keys, who, index)
    merged = OrderedDict()
    for key, value in base_state.items():
        if not is_float(value):
            merged[key] = value.copy()
            continue
        steps = [as_float64(vector[key]) for vector in vectors]
        if key in buffers:
            move = mean_of(steps)
        else:
            move = sum(scale * step for scale, step in zip(scales, steps))
        merged[key] = backend.xp.asarray(as_float64(value) + move, dtype=value.dtype)
    return merged


def _check_task_vector(vector: Mapping, base_state: dict, float_keys: list[str], who: str, index: int) -> None:
    if not isinstance(vector, Mapping):
        raise TypeError(f"{who}: task vector {index} must be a state dict (from task_vectors), "
                        f"got {type(vector).__name__}")
    missing = [key for key in float_keys if key not in vector]
    extra = [key for key in vector if key not in float_keys]
    if missing or extra:
        raise KeyError(f"{who}: task vector {index} does not match the base's float entries: missing keys "
                       f"{missing[:5]}, unexpected keys {extra[:5]}")
    for key in float_keys:
        shape = tuple(np.shape(vector[key]))
        if shape != tuple(base_state[key].shape):
            raise ShapeError(f"{who}: {key!r} has shape {shape} in task vector {index} but "
                             f"{tuple(base_state[key].shape)} in the base")


def trim_to_top(delta, density: float):
    """TIES' trim step: ``delta`` with all but its k = ceil(density * size) largest magnitudes
    set to 0 (ties in magnitude keep the earlier entry)."""
    xp = backend.xp
    flat = delta.reshape(-1)
    keep = math.ceil(density * flat.size - 1e-9)
    if keep >= flat.size:
        return delta.copy()
    largest = xp.argsort(-xp.abs(flat), kind="stable")[:keep]
    trimmed = xp.zeros_like(flat)
    trimmed[largest] = flat[largest]
    return trimmed.reshape(delta.shape)


def elect_and_disjoint_mean(deltas: list):
    """TIES' elect and merge steps on K arrays tau_k of one shape: the elected sign
    gamma = sign(sum_k tau_k) (the sign of the larger total mass), then per entry the mean of
    the tau_k that are non-zero and of sign gamma (0 where none is)."""
    xp = backend.xp
    stacked = xp.stack(deltas)
    elected = xp.sign(stacked.sum(axis=0))
    agree = (xp.sign(stacked) == elected) & (stacked != 0)
    count = agree.sum(axis=0)
    return xp.where(agree, stacked, 0.0).sum(axis=0) / xp.maximum(count, 1)


def ties_merge(base: ModelLike, finetuned: Sequence[ModelLike], density: float = 0.2, scaling: float = 1.0
               ) -> OrderedDict:
    """TIES merging: theta = theta_base + lambda tau_m with tau_m built from the task vectors
    tau_k = theta_k - theta_base of each weight tensor in three steps:

    1. trim: keep the top ``density`` fraction of each tau_k's magnitudes (per tensor), zero the rest;
    2. elect: gamma = sign(sum_k tau_k), the sign with the larger total mass;
    3. disjoint merge: tau_m = the mean of the trimmed tau_k whose sign is gamma (zeros left out).

    ``scaling`` is lambda. Buffers become the fine-tuned models' mean; non-float entries are
    copied from the base."""
    who = "ties_merge"
    density = check_unit_interval(density, who, "density")
    states = collect([base, *_as_list(finetuned)], who, at_least=2)

    def merge_weight(key, values):
        trimmed = [trim_to_top(value - values[0], density) for value in values[1:]]
        return values[0] + float(scaling) * elect_and_disjoint_mean(trimmed)

    return merge_entries(states, merge_weight, lambda key, values: mean_of(values, start=1))


def drop_and_rescale(vector: Mapping, drop_rate: float, seed: int | np.random.Generator | None = 0) -> OrderedDict:
    """DARE's step on one task vector: each entry dropped (set to 0) with probability p =
    ``drop_rate`` and the survivors rescaled by 1 / (1 - p), so its expected value is unchanged.

    The masks are drawn key after key in the vector's order, ``keep = rng.random(shape) >= p``
    with ``rng = numpy.random.default_rng(seed)`` (or the Generator given)."""
    who = "drop_and_rescale"
    drop_rate = check_unit_interval(drop_rate, who, "drop_rate", closed_low=True, closed_high=False)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    dropped = OrderedDict()
    for key, value in vector.items():
        value = as_float64(value)
        keep = backend.xp.asarray(rng.random(value.shape) >= drop_rate)
        dropped[key] = backend.xp.where(keep, value / (1.0 - drop_rate), 0.0)
    return dropped


def dare(base: ModelLike, finetuned: Sequence[ModelLike], drop_rate: float = 0.9, seed: int = 0,
         combine: str = "linear", scaling: float | Sequence[float] = 1.0) -> OrderedDict:
    """DARE: each task vector's weight entries go through :func:`drop_and_rescale` (one
    generator seeded with ``seed``, model after model), then are combined

    * ``combine="linear"`` (mergekit's dare_linear): theta_base + sum_k lambda_k tau~_k, task
      arithmetic with ``scaling`` lambda (one number or one per model);
    * ``combine="ties"`` (dare_ties): TIES' elect and disjoint-mean steps on the tau~_k (no
      magnitude trim), theta_base + lambda tau_m.

    Buffers become the fine-tuned models' mean; non-float entries are copied from the base."""
    who = "dare"
    if combine not in DARE_COMBINES:
        raise ValueError(f"{who}: combine must be one of {DARE_COMBINES}, got {combine!r}")
    finetuned = _as_list(finetuned)
    states = collect([base, *finetuned], who, at_least=2)
    scales = per_model(scaling, len(finetuned), who, "scaling")
    if combine == "ties" and len(set(scales)) > 1:
        raise ValueError(f"{who}: combine='ties' takes one scaling for the merged vector, got {scales}")
    weight_keys = [key for key, value in states.dicts[0].items() if is_float(value) and key not in states.buffers]
    rng = np.random.default_rng(seed)
    dropped = [drop_and_rescale({key: as_float64(state[key]) - as_float64(states.dicts[0][key])
                                 for key in weight_keys}, drop_rate, rng)
               for state in states.dicts[1:]]

    def merge_weight(key, values):
        steps = [vector[key] for vector in dropped]
        if combine == "linear":
            return values[0] + sum(scale * step for scale, step in zip(scales, steps))
        return values[0] + scales[0] * elect_and_disjoint_mean(steps)

    return merge_entries(states, merge_weight, lambda key, values: mean_of(values, start=1))
