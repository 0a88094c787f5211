"""PrimaryCapsules, CapsuleLayer and DigitCapsules: outputs and gradients against torch
(float64, the same weights), float64 gradient checks and the errors naming the layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call


def _torch_squash(s):
    squared = (s * s).sum(-1, keepdim=True)
    return squared / (1 + squared) * s / torch.sqrt(squared + 1e-8)


def _torch_primary(x, weight, bias, capsules, dim, stride):
    maps = TF.conv2d(x.permute(0, 3, 1, 2), weight.permute(0, 3, 1, 2), bias, stride=stride).permute(0, 2, 3, 1)
    return _torch_squash(maps.reshape(x.shape[0], -1, capsules, dim).reshape(x.shape[0], -1, dim))


def _torch_capsules(u, weight, iterations):
    u_hat = torch.einsum("bik,ijkd->bijd", u, weight)
    b = torch.zeros(u_hat.shape[:3], dtype=u.dtype)
    for r in range(iterations):
        v = _torch_squash((torch.softmax(b, 2)[..., None] * u_hat).sum(1))
        if r < iterations - 1:
            b = b + (u_hat * v[:, None]).sum(-1)
    return v


def _double(layer, x):
    layer(x)
    return layer.double()


def test_primary_capsules_match_torch():
    layer = _double(nn.PrimaryCapsules(3, 4, kernel_size=3, stride=2), randn(2, 7, 7, 2))
    assert layer(randn(2, 7, 7, 2)).shape == (2, 27, 4)
    assert layer.compute_output_shape((2, 7, 7, 2)) == (2, 27, 4)
    weight, bias = randn(*layer.conv.weight.shape, seed=1, scale=0.3), randn(12, seed=2, scale=0.1)

    def ours(x, w, b):
        return functional_call(layer, {"conv.weight": w, "conv.bias": b}, x)

    compare_with_torch(ours, lambda x, w, b: _torch_primary(x, w, b, 3, 4, 2), randn(2, 7, 7, 2, seed=3),
                       weight, bias, dtype=np.float64, rtol=1e-10)
    assert check_gradients(ours, randn(1, 5, 5, 2, seed=4), weight, bias)


@pytest.mark.parametrize("iterations", [1, 3])
def test_capsule_layer_matches_torch(iterations):
    layer = _double(nn.CapsuleLayer(3, 5, routing_iterations=iterations), randn(2, 6, 4))
    assert layer.weight.shape == (6, 3, 4, 5)

    def ours(u, w):
        return functional_call(layer, {"weight": w}, u)

    compare_with_torch(ours, lambda u, w: _torch_capsules(u, w, iterations), randn(2, 6, 4, seed=5),
                       randn(6, 3, 4, 5, seed=6, scale=0.5), dtype=np.float64, rtol=1e-10)
    assert check_gradients(ours, randn(2, 6, 4, seed=7), randn(6, 3, 4, 5, seed=8, scale=0.5))


def test_digit_capsules_have_the_paper_defaults():
    layer = nn.DigitCapsules()
    v = layer(randn(2, 12, 8))
    assert v.shape == (2, 10, 16) and layer.routing_iterations == 3
    assert layer.weight.shape == (12, 10, 8, 16)
    lengths = nn.capsule_lengths(v).numpy()
    assert lengths.shape == (2, 10) and np.all((lengths > 0) & (lengths < 1))


def test_errors_name_the_layer_and_capsule_dims():
    layer = nn.CapsuleLayer(3, 5)
    layer(randn(2, 6, 4))
    with pytest.raises(ShapeError, match=r"CapsuleLayer.*\(2, 6, 3\).*expected capsules \(batch, 6, 4\)"):
        layer(randn(2, 6, 3))
    with pytest.raises(ShapeError, match=r"CapsuleLayer"):
        nn.CapsuleLayer(3, 5)(randn(2, 6))
    with pytest.raises(ShapeError, match=r"PrimaryCapsules.*expected NHWC"):
        nn.PrimaryCapsules(2, 4, 3)(randn(2, 7, 7))
    with pytest.raises(ValueError, match="CapsuleLayer: capsule_dim must be a positive int"):
        nn.CapsuleLayer(3, 0)
