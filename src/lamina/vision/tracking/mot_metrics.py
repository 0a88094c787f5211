"""Multi-object tracking metrics: CLEAR MOT (Bernardin and Stiefelhagen 2008) and the identity
measures (Ristani et al. 2016), following py-motmetrics' conventions.

Per frame, ground-truth objects and hypotheses (tracker outputs) are paired by the distance
d = 1 - IoU, a pair being possible only if d <= ``max_distance`` (0.5: IoU >= 0.5). A pair matched
in an earlier frame is kept while it is still possible; the others are matched by the Hungarian
algorithm on d. A match of an object to a hypothesis other than its last one is an ID switch.
Unmatched objects are misses (FN), unmatched hypotheses false positives (FP).

    MOTA = 1 - (FN + FP + IDSW) / GT          (GT: object occurrences over all frames)
    MOTP = sum of d over matches / matches    (a distance: lower is better; mean IoU = 1 - MOTP)

A fragmentation is an object's track interrupted (matched, then missed) and later resumed. An
object is mostly tracked if matched in at least 80% of its frames, mostly lost if in under 20%.

IDF1 matches whole trajectories one-to-one so as to minimise IDFP + IDFN (a trajectory may stay
unmatched); IDTP counts the frames where paired trajectories are within ``max_distance``:

    IDP = IDTP / (IDTP + IDFP),   IDR = IDTP / (IDTP + IDFN),   IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from lamina.errors import ShapeError
from lamina.vision.boxes import iou

__all__ = ["MOTAccumulator", "evaluate_mot", "format_mot_summary", "mot_summary"]


def _ids_and_boxes(ids, boxes, fn: str, what: str) -> tuple[list, np.ndarray]:
    ids = list(np.asarray(ids).reshape(-1).tolist()) if ids is not None else []
    array = np.asarray(boxes, dtype=np.float64) if boxes is not None else np.empty((0, 4))
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4 or len(array) != len(ids):
        raise ShapeError(f"{fn}: expected {len(ids)} {what} boxes of shape ({len(ids)}, 4) as [x1, y1, x2, y2], "
                         f"got shape {array.shape}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{fn}: {what} ids must be unique within a frame, got {ids}")
    return ids, array


class MOTAccumulator:
    """Collects the events of a sequence frame by frame (see the module docstring)."""

    def __init__(self, max_distance: float = 0.5):
        if not 0.0 <= max_distance <= 1.0:
            raise ValueError(f"MOTAccumulator: max_distance must lie in [0, 1], got {max_distance!r}")
        self.max_distance = float(max_distance)
        self.matches = self.misses = self.false_positives = self.switches = 0
        self.distance_sum = 0.0
        self.num_frames = 0
        self.last_match: dict = {}                        # object id -> hypothesis id it was last matched to
        self.object_history: dict = defaultdict(list)     # object id -> [matched in frame?] over its frames
        self.object_frames: dict = defaultdict(int)
        self.hypothesis_frames: dict = defaultdict(int)
        self.pair_frames: dict = defaultdict(int)         # (object, hypothesis) -> frames within max_distance

    def update(self, object_ids, object_boxes, hypothesis_ids, hypothesis_boxes) -> list[tuple]:
        """Add one frame: ground-truth ids and corner boxes ``(N, 4)``, hypothesis ids and boxes ``(M, 4)``.
        Returns the frame's events as (kind, object id, hypothesis id, distance), kind one of
        MATCH, SWITCH, MISS, FP."""
        fn = "MOTAccumulator.update"
        objects, object_boxes = _ids_and_boxes(object_ids, object_boxes, fn, "object")
        hypotheses, hypothesis_boxes = _ids_and_boxes(hypothesis_ids, hypothesis_boxes, fn, "hypothesis")
        self.num_frames += 1
        distance = np.full((len(objects), len(hypotheses)), np.nan)
        if objects and hypotheses:
            distance = 1.0 - iou(object_boxes, hypothesis_boxes)
            distance[distance > self.max_distance] = np.nan
        for o in objects:
            self.object_frames[o] += 1
        for h in hypotheses:
            self.hypothesis_frames[h] += 1
        for i, j in zip(*np.nonzero(np.isfinite(distance))):
            self.pair_frames[objects[i], hypotheses[j]] += 1

        pairs, events = [], []
        free_objects, free_hypotheses = set(range(len(objects))), set(range(len(hypotheses)))
        column = {h: j for j, h in enumerate(hypotheses)}
        for i, o in enumerate(objects):                   # keep last frame's correspondences still possible
            j = column.get(self.last_match.get(o))
            if j is not None and j in free_hypotheses and np.isfinite(distance[i, j]):
                pairs.append((i, j, "MATCH"))
                free_objects.discard(i)
                free_hypotheses.discard(j)
        rows, cols = sorted(free_objects), sorted(free_hypotheses)
        if rows and cols:
            from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s
            sub = distance[np.ix_(rows, cols)]
            finite = np.isfinite(sub)
            if finite.any():
                cost = np.where(finite, sub, 2.0 * (1 + finite.sum()))
                for a, b in zip(*linear_sum_assignment(cost)):
                    if finite[a, b]:
                        i, j = rows[a], cols[b]
                        previous = self.last_match.get(objects[i])
                        pairs.append((i, j, "SWITCH" if previous is not None and previous != hypotheses[j]
                                      else "MATCH"))
                        free_objects.discard(i)
                        free_hypotheses.discard(j)
        for i, j, kind in pairs:
            self.last_match[objects[i]] = hypotheses[j]
            self.matches += kind == "MATCH"
            self.switches += kind == "SWITCH"
            self.distance_sum += distance[i, j]
            events.append((kind, objects[i], hypotheses[j], float(distance[i, j])))
        for i, o in enumerate(objects):
            self.object_history[o].append(i not in free_objects)
        for i in sorted(free_objects):
            self.misses += 1
            events.append(("MISS", objects[i], None, float("nan")))
        for j in sorted(free_hypotheses):
            self.false_positives += 1
            events.append(("FP", None, hypotheses[j], float("nan")))
        return events

    @property
    def num_objects(self) -> int:
        return sum(self.object_frames.values())

    @property
    def num_predictions(self) -> int:
        return sum(self.hypothesis_frames.values())

    @property
    def fragmentations(self) -> int:
        """Times an object's track is interrupted between its first and last matched frames."""
        count = 0
        for history in self.object_history.values():
            matched = np.flatnonzero(history)
            if matched.size:
                span = np.asarray(history[matched[0]: matched[-1] + 1], dtype=int)
                count += int(np.sum(np.diff(span) == -1))
        return count

    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.switches) / max(self.num_objects, 1)

    def motp(self) -> float:
        detections = self.matches + self.switches
        return self.distance_sum / detections if detections else float("nan")

    def coverage(self) -> tuple[int, int, int]:
        """(mostly tracked, partially tracked, mostly lost) object counts."""
        ratios = [np.mean(history) for history in self.object_history.values()]
        mostly_tracked = sum(r >= 0.8 for r in ratios)
        mostly_lost = sum(r < 0.2 for r in ratios)
        return mostly_tracked, len(ratios) - mostly_tracked - mostly_lost, mostly_lost

    def identity_counts(self) -> tuple[int, int, int]:
        """(IDTP, IDFP, IDFN) of the best one-to-one matching of object and hypothesis trajectories."""
        objects, hypotheses = list(self.object_frames), list(self.hypothesis_frames)
        no, nh = len(objects), len(hypotheses)
        if no == 0 or nh == 0:
            return 0, self.num_predictions, self.num_objects
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s
        object_counts = np.array([self.object_frames[o] for o in objects], dtype=np.float64)
        hypothesis_counts = np.array([self.hypothesis_frames[h] for h in hypotheses], dtype=np.float64)
        together = np.zeros((no, nh))
        row, col = {o: i for i, o in enumerate(objects)}, {h: j for j, h in enumerate(hypotheses)}
        for (o, h), frames in self.pair_frames.items():
            together[row[o], col[h]] = frames
        impossible = 1.0 + object_counts.sum() + hypothesis_counts.sum()
        false_negatives = np.full((no + nh, nh + no), impossible)
        false_positives = np.zeros((no + nh, nh + no))
        false_negatives[:no, :nh] = object_counts[:, None] - together        # object i paired with hypothesis j
        false_positives[:no, :nh] = hypothesis_counts[None, :] - together
        false_negatives[range(no), range(nh, nh + no)] = object_counts        # object i left unpaired
        false_negatives[range(no, no + nh), range(nh)] = 0.0                  # hypothesis j left unpaired
        false_positives[range(no, no + nh), range(nh)] = hypothesis_counts
        false_negatives[no:, nh:] = 0.0
        false_positives[:no, nh:] = 0.0
        rows, cols = linear_sum_assignment(false_negatives + false_positives)
        idfn = int(round(false_negatives[rows, cols].sum()))
        idfp = int(round(false_positives[rows, cols].sum()))
        return self.num_objects - idfn, idfp, idfn

    def summary(self) -> dict:
        """All metrics of the sequence as a dict (see :func:`mot_summary`)."""
        return mot_summary(self)


