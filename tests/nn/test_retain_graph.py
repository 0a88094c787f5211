"""backward(retain_graph=True) keeps what every layer saved: a second backward through the
same graph adds the same gradients again (PyTorch's semantics), for every layer kind and
every convolution plan; without it, the second backward says why it cannot run."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn

LAYERS = {
    "dense": (lambda: nn.Dense(5, activation="relu"), (4, 6)),
    "conv_rows": (lambda: nn.Conv2D(4, 3, padding="same", activation="tanh"), (2, 6, 6, 3)),
    "conv_32": (lambda: nn.Conv2D(32, 3, padding="same"), (2, 8, 8, 32)),
    "conv_lenet": (lambda: nn.Conv2D(6, 5), (2, 12, 12, 1)),
    "conv_1x1": (lambda: nn.Conv2D(6, 1), (2, 6, 6, 4)),
    "conv_stride2": (lambda: nn.Conv2D(16, 3, stride=2), (2, 9, 9, 64)),
    "conv_fft": (lambda: nn.Conv2D(4, 3, algorithm="fft"), (2, 6, 6, 3)),
    "conv_dilated": (lambda: nn.Conv2D(4, 3, dilation=2), (2, 9, 9, 3)),
    "conv_grouped": (lambda: nn.Conv2D(4, 3, groups=2), (2, 6, 6, 4)),
    "depthwise": (lambda: nn.DepthwiseConv2D(3), (2, 6, 6, 3)),
    "separable": (lambda: nn.SeparableConv2D(5, 3), (2, 6, 6, 3)),
    "conv_transpose": (lambda: nn.Conv2DTranspose(3, 3, stride=2), (2, 4, 4, 5)),
    "batch_norm_image": (lambda: nn.BatchNorm(), (4, 5, 5, 3)),
    "batch_norm_dense": (lambda: nn.BatchNorm(), (8, 6)),
    "layer_norm": (lambda: nn.LayerNorm(), (4, 6)),
    "group_norm": (lambda: nn.GroupNorm(2), (2, 4, 4, 6)),
    "local_response_norm": (lambda: nn.LocalResponseNorm(), (2, 4, 4, 8)),
    "prelu": (lambda: nn.PReLU(), (2, 4, 4, 3)),
    "dropout": (lambda: nn.Dropout(0.5), (6, 10)),
    "drop_connect": (lambda: nn.DropConnect(nn.Dense(4), 0.3), (6, 5)),
    "max_pool": (lambda: nn.MaxPool2D(2), (2, 6, 6, 3)),
    "max_pool_overlapping": (lambda: nn.MaxPool2D(3, 2, padding=1), (2, 7, 7, 3)),
    "avg_pool": (lambda: nn.AvgPool2D(2), (2, 6, 6, 3)),
    "global_avg_pool": (lambda: nn.GlobalAvgPool2D(), (2, 6, 6, 3)),
    "random_rotation": (lambda: nn.RandomRotation(15), (4, 5, 5, 1)),
    "random_gaussian_blur": (lambda: nn.RandomGaussianBlur(3), (4, 5, 5, 1)),
    "elu": (lambda: nn.ELU(), (4, 5)),
    "softmax": (lambda: nn.Softmax(), (4, 5)),
    "gelu": (lambda: nn.GELU(), (4, 5)),
}


def _output(name):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(0)
    make, shape = LAYERS[name]
    layer = make()
    x = lamina.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    layer(x)
    layer.train()
    y = layer(x)
    return layer, x, y, np.random.default_rng(1).standard_normal(y.shape)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_retained_graph_gives_the_same_gradients_twice(name):
    layer, x, y, upstream = _output(name)
    y.backward(upstream, retain_graph=True)
    first = [x.grad.copy()] + [p.grad.copy() for p in layer.parameters()]
    y.backward(upstream)
    second = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(first, second):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["conv_rows", "batch_norm_image", "max_pool"])
def test_without_retain_graph_a_second_backward_says_why(name):
    _, _, y, upstream = _output(name)
    y.backward(upstream)
    with pytest.raises(RuntimeError, match=r"a second time.*retain_graph=True"):
        y.backward(upstream)
