"""Keypoint metrics on hand-made cases: PCK (box, head and fixed normalization, unlabelled
keypoints and zero-sized boxes left out), AUC, EPE, COCO's OKS (invisible keypoints, zero area,
ground truths without keypoints) and keypoint AP / AR against hand-computed values."""

import numpy as np
import pytest

from lamina.vision.pose_metrics import COCO_SIGMAS, auc, coco_keypoint_evaluate, epe, oks, pck


def _case():
    gt = np.zeros((2, 3, 2))
    gt[1] += 10.0
    pred = gt.copy()
    pred[0, 0] += [3.0, 4.0]   # 5 px off
    pred[0, 1] += [1.0, 0.0]   # 1 px off
    pred[1, 2] += [0.0, 12.0]  # 12 px off
    return pred, gt


def test_pck_by_box_head_and_factor_by_hand():
    pred, gt = _case()
    visible = np.array([[1, 1, 0], [1, 0, 1]])
    boxes = np.array([[0, 0, 40, 20], [0, 0, 30, 50]])  # longer sides 40 and 50
    per, mean = pck(pred, gt, visible, 0.1, bboxes=boxes, per_keypoint=True)
    # keypoint 0: 5/40 = 0.125 (miss), 0 (hit) -> 0.5; keypoint 1: 1/40 (hit) -> 1; keypoint 2: 12/50 (miss) -> 0
    np.testing.assert_allclose(per, [0.5, 1.0, 0.0])
    assert mean == pytest.approx(0.5)
    assert pck(pred, gt, visible, 0.25, head_sizes=[40.0, 50.0]) == pytest.approx(1.0)  # 12/50 = 0.24 < 0.25
    assert pck(pred, gt, visible, 0.3, norm_factor=10.0) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    per, _ = pck(pred, gt, [[1, 1, 0], [1, 0, 0]], 0.5, norm_factor=20.0, per_keypoint=True)
    assert np.isnan(per[2])  # never labelled
    per, mean = pck(pred, gt, visible, 0.1, bboxes=[[0, 0, 40, 20], [5, 5, 5, 5]], per_keypoint=True)
    np.testing.assert_allclose(per[:2], [0.0, 1.0])  # the zero-sized box's instance is left out
    assert np.isnan(per[2]) and mean == pytest.approx(0.5)


def test_auc_and_epe_by_hand():
    pred, gt = _case()
    visible = np.ones((2, 3))
    assert epe(pred, gt, visible) == pytest.approx((5 + 1 + 12) / 6)
    assert epe(pred, gt, np.zeros((2, 3))) == 0.0
    # distances / 30: 1/6, 1/30, 0 | 0, 0, 0.4; thresholds 0, 0.25, 0.5, 0.75
    # keypoint accuracies: t=0: (0, 0, 0); t=.25: (1, 1, .5); then all 1
    expected = np.mean([0.0, 2.5 / 3, 1.0, 1.0])
    assert auc(pred, gt, visible, norm_factor=30.0, num_thresholds=4) == pytest.approx(expected)


def test_oks_by_hand_with_invisible_keypoints_and_zero_area():
    sigmas = np.array([0.1, 0.2, 0.3])
    gt = np.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]])
    pred = gt + np.array([[[3.0, 4.0], [0.0, 2.0], [50.0, 50.0]]])
    area = 100.0
    visible = [[2, 1, 0]]  # the third keypoint is not labelled: left out
    e = np.array([25.0 / (2 * area * (2 * 0.1) ** 2), 4.0 / (2 * area * (2 * 0.2) ** 2)])
    assert oks(pred, gt, visible, [area], sigmas)[0, 0] == pytest.approx(np.exp(-e).mean(), rel=1e-12)
    assert oks(gt, gt, visible, [0.0], sigmas)[0, 0] == 1.0
    assert oks(pred, gt, visible, [0.0], sigmas)[0, 0] == pytest.approx(0.0, abs=1e-300)


