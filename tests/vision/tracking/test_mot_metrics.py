import pytest

from lamina.errors import ShapeError
from lamina.vision.tracking import MOTAccumulator, evaluate_mot, format_mot_summary, mot_summary


def _b(x):
    return [x, 0.0, x + 10.0, 10.0]


# Two objects, A (1) and B (2), over six frames; hypotheses 10, 20 and 30.
FRAMES = [
    ({1: _b(0), 2: _b(100)}, {10: _b(1), 20: _b(100)}),                 # two matches, one off by 1 pixel
    ({1: _b(0), 2: _b(100)}, {10: _b(0)}),                               # B missed
    ({1: _b(0), 2: _b(100)}, {10: _b(0), 20: _b(100), 30: _b(300)}),     # B resumed (a fragmentation), 30 a FP
    ({1: _b(0), 2: _b(100)}, {30: _b(0), 20: _b(100)}),                  # A switches from 10 to 30
    ({1: _b(0), 2: _b(100)}, {30: _b(0), 20: _b(100)}),
    ({1: _b(0), 2: _b(100)}, {10: _b(0), 30: _b(2), 20: _b(100)}),       # A keeps 30 though 10 fits better: 10 a FP
]


def _accumulate():
    accumulator = MOTAccumulator()
    events = []
    for objects, hypotheses in FRAMES:
        events.append(accumulator.update(list(objects), list(objects.values()),
                                         list(hypotheses), list(hypotheses.values())))
    return accumulator, events


def test_counts_equal_the_hand_counted_ones():
    accumulator, events = _accumulate()
    summary = mot_summary(accumulator)
    assert (summary["num_objects"], summary["num_predictions"]) == (12, 13)
    assert (summary["num_matches"], summary["num_switches"]) == (10, 1)
    assert (summary["num_misses"], summary["num_false_positives"], summary["num_fragmentations"]) == (1, 2, 1)
    assert (summary["mostly_tracked"], summary["partially_tracked"], summary["mostly_lost"]) == (2, 0, 0)
    assert ("SWITCH", 1, 30, 0.0) in events[3]
    assert ("MATCH", 1, 30, pytest.approx(1 / 3)) in events[5]
    assert ("FP", None, 10) in [event[:3] for event in events[5]]
    assert summary["mota"] == pytest.approx(1 - (1 + 2 + 1) / 12)
    assert summary["motp"] == pytest.approx((20 / 110 + 1 / 3) / 11)


def test_identity_metrics_equal_the_hand_counted_ones():
    # best pairing: A-10 (together in 4 frames), B-20 (5 frames); hypothesis 30 stays unpaired
    summary = mot_summary(_accumulate()[0])
    assert (summary["idtp"], summary["idfp"], summary["idfn"]) == (9, 4, 3)
    assert summary["idp"] == pytest.approx(9 / 13)
    assert summary["idr"] == pytest.approx(9 / 12)
    assert summary["idf1"] == pytest.approx(18 / 25)
    assert "IDF1 0.720" in format_mot_summary(summary)


def test_a_perfect_tracker_scores_one():
    accumulator = MOTAccumulator()
    for t in range(5):
        boxes = [_b(3 * t), _b(50 + t)]
        accumulator.update([1, 2], boxes, [7, 8], boxes)
    summary = mot_summary(accumulator)
    assert summary["mota"] == summary["idf1"] == 1.0 and summary["motp"] == 0.0


def test_only_interruptions_later_resumed_are_fragmentations():
    accumulator = MOTAccumulator()
    for seen in (False, True, False, False, True, True, False):
        accumulator.update([1], [_b(0)], [4] if seen else [], [_b(0)] if seen else [])
    assert accumulator.fragmentations == 1 and accumulator.misses == 4


def test_pairs_beyond_the_distance_limit_are_not_matched():
    accumulator = MOTAccumulator(max_distance=0.5)
    accumulator.update([1], [_b(0)], [5], [_b(4)])          # IoU 6/14 < 0.5: a miss and a false positive
    accumulator.update([1], [_b(0)], [5], [_b(3)])          # IoU 7/13 >= 0.5: a match
    assert (accumulator.misses, accumulator.false_positives, accumulator.matches) == (1, 1, 1)


def test_evaluate_mot_reads_rows_in_xywh():
    truth, found = [], []
    for frame, (objects, hypotheses) in enumerate(FRAMES, start=1):
        for rows, items in ((truth, objects), (found, hypotheses)):
            for i, (x1, y1, x2, y2) in items.items():
                rows.append([frame, i, x1, y1, x2 - x1, y2 - y1, 1, -1, -1, -1])
    assert mot_summary(evaluate_mot(truth, found)) == mot_summary(_accumulate()[0])


def test_errors_are_clear():
    with pytest.raises(ShapeError, match="MOTAccumulator.update"):
        MOTAccumulator().update([1, 2], [_b(0)], [], [])
    with pytest.raises(ValueError, match="unique"):
        MOTAccumulator().update([1, 1], [_b(0), _b(5)], [], [])
    with pytest.raises(ValueError, match="max_distance"):
        MOTAccumulator(max_distance=2.0)
