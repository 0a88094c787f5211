"""affine_grid and grid_sample: PyTorch's affine_grid and grid_sample (on NCHW) in values and
gradients for every mode, padding mode and corner convention, float64 gradient checks away
from the kernel's kinks, the identity and whole-pixel translations, both sampling paths, and
errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.functional.grid_sample import SamplingMatrix, affine_grid, base_grid, grid_sample, source_pixels

TF = torch.nn.functional
COMBINATIONS = list(itertools.product(["bilinear", "nearest"], ["zeros", "border", "reflection"], [False, True]))
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _f64(a):
    return lamina.tensor(a, dtype=np.float64)


def _torch_grid_sample(mode, padding_mode, align_corners):
    def run(x, grid):
        out = TF.grid_sample(x.permute(0, 3, 1, 2), grid, mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)
        return out.permute(0, 2, 3, 1)
    return run


def _grid(n, ho, wo, seed, far=True):
    """Random normalised points, most within [-1.8, 1.8], some far outside (several reflections)."""
    rng = np.random.default_rng(seed)
    grid = rng.uniform(-1.8, 1.8, (n, ho, wo, 2))
    if far:
        grid[:, 0, :2] = rng.uniform(-4.5, 4.5, (n, 2, 2))
    return grid


# -- affine_grid -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Since version 1.3.0")      # torch on one-pixel grids, align_corners=True
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(2, 4, 5, 3), (3, 1, 6, 1), (1, 1, 1, 2)])
def test_affine_grid_matches_torch(size, align_corners, dtype):
    n, h, w, c = size
    theta = randn(n, 2, 3, seed=h * w)
    out = compare_with_torch(lambda t: affine_grid(t, size, align_corners),
                             lambda t: TF.affine_grid(t, (n, c, h, w), align_corners=align_corners), theta,
                             dtype=dtype)
    assert out[0].shape == (n, h, w, 2) and out[0].dtype == dtype


def test_base_grid_puts_corners_at_pixel_centres_or_edges():
    aligned = base_grid(3, 5, align_corners=True, dtype=np.float64)
    np.testing.assert_allclose(aligned[0, :, 0], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(aligned[:, 0, 1], [-1, 0, 1])
    edges = base_grid(3, 5, align_corners=False, dtype=np.float64)
    np.testing.assert_allclose(edges[0, :, 0], [-0.8, -0.4, 0, 0.4, 0.8])   # centres (2 j + 1) / 5 - 1
    np.testing.assert_allclose(edges[:, 0, 1], [-2 / 3, 0, 2 / 3])
    np.testing.assert_array_equal(edges[..., 2], 1.0)


def test_source_pixels_send_the_ends_to_centres_or_edges():
    ends = np.array([-1.0, 1.0])
    np.testing.assert_allclose(source_pixels(ends, 5, align_corners=True)[0], [0, 4])
    np.testing.assert_allclose(source_pixels(ends, 5, align_corners=False)[0], [-0.5, 4.5])
    # reflection mirrors at the outer edges -0.5 and 4.5: pixels -1.5 -> 0.5 and 6.0 -> 3.0, each
    # mirrored once, so with the slope 5 / 2 negated; 10.5 -> -1.5 -> 0.5, twice, keeps its sign
    u, slope = source_pixels(np.array([-1.4, 1.6, 3.4]), 5, "reflection", align_corners=False)
    np.testing.assert_allclose(u, [0.5, 3.0, 0.5])
    np.testing.assert_allclose(slope, [-2.5, -2.5, 2.5])
    # border clips into [0, size - 1], with slope 0 where it clips
    u, slope = source_pixels(np.array([-3.0, 0.2]), 5, "border", align_corners=True)
    np.testing.assert_allclose(u, [0.0, 2.4])
    np.testing.assert_allclose(slope, [0.0, 2.0])


# -- grid_sample against torch -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode, padding_mode, align_corners", COMBINATIONS)
@pytest.mark.parametrize("x_shape, out_hw", [((2, 5, 6, 3), (4, 7)), ((1, 1, 4, 2), (3, 3))])
def test_grid_sample_matches_torch(x_shape, out_hw, mode, padding_mode, align_corners, dtype):
    x = randn(*x_shape, seed=1)
    grid = _grid(x_shape[0], *out_hw, seed=2)
    out = compare_with_torch(lambda a, g: grid_sample(a, g, mode, padding_mode, align_corners),
                             _torch_grid_sample(mode, padding_mode, align_corners), x, grid, dtype=dtype)
    assert out[0].shape == (x_shape[0], *out_hw, x_shape[3]) and out[0].dtype == dtype


@pytest.mark.parametrize("grad", [[True, False], [False, True]])
def test_grid_sample_gradient_of_one_input(grad):
    compare_with_torch(lambda a, g: grid_sample(a, g, padding_mode="reflection"),
                       _torch_grid_sample("bilinear", "reflection", False), randn(2, 4, 3, 2, seed=5),
                       _grid(2, 3, 3, seed=6), dtype=np.float64, grad=grad)


@pytest.mark.parametrize("mode, padding_mode, align_corners", [("bilinear", "zeros", False),
                                                                ("bilinear", "border", True),
                                                                ("nearest", "reflection", False)])
def test_transformer_chain_matches_torch(mode, padding_mode, align_corners):
    """grid_sample(x, affine_grid(theta)): gradients reach theta through the grid."""
    theta = IDENTITY + randn(2, 2, 3, seed=7, scale=0.3)

    def ours(x, t):
        return grid_sample(x, affine_grid(t, (2, 6, 4, 3), align_corners), mode, padding_mode, align_corners)

    def theirs(x, t):
        grid = TF.affine_grid(t, (2, 3, 6, 4), align_corners=align_corners)
        return _torch_grid_sample(mode, padding_mode, align_corners)(x, grid)

    compare_with_torch(ours, theirs, randn(2, 5, 7, 3, seed=8), theta, dtype=np.float64)


# -- gradient checks -----------------------------------------------------------------------------
def _grid_off_kinks(n, ho, wo, h, w, align_corners, seed):
    """Normalised points whose pixel coordinates have fractional parts in [0.1, 0.4] or [0.6, 0.9]:
    away from whole pixels (bilinear's kinks, the clipping points) and half pixels (nearest's
    steps, the mirrors of reflection without aligned corners), some outside the image."""
    rng = np.random.default_rng(seed)
    grid = np.empty((n, ho, wo, 2))
    for axis, size in ((0, w), (1, h)):
        whole = rng.integers(-3, size + 2, (n, ho, wo))
        frac = rng.uniform(0.1, 0.4, (n, ho, wo)) + rng.integers(0, 2, (n, ho, wo)) * 0.5
        pixel = whole + frac
        grid[..., axis] = pixel * 2 / (size - 1) - 1 if align_corners else (2 * pixel + 1) / size - 1
    return grid


@pytest.mark.parametrize("mode, padding_mode, align_corners", COMBINATIONS)
def test_grid_sample_gradcheck(mode, padding_mode, align_corners):
    grid = _grid_off_kinks(2, 3, 4, 4, 5, align_corners, seed=9)
    assert check_gradients(lambda a, g: grid_sample(a, g, mode, padding_mode, align_corners),
                           randn(2, 4, 5, 2, seed=10), grid)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_gradcheck(align_corners):
    assert check_gradients(lambda t: affine_grid(t, (2, 3, 4, 1), align_corners) ** 2, randn(2, 2, 3, seed=11))


# -- what the transforms do ----------------------------------------------------------------------
@pytest.mark.parametrize("mode, padding_mode, align_corners", COMBINATIONS)
def test_identity_theta_reproduces_the_input(mode, padding_mode, align_corners):
    x = _f64(randn(3, 5, 4, 2, seed=12))
    theta = _f64(np.repeat(IDENTITY[None], 3, axis=0))
    out = grid_sample(x, affine_grid(theta, x.shape, align_corners), mode, padding_mode, align_corners)
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_whole_pixel_translation_shifts_the_image(mode, align_corners):
    """theta's last column (t_x, t_y) moves the source by (k, m) pixels: out[i, j] = x[i + m, j + k]."""
    h, w = 6, 7
    k, m = 2, -1
    per_unit_w, per_unit_h = ((w - 1) / 2, (h - 1) / 2) if align_corners else (w / 2, h / 2)
    theta = _f64([[[1.0, 0.0, k / per_unit_w], [0.0, 1.0, m / per_unit_h]]])
    x = randn(1, h, w, 2, seed=13)
    grid = affine_grid(theta, x.shape, align_corners)
    assert grid.dtype == np.float64
    shifted = grid_sample(_f64(x), grid, mode, "zeros", align_corners).numpy()
    expected = np.zeros_like(x)
    expected[:, 1:, :w - k] = x[:, :h - 1, k:]
    np.testing.assert_allclose(shifted, expected, atol=1e-12)
    # border padding repeats the edge pixels where the source left the image
    edged = grid_sample(_f64(x), grid, mode, "border", align_corners).numpy()
    rows = np.clip(np.arange(h) + m, 0, h - 1)
    cols = np.clip(np.arange(w) + k, 0, w - 1)
    np.testing.assert_allclose(edged, x[:, rows][:, :, cols], atol=1e-12)


