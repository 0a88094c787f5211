"""ms_deform_attn (Deformable DETR): values and the gradients of value, locations and weights
against a float64 torch rewrite of the reference ``ms_deform_attn_core_pytorch`` (torch's
grid_sample) on several levels of different sizes with points outside the maps; numerical
first and second derivatives at fractional locations; the reference points; the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_double_backward_with_torch, compare_with_torch
from lamina import ShapeError

SHAPES = [(4, 5), (3, 2), (1, 1)]


def starts_of(shapes) -> list[int]:
    return [0] + list(np.cumsum([h * w for h, w in shapes])[:-1])


def torch_ms_deform_attn(value, shapes, locations, weights):
    """The reference's pure-PyTorch core: each level's value map as (N M, D, H, W), sampled by
    grid_sample (bilinear, zeros, align_corners=False) at 2 loc - 1, weighted and summed."""
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    samples = []
    for level, (h, w) in enumerate(shapes):
        maps = per_level[level].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)          # (N M, Lq, P, 2)
        samples.append(TF.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    a = weights.transpose(1, 2).reshape(n * m, 1, lq, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * a).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


def inputs(n=2, lq=5, m=2, d=3, points=2, shapes=SHAPES, seed=0, low=-0.25, high=1.25):
    """value, locations (a quarter of the range outside [0, 1] on each side) and weights."""
    rng = np.random.default_rng(seed)
    s = sum(h * w for h, w in shapes)
    value = rng.standard_normal((n, s, m, d))
    locations = rng.uniform(low, high, (n, lq, m, len(shapes), points, 2))
    weights = rng.uniform(0.1, 1.0, (n, lq, m, len(shapes), points))
    return value, locations, weights


def ours(shapes=SHAPES):
    return lambda v, loc, a: F.ms_deform_attn(v, shapes, starts_of(shapes), loc, a)


def theirs(shapes=SHAPES):
    return lambda v, loc, a: torch_ms_deform_attn(v, shapes, loc, a)


def test_values_and_gradients_match_the_reference_in_float64():
    arrays = inputs()
    assert (arrays[1] < 0).any() and (arrays[1] > 1).any()
    compare_with_torch(ours(), theirs(), *arrays, dtype=np.float64)


def test_values_and_gradients_match_the_reference_in_float32_with_more_points():
    shapes = [(6, 7), (3, 4), (2, 2), (1, 3)]
    arrays = inputs(n=1, lq=7, m=3, d=4, points=3, shapes=shapes, seed=1)
    out = compare_with_torch(ours(shapes), theirs(shapes), *arrays, dtype=np.float32, rtol=1e-4)
    assert out[0].dtype == np.float32 and out[0].shape == (1, 7, 12)


def test_gradient_of_one_input_at_a_time():
    arrays = inputs(seed=2)
    for k in range(3):
        wants = [i == k for i in range(3)]
        compare_with_torch(ours(), theirs(), *arrays, dtype=np.float64, grad=wants)


def test_numerical_gradients_at_fractional_locations():
    # whole-pixel positions are kinks of the bilinear kernel: keep u, v away from them
    value, locations, weights = inputs(n=1, lq=3, m=2, d=2, seed=3)
    sizes = np.array([(w, h) for h, w in SHAPES], dtype=float)[:, None, :]
    pixels = locations * sizes - 0.5
    pixels = np.floor(pixels) + np.clip(pixels - np.floor(pixels), 0.2, 0.8)
    locations = (pixels + 0.5) / sizes
    assert check_gradients(ours(), value, locations, weights)


def test_second_derivatives():
    value, locations, weights = inputs(n=1, lq=2, m=2, d=2, points=1, seed=4, low=0.05, high=0.95)
    assert check_second_derivatives(ours(), value, locations, weights)
    compare_double_backward_with_torch(ours(), theirs(), value, locations, weights)


def test_a_point_on_a_pixel_centre_reads_the_pixel_and_far_outside_reads_zero():
    shapes = [(2, 3), (2, 2)]
    value = np.arange(10 * 1 * 2, dtype=float).reshape(1, 10, 1, 2)
    locations = np.zeros((1, 2, 1, 2, 1, 2))
    locations[0, 0, 0, 0, 0] = ((2 + 0.5) / 3, (1 + 0.5) / 2)      # level 0, row 1, column 2: row 5 of value
    locations[0, 0, 0, 1, 0] = (5.0, 5.0)                           # outside level 1
    locations[0, 1, 0, :, 0] = (-3.0, 0.5)
    weights = np.full((1, 2, 1, 2, 1), 0.5)
    out = F.ms_deform_attn(lamina.tensor(value), shapes, [0, 6], lamina.tensor(locations), lamina.tensor(weights))
    np.testing.assert_allclose(out.numpy()[0], [0.5 * value[0, 5, 0], [0.0, 0.0]], atol=1e-6)


def test_reference_points_match_the_reference_formula():
    shapes = [(3, 4), (2, 1)]
    ratios = np.array([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 0.75], [0.6, 1.0]]])
    expected = []
    for h, w in shapes:                       # the reference's get_reference_points, in torch
        ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float64),
                                      torch.linspace(0.5, w - 0.5, w, dtype=torch.float64), indexing="ij")
        level = shapes.index((h, w))
        ref_y = ref_y.reshape(-1)[None] / (torch.tensor(ratios)[:, None, level, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (torch.tensor(ratios)[:, None, level, 0] * w)
        expected.append(torch.stack((ref_x, ref_y), -1))
    expected = torch.cat(expected, 1)[:, :, None] * torch.tensor(ratios)[:, None]
    got = F.deformable_reference_points(np.array(shapes), ratios, dtype=np.float64)
    assert F.deformable_reference_points(shapes, ratios).dtype == np.float32
    assert got.shape == (2, 14, 2, 2)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


def test_accepts_spatial_shapes_as_tensors_and_no_start_index():
    value, locations, weights = inputs(seed=5)
    want = F.ms_deform_attn(value, SHAPES, starts_of(SHAPES), locations, weights).numpy()
    got = F.ms_deform_attn(value, lamina.tensor(np.array(SHAPES)), None, locations, weights).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("change, error, words", [
    (dict(value=(2, 26, 2, 3)), ShapeError, "S=26"),
    (dict(value=(2, 27, 3)), ShapeError, "(N, S, M, D)"),
    (dict(locations=(2, 5, 2, 2, 2, 2)), ShapeError, "L=3"),
    (dict(weights=(2, 5, 2, 3, 3)), ShapeError, "attention_weights"),
    (dict(starts=[0, 20, 25]), ValueError, "level_start_index"),
    (dict(shapes=[(4, 5), (3, 0), (1, 1)]), ShapeError, "spatial_shapes"),
])
def test_errors_name_what_does_not_fit(change, error, words):
    value, locations, weights = inputs()
    value = np.zeros(change.get("value", value.shape))
    locations = np.zeros(change.get("locations", locations.shape))
    weights = np.zeros(change.get("weights", weights.shape))
    shapes = change.get("shapes", SHAPES)
    with pytest.raises(error, match="ms_deform_attn") as info:
        F.ms_deform_attn(value, shapes, change.get("starts", starts_of(SHAPES)), locations, weights)
    assert words in str(info.value)
