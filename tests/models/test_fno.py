"""FNO1D / FNO2D (Fourier neural operators) against a torch reference built with torch.fft and
complex weights; gradient checks; resolution-free evaluation; saving and summary; learning the
heat and Burgers solution operators."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.data import burgers_dataset, gaussian_random_field_1d, heat_dataset
from lamina.errors import ShapeError
from lamina.models import FNO1D, FNO2D, grid_coordinates


# -- the torch reference ----------------------------------------------------------------------------
def torch_spectral(v, weight, spatial_axes):
    """Li et al.'s SpectralConv1d / SpectralConv2d on channels-last v, lamina's weight layout."""
    w = torch.view_as_complex(weight)
    if spatial_axes == 1:
        n, length, _ = v.shape
        modes = w.shape[0]
        spectrum = torch.fft.rfft(v, dim=1)
        out = torch.zeros(n, length // 2 + 1, w.shape[-1], dtype=spectrum.dtype)
        out[:, :modes] = torch.einsum("nki,kio->nko", spectrum[:, :modes], w)
        return torch.fft.irfft(out, n=length, dim=1)
    n, h, width, _ = v.shape
    m1, m2 = w.shape[0] // 2, w.shape[1]
    spectrum = torch.fft.rfft2(v, dim=(1, 2))
    out = torch.zeros(n, h, width // 2 + 1, w.shape[-1], dtype=spectrum.dtype)
    out[:, :m1, :m2] = torch.einsum("nxyi,xyio->nxyo", spectrum[:, :m1, :m2], w[:m1])
    out[:, -m1:, :m2] = torch.einsum("nxyi,xyio->nxyo", spectrum[:, -m1:, :m2], w[m1:])
    return torch.fft.irfft2(out, s=(h, width), dim=(1, 2))


def torch_fno(x, params: dict, layers: int, append_grid: bool = True):
    """The FNO of Li et al.'s reference code (channels last, periodic grid coordinates i / n)."""
    spatial_axes = x.ndim - 2
    if append_grid:
        axes = [torch.arange(n, dtype=x.dtype) / n for n in x.shape[1:-1]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        x = torch.cat([x, grid.expand(x.shape[0], *grid.shape)], dim=-1)

    def dense(name, v):
        return v @ params[f"{name}.weight"] + params[f"{name}.bias"]

    v = dense("lift", x)
    for k in range(layers):
        v = torch_spectral(v, params[f"spectral{k}.weight"], spatial_axes) + dense(f"pointwise{k}", v)
        if k < layers - 1:
            v = torch.nn.functional.gelu(v)
    return dense("project_out", torch.nn.functional.gelu(dense("project_hidden", v)))


def built(model, shape, dtype=np.float32, scale=0.5):
    """``model`` built for ``shape`` with random parameters of a size that makes every part count."""
    model.build(shape)
    rng = np.random.default_rng(7)
    for value in model.state_dict().values():
        value[...] = rng.normal(0.0, scale / np.sqrt(max(value.shape[0], 1)), value.shape)
    if dtype == np.float64:
        model.to(dtype=np.float64)
    return model


def as_function_of_parameters(model):
    """(f(x, *params), params): the model as a function of its input and parameter arrays."""
    keys = list(model.state_dict())

    def call(x, *params):
        return nn.functional_call(model, dict(zip(keys, params)), x)

    return call, [model.state_dict()[k].copy() for k in keys]


CASES = [
    (lambda: FNO1D(3, 5, layers=2, in_channels=2, out_channels=3, projection_units=7), (2, 9, 2)),
    (lambda: FNO1D(4, 4, layers=3, append_grid=False), (3, 8, 1)),
    (lambda: FNO2D((2, 3), 4, layers=2, in_channels=1, out_channels=2, projection_units=6), (2, 6, 7, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, shape", CASES)
def test_fno_matches_the_torch_reference(make, shape, dtype):
    """Outputs and the gradients of the input and of every parameter."""
    model = built(make(), (None, *shape[1:]), dtype)
    ours, arrays = as_function_of_parameters(model)
    keys = list(model.state_dict())

    def theirs(x, *params):
        return torch_fno(x, dict(zip(keys, params)), model.layers, model.append_grid)

    compare_with_torch(ours, theirs, randn(*shape), *arrays, dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else 1e-9)


def test_gradcheck():
    lamina.set_default_dtype(np.float64)
    try:
        for make, shape in CASES[::2]:
            model = built(make(), (None, *shape[1:]), np.float64)
            function, arrays = as_function_of_parameters(model)
            assert check_gradients(function, randn(*shape), *arrays)
    finally:
        lamina.set_default_dtype(np.float32)


# -- shapes, resolution, configuration ---------------------------------------------------------------
def test_any_resolution_and_consistent_across_resolutions():
    """The same weights at 32, 64 and 128 points; a smooth field sampled on a coarse grid gives
    (nearly) the fine grid's output at the shared points."""
    lamina.manual_seed(0)
    model = FNO1D(8, 16, layers=3)
    field = gaussian_random_field_1d(3, 128, seed=2)[..., None].astype(np.float32)
    with lamina.no_grad():
        fine = model(field).numpy()
        for stride in (2, 4):
            coarse = model(field[:, ::stride]).numpy()
            assert coarse.shape == (3, 128 // stride, 1)
            assert np.linalg.norm(coarse - fine[:, ::stride]) < 1e-2 * np.linalg.norm(fine)
    assert model.compute_output_shape((None, None, 1)) == (None, None, 1)
    image_model = FNO2D(3, 6, layers=2, in_channels=2, out_channels=3)
    for h, w in ((8, 8), (12, 10)):
        assert image_model(randn(1, h, w, 2)).shape == (1, h, w, 3)


def test_grid_coordinates():
    grid = grid_coordinates((2, 4), np.float64).numpy()
    assert grid.shape == (2, 4, 2)
    np.testing.assert_array_equal(grid[:, 0, 0], [0.0, 0.5])
    np.testing.assert_array_equal(grid[0, :, 1], [0.0, 0.25, 0.5, 0.75])
    assert grid_coordinates((3,), np.float32).numpy().dtype == np.float32


def test_bad_inputs_are_named():
    model = FNO1D(4, 8, in_channels=2)
    with pytest.raises(ShapeError, match=r"FNO1D.*\(batch, length, 2\)"):
        model(randn(2, 16, 3))
    with pytest.raises(ShapeError, match="modes"):
        model(randn(2, 4, 2))
    with pytest.raises(ShapeError, match="FNO2D"):
        FNO2D(2, 4)(randn(2, 8, 1))
    with pytest.raises(ValueError, match="width"):
        FNO1D(4, 0)


def test_summary_counts_the_reference_parameters():
    """lift (c_in + 1) w + w, per block modes w^2 complex + w^2 + w, projection w 128 + 128 + 128 + 1."""
    modes, width, layers = 16, 64, 4
    table = summary(FNO1D(modes, width, layers), (256, 1))
    expected = 2 * width + width + layers * (2 * modes * width ** 2 + width ** 2 + width) + width * 128 + 128 + 129
    assert table.total_params == expected
    table = summary(FNO2D((3, 4), 8, 2, in_channels=1), (16, 16, 1))
    assert table.total_params == 3 * 8 + 8 + 2 * (2 * 2 * 3 * 4 * 64 + 64 + 8) + 8 * 128 + 128 + 129


@pytest.mark.parametrize("model", [FNO1D(3, 4, layers=2, in_channels=2, out_channels=3, append_grid=False),
                                   FNO2D((2, 3), 4, layers=1, projection_units=5)])
def test_config_and_save_round_trip(model, tmp_path):
    shape = (2, 8, 2) if isinstance(model, FNO1D) else (2, 6, 8, 1)
    model = built(model, (None, *shape[1:]))
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = tmp_path / "fno.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    x = randn(*shape)
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


# -- learning ----------------------------------------------------------------------------------------
def relative_l2(prediction, target) -> float:
    """mean over samples of ||prediction - target|| / ||target||."""
    n = len(target)
    diff = np.linalg.norm((prediction - target).reshape(n, -1), axis=1)
    return float(np.mean(diff / np.linalg.norm(target.reshape(n, -1), axis=1)))


def relative_l2_loss(prediction, target: np.ndarray):
    squared = F.sum(F.square(prediction - target), axis=(1, 2))
    return F.mean(F.sqrt(squared / (target ** 2).sum(axis=(1, 2))))


def fit(model, x, y, steps: int, lr: float, batch_size: int = 20) -> None:
    """Adam on the relative L2 loss, the rate halved every quarter of the steps."""
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for step in range(steps):
        rows = rng.choice(len(x), batch_size, replace=False)
        loss = relative_l2_loss(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % (steps // 4) == 0:
            optimizer.param_groups[0]["lr"] *= 0.5


def evaluate(model, x, y) -> float:
    with lamina.no_grad():
        return relative_l2(model(x).numpy(), y)


def test_fno1d_learns_the_heat_operator_and_evaluates_at_twice_the_resolution():
    start = time.perf_counter()
    lamina.manual_seed(0)
    x, y = heat_dataset(120, 64, seed=0)
    x_test, y_test = heat_dataset(40, 64, seed=1)
    x_fine, y_fine = heat_dataset(40, 128, seed=1)
    model = FNO1D(8, 16, layers=2)
    before = evaluate(model, x_test, y_test)
    fit(model, x, y, steps=200, lr=1e-2)
    at_64, at_128 = evaluate(model, x_test, y_test), evaluate(model, x_fine, y_fine)
    print(f"heat: relative L2 {before:.3f} -> {at_64:.4f} at 64 points, {at_128:.4f} at 128 "
          f"({time.perf_counter() - start:.1f} s)")
    # measured (OpenBLAS's own and Haswell kernels alike): 0.0299 at 64 points, 0.0229 at 128
    assert at_64 < 0.04 and at_128 < 0.04
    assert before > 1.0


def test_fno1d_learns_burgers():
    start = time.perf_counter()
    lamina.manual_seed(0)
    options = {"viscosity": 0.05, "time": 0.5, "solver_resolution": 128}
    x, y = burgers_dataset(100, 64, seed=0, **options)
    x_test, y_test = burgers_dataset(40, 64, seed=1, **options)
    model = FNO1D(12, 24, layers=3)
    before = evaluate(model, x_test, y_test)
    fit(model, x, y, steps=200, lr=3e-3)
    after = evaluate(model, x_test, y_test)
    print(f"Burgers: relative L2 {before:.3f} -> {after:.4f} ({time.perf_counter() - start:.1f} s)")
    # measured (OpenBLAS's own and Haswell kernels alike): 10.28 -> 0.0309
    assert after < 0.05 and after < before / 50


def test_fno2d_fits_a_linear_operator():
    """A 2-D smoothing (the heat kernel of each row and column) learned to a small error."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 12, 12, 1)).astype(np.float32)
    k = 2 * np.pi * np.fft.fftfreq(12)
    decay = np.exp(-0.5 * (k[:, None] ** 2 + k[None, :] ** 2))[None, :, :, None]
    y = np.fft.ifft2(np.fft.fft2(x, axes=(1, 2)) * decay, axes=(1, 2)).real.astype(np.float32)
    model = FNO2D(4, 8, layers=1, append_grid=False)
    before = evaluate(model, x, y)
    fit(model, x, y, steps=125, lr=1e-2)
    after = evaluate(model, x, y)
    print(f"2-D smoothing: relative L2 {before:.3f} -> {after:.4f}")
    # measured (OpenBLAS's own and Haswell kernels alike): 12.15 -> 0.113
    assert after < 0.15 < before
