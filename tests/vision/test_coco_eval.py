"""COCO-style metrics: hand-computed cases (IoU thresholds, area ranges, detection caps, classes),
the relation to lamina's all-point average_precision, and random cases against a small reference
written from COCO's published description of its evaluation."""

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.vision import average_precision, coco_evaluate, format_coco_metrics

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
C = [40.0, 0.0, 50.0, 10.0]
FAR = [70.0, 70.0, 80.0, 80.0]
MEDIUM = [100.0, 100.0, 140.0, 140.0]        # 40 x 40 = 1600 pixels: between 32^2 and 96^2
LARGE = [200.0, 200.0, 300.0, 300.0]         # 100 x 100: above 96^2


def _image(boxes, scores=None, labels=None):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.array(labels, dtype=np.int64)
    return (boxes, np.array(scores, dtype=float), labels) if scores is not None else (boxes, labels)


def _truth(boxes, labels=None):
    return _image(boxes, None, labels)


def _coco(preds, truths, num_classes=1, **kwargs):
    return coco_evaluate([_image(*p) for p in preds], [_truth(*t) for t in truths], num_classes, **kwargs)


def test_perfect_detections_give_one_everywhere_but_ar1():
    metrics = _coco([([A, B], [0.9, 0.8]), ([C], [0.7])], [([A, B],), ([C],)])
    for key in ("AP", "AP50", "AP75", "AP_small", "AR10", "AR100", "AR_small"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["AR1"] == pytest.approx(2 / 3)      # one detection per image: 2 of the 3 objects
    for key in ("AP_medium", "AP_large", "AR_medium", "AR_large"):
        assert np.isnan(metrics[key]), key              # no objects of those sizes


def test_a_false_positive_ranked_first_agrees_with_average_precision():
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1: the envelope is 2/3 at every recall
    metrics = _coco([([FAR, A, B], [0.9, 0.8, 0.7])], [([A, B],)])
    assert metrics["AP"] == pytest.approx(2 / 3)
    expected = average_precision([np.array([FAR, A, B])], [np.array([0.9, 0.8, 0.7])], [np.array([A, B])])
    assert metrics["AP50"] == pytest.approx(expected)


def test_a_missed_object_counts_the_101_recall_points_up_to_one_half():
    metrics = _coco([([A], [0.9]), ([], [])], [([A],), ([B],)])
    assert metrics["AP"] == pytest.approx(51 / 101)     # r = 0, 0.01, ..., 0.5 at precision 1
    assert metrics["AR100"] == pytest.approx(0.5)
    lamina_ap = average_precision([np.array([A]), np.zeros((0, 4))], [np.array([0.9]), np.zeros(0)],
                                  [np.array([A]), np.array([B])])
    assert lamina_ap == pytest.approx(0.5)              # the exact area under the envelope


def test_a_duplicate_is_a_false_positive_at_every_threshold():
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1 up to recall 1/2, then 2/3
    metrics = _coco([([A, A, B], [0.9, 0.8, 0.7])], [([A, B],)])
    assert metrics["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert metrics["AR100"] == pytest.approx(1.0)


def test_the_iou_thresholds_count_where_a_detection_still_matches():
    # IoU 0.72: a match at t = 0.5, 0.55, 0.6, 0.65, 0.7, a miss at 0.75 ... 0.95
    metrics = _coco([([[0.0, 0.0, 10.0, 7.2]], [0.9])], [([A],)])
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == 0.0
    assert metrics["AP"] == pytest.approx(0.5) and metrics["AR100"] == pytest.approx(0.5)
    only = _coco([([[0.0, 0.0, 10.0, 7.2]], [0.9])], [([A],)], iou_thresholds=[0.6])
    assert only["AP"] == pytest.approx(1.0) and "AP50" not in only and "AP75" not in only


def test_area_ranges_ignore_objects_and_unmatched_detections_of_other_sizes():
    # a small object found (score 0.5) after a large false positive (0.9); a medium object missed
    metrics = _coco([([LARGE, A], [0.9, 0.5])], [([A, MEDIUM],)])
    assert metrics["AP_small"] == pytest.approx(1.0)    # the large false positive is ignored
    assert metrics["AP_medium"] == 0.0 and metrics["AR_medium"] == 0.0
    assert np.isnan(metrics["AP_large"])
    # all sizes: precision 0 then 1/2 at recall 1/2
    assert metrics["AP"] == pytest.approx(51 / 101 / 2)
    assert metrics["AR_small"] == 1.0 and metrics["AR100"] == pytest.approx(0.5)


def test_a_detection_prefers_an_object_of_its_range_over_a_closer_ignored_one():
    inner = [0.0, 0.0, 30.0, 30.0]            # 900 pixels: small
    outer = [0.0, 0.0, 34.0, 34.0]            # 1156 pixels: medium
    detection = [0.0, 0.0, 33.0, 33.0]        # IoU 0.94 with outer, 0.83 with inner
    metrics = _coco([([detection], [0.9])], [([inner, outer],)], iou_thresholds=[0.5])
    assert metrics["AP_small"] == pytest.approx(1.0)    # outer is ignored for 'small': inner is taken
    assert metrics["AP_medium"] == pytest.approx(1.0)   # inner is ignored for 'medium': outer is taken
    assert metrics["AR100"] == pytest.approx(0.5)


def test_max_detections_caps_each_image():
    metrics = _coco([([A, B, C], [0.9, 0.8, 0.7])], [([A, B, C],)], max_detections=(1, 2, 10))
    assert metrics["AR1"] == pytest.approx(1 / 3) and metrics["AR2"] == pytest.approx(2 / 3)
    assert metrics["AR10"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(1.0)
    capped = _coco([([A, B, C], [0.9, 0.8, 0.7])], [([A, B, C],)], max_detections=(2,))
    assert capped["AP"] == pytest.approx(67 / 101)     # recall 2/3 reached: r = 0 .. 0.66


def test_classes_are_averaged_over_those_with_objects():
    preds = [([A, B, FAR], [0.9, 0.8, 0.7], [0, 1, 2])]
    truths = [([A, B, C], [0, 1, 1])]
    metrics = _coco(preds, truths, num_classes=3)
    # class 0: AP 1; class 1: one of two objects found, AP 51/101; class 2: no objects, left out
    assert metrics["AP"] == pytest.approx((1 + 51 / 101) / 2)
    assert metrics["AR100"] == pytest.approx((1 + 0.5) / 2)
    assert np.isnan(_coco([([A], [0.9])], [([],)])["AP"])


def test_detector_outputs_as_dicts_give_the_same_metrics():
    preds = [([A, B, FAR], [0.9, 0.8, 0.7], [0, 1, 0])]
    truths = [([A, B], [0, 1])]
    as_dicts = coco_evaluate([dict(zip(("boxes", "scores", "labels"), _image(*p))) for p in preds],
                             [dict(zip(("boxes", "labels"), _truth(*t))) for t in truths], 2)
    np.testing.assert_equal(as_dicts, _coco(preds, truths, num_classes=2))
    text = format_coco_metrics(as_dicts)
    assert "AP@[.5:.95]" in text and "AR100" in text and len(text.splitlines()) == len(as_dicts)


# -- random cases ------------------------------------------------------------------------------------------------
def _random_case(rng, images=6, num_classes=3, extent=200.0):
    """Objects of sizes from small to large, detections jittered from them plus spurious ones."""
    preds, truths = [], []
    for _ in range(images):
        count = rng.integers(0, 5)
        size = rng.uniform(5, 130, (count, 2))
        corner = rng.uniform(0, extent, (count, 2))
        boxes = np.concatenate([corner, corner + size], axis=1)
        labels = rng.integers(0, num_classes, count)
        jitter = boxes + rng.normal(0, 0.1, boxes.shape) * np.tile(size, 2)
        spurious_size = rng.uniform(5, 130, (rng.integers(0, 6), 2))
        spurious_corner = rng.uniform(0, extent, spurious_size.shape)
        spurious = np.concatenate([spurious_corner, spurious_corner + spurious_size], axis=1)
        found = np.concatenate([jitter, spurious])
        found[:, 2:] = np.maximum(found[:, 2:], found[:, :2] + 1)
        found_labels = np.concatenate([np.where(rng.uniform(size=count) < 0.8, labels, rng.integers(0, num_classes,
                                                                                                      count)),
                                       rng.integers(0, num_classes, len(spurious))]).astype(np.int64)
        preds.append((found, rng.uniform(size=len(found)), found_labels))
        truths.append((boxes, labels.astype(np.int64)))
    return preds, truths


def _box_iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_ap_ar(preds, truths, label, threshold, low, high, cap):
    """AP and recall of one class at one IoU threshold, one area range and one cap, following
    COCO's description: per image the ``cap`` best detections, in score order, each take the
    best-overlapping free ground truth at IoU >= threshold (objects of the range first);
    objects outside the range and detections matched to them or unmatched outside it are
    ignored; precision is read at the recalls 0, 0.01, ..., 1 as the best precision at a
    recall at least as large."""
    def inside(box):
        area = (box[2] - box[0]) * (box[3] - box[1])
        return low <= area <= high

    pooled, positives = [], 0
    for (boxes, scores, labels), (true_boxes, true_labels) in zip(preds, truths):
        objects = [b for b, lab in zip(true_boxes, true_labels) if lab == label]
        wanted = [inside(b) for b in objects]
        positives += sum(wanted)
        mine = sorted([(s, b) for b, s, lab in zip(boxes, scores, labels) if lab == label], key=lambda p: -p[0])[:cap]
        free = [True] * len(objects)
        for score, box in mine:
            best, best_iou = None, threshold
            for preferred in (True, False):
                for g, obj in enumerate(objects):
                    if free[g] and wanted[g] == preferred and _box_iou(box, obj) >= best_iou:
                        best, best_iou = g, _box_iou(box, obj)
                if best is not None:
                    break
            if best is not None:
                free[best] = False
                if wanted[best]:
                    pooled.append((score, True))
            elif inside(box):
                pooled.append((score, False))
    if positives == 0:
        return None, None
    pooled.sort(key=lambda p: -p[0])
    hits = np.cumsum([hit for _, hit in pooled])
    precision = hits / np.arange(1, len(pooled) + 1)
    recall = hits / positives
    points = [max([p for p, r in zip(precision, recall) if r >= point], default=0.0)
              for point in np.linspace(0, 1, 101)]
    return float(np.mean(points)), float(recall[-1]) if len(recall) else 0.0


def _reference(preds, truths, num_classes, thresholds, caps, ranges):
    def metric(which, low, high, cap, only=None):
        values = [_reference_ap_ar(preds, truths, k, t, low, high, cap)[which] for k in range(num_classes)
                  for t in (thresholds if only is None else [only])]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else float("nan")

    top = max(caps)
    expected = {"AP": metric(0, *ranges["all"], top), "AP50": metric(0, *ranges["all"], top, 0.5),
                "AP75": metric(0, *ranges["all"], top, 0.75)}
    expected.update({f"AP_{name}": metric(0, *ranges[name], top) for name in ("small", "medium", "large")})
    expected.update({f"AR{cap}": metric(1, *ranges["all"], cap) for cap in caps})
    expected.update({f"AR_{name}": metric(1, *ranges[name], top) for name in ("small", "medium", "large")})
    return expected


@pytest.mark.parametrize("seed, caps", [(0, (1, 10, 100)), (1, (1, 2, 4)), (2, (1, 3, 100)), (3, (2, 5, 100))])
def test_random_cases_equal_the_reference(seed, caps):
    rng = np.random.default_rng(seed)
    preds, truths = _random_case(rng)
    thresholds = np.linspace(0.5, 0.95, 10)
    ranges = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
              "large": (96.0 ** 2, 1e10)}
    found = coco_evaluate(preds, truths, 3, max_detections=caps)
    expected = _reference(preds, truths, 3, thresholds, caps, ranges)
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("seed", range(5))
def test_ap50_of_one_class_lies_within_2_101_of_average_precision(seed):
    rng = np.random.default_rng(10 + seed)
    preds, truths = _random_case(rng, num_classes=1)
    coco = coco_evaluate(preds, truths, 1, iou_thresholds=[0.5])["AP"]
    exact = average_precision([p[0] for p in preds], [p[1] for p in preds], [t[0] for t in truths])
    assert abs(coco - exact) <= 2 / 101
    assert 0 < exact < 1


def test_bad_inputs_raise_clear_errors():
    preds, truths = [_image([A], [0.9])], [_truth([A])]
    with pytest.raises(ValueError, match="one entry per image"):
        coco_evaluate(preds, truths * 2, 1)
    with pytest.raises(ValueError, match="iou_thresholds"):
        coco_evaluate(preds, truths, 1, iou_thresholds=[0.0, 0.5])
    with pytest.raises(ValueError, match="max_detections"):
        coco_evaluate(preds, truths, 1, max_detections=(0, 10))
    with pytest.raises(ValueError, match="'all'"):
        coco_evaluate(preds, truths, 1, area_ranges={"small": (0, 1024)})
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 1\)"):
        coco_evaluate([_image([A], [0.9], [1])], truths, 1)
    with pytest.raises(ShapeError, match="expected 1 finite scores"):
        coco_evaluate([_image([A], [0.9, 0.8])], truths, 1)
