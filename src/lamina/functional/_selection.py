"""Which of several equal values a selection reports, as PyTorch's CPU kernels do.

``kthvalue`` and ``mode`` return the position of the value they select; where the value
occurs more than once, the position depends on the order in which the kernel's selection or
sort visits the elements. To return the same positions, the two orders are replayed here, on
one line at a time, in Python (only for lines where the value repeats, so the common case
costs nothing):

- :func:`quickselect_position`: a quickselect with a median-of-three pivot, NaN counting as
  the largest value (``kthvalue``);
- :func:`introsort_order`: an introsort (median-of-three quicksort down to runs of 16, then
  one insertion sort over the whole line) comparing values only (``mode``);
- :func:`equal_selection_position`: the introselect of the same family, on a line of values
  that all compare equal (``nanmedian`` of a line of NaN alone).
"""

from __future__ import annotations

import math

INSERTION_RUN = 16
"""The introsort leaves runs of at most this many values to its final insertion sort."""


def _greater(x: float, y: float) -> bool:
    """x > y with NaN above every number."""
    return (x != x and y == y) or x > y


def quickselect_position(values: list, k: int) -> int:
    """The original position of the element that a quickselect for the k-th smallest (from
    0) of ``values`` leaves at place k."""
    vals, pos = list(values), list(range(len(values)))

    def swap(i: int, j: int) -> None:
        vals[i], vals[j] = vals[j], vals[i]
        pos[i], pos[j] = pos[j], pos[i]

    low, high = 0, len(vals) - 1
    while high > low:
        if high == low + 1:
            if _greater(vals[low], vals[high]):
                swap(low, high)
            break
        swap(low + (high - low) // 2, low + 1)       # the middle, low and high sorted: pivot at low
        if _greater(vals[low + 1], vals[high]):
            swap(low + 1, high)
        if _greater(vals[low], vals[high]):
            swap(low, high)
        if _greater(vals[low + 1], vals[low]):
            swap(low + 1, low)
        i, j, pivot = low + 1, high, vals[low]
        while True:
            i += 1
            while _greater(pivot, vals[i]):
                i += 1
            j -= 1
            while _greater(vals[j], pivot):
                j -= 1
            if j < i:
                break
            swap(i, j)
        swap(low, j)
        if j <= k:
            low = i
        if j >= k:
            high = j - 1
    return pos[k]


def _median_of_three_partition(order: list, first: int, last: int, less) -> int:
    """Move the median of order[first + 1], the middle and order[last - 1] to ``first`` as the
    pivot and partition the rest around it; returns where the right part starts."""
    mid, a, c = first + (last - first) // 2, first + 1, last - 1
    if less(order[a], order[mid]):
        pick = mid if less(order[mid], order[c]) else (c if less(order[a], order[c]) else a)
    else:
        pick = a if less(order[a], order[c]) else (c if less(order[mid], order[c]) else mid)
    order[first], order[pick] = order[pick], order[first]
    lo, hi, pivot = first + 1, last, order[first]
    while True:
        while less(order[lo], pivot):
            lo += 1
        hi -= 1
        while less(pivot, order[hi]):
            hi -= 1
        if lo >= hi:
            return lo
        order[lo], order[hi] = order[hi], order[lo]
        lo += 1


def _insertion_sort(order: list, first: int, last: int, less) -> None:
    for i in range(first + 1, last):
        moving, j = order[i], i
        while j > first and less(moving, order[j - 1]):
            order[j] = order[j - 1]
            j -= 1
        order[j] = moving


def equal_selection_position(n: int, nth: int = 0) -> int:
    """The original position an introselect for place ``nth`` leaves there, on n values
    that all compare equal."""
    order = list(range(n))

    def never(i: int, j: int) -> bool:
        return False

    first, last, depth = 0, n, 2 * int(math.log2(n)) if n else 0
    while last - first > 3 and depth > 0:
        depth -= 1
        cut = _median_of_three_partition(order, first, last, never)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(order, first, last, never)
    return order[nth]


def introsort_order(values: list) -> list[int]:
    """The order (original positions) in which an introsort comparing values with < leaves
    ``values``; equal values may come out of their original order."""
    order = list(range(len(values)))

    def less(i: int, j: int) -> bool:
        return values[i] < values[j]

    def quicksort(first: int, last: int, depth: int) -> None:
        while last - first > INSERTION_RUN:
            if depth == 0:                  # never reached by the lines mode meets in practice
                order[first:last] = sorted(order[first:last], key=lambda i: values[i])
                return
            depth -= 1
            cut = _median_of_three_partition(order, first, last, less)
            quicksort(cut, last, depth)
            last = cut

    n = len(order)
    if n > 1:
        quicksort(0, n, 2 * int(math.log2(n)))
        _insertion_sort(order, 0, n, less)
    return order
