"""BigGAN pieces: hinge costs and orthogonal regularisation against torch rewrites, the
truncation sampler's distribution, the projection head by hand, the networks' shapes and
checks, a class-conditional learning run on tiny two-class images, and the README example."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.stats
import torch

import lamina
from helpers import compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina import models, nn, optim
from lamina.errors import ShapeError


# -- hinge costs and orthogonal regularisation ---------------------------------------------
def test_hinge_costs_equal_torch_rewrites():
    real, fake = randn(5, 1, seed=1) * 1.5, randn(7, 1, seed=2) * 1.5
    compare_with_torch(F.hinge_d_loss,
                       lambda r, f: torch.relu(1 - r).mean() + torch.relu(1 + f).mean(), real, fake,
                       dtype=np.float64)
    compare_with_torch(F.hinge_g_loss, lambda f: -f.mean(), fake, dtype=np.float64)


def torch_orthogonal_regularization(weight, beta, units_first):
    """BigGAN's reference form: W as (units, -1), beta * ||W W^T (.) (1 - I)||_F^2."""
    w = weight.reshape(weight.shape[0], -1) if units_first else weight.T
    gram = w @ w.T
    return beta * ((gram * (1 - torch.eye(gram.shape[0], dtype=gram.dtype))) ** 2).sum()


@pytest.mark.parametrize("shape,units_first", [((6, 4), False), ((5, 3, 3, 2), True)])
def test_orthogonal_regularization_equals_a_torch_rewrite(shape, units_first):
    compare_with_torch(lambda w: models.orthogonal_regularization(w, beta=0.3),
                       lambda w: torch_orthogonal_regularization(w, 0.3, units_first), randn(*shape, seed=3),
                       dtype=np.float64)


def test_orthogonal_regularization_sums_weights_skips_vectors_and_vanishes_on_orthogonal_filters():
    dense, conv, bias = randn(6, 4, seed=4), randn(5, 3, 3, 2, seed=5), randn(4, seed=6)
    tensors = [lamina.tensor(a, dtype=np.float64) for a in (dense, conv, bias)]
    together = models.orthogonal_regularization(tensors, beta=1.0).item()
    apart = sum(models.orthogonal_regularization(t, beta=1.0).item() for t in tensors[:2])
    assert together == pytest.approx(apart, rel=1e-12) and together > 0
    columns = np.linalg.qr(randn(6, 4, seed=7))[0] * np.array([1.0, 2.0, 3.0, 0.5])   # orthogonal, any norms
    penalty = models.orthogonal_regularization(lamina.tensor(columns, dtype=np.float64)).item()
    assert penalty == pytest.approx(0.0, abs=1e-20)


# -- truncation trick ----------------------------------------------------------------------
def test_truncated_normal_stays_inside_and_keeps_the_gaussian_shape():
    threshold = 2.0
    values = models.truncated_normal((200, 20), threshold, rng=0, dtype=np.float64)
    assert values.shape == (200, 20) and np.abs(values).max() <= threshold
    reference = scipy.stats.truncnorm(-threshold, threshold)
    assert scipy.stats.kstest(values.ravel(), reference.cdf).pvalue > 0.01
    # the test has power: a uniform draw over the same interval is told apart at once
    uniform = np.random.default_rng(0).uniform(-threshold, threshold, values.size)
    assert scipy.stats.kstest(uniform, reference.cdf).pvalue < 1e-6
    assert models.truncated_normal((3,), 0.5).dtype == np.float32


# -- projection discriminator --------------------------------------------------------------
def test_projection_head_equals_a_hand_computation():
    lamina.set_default_dtype(np.float64)
    head = models.ProjectionHead(3, 4, spectral_norm=False)
    features, ids = randn(5, 4, seed=8), np.array([0, 2, 1, 2, 0])
    head(features, ids)
    psi_w, psi_b, table = randn(4, 1, seed=9), randn(1, seed=10), randn(3, 4, seed=11)
    head.psi.weight.data, head.psi.bias.data, head.embed.weight.data = psi_w, psi_b, table
    expected = [[sum(features[i, c] * psi_w[c, 0] for c in range(4)) + psi_b[0]
                 + sum(table[ids[i], c] * features[i, c] for c in range(4))] for i in range(5)]
    np.testing.assert_allclose(head(features, ids).numpy(), expected, rtol=1e-12)


def test_projection_head_normalises_its_maps_and_checks_class_ids():
    head = models.ProjectionHead(3, 4)
    head.eval()
    head(np.ones((2, 4), np.float32), np.array([0, 1]))
    for wrapper in (head.psi, head.embed):
        assert isinstance(wrapper, nn.SpectralNorm)
        assert np.linalg.norm(wrapper.layer.weight.numpy(), 2) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        head(np.ones((2, 4), np.float32), np.array([0, 3]))
    with pytest.raises(ShapeError, match=r"class_ids must be integers of shape \(2,\)"):
        head(np.ones((2, 4), np.float32), np.array([0.0, 1.0]))


