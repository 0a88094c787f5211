"""B-spline bases, KANLinear and FastKANLayer against SciPy's B-splines and torch rewrites of
efficient-kan's and FastKAN's published forward passes (float64)."""

import math

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer
from scipy.interpolate import BSpline

import lamina
from helpers import assert_close, check_gradients, compare_double_backward_with_torch
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError


# -- torch rewrites of the published formulas ------------------------------------------------------
def torch_b_splines(x, grid, order):
    """efficient-kan's Cox-de Boor recursion; x (batch, in), grid (in, n_knots)."""
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
    for k in range(1, order + 1):
        bases = ((x - grid[:, :-(k + 1)]) / (grid[:, k:-1] - grid[:, :-(k + 1)]) * bases[:, :, :-1]
                 + (grid[:, k + 1:] - x) / (grid[:, k + 1:] - grid[:, 1:-k]) * bases[:, :, 1:])
    return bases


def torch_kan_linear(x, grid, order, base_weight, spline_weight, spline_scaler):
    base = torch.nn.functional.linear(torch.nn.functional.silu(x), base_weight)
    scaled = spline_weight * spline_scaler.unsqueeze(-1)
    spline = torch.nn.functional.linear(torch_b_splines(x, grid, order).reshape(x.shape[0], -1),
                                        scaled.reshape(scaled.shape[0], -1))
    return base + spline


def torch_fast_kan(x, centers, denominator, ln_weight, ln_bias, spline_weight, base_weight, base_bias):
    h = torch.nn.functional.layer_norm(x, (x.shape[-1],), ln_weight, ln_bias, eps=1e-5)
    basis = torch.exp(-((h[..., None] - centers) / denominator) ** 2)
    out = torch.nn.functional.linear(basis.reshape(*basis.shape[:-2], -1), spline_weight)
    return out + torch.nn.functional.linear(torch.nn.functional.silu(x), base_weight, base_bias)


def random_knots(rng, n_in, n_knots):
    """Strictly increasing, unevenly spaced knots, one row per input."""
    return np.cumsum(rng.uniform(0.1, 0.6, (n_in, n_knots)), axis=1) - 2.0


# -- the basis ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_basis_equals_scipy_bspline(order):
    rng = np.random.default_rng(order)
    knots = random_knots(rng, 3, 10)
    x = rng.uniform(knots[:, 0], knots[:, -1], (50, 3))
    basis = F.b_spline_basis(lamina.tensor(x, dtype=np.float64), knots, order).numpy()
    assert basis.shape == (50, 3, 10 - 1 - order)
    for i in range(3):
        n = knots.shape[1] - 1 - order
        expected = BSpline(knots[i], np.eye(n), order, extrapolate=False)(x[:, i])
        inside = (x[:, i] >= knots[i, order]) & (x[:, i] < knots[i, -1 - order])
        assert inside.sum() > 10
        assert_close(basis[inside, i], expected[inside], 1e-12, f"basis of input {i}")
        # every element, also near the ends: scipy's single basis elements
        for c in range(n):
            element = BSpline.basis_element(knots[i, c:c + order + 2], extrapolate=False)(x[:, i])
            assert_close(basis[:, i, c], np.nan_to_num(element), 1e-12, f"element {c}")


def test_basis_is_a_partition_of_unity_inside_the_grid():
    grid = F.extended_grid(7, 3, (-1.5, 2.0), np.float64)
    assert np.allclose(np.diff(grid), 0.5) and grid[3] == -1.5 and grid[-4] == 2.0
    x = np.random.default_rng(0).uniform(-1.5, 2.0, (200, 1))
    basis = F.b_spline_basis(lamina.tensor(x, dtype=np.float64), grid, 3).numpy()
    assert np.abs(basis.sum(axis=-1) - 1).max() < 1e-12
    assert basis.min() >= 0
    outside = F.b_spline_basis(lamina.tensor([[-4.0], [5.0]], dtype=np.float64), grid, 3).numpy()
    assert np.all(outside == 0)


