"""VQGAN training: the adaptive GAN weight against torch autograd on the same last layer
(float64), its clipping, the disc_start gating of both costs, the discriminator's hinge cost
by hand, and a learning test: a tiny VQGAN trained with its GAN term reconstructs the 8x8
digits far better than the mean image, and a transformer prior's samples decode to images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import randn, run_readme_section
from lamina import functional as F
from lamina import models, nn
from lamina.data import load_digits
from lamina.train import VQGANTrainer, adaptive_weight, train_vqgan_prior, vqgan_discriminator_loss, vqgan_loss


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _perturb(module, seed=3, scale=0.2):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


def _tiny():
    return models.vqgan_tiny(base_channels=4, z_channels=4, num_embeddings=8, embedding_dim=3, groups=2)


def _decoder_features(model, quantized):
    """The input of the decoder's last convolution (the steps of VQGAN.decode)."""
    h = model.decoder_in(model.post_quant_conv(quantized))
    for layer in model.decoder_mid:
        h = layer(h)
    for stage in model.up:
        for layer in stage:
            h = layer(h)
    return F.silu(model.decoder_norm(h))


def _torch_conv(x, layer, padding):
    w = torch.tensor(layer.weight.numpy()).permute(0, 3, 1, 2)
    return TF.conv2d(x, w, torch.tensor(layer.bias.numpy()), padding=padding)


@pytest.mark.parametrize("gan", ["hinge", "vanilla"])
def test_adaptive_weight_matches_torch_gradient_norms(float64, gan):
    model, critic = _tiny(), nn.Conv2D(1, 3, padding=1)
    _perturb(model)
    x = randn(2, 4, 4, 1, seed=1)
    critic(x)
    loss = vqgan_loss(model, critic, x, step=5, disc_start=5, disc_weight=0.7, gan=gan)
    features = _decoder_features(model, model.encode(x).quantized).numpy()
    last = model.decoder_out
    weight = torch.tensor(last.weight.numpy(), requires_grad=True)
    x_hat = TF.conv2d(torch.tensor(features).permute(0, 3, 1, 2), weight.permute(0, 3, 1, 2),
                      torch.tensor(last.bias.numpy()), padding=1)
    rec = (x_hat - torch.tensor(x).permute(0, 3, 1, 2)).abs().mean()
    logits = _torch_conv(x_hat, critic, 1)
    g_loss = -logits.mean() if gan == "hinge" else TF.softplus(-logits).mean()
    rec_grad, = torch.autograd.grad(rec, weight, retain_graph=True)
    gan_grad, = torch.autograd.grad(g_loss, weight)
    expected = (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0, 1e4).item()
    assert loss.adaptive_weight == pytest.approx(0.7 * expected, rel=1e-10)
    assert loss.gan == pytest.approx(g_loss.item(), rel=1e-10) and loss.l1 == pytest.approx(rec.item(), rel=1e-10)
    # the total: L_rec + L_VQ + lambda L_GAN, lambda held constant
    assert loss.total.item() == pytest.approx(loss.l1 + loss.codebook + loss.adaptive_weight * loss.gan, rel=1e-10)


def test_adaptive_weight_is_clipped(float64):
    w = lamina.tensor(randn(3, 2), requires_grad=True)
    assert adaptive_weight(1e3 * w.sum(), 0.0 * w.sum(), w) == 1e4          # ||g_rec|| / 1e-4 > 1e4
    assert adaptive_weight(w.sum(), 2.0 * w.sum(), w) == pytest.approx(1 / (2 + 1e-4 / np.sqrt(6)), rel=1e-12)
    with pytest.raises(TypeError, match="adaptive_weight: last_layer"):
        adaptive_weight(w.sum(), w.sum(), lamina.tensor(np.ones(2)))


