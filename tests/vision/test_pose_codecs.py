"""Pose codecs: MSRA heatmap targets (peaks, weights, unbiased sub-pixel centres), decoding of
rendered Gaussians by argmax + quarter offset, DARK and soft-argmax, the crop's affine matrix
against mmpose's three-point construction, the bilinear warp, heatmap flipping and errors."""

import numpy as np
import pytest

from lamina.vision.pose_codecs import (
    bbox_to_center_scale,
    decode_heatmaps,
    encode_heatmaps,
    fix_aspect_ratio,
    flip_heatmaps,
    get_warp_matrix,
    heatmap_maximum,
    transform_points,
    warp_affine,
)


def _subpixel_points(count, seed, low=10.0, high=30.0):
    return np.random.default_rng(seed).uniform(low, high, size=(count, 3, 2))


def test_target_peak_sits_at_the_rounded_keypoint_with_sigma_two():
    points = np.array([[[10.3, 20.8], [4.6, 2.2]]])  # input pixels, stride 2 -> cells (5.15, 10.4), (2.3, 1.1)
    heatmaps, weights = encode_heatmaps(points, [[1, 1]], input_size=(64, 48), heatmap_size=(32, 24))
    assert heatmaps.shape == (1, 24, 32, 2) and weights.tolist() == [[1.0, 1.0]]
    for k, (x, y) in enumerate([(5, 10), (2, 1)]):
        assert np.unravel_index(heatmaps[0, :, :, k].argmax(), (24, 32)) == (y, x)
        assert heatmaps[0, y, x, k] == 1.0
        assert heatmaps[0, y, x + 1, k] == pytest.approx(np.exp(-1 / 8))  # exp(-d^2 / (2 sigma^2)), sigma 2
        assert heatmaps[0, y, x + 7, k] == 0.0  # outside the 3 sigma window


def test_unbiased_target_is_centred_at_the_subpixel_point():
    points = _subpixel_points(2, seed=0)
    heatmaps, _ = encode_heatmaps(points, None, (40, 40), (40, 40), sigma=2.0, unbiased=True)
    ys, xs = np.mgrid[0:40, 0:40]
    for n in range(2):
        for k in range(3):
            h = heatmaps[n, :, :, k]
            centre = np.array([(h * xs).sum(), (h * ys).sum()]) / h.sum()
            assert np.abs(centre - points[n, k]).max() < 1e-6


def test_invisible_and_outside_keypoints_get_zero_weight_and_no_gaussian():
    points = np.array([[[8.0, 8.0], [8.0, 8.0], [200.0, 8.0]]])
    heatmaps, weights = encode_heatmaps(points, [[1, 0, 1]], (32, 32), (16, 16))
    assert weights.tolist() == [[1.0, 0.0, 0.0]]
    assert heatmaps[0, :, :, 0].max() == 1.0 and not heatmaps[0, :, :, 1:].any()


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigma", [2.0, 1.5])
def test_weight_is_zero_exactly_when_the_window_holds_no_cell_of_the_grid(sigma, unbiased):
    # sigma 2: cells within 6 of mu; sigma 1.5: within 4.5, so 4 cells on either side
    reach = int(3 * sigma)
    inside = [-reach, 7 + reach]                    # the window's last (first) cell is 0 (7)
    outside = [-reach - 1, 8 + reach]               # one cell further: the window misses the 8 x 8 grid
    for coordinate, expected in [(c, 1.0) for c in inside] + [(c, 0.0) for c in outside]:
        for point in ([coordinate, 3.0], [3.0, coordinate]):
            heatmaps, weights = encode_heatmaps(np.array([[point]], dtype=float), None, (8, 8), (8, 8),
                                                sigma=sigma, unbiased=unbiased)
            assert weights.tolist() == [[expected]], point
            assert (heatmaps.max() > 0) == bool(expected)


def test_argmax_with_quarter_offset_is_within_a_quarter_cell():
    points = _subpixel_points(40, seed=1)
    heatmaps, _ = encode_heatmaps(points, None, (40, 40), (40, 40), unbiased=True)
    decoded, scores = decode_heatmaps(heatmaps, method="argmax")
    assert np.abs(decoded - points).max() <= 0.25 + 1e-12
    plain, _ = heatmap_maximum(heatmaps)
    assert np.abs(decoded - points).mean() < np.abs(plain - points).mean()
    assert np.all(scores > 0.8)


def test_dark_recovers_subpixel_keypoints():
    points = _subpixel_points(40, seed=2)
    heatmaps, _ = encode_heatmaps(points, None, (40, 40), (40, 40), unbiased=True)
    decoded, _ = decode_heatmaps(heatmaps, method="dark")
    assert np.abs(decoded - points).max() < 0.05


def test_soft_argmax_of_log_gaussians_is_their_centre():
    points = _subpixel_points(10, seed=3)
    heatmaps, _ = encode_heatmaps(points, None, (40, 40), (40, 40), unbiased=True)
    decoded, scores = decode_heatmaps(np.log(np.maximum(heatmaps, 1e-300)), method="soft_argmax")
    assert np.abs(decoded - points).max() < 1e-3 and np.all(scores <= 0)  # logits need not be positive
    scaled, _ = decode_heatmaps(np.log(np.maximum(heatmaps, 1e-300)), (80, 20), method="soft_argmax")
    np.testing.assert_allclose(scaled, decoded * [2.0, 0.5])


