import math

import numpy as np
import pytest
from box_reference import iou_one

from lamina.errors import ShapeError
from lamina.vision.detection import Detections
from lamina.vision.metrics import average_precision, mean_average_precision

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
C = [40.0, 0.0, 50.0, 10.0]
FAR = [70.0, 70.0, 80.0, 80.0]


def _ap(preds, scores, truths, **kwargs):
    as_boxes = [np.array(p, dtype=float).reshape(-1, 4) for p in preds]
    return average_precision(as_boxes, [np.array(s, dtype=float) for s in scores],
                             [np.array(t, dtype=float).reshape(-1, 4) for t in truths], **kwargs)


def test_perfect_detections_give_one():
    assert _ap([[A, B], [C]], [[0.9, 0.4], [0.7]], [[A, B], [C]]) == pytest.approx(1.0)


def test_a_false_positive_ranked_first():
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1: the envelope is 2/3 at both recall steps
    assert _ap([[FAR, A, B]], [[0.9, 0.8, 0.7]], [[A, B]]) == pytest.approx(2 / 3)


def test_a_false_positive_ranked_last_costs_nothing():
    assert _ap([[A, B, FAR]], [[0.9, 0.8, 0.7]], [[A, B]]) == pytest.approx(1.0)


def test_a_missed_object_caps_the_recall():
    assert _ap([[A], []], [[0.9], []], [[A], [B]]) == pytest.approx(0.5)


def test_a_duplicate_detection_is_a_false_positive():
    # A found twice before B: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    shifted_a = [1.0, 0.0, 11.0, 10.0]
    assert _ap([[A, shifted_a, B]], [[0.9, 0.8, 0.7]], [[A, B]]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_the_iou_threshold_decides_a_match():
    loose = [0.0, 0.0, 10.0, 25.0]                     # IoU 0.4 with A
    assert _ap([[loose]], [[0.9]], [[A]]) == 0.0
    assert _ap([[loose]], [[0.9]], [[A]], iou_threshold=0.4) == pytest.approx(1.0)


def test_a_detection_takes_the_object_it_overlaps_most():
    # between A and its shifted copy A2 the detection D overlaps A2 more; E then still finds A
    a2, d, e = [4.0, 0.0, 14.0, 10.0], [3.0, 0.0, 13.0, 10.0], [0.0, 0.0, 9.0, 10.0]
    assert _ap([[d, e]], [[0.9, 0.8]], [[A, a2]]) == pytest.approx(1.0)


def test_detections_on_images_without_objects_are_false_positives():
    assert _ap([[A], [FAR]], [[0.5], [0.9]], [[A], []]) == pytest.approx(0.5)


def test_no_ground_truth_gives_nan():
    assert math.isnan(_ap([[A]], [[0.9]], [[]]))


def test_errors():
    with pytest.raises(ValueError, match="average_precision: need one entry per image"):
        average_precision([np.zeros((0, 4))], [], [np.zeros((0, 4))])
    with pytest.raises(ShapeError, match="average_precision: expected 2 finite scores"):
        _ap([[A, B]], [[0.9]], [[A]])
    with pytest.raises(ValueError, match="average_precision: iou_threshold"):
        _ap([[A]], [[0.9]], [[A]], iou_threshold=0.0)
    with pytest.raises(ValueError, match="average_precision.*x1 <= x2"):
        _ap([[[5.0, 0.0, 1.0, 1.0]]], [[0.9]], [[A]])
    with pytest.raises(ValueError, match=r"mean_average_precision: class labels must lie in \[0, 2\)"):
        mean_average_precision([(np.array([A]), np.array([0.9]), np.array([2]))], [(np.array([A]), np.array([0]))], 2)


def test_mean_average_precision_averages_the_classes_present():
    predictions = [
        Detections(np.array([A, B, FAR]), np.array([0.9, 0.8, 0.95]), np.array([0, 1, 2])),
        Detections(np.array([C]), np.array([0.6]), np.array([1])),
    ]
    ground_truths = [(np.array([A, B]), np.array([0, 1])), (np.array([C, A]), np.array([1, 1]))]
    # class 0: A found (AP 1); class 1: B and C found, the second image's A missed (AP 2/3);
    # class 2 has no ground truth and is left out
    assert mean_average_precision(predictions, ground_truths, 3) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(mean_average_precision(predictions, [(np.zeros((0, 4)), [])] * 2, 3))


# -- a brute-force reference ------------------------------------------------------------------
def _reference_ap(preds, scores, truths, threshold):
    """Plain-loop matching, then the area under the precision envelope p_interp(r), a step
    function constant between consecutive recall levels reached."""
    detections = sorted(((s, image, k) for image, ss in enumerate(scores) for k, s in enumerate(ss)),
                        key=lambda d: -d[0])
    matched = [[False] * len(t) for t in truths]
    hits = []
    for _, image, k in detections:
        best, best_overlap = None, -1.0
        for g, truth in enumerate(truths[image]):
            overlap = iou_one(preds[image][k], truth)
            if not matched[image][g] and overlap >= threshold and overlap > best_overlap:
                best, best_overlap = g, overlap
        if best is not None:
            matched[image][best] = True
        hits.append(best is not None)
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / sum(len(t) for t in truths)
    area, previous = 0.0, 0.0
    for level in sorted(set(recall[recall > 0])):
        area += (level - previous) * max(p for p, r in zip(precision, recall) if r >= level)
        previous = level
    return area


def _random_detections(seed, images=5):
    rng = np.random.default_rng(seed)
    preds, truths = [], []
    for _ in range(images):
        low = rng.uniform(0, 80, (rng.integers(0, 6), 2))
        truth = np.concatenate([low, low + rng.uniform(5, 20, low.shape)], axis=1)
        found = [t + rng.normal(0, 2.0, 4) for t in truth if rng.uniform() < 0.8]
        found += [t + rng.normal(0, 1.0, 4) for t in truth if rng.uniform() < 0.3]      # duplicates
        low = rng.uniform(0, 80, (rng.integers(0, 3), 2))
        found += list(np.concatenate([low, low + rng.uniform(5, 20, low.shape)], axis=1))  # false alarms
        found = np.array(found).reshape(-1, 2, 2)
        preds.append(np.sort(found, axis=1).reshape(-1, 4))
        truths.append(truth)
    scores = [rng.uniform(size=len(p)) for p in preds]
    return preds, scores, truths


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.5, 0.75])
def test_average_precision_matches_a_brute_force_reference(seed, threshold):
    preds, scores, truths = _random_detections(seed)
    ours = average_precision(preds, scores, truths, threshold)
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(_reference_ap(preds, scores, truths, threshold), abs=1e-12)