def mot_summary(accumulator: MOTAccumulator) -> dict:
    """num_frames, num_objects, num_predictions, num_matches, num_switches, num_misses,
    num_false_positives, num_fragmentations, mostly_tracked, partially_tracked, mostly_lost,
    mota, motp, idtp, idfp, idfn, idp, idr and idf1 of an accumulator."""
    idtp, idfp, idfn = accumulator.identity_counts()
    mostly_tracked, partially_tracked, mostly_lost = accumulator.coverage()

    def ratio(top: float, bottom: float) -> float:
        return top / bottom if bottom else float("nan")

    return {
        "num_frames": accumulator.num_frames, "num_objects": accumulator.num_objects,
        "num_predictions": accumulator.num_predictions, "num_matches": accumulator.matches,
        "num_switches": accumulator.switches, "num_misses": accumulator.misses,
        "num_false_positives": accumulator.false_positives, "num_fragmentations": accumulator.fragmentations,
        "mostly_tracked": mostly_tracked, "partially_tracked": partially_tracked, "mostly_lost": mostly_lost,
        "mota": accumulator.mota(), "motp": accumulator.motp(),
        "idtp": idtp, "idfp": idfp, "idfn": idfn, "idp": ratio(idtp, idtp + idfp), "idr": ratio(idtp, idtp + idfn),
        "idf1": ratio(2 * idtp, 2 * idtp + idfp + idfn),
    }


