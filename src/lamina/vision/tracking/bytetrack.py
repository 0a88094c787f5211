"""ByteTrack (Zhang et al. 2022): associate every detection box, low-scored ones included.

Detections scoring above ``track_thresh`` are *high*, those in (0.1, ``track_thresh``) *low*,
the rest are dropped. Each frame, after the Kalman filters (``"bytetrack"`` variant) predict:

1. confirmed and lost tracks are matched to the high detections on the cost
   1 - IoU * score (pairs costing more than ``match_thresh`` refused);
2. the tracks still unmatched that were being tracked are matched to the low detections on
   1 - IoU (up to 0.5); those left over become *lost*;
3. unconfirmed tracks (started in the previous frame) are matched to the high detections left on
   1 - IoU * score (up to 0.7); an unmatched one is removed;
4. each high detection still left and scoring at least ``track_thresh + 0.1`` starts an
   unconfirmed track (confirmed at once in the first frame);
5. tracks lost for more than ``track_buffer * frame_rate / 30`` frames are removed.

A lost track matched again keeps its id. Tracked and lost tracks overlapping with 1 - IoU < 0.15
are duplicates: the younger one is dropped. Confirmed, tracked tracks are reported.
"""

from __future__ import annotations

import numpy as np

from lamina.vision.boxes import iou
from lamina.vision.tracking.assignment import limited_assignment
from lamina.vision.tracking.kalman import KalmanBoxFilter
from lamina.vision.tracking.sort import checked_detections

__all__ = ["ByteTrack", "TrackState"]

LOWEST_SCORE = 0.1
REMOVED_KEPT = 1000          # removed tracks remembered, for inspection only


class TrackState:
    NEW, TRACKED, LOST, REMOVED = 0, 1, 2, 3


class _ByteTrack:
    """One track: its filter, state, id and the frames it started and was last seen in."""

    def __init__(self, box: np.ndarray, score: float):
        self.detected_box, self.score = box, score
        self.filter: KalmanBoxFilter | None = None
        self.id = 0
        self.state = TrackState.NEW
        self.is_activated = False
        self.frame_id = self.start_frame = 0
        self.tracklet_len = 0

    @property
    def box(self) -> np.ndarray:
        return self.detected_box if self.filter is None else self.filter.box

    def activate(self, track_id: int, frame_id: int) -> None:
        self.id = track_id
        self.filter = KalmanBoxFilter(self.detected_box, variant="bytetrack")
        self.state = TrackState.TRACKED
        self.is_activated = frame_id == 1
        self.frame_id = self.start_frame = frame_id

    def predict(self) -> None:
        if self.state != TrackState.TRACKED:
            self.filter.mean[7] = 0.0                       # a track not seen keeps its height
        self.filter.predict()

    def update(self, detection: _ByteTrack, frame_id: int, reactivate: bool) -> None:
        self.filter.update(detection.detected_box)
        self.tracklet_len = 0 if reactivate else self.tracklet_len + 1
        self.state = TrackState.TRACKED
        self.is_activated = True
        self.frame_id = frame_id
        self.score = detection.score


def _ordered(boxes: np.ndarray) -> np.ndarray:
    """Corners with x1 <= x2 and y1 <= y2 (a filter's prediction can turn a box inside out)."""
    return np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)


def _iou_cost(tracks: list[_ByteTrack], detections: list[_ByteTrack], with_scores: bool) -> np.ndarray:
    if not tracks or not detections:
        return np.empty((len(tracks), len(detections)))
    overlap = iou(_ordered(np.array([t.box for t in tracks])), _ordered(np.array([d.box for d in detections])))
    if with_scores:
        overlap = overlap * np.array([d.score for d in detections])[None, :]
    return 1.0 - overlap


def _joined(first: list[_ByteTrack], second: list[_ByteTrack]) -> list[_ByteTrack]:
    seen = {t.id for t in first}
    return first + [t for t in second if t.id not in seen]


def _without(tracks: list[_ByteTrack], removed: list[_ByteTrack]) -> list[_ByteTrack]:
    ids = {t.id for t in removed}
    return [t for t in tracks if t.id not in ids]


