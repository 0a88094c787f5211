"""Positional encoding: the formula written out term by term, values and gradients against
PyTorch, a float64 gradient check, the sizes and the errors."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.vision.nerf import encoding_frequencies, encoding_size, positional_encoding


@pytest.mark.parametrize("include_input", [True, False])
@pytest.mark.parametrize("include_pi", [False, True])
def test_encoding_is_the_formula_term_by_term(include_input, include_pi):
    x = randn(4, 3)
    levels = 3
    out = positional_encoding(lamina.tensor(x, dtype=np.float64), levels, include_input=include_input,
                              include_pi=include_pi).numpy()
    factor = math.pi if include_pi else 1.0
    for row, p in zip(out, x):
        expected = list(p) if include_input else []
        for k in range(levels):
            expected += [math.sin(2.0 ** k * factor * v) for v in p]
            expected += [math.cos(2.0 ** k * factor * v) for v in p]
        np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-12)
    assert out.shape[-1] == encoding_size(3, levels, include_input)


def test_linear_sampling_spaces_the_frequencies_evenly():
    np.testing.assert_allclose(encoding_frequencies(4, log_sampling=False), [1.0, 1 + 7 / 3, 1 + 14 / 3, 8.0])
    np.testing.assert_allclose(encoding_frequencies(4), [1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(encoding_frequencies(2, include_pi=True), [math.pi, 2 * math.pi])


def _torch_encoding(x, levels=4):
    parts = [x]
    for k in range(levels):
        parts += [torch.sin(x * 2.0 ** k), torch.cos(x * 2.0 ** k)]
    return torch.cat(parts, -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoding_matches_torch(dtype):
    compare_with_torch(lambda x: positional_encoding(x, 4), _torch_encoding, randn(2, 5, 3), dtype=dtype)


def test_encoding_gradcheck():
    assert check_gradients(lambda x: positional_encoding(x, 3, include_pi=True), randn(3, 2))


def test_zero_frequencies_leave_the_input():
    x = lamina.tensor(randn(2, 3))
    np.testing.assert_array_equal(positional_encoding(x, 0).numpy(), x.numpy())


def test_wrong_encoding_inputs_are_refused():
    with pytest.raises(TypeError, match="positional_encoding: expected floating-point coordinates, got dtype int"):
        positional_encoding(np.arange(6).reshape(2, 3), 2)
    with pytest.raises(ShapeError, match=r"positional_encoding: expected coordinates of shape \(..., d\)"):
        positional_encoding(lamina.tensor(np.zeros((2, 0))), 2)
    with pytest.raises(ValueError, match="positional_encoding: num_freqs must be an int >= 0, got -1"):
        positional_encoding(lamina.tensor(np.zeros((2, 3))), -1)
    with pytest.raises(ValueError, match="would be empty"):
        positional_encoding(lamina.tensor(np.zeros((2, 3))), 0, include_input=False)
