import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from lamina import nn


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def test_dense_matches_torch_linear(f64):
    x = np.random.default_rng(1).standard_normal((6, 5))
    layer = nn.Dense(4)
    tl = torch.nn.Linear(5, 4)
    compare_layer(layer, tl, x, [("weight", tl.weight, (1, 0)), ("bias", tl.bias, None)])
    assert layer.weight.shape == (5, 4)  # (n_in, units): the transpose of torch's / the notes' W


def test_dense_leading_axes_and_activation_match_torch(f64):
    x = np.random.default_rng(2).standard_normal((2, 3, 5))
    layer = nn.Dense(4, activation="tanh")
    tl = torch.nn.Linear(5, 4)
    seq = torch.nn.Sequential(tl, torch.nn.Tanh())
    out, _ = compare_layer(layer, seq, x, [("weight", tl.weight, (1, 0)), ("bias", tl.bias, None)], nchw=False)
    assert out.shape == (2, 3, 4)


def test_dense_without_bias_matches_torch(f64):
    x = np.random.default_rng(3).standard_normal((4, 3))
    layer = nn.Dense(2, use_bias=False, activation="relu")
    tl = torch.nn.Linear(3, 2, bias=False)
    compare_layer(layer, torch.nn.Sequential(tl, torch.nn.ReLU()), x, [("weight", tl.weight, (1, 0))])
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "softmax", "elu", "selu", "leaky_relu"])
def test_dense_gradcheck(f64, activation):
    x = np.random.default_rng(4).standard_normal((3, 4)) + 0.05
    assert gradcheck_layer(nn.Dense(3, activation=activation), x)


def test_dense_gradcheck_3d(f64):
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    assert gradcheck_layer(nn.Dense(2), x)


def test_dense_callable_and_layer_activation(f64):
    x = np.random.default_rng(6).standard_normal((3, 4))
    layer = nn.Dense(2, activation=lambda z: z * 2.0)
    ref = nn.Dense(2)
    ref.build(x.shape)
    ref.built = True
    layer.build(x.shape)
    layer.built = True
    layer.weight.data = ref.weight.data.copy()
    np.testing.assert_allclose(layer(x).numpy(), 2 * ref(x).numpy())
    with_prelu = nn.Dense(3, activation=nn.PReLU())
    with_prelu(x)
    assert [n for n, _ in with_prelu.named_parameters()] == ["weight", "bias", "activation.alpha"]
    assert gradcheck_layer(with_prelu, x)


def test_dense_float32_default():
    layer = nn.Dense(3)
    y = layer(np.ones((2, 4)))
    assert layer.weight.dtype == np.float32 and y.dtype == np.float32


def test_dense_wrong_features_error_names_layer_shape_and_expectation():
    layer = nn.Dense(3, name="fc1")
    layer(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError) as info:
        layer(np.ones((2, 5), dtype=np.float32))
    msg = str(info.value)
    assert "Dense 'fc1'" in msg and "(2, 5)" in msg and "float32" in msg and "4" in msg


def test_dense_bad_arguments():
    with pytest.raises(ValueError, match="units"):
        nn.Dense(0)
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Dense(3, activation="swishy")


def test_dense_compute_output_shape():
    layer = nn.Dense(7)
    assert layer.compute_output_shape((None, 3)) == (None, 7)
    assert layer.compute_output_shape((2, 5, 3)) == (2, 5, 7)
    layer.build((None, 3))
    layer.built = True
    with pytest.raises(lamina.ShapeError, match="built for 3"):
        layer.compute_output_shape((None, 4))


@pytest.mark.parametrize("layer_type", ["dense", "conv"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_own_activation_overwrites_the_fresh_pre_activation_with_the_same_results(layer_type, act):
    """A layer's own relu or tanh is written over its fresh pre-activation: the graph keeps one
    array there, not two, and values and gradients are those of the separate activation."""
    rng = np.random.default_rng(3)
    shape = (4, 6) if layer_type == "dense" else (2, 7, 7, 3)
    make = (lambda a: nn.Dense(5, activation=a)) if layer_type == "dense" else (
        lambda a: nn.Conv2D(4, 3, activation=a))
    fused, bare = make(act), make(None)
    x = rng.standard_normal(shape).astype(np.float32)
    fused(lamina.tensor(x))
    bare(lamina.tensor(x))
    bare.load_state_dict(fused.state_dict())
    xf, xb = lamina.tensor(x, requires_grad=True), lamina.tensor(x, requires_grad=True)
    yf = fused(xf)
    z = bare(xb)
    z_before = z.numpy().copy()
    yb = getattr(lamina.functional, act)(z)
    np.testing.assert_array_equal(z.numpy(), z_before)           # the public function leaves z alone
    assert np.shares_memory(yf._ctx.inputs[0].data, yf.data)      # the layer's own one overwrites
    np.testing.assert_array_equal(yf.numpy(), yb.numpy())
    up = lamina.tensor(rng.standard_normal(yf.shape).astype(np.float32))
    (yf * up).sum().backward()
    (yb * up).sum().backward()
    np.testing.assert_array_equal(xf.grad, xb.grad)
    for pf, pb in zip(fused.parameters(), bare.parameters()):
        np.testing.assert_array_equal(pf.grad, pb.grad)
