import json

import numpy as np
import pytest
import torch

import lamina
from helpers import TOLERANCE, assert_close
from lamina import nn
from lamina.nn.bilinear import Bilinear, bilinear


def _against_torch(layer, lead, in1, in2, dtype, seed=0):
    """``layer`` and torch.nn.Bilinear with the same weights on the same inputs: the output
    and the gradients of both inputs, the weight and the bias."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(lead + (in1,)).astype(dtype)
    b = rng.standard_normal(lead + (in2,)).astype(dtype)
    xa, xb = lamina.tensor(a, requires_grad=True, dtype=dtype), lamina.tensor(b, requires_grad=True, dtype=dtype)
    out = layer(xa, xb)
    theirs = torch.nn.Bilinear(in1, in2, layer.out_features, bias=layer.use_bias).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(layer.weight.numpy()))
        if layer.use_bias:
            theirs.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out_t = theirs(ta, tb)
    rtol = TOLERANCE[dtype]
    assert out.shape == tuple(out_t.shape) and out.dtype == dtype
    assert_close(out.numpy(), out_t.detach().numpy(), rtol, "output")
    upstream = rng.standard_normal(out.shape).astype(dtype)
    out.backward(upstream)
    (out_t * torch.from_numpy(upstream)).sum().backward()
    assert_close(xa.grad, ta.grad.numpy(), rtol, "gradient of x1")
    assert_close(xb.grad, tb.grad.numpy(), rtol, "gradient of x2")
    assert_close(layer.weight.grad, theirs.weight.grad.numpy(), rtol, "gradient of the weight")
    if layer.use_bias:
        assert_close(layer.bias.grad, theirs.bias.grad.numpy(), rtol, "gradient of the bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead, in1, in2, out, use_bias", [((6,), 5, 3, 4, True),
                                                           ((2, 3), 4, 7, 2, True),
                                                           ((5,), 3, 3, 1, False)])
def test_matches_torch(lead, in1, in2, out, use_bias, dtype):
    lamina.set_default_dtype(dtype)
    _against_torch(Bilinear(out, use_bias=use_bias), lead, in1, in2, dtype)


def test_gradcheck():
    rng = np.random.default_rng(1)
    tensors = [lamina.tensor(rng.standard_normal(shape), requires_grad=True, dtype=np.float64)
               for shape in ((2, 3, 4), (2, 3, 5), (3, 4, 5), (3,))]
    assert lamina.gradcheck(bilinear, *tensors)


def test_is_the_quadratic_form_of_each_output():
    """y_k = x1^T A_k x2 + b_k, written out with NumPy."""
    layer = Bilinear(3)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)
    y = layer(a, b).numpy()
    weight, bias = layer.weight.numpy(), layer.bias.numpy()
    for m in range(4):
        for k in range(3):
            np.testing.assert_allclose(y[m, k], a[m] @ weight[k] @ b[m] + bias[k], rtol=1e-5, atol=1e-6)


def test_torch_initialisation_bounds():
    layer = Bilinear(8)
    layer(np.zeros((1, 16), dtype=np.float32), np.zeros((1, 10), dtype=np.float32))
    bound = 1 / np.sqrt(16)
    weight = layer.weight.numpy()
    assert layer.weight.shape == (8, 16, 10) and layer.bias.shape == (8,)
    assert np.abs(weight).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound
    assert np.abs(weight).max() > 0.95 * bound
    np.testing.assert_allclose(weight.std(), bound / np.sqrt(3), rtol=0.1)   # uniform, not a narrower law


def test_list_input_config_repr_and_shapes():
    layer = Bilinear(4, name="bil")
    assert repr(layer) == "Bilinear(out_features=4)"
    a, b = np.ones((2, 3), dtype=np.float32), np.ones((2, 5), dtype=np.float32)
    np.testing.assert_array_equal(layer([a, b]).numpy(), layer(a, b).numpy())
    assert repr(layer) == "Bilinear(in1=3, in2=5, out_features=4)"
    assert layer.compute_output_shape([(None, 7, 3), (None, 7, 5)]) == (None, 7, 4)
    assert layer.macs([(3,), (5,)], [(4,)]) == 4 * 5 * (3 + 1)
    config = json.loads(json.dumps(nn.layer_to_config(Bilinear(2, use_bias=False))))
    again = nn.layer_from_config(config)
    assert type(again) is Bilinear and again.out_features == 2 and not again.use_bias
    again(a, b)
    assert again.parameters() == [again.weight]


def test_errors_name_the_layer_and_the_shapes():
    layer = Bilinear(4, name="bil")
    a, b = np.ones((2, 3), dtype=np.float32), np.ones((2, 5), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"Bilinear 'bil'.*\(2, 3\) and \(3, 5\).*same leading axes"):
        layer(a, np.ones((3, 5), dtype=np.float32))
    layer(a, b)
    with pytest.raises(lamina.ShapeError, match=r"Bilinear 'bil'.*\(2, 6\).*\(\.\.\., 3\) and \(\.\.\., 5\)"):
        layer(a, np.ones((2, 6), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"Bilinear 'bil'.*\(None, 4\) and \(None, 5\).*built for in1=3"):
        layer.compute_output_shape([(None, 4), (None, 5)])
    with pytest.raises(lamina.ShapeError, match=r"Bilinear 'bil': expected two inputs.*got 1"):
        layer(a)
    with pytest.raises(lamina.ShapeError, match=r"bilinear: the weight must be 3-D"):
        bilinear(a, b, np.ones((3, 5), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"bilinear: the bias must have shape \(2,\)"):
        bilinear(a, b, np.ones((2, 3, 5), dtype=np.float32), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="Bilinear: out_features must be a positive int, got 0"):
        Bilinear(0)
