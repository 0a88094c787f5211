"""Checks of integer id inputs (the user and item ids of recommenders, batches of token ids),
with errors naming the model."""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError


def checked_ids(ids, count: int, what: str, who: str):
    """``ids`` as a 1-D integer array in [0, count); errors name ``who`` and ``what`` (e.g.
    'user')."""
    data = backend.xp.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{who}: {what} ids must be integers, got dtype {data.dtype}; cast them with .astype(int)")
    if data.ndim != 1:
        raise ShapeError(f"{who}: expected a 1-D array of {what} ids (batch,), got shape {tuple(data.shape)}")
    if data.size:
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= count:
            raise ValueError(f"{who}: {what} id {low if low < 0 else high} is out of range; {what} ids must be "
                             f"in [0, {count})")
    return data


def checked_pairs(users, items, n_users: int, n_items: int, who: str):
    """(users, items) as 1-D integer arrays of one length, in range."""
    users = checked_ids(users, n_users, "user", who)
    items = checked_ids(items, n_items, "item", who)
    if users.shape != items.shape:
        raise ShapeError(f"{who}: users and items must pair up one to one, got {users.shape[0]} users and "
                         f"{items.shape[0]} items")
    return users, items


def token_ids(ids, who: str) -> np.ndarray:
    """Token ids (an array or a Tensor) as a NumPy integer array of shape (batch, time)."""
    ids = np.asarray(backend.to_numpy(ids.data) if isinstance(ids, Tensor) else ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ShapeError(f"{who}: expected integer token ids of shape (batch, time), got {ids.dtype} ids of shape "
                         f"{ids.shape}")
    return ids