def evaluate_mot(ground_truth, hypotheses, max_distance: float = 0.5) -> MOTAccumulator:
    """Accumulate a whole sequence given as MOTChallenge rows (frame, id, x, y, w, h, ...) for the
    ground truth and the hypotheses (see :mod:`lamina.vision.tracking.mot_format`)."""
    from lamina.vision.tracking.mot_format import checked_mot_rows

    truth = checked_mot_rows(ground_truth, "evaluate_mot")
    found = checked_mot_rows(hypotheses, "evaluate_mot")
    accumulator = MOTAccumulator(max_distance)
    frames = np.union1d(truth[:, 0], found[:, 0]).astype(int)
    for frame in range(frames.min(initial=1), frames.max(initial=0) + 1):
        t, f = truth[truth[:, 0] == frame], found[found[:, 0] == frame]
        accumulator.update(t[:, 1].astype(int), _corners(t[:, 2:6]), f[:, 1].astype(int), _corners(f[:, 2:6]))
    return accumulator


def _corners(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def format_mot_summary(summary: dict) -> str:
    """The main metrics of :func:`mot_summary` on one line."""
    return (f"MOTA {summary['mota']:.3f}  MOTP {summary['motp']:.3f}  IDF1 {summary['idf1']:.3f}  "
            f"IDP {summary['idp']:.3f}  IDR {summary['idr']:.3f}  FP {summary['num_false_positives']}  "
            f"FN {summary['num_misses']}  IDSW {summary['num_switches']}  FRAG {summary['num_fragmentations']}  "
            f"MT {summary['mostly_tracked']}  ML {summary['mostly_lost']}")
