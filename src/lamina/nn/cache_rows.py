"""The rows a cache keeps when it is reordered.

Beam search continues several hypotheses as the rows of one batch; after each step the
survivors are extensions of some of the previous rows (their parents), a row possibly
extended several times. A layer that keeps something per row between calls (the keys and
values of an attention cache, the carried states of a recurrent layer) then keeps the rows
of the parents, in the order of the survivors: row i after is row ``rows[i]`` before.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.nn.module import Module

__all__ = ["cache_rows", "carried_state_rows"]


def cache_rows(layer: Module, rows, batch: int | None, method: str = "reorder_cache"):
    """``rows`` as an index array (R,) of the backend into a cache of ``batch`` rows (None:
    the layer holds no rows yet, only the form is checked). Rows may repeat or leave rows
    out; anything else (not 1-D integers, empty, out of range) raises a ValueError naming
    ``layer`` and its ``method``."""
    index = numpy.asarray(backend.to_numpy(rows))
    who = f"{layer._label()}: {method}"
    if index.ndim != 1 or index.size == 0 or index.dtype.kind not in "iu":
        raise ValueError(f"{who} takes a non-empty 1-D array of integer row indices, got {index.dtype} "
                         f"of shape {index.shape}")
    if batch is not None and (index.min() < 0 or index.max() >= batch):
        raise ValueError(f"{who}: row indices must lie in [0, {batch}) for a cache of {batch} rows, got "
                         f"{index.min()} .. {index.max()}")
    return backend.xp.asarray(index)


def carried_state_rows(layer: Module, rows, carried):
    """``rows`` as an index array into the states a stateful ``layer`` carries (a sequence of
    arrays or tensors, batch first), for its ``reorder_states``; None while it carries none
    yet (then only the form of ``rows`` is checked). A layer that is not stateful is refused
    with a ValueError."""
    if not layer.stateful:
        raise ValueError(f"{layer._label()}: reorder_states needs a stateful layer (stateful=True, or within "
                         "lamina.text.carrying_states); this one carries no states from call to call")
    return cache_rows(layer, rows, None if carried is None else carried[0].shape[0], "reorder_states")
