
import numpy as np
import pytest
from box_reference import iou_one

from lamina.errors import ShapeError
from lamina.vision import boxes as boxes_module
from lamina.vision.boxes import box_area, center_to_corners, corners_to_center, iou, non_max_suppression


def _random_boxes(n, seed, size=100.0, max_side=30.0):
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, size, (n, 2))
    return np.concatenate([low, low + rng.uniform(0, max_side, (n, 2))], axis=1)


def _clustered_boxes(clusters, copies, seed):
    """Jittered copies of a few boxes: overlaps of every degree."""
    rng = np.random.default_rng(seed)
    base = np.repeat(_random_boxes(clusters, seed, size=80.0, max_side=20.0) + [0, 0, 10, 10], copies, axis=0)
    jittered = (base + rng.uniform(-4, 4, base.shape)).reshape(-1, 2, 2)
    return np.sort(jittered, axis=1).reshape(-1, 4)


def _nms_reference(boxes, scores, threshold):
    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou_one(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_formats_convert_both_ways():
    centre = np.array([[5.0, 4.0, 2.0, 6.0], [0.0, 0.0, 0.0, 0.0]])
    corners = center_to_corners(centre)
    np.testing.assert_array_equal(corners, [[4.0, 1.0, 6.0, 7.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(corners_to_center(corners), centre)
    np.testing.assert_array_equal(box_area(corners), [12.0, 0.0])


def test_formats_keep_leading_axes():
    centre = np.abs(np.random.default_rng(1).standard_normal((2, 3, 5, 4)))
    corners = center_to_corners(centre)
    assert corners.shape == (2, 3, 5, 4)
    np.testing.assert_allclose(corners_to_center(corners), centre, atol=1e-12)
    np.testing.assert_allclose(box_area(corners), centre[..., 2] * centre[..., 3], atol=1e-12)


@pytest.mark.parametrize("a,b,expected", [
    ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),          # identical
    ([0, 0, 1, 1], [3, 3, 4, 4], 0.0),          # disjoint
    ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),          # touching edges
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),       # contained
    ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),        # half of each overlaps
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),        # corner overlap
    ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),          # degenerate: no union
    ([0, 0, 2, 2], [1, 1, 1, 1], 0.0),          # a point inside a box
])
def test_iou_hand_computed(a, b, expected):
    result = iou(np.array([a], dtype=float), np.array([b], dtype=float))
    assert result.shape == (1, 1)
    assert result[0, 0] == pytest.approx(expected)
    assert iou(np.array([b], dtype=float), np.array([a], dtype=float))[0, 0] == pytest.approx(expected)


def test_iou_matches_a_double_loop_and_is_symmetric():
    a, b = _random_boxes(13, seed=2), _random_boxes(9, seed=3)
    a[0, 2] = a[0, 0]                                # a zero-width box
    expected = np.array([[iou_one(x, y) for y in b] for x in a])
    result = iou(a, b)
    assert result.shape == (13, 9)
    assert (expected > 0).sum() > 5                   # the random boxes do overlap
    np.testing.assert_allclose(result, expected, atol=1e-12)
    np.testing.assert_allclose(iou(b, a), result.T, atol=1e-12)
    assert np.all(np.isfinite(result))


def test_iou_broadcasts_leading_axes():
    a, b = _random_boxes(12, seed=4).reshape(2, 6, 4), _random_boxes(10, seed=5).reshape(2, 5, 4)
    result = iou(a, b)
    assert result.shape == (2, 6, 5)
    for k in range(2):
        np.testing.assert_allclose(result[k], iou(a[k], b[k]))


def test_iou_errors():
    with pytest.raises(ShapeError, match="iou.*last axis of 4"):
        iou(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"iou.*x1 <= x2"):
        iou(np.array([[2.0, 0.0, 1.0, 1.0]]), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="iou.*finite"):
        iou(np.array([[0.0, 0.0, np.nan, 1.0]]), np.zeros((1, 4)))
    with pytest.raises(ShapeError, match="iou"):
        iou(np.zeros(4), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="center_to_corners"):
        center_to_corners([[0.0, 0.0, -1.0, 1.0]])


