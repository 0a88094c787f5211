"""The sampled Fisher of K-FAC (:meth:`lamina.optim.KFAC.backward_fisher`): the gradients
seeding the backward passes from which G is recorded when it comes from targets drawn from the
model's predictive distribution instead of the training labels.

With the output z of a sample (logits of a softmax, or the mean of a unit-variance normal) the
loss of a target y is l = -log p_y (categorical, p = softmax(z)) or 0.5 |z - y|^2 (gaussian),
whose gradients at z are p - e_y and z - y. ``'mc'`` draws one y per sample; ``'true'`` takes
the exact expectation over y with one pass per class c (or output), seeded so that the sum of
g g^T over the passes is E_y[g g^T]::

    categorical:  mc  p - e_y,  y ~ p          true  sqrt(p_c) (p - e_c),  c = 1..C
    gaussian:     mc  -eps,  eps ~ N(0, I)     true  e_c,                  c = 1..C

Each pass comes with its share of one batch in G's average: 1 for ``'mc'``, 1/C for each of the
C passes of ``'true'``.
"""

from __future__ import annotations

from typing import Any

import numpy

from lamina import backend

__all__ = ["FISHERS", "LIKELIHOODS", "fisher_seed_gradients"]

FISHERS = ("empirical", "true", "mc")
LIKELIHOODS = ("categorical", "gaussian")


def fisher_seed_gradients(output, fisher: str, likelihood: str, seed: int | None = None) -> list[tuple[Any, float]]:
    """(seed gradient, share) of each backward pass for the model's ``output`` array, the
    seeds as (M, C) rows over the output's last axis (module docstring); ``fisher`` is
    ``'mc'`` or ``'true'``, ``seed`` seeds the draws."""
    xp = backend.xp
    rows = output.reshape(-1, output.shape[-1])
    if likelihood == "categorical":
        shifted = rows - rows.max(axis=1, keepdims=True)
        probs = xp.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
    rng = numpy.random.default_rng(seed)
    passes: list[tuple[Any, float]] = []
    if fisher == "mc":
        if likelihood == "categorical":
            draws = (rng.random((rows.shape[0], 1)) > numpy.cumsum(backend.to_numpy(probs), axis=1)).sum(axis=1)
            draws = numpy.minimum(draws, rows.shape[1] - 1)
            onehot = xp.asarray(numpy.eye(rows.shape[1])[draws], dtype=output.dtype)
            passes.append((probs - onehot, 1.0))
        else:
            passes.append((-xp.asarray(rng.standard_normal(rows.shape), dtype=output.dtype), 1.0))
    else:
        classes = rows.shape[1]
        eye = xp.eye(classes, dtype=output.dtype)
        for c in range(classes):
            if likelihood == "categorical":
                passes.append((xp.sqrt(probs[:, c:c + 1]) * (probs - eye[c]), 1.0 / classes))
            else:
                passes.append((xp.broadcast_to(eye[c], rows.shape), 1.0 / classes))
    return passes
