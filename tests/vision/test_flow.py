"""Optical flow utilities: RAFT's sequence loss against torch, the end-point error, backward
warping of known translations (values and gradients), the colour coding against a direct
reference of Baker et al.'s formula, and the synthetic pairs' exact ground truth."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.vision import endpoint_error, flow_to_color, make_colorwheel, sequence_loss, synthetic_flow_pairs, warp


def _torch_sequence_loss(predictions, flow, valid, gamma=0.8, max_flow=400.0):
    keep = valid & (flow.pow(2).sum(-1).sqrt() < max_flow)
    n = len(predictions)
    return sum(gamma ** (n - 1 - i) * ((p - flow).abs() * keep[..., None]).mean() for i, p in enumerate(predictions))


def test_sequence_loss_equals_torch():
    rng = np.random.default_rng(0)
    preds = [rng.standard_normal((2, 5, 4, 2)) for _ in range(3)]
    flow = rng.standard_normal((2, 5, 4, 2)) * 3
    flow[0, 0, 0] = [500.0, 0.0]                        # above max_flow: left out
    valid = rng.uniform(size=(2, 5, 4)) > 0.3

    def ours(*p):
        return sequence_loss(list(p), flow, valid)

    def theirs(*p):
        return _torch_sequence_loss(list(p), torch.tensor(flow), torch.tensor(valid))

    compare_with_torch(ours, theirs, *preds, dtype=np.float64)


def test_sequence_loss_weighs_later_predictions_more_and_checks_shapes():
    flow = np.zeros((1, 2, 2, 2))
    one = lamina.tensor(np.ones((1, 2, 2, 2)))
    zero = lamina.tensor(np.zeros((1, 2, 2, 2)))
    assert float(sequence_loss([one, zero], flow).numpy()) == pytest.approx(0.8)
    assert float(sequence_loss([zero, one], flow).numpy()) == pytest.approx(1.0)
    with pytest.raises(ShapeError, match="prediction 0"):
        sequence_loss([lamina.tensor(np.zeros((1, 2, 3, 2)))], flow)
    with pytest.raises(ValueError, match="non-empty"):
        sequence_loss([], flow)


def test_endpoint_error_and_rates():
    flow = np.zeros((1, 1, 4, 2))
    pred = np.array([[[[0.5, 0.0], [3.0, 4.0], [2.0, 0.0], [0.0, 6.0]]]])
    metrics = endpoint_error(pred, flow)
    assert metrics["epe"] == pytest.approx((0.5 + 5.0 + 2.0 + 6.0) / 4)
    assert (metrics["1px"], metrics["3px"], metrics["5px"]) == (0.25, 0.5, 0.5)
    valid = np.array([[[True, False, True, False]]])
    assert endpoint_error(pred, flow, valid) == {"epe": 1.25, "1px": 0.5, "3px": 1.0, "5px": 1.0}
    with pytest.raises(ShapeError, match="endpoint_error"):
        endpoint_error(pred[..., :1], flow)


def test_warp_by_a_whole_pixel_translation_shifts_the_image():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 6, 7, 3))
    flow = np.broadcast_to(np.array([2.0, -1.0]), (2, 6, 7, 2))        # read 2 px right, 1 px up
    out = warp(image, flow).numpy()
    np.testing.assert_allclose(out[:, 1:, :5], image[:, :5, 2:], atol=1e-6)
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)                # read above the image: zeros
    np.testing.assert_allclose(out[:, :, 5:], 0.0, atol=1e-6)
    border = warp(image, flow, padding_mode="border").numpy()
    np.testing.assert_allclose(border[:, 0, :5], image[:, 0, 2:], atol=1e-6)


def test_warp_of_a_half_pixel_shift_averages_neighbours():
    image = np.arange(5.0)[None, None, :, None].repeat(2, 1)           # a ramp along x
    out = warp(image, np.broadcast_to([0.5, 0.0], (1, 2, 5, 2))).numpy()[0, 0, :4, 0]
    np.testing.assert_allclose(out, np.arange(4) + 0.5)


def test_warp_gradients_equal_torch_and_finite_differences():
    rng = np.random.default_rng(2)
    image, flow = rng.standard_normal((1, 4, 5, 2)), rng.uniform(-1.3, 1.3, (1, 4, 5, 2))

    def theirs(x, f):
        h, w = x.shape[1:3]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=f.dtype), torch.arange(w, dtype=f.dtype), indexing="ij")
        gx = 2 * (xs + f[..., 0]) / (w - 1) - 1
        gy = 2 * (ys + f[..., 1]) / (h - 1) - 1
        grid = torch.stack([gx, gy], dim=-1)
        out = torch.nn.functional.grid_sample(x.permute(0, 3, 1, 2), grid, align_corners=True)
        return out.permute(0, 2, 3, 1)

    compare_with_torch(warp, theirs, image, flow, dtype=np.float64)
    assert check_gradients(warp, image, flow)


def _reference_wheel():
    """The Middlebury colour wheel written out segment by segment."""
    rows = []
    for i in range(15):
        rows.append((255, math.floor(255 * i / 15), 0))
    for i in range(6):
        rows.append((255 - math.floor(255 * i / 6), 255, 0))
    for i in range(4):
        rows.append((0, 255, math.floor(255 * i / 4)))
    for i in range(11):
        rows.append((0, 255 - math.floor(255 * i / 11), 255))
    for i in range(13):
        rows.append((math.floor(255 * i / 13), 0, 255))
    for i in range(6):
        rows.append((255, 0, 255 - math.floor(255 * i / 6)))
    return np.array(rows, dtype=np.float64)


def _reference_color(flow):
    """Pixel by pixel: normalise by the largest norm, pick the colour by the angle and
    desaturate by the norm, as torchvision's flow_to_image."""
    wheel = _reference_wheel()
    largest = max(math.hypot(u, v) for u, v in flow.reshape(-1, 2)) + float(np.finfo(np.float32).eps)
    out = np.zeros((*flow.shape[:-1], 3), dtype=np.uint8)
    for index in np.ndindex(flow.shape[:-1]):
        u, v = flow[index].astype(np.float64) / largest
        position = (math.atan2(-v, -u) / math.pi + 1) / 2 * 54
        k0 = math.floor(position)
        k1 = 0 if k0 + 1 == 55 else k0 + 1
        f = position - k0
        radius = math.hypot(u, v)
        for c in range(3):
            colour = (1 - f) * wheel[k0, c] / 255 + f * wheel[k1, c] / 255
            out[index + (c,)] = math.floor(255 * (1 - radius * (1 - colour)))
    return out