def test_disc_start_gates_the_gan_terms(float64):
    model, critic = _tiny(), nn.Conv2D(1, 3, padding=1)
    _perturb(model)
    x = randn(2, 4, 4, 1, seed=2)
    critic(x)
    before = vqgan_loss(model, critic, x, step=9, disc_start=10)
    assert before.disc_factor == 0 and before.adaptive_weight == 0 and before.gan == 0
    assert before.total.item() == pytest.approx(before.l1 + before.codebook, rel=1e-12)
    before.total.backward()
    assert all(p.grad is None or not np.any(p.grad) for p in critic.parameters())
    fake = model(x).reconstruction
    assert vqgan_discriminator_loss(critic, x, fake, step=9, disc_start=10).item() == 0.0
    after = vqgan_loss(model, critic, x, step=10, disc_start=10)
    assert after.disc_factor == 1 and after.adaptive_weight > 0
    assert after.total.item() == pytest.approx(after.l1 + after.codebook + after.adaptive_weight * after.gan,
                                               rel=1e-10)
    # hinge by hand: (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2
    real, made = critic(x).numpy(), critic(fake).numpy()
    expected = 0.5 * (np.maximum(1 - real, 0).mean() + np.maximum(1 + made, 0).mean())
    assert vqgan_discriminator_loss(critic, x, fake, step=10, disc_start=10).item() == pytest.approx(expected,
                                                                                                     rel=1e-12)
    trainer = VQGANTrainer(model, critic, disc_start=100)
    start = [p.numpy().copy() for p in critic.parameters()]
    trainer.train_step(x)
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(start, critic.parameters()))
    with pytest.raises(ValueError, match="gan must be one of"):
        vqgan_loss(model, critic, x, gan="wgan")


def test_perceptual_term_is_the_weighted_mean_lpips(float64):
    model = _tiny()
    _perturb(model)
    lamina.backend.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2D(4, 3, padding=1, name="0"), nn.ReLU(name="1"))
    lpips = models.LPIPS(backbone, layers=("1",), channels=(4,))
    x = randn(2, 4, 4, 1, seed=3)
    loss = vqgan_loss(model, None, x, perceptual=lpips, perceptual_weight=0.5, disc_start=1)
    distances = lpips(x, model(x).reconstruction).numpy()
    assert loss.perceptual == pytest.approx(distances.mean(), rel=1e-12) and loss.perceptual > 0
    assert loss.total.item() == pytest.approx(loss.l1 + 0.5 * loss.perceptual + loss.codebook, rel=1e-12)


def _digits(n):
    x, _ = load_digits(8)
    return (x[:n].astype(np.float32) / 255.0) * 2 - 1          # in [-1, 1]


def test_tiny_vqgan_learns_digits_and_prior_samples_decode():
    lamina.backend.manual_seed(0)
    x = _digits(256)
    model = models.vqgan_tiny(base_channels=8, z_channels=8, num_embeddings=32, embedding_dim=8)
    critic = models.PatchGANDiscriminator(ndf=8, n_layers=1, norm=None)
    trainer = VQGANTrainer(model, critic, disc_start=100, disc_weight=0.1, lr=4e-3)
    history = trainer.fit(x, epochs=9, batch_size=16, seed=0)
    with lamina.no_grad():
        out = model(x)
    l1 = np.abs(out.reconstruction.numpy() - x).mean()
    baseline = np.abs(x - x.mean(axis=0)).mean()
    # measured: l1 0.204 / 0.201 / 0.182 against the mean image's 0.384 (seeds 0, 1, 2); prior 2.98 / 3.06 / 3.09
    # nats against log 32 = 3.47
    assert l1 < 0.65 * baseline, (l1, baseline)
    assert max(history["adaptive_weight"][100:]) > 0 and min(history["adaptive_weight"][:100]) == 0
    assert out.perplexity > 8
    prior = models.VQGANTransformer(model, (4, 4), hidden_size=32, num_layers=1, num_heads=2)
    losses = train_vqgan_prior(prior, x, epochs=3, batch_size=64, lr=3e-3, seed=0)
    assert np.mean(losses[-3:]) < np.log(32)               # below the uniform prior's cross-entropy
    images = prior.sample_images(6, seed=0)
    assert images.shape == (6, 8, 8, 1) and np.isfinite(images.numpy()).all()
    assert len(np.unique(prior.sample_indices(6, seed=1))) > 1


def test_readme_section():
    output, _ = run_readme_section("VQGAN")
    assert "reconstruction (4, 8, 8, 1)" in output and "samples (2, 8, 8, 1)" in output
