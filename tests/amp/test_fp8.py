"""FP8 emulation: the formats' values from their definitions, rounding against a brute-force
nearest-value search and torch's float8 casts, the straight-through fake quantization, and
the scale rules of delayed scaling against a NumPy simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina.amp import (
    FP8_FORMATS,
    fake_quantize_fp8,
    fp8_values,
    quantize_fp8,
    scale_from_amax,
    scale_from_history,
    update_amax_history,
)

# (finite values with zero once, largest, smallest normal, smallest subnormal), by hand:
# E4M3 has 256 codes less 2 NaN (S.1111.111) = 254, +0 and -0 one value; its top binade is 2^8
# with mantissa up to 110: 1.75 * 256. E5M2 has 256 less 2 infinities and 6 NaN = 248.
HAND = {"e4m3": (253, 448.0, 2.0 ** -6, 2.0 ** -9), "e5m2": (247, 57344.0, 2.0 ** -14, 2.0 ** -16)}


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_values_match_the_formats_definitions(fmt):
    count, largest, min_normal, min_subnormal = HAND[fmt]
    values = fp8_values(fmt)
    positive = values[values > 0]
    assert len(values) == count and values.max() == largest and -values.min() == largest
    assert positive.min() == min_subnormal and positive[positive >= min_normal].min() == min_normal
    assert FP8_FORMATS[fmt].max == largest and FP8_FORMATS[fmt].min_subnormal == min_subnormal
    m, e_min, e_max = (3, -6, 8) if fmt == "e4m3" else (2, -14, 15)
    normals = [2.0 ** e * (1 + k / 2 ** m) for e in range(e_min, e_max + 1) for k in range(2 ** m)]
    subnormals = [2.0 ** e_min * k / 2 ** m for k in range(1, 2 ** m)]
    expected = sorted(v for v in normals + subnormals if v <= largest)
    assert positive.tolist() == expected


def brute_force(x: np.ndarray, fmt: str) -> np.ndarray:
    """The nearest finite value by search (saturating: infinities give the largest); ties to
    the even code, i.e. the even index among the non-negative values, which are the codes
    0, 1, 2, ... in order."""
    grid = fp8_values(fmt)
    grid = grid[grid >= 0]
    out = np.empty(x.shape, dtype=np.float64)
    for i, v in enumerate(x.astype(np.float64).ravel()):
        if np.isnan(v):
            out.flat[i] = np.nan
            continue
        distance = np.abs(grid - min(abs(v), 2 * grid[-1]))
        nearest = np.flatnonzero(distance == distance.min())
        index = nearest[0] if len(nearest) == 1 else nearest[nearest % 2 == 0][0]
        out.flat[i] = np.copysign(grid[index], v)
    return out


def sample(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    magnitudes = 2.0 ** rng.uniform(-20, 18, 400)
    grid = fp8_values("e4m3")
    midpoints = (grid[1:] + grid[:-1]) / 2                          # exact ties of E4M3
    grid5 = fp8_values("e5m2")
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 448.0, 464.0, 465.0, 480.0, 57344.0, 61440.0, 1e30,
               2.0 ** -10, 2.0 ** -17, 3 * 2.0 ** -11, 2.0 ** -16 * 0.5000001]
    values = np.concatenate([magnitudes * rng.choice([-1, 1], 400), midpoints[::3], (grid5[1:] + grid5[:-1])[::3] / 2,
                             special])
    return values.astype(np.float32)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_quantize_equals_a_brute_force_nearest_value_search(fmt):
    x = sample(1)
    got = quantize_fp8(x, fmt)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, brute_force(x, fmt).astype(np.float32))
    scaled = quantize_fp8(x[:200], fmt, scale=0.37)
    np.testing.assert_array_equal(scaled, brute_force(x[:200] * np.float32(0.37), fmt).astype(np.float32))


def test_ties_go_to_the_even_mantissa_and_overflow_saturates_or_not():
    # E4M3 around 1: step 1/8; 1 + 1/16 ties between 1 (mantissa 000) and 1.125 (001).
    got = quantize_fp8(np.array([1 + 1 / 16, 1 + 3 / 16, 2.0 ** -10, 3 * 2.0 ** -10, -464.0, 470.0, np.inf]),
                       "e4m3")
    np.testing.assert_array_equal(got, [1.0, 1.25, 0.0, 2.0 ** -8, -448.0, 448.0, 448.0])
    loose = quantize_fp8(np.array([464.0, 465.0, -np.inf, np.nan]), "e4m3", saturate=False)
    assert loose[0] == 448.0 and np.isnan(loose[1:]).all()
    wide = quantize_fp8(np.array([59392.0, 61440.0, -1e9, np.inf]), "e5m2", saturate=False)
    np.testing.assert_array_equal(wide, [57344.0, np.inf, -np.inf, np.inf])
    assert np.signbit(quantize_fp8(np.array([-1e-30]), "e5m2"))[0]


@pytest.mark.parametrize("seed", [2, 3])
def test_quantize_equals_torch_float8_casts(seed):
    x = sample(seed)
    e4m3 = torch.from_numpy(x).to(torch.float8_e4m3fn).float().numpy()          # saturating
    e5m2 = torch.from_numpy(x).to(torch.float8_e5m2).float().numpy()            # overflow to inf
    for got, expected in ((quantize_fp8(x, "e4m3"), e4m3), (quantize_fp8(x, "e5m2", saturate=False), e5m2)):
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


def test_fake_quantize_reads_back_with_the_scale_and_passes_gradients_straight():
    x = lamina.tensor(sample(4)[:50].clip(-1e3, 1e3), requires_grad=True)
    y = fake_quantize_fp8(x, "e5m2", scale=4.0)
    np.testing.assert_array_equal(y.numpy(), quantize_fp8(x.numpy(), "e5m2", 4.0) / np.float32(4))
    (y * lamina.tensor(np.arange(50, dtype=np.float32))).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(50, dtype=np.float32))
    with pytest.raises(ValueError, match="unknown FP8 format"):
        quantize_fp8(x.numpy(), "e3m4")
    with pytest.raises(ValueError, match="scale must be a positive"):
        fake_quantize_fp8(x, "e4m3", scale=0.0)


def test_delayed_scaling_equals_a_numpy_simulation_of_the_amax_history():
    rng = np.random.default_rng(5)
    length, margin = 4, 1
    amaxes = list(2.0 ** rng.uniform(-12, 12, 9)) + [0.0, np.inf, 3.0]
    history, scale = np.zeros(length, np.float32), np.float32(1.0)
    window: list[float] = []
    for amax in amaxes:
        history = update_amax_history(history, amax)
        for algo in ("max", "most_recent"):
            got = scale_from_history(history, "e4m3", margin, previous=scale, algo=algo)
            window_amax = max(window[-(length - 1):] + [amax]) if algo == "max" else amax
            if window_amax > 0 and np.isfinite(window_amax):
                want = np.float32(np.float32(448.0) / np.float32(window_amax)) / np.float32(2.0 ** margin)
            else:
                want = scale
            assert got == want, (algo, amax)
        scale = scale_from_history(history, "e4m3", margin, previous=scale)
        window.append(float(np.float32(amax)))
        assert history.tolist() == [np.float32(a) for a in (window[::-1] + [0.0] * length)[:length]]
    assert scale_from_amax(2.0, "e5m2") == np.float32(57344.0 / 2)


def test_readme_example_runs():
    printed, names = run_readme_section("FP8 training emulation")
    lines = printed.splitlines()
    assert lines[0] == "253 448.0 57344.0" and lines[1].split() == ["[", "1.", "1.", "448.", "0.]"]
    layer = names["layer"]
    assert layer.amax_history[:, :3].all() and not layer.amax_history[:, 3:].any()
    np.testing.assert_array_equal(layer.scale[2], np.float32(57344.0))      # d(sum)/dy = 1: amax 1
