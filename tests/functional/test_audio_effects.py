"""Pre-emphasis, de-emphasis and fades against torch re-implementations of torchaudio's."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError


def torch_preemphasis(x, coeff):
    y = x.clone()
    y[..., 1:] -= coeff * x[..., :-1]
    return y


def torch_deemphasis(x, coeff, clamp=True):
    """lfilter(x, a=[1, -coeff], b=[1, 0]) as a plain loop, then lfilter's default clamp."""
    steps = [x[..., 0]]
    for i in range(1, x.shape[-1]):
        steps.append(x[..., i] + coeff * steps[-1])
    y = torch.stack(steps, dim=-1)
    return y.clamp(-1, 1) if clamp else y


def torch_fade(x, fade_in, fade_out, shape):
    """torchaudio.transforms.Fade's gain, in float64."""
    f_in = torch.linspace(0, 1, fade_in, dtype=torch.float64)
    f_out = torch.linspace(0, 1, fade_out, dtype=torch.float64)
    rising = {"linear": f_in, "exponential": torch.pow(2, f_in - 1) * f_in,
              "logarithmic": torch.log10(0.1 + f_in) + 1, "quarter_sine": torch.sin(f_in * math.pi / 2),
              "half_sine": torch.sin(f_in * math.pi - math.pi / 2) / 2 + 0.5}[shape]
    falling = {"linear": 1 - f_out, "exponential": torch.pow(2, -f_out) * (1 - f_out),
               "logarithmic": torch.log10(1.1 - f_out) + 1,
               "quarter_sine": torch.sin(f_out * math.pi / 2 + math.pi / 2),
               "half_sine": torch.sin(f_out * math.pi + math.pi / 2) / 2 + 0.5}[shape]
    n = x.shape[-1]
    gain_in = torch.cat([rising, torch.ones(n - fade_in, dtype=torch.float64)]).clamp(0, 1)
    gain_out = torch.cat([torch.ones(n - fade_out, dtype=torch.float64), falling]).clamp(0, 1)
    return x * gain_in * gain_out


def test_preemphasis_and_deemphasis_match_torch():
    x = randn(2, 3, 40, seed=1, scale=0.1)
    compare_with_torch(lambda s: F.preemphasis(s, 0.9), lambda s: torch_preemphasis(s, 0.9), x, dtype=np.float64)
    compare_with_torch(lambda s: F.deemphasis(s, 0.9), lambda s: torch_deemphasis(s, 0.9), x, dtype=np.float64)
    loud = randn(2, 30, seed=2)                                   # the clamp at +-1 matters here
    compare_with_torch(lambda s: F.deemphasis(s, 0.97), lambda s: torch_deemphasis(s, 0.97), loud,
                       dtype=np.float64)
    compare_with_torch(lambda s: F.deemphasis(s, 0.5, clamp=False),
                       lambda s: torch_deemphasis(s, 0.5, clamp=False), loud, dtype=np.float64)


def test_deemphasis_inverts_preemphasis_and_has_derivatives():
    x = randn(3, 50, seed=3, scale=0.05)
    back = F.deemphasis(F.preemphasis(lamina.tensor(x, dtype=np.float64), 0.97), 0.97)
    assert_close(back.numpy(), x, 1e-12)
    assert check_gradients(lambda s: F.deemphasis(s, 0.8, clamp=False), randn(2, 12, seed=4))
    assert check_second_derivatives(lambda s: F.deemphasis(s, 0.8, clamp=False) ** 2, randn(2, 12, seed=5))


@pytest.mark.parametrize("shape", ["linear", "exponential", "logarithmic", "quarter_sine", "half_sine"])
def test_fade_matches_torchaudio(shape):
    x = randn(2, 30, seed=6)
    compare_with_torch(lambda s: F.fade(s, 7, 11, shape), lambda s: torch_fade(s, 7, 11, shape), x,
                       dtype=np.float64)
    layer = nn.Fade(7, 11, shape)
    assert_close(layer(lamina.tensor(x, dtype=np.float64)).numpy(), torch_fade(torch.tensor(x), 7, 11, shape).numpy(),
                 1e-12)
    assert check_gradients(layer, x)


def test_effect_layers_and_errors():
    x = randn(2, 20, seed=7, scale=0.1)
    assert_close(nn.Preemphasis(0.5)(lamina.tensor(x)).numpy(), torch_preemphasis(torch.tensor(x), 0.5).numpy(), 1e-6)
    assert_close(nn.Deemphasis(0.5)(lamina.tensor(x)).numpy(), torch_deemphasis(torch.tensor(x), 0.5).numpy(), 1e-6)
    assert nn.Deemphasis(**nn.Deemphasis(0.3).get_config()).coeff == 0.3
    with pytest.raises(ValueError, match="fade_shape"):
        nn.Fade(fade_shape="cubic")
    with pytest.raises(ValueError, match=r"fade_in_len must be an int in \[0, 20\]"):
        F.fade(lamina.tensor(x), 21)
    with pytest.raises(ShapeError, match="float waveform"):
        F.preemphasis(np.zeros(4, dtype=np.int64))
