import math

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina.errors import ShapeError
from lamina.vision import MultiScaleRoIAlign, fpn_levels, roi_align, roi_pool

# rows (batch_index, x1, y1, x2, y2) in image pixels; the features are the image at scale 1/2
ROIS = np.array([
    [0, 4.3, 2.2, 15.7, 13.9],       # inside
    [1, -6.0, -5.5, 9.1, 7.4],       # partly left of and above the image
    [0, 14.5, 10.2, 30.8, 26.1],     # partly right of and below the image
    [1, 7.1, 6.6, 7.4, 6.9],         # tiny
    [0, -3.3, -2.7, 27.9, 23.6],     # larger than the image
    [1, 19.2, 14.3, 23.8, 21.5],     # near the far corner
])
SCALE = 0.5
FEATURES = (2, 10, 12, 3)            # N, H, W, C


def _sample(image, y, x):
    """torchvision's bilinear sample of an (H, W, C) torch image at (y, x), with its range rules."""
    height, width = image.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(image.shape[2], dtype=image.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * image[y_low, x_low] + hy * lx * image[y_low, x_high]
            + ly * hx * image[y_high, x_low] + ly * lx * image[y_high, x_high])


def torch_roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign box by box, bin by bin and sample by sample, on an NHWC torch tensor."""
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    boxes = []
    for roi in rois:
        image = x[int(roi[0])]
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        rows = []
        for p in range(out_h):
            row = []
            for q in range(out_w):
                total = torch.zeros(x.shape[3], dtype=x.dtype)
                for i in range(grid_h):
                    y = y1 + p * bin_h + (i + 0.5) * bin_h / grid_h
                    for j in range(grid_w):
                        total = total + _sample(image, y, x1 + q * bin_w + (j + 0.5) * bin_w / grid_w)
                row.append(total / count)
            rows.append(torch.stack(row))
        boxes.append(torch.stack(rows))
    return torch.stack(boxes)


def torch_roi_pool(x, rois, output_size, spatial_scale):
    """RoIPool box by box and bin by bin (torch's max routes the gradient to one maximal pixel)."""
    out_h, out_w = output_size
    height, width = x.shape[1:3]
    dtype = np.float32 if x.dtype == torch.float32 else np.float64
    t = np.dtype(dtype).type
    boxes = []
    for roi in rois.astype(dtype):
        image = x[int(roi[0])]
        x1, y1, x2, y2 = (int(math.floor(abs(v * t(spatial_scale)) + 0.5) * np.sign(v)) for v in roi[1:])
        bin_h = t(max(y2 - y1 + 1, 1)) / t(out_h)
        bin_w = t(max(x2 - x1 + 1, 1)) / t(out_w)
        rows = []
        for p in range(out_h):
            top = min(max(int(np.floor(t(p) * bin_h)) + y1, 0), height)
            bottom = min(max(int(np.ceil(t(p + 1) * bin_h)) + y1, 0), height)
            row = []
            for q in range(out_w):
                left = min(max(int(np.floor(t(q) * bin_w)) + x1, 0), width)
                right = min(max(int(np.ceil(t(q + 1) * bin_w)) + x1, 0), width)
                if bottom <= top or right <= left:
                    row.append(torch.zeros(x.shape[3], dtype=x.dtype))
                else:
                    row.append(image[top:bottom, left:right].reshape(-1, x.shape[3]).max(dim=0).values)
            rows.append(torch.stack(row))
        boxes.append(torch.stack(rows))
    return torch.stack(boxes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_the_reference(dtype, aligned, sampling_ratio):
    size = (3, 2)
    compare_with_torch(lambda x: roi_align(x, ROIS, size, SCALE, sampling_ratio, aligned),
                       lambda x: torch_roi_align(x, ROIS, size, SCALE, sampling_ratio, aligned),
                       randn(*FEATURES, seed=1), dtype=dtype)


def test_roi_align_takes_a_list_of_boxes_per_image():
    x = randn(*FEATURES, seed=2)
    per_image = [ROIS[ROIS[:, 0] == i, 1:] for i in range(2)]
    as_rows = np.concatenate([ROIS[ROIS[:, 0] == i] for i in range(2)])
    np.testing.assert_allclose(roi_align(x, per_image, 2, SCALE).numpy(), roi_align(x, as_rows, 2, SCALE).numpy())


def test_roi_align_gradcheck_and_second_derivatives():
    fn = lambda x: roi_align(x, ROIS[:3], 2, SCALE, sampling_ratio=0, aligned=True)   # noqa: E731
    x = randn(2, 6, 7, 2, seed=3)
    assert check_gradients(fn, x)
    assert check_second_derivatives(lambda t: fn(t) * fn(t), x)
    compare_double_backward_with_torch(lambda t: fn(t) ** 2,
                                       lambda t: torch_roi_align(t, ROIS[:3], (2, 2), SCALE, 0, True) ** 2, x)


def test_roi_align_of_a_constant_map_is_that_constant_inside():
    x = np.full((1, 8, 8, 2), 3.0)
    out = roi_align(x, np.array([[0, 1.2, 1.5, 6.3, 5.9]]), 4, aligned=True).numpy()
    np.testing.assert_allclose(out, 3.0)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("shape", [(1, 0, 4, 2), (1, 4, 0, 2), (2, 0, 0, 1)])
def test_roi_align_of_an_empty_feature_map_is_zero(shape, aligned):
    x = lamina.tensor(np.zeros(shape), dtype=np.float64, requires_grad=True)
    boxes = np.array([[0, -0.5, -0.5, 0.2, 0.2], [0, 0.0, 0.0, 0.0, 0.0], [0, 1.0, 1.0, 5.0, 5.0]])
    for sampling_ratio in (-1, 2):
        out = roi_align(x, boxes, (2, 3), aligned=aligned, sampling_ratio=sampling_ratio)
        assert out.shape == (3, 2, 3, shape[3])
        assert not out.numpy().any()
        out.sum().backward()
        assert x.grad.shape == shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [SCALE, 1.0])
def test_roi_pool_matches_the_reference(dtype, scale):
    x = randn(*FEATURES, seed=4)                        # distinct values: one maximum per bin
    compare_with_torch(lambda t: roi_pool(t, ROIS, (3, 2), scale),
                       lambda t: torch_roi_pool(t, ROIS, (3, 2), scale), x, dtype=dtype)


def test_roi_pool_gradcheck():
    assert check_gradients(lambda x: roi_pool(x, ROIS[:3], 2, SCALE), randn(2, 6, 7, 2, seed=5))


def test_roi_pool_rounds_halves_away_from_zero():
    x = (16.0 - np.arange(16.0)).reshape(1, 4, 4, 1)   # decreasing: a wider box would pick column 0
    # x1 = 0.5 rounds to 1 (NumPy's round would give 0): the box starts at column 1
    out = roi_pool(x, np.array([[0, 0.5, 0.0, 1.0, 0.0]]), 1).numpy()
    assert out.item() == x[0, 0, 1, 0]


def test_roi_ops_refuse_bad_input():
    x = randn(*FEATURES)
    with pytest.raises(ShapeError, match="roi_align"):
        roi_align(x[0], ROIS, 2)
    with pytest.raises(ShapeError, match="roi_pool"):
        roi_pool(x, ROIS[:, 1:], 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(x, np.array([[2, 0, 0, 4, 4]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(x, ROIS, 0)


def test_fpn_levels_follow_the_formula():
    sides = np.array([10.0, 111.0, 112.0, 224.0, 447.0, 448.0, 1000.0])
    boxes = np.column_stack([np.zeros(7), np.zeros(7), sides, sides])
    expected = np.clip(np.floor(4 + np.log2(sides / 224) + 1e-6), 2, 5) - 2
    np.testing.assert_array_equal(fpn_levels(boxes, 2, 5), expected)
    np.testing.assert_array_equal(fpn_levels(boxes, 2, 5), [0, 0, 1, 2, 2, 3, 3])


def test_multi_scale_roi_align_pools_each_box_from_its_level():
    features = [randn(1, 16, 16, 2, seed=6), randn(1, 8, 8, 2, seed=7)]
    boxes = np.array([[0, 2.0, 3.0, 60.0, 50.0], [0, 0.0, 0.0, 300.0, 260.0], [0, 5.0, 5.0, 40.0, 30.0]])
    pooler = MultiScaleRoIAlign([1 / 4, 1 / 8], 2, sampling_ratio=2, canonical_scale=224, canonical_level=4)
    out = pooler(features, boxes).numpy()
    levels = fpn_levels(boxes[:, 1:], 2, 3)
    assert levels.tolist() == [0, 1, 0]
    for k, level in enumerate(levels):
        alone = roi_align(features[level], boxes[k:k + 1], 2, [1 / 4, 1 / 8][level], 2).numpy()
        np.testing.assert_allclose(out[k], alone[0])


def test_multi_scale_roi_align_passes_gradients_to_every_level():
    features = [lamina.tensor(randn(1, 16, 16, 2, seed=8), requires_grad=True),
                lamina.tensor(randn(1, 8, 8, 2, seed=9), requires_grad=True)]
    boxes = [np.array([[2.0, 3.0, 60.0, 50.0], [0.0, 0.0, 300.0, 260.0]])]
    MultiScaleRoIAlign([1 / 4, 1 / 8], 2)(features, boxes).sum().backward()
    assert all(np.abs(f.grad).sum() > 0 for f in features)


# -- application: refining proposals with a RoIAlign head -----------------------------------------

SCENE = 24


def _squares(count, seed):
    """Noisy images of one bright rectangle each, its box and a proposal: the box with each
    side moved by up to 30% of the box's size."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.1, (count, SCENE, SCENE, 1))
    boxes = np.zeros((count, 4))
    for i in range(count):
        h, w = rng.integers(6, 12, 2)
        top, left = rng.integers(0, SCENE - h + 1), rng.integers(0, SCENE - w + 1)
        images[i, top:top + h, left:left + w] += 1.0
        boxes[i] = [left, top, left + w, top + h]
    sides = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    return images.astype(np.float32), boxes, boxes + rng.uniform(-0.3, 0.3, (count, 4)) * sides


def test_a_roi_align_head_learns_to_refine_proposals_with_the_giou_loss():
    from lamina import nn
    from lamina.optim import Adam
    from lamina.vision import BoxCoder, box_iou, generalized_box_iou_loss

    lamina.manual_seed(0)
    backbone = nn.Sequential([nn.Conv2D(8, 3, padding="same", activation="relu"),
                              nn.Conv2D(8, 3, stride=2, padding="same", activation="relu")])
    head, coder = nn.Dense(4, kernel_init="zeros"), BoxCoder()   # zero offsets: the proposals at first

    def refine(images, proposals):
        rois = np.column_stack([np.arange(len(proposals)), proposals])
        pooled = roi_align(backbone(lamina.tensor(images)), rois, 5, spatial_scale=0.5, sampling_ratio=2,
                           aligned=True)
        return coder.decode_single(head(pooled.reshape(len(proposals), -1)), proposals.astype(np.float32))

    def mean_iou(images, boxes, proposals):
        with lamina.no_grad():
            found = refine(images, proposals).numpy().astype(np.float64)
        return np.diag(box_iou(found, boxes)).mean()

    held_out = _squares(64, 1000)
    before = mean_iou(*held_out)
    params = backbone.parameters() + head.parameters()
    optimizer = Adam(params, lr=0.01)
    for step in range(80):
        images, boxes, proposals = _squares(32, step)
        loss = generalized_box_iou_loss(refine(images, proposals), boxes.astype(np.float32), reduction="mean")
        for p in params:
            p.grad = None
        loss.backward()
        optimizer.step()
    after = mean_iou(*held_out)
    assert before == pytest.approx(np.diag(box_iou(held_out[2], held_out[1])).mean(), abs=1e-5)
    assert after > before + 0.15, (before, after)
