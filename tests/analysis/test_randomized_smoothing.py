"""lamina.analysis.certify: the Clopper-Pearson bound against scipy's beta quantile and its
defining tail probability, the radius formula, and on a linear classifier (whose smoothed
version is itself, with the exact radius the distance to the hyperplane) sound radii,
agreeing predictions and abstention on the boundary."""

import math

import numpy as np
import pytest
from scipy import stats

import lamina
from lamina import nn
from lamina.analysis.certify import ABSTAIN, SmoothedClassifier, certified_radius, clopper_pearson_lower


def test_clopper_pearson_lower_bound_equals_the_beta_quantile_and_its_definition():
    successes = np.array([0, 1, 37, 500, 990, 1000])
    trials = 1000
    alpha = 0.01
    bound = clopper_pearson_lower(successes, trials, alpha)
    expected = [0.0] + [stats.beta.ppf(alpha, k, trials - k + 1) for k in successes[1:]]
    np.testing.assert_allclose(bound, expected, rtol=1e-12)
    # the bound p is where seeing k or more successes has probability alpha
    for k, p in zip(successes[1:], bound[1:]):
        assert stats.binom.sf(k - 1, trials, p) == pytest.approx(alpha, rel=1e-6)
    with pytest.raises(ValueError, match="alpha must be a probability in \\(0, 1\\)"):
        clopper_pearson_lower(5, 10, 1.5)
    with pytest.raises(ValueError, match="successes must lie in \\[0, trials\\]"):
        clopper_pearson_lower(11, 10, 0.05)


def test_radius_formula():
    phi = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # Phi(1)
    np.testing.assert_allclose(certified_radius([phi, 0.5, 0.3], sigma=0.25), [0.25, 0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        certified_radius([0.9], sigma=0)


def linear_classifier():
    lamina.set_default_dtype(np.float64)
    model = nn.Dense(2)
    model.build((None, 3))
    model.weight.data[:] = [[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]]
    model.bias.data[:] = [0.2, -0.1]
    normal = model.weight.data[:, 1] - model.weight.data[:, 0]
    offset = model.bias.data[1] - model.bias.data[0]
    return model, normal, offset


def test_smoothing_a_linear_classifier_certifies_sound_radii():
    model, normal, offset = linear_classifier()
    rng = np.random.default_rng(0)
    direction = normal / np.linalg.norm(normal)
    signed = np.array([-1.0, -0.6, -0.3, 0.15, 0.4, 0.8])       # signed distances to the hyperplane
    x = rng.normal(size=(6, 3))
    x = x - ((x @ normal + offset) / np.linalg.norm(normal))[:, None] * direction + signed[:, None] * direction
    distance = np.abs(x @ normal + offset) / np.linalg.norm(normal)
    base = (x @ model.weight.data + model.bias.data).argmax(axis=1)

    smoothed = SmoothedClassifier(model, sigma=0.5, batch_size=500, seed=1)
    classes, radii = smoothed.certify(x, n0=100, n=2000, alpha=0.001)
    assert np.array_equal(classes, base)
    assert (radii <= distance).all(), (radii, distance)
    assert (radii >= 0.6 * distance).all(), (radii, distance)
    assert np.array_equal(smoothed.predict(x, samples=1000, alpha=0.001), base)


def test_smoothed_prediction_abstains_on_the_boundary():
    model, normal, offset = linear_classifier()
    x = np.random.default_rng(2).normal(size=(4, 3))
    x = x - ((x @ normal + offset) / (normal @ normal))[:, None] * normal    # onto the hyperplane
    smoothed = SmoothedClassifier(model, sigma=0.5, seed=3)
    assert (smoothed.predict(x, samples=500, alpha=0.001) == ABSTAIN).all()
    classes, radii = smoothed.certify(x, n0=50, n=500, alpha=0.001)
    assert (classes == ABSTAIN).all() and (radii == 0).all()
    with pytest.raises(ValueError, match="SmoothedClassifier: sigma"):
        SmoothedClassifier(model, sigma=-1.0)
    with pytest.raises(ValueError, match="n0 must be a positive int"):
        smoothed.certify(x, n0=0)