def test_colorwheel_and_flow_to_color_follow_the_formula():
    np.testing.assert_array_equal(make_colorwheel(), _reference_wheel())
    flow = np.random.default_rng(3).standard_normal((2, 5, 6, 2)).astype(np.float32) * 4
    flow[0, 0, 0] = [-1e-3, 0.0]        # atan2(-0, 1e-3): the middle of the wheel
    flow[0, 0, 1] = [1.0, -1e-7]        # an angle next to pi: the last entry wraps to the first
    image = flow_to_color(flow)
    assert image.dtype == np.uint8 and image.shape == (2, 5, 6, 3)
    np.testing.assert_array_equal(image, _reference_color(flow))
    np.testing.assert_array_equal(flow_to_color(flow[1]), _reference_color(flow[1]))
    np.testing.assert_array_equal(flow_to_color(np.zeros((3, 3, 2), np.float32)), 255)   # no motion: white


@pytest.mark.parametrize("motion", ["translation", "affine", "smooth", "mixed"])
def test_synthetic_pairs_have_exact_flow(motion):
    image1, image2, flow, valid = synthetic_flow_pairs(4, (24, 20), motion=motion, max_flow=3.0, seed=5)
    assert image1.shape == image2.shape == (4, 24, 20, 3) and flow.shape == (4, 24, 20, 2) and valid.shape == (4, 24,
                                                                                                                20)
    assert np.sqrt((flow ** 2).sum(-1)).max() <= 3.0 + 1e-5 and 0.5 < valid.mean() < 1.0
    if motion == "translation":
        assert np.ptp(flow.reshape(4, -1, 2), axis=1).max() == 0
    # warping the second image back by the flow gives the first, up to bilinear interpolation
    error = np.abs(warp(image2, flow).numpy() - image1)[valid].mean()
    assert error < 0.1 * np.abs(image2 - image1)[valid].mean()
    again = synthetic_flow_pairs(4, (24, 20), motion=motion, max_flow=3.0, seed=5)
    np.testing.assert_array_equal(again[0], image1)


def test_synthetic_pairs_reject_bad_arguments():
    with pytest.raises(ValueError, match="motion"):
        synthetic_flow_pairs(2, 16, motion="rotation")
    with pytest.raises(ValueError, match="size"):
        synthetic_flow_pairs(2, (1, 16))
