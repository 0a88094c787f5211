"""ROCKET and MiniRocket against direct loops over positions written from the papers, their
kernel distributions, and the ridge pipeline learning the cylinder-bell-funnel task."""

import itertools
import time

import numpy as np
import pytest

from helpers import run_readme_section
from lamina.data import NotFittedError, cylinder_bell_funnel
from lamina.errors import ShapeError
from lamina.models import (
    MINIROCKET_KERNEL_INDICES,
    MiniRocket,
    MultiRocket,
    Rocket,
    RocketClassifier,
    minirocket_dilations,
)
from lamina.models.tsc import minirocket_kernels


# -- direct references -----------------------------------------------------------------------------
def rocket_kernel_reference(series, weights, bias, dilation, padding):
    """(PPV, max) of one kernel on one (L, C) series, position by position (zero padding)."""
    length, size = len(series), len(weights)
    values = []
    for start in range(-padding, length + padding - (size - 1) * dilation):
        total = bias
        for j in range(size):
            t = start + j * dilation
            if 0 <= t < length:
                total += float(weights[j] @ series[t])
        values.append(total)
    values = np.array(values)
    return np.mean(values > 0), values.max()


def minirocket_convolution_reference(series, kernel_weights, dilation):
    """z_t = sum_j w_j x_(t + (j - 4) d), x = 0 outside the (L,) series."""
    length = len(series)
    z = np.zeros(length)
    for t in range(length):
        for j, w in enumerate(kernel_weights):
            s = t + (j - 4) * dilation
            if 0 <= s < length:
                z[t] += w * series[s]
    return z


# -- ROCKET ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_rocket_features_equal_a_direct_loop(channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 40, channels))
    rocket = Rocket(num_kernels=60, seed=3).fit(x)
    features = rocket.transform(x)
    assert features.shape == (4, 120)
    assert set(rocket.paddings.tolist()) != {0} and 0 in rocket.paddings     # both kinds present
    assert rocket.dilations.max() > 1
    for k in range(0, 60, 4):
        for i in range(len(x)):
            ppv, top = rocket_kernel_reference(x[i], rocket.weights[k], rocket.biases[k], rocket.dilations[k],
                                               rocket.paddings[k])
            assert features[i, 2 * k] == pytest.approx(ppv, abs=1e-12)
            assert features[i, 2 * k + 1] == pytest.approx(top, rel=1e-10, abs=1e-10)