def test_nearest_gives_no_grid_gradient():
    grid = lamina.tensor(_grid(1, 3, 3, seed=14), requires_grad=True, dtype=np.float64)
    grid_sample(_f64(randn(1, 4, 4, 1, seed=15)), grid, mode="nearest").sum().backward()
    np.testing.assert_array_equal(grid.grad, 0.0)


def test_sampling_matrix_without_scipy_gives_the_same_products():
    """The gather / bincount path (array libraries other than NumPy) against the SciPy one and
    a dense matrix, repeated columns included."""
    rng = np.random.default_rng(16)
    index = rng.integers(0, 6, (8, 4))
    index[0] = 3                                   # one row reading the same column four times
    values = rng.standard_normal((8, 4))
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((8, 3))
    dense = np.zeros((8, 6))
    np.add.at(dense, (np.repeat(np.arange(8), 4), index.reshape(-1)), values.reshape(-1))
    fast = SamplingMatrix(index, values, 6)
    plain = SamplingMatrix(index, values, 6)
    plain.sparse = None
    assert fast.sparse is not None
    for matrix in (fast, plain):
        assert_close(matrix.times(a), dense @ a, 1e-12)
        assert_close(matrix.transpose_times(b), dense.T @ b, 1e-12)


def test_empty_batch_and_dtypes():
    out = grid_sample(np.zeros((0, 4, 4, 2), np.float32), affine_grid(np.zeros((0, 2, 3), np.float32), (0, 3, 3, 2)))
    assert out.shape == (0, 3, 3, 2) and out.dtype == np.float32


