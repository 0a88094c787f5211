"""HyenaOperator: the FFT long convolution against a direct loop over the steps; causality;
outputs, input and parameter gradients against a float64 PyTorch rewrite of the paper's
operator (torch.fft, complex positional encoding, conv1d for the short filter); finite
differences; errors naming the layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.hyena import causal_fft_convolution
from torch_linear_sequence import compare_layer_with_torch, linear


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def test_fft_long_convolution_equals_a_direct_causal_loop():
    u, h = randn(2, 11, 3), randn(11, 3, seed=1)
    direct = np.zeros_like(u)
    for t in range(11):
        for s in range(t + 1):
            direct[:, t] += h[t - s] * u[:, s]
    got = causal_fft_convolution(lamina.tensor(u, dtype=np.float64), lamina.tensor(h, dtype=np.float64))
    assert_close(got.numpy(), direct, 1e-10, "long convolution")


def test_output_at_a_step_ignores_later_inputs(f64):
    layer = nn.HyenaOperator(4, l_max=12, order=3, filter_order=8)
    x = randn(2, 10, 4)
    changed = x.copy()
    changed[:, 6:] = randn(2, 4, 4, seed=5)
    before, after = layer(lamina.tensor(x)).numpy(), layer(lamina.tensor(changed)).numpy()
    assert_close(after[:, :6], before[:, :6], 1e-12, "steps before the change")
    assert np.abs(after[:, 6:] - before[:, 6:]).max() > 1e-3


def _positional_encoding(l_max, emb_dim):
    """The reference's complex form: [t, Re, Im] of exp(-i f w)."""
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, l_max, dtype=torch.float64)[:, None]
    w = 2 * math.pi * torch.arange(l_max, dtype=torch.float64)[:, None] / l_max
    f = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)[None]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1)


def hyena_reference(layer):
    """The operator from the paper's recurrence, written with torch ops."""
    d, order, taps = layer.d_model, layer.order, layer.short_filter_order

    def reference(x, p):
        n, length, _ = x.shape
        u = linear(x, p, "in_proj").transpose(1, 2)
        weight = p["short_filter_weight"].T[:, None, :]
        u = torch.nn.functional.conv1d(u, weight, p["short_filter_bias"], padding=taps - 1, groups=u.shape[1])
        streams = u[..., :length].transpose(1, 2).split(d, dim=-1)
        h = _positional_encoding(layer.l_max, layer.emb_dim)[:length]
        for i, name in enumerate(("filter_in", "filter_hidden_1", "filter_hidden_2")):
            h = torch.sin(p["filter_frequencies"][i] * linear(h, p, name))
        h = linear(h, p, "filter_out")
        rates = torch.linspace(abs(math.log(layer.target)) / layer.slow_decay_pct,
                               abs(math.log(layer.target)) / layer.fast_decay_pct, order * d, dtype=torch.float64)
        t = torch.linspace(0, 1, layer.l_max, dtype=torch.float64)[:length, None]
        h = (h * (torch.exp(-t * rates) + layer.shift)).reshape(length, order, d)
        z = streams[-1]
        for i, gate in enumerate(streams[:-1]):
            spectrum = torch.fft.rfft(z, n=2 * length, dim=1) * torch.fft.rfft(h[:, i], n=2 * length, dim=0)
            z = gate * (torch.fft.irfft(spectrum, n=2 * length, dim=1)[:, :length] + z * p["filter_bias"][i])
        return linear(z, p, "out_proj")

    return reference


@pytest.mark.parametrize("order, emb_dim, shift", [(2, 3, 0.0), (3, 5, 0.2)])
def test_matches_a_torch_rewrite_in_values_and_gradients(f64, order, emb_dim, shift):
    layer = nn.HyenaOperator(4, l_max=12, order=order, filter_order=8, emb_dim=emb_dim, shift=shift)
    params = compare_layer_with_torch(layer, hyena_reference(layer), randn(2, 9, 4))
    assert set(params) >= {"short_filter_weight", "filter_frequencies", "filter_bias", "filter_out.weight"}


def test_gradcheck(f64):
    layer = nn.HyenaOperator(2, l_max=6, order=2, filter_order=4)
    assert check_gradients(layer, randn(1, 5, 2, scale=0.5))


def test_config_and_errors():
    layer = nn.HyenaOperator(4, l_max=8, order=2, filter_order=6)
    assert nn.HyenaOperator(**layer.get_config()).get_config() == layer.get_config()
    assert layer.long_filters(5).shape == (2, 5, 4)
    with pytest.raises(ShapeError, match=r"HyenaOperator.*\(2, 9, 4\) has 9 steps, more than l_max=8"):
        layer(lamina.tensor(randn(2, 9, 4)))
    with pytest.raises(ShapeError, match=r"HyenaOperator.*shape \(2, 5, 3\).*expected \(batch, time, 4\)"):
        layer(lamina.tensor(randn(2, 5, 3)))
    with pytest.raises(ValueError, match="HyenaOperator: emb_dim must be an odd int >= 3.*got 4"):
        nn.HyenaOperator(4, l_max=8, emb_dim=4)
    with pytest.raises(ValueError, match="HyenaOperator: order"):
        nn.HyenaOperator(4, l_max=8, order=0)
