"""lamina.keras pooling with padding="same": TensorFlow's SAME rule against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina.keras import layers
from lamina.keras.pooling import SamePooling, same_padding

_TORCH_POOL = {("max", 1): torch.nn.functional.max_pool1d, ("max", 2): torch.nn.functional.max_pool2d,
               ("max", 3): torch.nn.functional.max_pool3d, ("average", 1): torch.nn.functional.avg_pool1d,
               ("average", 2): torch.nn.functional.avg_pool2d, ("average", 3): torch.nn.functional.avg_pool3d}
_KERAS = {("max", 1): layers.MaxPooling1D, ("max", 2): layers.MaxPooling2D, ("max", 3): layers.MaxPooling3D,
          ("average", 1): layers.AveragePooling1D, ("average", 2): layers.AveragePooling2D,
          ("average", 3): layers.AveragePooling3D}


def _torch_same_pool(x, kind, pool_size, strides):
    """SAME pooling in torch: channels first, explicit (before, after) padding, -inf for max and
    a count of real values for the average."""
    dims = x.dim() - 2
    x = x.movedim(-1, 1)
    widths = []
    for n, f, s in zip(reversed(x.shape[2:]), reversed(pool_size), reversed(strides), strict=True):
        total = max((math.ceil(n / s) - 1) * s + f - n, 0)
        widths += [total // 2, total - total // 2]
    pool = _TORCH_POOL[(kind, dims)]
    if kind == "max":
        y = pool(torch.nn.functional.pad(x, widths, value=-math.inf), pool_size, strides)
    else:
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
        sums = pool(torch.nn.functional.pad(x, widths), pool_size, strides)
        y = sums / pool(torch.nn.functional.pad(ones, widths), pool_size, strides)
    return y.movedim(1, -1)


# (dims, input shape, pool_size, strides)
CASES = [
    (1, (2, 7, 3), (3,), (2,)),
    (1, (2, 5, 2), (2,), (2,)),
    (2, (2, 5, 7, 3), (3, 2), (2, 3)),
    (2, (1, 4, 4, 2), (3, 3), (1, 1)),
    (3, (1, 3, 5, 4, 2), (2, 3, 2), (2, 2, 3)),
]


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
def test_same_pooling_matches_torch_in_values_and_gradients(kind, case):
    dims, shape, pool_size, strides = case
    x = randn(*shape, seed=dims)
    make = _KERAS[(kind, dims)]
    size = pool_size[0] if dims == 1 else pool_size
    layer = make(size, strides=strides[0] if dims == 1 else strides, padding="same")
    out = compare_with_torch(layer, lambda t: _torch_same_pool(t, kind, pool_size, strides), x)
    expected = tuple(math.ceil(n / s) for n, s in zip(shape[1:-1], strides, strict=True))
    assert out[0].shape == (shape[0], *expected, shape[-1])
    assert check_gradients(lambda t: layer(t), x.astype(np.float64))


def test_average_counts_only_real_values_like_keras():
    # Keras's documented example: [1, 2, 3, 4, 5] pooled by 2 with stride 1, "same" -> the last
    # window holds only the 5.
    x = np.array([1, 2, 3, 4, 5], dtype=np.float32).reshape(1, 5, 1)
    y = layers.AveragePooling1D(2, strides=1, padding="same")(lamina.tensor(x))
    np.testing.assert_allclose(y.numpy().ravel(), [1.5, 2.5, 3.5, 4.5, 5.0])
    y = layers.MaxPooling1D(2, strides=1, padding="same")(lamina.tensor(-x))
    np.testing.assert_allclose(y.numpy().ravel(), [-1, -2, -3, -4, -5])


def test_symmetric_same_average_equals_torch_count_exclude_pad():
    x = randn(2, 6, 6, 3, seed=5)
    ours = layers.AveragePooling2D(3, strides=1, padding="same")(lamina.tensor(x)).numpy()
    theirs = torch.nn.functional.avg_pool2d(torch.tensor(x).movedim(-1, 1), 3, 1, padding=1,
                                            count_include_pad=False).movedim(1, -1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("make", "input_shape", "output_shape"), [
    # Keras's documented shapes: (1, 3, 3, 1) pooled 2x2, strides 1, "same" stays (1, 3, 3, 1);
    # strides 2 give ceil(n / 2).
    (lambda: layers.MaxPooling2D((2, 2), strides=(1, 1), padding="same"), (3, 3, 1), (3, 3, 1)),
    (lambda: layers.MaxPooling2D(padding="same"), (5, 7, 4), (3, 4, 4)),
    (lambda: layers.AveragePooling1D(3, strides=2, padding="same"), (9, 2), (5, 2)),
    (lambda: layers.AveragePooling3D(padding="same"), (3, 4, 5, 2), (2, 2, 3, 2)),
    (lambda: layers.MaxPooling3D(3, strides=(1, 2, 3), padding="same"), (3, 4, 5, 2), (3, 2, 2, 2)),
])
def test_same_output_shapes_are_keras(make, input_shape, output_shape):
    layer = make()
    y = layer(lamina.tensor(np.zeros((2, *input_shape), dtype=np.float32)))
    assert y.shape[1:] == output_shape
    assert layer.compute_output_shape((None, *input_shape)) == (None, *output_shape)


def test_same_padding_splits_the_extra_at_the_end():
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(4, 4, 1) == (1, 2)
    assert same_padding(6, 2, 2) == (0, 0)


def test_same_pooling_errors_and_config():
    with pytest.raises(ValueError, match="MaxPooling2D pool_size"):
        layers.MaxPooling2D((2, 2, 2), padding="same")
    with pytest.raises(ValueError, match="AveragePooling1D strides"):
        layers.AveragePooling1D(2, strides=0, padding="same")
    with pytest.raises(lamina.errors.ShapeError, match="MaxPooling2D: expected input of 4 dims"):
        layers.MaxPooling2D(padding="same")(lamina.tensor(np.zeros((2, 4, 3), dtype=np.float32)))
    layer = layers.AveragePooling2D(3, strides=2, padding="same")
    copy = SamePooling(**layer.get_config())
    x = randn(1, 5, 5, 2)
    np.testing.assert_array_equal(copy(lamina.tensor(x)).numpy(), layer(lamina.tensor(x)).numpy())
