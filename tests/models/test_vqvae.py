"""VQVAE: shapes, encode / decode / decode_indices agreeing, learning the 8x8 digits (low
reconstruction error, many codes in use, with and without EMA codebooks), a GatedPixelCNN
prior over the index maps that beats a per-position baseline and gives decodable samples,
and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models, optim
from lamina.errors import ShapeError


@pytest.fixture(scope="module")
def digits():
    x, _ = lamina.data.load_digits(size=8)
    x = x.astype(np.float32) / 255
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1400]], x[order[1400:]]


def _train(model, train, steps, lr=1e-2):
    opt = optim.Adam(model, lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        loss, _ = model.loss(train[rng.integers(0, len(train), 32)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(digits):
    lamina.manual_seed(0)
    return _train(models.VQVAE(num_embeddings=32, embedding_dim=8, hidden=16, residual_hidden=8,
                               num_residual_layers=1, downsamples=1), digits[0], 200)


def test_shapes_and_decoding_paths():
    model = models.VQVAE(channels=3, num_embeddings=10, embedding_dim=4, hidden=8, residual_hidden=4)
    x = np.random.default_rng(0).uniform(size=(2, 8, 12, 3)).astype(np.float32)
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.indices.shape == (2, 2, 3)
    assert model.latent_shape((8, 12)) == (2, 3)
    encoded = model.encode(x)
    assert encoded.quantized.shape == (2, 2, 3, 4)
    assert_close(model.decode_indices(encoded.indices).numpy(), model.decode(encoded.quantized).numpy(), 1e-5)
    assert_close(out.reconstruction.numpy(), model.decode(encoded.quantized).numpy(), 1e-6)


@pytest.mark.parametrize("ema", [False, True])
def test_reconstructs_digits_with_many_codes(digits, trained, ema):
    train, test = digits
    model = trained if not ema else _train(
        models.VQVAE(num_embeddings=32, embedding_dim=8, hidden=16, residual_hidden=8, num_residual_layers=1,
                     downsamples=1, ema=True, decay=0.9), train, 200)
    out = model(test)
    mse = float(((out.reconstruction.numpy() - test) ** 2).mean())
    mean_image = float(((train.mean(0) - test) ** 2).mean())
    assert mse < 0.6 * mean_image, (mse, mean_image)        # about 0.024 (0.035 with EMA) against 0.074
    assert out.perplexity > 10                               # of 32 codes


def test_prior_over_indices_and_samples(digits, trained):
    train, test = digits
    k = trained.num_embeddings
    train_maps, test_maps = trained.encode(train).indices, trained.encode(test).indices
    assert train_maps.shape == (1400, 4, 4)
    # the best model of each position alone (add-one smoothed frequencies)
    counts = np.stack([(train_maps == code).sum(0) for code in range(k)], -1) + 1.0
    p = counts / counts.sum(-1, keepdims=True)
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    baseline = float(-np.log2(p[rows, cols, test_maps]).mean())
    prior = models.GatedPixelCNN(levels=k, hidden=16, num_layers=3, kernel_size=3, embedding_dim=8)
    opt = optim.Adam(prior, lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(80):
        loss = prior.bits_per_dim(train_maps[rng.integers(0, len(train_maps), 64)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    bits = prior.bits_per_dim(test_maps).item()
    assert bits < baseline < math.log2(k), (bits, baseline)
    images = trained.sample(prior, (4, 4), 3, seed=0)
    assert images.shape == (3, 8, 8, 1) and np.isfinite(images.numpy()).all()


def test_errors_name_the_model():
    model = models.VQVAE(num_embeddings=8, embedding_dim=4, hidden=8, residual_hidden=4, downsamples=2)
    with pytest.raises(ShapeError, match=r"VQVAE.*6x8.*multiples of 2\^downsamples = 4"):
        model(np.zeros((1, 6, 8, 1), np.float32))
    with pytest.raises(ShapeError, match=r"VQVAE.*\(N, H, W, 1\)"):
        model(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ShapeError, match=r"VQVAE\.decode.*\(N, h, w, 4\)"):
        model.decode(np.zeros((1, 2, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"VectorQuantizer.*\[0, 8\)"):
        model.decode_indices(np.full((1, 2, 2), 8))
    with pytest.raises(ValueError, match="VQVAE.sample: the prior must model 8 levels"):
        model.sample(models.GatedPixelCNN(levels=4), (2, 2), 1)
