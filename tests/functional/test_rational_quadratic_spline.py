"""The rational-quadratic spline of neural spline flows: values, inverse and log-derivatives
against a torch rewrite of the published formulas (float64, values and gradients to every
parameter), monotonicity, the linear tails, numerical gradients and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina import functional as F

MIN_WIDTH = MIN_HEIGHT = MIN_DERIVATIVE = 1e-3


def torch_knots(unnormalized, minimum, low, high):
    bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * bins) * torch.softmax(unnormalized, dim=-1)
    knots = torch.nn.functional.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = (high - low) * knots + low
    knots = torch.cat([torch.full_like(knots[..., :1], low), knots[..., 1:-1], torch.full_like(knots[..., :1], high)],
                      dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def torch_spline(inputs, uw, uh, ud, inverse=False, bound=1.0, tails="linear"):
    """The spline written from Durkan et al. (2019), as nflows lays it out (bin search with a
    nudged last knot, quadratic root for the inverse, identity outside the interval)."""
    if tails == "linear":
        end = math.log(math.expm1(1 - MIN_DERIVATIVE))
        ud = torch.nn.functional.pad(ud, (1, 1), value=end)
        inside = (inputs >= -bound) & (inputs <= bound)
        x = torch.where(inside, inputs, torch.zeros_like(inputs))
    else:
        inside, x = None, inputs
    cw, widths = torch_knots(uw, MIN_WIDTH, -bound, bound)
    ch, heights = torch_knots(uh, MIN_HEIGHT, -bound, bound)
    derivatives = MIN_DERIVATIVE + torch.nn.functional.softplus(ud)
    locations = (ch if inverse else cw).detach().clone()
    locations[..., -1] += 1e-6
    idx = (torch.sum(x[..., None] >= locations, dim=-1) - 1)[..., None]

    def pick(v):
        return v.gather(-1, idx)[..., 0]

    x_k, w_k, y_k, h_k = pick(cw), pick(widths), pick(ch), pick(heights)
    delta = h_k / w_k
    d0, d1 = pick(derivatives), pick(derivatives[..., 1:])
    if inverse:
        a = (x - y_k) * (d0 + d1 - 2 * delta) + h_k * (delta - d0)
        b = h_k * d0 - (x - y_k) * (d0 + d1 - 2 * delta)
        c = -delta * (x - y_k)
        theta = (2 * c) / (-b - torch.sqrt(b.pow(2) - 4 * a * c))
        out = theta * w_k + x_k
    else:
        theta = (x - x_k) / w_k
        tt = theta * (1 - theta)
        out = y_k + h_k * (delta * theta.pow(2) + d0 * tt) / (delta + (d0 + d1 - 2 * delta) * tt)
    tt = theta * (1 - theta)
    denominator = delta + (d0 + d1 - 2 * delta) * tt
    numerator = delta.pow(2) * (d1 * theta.pow(2) + 2 * delta * tt + d0 * (1 - theta).pow(2))
    log_det = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        log_det = -log_det
    if inside is None:
        return out, log_det
    return torch.where(inside, out, inputs), torch.where(inside, log_det, torch.zeros_like(log_det))


def spline_inputs(shape=(4, 3), bins=5, bound=2.0, seed=0, tails="linear"):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.4 * bound, 1.4 * bound, shape)
    n_derivatives = bins - 1 if tails == "linear" else bins + 1
    return (x, rng.standard_normal(shape + (bins,)), rng.standard_normal(shape + (bins,)),
            rng.standard_normal(shape + (n_derivatives,)))


@pytest.mark.parametrize("inverse", [False, True])
def test_matches_torch_rewrite_values_and_gradients(inverse):
    arrays = spline_inputs()
    if inverse:                                  # inverse inputs: images of the forward map (and the tails)
        arrays = (F.rational_quadratic_spline(*[lamina.tensor(a, dtype=np.float64) for a in arrays],
                                              tail_bound=2.0)[0].numpy(),) + arrays[1:]
    compare_with_torch(lambda *a: F.rational_quadratic_spline(*a, inverse=inverse, tail_bound=2.0),
                       lambda *a: torch_spline(*a, inverse=inverse, bound=2.0), *arrays, dtype=np.float64)


def test_bounded_spline_without_tails_matches_torch():
    x, w, h, d = spline_inputs(tails=None, bound=1.5, seed=2)
    x = np.clip(x, -1.5, 1.5)
    compare_with_torch(lambda *a: F.rational_quadratic_spline(*a, tails=None, tail_bound=1.5),
                       lambda *a: torch_spline(*a, bound=1.5, tails=None), x, w, h, d, dtype=np.float64)


def test_inverse_derivative_monotone_and_tails():
    x, w, h, d = (lamina.tensor(a, dtype=np.float64) for a in spline_inputs((50, 2), bins=6, seed=3))
    y, log_det = F.rational_quadratic_spline(x, w, h, d, tail_bound=2.0)
    back, log_det_back = F.rational_quadratic_spline(y, w, h, d, inverse=True, tail_bound=2.0)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10, rtol=0)
    # log-derivative against a centred difference
    eps = 1e-6
    up = F.rational_quadratic_spline(x + eps, w, h, d, tail_bound=2.0)[0].numpy()
    down = F.rational_quadratic_spline(x - eps, w, h, d, tail_bound=2.0)[0].numpy()
    np.testing.assert_allclose(np.log((up - down) / (2 * eps)), log_det.numpy(), atol=1e-6)
    outside = np.abs(x.numpy()) > 2.0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(y.numpy()[outside], x.numpy()[outside])
    np.testing.assert_array_equal(log_det.numpy()[outside], 0.0)
    # monotone: a fine grid through one set of parameters comes out strictly increasing
    grid = np.linspace(-3.0, 3.0, 2001)
    params = [np.broadcast_to(p.numpy()[0, 0], grid.shape + p.shape[-1:]).copy() for p in (w, h, d)]
    values = F.rational_quadratic_spline(lamina.tensor(grid, dtype=np.float64),
                                         *[lamina.tensor(p, dtype=np.float64) for p in params], tail_bound=2.0)[0]
    assert np.all(np.diff(values.numpy()) > 0)
    ends = F.rational_quadratic_spline(lamina.tensor([-2.0, 2.0], dtype=np.float64),
                                       *[lamina.tensor(p[:2], dtype=np.float64) for p in params], tail_bound=2.0)
    np.testing.assert_allclose(ends[0].numpy(), [-2.0, 2.0], atol=1e-12)    # the ends meet the identity
    np.testing.assert_allclose(ends[1].numpy(), [0.0, 0.0], atol=1e-9)      # with slope 1


def test_numerical_gradients():
    arrays = spline_inputs((3, 2), bins=3, seed=4)
    assert check_gradients(lambda *a: F.rational_quadratic_spline(*a, tail_bound=2.0)[0].sum()
                           + F.rational_quadratic_spline(*a, tail_bound=2.0)[1].sum(), *arrays)


def test_errors():
    x, w, h, d = (lamina.tensor(a, dtype=np.float64) for a in spline_inputs())
    with pytest.raises(ValueError, match="tail_bound must be a positive number"):
        F.rational_quadratic_spline(x, w, h, d, tail_bound=0.0)
    with pytest.raises(ValueError, match="tails must be one of"):
        F.rational_quadratic_spline(x, w, h, d, tails="circular")
    with pytest.raises(ValueError, match=r"derivatives x.shape \+ \(K - 1,\)"):
        F.rational_quadratic_spline(x, w, h, w)