def test_decoding_scales_to_input_pixels_and_marks_empty_maps():
    points = np.array([[[21.0, 13.0]]])
    heatmaps, _ = encode_heatmaps(points, None, (48, 64), (12, 16), sigma=1.0, unbiased=True)
    decoded, _ = decode_heatmaps(heatmaps, input_size=(48, 64), method="dark")
    assert np.abs(decoded - points).max() < 0.2
    empty, scores = decode_heatmaps(np.zeros((1, 4, 4, 2)), input_size=(16, 16))
    assert empty.tolist() == [[[-1.0, -1.0], [-1.0, -1.0]]] and scores.tolist() == [[0.0, 0.0]]


def _third_point(a, b):
    d = a - b
    return b + np.array([-d[1], d[0]])


def _mmpose_warp(center, scale, rotation, output_size):
    """mmpose's construction: three point pairs (centre, a point up the rotated box's half
    width, and a third one at right angles) solved for the affine map."""
    angle = np.radians(rotation)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src_dir, dst_dir = rotate @ np.array([0.0, -0.5 * scale[0]]), np.array([0.0, -0.5 * output_size[0]])
    src = [np.asarray(center, float), center + src_dir]
    dst = [np.array(output_size, float) / 2, np.array(output_size, float) / 2 + dst_dir]
    src.append(_third_point(*src))
    dst.append(_third_point(*dst))
    a = np.array([[*p, 1.0] for p in src])
    return np.linalg.solve(a, np.array(dst)).T


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_warp_matrix_equals_the_three_point_construction_and_inverts(rotation):
    center, scale, size = np.array([50.0, 40.0]), np.array([30.0, 40.0]), (48, 64)
    matrix = get_warp_matrix(center, scale, size, rotation)
    np.testing.assert_allclose(matrix, _mmpose_warp(center, scale, rotation, size), atol=1e-12)
    points = np.random.default_rng(4).normal(50, 20, size=(7, 2))
    back = get_warp_matrix(center, scale, size, rotation, inverse=True)
    np.testing.assert_allclose(transform_points(transform_points(points, matrix), back), points, atol=1e-10)
    np.testing.assert_allclose(transform_points(center, matrix), [24.0, 32.0], atol=1e-12)


def test_center_scale_and_aspect_ratio():
    centers, scales = bbox_to_center_scale([[10, 20, 30, 60]], padding=1.25)
    assert centers.tolist() == [[20.0, 40.0]] and scales.tolist() == [[25.0, 50.0]]
    assert fix_aspect_ratio(scales, 0.75).tolist() == [[37.5, 50.0]]
    assert fix_aspect_ratio([[80.0, 50.0]], 0.75).tolist() == [[80.0, 80.0 / 0.75]]


def test_warp_affine_samples_a_linear_image_exactly():
    ys, xs = np.mgrid[0:40, 0:50].astype(np.float64)
    image = np.stack([2 * xs + 3 * ys, xs - ys], axis=-1)  # bilinear sampling of a linear map is exact
    matrix = get_warp_matrix((25.3, 19.6), (20.0, 20.0), (16, 16), rotation=20.0)
    crop = warp_affine(image, matrix, (16, 16))
    out_y, out_x = np.mgrid[0:16, 0:16].astype(np.float64)
    source = transform_points(np.stack([out_x, out_y], -1), get_warp_matrix((25.3, 19.6), (20.0, 20.0), (16, 16),
                                                                             rotation=20.0, inverse=True))
    expected = np.stack([2 * source[..., 0] + 3 * source[..., 1], source[..., 0] - source[..., 1]], -1)
    np.testing.assert_allclose(crop, expected, atol=1e-9)
    far = warp_affine(image, get_warp_matrix((500.0, 500.0), (20.0, 20.0), (8, 8)), (8, 8))
    assert not far.any()


def test_flip_heatmaps_mirrors_and_swaps_pairs():
    maps = np.random.default_rng(5).random((2, 3, 5, 4))
    flipped = flip_heatmaps(maps, [(1, 2)])
    np.testing.assert_array_equal(flipped[:, :, :, 1], maps[:, :, ::-1, 2])
    np.testing.assert_array_equal(flipped[:, :, :, 0], maps[:, :, ::-1, 0])
    np.testing.assert_array_equal(flip_heatmaps(flipped, [(1, 2)]), maps)
    shifted = flip_heatmaps(maps, [(1, 2)], shift=True)
    np.testing.assert_array_equal(shifted[:, :, 1:], flipped[:, :, :-1])


def test_errors_are_clear():
    with pytest.raises(ValueError, match="flip pair \\(1, 7\\) is out of range for 4 keypoints"):
        flip_heatmaps(np.zeros((1, 2, 2, 4)), [(1, 7)])
    with pytest.raises(ValueError, match="zero-sized box"):
        get_warp_matrix((5, 5), (0, 0), (8, 8))
    with pytest.raises(Exception, match="heatmaps need shape \\(N, H, W, K\\)"):
        decode_heatmaps(np.zeros((2, 3, 4)))
    with pytest.raises(Exception, match="visibility needs shape \\(1, 2\\)"):
        encode_heatmaps(np.zeros((1, 2, 2)), np.ones((1, 3)), (8, 8), (4, 4))
    with pytest.raises(ValueError, match="method must be one of"):
        decode_heatmaps(np.zeros((1, 2, 2, 1)), method="mean")
