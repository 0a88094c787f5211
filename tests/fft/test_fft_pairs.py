"""The complex-pair helpers of lamina.fft against torch's complex ops through torch.view_as_real."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, nonzero, randn
from lamina import fft


def _pair(z):
    return torch.view_as_real(z.resolve_conj())


def _complex(z):
    return torch.view_as_complex(z)


CASES = {
    "real": (fft.real, lambda z: _complex(z).real, [randn(3, 4, 2)]),
    "imag": (fft.imag, lambda z: _complex(z).imag, [randn(3, 4, 2)]),
    "complex": (fft.complex, lambda a, b: _pair(torch.complex(a, b)), [randn(3, 4), randn(3, 4, seed=1)]),
    "complex_broadcast": (fft.complex, lambda a, b: _pair(torch.complex(a, b)), [randn(3, 1), randn(4, seed=1)]),
    "abs": (fft.abs, lambda z: _complex(z).abs(), [nonzero(3, 4, 2)]),
    "angle": (fft.angle, lambda z: _complex(z).angle(), [nonzero(3, 4, 2)]),
    "conj": (fft.conj, lambda z: _pair(_complex(z).conj()), [randn(3, 4, 2)]),
    "mul": (fft.mul, lambda a, b: _pair(_complex(a) * _complex(b)), [randn(3, 4, 2), randn(4, 2, seed=1)]),
    "polar": (fft.polar, lambda r, t: _pair(torch.polar(r, t)), [np.abs(nonzero(3, 4)), randn(3, 4, seed=1)]),
    "from_real": (fft.from_real, lambda x: _pair(torch.complex(x, torch.zeros_like(x))), [randn(3, 4)]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_gradients(ours, *inputs)


@pytest.mark.parametrize("name", ["abs", "angle", "mul"])
def test_second_derivatives(name):
    ours, _, inputs = CASES[name]
    assert check_second_derivatives(ours, *inputs)


def test_views_are_the_tensor_itself():
    z = lamina.tensor(randn(2, 3, 2))
    assert fft.view_as_real(z) is z and fft.view_as_complex(z) is z


def test_abs_has_a_zero_gradient_at_zero():
    z = lamina.tensor(np.zeros((2, 2)), requires_grad=True, dtype=np.float64)
    fft.abs(z).sum().backward()
    assert np.array_equal(z.grad, np.zeros((2, 2)))


def test_errors_name_the_function_and_the_shape():
    with pytest.raises(lamina.ShapeError, match=r"mul: .*\(\.\.\., 2\).*shape \(3, 3\)"):
        fft.mul(randn(3, 2), randn(3, 3))
    with pytest.raises(lamina.ShapeError, match=r"complex: real of shape \(3,\) and imag of shape \(4,\)"):
        fft.complex(randn(3), randn(4))
    with pytest.raises(lamina.ShapeError, match=r"view_as_complex: .*shape \(2, 3\)"):
        fft.view_as_complex(randn(2, 3))
