"""Associative recall (Ba et al. 2016, "Using Fast Weights to Attend to the Recent Past"; the
key-value task of the fast weight and DeltaNet papers): a sequence of key-value pairs, then one
of the keys again; the answer is the value that followed it.

    tokens  k_1 v_1 k_2 v_2 .. k_P v_P q        keys distinct ids in [0, num_keys),
                                                values ids in [num_keys, num_keys + num_values)
    target  the value stored under q = k_j       (as an index in [0, num_values))

A model that only counts tokens is right with chance 1 / num_values; remembering the pairs
needs an associative memory that P writes do not blur. With ``distinct_keys=False`` keys may
come back with new values and the answer is the value of the last pair with the query key: the
memory has to overwrite, not add (the delta rule's point).
"""

from __future__ import annotations

import numpy as np

__all__ = ["associative_recall_task"]


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"associative_recall_task: {what} must be a positive int, got {value!r}")
    return int(value)


def associative_recall_task(samples: int, pairs: int = 8, num_keys: int = 16, num_values: int = 16,
                            distinct_keys: bool = True, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` sequences of ``pairs`` key-value pairs and a query key (module docstring):
    tokens (samples, 2 pairs + 1) int64 (keys drawn without repeats from ``num_keys`` ids, or
    with repeats unless ``distinct_keys``; values with repeats from ``num_values`` ids after
    them) and the targets (samples,) int64, the value last stored under the queried key as an
    index in [0, num_values). ``seed``: an int or a NumPy
    ``Generator``; the same call gives the same data."""
    samples, pairs = _positive(samples, "samples"), _positive(pairs, "pairs")
    num_keys, num_values = _positive(num_keys, "num_keys"), _positive(num_values, "num_values")
    if distinct_keys and pairs > num_keys:
        raise ValueError(f"associative_recall_task: {pairs} pairs need as many distinct keys, got num_keys "
                         f"{num_keys}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if distinct_keys:
        keys = np.argsort(rng.random((samples, num_keys)), axis=1)[:, :pairs]
    else:
        keys = rng.integers(0, num_keys, size=(samples, pairs))
    values = rng.integers(0, num_values, size=(samples, pairs))
    asked = rng.integers(0, pairs, size=samples)
    rows = np.arange(samples)
    later = keys == keys[rows, asked][:, None]                 # the pairs with the queried key
    asked = pairs - 1 - np.argmax(later[:, ::-1], axis=1)      # its last one
    tokens = np.empty((samples, 2 * pairs + 1), dtype=np.int64)
    tokens[:, 0:2 * pairs:2] = keys
    tokens[:, 1:2 * pairs:2] = num_keys + values
    tokens[:, -1] = keys[rows, asked]
    return tokens, values[rows, asked].astype(np.int64)
