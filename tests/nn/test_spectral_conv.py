"""SpectralConv1D / SpectralConv2D (the Fourier neural operator's spectral convolution) against a
torch reference built with torch.fft and complex weights; gradient checks; a learning test."""

import json
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import nn
from lamina.nn import SpectralConv1D, SpectralConv2D, spectral_conv1d, spectral_conv2d


def torch_spectral_conv1d(x, weight):
    """x (N, L, C_in), weight (modes, C_in, C_out, 2) as in lamina."""
    n, length, _ = x.shape
    modes, _, c_out, _ = weight.shape
    w = torch.view_as_complex(weight)
    spectrum = torch.fft.rfft(x, dim=1)
    out = torch.zeros(n, length // 2 + 1, c_out, dtype=spectrum.dtype)
    out[:, :modes] = torch.einsum("nki,kio->nko", spectrum[:, :modes], w)
    return torch.fft.irfft(out, n=length, dim=1)


def torch_spectral_conv2d(x, weight):
    """NHWC x, weight (2 m1, m2, C_in, C_out, 2): the FNO's weights1 and weights2 stacked."""
    n, h, w_, _ = x.shape
    rows, m2, _, c_out, _ = weight.shape
    m1 = rows // 2
    w = torch.view_as_complex(weight)
    spectrum = torch.fft.rfft2(x, dim=(1, 2))
    out = torch.zeros(n, h, w_ // 2 + 1, c_out, dtype=spectrum.dtype)
    out[:, :m1, :m2] = torch.einsum("nxyi,xyio->nxyo", spectrum[:, :m1, :m2], w[:m1])
    out[:, -m1:, :m2] = torch.einsum("nxyi,xyio->nxyo", spectrum[:, -m1:, :m2], w[m1:])
    return torch.fft.irfft2(out, s=(h, w_), dim=(1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length, modes", [(8, 3), (9, 5), (6, 4)])
def test_spectral_conv1d_matches_torch(length, modes, dtype):
    compare_with_torch(spectral_conv1d, torch_spectral_conv1d, randn(2, length, 3), randn(modes, 3, 4, 2, seed=1),
                       dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, m1, m2", [(7, 6, 2, 3), (8, 9, 4, 5), (5, 4, 1, 1)])
def test_spectral_conv2d_matches_torch(h, w, m1, m2, dtype):
    compare_with_torch(spectral_conv2d, torch_spectral_conv2d, randn(2, h, w, 3), randn(2 * m1, m2, 3, 2, 2, seed=1),
                       dtype=dtype)


def test_gradcheck():
    assert check_gradients(spectral_conv1d, randn(2, 7, 2), randn(3, 2, 3, 2, seed=1))
    assert check_gradients(spectral_conv2d, randn(1, 5, 6, 2), randn(4, 2, 2, 2, 2, seed=1))


def test_second_derivatives():
    """The layer is bilinear in (x, weight): its mixed second derivatives are not zero."""
    assert check_second_derivatives(spectral_conv1d, randn(2, 6, 2), randn(2, 2, 2, 2, seed=1))
    compare_double_backward_with_torch(lambda x, w: spectral_conv2d(x, w) ** 2,
                                       lambda x, w: torch_spectral_conv2d(x, w) ** 2,
                                       randn(1, 4, 5, 2), randn(2, 2, 2, 2, 2, seed=1))


@pytest.mark.parametrize("layer_class, shape", [(SpectralConv1D, (2, 10, 3)), (SpectralConv2D, (2, 8, 6, 3))])
def test_layer_is_its_function_on_its_weight(layer_class, shape):
    layer = layer_class(4, modes=3)
    x = lamina.tensor(randn(*shape))
    y = layer(x)
    assert y.shape == shape[:-1] + (4,) and layer.compute_output_shape(shape) == y.shape
    expected_weight = (3, 3, 4, 2) if layer_class is SpectralConv1D else (6, 3, 3, 4, 2)
    assert layer.weight.shape == expected_weight
    scale = 1 / (3 * 4)
    assert 0 <= layer.weight.numpy().min() and layer.weight.numpy().max() < scale
    fn = spectral_conv1d if layer_class is SpectralConv1D else spectral_conv2d
    assert np.allclose(y.numpy(), fn(x, layer.weight).numpy())
    assert layer.macs([shape[1:]], [y.shape[1:]]) == 4 * math.prod(expected_weight[:-3]) * 3 * 4
    copy = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    assert type(copy) is layer_class and copy.modes == layer.modes and copy.out_channels == 4


def test_layer_gradients_match_torch():
    layer = SpectralConv2D(2, modes=(2, 2))
    x = randn(2, 6, 5, 3)
    layer(lamina.tensor(x))
    weight = torch.tensor(layer.weight.numpy(), requires_grad=True)
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    xl = lamina.tensor(x.astype(np.float32), requires_grad=True)
    (layer(xl) ** 2).sum().backward()
    (torch_spectral_conv2d(xt, weight) ** 2).sum().backward()
    assert np.allclose(xl.grad, xt.grad.numpy(), atol=1e-5)
    assert np.allclose(layer.weight.grad, weight.grad.numpy(), atol=1e-5)


def test_errors_name_the_layer_and_the_shapes():
    layer = SpectralConv1D(2, modes=4)
    layer(lamina.tensor(randn(1, 8, 3)))
    too_short = r"SpectralConv1D: modes=\(4,\) do not fit inputs of shape \(1, 5, 3\); .*length // 2 \+ 1 >= modes"
    with pytest.raises(lamina.ShapeError, match=too_short):
        layer(lamina.tensor(randn(1, 5, 3)))
    with pytest.raises(lamina.ShapeError, match=r"SpectralConv1D: .*\(batch, length, 3\), got shape \(1, 8, 2\)"):
        layer(lamina.tensor(randn(1, 8, 2)))
    with pytest.raises(lamina.ShapeError, match=r"spectral_conv2d: .*h >= 2 m1 = 6 .*got shape \(1, 5, 8, 3\)"):
        spectral_conv2d(randn(1, 5, 8, 3), randn(6, 2, 3, 1, 2))
    with pytest.raises(lamina.ShapeError, match=r"SpectralConv2D: modes=\(3, 2\) do not fit .*\(1, 5, 8, 3\)"):
        SpectralConv2D(2, modes=(3, 2))(lamina.tensor(randn(1, 5, 8, 3)))
    with pytest.raises(ValueError, match=r"SpectralConv2D: modes must be an int or 2 ints, got \(1, 2, 3\)"):
        SpectralConv2D(2, modes=(1, 2, 3))


def test_learns_a_smoothing_of_signals():
    """A circular Gaussian smoothing is diagonal in the Fourier basis with a fast-decaying gain: a
    SpectralConv1D with 12 of the 17 modes learns it from random signals, its weights the kernel's gains."""
    rng = np.random.default_rng(0)
    length = 32
    offsets = np.minimum(np.arange(length), length - np.arange(length))
    kernel = np.exp(-0.5 * (offsets / 1.5) ** 2)
    kernel /= kernel.sum()
    signals = rng.standard_normal((64, length, 1)).astype(np.float32)
    smoothed = np.fft.irfft(np.fft.rfft(signals, axis=1) * np.fft.rfft(kernel)[None, :, None], n=length, axis=1)
    x, target = lamina.tensor(signals), lamina.tensor(smoothed.astype(np.float32))
    layer = SpectralConv1D(1, modes=12)
    optimizer = lamina.optim.Adam(layer, lr=0.05)
    first = None
    for _ in range(300):
        loss = ((layer(x) - target) ** 2).mean()
        first = float(loss.item()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.item()) < 1e-4 * first
    gains = np.fft.rfft(kernel)[:12]
    learned = layer.weight.numpy()[:, 0, 0]
    assert np.allclose(learned[:, 0], gains.real, atol=0.02) and np.allclose(learned[1:, 1], 0, atol=0.02)
