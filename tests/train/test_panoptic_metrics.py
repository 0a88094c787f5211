"""Panoptic quality on hand-made id maps against hand counts: matching with the void-corrected IoU,
the strict IoU > 0.5 edge, void and crowd rules for false positives, pooling over images and the
thing/stuff averages; the README example runs."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import run_readme_section
from lamina.errors import ShapeError
from lamina.train import PanopticSegments, panoptic_quality


def _row(*runs) -> np.ndarray:
    """A (1, W) id map from (segment id, run length) pairs."""
    return np.concatenate([np.full(length, segment) for segment, length in runs])[None].astype(np.int64)


# ground truth: thing 1 (10 px), stuff 2 (6 px), void (2 px), thing 3 of category 1 (2 px)
GT = PanopticSegments(_row((1, 10), (2, 6), (0, 2), (3, 2)), {1: 1, 2: 2, 3: 1})
# prediction: 11 (cat 1) covers 8 px of gt 1 and 1 void px; 12 (cat 2) covers 2 px of gt 1 and all of gt 2;
# 13 (cat 3) lies on void only; gt 3 is left unlabelled
PRED = PanopticSegments(_row((11, 8), (12, 8), (11, 1), (13, 1), (0, 2)), {11: 1, 12: 2, 13: 3})


def test_counts_and_ious_equal_hand_counts():
    result = panoptic_quality(PRED, GT, thing_categories={1, 3})
    cls1, cls2 = result["per_class"][1], result["per_class"][2]
    # 11 vs gt 1: |P| = 9, |G| = 10, |P n G| = 8, |P n void| = 1 -> IoU = 8 / (9 + 10 - 8 - 1) = 0.8
    assert (cls1["tp"], cls1["fp"], cls1["fn"]) == (1, 0, 1) and cls1["iou"] == pytest.approx(0.8)
    # 12 vs gt 2: 6 / (8 + 6 - 6) = 0.75
    assert (cls2["tp"], cls2["fp"], cls2["fn"]) == (1, 0, 0) and cls2["iou"] == pytest.approx(0.75)
    assert 3 not in result["per_class"]                          # 13 is on void: ignored, no count at all
    assert cls1["pq"] == pytest.approx(0.8 / 1.5) and cls1["sq"] == pytest.approx(0.8)
    assert cls1["rq"] == pytest.approx(1 / 1.5)
    assert cls2["pq"] == pytest.approx(0.75) and cls2["rq"] == pytest.approx(1.0)
    assert result["all"]["pq"] == pytest.approx((0.8 / 1.5 + 0.75) / 2) and result["all"]["n"] == 2
    assert result["things"]["pq"] == pytest.approx(0.8 / 1.5) and result["things"]["n"] == 1
    assert result["stuff"]["sq"] == pytest.approx(0.75) and result["stuff"]["n"] == 1
    for row in result["per_class"].values():
        assert row["pq"] == pytest.approx(row["sq"] * row["rq"])


def test_iou_of_exactly_one_half_does_not_match():
    gt = (_row((1, 4), (0, 4)), {1: 5})
    half = panoptic_quality((_row((7, 2), (0, 6)), {7: 5}), gt)["per_class"][5]
    assert (half["tp"], half["fp"], half["fn"]) == (0, 1, 1) and half["pq"] == 0.0
    above = panoptic_quality((_row((7, 3), (0, 5)), {7: 5}), gt)["per_class"][5]
    assert (above["tp"], above["fp"], above["fn"]) == (1, 0, 0) and above["iou"] == pytest.approx(0.75)


def test_void_rule_needs_more_than_half_of_the_prediction():
    gt = (_row((1, 4), (0, 4)), {1: 1})
    # prediction 8 (cat 2) on 2 void and 2 gt pixels: exactly half on void, so a false positive
    half = panoptic_quality((_row((0, 2), (8, 4), (0, 2)), {8: 2}), gt)["per_class"]
    assert half[2]["fp"] == 1 and half[1]["fn"] == 1
    # on 3 void and 1 gt pixel: ignored
    most = panoptic_quality((_row((0, 3), (8, 4), (0, 1)), {8: 2}), gt)["per_class"]
    assert 2 not in most and most[1]["fn"] == 1


def test_crowd_regions_are_never_false_negatives_and_absorb_same_category_predictions():
    ids = _row((5, 6), (6, 4), (0, 2))
    gt = PanopticSegments(ids, {5: 1, 6: 1}, crowd=frozenset({5}))
    # 21 (cat 1) inside the crowd region, 22 (cat 1) on gt 6, 23 (cat 2) inside the crowd region
    pred = PanopticSegments(_row((21, 4), (23, 2), (22, 4), (0, 2)), {21: 1, 22: 1, 23: 2})
    per_class = panoptic_quality(pred, gt)["per_class"]
    assert (per_class[1]["tp"], per_class[1]["fp"], per_class[1]["fn"]) == (1, 0, 0)
    assert per_class[1]["iou"] == pytest.approx(1.0)
    assert (per_class[2]["tp"], per_class[2]["fp"], per_class[2]["fn"]) == (0, 1, 0)   # another category's crowd
    # without the crowd flag gt 5 is an ordinary segment: 21 matches it with IoU 4 / 6
    plain = panoptic_quality(pred, PanopticSegments(ids, {5: 1, 6: 1}))["per_class"][1]
    assert (plain["tp"], plain["fp"], plain["fn"]) == (2, 0, 0) and plain["iou"] == pytest.approx(1 + 4 / 6)


def test_counts_pool_over_images():
    gt_miss = (_row((1, 4), (0, 4)), {1: 1})
    pred_miss = (_row((0, 4), (9, 4)), {9: 1})                   # misses gt 1 and predicts on void: FN only
    result = panoptic_quality([PRED, pred_miss], [GT, gt_miss], thing_categories=[1])
    cls1 = result["per_class"][1]
    assert (cls1["tp"], cls1["fp"], cls1["fn"]) == (1, 0, 2)
    assert cls1["pq"] == pytest.approx(0.8 / 2.0)


def test_errors():
    with pytest.raises(ValueError, match="no category"):
        panoptic_quality((_row((4, 2)), {}), (_row((1, 2)), {1: 1}))
    with pytest.raises(ShapeError, match="differ"):
        panoptic_quality((_row((4, 2)), {4: 1}), (_row((1, 3)), {1: 1}))
    with pytest.raises(ValueError, match="ground-truth images"):
        panoptic_quality([PRED, PRED], [GT])

def test_readme_example_runs():
    printed, names = run_readme_section("Dense prediction: depth losses, depth and normal metrics, panoptic quality")
    assert names["metrics"]["abs_rel"] < 0.05 and names["pred"].grad is not None
    assert np.allclose(names["normals"], [0.0, 0.0, -1.0], atol=1e-6)
    assert panoptic_quality(names["predicted"], names["gt"])["all"]["pq"] == pytest.approx(2 / 3)
    assert "SSI loss" in printed
