import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.vision.tracking import SORT


def _box(x, y, score=0.9, w=40.0, h=100.0):
    return [x, y, x + w, y + h, score]


def _ids(tracks):
    return sorted(int(i) for i in tracks[:, 4])


def test_ids_count_from_one_and_min_hits_delays_new_tracks():
    tracker = SORT(max_age=1, min_hits=3)
    reported = []
    for frame in range(1, 10):
        detections = [_box(10 * frame, 0)]
        if frame >= 5:
            detections.append(_box(400, 10 * frame))
        reported.append(_ids(tracker.update(np.array(detections))))
    # the first min_hits frames report everything; later tracks wait for min_hits matches in a row
    assert reported == [[1]] * 4 + [[1], [1], [1], [1, 2], [1, 2]]


def test_reported_boxes_follow_the_detections():
    tracker = SORT(min_hits=1)
    for frame in range(1, 6):
        tracks = tracker.update(np.array([_box(5 * frame, 3 * frame)]))
    assert tracks.shape == (1, 5)
    np.testing.assert_allclose(tracks[0, :4], _box(25, 15)[:4], atol=0.5)


def test_crossing_objects_keep_their_ids():
    tracker = SORT(max_age=1, min_hits=1)
    for frame in range(15):
        left, right = _box(10.0 * frame, 0), _box(140.0 - 10.0 * frame, 30)
        tracks = tracker.update(np.array([left, right]))
        assert _ids(tracks) == [1, 2]
        if frame == 0:
            first = {int(t[4]): t[0] for t in tracks}
    final = {int(t[4]): t[0] for t in tracks}
    moving_right = min(first, key=first.get)
    assert final[moving_right] > final[3 - moving_right]         # the ids crossed along with the objects


@pytest.mark.parametrize("gap, max_age, same_id", [(1, 1, True), (2, 1, False), (2, 2, True), (3, 2, False)])
def test_a_miss_keeps_the_id_only_within_max_age(gap, max_age, same_id):
    tracker = SORT(max_age=max_age, min_hits=1)
    for frame in range(1, 6):
        assert _ids(tracker.update(np.array([_box(4 * frame, 0)]))) == [1]
    for _ in range(gap):
        assert len(tracker.update(np.empty((0, 5)))) == 0             # unmatched tracks are not reported
    back = [_ids(tracker.update(np.array([_box(4 * frame, 0)]))) for frame in (6 + gap, 7 + gap)]
    # a new track is reported from its second frame on, when its streak reaches min_hits = 1
    assert back == ([[1], [1]] if same_id else [[], [2]])


def test_errors_are_clear():
    with pytest.raises(ShapeError, match=r"\(N, 5\)"):
        SORT().update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x1 < x2"):
        SORT().update(np.array([[5.0, 0, 1, 1, 0.9]]))
    with pytest.raises(ValueError, match="iou_threshold"):
        SORT(iou_threshold=1.5)
    with pytest.raises(ValueError, match="max_age"):
        SORT(max_age=-1)
