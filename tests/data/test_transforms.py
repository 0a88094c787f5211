"""Per-sample image transforms: shapes and values against Pillow and NumPy, crops inside
the image, reproducible random draws, readable reprs and clear errors."""

import numpy as np
import pytest
from PIL import Image

import lamina
from lamina import backend
from lamina.data import transforms as T
from lamina.errors import ShapeError


def _image(h=9, w=12, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _pillow_resize(x, height, width, resample):
    pil = Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)
    out = np.asarray(pil.resize((width, height), getattr(Image.Resampling, resample.upper())))
    return out[..., None] if out.ndim == 2 else out


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic", "lanczos"])
@pytest.mark.parametrize("channels", [3, 1])
def test_resize_to_a_size_equals_pillows_resize(interpolation, channels):
    x = _image(c=channels)
    for size in ((5, 7), (17, 20)):
        got = T.Resize(size, interpolation=interpolation)(x)
        assert got.dtype == np.uint8 and got.shape == (*size, channels)
        np.testing.assert_array_equal(got, _pillow_resize(x, *size, interpolation))


def test_resize_of_float_images_equals_pillows_float_mode():
    x = np.random.default_rng(1).random((8, 10, 2)).astype(np.float32)
    got = T.Resize((5, 4))(x)
    assert got.dtype == np.float32 and got.shape == (5, 4, 2)
    for k in range(2):
        expected = np.asarray(Image.fromarray(x[..., k]).resize((4, 5), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(got[..., k], expected)


def test_resize_by_an_int_sets_the_shorter_side_and_keeps_the_aspect_ratio():
    assert T.Resize(6)(_image(9, 12)).shape == (6, 8, 3)
    assert T.Resize(6)(_image(12, 9)).shape == (8, 6, 3)
    assert T.Resize(4)(_image(7, 10)).shape == (4, 5, 3)    # int(4 * 10 / 7) = 5, rounded down
    np.testing.assert_array_equal(T.Resize(6)(_image(9, 12)), _pillow_resize(_image(9, 12), 6, 8, "bilinear"))


def test_center_crop_takes_the_middle_and_pads_small_images():
    x = _image(9, 12)
    np.testing.assert_array_equal(T.CenterCrop((5, 6))(x), x[2:7, 3:9])
    np.testing.assert_array_equal(T.CenterCrop(4)(x), x[2:6, 4:8])
    padded = T.CenterCrop((11, 12))(x)
    assert padded.shape == (11, 12, 3)
    np.testing.assert_array_equal(padded[1:10], x)
    assert not padded[0].any() and not padded[10].any()


def _positions(crop, source):
    """Every (top, left) at which ``crop`` is a window of ``source``."""
    h, w = crop.shape[:2]
    return [(i, j) for i in range(source.shape[0] - h + 1) for j in range(source.shape[1] - w + 1)
            if np.array_equal(source[i:i + h, j:j + w], crop)]


def test_random_crop_is_a_window_of_the_padded_image_at_every_position():
    x = _image(6, 7, seed=2)
    transform = T.RandomCrop((4, 5), padding=1)
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    lamina.manual_seed(0)
    seen = set()
    for _ in range(200):
        crop = transform(x)
        assert crop.shape == (4, 5, 3)
        found = _positions(crop, padded)
        assert len(found) == 1
        seen.add(found[0])
    assert seen == {(i, j) for i in range(5) for j in range(5)}


def test_random_crop_padding_modes_and_pad_if_needed():
    x = _image(3, 4, seed=3)
    crop = T.RandomCrop((3, 8), padding=(2, 0), padding_mode="reflect")(x)
    np.testing.assert_array_equal(crop, np.pad(x, ((0, 0), (2, 2), (0, 0)), mode="reflect"))
    grown = T.RandomCrop((5, 4), pad_if_needed=True, fill=7)(x)
    assert grown.shape == (5, 4, 3)
    assert len(_positions(grown, np.pad(x, ((2, 2), (0, 0), (0, 0)), constant_values=7))) >= 1
    with pytest.raises(ShapeError, match=r"RandomCrop: crop size \(5, 4\) is larger"):
        T.RandomCrop((5, 4))(x)


def test_horizontal_flip_is_exact_and_drawn_with_probability_p():
    x = _image(4, 5)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(x), x[:, ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=0.0)(x), x)
    np.testing.assert_array_equal(T.RandomVerticalFlip(p=1.0)(x), x[::-1])
    lamina.manual_seed(1)
    flips = [not np.array_equal(T.RandomHorizontalFlip(0.3)(x), x) for _ in range(400)]
    assert 0.22 < np.mean(flips) < 0.38


def test_random_resized_crop_resizes_a_box_inside_the_image():
    x = _image(20, 30, seed=4)
    transform = T.RandomResizedCrop((8, 6), scale=(0.2, 0.9), ratio=(0.5, 2.0), interpolation="bicubic")
    for k in range(30):
        with backend.random_scope(5, (k,)):
            got = transform(x)
        with backend.random_scope(5, (k,)):
            top, left, h, w = transform.box(20, 30)
        assert 0 <= top and top + h <= 20 and 0 <= left and left + w <= 30
        assert 0.2 * 600 * 0.9 <= h * w <= 0.9 * 600 * 1.1     # the drawn area, up to rounding
        expected = _pillow_resize(np.ascontiguousarray(x[top:top + h, left:left + w]), 8, 6, "bicubic")
        np.testing.assert_array_equal(got, expected)


def test_random_transforms_repeat_inside_the_same_random_scope():
    x = _image(10, 10)
    transform = T.Compose([T.RandomResizedCrop(6), T.RandomCrop(5, padding=2), T.RandomHorizontalFlip()])
    with backend.random_scope(11, (0, 3)):
        first = transform(x)
    with backend.random_scope(11, (0, 3)):
        second = transform(x)
    np.testing.assert_array_equal(first, second)


def test_to_float_scales_integers_to_the_unit_interval():
    x = _image()
    got = T.ToFloat()(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.astype(np.float32) / np.float32(255))
    wide = np.array([[[0], [65535]]], dtype=np.uint16)
    np.testing.assert_array_equal(T.ToFloat(np.float64)(wide), [[[0.0], [1.0]]])
    floats = np.full((2, 2, 1), 0.25, np.float64)
    assert T.ToFloat()(floats).dtype == np.float32


def test_normalize_is_exact_per_channel():
    x = np.random.default_rng(6).random((4, 5, 3))
    mean, std = [0.5, 0.25, 0.125], [0.5, 2.0, 0.25]
    got = T.Normalize(mean, std)(x)
    assert got.dtype == np.float64
    for k in range(3):
        np.testing.assert_array_equal(got[..., k], (x[..., k] - mean[k]) / std[k])
    single = T.Normalize(0.5, 0.25)(x.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, (x.astype(np.float32) - np.float32(0.5)) / np.float32(0.25))


def test_normalize_names_wrong_channels_and_integer_images():
    with pytest.raises(ShapeError, match=r"mean has 3 values but the image of shape \(2, 2, 1\) has 1 channels"):
        T.Normalize([0.1, 0.2, 0.3], [1, 1, 1])(np.zeros((2, 2, 1)))
    with pytest.raises(TypeError, match="apply ToFloat first"):
        T.Normalize(0, 1)(np.zeros((2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="std must not be 0"):
        T.Normalize(0, [1, 0])


def test_compose_applies_in_order_and_lambda_wraps_a_function():
    def add_one(x):
        return x + 1

    transform = T.Compose([T.ToFloat(), T.Lambda(add_one), T.CenterCrop(2)])
    x = _image(4, 4)
    np.testing.assert_array_equal(transform(x), x[1:3, 1:3] / np.float32(255) + 1)
    text = repr(transform)
    assert text.startswith("Compose(\n") and "Lambda(add_one)" in text and "CenterCrop(size=(2, 2))" in text
    assert repr(T.Resize(8)) == "Resize(size=8, interpolation='bilinear')"
    assert repr(T.RandomHorizontalFlip(0.25)) == "RandomHorizontalFlip(p=0.25)"
    assert "scale=(0.08, 1.0)" in repr(T.RandomResizedCrop(4))


def test_transforms_name_themselves_when_given_a_batch_or_bad_options():
    with pytest.raises(ShapeError, match=r"CenterCrop: expected one image .* got shape \(2, 4, 4, 3\)"):
        T.CenterCrop(2)(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="Resize: interpolation must be one of"):
        T.Resize(4, interpolation="cubic")
    with pytest.raises(ValueError, match="RandomCrop: padding must be"):
        T.RandomCrop(4, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="RandomHorizontalFlip: p must lie in"):
        T.RandomHorizontalFlip(1.5)