def test_basis_values_and_gradients_equal_efficient_kan():
    rng = np.random.default_rng(3)
    knots = random_knots(rng, 2, 9)
    x = rng.uniform(knots[:, 3], knots[:, -4], (20, 2))
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    ours = F.b_spline_basis(xt, knots, 3)
    xr = torch.tensor(x, requires_grad=True)
    theirs = torch_b_splines(xr, torch.tensor(knots), 3)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-12, "basis")
    r = rng.standard_normal(theirs.shape)
    (ours * lamina.tensor(r, dtype=np.float64)).sum().backward()
    (theirs * torch.tensor(r)).sum().backward()
    assert_close(xt.grad, xr.grad.numpy(), 1e-10, "d basis / dx")
    assert check_gradients(lambda a: F.b_spline_basis(a, knots, 3), x)


# -- KANLinear -----------------------------------------------------------------------------------------
def built_kan_linear(n_in=3, units=4, seed=0, **options):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    layer = nn.KANLinear(units, **options)
    layer(np.zeros((1, n_in)))
    rng = np.random.default_rng(seed)
    layer.spline_weight.data[...] = rng.standard_normal(layer.spline_weight.shape)   # a visible spline part
    return layer


def test_kan_linear_forward_and_gradients_equal_efficient_kan():
    layer = built_kan_linear(grid_size=4, spline_order=3, grid_range=(-1.0, 1.5))
    assert layer.grid.shape == (3, 4 + 2 * 3 + 1)
    assert layer.spline_weight.shape == (4, 3, 7) and layer.base_weight.shape == (4, 3)
    x = np.random.default_rng(1).uniform(-1.5, 2.0, (16, 3))
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    names = ("base_weight", "spline_weight", "spline_scaler")
    torch_params = [torch.tensor(getattr(layer, n).numpy(), requires_grad=True) for n in names]
    xr = torch.tensor(x, requires_grad=True)
    ours = layer(xt)
    theirs = torch_kan_linear(xr, torch.tensor(layer.grid), 3, *torch_params)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-12, "output")
    r = np.random.default_rng(2).standard_normal(theirs.shape)
    (ours * lamina.tensor(r, dtype=np.float64)).sum().backward()
    (theirs * torch.tensor(r)).sum().backward()
    assert_close(xt.grad, xr.grad.numpy(), 1e-10, "dx")
    for name, tp in zip(names, torch_params):
        assert_close(getattr(layer, name).grad, tp.grad.numpy(), 1e-10, f"d{name}")


def test_kan_linear_gradcheck_and_leading_axes():
    layer = built_kan_linear(n_in=2, units=2, grid_size=3, spline_order=2)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    assert gradcheck_layer(layer, x)
    batch = np.random.default_rng(1).uniform(-1, 1, (2, 3, 2))
    assert_close(layer(batch).numpy().reshape(6, 2), layer(batch.reshape(6, 2)).numpy(), 1e-14)


def test_kan_linear_initialisation_follows_efficient_kan():
    layer = built_kan_linear(n_in=50, units=40, seed=0)
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / 50)           # kaiming_uniform(a=sqrt(5)), fan_in 50
    assert np.abs(layer.base_weight.numpy()).max() <= bound
    assert np.abs(layer.base_weight.numpy()).max() > 0.9 * bound
    lamina.manual_seed(0)
    fresh = nn.KANLinear(40)
    fresh(np.zeros((1, 50)))
    plain = fresh.b_splines(lamina.tensor(np.tile(np.linspace(-1, 1, 6)[:, None], (1, 50)))).numpy()
    noise = np.einsum("bic,jic->bij", plain, fresh.spline_weight.numpy())
    assert np.abs(noise).max() <= 0.5 * 0.1 / 5 + 1e-9        # the noise the coefficients were fitted to


