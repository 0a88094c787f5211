"""The multiresolution hash encoding: values against a plain loop over points, levels and corners
(dense indices at coarse levels, the spatial hash at fine ones), values and gradients against a
float64 torch rewrite, float64 gradient checks, summed gradients under hash collisions, the
range error, save/load, and fitting a 32x32 image far better than a raw-coordinate MLP."""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, run_readme_section
from lamina import models, nn, parallel
from lamina.errors import ShapeError
from lamina.nn.hash_encoding import HASH_PRIMES, hash_grid_levels
from lamina.vision import fit_image

PRIMES = (1, 2654435761, 805459861)                      # the spatial hash's primes (Muller et al. 2022)


@contextlib.contextmanager
def _single_threaded():
    previous = parallel.get_num_threads()
    parallel.set_num_threads(1)
    try:
        with parallel.one_blas_thread():
            yield
    finally:
        parallel.set_num_threads(previous)


def _corner_row(corner, resolution, size, hashed):
    """One corner's row in its level's table, by Python integers."""
    if hashed:
        mixed = 0
        for coordinate, prime in zip(corner, PRIMES):
            mixed ^= (coordinate * prime) % 2 ** 32
        return mixed % size
    return sum(c * (resolution + 1) ** i for i, c in enumerate(corner))


def _loop_encoding(points, table, levels):
    """The encoding point by point, level by level, corner by corner."""
    out = np.zeros((len(points), len(levels) * table.shape[1]))
    for p, x in enumerate(points):
        offset = 0
        for level, (resolution, size, hashed) in enumerate(levels):
            position = [v * resolution for v in x]
            cell = [min(math.floor(v), resolution - 1) for v in position]
            frac = [v - c for v, c in zip(position, cell)]
            for bits in itertools.product((0, 1), repeat=len(x)):
                weight = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
                row = offset + _corner_row([c + b for c, b in zip(cell, bits)], resolution, size, hashed)
                out[p, level * table.shape[1]:(level + 1) * table.shape[1]] += weight * table[row]
            offset += size
    return out


def _torch_encoding(x, table, levels):
    """The encoding in torch: rows by the NumPy loop's indexing, weights and gathers in torch."""
    outputs, offset = [], 0
    for resolution, size, hashed in levels:
        position = x * resolution
        cell = torch.clamp(torch.floor(position.detach()), max=resolution - 1)
        frac = position - cell
        level = 0
        for bits in itertools.product((0, 1), repeat=x.shape[1]):
            weight = 1
            for i, b in enumerate(bits):
                weight = weight * (frac[:, i] if b else 1 - frac[:, i])
            rows = [offset + _corner_row([int(c) + b for c, b in zip(point, bits)], resolution, size, hashed)
                    for point in cell.tolist()]
            level = level + weight[:, None] * table[torch.tensor(rows)]
        outputs.append(level)
        offset += size
    return torch.cat(outputs, dim=1)


