"""Anomaly and OOD scores against references of their formulas: energy and MSP against torch
(values and gradients), ODIN's input perturbation against torch autograd, Mahalanobis against
NumPy class means and tied covariance, kNN against brute force, the greedy coreset against a
brute-force k-center, and PatchCore's features, reweighted score and maps against NumPy/torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.analysis.anomaly import (
    ClassGaussians,
    PatchCore,
    energy_score,
    fit_class_gaussians,
    greedy_coreset,
    knn_ood_score,
    locally_aware_patches,
    mahalanobis_input_score,
    mahalanobis_score,
    max_softmax_score,
    odin_perturbation,
    odin_score,
    reconstruction_error,
    reconstruction_map,
)
from lamina.errors import ShapeError


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_score_matches_torch_logsumexp_with_gradients(temperature):
    logits = randn(6, 4, seed=1, scale=3.0)
    compare_with_torch(lambda z: energy_score(z, temperature),
                       lambda z: -temperature * torch.logsumexp(z / temperature, dim=1), logits, dtype=np.float64)
    assert check_gradients(lambda z: energy_score(z, temperature), logits)
    array_result = energy_score(logits, temperature)
    assert isinstance(array_result, np.ndarray) and array_result.shape == (6,)


def test_max_softmax_score_matches_torch():
    logits = randn(5, 3, seed=2)
    compare_with_torch(max_softmax_score, lambda z: -torch.softmax(z, dim=1).max(dim=1).values, logits,
                       dtype=np.float64)


def _twin_classifier(seed=0):
    """A small lamina MLP and the torch MLP with the same weights."""
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(7, activation="tanh"), nn.Dense(3))
    x = randn(4, 5, seed=seed).astype(np.float64)
    lamina.set_default_dtype(np.float64)     # the test fixture restores float32
    model(x)
    (w1, b1), (w2, b2) = [(layer.weight.data, layer.bias.data) for layer in model]

    def torch_model(inputs):
        hidden = torch.tanh(inputs @ torch.tensor(w1) + torch.tensor(b1))
        return hidden @ torch.tensor(w2) + torch.tensor(b2)
    return model, torch_model, x


def test_odin_perturbation_direction_and_size_match_torch_autograd():
    model, torch_model, x = _twin_classifier()
    temperature, epsilon = 10.0, 0.05
    moved = odin_perturbation(model, x, temperature, epsilon)
    inputs = torch.tensor(x, requires_grad=True)
    logits = torch_model(inputs)
    predicted = logits.argmax(dim=1)
    log_confidence = torch.log_softmax(logits / temperature, dim=1)[torch.arange(len(x)), predicted]
    (-log_confidence).sum().backward()
    expected = x - epsilon * torch.sign(inputs.grad).numpy()
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-12)
    assert np.allclose(np.abs(moved - x), epsilon)
    with torch.no_grad():
        reference = -torch.softmax(torch_model(torch.tensor(expected)) / temperature, dim=1).max(dim=1).values
    np.testing.assert_allclose(odin_score(model, x, temperature, epsilon), reference.numpy(), rtol=1e-10)


def test_odin_raises_the_confidence_of_the_predicted_class():
    model, _, x = _twin_classifier(seed=3)
    plain = odin_score(model, x, temperature=5.0, epsilon=0.0)
    assert (odin_score(model, x, temperature=5.0, epsilon=0.02) < plain).all()


def _numpy_gaussians(z, y):
    classes = np.unique(y)
    means = np.array([z[y == c].mean(axis=0) for c in classes])
    covariance = sum((z[y == c] - means[k]).T @ (z[y == c] - means[k]) for k, c in enumerate(classes)) / len(z)
    return means, np.linalg.inv(covariance)


def test_mahalanobis_score_matches_numpy_class_means_and_tied_covariance():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(60, 4)), rng.integers(0, 3, size=60)
    gaussians = fit_class_gaussians(z, y)
    means, precision = _numpy_gaussians(z, y)
    np.testing.assert_allclose(gaussians.means, means, rtol=1e-12)
    np.testing.assert_allclose(gaussians.precision, precision, rtol=1e-8)
    test = rng.normal(size=(9, 4))
    expected = np.min([[(t - m) @ precision @ (t - m) for m in means] for t in test], axis=1)
    np.testing.assert_allclose(mahalanobis_score(test, gaussians), expected, rtol=1e-6)
    compare_with_torch(lambda f: mahalanobis_score(f, gaussians),
                       lambda f: torch.stack([torch.einsum("nd,de,ne->n", f - torch.tensor(m), torch.tensor(precision),
                                                           f - torch.tensor(m)) for m in means], 1).min(dim=1).values,
                       test, dtype=np.float64, rtol=1e-8)


def test_mahalanobis_input_preprocessing_moves_against_the_distance_gradient():
    model, torch_model, x = _twin_classifier(seed=4)
    rng = np.random.default_rng(1)
    gaussians = fit_class_gaussians(rng.normal(size=(30, 3)), rng.integers(0, 2, size=30))
    means, precision = gaussians.means, gaussians.precision
    epsilon = 0.03

    def torch_distance(inputs):
        f = torch_model(inputs)
        return torch.stack([torch.einsum("nd,de,ne->n", f - torch.tensor(m), torch.tensor(precision),
                                         f - torch.tensor(m)) for m in means], 1).min(dim=1).values

    inputs = torch.tensor(x, requires_grad=True)
    torch_distance(inputs).sum().backward()
    moved = torch.tensor(x - epsilon * torch.sign(inputs.grad).numpy())
    np.testing.assert_allclose(mahalanobis_input_score(model, x, gaussians, epsilon),
                               torch_distance(moved).detach().numpy(), rtol=1e-9)
    np.testing.assert_allclose(mahalanobis_input_score(model, x, gaussians),
                               torch_distance(torch.tensor(x)).detach().numpy(), rtol=1e-9)


def test_knn_score_is_the_kth_normalised_neighbour_distance():
    rng = np.random.default_rng(2)
    bank, test = rng.normal(size=(40, 5)), rng.normal(size=(7, 5)) * 3
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    distances = np.linalg.norm(unit(test)[:, None] - unit(bank)[None], axis=2)
    np.testing.assert_allclose(knn_ood_score(test, bank, k=4, batch_size=3), np.sort(distances, axis=1)[:, 3],
                               rtol=1e-9, atol=1e-12)


def _brute_force_k_center(points, count, start):
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    picked = [start]
    while len(picked) < count:
        picked.append(int(distances[:, picked].min(axis=1).argmax()))
    return picked


@pytest.mark.parametrize("start", [0, 11])
def test_greedy_coreset_equals_brute_force_k_center(start):
    points = np.random.default_rng(start).normal(size=(30, 6))
    np.testing.assert_array_equal(greedy_coreset(points, 8, projection_dim=None, start=start),
                                  _brute_force_k_center(points, 8, start))
    projected = greedy_coreset(points, 8, projection_dim=3, start=start)
    assert len(set(projected.tolist())) == 8 and projected[0] == start


def test_locally_aware_patches_match_torch_pooling_and_bilinear_upsampling():
    first, second = randn(2, 6, 6, 3, seed=5), randn(2, 3, 3, 4, seed=6)
    pooled = [torch.nn.functional.avg_pool2d(torch.tensor(m).permute(0, 3, 1, 2), 3, 1, 1) for m in (first, second)]
    upsampled = torch.nn.functional.interpolate(pooled[1], size=(6, 6), mode="bilinear", align_corners=False)
    expected = torch.cat([pooled[0], upsampled], dim=1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(locally_aware_patches([first, second]), expected, rtol=1e-5, atol=1e-6)


def _backbone():
    lamina.manual_seed(0)
    return nn.Sequential(nn.Conv2D(4, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                         nn.Conv2D(6, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                         nn.Conv2D(5, 3, padding="same", activation="relu"))


def test_patchcore_score_and_map_match_a_numpy_reference():
    backbone = _backbone()
    train, test = randn(6, 8, 8, 1, seed=7), randn(3, 8, 8, 1, seed=8) * 1.5
    core = PatchCore(backbone, layers=[0, 2], coreset_ratio=0.25, neighbours=3, projection_dim=None).fit(train)
    patches = core.patch_features(test)
    assert patches.shape == (3, 8, 8, 10)
    assert len(core.memory_bank) == round(0.25 * 6 * 64)
    bank = core.memory_bank
    scores, maps = core.predict(test)
    for i in range(3):
        flat = patches[i].reshape(-1, 10)
        distances = np.linalg.norm(flat[:, None] - bank[None], axis=2)
        s = distances.min(axis=1)
        p = s.argmax()
        anchor = distances[p].argmin()
        support = np.argsort(np.linalg.norm(bank - bank[anchor], axis=1))[:3]
        d = np.linalg.norm(bank[support] - flat[p], axis=1)
        expected = (1 - np.exp(d[0]) / np.exp(d).sum()) * s[p]
        np.testing.assert_allclose(scores[i], expected, rtol=1e-6)
        np.testing.assert_allclose(maps[i], gaussian_filter(s.reshape(8, 8), 4.0, mode="reflect"), rtol=1e-6,
                                   atol=1e-9)
    np.testing.assert_allclose(core.score(test), scores)


def test_reconstruction_scores_match_numpy():
    lamina.manual_seed(0)
    model = lamina.models.ConvAutoencoder(code_size=3, filters=(4,), input_shape=(8, 8, 2))
    x = np.random.default_rng(3).random((5, 8, 8, 2)).astype(np.float32)
    with lamina.no_grad():
        x_hat = model(x).numpy().astype(np.float64)
    np.testing.assert_allclose(reconstruction_error(model, x, batch_size=2),
                               ((x - x_hat) ** 2).reshape(5, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(reconstruction_map(model, x), ((x - x_hat) ** 2).mean(axis=-1), rtol=1e-6)


def test_clear_errors():
    with pytest.raises(ValueError, match="energy_score: temperature"):
        energy_score(randn(2, 3), temperature=0)
    with pytest.raises(ShapeError, match="max_softmax_score"):
        max_softmax_score(randn(2, 3, 4))
    with pytest.raises(ValueError, match="greedy_coreset: count=9 exceeds the 4"):
        greedy_coreset(randn(4, 2), 9)
    with pytest.raises(ValueError, match="knn_ood_score: k=5 exceeds"):
        knn_ood_score(randn(2, 3), randn(4, 3), k=5)
    with pytest.raises(ShapeError, match="mahalanobis_score: features of 2 dimensions"):
        mahalanobis_score(randn(3, 2), ClassGaussians(np.zeros((2, 3)), np.eye(3)))
    with pytest.raises(RuntimeError, match="PatchCore: call fit"):
        PatchCore(_backbone(), layers=[0, 2]).score(randn(1, 8, 8, 1))
    with pytest.raises(ValueError, match="PatchCore: layer 'nope'"):
        PatchCore(_backbone(), layers=["nope"]).fit(randn(1, 8, 8, 1))
    lamina.manual_seed(0)
    with pytest.raises(ShapeError, match="reconstruction_error: the model's reconstruction has shape"):
        reconstruction_error(nn.Sequential(nn.Dense(2)), randn(3, 4))