def test_update_grid_keeps_outputs():
    uniform = np.random.default_rng(1).uniform(-1, 1, (400, 3))
    changes = {}
    for name, data in (("uniform", uniform), ("cubed", uniform ** 3)):
        layer = built_kan_linear(grid_size=5)
        layer.spline_weight.data[...] *= 0.3
        before = layer(data).numpy()
        layer.update_grid(data)
        changes[name] = np.abs(layer(data).numpy() - before).max() / np.ptp(before)
    print(f"update_grid: max output change / output range: {changes}")
    assert changes["uniform"] < 0.01 and changes["cubed"] < 0.06
    layer = built_kan_linear(grid_size=5)
    layer.spline_weight.data[...] *= 0.3
    x = uniform ** 3                                                  # denser near 0: a non-uniform grid
    old_grid = layer.grid.copy()
    weight = layer.spline_weight
    layer.update_grid(x, margin=0.01)
    assert not np.allclose(layer.grid, old_grid)
    assert np.all(np.diff(layer.grid, axis=1) > 0)
    assert layer.spline_weight is weight                           # refitted in place
    inner = layer.grid[:, 3:-3]
    assert np.allclose(inner[:, 0], x.min(axis=0) - 0.02 * 0.01)     # grid_eps u_0 + (1 - grid_eps) q_0
    assert np.allclose(inner[:, -1], x.max(axis=0) + 0.02 * 0.01)
    # with grid_eps=1 the grid is uniform over the data range widened by the margin
    layer.update_grid(x, margin=0.1, grid_eps=1.0)
    steps = np.diff(layer.grid, axis=1)
    assert np.allclose(steps, steps[:, :1])
    assert np.allclose(layer.grid[:, 3], x.min(axis=0) - 0.1)


def test_regularization_loss_equals_formula():
    layer = built_kan_linear()
    loss = layer.regularization_loss(regularize_activation=0.7, regularize_entropy=0.3)
    l1 = np.abs(layer.spline_weight.numpy()).mean(axis=-1)
    p = l1 / l1.sum()
    expected = 0.7 * l1.sum() - 0.3 * (p * np.log(p)).sum()
    assert abs(float(loss.numpy()) - expected) < 1e-12
    loss.backward()
    w = torch.tensor(layer.spline_weight.numpy(), requires_grad=True)
    l1t = w.abs().mean(-1)
    pt = l1t / l1t.sum()
    (0.7 * l1t.sum() - 0.3 * (pt * pt.log()).sum()).backward()
    assert_close(layer.spline_weight.grad, w.grad.numpy(), 1e-10, "gradient")


def test_kan_linear_errors():
    with pytest.raises(ValueError, match="grid_size"):
        nn.KANLinear(3, grid_size=0)
    with pytest.raises(ValueError, match="spline_order"):
        nn.KANLinear(3, spline_order=-1)
    with pytest.raises(ValueError, match="grid_range"):
        nn.KANLinear(3, grid_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="grid_range"):
        nn.KANLinear(3, grid_range=(2.0, -1.0))
    layer = built_kan_linear()
    with pytest.raises(ShapeError, match="KANLinear.*3 features"):
        layer(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"\(batch, 3\)"):
        layer.update_grid(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="order"):
        F.b_spline_basis(np.zeros((2, 1)), np.arange(6.0), -1)
    with pytest.raises(ValueError, match="non-decreasing"):
        F.b_spline_basis(np.zeros((2, 1)), np.arange(6.0)[::-1], 2)


def test_kan_linear_config_round_trip():
    layer = nn.KANLinear(3, grid_size=7, spline_order=2, grid_range=(-2, 2), grid_eps=0.5)
    again = nn.KANLinear(**layer.get_config())
    assert again.get_config() == layer.get_config()


