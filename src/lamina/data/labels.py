"""Label encodings."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["one_hot"]


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """One-hot encode integer class labels: shape ``labels.shape + (num_classes,)``.

    ``num_classes`` defaults to ``max(labels) + 1``. Labels must be integers (integral
    floats are accepted) in ``[0, num_classes)``; anything else raises ``ValueError``
    naming the offending values.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        raise ValueError("one_hot: labels must be integers; got a boolean array")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating):
            raise ValueError(f"one_hot: labels must be integers; got dtype {labels.dtype}")
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if bad.size:
            raise ValueError(f"one_hot: labels must be integers; got non-integral values {_show(bad)}")
        labels = labels.astype(np.int64)
    if num_classes is None:
        if labels.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from empty labels; pass num_classes")
        num_classes = int(labels.max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a positive integer; got {num_classes!r}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"one_hot: labels must lie in [0, {num_classes}); got out-of-range values {_show(bad)}"
        )
    out = np.zeros(labels.shape + (int(num_classes),), dtype=dtype)
    np.put_along_axis(out, labels[..., None].astype(np.intp), 1, axis=-1)
    return out


def _show(values: np.ndarray, limit: int = 10) -> str:
    unique = np.unique(values)
    shown = ", ".join(str(v) for v in unique[:limit].tolist())
    more = f", ... ({len(unique)} distinct)" if len(unique) > limit else ""
    return f"[{shown}{more}]"
