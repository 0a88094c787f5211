"""Contrastive-learning augmentations: sampling as torchvision's, formulas against torch, layers."""

from __future__ import annotations

import colorsys
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from nn_checks import gradcheck_layer
from tests.helpers import compare_with_torch

import lamina
from lamina import ShapeError, nn
from lamina.nn.augmentation_more import (
    ColorJitter,
    RandomErasing,
    adjust_hue,
    erasing_boxes,
    resized_crop,
    resized_crop_boxes,
)

LAYERS = [
    lambda: nn.RandomResizedCrop((5, 4)),
    lambda: nn.ColorJitter(0.4, 0.4, 0.4, 0.1),
    lambda: nn.RandomGrayscale(0.5),
    lambda: nn.RandomErasing(p=0.8),
    lambda: nn.RandomErasing(p=1.0, value="random"),
]


def _images(n=6, h=8, w=7, c=3, seed=0, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, (n, h, w, c)).astype(np.float32)


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


@pytest.mark.parametrize("make", LAYERS)
def test_random_in_training_reproducible_and_identity_in_evaluation(make):
    layer, x = make(), _images()
    lamina.manual_seed(1)
    first = layer(lamina.tensor(x)).numpy()
    second = layer(lamina.tensor(x)).numpy()
    lamina.manual_seed(1)
    again = layer(lamina.tensor(x)).numpy()
    assert first.shape == layer.compute_output_shape(x.shape) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    layer.eval()
    evaluated = layer(lamina.tensor(x)).numpy()
    if isinstance(layer, nn.RandomResizedCrop):     # the whole image, resized
        expected = TF.interpolate(_nchw(torch.tensor(x)), size=(5, 4), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(evaluated, _nhwc(expected).numpy(), atol=1e-6)
    else:
        np.testing.assert_array_equal(evaluated, x)
    config = json.loads(json.dumps(nn.layer_to_config(layer)))
    rebuilt = nn.layer_from_config(config)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()


def test_resized_crop_is_identity_in_evaluation_at_its_own_size():
    x = _images()
    layer = nn.RandomResizedCrop((8, 7)).eval()
    np.testing.assert_array_equal(layer(lamina.tensor(x)).numpy(), x)


@pytest.mark.parametrize("make", [
    lambda: nn.RandomResizedCrop((5, 4)),
    lambda: nn.ColorJitter(0.4, 0.4, 0.4),
    lambda: nn.RandomGrayscale(0.5),
    lambda: nn.RandomErasing(p=1.0, value=[0.1, 0.2, 0.3]),
])
def test_gradients_reach_the_images(make):
    lamina.set_default_dtype(np.float64)
    try:
        # values away from 0 and 1 keep the colour clamps off their kinks
        assert gradcheck_layer(make(), _images(3, low=0.3, high=0.7).astype(np.float64), reseed=3)
    finally:
        lamina.set_default_dtype(np.float32)


# -- RandomResizedCrop ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resized_crop_matches_torch_interpolate_of_the_crop(dtype):
    boxes = np.array([[0, 0, 8, 7], [1, 2, 3, 4], [4, 1, 4, 6]])
    x = _images(3)

    def theirs(images):
        crops = [TF.interpolate(_nchw(images[k:k + 1, t:t + h, s:s + w]), size=(6, 5), mode="bilinear",
                                align_corners=False) for k, (t, s, h, w) in enumerate(boxes)]
        return _nhwc(torch.cat(crops))

    compare_with_torch(lambda images: resized_crop(images, boxes, (6, 5)), theirs, x, dtype=dtype)


def test_resized_crop_boxes_follow_the_requested_area_and_ratio_distributions():
    n, side = 4000, 64
    scale, ratio = (0.1, 0.5), (1.0, 2.0)   # every draw fits: no rejection skews the laws
    boxes = resized_crop_boxes(n, side, side, scale, ratio, rng=np.random.default_rng(0))
    top, left, h, w = boxes.T
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= side and (left + w).max() <= side
    area = h * w / side**2
    log_ratio = np.log(w / h)
    # rounding the sides to pixels moves an area by at most ~(h + w) / side^2
    assert area.min() > scale[0] - 0.02 and area.max() < scale[1] + 0.02
    assert log_ratio.min() > math.log(ratio[0]) - 0.05 and log_ratio.max() < math.log(ratio[1]) + 0.05
    quantiles = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(np.quantile(area, quantiles), scale[0] + quantiles * (scale[1] - scale[0]), atol=0.015)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    np.testing.assert_allclose(np.quantile(log_ratio, quantiles), low + quantiles * (high - low), atol=0.03)
    # positions uniform over the places the box fits: mean relative offset 1/2
    assert abs(np.mean(top / np.maximum(side - h, 1)) - 0.5) < 0.03


def test_resized_crop_boxes_fall_back_to_the_centre_crop():
    # a square image has no box of full area with w/h in [2, 3]: the widest allowed centre strip
    boxes = resized_crop_boxes(5, 12, 12, scale=(1.0, 1.0), ratio=(2.0, 3.0), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(boxes, np.tile([3, 0, 6, 12], (5, 1)))


# -- ColorJitter ------------------------------------------------------------------------------


def torch_gray(x):
    return (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).unsqueeze(-1)


def torch_blend(x, other, factors):
    f = factors.reshape(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


TORCH_STEPS = {
    "brightness": lambda x, f: torch_blend(x, torch.zeros(()), f),
    "contrast": lambda x, f: torch_blend(x, torch_gray(x).mean(dim=(1, 2, 3), keepdim=True), f),
    "saturation": lambda x, f: torch_blend(x, torch_gray(x), f),
}
FACTORS = {"brightness": np.array([0.6, 1.3, 1.0, 0.8]), "contrast": np.array([1.4, 0.7, 0.5, 1.1]),
           "saturation": np.array([0.2, 1.5, 1.2, 0.9])}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", [[0], [1], [2], [2, 0, 1], [1, 2, 0]])
def test_color_jitter_matches_torchvision_formulas(order, dtype):
    names = ["brightness", "contrast", "saturation"]
    factors = {names[i]: FACTORS[names[i]] for i in order}
    orders = np.tile(order, (4, 1))

    def theirs(x):
        for i in order:
            x = TORCH_STEPS[names[i]](x, torch.tensor(FACTORS[names[i]], dtype=x.dtype))
        return x

    compare_with_torch(lambda x: ColorJitter.apply_jitter(x, factors, orders), theirs,
                       _images(4, 5, 4, low=0.1, high=0.9), dtype=dtype)


def test_color_jitter_applies_each_image_in_its_own_order():
    x = _images(4, 5, 4)
    factors = {"brightness": FACTORS["brightness"], "saturation": FACTORS["saturation"]}
    orders = np.array([[0, 2, 1, 3], [2, 0, 1, 3], [0, 2, 1, 3], [2, 1, 0, 3]])
    out = ColorJitter.apply_jitter(lamina.tensor(x), factors, orders).numpy()
    t = torch.tensor(x)
    for k in range(4):
        image, b, s = t[k:k + 1], torch.tensor(FACTORS["brightness"][k:k + 1]), torch.tensor(
            FACTORS["saturation"][k:k + 1])
        if orders[k][0] == 0:
            expected = TORCH_STEPS["saturation"](TORCH_STEPS["brightness"](image, b), s)
        else:
            expected = TORCH_STEPS["brightness"](TORCH_STEPS["saturation"](image, s), b)
        np.testing.assert_allclose(out[k], expected[0].numpy(), atol=1e-6)


def test_adjust_hue_turns_the_hue_as_colorsys():
    x = _images(2, 3, 4).astype(np.float64)
    shifts = np.array([0.25, -0.4])
    out = adjust_hue(lamina.tensor(x, dtype=np.float64), shifts).numpy()
    for index in np.ndindex(x.shape[:3]):
        h, s, v = colorsys.rgb_to_hsv(*x[index])
        np.testing.assert_allclose(out[index], colorsys.hsv_to_rgb((h + shifts[index[0]]) % 1.0, s, v), atol=1e-12)


def test_color_jitter_draws_factors_in_range_and_keeps_values_in_unit_interval():
    layer = ColorJitter(brightness=0.5, contrast=(0.9, 1.1), saturation=0.0, hue=0.2)
    assert layer.brightness == (0.5, 1.5) and layer.contrast == (0.9, 1.1) and layer.saturation is None
    assert layer.hue == (-0.2, 0.2)
    lamina.manual_seed(0)
    out = layer(lamina.tensor(_images(20))).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # one-channel images: brightness scales them, hue and saturation leave them alone
    grey = _images(3, c=1)
    brightness_only = ColorJitter.apply_jitter(lamina.tensor(grey), {"brightness": [0.5, 0.5, 0.5],
                                                                    "hue": [0.3, 0.3, 0.3]}, np.tile([3, 0], (3, 1)))
    np.testing.assert_allclose(brightness_only.numpy(), grey * 0.5, rtol=1e-6)


# -- RandomGrayscale ------------------------------------------------------------------------------


def test_random_grayscale_replaces_about_p_of_the_images_by_their_grey_level():
    x = _images(400, 2, 2)
    lamina.manual_seed(0)
    out = nn.RandomGrayscale(0.3)(lamina.tensor(x)).numpy()
    grey = (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
    turned = np.all(np.abs(out - grey) < 1e-6, axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(turned | kept) and abs(turned.mean() - 0.3) < 0.07
    ones = _images(3, c=1)
    np.testing.assert_array_equal(nn.RandomGrayscale(1.0)(lamina.tensor(ones)).numpy(), ones)


# -- RandomErasing ---------------------------------------------------------------------------------


def torch_erase(images_nchw, boxes, value):
    out = images_nchw.clone()
    for k, (i, j, h, w) in enumerate(boxes):
        out[k, :, i:i + h, j:j + w] = value
    return out


def test_random_erasing_erases_the_sampled_boxes_as_torchvision():
    x = _images(8, 10, 9)
    layer = RandomErasing(p=0.7, value=[0.5, -1.0, 2.0])
    lamina.manual_seed(4)
    out = layer(lamina.tensor(x)).numpy()
    lamina.manual_seed(4)
    boxes = erasing_boxes(8, 10, 9, 0.7)
    assert boxes[:, 2].any() and not boxes[:, 2].all()
    expected = torch_erase(_nchw(torch.tensor(x)), boxes, torch.tensor([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    np.testing.assert_array_equal(out, _nhwc(expected).numpy())


def test_erasing_gradient_is_zero_inside_the_box():
    boxes = np.array([[1, 2, 3, 2], [0, 0, 0, 0]])
    compare_with_torch(lambda x: RandomErasing.erase(x, boxes, 0.25),
                       lambda x: _nhwc(torch_erase(_nchw(x), boxes, 0.25)), _images(2, 5, 5), dtype=np.float64)


def test_erasing_boxes_follow_torchvision_defaults():
    n, height, width = 3000, 40, 30
    boxes = erasing_boxes(n, height, width, rng=np.random.default_rng(1))
    erased = boxes[:, 2] > 0
    assert abs(erased.mean() - 0.5) < 0.04
    top, left, h, w = boxes[erased].T
    assert h.max() < height and w.max() < width and (top + h).max() <= height and (left + w).max() <= width
    area = h * w / (height * width)
    assert area.min() > 0.02 - 0.01 and area.max() < 0.33 + 0.03
    log_ratio = np.log(h / w)
    assert log_ratio.min() > math.log(0.3) - 0.2 and log_ratio.max() < math.log(3.3) + 0.2
    # ratio is h / w here (w / h for the resized crop): tall boxes only, log-uniform
    tall = erasing_boxes(n, height, width, p=1.0, ratio=(1.0, 3.0), rng=np.random.default_rng(2))
    quantiles = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(np.quantile(np.log(tall[:, 2] / tall[:, 3]), quantiles), quantiles * math.log(3.0),
                               atol=0.08)


@pytest.mark.parametrize("call, error", [
    (lambda: nn.RandomResizedCrop(4, scale=(0.5, 0.1)), ValueError),
    (lambda: nn.RandomResizedCrop(4, ratio=(0.0, 1.0)), ValueError),
    (lambda: nn.ColorJitter(brightness=-0.1), ValueError),
    (lambda: nn.ColorJitter(hue=0.6), ValueError),
    (lambda: nn.RandomGrayscale(1.5), ValueError),
    (lambda: nn.RandomErasing(value="noise"), ValueError),
    (lambda: nn.RandomErasing(p=1.0, value=[1.0, 2.0])(lamina.tensor(_images())), ShapeError),
    (lambda: nn.RandomResizedCrop(4)(lamina.tensor(_images()[0])), ShapeError),
    (lambda: resized_crop(lamina.tensor(_images(2)), [[0, 0, 9, 7], [0, 0, 1, 1]], 3), ValueError),
])
def test_rejects_bad_arguments(call, error):
    with pytest.raises(error):
        call()
