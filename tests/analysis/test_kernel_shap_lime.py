"""lamina.analysis.perturbation and .surrogate: Kernel SHAP against exact Shapley values (linear
models and brute force over all coalitions), Shapley value sampling, feature ablation, LIME
recovering a linear model, feature masks and their errors."""

import itertools
import math

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import nn
from lamina.analysis import feature_ablation, kernel_shap, lime, shapley_value_sampling
from lamina.errors import ShapeError


def nonlinear(batch):
    """A small function of 5 features with interactions of up to all of them (with only pairwise
    ones, any symmetric weighting of the coalitions would give the Shapley values)."""
    pairs = np.tanh(batch[:, 0] * batch[:, 1]) + batch[:, 2] ** 2 * batch[:, 3] + np.sin(batch[:, 4] * batch[:, 0])
    return pairs + batch[:, 1] * batch[:, 2] * batch[:, 4] + np.exp(0.3 * batch.prod(axis=1))


def brute_force_shapley(f, x, background):
    """phi_j = sum_T |T|! (M - |T| - 1)! / M! (v(T + j) - v(T)), v(T) = mean_b f(x on T, b elsewhere)."""
    m = len(x)

    def value(members):
        kept = np.isin(np.arange(m), list(members))
        return f(np.where(kept, x, background)).mean()

    phi = np.zeros(m)
    for j in range(m):
        others = [k for k in range(m) if k != j]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for members in itertools.combinations(others, size):
                phi[j] += weight * (value(members + (j,)) - value(members))
    return phi


def test_kernel_shap_on_a_linear_model_is_w_times_the_distance_to_the_background_mean():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(3))
    model.build((None, 6))
    w = model[0].weight.numpy()
    rng = np.random.default_rng(0)
    x, background = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    target = np.array([0, 2, 1, 2])
    expected = w[:, target].T * (x - background.mean(axis=0))
    assert_close(kernel_shap(model, x, background, target), expected, 1e-10, "exact")
    assert_close(kernel_shap(model, x, background, target, n_samples=40, seed=0), expected, 1e-9, "sampled")


def test_kernel_shap_equals_brute_force_shapley_values_of_a_nonlinear_function():
    rng = np.random.default_rng(1)
    x, background = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    expected = np.array([brute_force_shapley(nonlinear, row, background) for row in x])
    ours = kernel_shap(nonlinear, x, background)
    assert_close(ours, expected, 1e-10)
    efficiency = nonlinear(x) - nonlinear(background).mean()
    assert_close(ours.sum(axis=1), efficiency, 1e-10)


def test_shapley_value_sampling_converges_to_the_same_values():
    rng = np.random.default_rng(2)
    x, reference = rng.normal(size=(2, 5)), rng.normal(size=5)
    exact = kernel_shap(nonlinear, x, reference[None])
    rough = shapley_value_sampling(nonlinear, x, baselines=reference, n_samples=3, seed=0)
    fine = shapley_value_sampling(nonlinear, x, baselines=reference, n_samples=1500, seed=0)
    efficiency = nonlinear(x) - nonlinear(reference[None])
    assert_close(rough.sum(axis=1), efficiency, 1e-10, "efficiency holds for every order")
    scale = np.abs(exact).max()
    assert np.abs(fine - exact).max() < 0.03 * scale < np.abs(rough - exact).max()


def test_feature_ablation_with_groups_on_images():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Flatten(), nn.Dense(2))
    model.build((None, 4, 4, 1))
    w = model[1].weight.numpy()[:, 1].reshape(4, 4, 1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 4, 1))
    blocks = (np.arange(4)[:, None] // 2 * 2 + np.arange(4)[None, :] // 2)[..., None]  # 2x2 superpixels
    ours = feature_ablation(model, x, 1, baselines=0.5, feature_mask=blocks)
    contribution = w * (x - 0.5)
    for label in range(4):
        inside = blocks[..., 0] == label
        group_total = contribution[:, inside].sum(axis=1)
        assert_close(ours[:, inside], np.repeat(group_total[:, None], inside.sum(), axis=1), 1e-10)
    assert_close(feature_ablation(model, x, 1), w * x, 1e-10, "one feature per value")


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_lime_recovers_a_linear_model_on_its_interpretable_features(distance):
    rng = np.random.default_rng(4)
    w = rng.normal(size=6)

    def linear(batch):
        return batch @ w + 0.7

    x = rng.normal(size=(3, 6))
    mask = np.array([0, 0, 1, 2, 2, 2])
    baselines = rng.normal(size=6)
    ours = lime(linear, x, baselines=baselines, feature_mask=mask, n_samples=30, distance=distance, seed=0)
    contribution = w * (x - baselines)
    expected = np.stack([contribution[:, mask == g].sum(axis=1) for g in range(3)], axis=1)[:, mask]
    assert_close(ours, expected, 1e-8)
    ridge = lime(linear, x, baselines=baselines, feature_mask=mask, n_samples=30, distance=distance, seed=0,
                 alpha=10.0)
    assert np.abs(ridge).sum() < np.abs(ours).sum()  # the penalty shrinks the coefficients


def test_mask_target_and_background_errors_are_clear():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(3))
    model.build((None, 4))
    x = np.zeros((2, 4))
    with pytest.raises(ShapeError, match=r"feature_ablation: feature_mask of shape \(3,\) does not broadcast"):
        feature_ablation(model, x, feature_mask=np.arange(3))
    with pytest.raises(TypeError, match="integer group labels"):
        lime(model, x, feature_mask=np.zeros(4))
    with pytest.raises(ShapeError, match=r"kernel_shap: baselines of shape \(4,\)"):
        kernel_shap(model, x, np.zeros(4))
    with pytest.raises(ShapeError, match="shapley_value_sampling: baselines"):
        shapley_value_sampling(model, x, baselines=np.zeros(3))
    with pytest.raises(ValueError, match="target must be None"):
        kernel_shap(nonlinear, np.zeros((1, 5)), np.zeros((1, 5)), target=1)
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 3\)"):
        feature_ablation(model, x, target=3)
    with pytest.raises(ValueError, match="distance must be one of"):
        lime(model, x, distance="manhattan")