def _inner_points(n, d, levels, seed=0):
    """Random points at least 0.05 of a cell away from every level's cell borders."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.02, 0.98, (n * 20, d))
    keep = np.ones(len(points), bool)
    for resolution, _, _ in levels:
        frac = points * resolution - np.floor(points * resolution)
        keep &= np.all((frac > 0.05) & (frac < 0.95), axis=1)
    assert keep.sum() >= n
    return points[keep][:n]


def test_levels_resolutions_and_dense_or_hashed():
    encoding = nn.HashGridEncoding(2, num_levels=4, log2_hashmap_size=6, base_resolution=2, finest_resolution=16)
    assert encoding.levels == [(2, 9, False), (4, 25, False), (8, 64, True), (16, 64, True)]
    assert encoding.table.shape == (162, 2) and encoding.out_features == 8
    assert np.abs(encoding.table.numpy()).max() <= 1e-4
    assert [r for r, _, _ in hash_grid_levels(3, 16, 19, 16, 1.5)][-1] == math.floor(16 * 1.5 ** 15)
    assert nn.HashGridEncoding(3, num_levels=3, per_level_scale=3.0, base_resolution=4).resolutions == [4, 12, 36]
    assert nn.HashGridEncoding(3, num_levels=2, base_resolution=5).resolutions == [5, 10]        # b = 2 by default
    # hash of the corner (1, 1) in a 16-row table, by hand: (1 XOR 0x9E3779B1) mod 16 = 0xB0 mod 16 = 0
    assert _corner_row([1, 1], 100, 16, True) == 0
    assert HASH_PRIMES == PRIMES
    assert _corner_row([3, 2], 100, 16, True) == (3 ^ (2 * 2654435761 % 2 ** 32)) % 16


@pytest.mark.parametrize("d", [2, 3])
def test_values_match_a_plain_loop(d):
    lamina.manual_seed(0)
    encoding = nn.HashGridEncoding(d, num_levels=4, features_per_level=3, log2_hashmap_size=7, base_resolution=2,
                                   finest_resolution=12).double()
    assert any(h for _, _, h in encoding.levels) and not all(h for _, _, h in encoding.levels)
    table = np.random.default_rng(1).normal(size=encoding.table.shape)
    encoding.table.data = table
    points = np.random.default_rng(2).uniform(0, 1, (13, d))
    points[0] = 1.0                                      # the upper border: the last cell, fraction 1
    points[1] = 0.0
    got = encoding(lamina.tensor(points, dtype=np.float64)).numpy()
    np.testing.assert_allclose(got, _loop_encoding(points, table, encoding.levels), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_values_and_gradients_match_torch(d):
    levels = hash_grid_levels(d, 3, 5, 2, 2.0)
    rows = sum(s for _, s, _ in levels)
    points = np.random.default_rng(3).uniform(0, 1, (9, d))
    table = np.random.default_rng(4).normal(size=(rows, 2))
    compare_with_torch(lambda x, t: nn.hash_grid_encode(x, t, levels), lambda x, t: _torch_encoding(x, t, levels),
                       points, table, dtype=np.float64, rtol=1e-10)


def test_bounds_map_points_linearly():
    lamina.manual_seed(1)
    unit = nn.HashGridEncoding(2, num_levels=3, log2_hashmap_size=5, base_resolution=2).double()
    wide = nn.HashGridEncoding(2, num_levels=3, log2_hashmap_size=5, base_resolution=2, bounds=(-1, 3)).double()
    wide.load_state_dict(unit.state_dict())
    points = np.random.default_rng(5).uniform(0, 1, (6, 2))
    np.testing.assert_allclose(wide(lamina.tensor(4 * points - 1, dtype=np.float64)).numpy(),
                               unit(lamina.tensor(points, dtype=np.float64)).numpy(), rtol=1e-12, atol=1e-15)
    levels = unit.levels
    compare_with_torch(lambda x, t: nn.hash_grid_encode(x, t, levels, bounds=(-1, 3)),
                       lambda x, t: _torch_encoding((x + 1) / 4, t, levels), 4 * points - 1,
                       np.random.default_rng(6).normal(size=unit.table.shape), dtype=np.float64, rtol=1e-10)


def test_float64_gradient_check():
    levels = hash_grid_levels(2, 3, 4, 2, 1.5)                       # the last level is hashed into 16 rows
    assert levels[-1][2]
    points = _inner_points(6, 2, levels)
    table = np.random.default_rng(7).normal(size=(sum(s for _, s, _ in levels), 2))
    assert check_gradients(lambda x, t: nn.hash_grid_encode(x, t, levels), points, table)
    levels3 = hash_grid_levels(3, 2, 4, 2, 1.5)
    table3 = np.random.default_rng(8).normal(size=(sum(s for _, s, _ in levels3), 1))
    assert check_gradients(lambda x, t: nn.hash_grid_encode(x, t, levels3), _inner_points(4, 3, levels3), table3)
    assert check_second_derivatives(lambda x, t: nn.hash_grid_encode(x, t, levels), points[:3], table)


def test_collisions_sum_their_gradients():
    """Many points hashed into a 4-row table: each row's gradient is the sum of w_c dy over every
    (point, corner) that lands on it."""
    levels = [(64, 4, True)]
    points = np.random.default_rng(9).uniform(0, 1, (200, 3))
    table = lamina.tensor(np.random.default_rng(10).normal(size=(4, 2)), requires_grad=True, dtype=np.float64)
    up = np.random.default_rng(11).normal(size=(200, 2))
    x = lamina.tensor(points, dtype=np.float64)
    (nn.hash_grid_encode(x, table, levels) * lamina.tensor(up, dtype=np.float64)).sum().backward()
    expected = np.zeros((4, 2))
    for x, dy in zip(points, up):
        cell = np.minimum(np.floor(x * 64), 63).astype(int)
        frac = x * 64 - cell
        for bits in itertools.product((0, 1), repeat=3):
            weight = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
            expected[_corner_row(list(cell + np.array(bits)), 64, 4, True)] += weight * dy
    assert np.all(expected != 0)
    np.testing.assert_allclose(table.grad, expected, rtol=1e-12)


def test_errors():
    encoding = nn.HashGridEncoding(2, num_levels=2, log2_hashmap_size=4, base_resolution=2)
    with pytest.raises(ValueError, match=r"hash_grid_encode: points must lie in \[0.0, 1.0\].*1.5"):
        encoding(np.array([[0.5, 1.5]], np.float32))
    with pytest.raises(ValueError, match=r"-0.25"):
        nn.HashGridEncoding(2, num_levels=2, log2_hashmap_size=4, bounds=(-0.2, 1))(np.array([[-0.25, 0.0]]))
    with pytest.raises(ShapeError, match=r"expected points \(\.\.\., 2\), got shape \(4, 3\)"):
        encoding(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="in_dim must be 2 or 3"):
        nn.HashGridEncoding(4)
    with pytest.raises(ValueError, match="not both"):
        nn.HashGridEncoding(2, finest_resolution=64, per_level_scale=1.5)


def test_save_load_round_trip(tmp_path):
    lamina.manual_seed(2)
    points = np.random.default_rng(12).uniform(-1, 1, (2, 5, 2)).astype(np.float32)
    for layer in (nn.HashGridEncoding(2, num_levels=3, log2_hashmap_size=5, base_resolution=2, bounds=(-1, 1)),
                  nn.HashGridMLP(2, 3, hidden=8, encoding={"num_levels": 3, "log2_hashmap_size": 5,
                                                           "base_resolution": 2, "bounds": (-1, 1)})):
        expected = layer(points)
        assert expected.shape == (2, 5, layer.compute_output_shape((2, 5, 2))[-1])
        lamina.save(layer, tmp_path / "layer.safetensors")
        twin = lamina.load(tmp_path / "layer.safetensors")
        assert type(twin) is type(layer) and twin.get_config() == layer.get_config()
        np.testing.assert_array_equal(twin(points).numpy(), expected.numpy())


def test_hash_grid_mlp_fits_an_image_far_better_than_a_raw_coordinate_mlp():
    from lamina.data import load_digits

    images, _ = load_digits(size=32)
    image = images[0, :, :, 0].astype(np.float32) / 255
    with _single_threaded():
        lamina.manual_seed(0)
        hashed = nn.HashGridMLP(2, 1, hidden=16, encoding={"num_levels": 6, "log2_hashmap_size": 8,
                                                            "base_resolution": 4, "finest_resolution": 32,
                                                            "bounds": (-1, 1)})
        hashed_fit = fit_image(hashed, image, steps=100, lr=1e-2, log_every=100)
        lamina.manual_seed(0)
        raw = nn.Sequential(nn.Dense(48, "relu"), nn.Dense(48, "relu"), nn.Dense(1))
        raw_fit = fit_image(raw, image, steps=100, lr=1e-2, log_every=100)
    count = {name: sum(p.size for p in model.parameters()) for name, model in (("hash", hashed), ("raw", raw))}
    final = {"hash": hashed_fit["psnr"][-1], "raw": raw_fit["psnr"][-1]}
    print("parameters:", count, "PSNR after 100 Adam steps (dB):", {k: round(v, 1) for k, v in final.items()})
    assert count["raw"] >= count["hash"]
    assert final["hash"] > final["raw"] + 15


def test_encoded_points_feed_the_nerf_mlp_and_train_the_tables():
    lamina.manual_seed(3)
    encoding = nn.HashGridEncoding(3, num_levels=3, log2_hashmap_size=6, base_resolution=2, bounds=(-1.5, 1.5))
    nerf = models.NeRF(D=2, W=8, skips=(), input_ch=encoding.out_features, use_viewdirs=False)
    points = lamina.tensor(np.random.default_rng(13).uniform(-1.5, 1.5, (7, 3)).astype(np.float32),
                           requires_grad=True)
    raw = nerf(encoding(points))
    assert raw.shape == (7, 4)
    raw.sum().backward()
    assert encoding.table.grad.shape == encoding.table.shape and np.any(encoding.table.grad != 0)
    assert points.grad.shape == (7, 3) and np.all(np.isfinite(points.grad))


def test_readme_example_runs():
    with _single_threaded():
        printed, names = run_readme_section("Multiresolution hash encoding (Instant-NGP)")
    assert names["history"]["psnr"][-1] > 25 and "PSNR" in printed
