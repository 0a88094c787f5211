import numpy as np
import pytest

from lamina.vision.tracking import SORT, ByteTrack


def _box(x, y, score=0.9, w=40.0, h=100.0):
    return [x, y, x + w, y + h, score]


def _ids(tracks):
    return sorted(int(i) for i in tracks[:, 4])


def _run(tracker, frames, min_score=None):
    out = []
    for detections in frames:
        detections = np.array(detections).reshape(-1, 5)
        if min_score is not None:
            detections = detections[detections[:, 4] >= min_score]
        out.append(_ids(tracker.update(detections)))
    return out


def _fading_sequence():
    """One object, confidently detected, then 4 frames of low scores (say, occluded) while it turns
    downwards, then confident again."""
    scores = [0.9] * 5 + [0.3] * 4 + [0.9] * 5
    return [[_box(6.0 * min(t, 4), 2.0 * t + 12.0 * max(t - 4, 0), s)] for t, s in enumerate(scores)]


def test_low_score_detections_carry_the_track_where_sort_loses_it():
    frames = _fading_sequence()
    tracker = ByteTrack()
    for t, detections in enumerate(frames):
        tracks = tracker.update(np.array(detections))
        assert _ids(tracks) == [1]                               # the second association keeps it tracked
        if t == 8:                                              # and the low-score boxes update its filter
            np.testing.assert_allclose(tracks[0, :4], detections[0][:4], atol=6.0)
    sort_ids = _run(SORT(max_age=1, min_hits=3), frames, min_score=0.5)
    assert sort_ids[5:9] == [[]] * 4 and sort_ids[-1] == [2]      # one threshold: the track is lost, a new id


def test_a_lost_track_is_refound_within_the_buffer_and_not_beyond():
    frames = [[_box(5.0 * t, 0.0)] for t in range(5)] + [[]] * 3 + [[_box(5.0 * t, 0.0)] for t in range(8, 12)]
    ids = _run(ByteTrack(track_buffer=30), frames)
    assert ids[5:8] == [[]] * 3 and ids[8:] == [[1]] * 4
    ids = _run(ByteTrack(track_buffer=2), frames)
    # removed after the buffer: the new track is confirmed on its second frame
    assert ids[8] == [] and ids[9:] == [[2]] * 3


def test_new_tracks_need_a_second_frame_and_a_high_enough_score():
    frames = []
    for t in range(6):
        frame = [_box(5.0 * t, 0.0)]
        if t >= 2:
            frame.append(_box(300.0, 5.0 * t))                    # appears at frame 3
        if t == 3:
            frame.append(_box(600.0, 200.0))                     # a one-frame false positive
        if t >= 1:
            frame.append(_box(150.0, 300.0, score=0.55))          # above track_thresh, below track_thresh + 0.1
            frame.append(_box(450.0, 300.0, score=0.3))           # low score: never starts a track
        frames.append(frame)
    assert _run(ByteTrack(), frames) == [[1], [1], [1], [1, 2], [1, 2], [1, 2]]


def test_very_low_scores_are_ignored():
    frames = [[_box(5.0 * t, 0.0)] for t in range(3)] + [[_box(15.0, 0.0, score=0.05)]] * 2
    assert _run(ByteTrack(), frames) == [[1], [1], [1], [], []]


def test_errors_are_clear():
    with pytest.raises(ValueError, match="track_thresh"):
        ByteTrack(track_thresh=2.0)
    with pytest.raises(ValueError, match="track_buffer"):
        ByteTrack(track_buffer=-1)
