"""FNO1D / FNO2D with zero padding of the domain and the closed [0, 1] grid (Li et al.'s setup for
non-periodic problems): against a torch reference of the reference code, gradient checks,
shapes, configuration and saving round trips, and learning Darcy flow at 16 x 16."""

import time

import numpy as np
import pytest
import torch
from test_fno import as_function_of_parameters, built, torch_spectral

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.data import darcy_flow_dataset
from lamina.models import FNO1D, FNO2D, grid_coordinates


def torch_padded_fno(x, params: dict, layers: int, padding: int, closed: bool):
    """Li et al.'s FNO for Darcy flow, channels last: the grid linspace(0, 1, n) appended, the
    lifted field zero-padded by ``padding`` at the end of every spatial axis, cropped after the
    last Fourier block."""
    spatial_axes = x.ndim - 2
    spatial = x.shape[1:-1]
    axes = [torch.linspace(0, 1, n, dtype=x.dtype) if closed else torch.arange(n, dtype=x.dtype) / n
            for n in spatial]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    x = torch.cat([x, grid.expand(x.shape[0], *grid.shape)], dim=-1)

    def dense(name, v):
        return v @ params[f"{name}.weight"] + params[f"{name}.bias"]

    v = dense("lift", x)
    v = torch.nn.functional.pad(v, [0, 0] + [0, padding] * spatial_axes)
    for k in range(layers):
        v = torch_spectral(v, params[f"spectral{k}.weight"], spatial_axes) + dense(f"pointwise{k}", v)
        if k < layers - 1:
            v = torch.nn.functional.gelu(v)
    v = v[(slice(None), *[slice(0, n) for n in spatial])]
    return dense("project_out", torch.nn.functional.gelu(dense("project_hidden", v)))


CASES = [
    (lambda: FNO1D(3, 5, layers=2, in_channels=2, out_channels=2, projection_units=6, padding=3), (2, 7, 2)),
    (lambda: FNO2D((2, 3), 4, layers=2, projection_units=5, padding=2, grid="closed"), (2, 6, 5, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, shape", CASES)
def test_padded_fno_matches_the_torch_reference(make, shape, dtype):
    model = built(make(), (None, *shape[1:]), dtype)
    ours, arrays = as_function_of_parameters(model)
    keys = list(model.state_dict())

    def theirs(x, *params):
        return torch_padded_fno(x, dict(zip(keys, params)), model.layers, model.padding, model.grid == "closed")

    compare_with_torch(ours, theirs, randn(*shape), *arrays, dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else 1e-9)


def test_gradcheck_with_padding():
    lamina.set_default_dtype(np.float64)
    try:
        model = built(CASES[1][0](), (None, 6, 5, 1), np.float64)
        function, arrays = as_function_of_parameters(model)
        assert check_gradients(function, randn(2, 6, 5, 1), *arrays)
    finally:
        lamina.set_default_dtype(np.float32)


def test_padding_shapes_and_the_modes_rule():
    """The output keeps the input's grid; the spectral layers see the padded one, so modes that
    need more points than the input has fit once padded."""
    lamina.manual_seed(0)
    model = FNO2D(5, 4, layers=1, padding=3)
    assert model(randn(2, 7, 9, 1)).shape == (2, 7, 9, 1)          # 7 + 3 >= 2 * 5
    assert model.compute_output_shape((None, 11, 12, 1)) == (None, 11, 12, 1)
    assert model.compute_output_shape((None, None, None, 1)) == (None, None, None, 1)
    with pytest.raises(lamina.errors.ShapeError, match="modes"):
        FNO2D(5, 4, layers=1)(randn(2, 7, 9, 1))
    table = summary(FNO1D(4, 6, layers=1, padding=5), (12, 1))
    assert table.total_params == summary(FNO1D(4, 6, layers=1), (12, 1)).total_params
    assert "padding=5" in repr(FNO1D(4, 6, padding=5)) and "grid='closed'" in repr(FNO2D(2, 4, grid="closed"))
    assert "padding" not in repr(FNO1D(4, 6))


def test_padding_breaks_the_periodic_wrap_around():
    """Without padding, a periodic shift of the input shifts the output (every layer commutes with
    it); with padding it does not."""
    lamina.manual_seed(1)
    x = randn(1, 12, 1)
    for padding, commutes in ((0, True), (4, False)):
        model = FNO1D(4, 8, layers=2, append_grid=False, padding=padding)
        with lamina.no_grad():
            shifted, plain = model(np.roll(x, 5, axis=1)).numpy(), model(x).numpy()
        assert np.allclose(shifted, np.roll(plain, 5, axis=1), atol=1e-5) == commutes


def test_closed_grid_coordinates():
    grid = grid_coordinates((3, 5), np.float64, "closed").numpy()
    np.testing.assert_array_equal(grid[:, 0, 0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(grid[0, :, 1], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(grid_coordinates((4,), np.float64).numpy()[:, 0], [0.0, 0.25, 0.5, 0.75])
    with pytest.raises(ValueError, match="grid_coordinates: kind"):
        grid_coordinates((4,), np.float64, "open")
    with pytest.raises(ValueError, match="FNO2D: grid"):
        FNO2D(2, 4, grid="open")
    with pytest.raises(ValueError, match="FNO1D: padding"):
        FNO1D(2, 4, padding=-1)


@pytest.mark.parametrize("make, shape", CASES)
def test_config_and_save_round_trip(make, shape, tmp_path):
    model = built(make(), (None, *shape[1:]))
    config = model.get_config()
    assert config["padding"] == model.padding and config["grid"] == model.grid
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    path = tmp_path / "fno.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert type(loaded) is type(model) and loaded.get_config() == config
    x = randn(*shape)
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    old = {k: v for k, v in config.items() if k not in ("padding", "grid")}       # a config saved before both
    assert type(model).from_config(old).padding == 0 and type(model).from_config(old).grid == "periodic"


def test_fno2d_learns_darcy_flow_at_16x16():
    """Li et al.'s Darcy problem (a thresholded random field, f = 1, u = 0 on the boundary) on
    16 x 16 nodes, with padding and the closed grid, trained on the relative L2 error."""
    start = time.perf_counter()
    a, u = darcy_flow_dataset(300, 16, solver_resolution=31, seed=0)
    x, y = (a - 7.5) / 4.5, 100 * u                    # inputs to +-1, outputs to order 1
    x_train, y_train, x_test, y_test = x[:250], y[:250], x[250:], y[250:]
    lamina.manual_seed(0)
    model = FNO2D(5, 12, layers=2, padding=3, grid="closed", projection_units=32)
    model.build((None, 16, 16, 1))
    loss = nn.RelativeLpLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    steps = 300
    for step in range(steps):
        rows = rng.choice(len(x_train), 20, replace=False)
        cost = loss(model(x_train[rows]), y_train[rows])
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        if (step + 1) % (steps // 4) == 0:
            optimizer.param_groups[0]["lr"] *= 0.5
    with lamina.no_grad():
        error = float(F.relative_lp_loss(model(x_test), y_test).numpy())
    mean_field = float(F.relative_lp_loss(np.broadcast_to(y_train.mean(axis=0), y_test.shape), y_test).numpy())
    print(f"Darcy 16x16: test relative L2 {error:.4f} (the mean field: {mean_field:.4f}), "
          f"{time.perf_counter() - start:.1f} s")
    assert error < 0.08 and error < mean_field / 3
