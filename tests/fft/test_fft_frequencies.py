"""fftfreq, rfftfreq, fftshift and ifftshift against torch.fft."""

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, randn
from lamina import fft


@pytest.mark.parametrize("n, d", [(1, 1.0), (5, 1.0), (8, 0.25)])
def test_frequencies_match_torch(n, d):
    assert np.allclose(fft.fftfreq(n, d, dtype=np.float64).numpy(), torch.fft.fftfreq(n, d, dtype=torch.float64))
    assert np.allclose(fft.rfftfreq(n, d, dtype=np.float64).numpy(), torch.fft.rfftfreq(n, d, dtype=torch.float64))
    assert fft.fftfreq(n).dtype == lamina.get_default_dtype()


def test_no_points_give_torch_frequencies():
    assert fft.fftfreq(0).shape == tuple(torch.fft.fftfreq(0).shape) == (0,)
    assert fft.fftfreq(0).dtype == lamina.get_default_dtype()
    # rfftfreq keeps n // 2 + 1 = 1 bin, 0 / (0 d): NaN in torch
    np.testing.assert_array_equal(fft.rfftfreq(0, dtype=np.float64).numpy(),
                                  torch.fft.rfftfreq(0, dtype=torch.float64).numpy())


@pytest.mark.parametrize("dim", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("name", ["fftshift", "ifftshift"])
def test_shifts_match_torch(name, dim):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda x: ours(x, dim=dim), lambda x: theirs(x, dim=dim), randn(5, 4, 3), dtype=np.float64)


@pytest.mark.parametrize("dim", [None, -1, (0, 1)])
@pytest.mark.parametrize("name", ["fftshift", "ifftshift"])
def test_shifts_of_a_complex_tensor_leave_the_pair_axis(name, dim):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda z: ours(z, dim=dim, complex_input=True),
                       lambda z: torch.view_as_real(theirs(torch.view_as_complex(z), dim=dim)),
                       randn(5, 4, 2), dtype=np.float64)


def test_ifftshift_undoes_fftshift_on_odd_sizes():
    x = randn(5, 7).astype(np.float32)
    assert np.array_equal(fft.ifftshift(fft.fftshift(x)).numpy(), x)


def test_errors():
    with pytest.raises(ValueError, match=r"fftfreq: n must be an int >= 0, got -1"):
        fft.fftfreq(-1)
    for name in ("fftfreq", "rfftfreq"):
        with pytest.raises(ValueError, match=f"{name}: the sample spacing d must be non-zero, got 0.0"):
            getattr(fft, name)(4, d=0.0)
    with pytest.raises(ValueError, match=r"fftshift: dim 2 is out of range for 2 complex axes \(shape \(3, 4, 2\)\)"):
        fft.fftshift(randn(3, 4, 2), dim=2, complex_input=True)


@pytest.mark.parametrize("dim", [np.int64(0), (np.int64(0),), [np.int32(-1)]])
@pytest.mark.parametrize("name", ["fftshift", "ifftshift"])
def test_shifts_take_numpy_integer_dims_as_torch(name, dim):
    x = randn(5)
    ours = getattr(fft, name)(lamina.tensor(x, dtype=np.float64), dim=dim).numpy()
    np.testing.assert_array_equal(ours, getattr(torch.fft, name)(torch.tensor(x), dim=dim).numpy())
    np.testing.assert_array_equal(fft.fftfreq(np.int64(5)).numpy(), fft.fftfreq(5).numpy())


@pytest.mark.parametrize("dim", [1.5, (0.0,), True])
def test_shifts_name_a_dim_that_is_not_an_int(dim):
    with pytest.raises(ValueError, match=r"fftshift: dim must be an int or a sequence of ints"):
        fft.fftshift(lamina.tensor(randn(4)), dim=dim)