class ByteTrack:
    """The ByteTrack tracker; call :meth:`update` once per frame, in order (see the module docstring)."""

    def __init__(self, track_thresh: float = 0.5, match_thresh: float = 0.8, track_buffer: int = 30,
                 frame_rate: int = 30):
        if not 0.0 <= track_thresh <= 1.0 or not 0.0 <= match_thresh <= 1.0:
            raise ValueError(f"ByteTrack: track_thresh and match_thresh must lie in [0, 1], "
                             f"got {track_thresh!r} and {match_thresh!r}")
        if track_buffer < 0 or frame_rate <= 0:
            raise ValueError(f"ByteTrack: track_buffer must be >= 0 and frame_rate > 0, "
                             f"got {track_buffer!r} and {frame_rate!r}")
        self.track_thresh, self.match_thresh = float(track_thresh), float(match_thresh)
        self.det_thresh = self.track_thresh + 0.1
        self.max_time_lost = int(frame_rate / 30.0 * track_buffer)
        self.tracked: list[_ByteTrack] = []
        self.lost: list[_ByteTrack] = []
        self.removed: list[_ByteTrack] = []
        self.frame_id = 0
        self._next_id = 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def update(self, detections=None) -> np.ndarray:
        """One frame's detections ``(N, 5)`` [x1, y1, x2, y2, score] -> reported tracks ``(M, 5)``
        [x1, y1, x2, y2, id]."""
        detections = checked_detections(detections, "ByteTrack.update")
        self.frame_id += 1
        frame = self.frame_id
        scores = detections[:, 4]
        high = [_ByteTrack(d[:4], d[4]) for d in detections[scores > self.track_thresh]]
        low = [_ByteTrack(d[:4], d[4]) for d in detections[(scores > LOWEST_SCORE) & (scores < self.track_thresh)]]
        activated, refound, newly_lost, newly_removed = [], [], [], []

        unconfirmed = [t for t in self.tracked if not t.is_activated]
        confirmed = [t for t in self.tracked if t.is_activated]
        pool = _joined(confirmed, self.lost)
        for track in pool:
            track.predict()

        def apply(tracks, found, matches):
            for t, d in matches:
                track = tracks[t]
                reactivate = track.state != TrackState.TRACKED
                track.update(found[d], frame, reactivate)
                (refound if reactivate else activated).append(track)

        matches, left_tracks, left_high = limited_assignment(_iou_cost(pool, high, True), self.match_thresh)
        apply(pool, high, matches)
        still_tracked = [pool[i] for i in left_tracks if pool[i].state == TrackState.TRACKED]
        matches, left_tracks, _ = limited_assignment(_iou_cost(still_tracked, low, False), 0.5)
        apply(still_tracked, low, matches)
        for i in left_tracks:
            track = still_tracked[i]
            if track.state != TrackState.LOST:
                track.state = TrackState.LOST
                newly_lost.append(track)

        high = [high[i] for i in left_high]
        matches, left_unconfirmed, left_high = limited_assignment(_iou_cost(unconfirmed, high, True), 0.7)
        for t, d in matches:
            unconfirmed[t].update(high[d], frame, reactivate=False)
            activated.append(unconfirmed[t])
        for i in left_unconfirmed:
            unconfirmed[i].state = TrackState.REMOVED
            newly_removed.append(unconfirmed[i])

        for i in left_high:
            if high[i].score >= self.det_thresh:
                high[i].activate(self._new_id(), frame)
                activated.append(high[i])
        for track in self.lost:
            if frame - track.frame_id > self.max_time_lost:
                track.state = TrackState.REMOVED
                newly_removed.append(track)

        self.tracked = [t for t in self.tracked if t.state == TrackState.TRACKED]
        self.tracked = _joined(_joined(self.tracked, activated), refound)
        self.lost = _without(self.lost, self.tracked) + newly_lost
        self.lost = _without(self.lost, newly_removed)
        self.removed = (self.removed + newly_removed)[-REMOVED_KEPT:]
        self._drop_duplicates()
        reported = [np.append(t.box, t.id) for t in self.tracked if t.is_activated]
        return np.array(reported).reshape(-1, 5)

    def _drop_duplicates(self) -> None:
        """Of a tracked and a lost track overlapping (1 - IoU < 0.15), drop the one followed for less time."""
        cost = _iou_cost(self.tracked, self.lost, False)
        drop_tracked, drop_lost = set(), set()
        for p, q in zip(*np.nonzero(cost < 0.15)):
            tracked_for = self.tracked[p].frame_id - self.tracked[p].start_frame
            lost_for = self.lost[q].frame_id - self.lost[q].start_frame
            if tracked_for > lost_for:
                drop_lost.add(q)
            else:
                drop_tracked.add(p)
        self.tracked = [t for i, t in enumerate(self.tracked) if i not in drop_tracked]
        self.lost = [t for i, t in enumerate(self.lost) if i not in drop_lost]
