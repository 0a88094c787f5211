"""SORT, Simple Online and Realtime Tracking (Bewley et al. 2016).

Each frame: every track's Kalman filter (``"sort"`` variant) predicts its box; detections and
predictions are matched by the Hungarian algorithm on IoU (pairs with IoU below ``iou_threshold``
are refused; when the pairs above the threshold already form a one-to-one matching it is taken as
is); matched tracks are updated, each unmatched detection starts a track, and a track unmatched for
more than ``max_age`` frames is deleted. A track is reported in a frame only if it was matched in
it and has been matched in ``min_hits`` frames in a row, or while the sequence is still in its
first ``min_hits`` frames. Ids count from 1 in order of creation.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError
from lamina.vision.boxes import iou
from lamina.vision.tracking.kalman import KalmanBoxFilter

__all__ = ["SORT", "checked_detections"]


def checked_detections(detections, fn: str) -> np.ndarray:
    """``detections`` as a float64 ``(N, 5)`` array of [x1, y1, x2, y2, score] (None or [] is no detection)."""
    if detections is None:
        return np.empty((0, 5))
    array = np.asarray(detections, dtype=np.float64)
    if array.size == 0:
        return np.empty((0, 5))
    if array.ndim != 2 or array.shape[1] != 5:
        raise ShapeError(f"{fn}: expected detections of shape (N, 5) as [x1, y1, x2, y2, score], got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{fn}: detections must be finite")
    bad = (array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])
    if bad.any():
        raise ValueError(f"{fn}: detection boxes need x1 < x2 and y1 < y2, got {array[bad][0, :4].tolist()} "
                         f"at row {int(np.argmax(bad))}")
    return array


def associate(detection_boxes: np.ndarray, track_boxes: np.ndarray, iou_threshold: float):
    """SORT's association: (matches [detection, track], unmatched detections, unmatched tracks)."""
    if len(track_boxes) == 0 or len(detection_boxes) == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(len(detection_boxes)), np.arange(len(track_boxes))
    overlaps = iou(detection_boxes, track_boxes)
    above = overlaps > iou_threshold
    if above.sum(axis=1).max() <= 1 and above.sum(axis=0).max() <= 1:
        pairs = np.argwhere(above)
    else:
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s
        pairs = np.stack(linear_sum_assignment(-overlaps), axis=1)
    pairs = pairs[overlaps[pairs[:, 0], pairs[:, 1]] >= iou_threshold].astype(np.int64)
    unmatched_detections = np.setdiff1d(np.arange(len(detection_boxes)), pairs[:, 0])
    unmatched_tracks = np.setdiff1d(np.arange(len(track_boxes)), pairs[:, 1])
    return pairs, unmatched_detections, unmatched_tracks


class _SortTrack:
    def __init__(self, box: np.ndarray, track_id: int):
        self.filter = KalmanBoxFilter(box, variant="sort")
        self.id = track_id
        self.hits = 0
        self.hit_streak = 0
        self.age = 0
        self.time_since_update = 0

    def predict(self) -> np.ndarray:
        box = self.filter.predict()
        self.age += 1
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return box

    def update(self, box: np.ndarray) -> None:
        self.time_since_update = 0
        self.hits += 1
        self.hit_streak += 1
        self.filter.update(box)


class SORT:
    """The SORT tracker; call :meth:`update` once per frame, in order (see the module docstring)."""

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3):
        if int(max_age) != max_age or max_age < 0 or int(min_hits) != min_hits or min_hits < 0:
            raise ValueError(f"SORT: max_age and min_hits must be integers >= 0, got {max_age!r} and {min_hits!r}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"SORT: iou_threshold must lie in [0, 1], got {iou_threshold!r}")
        self.max_age, self.min_hits, self.iou_threshold = int(max_age), int(min_hits), float(iou_threshold)
        self.tracks: list[_SortTrack] = []
        self.frame_count = 0
        self._next_id = 1

    def update(self, detections=None) -> np.ndarray:
        """One frame's detections ``(N, 5)`` [x1, y1, x2, y2, score] -> reported tracks ``(M, 5)``
        [x1, y1, x2, y2, id] (call with an empty array on frames without detections)."""
        detections = checked_detections(detections, "SORT.update")
        self.frame_count += 1
        predicted = [track.predict() for track in self.tracks]
        valid = [i for i, box in enumerate(predicted) if np.isfinite(box).all()]
        self.tracks = [self.tracks[i] for i in valid]
        track_boxes = np.array([predicted[i] for i in valid]).reshape(-1, 4)
        matches, unmatched, _ = associate(detections[:, :4], track_boxes, self.iou_threshold)
        for detection, track in matches:
            self.tracks[track].update(detections[detection, :4])
        for detection in unmatched:
            self.tracks.append(_SortTrack(detections[detection, :4], self._next_id))
            self._next_id += 1
        reported = []
        for track in reversed(self.tracks):
            if track.time_since_update < 1 and (track.hit_streak >= self.min_hits
                                                or self.frame_count <= self.min_hits):
                reported.append(np.append(track.filter.box, track.id))
        self.tracks = [track for track in self.tracks if track.time_since_update <= self.max_age]
        return np.array(reported).reshape(-1, 5)
