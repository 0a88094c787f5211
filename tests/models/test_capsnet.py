"""CapsNet: the paper's parameter count, the masked reconstruction and its loss, learning the
8x8 digits in seconds, and the errors."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import models, optim
from lamina.data import load_digits
from lamina.errors import ShapeError


def test_mnist_capsnet_has_the_papers_parameter_count():
    model = models.capsnet_mnist()
    out = model(np.zeros((1, 28, 28, 1), np.float32))
    assert out.lengths.shape == (1, 10) and out.capsules.shape == (1, 10, 16)
    assert out.reconstructions.shape == (1, 28, 28, 1)
    assert model.primary_capsules(model.conv1(np.zeros((1, 28, 28, 1), np.float32))).shape == (1, 1152, 8)
    # "8.2M parameters" with the reconstruction network and "6.8M" without it (Sabour et al., section 5)
    assert model.num_parameters() == 8_215_568
    assert model.num_parameters() - model.decoder.num_parameters() == 6_804_224


def test_reconstruction_reads_the_chosen_capsule_and_the_loss_adds_it():
    lamina.manual_seed(1)
    model = models.capsnet_digits()
    images = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    free = model(images)
    predicted = np.argmax(free.lengths.numpy(), axis=1)
    assert_close(model(images, predicted).reconstructions.numpy(), free.reconstructions.numpy(), 1e-6,
                 "reconstruction from the longest capsule")
    other = (predicted + 1) % 10
    guided = model(images, other)
    assert not np.allclose(guided.reconstructions.numpy(), free.reconstructions.numpy())
    error = ((guided.reconstructions.numpy() - images) ** 2).reshape(4, -1).sum(axis=1).mean()
    expected = F.capsule_margin_loss(guided.lengths, other).item() + 0.0005 * error
    assert model.loss(images, other).item() == pytest.approx(expected, rel=1e-5)


def test_digits_capsnet_learns_in_seconds():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    model = models.capsnet_digits()
    model(x[:2])
    opt = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        rows = rng.integers(0, 1400, 32)
        cost = model.loss(x[rows], y[rows])
        opt.zero_grad()
        cost.backward()
        opt.step()
    # measured: 0.97 on the 397 held-out digits
    assert np.mean(model.predict(x[1400:]) == y[1400:]) > 0.9


def test_errors_name_the_model():
    model = models.capsnet_digits()
    with pytest.raises(ShapeError, match=r"CapsNet: images of shape \(2, 28, 28, 1\); expected \(batch, 8, 8, 1\)"):
        model(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ShapeError, match=r"CapsNet: labels of shape \(3,\)"):
        model(np.zeros((2, 8, 8, 1), np.float32), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="CapsNet: input_shape"):
        models.CapsNet(input_shape=(28, 28))
