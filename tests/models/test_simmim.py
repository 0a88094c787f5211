"""SimMIM: the random mask-patch masking (ratio, block shapes, seeds), the masked-pixel L1
against a NumPy hand computation and its blindness to unmasked pixels, the prediction head
(1x1 convolution and pixel shuffle) against torch, the mask token, saving, and a learning test
on the digits against predicting the mean pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import perturb_parameters, randn, shuffled_digits
from lamina import models, optim
from lamina.errors import ShapeError


def test_masks_cover_the_ratio_in_whole_mask_patches_and_are_reproducible():
    masks = models.simmim_masks(20, 192, 16, rng=0)                 # the paper's 192 / 32 / ratio 0.6 setting
    assert masks.shape == (20, 144)
    grid = masks.reshape(20, 6, 2, 6, 2)                             # 6 x 6 mask patches of 2 x 2 encoder patches
    assert np.all(grid.all(axis=(2, 4)) == grid.any(axis=(2, 4)))    # each mask patch all in or all out
    assert math.ceil(0.6 * 36) == 22 and np.all(grid.all(axis=(2, 4)).sum(axis=(1, 2)) == 22)
    np.testing.assert_array_equal(masks, models.simmim_masks(20, 192, 16, rng=0))
    assert not np.array_equal(masks, models.simmim_masks(20, 192, 16, rng=1))
    freq = models.simmim_masks(2000, 8, 2, 2, 0.6, rng=3).mean(axis=0)
    assert np.all(np.abs(freq - 10 / 16) < 0.05)                     # every place equally likely
    with pytest.raises(ValueError, match="simmim_masks: the mask patch size 12 must be a multiple of the patch "
                                         "size 8"):
        models.simmim_masks(1, 96, 8, 12)


def test_loss_is_the_l1_of_the_masked_pixels_only(float64):
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((2, 4, 4, 3)), rng.standard_normal((2, 4, 4, 3))
    masks = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], bool)             # on the 2 x 2 grid of 2 x 2 patches
    pixels = np.zeros((2, 4, 4), bool)
    for n, p in zip(*np.nonzero(masks)):
        pixels[n, 2 * (p // 2):2 * (p // 2) + 2, 2 * (p % 2):2 * (p % 2) + 2] = True
    expected = np.abs(pred - target)[pixels].sum() / (3 * pixels.sum() + 1e-5)
    p = lamina.tensor(pred, requires_grad=True)
    loss = models.simmim_loss(p, target, masks, 2)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    loss.backward()
    assert np.all(p.grad[~pixels] == 0) and np.all(p.grad[pixels] != 0)
    other = target.copy()
    other[~pixels] += 10.0                                            # change every unmasked target pixel
    np.testing.assert_allclose(models.simmim_loss(pred, other, masks, 2).numpy(), expected, rtol=1e-12)
    with pytest.raises(ShapeError, match="simmim_loss: masks of shape \\(2, 3\\)"):
        models.simmim_loss(pred, target, np.ones((2, 3), bool), 2)


def test_head_is_a_1x1_convolution_then_a_pixel_shuffle(float64):
    model = models.SimMIM(2, 3, 8, 1, 2, 16)
    x = randn(2, 4, 6, 3, seed=1)
    out = model(lamina.tensor(x))
    assert out.shape == (2, 4, 6, 3)
    tokens = model.encoder(lamina.tensor(x)).numpy()[:, 1:].reshape(2, 2, 3, 8)
    weight = torch.tensor(model.decoder.weight.numpy()).permute(0, 3, 1, 2)   # (12, 1, 1, 8) -> OIHW
    bias = torch.tensor(model.decoder.bias.numpy())
    conv = torch.nn.functional.conv2d(torch.tensor(tokens).permute(0, 3, 1, 2), weight, bias)
    expected = torch.nn.functional.pixel_shuffle(conv, 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_masked_pixels_reach_the_model_only_through_the_mask_token(float64):
    model = models.SimMIM(2, 1, 8, 1, 2, 16)
    model.build((None, 8, 8, 1))
    perturb_parameters(model, scale=0.1)
    x = randn(2, 8, 8, 1, seed=2)
    masks = models.simmim_masks(2, 8, 2, 4, 0.5, rng=0)
    pixels = masks.reshape(2, 4, 4).repeat(2, 1).repeat(2, 2)
    changed = x.copy()
    changed[pixels] += 3.0
    out = model(lamina.tensor(x), masks).numpy()
    np.testing.assert_allclose(model(lamina.tensor(changed), masks).numpy(), out, rtol=1e-12)
    assert np.abs(model(lamina.tensor(changed)).numpy() - out).max() > 1e-3


def test_config_and_save_load(tmp_path):
    model = models.SimMIM(2, 1, 8, 2, 2, 16)
    model.build((None, 8, 8, 1))
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 8, 8, 1), 8), tmp_path / "simmim.lamina")
    masks = models.simmim_masks(2, 8, 2, 4, rng=0)
    x = random_inputs((2, 8, 8, 1), 9)
    clone = lamina.load(tmp_path / "simmim.lamina")
    np.testing.assert_array_equal(clone.loss(x, masks).numpy(), model.loss(x, masks).numpy())


def test_masked_pixel_l1_falls_well_below_predicting_the_mean_pixel():
    """SimMIM on the 8x8 digits: 2x2 encoder patches, 2x2 mask patches, 60% masked; the L1 on
    the masked pixels of held-out digits against predicting the training set's mean pixel."""
    rng = np.random.default_rng(0)
    x, _ = shuffled_digits(8, rng)
    train, test = x[:1200], x[1200:1500]
    lamina.manual_seed(0)
    model = models.SimMIM(2, 1, 32, 2, 4, 64)
    model.build((None, 8, 8, 1))
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        rows = rng.integers(0, 1200, 64)
        loss = model.loss(train[rows], models.simmim_masks(64, 8, 2, 2, 0.6, rng=rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    masks = models.simmim_masks(300, 8, 2, 2, 0.6, rng=100)
    with lamina.no_grad():
        l1 = float(model.loss(test, masks).numpy())
    mean = float(models.simmim_loss(np.full_like(test, train.mean()), test, masks, 2).numpy())
    # measured: 0.197 / 0.192 / 0.195 against the mean pixel's 0.337 / 0.334 / 0.337 (seeds 0, 1, 2)
    assert l1 < 0.75 * mean