def test_oks_of_a_ground_truth_without_keypoints_uses_its_grown_box():
    sigmas = np.full(2, 0.5)
    gt = np.zeros((1, 2, 2))
    box = [[10.0, 10.0, 10.0, 10.0]]  # x, y, w, h -> region [0, 30] x [0, 30]
    pred = np.array([[[5.0, 5.0], [35.0, 10.0]]])  # inside; 5 px right of it
    e = np.array([0.0, 25.0 / ((2 * 0.5) ** 2) / 50.0 / 2])
    assert oks(pred, gt, [[0, 0]], [50.0], sigmas, gt_boxes=box)[0, 0] == pytest.approx(np.exp(-e).mean())
    assert oks(pred, gt, [[0, 0]], [50.0], sigmas)[0, 0] == 0.0


def _gt(points, visible, area):
    return np.concatenate([points, np.asarray(visible, float)[..., None]], -1), area


def test_keypoint_ap_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 60, size=(3, 17, 2))
    areas = np.array([2000.0, 3000.0, 4000.0])  # all 'medium'
    gts = [{"keypoints": np.concatenate([truth[:2], np.full((2, 17, 1), 2.0)], -1), "areas": areas[:2]},
           {"keypoints": np.concatenate([truth[2:], np.full((1, 17, 1), 2.0)], -1), "areas": areas[2:]}]
    # image 0: a perfect detection of person 0 (score .9) and a far-off one (score .8); person 1 missed.
    # image 1: a perfect detection (score .7).
    far = truth[1] + 500.0
    preds = [{"keypoints": np.stack([truth[0], far]), "scores": np.array([0.9, 0.8])},
             {"keypoints": truth[2:], "scores": np.array([0.7])}]
    metrics = coco_keypoint_evaluate(preds, gts)
    # every threshold: TP, FP, TP over 3 ground truths -> precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3;
    # the envelope is 1 for r <= 1/3 (34 points) and 2/3 for 1/3 < r <= 2/3 (33 points), 0 beyond
    expected = (34 * 1.0 + 33 * 2 / 3) / 101
    for key in ("AP", "AP50", "AP75", "AP_medium"):
        assert metrics[key] == pytest.approx(expected)
    for key in ("AR", "AR50", "AR75", "AR_medium"):
        assert metrics[key] == pytest.approx(2 / 3)
    assert np.isnan(metrics["AP_large"]) and np.isnan(metrics["AR_large"])


def test_keypoint_ap_ignores_ground_truths_without_keypoints():
    truth = np.random.default_rng(1).uniform(0, 60, size=(2, 17, 2))
    visible = np.full((2, 17), 2.0)
    visible[1] = 0.0  # no labelled keypoint: ignored, its detection neither TP nor FP
    gts = [{"keypoints": np.concatenate([truth, visible[..., None]], -1), "areas": np.array([2000.0, 2000.0]),
            "boxes": np.array([[0.0, 0.0, 60.0, 60.0]] * 2)}]
    preds = [{"keypoints": truth, "scores": np.array([0.5, 0.9])}]
    metrics = coco_keypoint_evaluate(preds, gts)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


def test_coco_sigmas_and_errors():
    assert len(COCO_SIGMAS) == 17 and COCO_SIGMAS[0] == pytest.approx(0.026)
    with pytest.raises(ValueError, match="exactly one of"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2)))
    with pytest.raises(Exception, match="same shape \\(N, K, 2\\)"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)), np.ones((1, 2)), norm_factor=1.0)
    with pytest.raises(Exception, match="17 sigmas"):
        oks(np.zeros((1, 5, 2)), np.zeros((1, 5, 2)), np.ones((1, 5)), [1.0])
    with pytest.raises(ValueError, match="one entry per image"):
        coco_keypoint_evaluate([], [{"keypoints": np.zeros((0, 17, 3)), "areas": np.zeros(0)}])