# -- the networks --------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_presets_give_images_and_logits(resolution):
    generator, discriminator = models.biggan_small(3, resolution, channels=3)
    ids = np.array([0, 2])
    with lamina.no_grad():
        images = generator(models.truncated_normal((2, generator.z_dim), 1.0, rng=0), ids)
        logits = discriminator(images, ids)
    assert images.shape == (2, resolution, resolution, 3) and np.abs(images.numpy()).max() <= 1.0
    assert logits.shape == (2, 1) and np.isfinite(logits.numpy()).all()


def test_each_up_block_reads_its_own_chunk_of_z_and_the_class():
    generator = models.BigGANGenerator(2, 16, z_dim=12, widths=(16, 8, 8), attention_resolution=16)
    generator.eval()
    z, ids = models.truncated_normal((1, 12), 1.0, rng=1), np.array([1])
    generator(z, ids)
    with lamina.no_grad():
        base = generator(z, ids).numpy()
        for chunk in range(3):
            moved = z.copy()
            moved[0, 4 * chunk:4 * chunk + 4] += 1.0
            assert not np.allclose(generator(moved, ids).numpy(), base), chunk
        assert not np.allclose(generator(z, np.array([0])).numpy(), base)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="z_dim .* must split into 2 equal chunks"):
        models.BigGANGenerator(2, 8, z_dim=7)
    with pytest.raises(ValueError, match="widths must have 3 entries"):
        models.BigGANGenerator(2, 16, z_dim=12)
    with pytest.raises(ValueError, match="attention_resolution must be None or one of"):
        models.BigGANDiscriminator(2, 8, attention_resolution=8)
    with pytest.raises(ShapeError, match=r"images of shape \(batch, 8, 8, 1\)"):
        models.BigGANDiscriminator(2)(np.zeros((1, 8, 8, 3), np.float32), np.array([0]))


# -- learning ------------------------------------------------------------------------------
def bars_and_blobs(labels, rng):
    """8x8 images in [-1, 1]: class 0 a vertical bar two pixels wide, class 1 a Gaussian blob."""
    images = -np.ones((len(labels), 8, 8, 1), np.float32)
    rows, cols = np.mgrid[0:8, 0:8]
    for i, label in enumerate(labels):
        if label == 0:
            column = rng.integers(0, 7)
            images[i, :, column:column + 2, 0] = 1.0
        else:
            cy, cx = rng.uniform(2, 5, 2)
            images[i, :, :, 0] = 2 * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / 2.0) - 1
    return images


def _classifier(rng):
    labels = rng.integers(0, 2, 256)
    images = bars_and_blobs(labels, rng)
    classifier = nn.Sequential(nn.Flatten(), nn.Dense(16, activation="relu"), nn.Dense(2))
    classifier(images[:1])
    optimizer = optim.Adam(classifier.parameters(), lr=1e-2)
    for _ in range(60):
        batch = rng.integers(0, 256, 64)
        loss = F.cross_entropy(classifier(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier


def _accuracy(generator, classifier, rng, n=200):
    labels = np.arange(n) % 2
    generator.eval()
    with lamina.no_grad():
        samples = generator(rng.standard_normal((n, generator.z_dim)).astype(np.float32), labels)
        accuracy = float((classifier(samples).numpy().argmax(axis=1) == labels).mean())
    generator.train()
    return accuracy


def test_biggan_learns_to_draw_the_requested_class():
    """Hinge-loss training of the 8x8 preset on bars vs blobs: the samples of each requested
    class are recognised by a classifier trained on the real images only."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    classifier = _classifier(rng)
    generator, discriminator = models.biggan_small(2)
    before = _accuracy(generator, classifier, np.random.default_rng(99))       # builds the generator
    discriminator(bars_and_blobs([0, 1], rng), np.array([0, 1]))                # builds the discriminator
    g_opt = optim.Adam(generator.parameters(), lr=2e-3, betas=(0.0, 0.999))
    d_opt = optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.0, 0.999))
    for _ in range(70):
        labels = rng.integers(0, 2, 32)
        with lamina.no_grad():
            fake = generator(rng.standard_normal((32, 16)).astype(np.float32), labels)
        d_loss = F.hinge_d_loss(discriminator(bars_and_blobs(labels, rng), labels), discriminator(fake, labels))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        labels = rng.integers(0, 2, 32)
        g_loss = F.hinge_g_loss(discriminator(generator(rng.standard_normal((32, 16)).astype(np.float32), labels),
                                              labels))
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    after = _accuracy(generator, classifier, np.random.default_rng(99))
    assert before < 0.7 and after >= 0.85, (before, after, time.perf_counter() - start)


# -- README ------------------------------------------------------------------------------
def test_readme_example_runs():
    printed, names = run_readme_section("Class-conditional GANs: SAGAN and BigGAN")
    lines = printed.split("\n")
    assert lines[0] == "(4, 8, 8, 1) (4, 1)"
    assert float(lines[1]) > 0 and lines[2] == "True"
    assert isinstance(names["generator"], models.BigGANGenerator)
