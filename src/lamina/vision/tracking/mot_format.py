"""The MOTChallenge text format: one comma-separated line per box,

    frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z

(ground-truth files put ``conf/flag, class, visibility`` after the box instead). Frames count
from 1; detections carry id -1; unused fields are -1. Rows are read into a float64 array
``(N, C)`` with 6 <= C <= 10 columns, the same count on every line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina.errors import ShapeError
from lamina.io.atomic import write_bytes_atomic

__all__ = ["checked_mot_rows", "read_mot", "track_sequence", "tracks_to_mot", "write_mot"]

MIN_COLUMNS, MAX_COLUMNS = 6, 10


def checked_mot_rows(rows, fn: str) -> np.ndarray:
    """``rows`` as a float64 ``(N, C)`` array of MOTChallenge rows, 6 <= C <= 10, finite, with
    whole frame numbers >= 1 and widths and heights >= 0."""
    array = np.asarray(rows, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, array.shape[-1] if array.ndim == 2 and array.shape[-1] else MIN_COLUMNS)
    if array.ndim != 2 or not MIN_COLUMNS <= array.shape[1] <= MAX_COLUMNS:
        raise ShapeError(f"{fn}: expected MOTChallenge rows (N, C) with {MIN_COLUMNS} <= C <= {MAX_COLUMNS} "
                         f"columns (frame, id, x, y, w, h, ...), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{fn}: MOTChallenge rows must be finite")
    frames = array[:, 0]
    bad_frames = (frames < 1) | (frames != np.round(frames))
    if bad_frames.any():
        raise ValueError(f"{fn}: frame numbers must be whole numbers >= 1, got {frames[bad_frames][0]:g} "
                         f"in row {int(np.argmax(bad_frames))}")
    negative = (array[:, 4] < 0) | (array[:, 5] < 0)
    if negative.any():
        row = int(np.argmax(negative))
        raise ValueError(f"{fn}: box widths and heights must be >= 0, got w={array[row, 4]:g}, "
                         f"h={array[row, 5]:g} in row {row}")
    return array


def _field(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_mot(path: str | os.PathLike, rows) -> Path:
    """Write MOTChallenge rows ``(N, C)`` to ``path`` atomically (whole numbers without a decimal
    point, others in their shortest exact form, so :func:`read_mot` gives the same array back)."""
    array = checked_mot_rows(rows, "write_mot")
    text = "".join(",".join(_field(v) for v in row) + "\n" for row in array)
    write_bytes_atomic(path, text.encode())
    return Path(path)


def read_mot(path: str | os.PathLike) -> np.ndarray:
    """Read a MOTChallenge text file into a float64 array ``(N, C)`` (blank lines skipped)."""
    rows, columns = [], None
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if columns is None:
            columns = len(fields)
        if not MIN_COLUMNS <= len(fields) <= MAX_COLUMNS:
            raise ShapeError(f"read_mot: {path}, line {number}: expected {MIN_COLUMNS} to {MAX_COLUMNS} "
                             f"comma-separated fields (frame, id, x, y, w, h, ...), got {len(fields)}: {line!r}")
        if len(fields) != columns:
            raise ShapeError(f"read_mot: {path}, line {number}: expected {columns} fields like the first line, "
                             f"got {len(fields)}: {line!r}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise ValueError(f"read_mot: {path}, line {number}: fields must be numbers, got {line!r}") from None
    if not rows:
        return np.empty((0, MAX_COLUMNS))
    return checked_mot_rows(rows, f"read_mot ({path})")


def tracks_to_mot(frame: int, tracks) -> np.ndarray:
    """A tracker's output ``(M, 5)`` [x1, y1, x2, y2, id] in frame ``frame`` as MOTChallenge rows ``(M, 10)``
    (conf 1, x, y, z -1)."""
    array = np.asarray(tracks, dtype=np.float64).reshape(-1, 5)
    rows = np.full((len(array), MAX_COLUMNS), -1.0)
    rows[:, 0], rows[:, 1] = frame, array[:, 4]
    rows[:, 2:4], rows[:, 4:6] = array[:, :2], array[:, 2:4] - array[:, :2]
    rows[:, 6] = 1.0
    return rows


def track_sequence(tracker, detections, num_frames: int | None = None, min_score: float | None = None) -> np.ndarray:
    """Run ``tracker`` (anything with ``update((N, 5)) -> (M, 5)``, e.g. SORT or ByteTrack) over
    MOTChallenge detection rows (frames 1 to ``num_frames``, by default the last frame with a
    detection), dropping detections scoring below ``min_score``; returns its tracks as rows ``(K, 10)``."""
    rows = checked_mot_rows(detections, "track_sequence")
    if rows.shape[1] < 7:
        raise ShapeError(f"track_sequence: detection rows need a 7th column of scores, got {rows.shape[1]} columns")
    if min_score is not None:
        rows = rows[rows[:, 6] >= min_score]
    last = int(rows[:, 0].max(initial=0)) if num_frames is None else int(num_frames)
    found = []
    for frame in range(1, last + 1):
        current = rows[rows[:, 0] == frame]
        boxes = np.concatenate([current[:, 2:4], current[:, 2:4] + current[:, 4:6], current[:, 6:7]], axis=1)
        found.append(tracks_to_mot(frame, tracker.update(boxes)))
    return np.concatenate(found) if found else np.empty((0, MAX_COLUMNS))