# -- FastKAN -----------------------------------------------------------------------------------------
def test_fast_kan_layer_equals_fastkan():
    lamina.set_default_dtype(np.float64)
    layer = nn.FastKANLayer(3, num_grids=6)
    x = np.random.default_rng(0).normal(size=(8, 4))
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(xt)
    layer.layernorm.weight.data[...] = np.random.default_rng(1).uniform(0.5, 1.5, 4)
    layer.layernorm.bias.data[...] = np.random.default_rng(2).normal(size=4)
    out = layer(xt)
    params = [layer.layernorm.weight, layer.layernorm.bias, layer.spline_weight, layer.base_weight, layer.base_bias]
    tparams = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xr = torch.tensor(x, requires_grad=True)
    ref = torch_fast_kan(xr, torch.tensor(np.linspace(-2, 2, 6)), 4 / 5, *tparams)
    assert_close(out.numpy(), ref.detach().numpy(), 1e-12, "output")
    r = np.random.default_rng(3).standard_normal(ref.shape)
    (out * lamina.tensor(r, dtype=np.float64)).sum().backward()
    (ref * torch.tensor(r)).sum().backward()
    assert_close(xt.grad, xr.grad.numpy(), 1e-10, "dx")
    for p, tp in zip(params, tparams):
        assert_close(p.grad, tp.grad.numpy(), 1e-10, "parameter gradient")
    small = nn.FastKANLayer(2, num_grids=4)
    assert gradcheck_layer(small, np.random.default_rng(4).normal(size=(3, 3)))
    one = nn.FastKANLayer(2)
    one(np.zeros((2, 1)))
    assert "layernorm" not in one._modules                       # FastKAN: no norm over a single feature
    with pytest.raises(ValueError, match="num_grids"):
        nn.FastKANLayer(2, num_grids=1)
    with pytest.raises(ValueError, match="grid_min < grid_max"):
        nn.FastKANLayer(2, grid_min=1.0, grid_max=0.0)


def torch_update_grid(x, grid, order, grid_size, scaled_weight, margin, grid_eps):
    """efficient-kan's update_grid (its grid and its curve2coeff refit), without a standalone scaler."""
    batch = x.shape[0]
    splines = torch_b_splines(x, grid, order).permute(1, 0, 2)
    spline_out = torch.bmm(splines, scaled_weight.permute(1, 2, 0)).permute(1, 0, 2)
    x_sorted = torch.sort(x, dim=0)[0]
    adaptive = x_sorted[torch.linspace(0, batch - 1, grid_size + 1, dtype=torch.int64)]
    step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / grid_size
    uniform = torch.arange(grid_size + 1, dtype=x.dtype).unsqueeze(1) * step + x_sorted[0] - margin
    new = grid_eps * uniform + (1 - grid_eps) * adaptive
    new = torch.cat([new[:1] - step * torch.arange(order, 0, -1, dtype=x.dtype).unsqueeze(1), new,
                     new[-1:] + step * torch.arange(1, order + 1, dtype=x.dtype).unsqueeze(1)]).T
    a = torch_b_splines(x, new, order).transpose(0, 1)
    coeff = torch.linalg.lstsq(a, spline_out.transpose(0, 1)).solution.permute(2, 0, 1)
    return new, coeff


def test_update_grid_equals_efficient_kan_without_standalone_scaler():
    layer = built_kan_linear(grid_size=4, enable_standalone_scale_spline=False, grid_eps=0.3)
    x = np.random.default_rng(5).normal(0, 0.5, (60, 3))
    grid, coeff = torch_update_grid(torch.tensor(x), torch.tensor(layer.grid), 3, 4,
                                    torch.tensor(layer.spline_weight.numpy()), 0.05, 0.3)
    layer.update_grid(x, margin=0.05)
    assert_close(layer.grid, grid.numpy(), 1e-12, "grid")
    assert_close(layer.spline_weight.numpy(), coeff.numpy(), 1e-8, "refitted coefficients")


def test_basis_second_derivatives_equal_torch():
    knots = random_knots(np.random.default_rng(7), 2, 8)
    x = np.random.default_rng(8).uniform(knots[:, 3], knots[:, -4], (6, 2))
    compare_double_backward_with_torch(lambda a: F.b_spline_basis(a, knots, 3),
                                       lambda a: torch_b_splines(a, torch.tensor(knots), 3), x)
