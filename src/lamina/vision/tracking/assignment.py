"""Minimum-cost assignment with a cost limit, as trackers associate tracks with detections.

A pair (i, j) may be matched only if its cost is at most ``limit``; among such matchings the one
minimising the matched costs plus ``limit / 2`` for every row and every column left unmatched is
chosen (the square extension of the Jonker-Volgenant solver's ``cost_limit``): a pair is worth
matching exactly when its cost is below ``limit``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["limited_assignment"]


def limited_assignment(cost, limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match rows to columns of ``cost`` ``(N, M)``; returns (matches ``(K, 2)`` of [row, column],
    unmatched rows, unmatched columns), each as int64 arrays in increasing order."""
    from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s

    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = cost.shape
    if cost.size == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(rows), np.arange(cols)
    forbidden = 1e6 + 2 * (abs(limit) + np.abs(cost[np.isfinite(cost)]).sum())
    extended = np.full((rows + cols, rows + cols), forbidden)
    extended[:rows, :cols] = np.where(np.isfinite(cost) & (cost <= limit), cost, forbidden)
    extended[range(rows), range(cols, cols + rows)] = limit / 2            # row i left unmatched
    extended[range(rows, rows + cols), range(cols)] = limit / 2            # column j left unmatched
    extended[rows:, cols:] = 0.0
    chosen_rows, chosen_cols = linear_sum_assignment(extended)
    keep = (chosen_rows < rows) & (chosen_cols < cols)
    keep &= extended[chosen_rows, chosen_cols] < forbidden
    matches = np.stack([chosen_rows[keep], chosen_cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(rows), matches[:, 0])
    unmatched_cols = np.setdiff1d(np.arange(cols), matches[:, 1])
    return matches, unmatched_rows, unmatched_cols
