"""Depth metrics on hand-computed arrays (masks, depth caps, crops, per-image averaging), the
median and least-squares alignments, normal metrics on known angles, and a tiny conv net that
learns relative depth from synthetic plane images with the scale-shift invariant loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
import lamina.functional as F
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.train import DEPTH_METRICS, depth_metrics, normal_metrics

GT = np.array([[1.0, 2.0], [4.0, 5.0]])
PRED = np.array([[2.0, 2.0], [2.0, 5.0]])
# residuals: p / g = 2, 1, 1/2, 1
HAND = {
    "abs_rel": (1 / 1 + 0 + 2 / 4 + 0) / 4,
    "sq_rel": (1 / 1 + 0 + 4 / 4 + 0) / 4,
    "rmse": math.sqrt((1 + 0 + 4 + 0) / 4),
    "rmse_log": math.sqrt(2 * math.log(2) ** 2 / 4),
    "log10": 2 * math.log10(2) / 4,
    "silog": 100 * math.sqrt(2 * math.log(2) ** 2 / 4),
    "delta1": 0.5, "delta2": 0.5, "delta3": 0.5,       # 2 > 1.25^3 = 1.953
}


def test_metrics_equal_hand_computed_values():
    result = depth_metrics(PRED, GT)
    assert set(result) == set(DEPTH_METRICS)
    for name, value in HAND.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
    # ratios 1.2, 1.5, 1.7, 1.9, 2.5 (over and under): 1, 2 and 4 of 5 within 1.25, 1.5625 and 1.953
    gt = np.array([[1.0, 1.5, 1.0, 1.0, 2.5]])
    deltas = depth_metrics(np.array([[1.2, 1.0, 1.7, 1.9, 1.0]]), gt)
    assert (deltas["delta1"], deltas["delta2"], deltas["delta3"]) == pytest.approx((0.2, 0.4, 0.8))


def test_masks_caps_and_images_average():
    # a perfect second image halves the errors; invalid pixels (mask, 0 depth, above the cap) count for nothing
    gt = np.stack([np.pad(GT, ((0, 0), (0, 1)), constant_values=0.0), np.array([[3.0, 3.0, 90.0], [2.0, 2.0, 1.0]])])
    pred = np.stack([np.pad(PRED, ((0, 0), (0, 1)), constant_values=7.0), np.array([[3.0, 3.0, 1.0], [2.0, 2.0, 9.0]])])
    mask = np.ones_like(gt, dtype=bool)
    mask[1, 1, 2] = False
    result = depth_metrics(pred[..., None], gt[..., None], mask[..., None], max_depth=80.0)
    assert result["abs_rel"] == pytest.approx(HAND["abs_rel"] / 2)
    assert result["delta1"] == pytest.approx((0.5 + 1.0) / 2)
    # predictions are clipped to [min_depth, max_depth] before the errors
    clipped = depth_metrics(np.array([[100.0]]), np.array([[50.0]]), max_depth=80.0)
    assert clipped["abs_rel"] == pytest.approx(30.0 / 50.0)


def test_crops_keep_the_box_only():
    gt = np.full((1, 10, 20), 2.0)
    pred = gt.copy()
    pred[0, :4] = 9.0                                      # above the Garg crop's top row (int(0.408 * 10) = 4)
    assert depth_metrics(pred, gt, crop="garg")["abs_rel"] == pytest.approx(0.0)
    assert depth_metrics(pred, gt)["abs_rel"] > 1.0
    assert depth_metrics(pred, gt, crop=(4, 10, 0, 20))["abs_rel"] == pytest.approx(0.0)


def test_median_alignment_makes_a_scaled_prediction_perfect():
    gt = np.random.default_rng(0).uniform(1.0, 10.0, (2, 5, 6, 1))
    scaled = 0.37 * gt
    assert depth_metrics(scaled, gt)["abs_rel"] == pytest.approx(0.63)
    result = depth_metrics(scaled, gt, align="median")
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-12) and result["delta1"] == 1.0
    assert result["rmse"] == pytest.approx(0.0, abs=1e-10)
    shifted = depth_metrics(2.0 * gt + 3.0, gt, align="least_squares")
    assert shifted["abs_rel"] == pytest.approx(0.0, abs=1e-10)
    assert depth_metrics(2.0 * gt + 3.0, gt, align="median")["abs_rel"] > 0.01


def _rotated(angle_degrees: float) -> np.ndarray:
    a = math.radians(angle_degrees)
    return np.array([math.sin(a), 0.0, math.cos(a)])


def test_normal_metrics_of_known_angles():
    angles = [0.0, 10.0, 20.0, 45.0]
    target = np.tile([0.0, 0.0, 1.0], (1, 2, 2, 1))
    pred = np.stack([2.5 * _rotated(a) for a in angles]).reshape(1, 2, 2, 3)     # lengths do not matter
    result = normal_metrics(pred, target)
    assert result["mean"] == pytest.approx(np.mean(angles))
    assert result["median"] == pytest.approx(15.0)
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean(np.square(angles))))
    assert (result["within_11.25"], result["within_22.5"], result["within_30"]) == pytest.approx((50.0, 75.0, 75.0))
    masked = normal_metrics(pred, target, mask=np.array([[[True, False], [False, True]]]))
    assert masked["mean"] == pytest.approx(22.5)


def test_argument_errors():
    with pytest.raises(ValueError, match="align"):
        depth_metrics(PRED, GT, align="mean")
    with pytest.raises(ShapeError, match="prediction"):
        depth_metrics(np.ones((3, 3)), GT)
    with pytest.raises(ValueError, match="no image has a valid pixel"):
        depth_metrics(PRED, GT, mask=np.zeros_like(GT))
    with pytest.raises(ShapeError, match="normal_metrics"):
        normal_metrics(np.ones((2, 2)), np.ones((2, 3)))


def _plane_images(rng, n: int, size: int = 12):
    """Disparity maps of random tilted planes and images that render them as a two-channel
    periodic shading (a nonlinear code of the disparity that a conv net must invert)."""
    v, u = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    base = rng.uniform(0.3, 0.6, (n, 1, 1))
    tilt_u, tilt_v = rng.uniform(-0.2, 0.2, (2, n, 1, 1))
    disparity = base + tilt_u * u + tilt_v * v
    image = np.stack([np.sin(6 * disparity), np.cos(6 * disparity)], axis=-1)
    return image.astype(np.float32), disparity[..., None].astype(np.float32)


def test_a_tiny_conv_net_learns_relative_depth_with_the_ssi_loss():
    lamina.backend.manual_seed(0)
    rng = np.random.default_rng(0)
    model = nn.Sequential([nn.Conv2D(16, 3, padding="same", activation="relu"),
                           nn.Conv2D(16, 3, padding="same", activation="relu"), nn.Conv2D(1, 3, padding="same")])
    test_images, test_disparity = _plane_images(np.random.default_rng(9), 16)

    def aligned_abs_rel() -> float:
        return depth_metrics(model(test_images).numpy(), test_disparity, align="least_squares")["abs_rel"]

    before = aligned_abs_rel()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        images, disparity = _plane_images(rng, 8)
        optimizer.zero_grad()
        F.scale_shift_invariant_loss(model(images), disparity).backward()
        optimizer.step()
    after = aligned_abs_rel()
    print(f"aligned AbsRel of relative disparity: {before:.3f} before, {after:.3f} after training")
    assert after < 0.4 * before
