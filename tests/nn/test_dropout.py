import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from lamina import nn


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_keeps_keep_prob_and_preserves_expectation(rate):
    layer = nn.Dropout(rate)
    x = np.ones((1000, 1000), dtype=np.float32)
    y = layer(x).numpy()
    keep = 1 - rate
    kept = (y != 0).mean()
    assert abs(kept - keep) < 0.01 * keep
    np.testing.assert_allclose(y[y != 0], 1 / keep, rtol=1e-6)  # inverted: survivors scaled
    assert abs(y.mean() - 1.0) < 0.01  # E[d] = x
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1000, 1000)).astype(np.float32) + 3
    assert abs(layer(z).numpy().mean() - z.mean()) < 0.02


def test_dropout_backward_uses_the_forward_mask():
    layer = nn.Dropout(0.5)
    x = lamina.tensor(np.random.default_rng(0).standard_normal((50, 40)), requires_grad=True)
    y = layer(x)
    up = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(up)
    mask = y.numpy() / x.numpy()
    np.testing.assert_allclose(x.grad, up * mask, rtol=1e-6)
    assert set(np.unique(np.round(mask, 5))) <= {0.0, 2.0}


def test_dropout_masks_differ_between_calls_and_follow_the_seed():
    layer = nn.Dropout(0.5)
    x = np.ones((100, 100))
    a, b = layer(x).numpy(), layer(x).numpy()
    assert (a != b).any()
    lamina.manual_seed(7)
    c = layer(x).numpy()
    lamina.manual_seed(7)
    np.testing.assert_array_equal(c, layer(x).numpy())


def test_dropout_eval_is_identity_and_rate_zero():
    layer = nn.Dropout(0.5)
    x = lamina.tensor(np.random.default_rng(0).standard_normal((10, 10)))
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert nn.Dropout(0.0)(x) is x
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"Dropout: rate is the fraction dropped and must be in \[0, 1\]"):
            nn.Dropout(bad)


def test_rate_one_drops_everything_as_torch():
    x_np = np.random.default_rng(1).standard_normal((4, 6))
    x = lamina.tensor(x_np, requires_grad=True)
    y = nn.Dropout(1.0)(x)
    tx = torch.tensor(x_np, requires_grad=True)
    ty = torch.nn.Dropout(1.0)(tx)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())
    assert not np.isnan(x.grad).any() and not x.grad.any()
    dense = nn.Dense(3)
    out = nn.DropConnect(dense, rate=1.0)(np.ones((2, 5), dtype=np.float32)).numpy()
    np.testing.assert_array_equal(out, np.broadcast_to(dense.bias.numpy(), (2, 3)))


def test_dropout_gradcheck():
    lamina.set_default_dtype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 5))
    assert gradcheck_layer(nn.Dropout(0.3), x, reseed=3)


def test_dropconnect_drops_weights_in_training_only():
    dense = nn.Dense(200, use_bias=False)
    layer = nn.DropConnect(dense, rate=0.4)
    x = np.eye(300, dtype=np.float32)  # row i of the output = row i of the (masked) weight
    y = layer(x).numpy()
    w = dense.weight.numpy()
    assert y.shape == (300, 200)
    dropped = (y == 0) & (w != 0)
    assert abs(dropped.mean() - 0.4) < 0.01
    np.testing.assert_allclose(y[~dropped], w[~dropped] / 0.6, rtol=1e-5)
    layer.eval()
    np.testing.assert_allclose(layer(x).numpy(), w, rtol=1e-6)
    assert [n for n, _ in layer.named_parameters()] == ["layer.weight"]


def test_dropconnect_gradient_through_mask():
    lamina.set_default_dtype(np.float64)
    layer = nn.DropConnect(nn.Dense(3, activation="tanh"), rate=0.5)
    x = np.random.default_rng(0).standard_normal((4, 5))
    assert gradcheck_layer(layer, x, reseed=5)
    lamina.manual_seed(5)
    y = layer(lamina.tensor(x))
    y.backward(np.ones(y.shape))
    g = layer.layer.weight.grad
    assert (g == 0).mean() > 0.3  # dropped weights get no gradient
    assert layer.compute_output_shape((None, 5)) == (None, 3)


def test_dropconnect_rejects_layers_without_weights():
    with pytest.raises(TypeError, match="Dense or Conv2D"):
        nn.DropConnect(nn.ReLU())