@pytest.fixture(params=["matrix", "loop"])
def nms_path(request, monkeypatch):
    """NMS on one IoU matrix (up to MATRIX_NMS_BOXES candidates) or box by box (beyond)."""
    if request.param == "loop":
        monkeypatch.setattr(boxes_module, "MATRIX_NMS_BOXES", 0)
    return request.param


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_a_plain_loop(threshold, nms_path):
    boxes = _clustered_boxes(12, 5, seed=6)
    scores = np.random.default_rng(7).uniform(size=60)
    kept = non_max_suppression(boxes, scores, iou_threshold=threshold)
    expected = _nms_reference(boxes, scores, threshold)
    assert kept.tolist() == expected
    if 0.0 < threshold < 1.0:
        assert 1 < len(kept) < 60                     # some boxes kept, some suppressed


def test_nms_is_class_aware(nms_path):
    boxes = _random_boxes(80, seed=8, size=50.0)
    scores = np.random.default_rng(9).uniform(size=80)
    classes = np.random.default_rng(10).integers(0, 3, 80)
    kept = non_max_suppression(boxes, scores, 0.4, classes=classes)
    expected = []
    for label in range(3):
        members = np.flatnonzero(classes == label)
        expected += [members[i] for i in _nms_reference(boxes[members], scores[members], 0.4)]
    assert kept.tolist() == sorted(expected, key=lambda i: -scores[i])
    assert len(kept) > len(non_max_suppression(boxes, scores, 0.4))


def test_nms_score_threshold_and_max_outputs():
    boxes = _random_boxes(50, seed=11)
    scores = np.random.default_rng(12).uniform(size=50)
    confident = np.flatnonzero(scores >= 0.6)
    kept = non_max_suppression(boxes, scores, 0.5, score_threshold=0.6)
    expected = [confident[i] for i in _nms_reference(boxes[confident], scores[confident], 0.5)]
    assert kept.tolist() == expected
    assert np.all(scores[kept] >= 0.6)
    full = non_max_suppression(boxes, scores, 0.5)
    assert non_max_suppression(boxes, scores, 0.5, max_outputs=3).tolist() == full[:3].tolist()
    assert non_max_suppression(boxes, scores, 0.5, max_outputs=0).size == 0


def test_nms_keeps_the_best_of_a_cluster_and_breaks_ties_by_index():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=float)
    assert non_max_suppression(boxes, [0.5, 0.9, 0.3, 0.9]).tolist() == [1, 2]
    assert non_max_suppression(boxes[[0, 3]], [0.7, 0.7]).tolist() == [0]


def test_nms_empty_input():
    for boxes in (np.zeros((0, 4)), []):
        kept = non_max_suppression(boxes, [])
        assert kept.shape == (0,) and kept.dtype == np.int64
    assert non_max_suppression(np.zeros((0, 4)), np.zeros(0), classes=np.zeros(0, dtype=int)).size == 0
    assert non_max_suppression(_random_boxes(5, seed=1), np.zeros(5), score_threshold=0.5).size == 0


def test_nms_errors():
    boxes = _random_boxes(4, seed=13)
    with pytest.raises(ShapeError, match="non_max_suppression.*scores"):
        non_max_suppression(boxes, np.ones(3))
    with pytest.raises(ValueError, match="non_max_suppression: iou_threshold"):
        non_max_suppression(boxes, np.ones(4), iou_threshold=1.5)
    with pytest.raises(ValueError, match="non_max_suppression: max_outputs"):
        non_max_suppression(boxes, np.ones(4), max_outputs=-1)
    with pytest.raises(ShapeError, match="non_max_suppression: classes"):
        non_max_suppression(boxes, np.ones(4), classes=[0, 1])
    with pytest.raises(ValueError, match="non_max_suppression: scores"):
        non_max_suppression(boxes, [1.0, np.nan, 0.0, 0.0])


def test_nms_handles_thousands_of_boxes():
    boxes = _random_boxes(4000, seed=14, size=1000.0, max_side=60.0)
    scores = np.random.default_rng(15).uniform(size=4000)
    kept = non_max_suppression(boxes, scores, 0.5, classes=np.arange(4000) % 5)
    assert 1000 < len(kept) < 4000
    assert np.all(np.diff(scores[kept]) <= 0)
