import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import nn
from lamina.errors import ShapeError


def _film(x_shape, condition_dim=3, seed=0):
    layer = nn.FiLM(x_shape[-1])
    layer(randn(*x_shape, seed=seed), randn(x_shape[0], condition_dim, seed=seed + 1))
    return layer


def _torch_film(x, c, wg, bg, wb, bb):
    """gamma(c) * x + beta(c), gamma and beta broadcast over the middle axes."""
    middle = (1,) * (x.dim() - 2)
    gamma = (c @ wg + bg).reshape((x.shape[0],) + middle + (-1,))
    beta = (c @ wb + bb).reshape((x.shape[0],) + middle + (-1,))
    return gamma * x + beta


@pytest.mark.parametrize("x_shape", [(4, 5), (2, 3, 3, 4)])
def test_film_matches_torch_and_gradcheck(x_shape):
    lamina.set_default_dtype(np.float64)
    layer = _film(x_shape)
    names = ["gamma_weight", "gamma_bias", "beta_weight", "beta_bias"]
    params = [randn(*getattr(layer, n).shape, seed=10 + k) for k, n in enumerate(names)]

    def ours(x, c, *p):
        return nn.functional_call(layer, dict(zip(names, p)), x, c)

    arrays = (randn(*x_shape, seed=3), randn(x_shape[0], 3, seed=4), *params)
    compare_with_torch(ours, _torch_film, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_film_starts_near_identity_and_rejects_bad_conditions():
    layer = _film((2, 4, 4, 6))
    gamma, beta = layer.modulation(lamina.tensor(np.zeros((2, 3))))
    assert np.allclose(gamma.numpy(), 1.0) and np.allclose(beta.numpy(), 0.0)
    with pytest.raises(ShapeError, match=r"condition must have shape \(batch, 3\)"):
        layer(randn(2, 4, 4, 6), randn(2, 5))
    with pytest.raises(ShapeError, match="batch 2 but the condition has 3"):
        layer(randn(2, 4, 4, 6), randn(3, 3))
    with pytest.raises(ShapeError, match=r"x must be \(batch, ..., 6\)"):
        layer(randn(2, 4, 4, 5), randn(2, 3))
    with pytest.raises(ValueError, match="features must be a positive int"):
        nn.FiLM(0)


def _torch_cbn(batch_norm, gamma, beta, ids):
    def run(x, g, b):
        middle = (1,) * (x.dim() - 2)
        y = batch_norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return g[ids].reshape((x.shape[0],) + middle + (-1,)) * y + b[ids].reshape((x.shape[0],) + middle + (-1,))
    return run


@pytest.mark.parametrize("x_shape", [(6, 4), (3, 2, 2, 4)])
def test_conditional_batch_norm_matches_torch_in_train_and_eval(x_shape):
    lamina.set_default_dtype(np.float64)
    ids = np.array([0, 2, 1, 2, 0, 1][:x_shape[0]])
    layer = nn.ConditionalBatchNorm(3, momentum=0.8)
    reference = torch.nn.BatchNorm1d(x_shape[-1], momentum=0.2, affine=False, dtype=torch.float64)
    gamma, beta = randn(3, x_shape[-1], seed=5) + 1.0, randn(3, x_shape[-1], seed=6)
    layer(randn(*x_shape), ids)                    # builds and takes one running-average step
    reference(torch.tensor(randn(*x_shape)).reshape(-1, x_shape[-1]))

    def ours(x, g, b):
        return nn.functional_call(layer, {"gamma": g, "beta": b}, x, ids)

    for training in (True, False):
        layer.train(training)
        reference.train(training)
        x = randn(*x_shape, seed=7, scale=2.0) + 0.5
        compare_with_torch(ours, _torch_cbn(reference, gamma, beta, ids), x, gamma, beta, dtype=np.float64)
        assert_close(layer.batch_norm.running_mean, reference.running_mean.numpy(), 1e-10, "running mean")
        assert_close(layer.batch_norm.running_var, reference.running_var.numpy(), 1e-10, "running var")
    for training in (True, False):
        layer.train(training)
        assert check_gradients(ours, x, gamma, beta)


def test_conditional_batch_norm_rejects_bad_class_ids():
    layer = nn.ConditionalBatchNorm(3)
    layer(randn(4, 2), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\), got values from 0 to 3"):
        layer(randn(4, 2), np.array([0, 1, 3, 0]))
    with pytest.raises(ShapeError, match=r"class_ids must be integers of shape \(4,\)"):
        layer(randn(4, 2), np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ShapeError, match=r"class_ids must be integers of shape \(4,\)"):
        layer(randn(4, 2), np.array([0, 1]))


def test_readme_section_runs():
    printed, names = run_readme_section("Conditional computation: FiLM, conditional BN")
    assert names["mod"].selection_mask.sum(axis=1).tolist() == [2, 2]
    assert names["result"].exit_fractions.tolist() == [1.0, 0.0]
    counts = names["hyper"].parameter_counts()
    assert counts["target"] == 32 * 64 + 64 > counts["hypernetwork"] and "(4, 6, 6, 8)" in printed


def test_configs_round_trip():
    for layer in (nn.FiLM(6, condition_dim=3), nn.ConditionalBatchNorm(4, momentum=0.7, eps=1e-3)):
        copy = nn.layer_from_config(nn.layer_to_config(layer))
        assert type(copy) is type(layer) and copy.get_config() == layer.get_config()