def test_rocket_kernel_distributions():
    length = 100
    rocket = Rocket(num_kernels=3000, seed=1).fit(np.zeros((2, length)))
    assert set(np.unique(rocket.lengths)) == {7, 9, 11}
    for size in (7, 9, 11):                                 # lengths uniform over the three
        assert abs(np.mean(rocket.lengths == size) - 1 / 3) < 0.04
    weights = np.concatenate([w[:, 0] for w in rocket.weights])
    assert all(abs(w.sum()) < 1e-9 for w in rocket.weights)                    # mean-centred
    assert abs(np.std(weights) - np.sqrt(1 - 1 / 9)) < 0.05                   # N(0, 1) less its mean
    assert rocket.biases.min() >= -1 and rocket.biases.max() <= 1 and abs(rocket.biases.mean()) < 0.05
    spans = (rocket.lengths - 1) * rocket.dilations + 1
    assert rocket.dilations.min() == 1 and np.all(spans <= length)             # 2^U(0, log2((L-1)/(l-1)))
    exponents = np.log2(rocket.dilations)
    assert exponents.max() > np.log2((length - 1) / 10) - 1
    padded = rocket.paddings > 0
    assert abs(padded.mean() - 0.5) < 0.04
    assert np.array_equal(rocket.paddings[padded], ((rocket.lengths - 1) * rocket.dilations // 2)[padded])


def test_rocket_multivariate_channel_subsets():
    rocket = Rocket(num_kernels=500, seed=2).fit(np.zeros((2, 50, 4)))
    counts = np.array([len(c) for c in rocket.channels])
    assert counts.min() == 1 and counts.max() == 4            # floor(2^U(0, log2(min(C, l) + 1)))
    for w, chosen in zip(rocket.weights, rocket.channels):
        unused = np.setdiff1d(np.arange(4), chosen)
        assert np.all(w[:, unused] == 0)
        assert np.allclose(w[:, chosen].sum(axis=0), 0)      # centred per channel


def test_rocket_is_reproducible_and_list_input():
    x = np.random.default_rng(0).standard_normal((3, 30))
    a = Rocket(50, seed=4).fit_transform(x)
    b = Rocket(50, seed=4).fit_transform(list(x))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, Rocket(50, seed=5).fit_transform(x))


# -- MiniRocket --------------------------------------------------------------------------------------
def test_minirocket_kernels_are_the_84_combinations():
    kernels = minirocket_kernels()
    assert kernels.shape == (84, 9)
    expected = set(itertools.combinations(range(9), 3))
    assert {tuple(np.flatnonzero(k == 2)) for k in kernels} == expected
    assert np.all(np.isin(kernels, (-1, 2))) and np.all(kernels.sum(axis=1) == 0)
    assert len(MINIROCKET_KERNEL_INDICES) == 84


def test_minirocket_dilations():
    dilations, per_dilation = minirocket_dilations(128)
    assert per_dilation.sum() == 10_000 // 84
    assert dilations[0] == 1 and np.all(np.diff(dilations) > 0)
    assert dilations[-1] <= (128 - 1) / 8 and dilations[-1] >= (128 - 1) / 8 / 2
    # 32 grid points over exponents 0 .. log2(127 / 8): dilation 1 takes the points below 2^1
    grid = np.logspace(0, np.log2(127 / 8), 32, base=2).astype(int)
    assert per_dilation[-1] == int(np.sum(grid == dilations[-1]) * 119 / 32)


def test_minirocket_features_equal_a_direct_loop():
    x, _ = cylinder_bell_funnel(12, length=64, seed=0)
    x = x[:, :, 0].astype(np.float64)
    mini = MiniRocket(num_features=840, seed=0).fit(x)
    features = mini.transform(x)
    assert features.shape == (12, mini.num_features_out) == (12, 840)
    kernels = minirocket_kernels()
    starts = np.concatenate([[0], np.cumsum(84 * mini.features_per_dilation)])
    checked = 0
    for d, dilation in enumerate(mini.dilations):
        each = int(mini.features_per_dilation[d])
        for kernel in (0, 41, 83):
            padding = 4 * int(dilation)
            columns = starts[d] + kernel * each + np.arange(each)
            for i in (0, 5):
                z = minirocket_convolution_reference(x[i], kernels[kernel], int(dilation))
                if (d + kernel) % 2:
                    z = z[padding:len(z) - padding]
                expected = [np.mean(z > b) for b in mini.biases[columns]]
                assert np.allclose(features[i, columns], expected, atol=1e-12)
                checked += 1
            # each bias is a quantile of that kernel's output on some training series
            outputs = [minirocket_convolution_reference(s, kernels[kernel], int(dilation)) for s in x]
            bias = mini.biases[columns[0]]
            assert any(np.min(np.abs(o - bias)) < 1e-9 or (o.min() <= bias <= o.max()) for o in outputs)
    assert checked >= 6 * len(mini.dilations)


def test_minirocket_biases_are_golden_ratio_quantiles():
    x = np.random.default_rng(1).standard_normal((1, 50))          # one series: every bias comes from it
    mini = MiniRocket(num_features=168, seed=0).fit(x)
    levels = (np.arange(1, 169) * (1 + np.sqrt(5)) / 2) % 1
    kernels = minirocket_kernels()
    start = 0
    for d, dilation in enumerate(mini.dilations):
        for kernel in range(84):
            each = int(mini.features_per_dilation[d])
            z = minirocket_convolution_reference(x[0], kernels[kernel], int(dilation))
            assert np.allclose(mini.biases[start:start + each], np.quantile(z, levels[start:start + each]))
            start += each


def test_minirocket_multivariate_sums_channel_subsets():
    x = np.random.default_rng(2).standard_normal((3, 30, 3))
    mini = MiniRocket(num_features=84, seed=1).fit(x)
    features = mini.transform(x)
    kernels = minirocket_kernels()
    assert {len(s) for s in mini.channel_subsets} > {1}
    for kernel in (0, 7, 50):
        subset = mini.channel_subsets[kernel]
        z = sum(minirocket_convolution_reference(x[2, :, c], kernels[kernel], 1) for c in subset)
        if kernel % 2:
            z = z[4:-4]
        assert features[2, kernel] == pytest.approx(np.mean(z > mini.biases[kernel]))


# -- MultiRocket -------------------------------------------------------------------------------------
def pooled_reference(z, bias):
    """(PPV, LSPV, MPV, MIPV) of one output z and bias, step by step from the definitions."""
    positive_values, positive_steps, longest, run = [], [], 0, 0
    for t, value in enumerate(z):
        if value > bias:
            positive_values.append(value - bias)
            positive_steps.append(t)
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    m = len(positive_values)
    return (m / len(z), longest, sum(positive_values) / m if m else 0.0, sum(positive_steps) / m if m else -1.0)


def test_multirocket_features_equal_a_direct_loop():
    x = np.random.default_rng(4).standard_normal((3, 40))
    multi = MultiRocket(num_features=8 * 168, seed=0).fit(x)
    features = multi.transform(x)
    per_pool = multi.base.num_features_out
    assert features.shape == (3, multi.num_features_out) == (3, 8 * per_pool)
    kernels = minirocket_kernels()
    for r, (mini, series) in enumerate([(multi.base, x), (multi.difference, np.diff(x, axis=1))]):
        assert np.allclose(features[:, r * 4 * per_pool:][:, :per_pool], mini.transform(series))   # PPV block
        starts = np.concatenate([[0], np.cumsum(84 * mini.features_per_dilation)])
        for d, dilation in enumerate(mini.dilations):
            each = int(mini.features_per_dilation[d])
            for kernel in (3, 60):
                padding = 4 * int(dilation)
                column = starts[d] + kernel * each
                for i in range(3):
                    z = minirocket_convolution_reference(series[i], kernels[kernel], int(dilation))
                    if (d + kernel) % 2:
                        z = z[padding:len(z) - padding]
                    expected = pooled_reference(z, mini.biases[column])
                    got = [features[i, (4 * r + p) * per_pool + column] for p in range(4)]
                    assert np.allclose(got, expected, atol=1e-10), (r, d, kernel, i)


def test_multirocket_fits_the_second_representation_on_first_differences():
    x = np.random.default_rng(5).standard_normal((1, 30))          # one series: every bias comes from it
    multi = MultiRocket(num_features=8 * 84, seed=0).fit(x)
    level = (1 + np.sqrt(5)) / 2 % 1                                 # the first golden-ratio quantile level
    for mini, series in [(multi.base, x[0]), (multi.difference, np.diff(x[0]))]:
        z = minirocket_convolution_reference(series, minirocket_kernels()[0], 1)
        assert mini.biases[0] == pytest.approx(np.quantile(z, level))


def test_multirocket_pools_on_edge_cases():
    from lamina.models.tsc.multirocket import (
        longest_positive_stretch,
        mean_index_of_positive_values,
        mean_of_positive_values,
    )

    z = np.array([[[1.0, 2.0, -1.0, 3.0, 4.0, 5.0, -2.0], [-1.0] * 7]])       # (1 kernel, 2 series, 7 steps)
    biases = np.array([[0.0, 10.0]])
    assert longest_positive_stretch(z, biases).tolist() == [[[3, 0], [0, 0]]]
    assert mean_of_positive_values(z, biases).tolist() == [[[3.0, 0.0], [0.0, 0.0]]]
    assert mean_index_of_positive_values(z, biases).tolist() == [[[(0 + 1 + 3 + 4 + 5) / 5, -1.0], [-1.0, -1.0]]]


# -- errors ------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ShapeError, match="shorter than the longest kernel"):
        Rocket(10).fit(np.zeros((2, 8)))
    with pytest.raises(ShapeError, match="shorter than the kernels"):
        MiniRocket().fit(np.zeros((2, 8)))
    with pytest.raises(NotFittedError, match="before transform"):
        Rocket(10).transform(np.zeros((2, 20)))
    with pytest.raises(NotFittedError, match="before transform"):
        MiniRocket().transform(np.zeros((2, 20)))
    rocket = Rocket(10, seed=0).fit(np.zeros((2, 30, 2)))
    with pytest.raises(ShapeError, match="fitted on 2 channels"):
        rocket.transform(np.zeros((2, 30, 3)))
    mini = MiniRocket(168, seed=0).fit(np.zeros((2, 60)))
    with pytest.raises(ShapeError, match="fitted on 1 channels"):
        mini.transform(np.zeros((2, 60, 2)))
    with pytest.raises(ShapeError, match="shorter than the widest"):
        mini.transform(np.zeros((2, 20)))
    with pytest.raises(ShapeError, match="unequal shapes.*pad_series"):
        Rocket(10).fit([np.zeros(20), np.zeros(25)])
    with pytest.raises(ValueError, match="NaN"):
        Rocket(10).fit(np.full((2, 20), np.nan))
    with pytest.raises(ShapeError, match="too short"):
        MultiRocket(2000).fit(np.zeros((2, 9)))
    with pytest.raises(NotFittedError, match="before transform"):
        MultiRocket(2000).transform(np.zeros((2, 30)))
    with pytest.raises(ValueError, match="transform must be"):
        RocketClassifier("hydra")
    with pytest.raises(NotFittedError):
        RocketClassifier("rocket", 10).predict(np.zeros((2, 20)))


# -- learning ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cbf():
    x, y = cylinder_bell_funnel(600, seed=0)
    return x[:300], y[:300], x[300:], y[300:]


@pytest.mark.parametrize("kind, kernels", [("rocket", 1000), ("minirocket", 2000), ("multirocket", 8 * 336)])
def test_rocket_classifier_learns_cbf(kind, kernels, cbf):
    x_train, y_train, x_test, y_test = cbf
    start = time.perf_counter()
    classifier = RocketClassifier(kind, num_kernels=kernels, seed=0).fit(x_train, y_train)
    accuracy = classifier.score(x_test, y_test)
    print(f"{kind} + ridge on CBF (300 train, 300 test): accuracy {accuracy:.3f}, alpha {classifier.alpha_:.3g} "
          f"({time.perf_counter() - start:.1f} s)")
    assert accuracy > 0.95


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, names = run_readme_section("Time-series classification: ROCKET")
    accuracy = float(printed.split("MiniRocket accuracy")[1])
    assert accuracy > 0.95
    assert names["x_read"].shape == (200, 128, 1) and (tmp_path / "CBF_TRAIN.tsv").exists()
