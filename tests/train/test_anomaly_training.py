"""Deep SVDD's pieces against torch and NumPy (objective and gradient, centre, radius update,
refusing biases) and the OOD detection metrics on hand-made scores and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.train.anomaly import DeepSVDD, deep_svdd_loss, fpr_at_tpr, ood_metrics, svdd_center, svdd_radius

CENTER = np.array([0.5, -0.2, 0.1])


def torch_svdd(embeddings, radius, nu, objective):
    distances = ((embeddings - torch.tensor(CENTER)) ** 2).sum(dim=1)
    if objective == "one-class":
        return distances.mean()
    return radius ** 2 + torch.clamp(distances - radius ** 2, min=0).mean() / nu


@pytest.mark.parametrize("objective", ["one-class", "soft-boundary"])
def test_deep_svdd_objective_and_gradient_match_torch(objective):
    embeddings = randn(12, 3, seed=1)
    radius, nu = 1.1, 0.2
    compare_with_torch(lambda z: deep_svdd_loss(z, CENTER, radius, nu, objective),
                       lambda z: torch_svdd(z, radius, nu, objective), embeddings, dtype=np.float64)
    assert check_gradients(lambda z: deep_svdd_loss(z, CENTER, radius, nu, objective), embeddings)


def test_center_pushes_near_zero_coordinates_to_eps():
    embeddings = np.array([[1.0, 0.02, -0.04, 0.0], [3.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(svdd_center(embeddings, eps=0.1), [2.0, 0.1, -0.1, 0.1])


def test_radius_is_the_one_minus_nu_quantile_of_the_distances():
    squared = np.arange(1, 21, dtype=float) ** 2
    assert svdd_radius(squared, nu=0.1) == pytest.approx(np.quantile(np.arange(1, 21), 0.9))
    assert np.mean(np.sqrt(squared) > svdd_radius(squared, nu=0.25)) <= 0.25


def test_deep_svdd_refuses_networks_with_biases():
    with pytest.raises(ValueError, match=r"DeepSVDD: the network has bias terms \['dense.bias'\]"):
        DeepSVDD(_built(nn.Sequential(nn.Dense(3))))
    lazy = DeepSVDD(nn.Sequential(nn.Dense(3)))          # its bias appears on the first forward pass
    with pytest.raises(ValueError, match="bias terms"):
        lazy.fit(randn(8, 4), epochs=1)


def _built(model):
    model(randn(2, 4))
    return model


def test_soft_boundary_training_sets_the_radius_and_shrinks_the_loss():
    x = randn(64, 4, seed=2)
    net = nn.Sequential(nn.Dense(8, use_bias=False, activation="leaky_relu"), nn.Dense(3, use_bias=False))
    svdd = DeepSVDD(net, objective="soft-boundary", nu=0.2).fit(x, epochs=6, batch_size=16, lr=1e-2,
                                                                warmup_epochs=1)
    assert svdd.losses[-1] < svdd.losses[0]
    distances = ((svdd.embed(x) - svdd.center) ** 2).sum(axis=1)
    assert svdd.radius == pytest.approx(np.quantile(np.sqrt(distances), 0.8), rel=1e-5)
    np.testing.assert_allclose(svdd.score(x), distances - svdd.radius ** 2, rtol=1e-6)


def test_fpr_at_95_tpr_on_hand_made_scores():
    inside = np.arange(20, dtype=float)                  # the threshold keeping 19 of 20 is 18
    outside = np.array([5.0, 18.0, 18.5, 30.0, 40.0])
    assert fpr_at_tpr(inside, outside) == pytest.approx(2 / 5)
    assert fpr_at_tpr(inside, outside + 100) == 0.0
    assert fpr_at_tpr(inside, outside, tpr=0.5) == pytest.approx(1 / 5)


def test_ood_metrics_match_scikit_learn():
    rng = np.random.default_rng(4)
    inside, outside = rng.normal(size=50), rng.normal(1.0, size=30)
    metrics = ood_metrics(inside, outside)
    scores = np.concatenate([inside, outside])
    is_out = np.r_[np.zeros(50), np.ones(30)]
    assert metrics.auroc == pytest.approx(roc_auc_score(is_out, scores))
    assert metrics.aupr_out == pytest.approx(average_precision_score(is_out, scores))
    assert metrics.aupr_in == pytest.approx(average_precision_score(1 - is_out, -scores))
    assert metrics.fpr_at_95_tpr == fpr_at_tpr(inside, outside)


def test_clear_errors():
    with pytest.raises(ValueError, match="DeepSVDD: objective must be one of"):
        DeepSVDD(nn.Sequential(nn.Dense(2, use_bias=False)), objective="hard")
    with pytest.raises(ValueError, match=r"svdd_radius: nu must lie in \(0, 1\]"):
        svdd_radius(np.ones(3), nu=0)
    with pytest.raises(RuntimeError, match="DeepSVDD.score: call fit"):
        DeepSVDD(nn.Sequential(nn.Dense(2, use_bias=False))).score(randn(2, 3))
    with pytest.raises(ValueError, match="ood_metrics: out_scores must be a non-empty set of finite scores"):
        ood_metrics(np.ones(3), np.array([np.nan]))