# -- errors --------------------------------------------------------------------------------------
def test_errors_name_the_function_and_shapes():
    theta = np.zeros((2, 2, 3))
    with pytest.raises(lamina.ShapeError, match=r"affine_grid: expected theta of shape \(N, 2, 3\), got shape "
                                                r"\(2, 3, 3\)"):
        affine_grid(np.zeros((2, 3, 3)), (2, 4, 4, 1))
    with pytest.raises(lamina.ShapeError, match=r"affine_grid: .*\(2, 2, 3\) holds 2 transforms but size "
                                                r"\(3, 4, 4, 1\) asks for a batch of 3"):
        affine_grid(theta, (3, 4, 4, 1))
    with pytest.raises(ValueError, match=r"affine_grid: expected size as 4 ints \(N, H, W, C\), got \(2, 4, 4\)"):
        affine_grid(theta, (2, 4, 4))
    with pytest.raises(ValueError, match=r"affine_grid: expected a size .*H, W >= 1.*\(2, 0, 4, 1\)"):
        affine_grid(theta, (2, 0, 4, 1))
    x, grid = np.zeros((2, 4, 4, 1)), np.zeros((2, 3, 3, 2))
    with pytest.raises(lamina.ShapeError, match=r"grid_sample: expected a grid of shape \(N, H_o, W_o, 2\) with "
                                                r"N = 2 for x of shape \(2, 4, 4, 1\), got shape \(2, 3, 3, 3\)"):
        grid_sample(x, np.zeros((2, 3, 3, 3)))
    with pytest.raises(lamina.ShapeError, match=r"grid_sample: .*N = 2 .*got shape \(1, 3, 3, 2\)"):
        grid_sample(x, np.zeros((1, 3, 3, 2)))
    with pytest.raises(lamina.ShapeError, match=r"grid_sample: expected images x of shape \(N, H, W, C\).*"
                                                r"\(4, 4, 1\)"):
        grid_sample(np.zeros((4, 4, 1)), grid)
    with pytest.raises(ValueError, match=r"grid_sample: mode must be one of \['bilinear', 'nearest'\], "
                                         r"got 'bicubic'"):
        grid_sample(x, grid, mode="bicubic")
    with pytest.raises(ValueError, match=r"grid_sample: padding_mode must be one of \['zeros', 'border', "
                                         r"'reflection'\], got 'wrap'"):
        grid_sample(x, grid, padding_mode="wrap")
    with pytest.raises(ValueError, match=r"grid_sample: expected a floating-point x, got dtype uint8"):
        grid_sample(x.astype(np.uint8), grid)
    with pytest.raises(ValueError, match=r"affine_grid: expected a floating-point theta, got dtype int64"):
        affine_grid(theta.astype(np.int64), (2, 4, 4, 1))
    grid[0, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"grid_sample: the grid of shape \(2, 3, 3, 2\) holds NaN"):
        grid_sample(x, grid)


@pytest.mark.parametrize("mode, padding_mode, align_corners", COMBINATIONS)
def test_a_non_finite_pixel_reaches_only_the_points_that_read_it(mode, padding_mode, align_corners):
    """Neighbours outside the image read nothing (not the edge pixel they are clipped to)."""
    x = randn(2, 4, 5, 3, seed=6)
    x[0, 0, 0, 0] = np.nan
    x[1, 3, 4, 1] = np.inf
    x[1, 2, 2, 2] = -np.inf
    grid = _grid(2, 5, 6, seed=7)
    grid[0, 0, :2] = [[-1.9, -1.9], [-1.0, -1.0]]
    grid[1, 1, :2] = [[1.2, 1.1], [1.0, 1.0]]
    ours = grid_sample(_f64(x), _f64(grid), mode, padding_mode, align_corners).numpy()
    theirs = _torch_grid_sample(mode, padding_mode, align_corners)(torch.tensor(x), torch.tensor(grid)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
