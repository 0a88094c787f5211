import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from helpers import assert_close
from lamina import nn


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _set_affine(layer, c, seed=0):
    rng = np.random.default_rng(seed)
    layer.weight.data = 1 + 0.3 * rng.standard_normal(c)
    layer.bias.data = 0.2 * rng.standard_normal(c)


def _compare_in_evaluation(layer, tl, x, pairs):
    """Both layers switched to evaluation (running statistics), fresh gradients, compared."""
    layer.eval()
    tl.eval()
    for p in layer.parameters():
        p.grad = None
    tl.zero_grad()
    compare_layer(layer, tl, x, pairs, copy=False)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2)])
def test_batchnorm_training_and_running_stats_match_torch(f64, shape):
    c = shape[-1]
    layer = nn.BatchNorm()  # momentum 0.9 == torch's 0.1
    tl = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, momentum=0.1, eps=1e-5)
    layer.build(shape)
    layer.built = True
    _set_affine(layer, c)
    pairs = [("weight", tl.weight, None), ("bias", tl.bias, None)]
    rng = np.random.default_rng(1)
    for step in range(4):
        x = 2.0 + 3.0 * rng.standard_normal(shape)
        for p in layer.parameters():
            p.grad = None
        tl.zero_grad()
        compare_layer(layer, tl, x, pairs, copy=(step == 0), seed=step)
        assert_close(layer.running_mean, tl.running_mean.numpy(), 1e-12, "running_mean")
        assert_close(layer.running_var, tl.running_var.numpy(), 1e-12, "running_var")
    _compare_in_evaluation(layer, tl, rng.standard_normal(shape), pairs)


@pytest.mark.parametrize("shape", [(6, 7, 9, 4),     # rows of several pixels (r C <= CHANNEL_ROW)
                                   (7, 11, 13, 3),   # m = 1001 = 7 * 11 * 13: merged rows of 77 pixels
                                   (97, 5),          # a prime number of rows: one pixel per row
                                   (3, 2, 2, 600)])  # more channels than CHANNEL_ROW
def test_batchnorm_in_many_chunks_matches_torch(f64, monkeypatch, shape):
    """Tiny chunks, so that every pass runs over many of them, in every row layout."""
    from lamina.nn import normalization

    monkeypatch.setattr(normalization, "CHUNK_BYTES", 256)
    c = shape[-1]
    layer = nn.BatchNorm()
    tl = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, momentum=0.1, eps=1e-5)
    layer.build(shape)
    _set_affine(layer, c)
    pairs = [("weight", tl.weight, None), ("bias", tl.bias, None)]
    x = 5.0 + 2.0 * np.random.default_rng(3).standard_normal(shape)
    compare_layer(layer, tl, x, pairs, copy=True)
    assert_close(layer.running_var, tl.running_var.numpy(), 1e-12, "running_var")
    _compare_in_evaluation(layer, tl, x[::-1].copy(), pairs)


def test_batchnorm_gradcheck_training_and_eval(f64):
    x = np.random.default_rng(2).standard_normal((5, 2, 2, 3))
    layer = nn.BatchNorm()
    layer(x)
    _set_affine(layer, 3)
    assert gradcheck_layer(layer, x)
    layer.eval()
    layer.running_mean = np.array([0.1, -0.2, 0.3])
    layer.running_var = np.array([0.5, 2.0, 1.5])
    assert gradcheck_layer(layer, x)
    assert gradcheck_layer(layer, x[0, :1, :1])  # one sample in evaluation mode


def test_batchnorm_training_normalises_and_eval_uses_running(f64):
    rng = np.random.default_rng(3)
    layer = nn.BatchNorm(momentum=0.0)
    x = 5 + 2 * rng.standard_normal((1000, 4))
    y = layer(x).numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-4)
    # momentum 0: the running stats are this batch's (unbiased variance)
    np.testing.assert_allclose(layer.running_mean, x.mean(0))
    np.testing.assert_allclose(layer.running_var, x.var(0, ddof=1))
    layer.eval()
    y_eval = layer(x[:1]).numpy()
    expected = (x[:1] - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 1e-5)
    np.testing.assert_allclose(y_eval, expected)


def test_batchnorm_affine_false_and_errors():
    layer = nn.BatchNorm(affine=False, name="bn")
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype(np.float32)
    assert layer(x).shape == x.shape
    assert layer.parameters() == [] and set(layer.state_dict()) == {"running_mean", "running_var"}
    with pytest.raises(lamina.ShapeError, match=r"BatchNorm 'bn'.*\(4, 3, 6, 6\).*C=3.*NCHW"):
        layer(x.transpose(0, 3, 1, 2))
    with pytest.raises(lamina.ShapeError, match="more than one value per channel"):
        layer(x[:1, :1, :1])
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm(momentum=1.5)


def test_batchnorm_gamma_beta_aliases_and_dtype():
    layer = nn.BatchNorm()
    y = layer(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    assert layer.gamma is layer.weight and layer.beta is layer.bias
    assert y.dtype == np.float32 and layer.running_mean.dtype == np.float32


@pytest.mark.parametrize("size, c", [(5, 7), (2, 4), (4, 6), (5, 3), (1, 3)])
def test_lrn_matches_torch(f64, size, c):
    x = np.random.default_rng(4).standard_normal((2, 3, 4, c)) * 3
    layer = nn.LocalResponseNorm(size=size, alpha=0.1, beta=0.75, k=1.0)
    tl = torch.nn.LocalResponseNorm(size, alpha=0.1, beta=0.75, k=1.0)
    compare_layer(layer, tl, x)


def test_lrn_alexnet_defaults_and_gradcheck(f64):
    x = np.random.default_rng(5).standard_normal((2, 2, 2, 6)) * 10
    compare_layer(nn.LocalResponseNorm(), torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0), x)
    assert gradcheck_layer(nn.LocalResponseNorm(size=3, alpha=0.5, beta=0.75, k=1.0), x[:, :, :1])
    assert nn.LocalResponseNorm().compute_output_shape((None, 5, 5, 8)) == (None, 5, 5, 8)
