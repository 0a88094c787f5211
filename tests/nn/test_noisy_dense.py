"""NoisyDense (noisy networks): outputs and gradients against a float64 PyTorch rewrite with the
same noise, a float64 gradient check, the paper's noise and initialisation, evaluation mode."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import nn
from lamina.nn.functional_call import functional_call

NAMES = ("weight_mu", "weight_sigma", "bias_mu", "bias_sigma")


def _layer(factorised=True, n_in=4, units=3, activation=None, seed=0):
    lamina.manual_seed(seed)
    layer = nn.NoisyDense(units, sigma0=0.5, factorised=factorised, activation=activation)
    layer.build((None, n_in))
    return layer


def _torch_noisy_dense(x, w_mu, w_sigma, b_mu, b_sigma, w_eps, b_eps, activation=None):
    """y = x (mu_W + sigma_W eps_W) + (mu_b + sigma_b eps_b), written out in torch."""
    y = x @ (w_mu + w_sigma * w_eps) + (b_mu + b_sigma * b_eps)
    return torch.tanh(y) if activation == "tanh" else y


@pytest.mark.parametrize("factorised", [True, False])
@pytest.mark.parametrize("activation", [None, "tanh"])
def test_outputs_and_gradients_match_torch_with_the_same_noise(factorised, activation):
    layer = _layer(factorised, activation=activation)
    w_eps, b_eps = (np.asarray(layer.weight_epsilon, np.float64), np.asarray(layer.bias_epsilon, np.float64))
    params = [randn(4, 3, seed=1), np.abs(randn(4, 3, seed=2)), randn(3, seed=3), np.abs(randn(3, seed=4))]

    def ours(x, *values):
        return functional_call(layer, dict(zip(NAMES, values)), x)

    def theirs(x, *values):
        return _torch_noisy_dense(x, *values, torch.tensor(w_eps), torch.tensor(b_eps), activation)

    compare_with_torch(ours, theirs, randn(5, 4, seed=5), *params, dtype=np.float64)


def test_float64_gradient_check():
    layer = _layer()
    params = [randn(4, 3, seed=1), randn(4, 3, seed=2), randn(3, seed=3), randn(3, seed=4)]
    assert check_gradients(lambda x, *values: functional_call(layer, dict(zip(NAMES, values)), x),
                           randn(2, 4, seed=5), *params)


def test_second_derivatives():
    layer = _layer(activation="tanh")
    params = [randn(4, 3, seed=1), randn(4, 3, seed=2), randn(3, seed=3), randn(3, seed=4)]
    assert check_second_derivatives(lambda x, *values: functional_call(layer, dict(zip(NAMES, values)), x),
                                    randn(2, 4, seed=5), *params)


def test_factorised_noise_is_the_outer_product_of_signed_square_roots():
    layer = _layer(n_in=5, units=4, seed=3)
    w_eps, b_eps = np.asarray(layer.weight_epsilon), np.asarray(layer.bias_epsilon)
    # eps_W[i, j] = f(e_i) f(e_j) with eps_b = f(e_j): every row is a multiple of eps_b
    ratios = w_eps / b_eps[None, :]
    np.testing.assert_allclose(ratios, ratios[:, :1].repeat(4, axis=1), rtol=1e-5)
    lamina.manual_seed(3)
    rng = lamina.backend.rng()
    rng.uniform(size=5 * 4 + 4)                       # the draws of mu_W and mu_b
    e_in, e_out = rng.standard_normal(5), rng.standard_normal(4)
    f = np.sign(e_in) * np.sqrt(np.abs(e_in)), np.sign(e_out) * np.sqrt(np.abs(e_out))
    np.testing.assert_allclose(w_eps, np.outer(*f), rtol=1e-6)
    np.testing.assert_allclose(b_eps, f[1], rtol=1e-6)


@pytest.mark.parametrize("factorised", [True, False])
def test_initialisation_follows_the_paper(factorised):
    layer = _layer(factorised, n_in=16, units=8)
    bound, sigma = (1 / 4, 0.5 / 4) if factorised else (np.sqrt(3 / 16), 0.017)
    for name in ("weight_mu", "bias_mu"):
        values = np.asarray(getattr(layer, name).data)
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.5 * bound
    np.testing.assert_allclose(layer.weight_sigma.data, sigma, rtol=1e-6)
    np.testing.assert_allclose(layer.bias_sigma.data, sigma, rtol=1e-6)


def test_eval_uses_the_mean_weights_and_is_deterministic():
    layer = _layer()
    x = randn(3, 4, seed=6).astype(np.float32)
    noisy = layer(x).numpy()
    np.testing.assert_array_equal(noisy, layer(x).numpy())       # the noise holds until reset_noise
    layer.reset_noise()
    assert not np.allclose(noisy, layer(x).numpy())
    layer.eval()
    first = layer(x).numpy()
    layer.reset_noise()
    np.testing.assert_array_equal(first, layer(x).numpy())
    mean = x @ np.asarray(layer.weight_mu.data) + np.asarray(layer.bias_mu.data)
    np.testing.assert_allclose(first, mean, rtol=1e-5)


def test_reset_noise_reaches_every_noisy_layer_of_a_model():
    model = nn.Sequential([nn.NoisyDense(3, activation="relu"), nn.Dense(3), nn.NoisyDense(2)])
    model.build((None, 4))
    before = [np.array(layer.bias_epsilon) for layer in model.modules() if isinstance(layer, nn.NoisyDense)]
    nn.reset_noise(model)
    after = [np.array(layer.bias_epsilon) for layer in model.modules() if isinstance(layer, nn.NoisyDense)]
    assert len(before) == 2 and all(not np.allclose(a, b) for a, b in zip(before, after))


def test_bad_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="NoisyDense: units"):
        nn.NoisyDense(0)
    with pytest.raises(ValueError, match="sigma0"):
        nn.NoisyDense(3, sigma0=-1.0)
    layer = _layer()
    with pytest.raises(Exception, match="4 features"):
        layer(np.zeros((2, 5), np.float32))
