"""lamina.analysis.attribution_metrics: infidelity against its definition (0 for an exact
linear explanation) and max-sensitivity of simple explanations."""

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.analysis import infidelity, input_gradient, input_x_gradient, sensitivity_max
from lamina.errors import ShapeError


def linear_model():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(3))
    model.build((None, 4))
    return model, model[0].weight.numpy()


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model_and_follows_its_definition():
    model, w = linear_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    exact = np.broadcast_to(w[:, 1], x.shape)
    assert np.abs(infidelity(model, x, exact, 1, seed=0)).max() < 1e-20
    assert np.abs(infidelity(model, x, 3 * exact, 1, normalize=True, seed=0)).max() < 1e-20
    wrong = rng.normal(size=x.shape)
    fixed = rng.normal(size=(5, 4))
    ours = infidelity(model, x, wrong, 1, n_perturb_samples=5, perturb_fn=lambda copies, _rng: fixed)
    expected = ((fixed @ wrong.T - (fixed @ w[:, 1])[:, None]) ** 2).mean(axis=0)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert ours.min() > 0


def test_sensitivity_max_of_constant_and_moving_explanations():
    model, w = linear_model()
    x = np.random.default_rng(1).normal(size=(2, 4))
    assert np.abs(sensitivity_max(lambda v: input_gradient(model, v, 0), x, seed=0)).max() < 1e-12
    moving = sensitivity_max(lambda v: input_x_gradient(model, v, 0), x, perturb_radius=0.1, seed=0)
    bound = 0.1 * np.linalg.norm(w[:, 0]) / np.linalg.norm(x * w[:, 0], axis=1)
    assert np.all(moving > 0) and np.all(moving <= bound)


def test_errors_are_clear():
    model, _ = linear_model()
    x = np.zeros((2, 4))
    with pytest.raises(ShapeError, match=r"infidelity: attributions of shape \(2, 3\)"):
        infidelity(model, x, np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="perturb_fn gave perturbations"):
        infidelity(model, x, x, perturb_fn=lambda copies, _rng: np.zeros(3))
    with pytest.raises(ValueError, match="perturb_radius must be a finite number > 0"):
        sensitivity_max(lambda v: v, x, perturb_radius=0)
    with pytest.raises(ShapeError, match="sensitivity_max: explain gave attributions"):
        sensitivity_max(lambda v: v[:, :2], x)
