"""Uncertainty methods on the digits: MC dropout, a deep ensemble and the last-layer Laplace
approximation lower the test negative log-likelihood of one trained network, and conformal
APS and LAC sets calibrated on held-out digits reach the stated coverage on the test split."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train import Trainer
from lamina.train.calibration import expected_calibration_error
from lamina.train.conformal import ConformalClassifier, coverage, mean_set_size
from lamina.train.laplace import LastLayerLaplace
from lamina.train.uncertainty import DeepEnsemble, mc_dropout_predict

ALPHA = 0.1


def cross_entropy(out, labels):
    return F.categorical_cross_entropy(out, labels, from_logits=True)


def make_model():
    return nn.Sequential(nn.Flatten(), nn.Dense(48, activation="relu"), nn.Dropout(0.25), nn.Dense(10))


def nll(probs, labels):
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), val, test = train_val_test_split(x, y, val=0.3, test=0.3, seed=0)
    return (x_train[:400], y_train[:400]), val, test


def fit(model, train, seed=0):
    Trainer(model, cross_entropy, optim.Adam(model, lr=1e-2), metrics=(), verbose=0).fit(
        train, epochs=50, batch_size=32, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def single(digits):
    train, _, (x_test, y_test) = digits
    lamina.manual_seed(0)
    model = fit(make_model(), train)
    with lamina.no_grad():
        logits = model(x_test).numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return model, probs / probs.sum(axis=1, keepdims=True)


def report(name, probs, labels, baseline):
    ece, ece_single = expected_calibration_error(probs, labels), expected_calibration_error(baseline, labels)
    print(f"{name}: NLL {nll(probs, labels):.4f} (single {nll(baseline, labels):.4f}), ECE {ece:.4f} (single "
          f"{ece_single:.4f}), accuracy {np.mean(probs.argmax(axis=1) == labels):.3f}")


def test_mc_dropout_improves_the_nll(digits, single):
    _, _, (x_test, y_test) = digits
    model, baseline = single
    lamina.manual_seed(1)
    probs = mc_dropout_predict(model, x_test, samples=20).mean
    report("MC dropout", probs, y_test, baseline)
    assert nll(probs, y_test) < nll(baseline, y_test) - 0.003


def test_a_deep_ensemble_improves_the_nll(digits, single):
    train, _, (x_test, y_test) = digits
    _, baseline = single
    ensemble = DeepEnsemble(make_model, n=4, loss=cross_entropy, make_optimizer=lambda m: optim.Adam(m, lr=1e-2))
    ensemble.fit(train, epochs=50, batch_size=32)
    summary = ensemble.predict(x_test)
    report("deep ensemble", summary.mean, y_test, baseline)
    assert nll(summary.mean, y_test) < nll(baseline, y_test) - 0.01
    wrong = summary.mean.argmax(axis=1) != y_test
    assert summary.mutual_information[wrong].mean() > summary.mutual_information[~wrong].mean()


def test_last_layer_laplace_improves_the_nll(digits, single):
    train, (x_val, y_val), (x_test, y_test) = digits
    model, baseline = single
    laplace = LastLayerLaplace(model).fit(*train)
    marglik = laplace.optimize_prior_precision("marglik")
    report(f"Laplace, marginal-likelihood prior {marglik:.3g}", laplace.predict(x_test), y_test, baseline)
    chosen = laplace.optimize_prior_precision("gridsearch", x_val, y_val, grid_size=17)
    probs = laplace.predict(x_test)
    report(f"Laplace, validation prior {chosen:.3g}", probs, y_test, baseline)
    assert nll(probs, y_test) < nll(baseline, y_test) - 0.003


@pytest.mark.parametrize("method", ["aps", "lac"])
def test_conformal_sets_reach_the_coverage_on_the_test_split(digits, single, method):
    _, (x_val, y_val), (x_test, y_test) = digits
    model, _ = single
    conformal = ConformalClassifier(model, method=method, randomized=method == "aps").calibrate(x_val, y_val)
    sets = conformal.predict_sets(x_test, ALPHA)
    print(f"{method}: coverage {coverage(sets, y_test):.3f} at alpha {ALPHA}, mean set size {mean_set_size(sets):.2f}")
    # one calibration split and 539 test digits: coverage varies by about 0.018 (sd) around >= 1 - alpha
    assert coverage(sets, y_test) >= 1 - ALPHA - 0.05
    assert mean_set_size(sets) < 2.0
