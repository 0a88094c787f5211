r"""Synthetic label noise: corrupt clean class labels by a known transition matrix.

T[i, j] = P(noisy label j | true label i), rows summing to 1, with noise rate r:

- ``'symmetric'``: T[i, i] = 1 - r, T[i, j] = r / (C - 1) for j != i (uniform flips).
- ``'pairflip'`` (Han et al. 2018): T[i, i] = 1 - r, T[i, (i + 1) mod C] = r.
- ``'asymmetric'``: class i flips with probability r to ``mapping[i]`` (e.g. MNIST's
  2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1); classes absent from the mapping stay clean.
  Without a mapping, every class i maps to (i + 1) mod C (then equal to pairflip).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

__all__ = ["inject_label_noise", "noise_transition_matrix"]

_KINDS = ("symmetric", "asymmetric", "pairflip")


def noise_transition_matrix(num_classes: int, rate: float, kind: str = "symmetric",
                            mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """The (C, C) row-stochastic matrix T of the noise ``kind`` at ``rate`` (see the module)."""
    fn = "noise_transition_matrix"
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"{fn}: num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{fn}: rate must be a number in [0, 1], got {rate!r}")
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be one of {_KINDS}, got {kind!r}")
    c = int(num_classes)
    t = np.eye(c) * (1.0 - rate)
    if kind == "symmetric":
        t += (1.0 - np.eye(c)) * (rate / (c - 1))
        return t
    if kind == "pairflip" or mapping is None:
        mapping = {i: (i + 1) % c for i in range(c)}
    for source, target in mapping.items():
        if not (0 <= source < c and 0 <= target < c) or source == target:
            raise ValueError(f"{fn}: mapping must send a class in 0..{c - 1} to another class in that range, got "
                             f"{source!r} -> {target!r}")
        t[source, target] += rate
    for i in set(range(c)) - set(mapping):
        t[i, i] = 1.0
    return t


def inject_label_noise(labels, rate: float, kind: str = "symmetric", num_classes: int | None = None,
                       seed: int = 0, mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """A copy of the integer ``labels`` with noise of ``kind`` at ``rate``.

    Within each true class i, exactly round((1 - T[i, i]) n_i) samples, chosen at random,
    get a wrong label; each draws it from row i of T off its diagonal. So the fraction of
    changed labels is ``rate`` up to rounding (for ``'asymmetric'``, among the mapped
    classes), and the empirical transition matrix follows T. ``num_classes`` defaults to
    max(labels) + 1.
    """
    fn = "inject_label_noise"
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    c = int(y.max()) + 1 if num_classes is None else num_classes
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{fn}: labels must lie in 0..{c - 1}, got values {y.min()}..{y.max()}")
    t = noise_transition_matrix(c, rate, kind, mapping)
    rng = np.random.default_rng(seed)
    noisy = y.astype(np.int64).copy()
    for i in range(c):
        members = np.flatnonzero(y == i)
        flips = int(round((1.0 - t[i, i]) * members.size))
        if flips == 0:
            continue
        chosen = rng.choice(members, size=flips, replace=False)
        others = t[i].copy()
        others[i] = 0.0
        noisy[chosen] = rng.choice(c, size=flips, p=others / others.sum())
    return noisy
