"""Anomaly and OOD detection learned on the 8x8 digits. One digit as the normal class: Deep
SVDD, an autoencoder's reconstruction error and PatchCore on CNN features rank the other digits
above held-out normal ones. A classifier of digits 0-4: energy, Mahalanobis, ODIN and kNN
scores separate digits 5-9 as out of distribution, next to the maximum softmax probability."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis.anomaly import (
    PatchCore,
    energy_score,
    fit_class_gaussians,
    knn_ood_score,
    mahalanobis_input_score,
    max_softmax_score,
    odin_score,
    reconstruction_error,
)
from lamina.analysis.retrieval import extract_features
from lamina.data import load_digits
from lamina.models import Autoencoder
from lamina.train import Trainer
from lamina.train.anomaly import DeepSVDD, ood_metrics

NORMAL_DIGIT = 0


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order].astype(np.float32) / 255, y[order]


@pytest.fixture(scope="module")
def one_class(digits):
    """Normal training images of one digit, and a test set of held-out normal and other digits."""
    x, y = digits
    normal, other = np.flatnonzero(y == NORMAL_DIGIT), np.flatnonzero(y != NORMAL_DIGIT)
    return x[normal[:120]], x[normal[120:]], x[other[:300]]


def report(name, metrics):
    print(f"\n{name}: AUROC {metrics.auroc:.3f}, AUPR-in {metrics.aupr_in:.3f}, AUPR-out {metrics.aupr_out:.3f}, "
          f"FPR@95 {metrics.fpr_at_95_tpr:.3f}")
    return metrics


def test_deep_svdd_separates_other_digits(one_class):
    train, normal, other = one_class
    lamina.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Dense(32, use_bias=False, activation="leaky_relu"),
                        nn.Dense(8, use_bias=False))
    svdd = DeepSVDD(net).fit(train, epochs=30, batch_size=32, lr=1e-3)
    metrics = report("Deep SVDD", ood_metrics(svdd.score(normal), svdd.score(other)))
    assert svdd.losses[-1] < svdd.losses[0]
    assert metrics.auroc > 0.8


def test_autoencoder_reconstruction_error_separates_other_digits(one_class):
    train, normal, other = one_class
    lamina.manual_seed(0)
    model = Autoencoder(code_size=4, hidden=(32,), input_shape=(8, 8, 1))
    Trainer(model, F.mean_squared_error, optim.Adam(model, lr=1e-2), metrics=(), verbose=0).fit(
        (train, train), epochs=60, batch_size=32, seed=0)
    scores_normal, scores_other = reconstruction_error(model, normal), reconstruction_error(model, other)
    metrics = report("autoencoder", ood_metrics(scores_normal, scores_other))
    assert metrics.auroc > 0.8


def test_patchcore_on_cnn_features_separates_other_digits(one_class):
    train, normal, other = one_class
    lamina.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2D(16, 3, padding="same", activation="relu"),
                             nn.Conv2D(16, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                             nn.Conv2D(32, 3, padding="same", activation="relu"))
    core = PatchCore(backbone, layers=[1, 3], coreset_ratio=0.1).fit(train[:60])
    scores, maps = core.predict(np.concatenate([normal, other]))
    metrics = report("PatchCore", ood_metrics(scores[:len(normal)], scores[len(normal):]))
    assert maps.shape == (len(scores), 8, 8)
    assert metrics.auroc > 0.8


@pytest.fixture(scope="module")
def classifier(digits):
    x, y = digits
    known = y < 5
    x_in, y_in, x_out = x[known], y[known], x[~known][:300]
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(32, activation="relu"),
                          nn.Dense(5))
    loss = lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True)  # noqa: E731
    Trainer(model, loss, optim.Adam(model, lr=5e-3), metrics=(), verbose=0).fit(
        (x_in[:600], y_in[:600]), epochs=30, batch_size=32, seed=0)
    return model.eval(), (x_in[:600], y_in[:600]), x_in[600:], x_out


def test_classifier_scores_separate_unseen_digits(classifier):
    model, (x_train, y_train), x_in, x_out = classifier
    with lamina.no_grad():
        logits_in, logits_out = model(x_in).numpy(), model(x_out).numpy()
    msp = report("MSP", ood_metrics(max_softmax_score(logits_in), max_softmax_score(logits_out)))
    energy = report("energy", ood_metrics(energy_score(logits_in), energy_score(logits_out)))
    odin = report("ODIN", ood_metrics(odin_score(model, x_in, 1000.0, 0.002), odin_score(model, x_out, 1000.0, 0.002)))
    features = nn.Sequential(*list(model)[:-1])
    train_features = extract_features(features, x_train)
    gaussians = fit_class_gaussians(train_features, y_train)
    mahalanobis = report("Mahalanobis", ood_metrics(mahalanobis_input_score(features, x_in, gaussians),
                                                    mahalanobis_input_score(features, x_out, gaussians)))
    knn = report("kNN", ood_metrics(knn_ood_score(extract_features(features, x_in), train_features, k=10),
                                    knn_ood_score(extract_features(features, x_out), train_features, k=10)))
    for metrics in (msp, energy, odin, mahalanobis, knn):
        assert metrics.auroc > 0.7
    assert max(energy.auroc, mahalanobis.auroc) > msp.auroc - 0.05
