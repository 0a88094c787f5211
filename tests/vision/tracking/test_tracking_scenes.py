import numpy as np
import pytest

from lamina.vision.tracking import SORT, ByteTrack, evaluate_mot, mot_summary, synthetic_mot_scene, track_sequence

FRAMES = 40


def _scores(tracker, scene_seed, low_score_rate, min_score=None):
    truth, detections = synthetic_mot_scene(num_frames=FRAMES, num_objects=5, seed=scene_seed,
                                            low_score_rate=low_score_rate)
    found = track_sequence(tracker, detections, FRAMES, min_score=min_score)
    return mot_summary(evaluate_mot(truth, found))


def test_scene_is_seeded_and_in_mot_format():
    truth, detections = synthetic_mot_scene(num_frames=10, num_objects=3, seed=4)
    again = synthetic_mot_scene(num_frames=10, num_objects=3, seed=4)
    np.testing.assert_array_equal(truth, again[0])
    np.testing.assert_array_equal(detections, again[1])
    assert truth.shape == (30, 9) and detections.shape[1] == 10
    assert set(truth[:, 1]) == {1, 2, 3} and (truth[:, 4:6] > 0).all()
    assert (detections[:, 1] == -1).all() and ((detections[:, 6] > 0) & (detections[:, 6] <= 1)).all()
    assert (0 <= truth[:, 8]).all() and (truth[:, 8] <= 1).all()
    different = synthetic_mot_scene(num_frames=10, num_objects=3, seed=5)[0]
    assert not np.array_equal(truth, different)


def test_low_score_rate_lowers_scores():
    low = synthetic_mot_scene(num_frames=30, num_objects=4, seed=1, low_score_rate=0.5, false_positives=0)[1]
    high = synthetic_mot_scene(num_frames=30, num_objects=4, seed=1, low_score_rate=0.0, false_positives=0)[1]
    assert np.mean(low[:, 6] < 0.5) > np.mean(high[:, 6] < 0.5) + 0.3


@pytest.mark.parametrize("tracker_class, at_least", [(SORT, 0.55), (ByteTrack, 0.8)])
def test_trackers_follow_a_clean_scene(tracker_class, at_least):
    # measured MOTA / IDF1: SORT (scores >= 0.5) 0.645 / 0.681, ByteTrack 0.890 / 0.942
    summary = _scores(tracker_class(), 0, 0.0, min_score=0.5 if tracker_class is SORT else None)
    assert summary["mota"] > at_least and summary["idf1"] > at_least


def test_bytetrack_beats_sort_when_many_scores_are_low():
    sort = _scores(SORT(), 1, 0.3, min_score=0.5)
    byte = _scores(ByteTrack(), 1, 0.3)
    # measured MOTA / IDF1: SORT (scores >= 0.5) 0.235 / 0.240, ByteTrack 0.830 / 0.837
    assert byte["mota"] > 0.7 and byte["idf1"] > 0.7
    assert byte["mota"] >= sort["mota"] + 0.2 and byte["idf1"] >= sort["idf1"] + 0.2


def test_errors_are_clear():
    with pytest.raises(ValueError, match="miss_rate"):
        synthetic_mot_scene(miss_rate=1.5)
    with pytest.raises(ValueError, match="num_frames"):
        synthetic_mot_scene(num_frames=0)
