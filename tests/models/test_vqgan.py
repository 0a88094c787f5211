"""VQGAN: the residual and non-local blocks against float64 torch rewrites of the published
formulas (outputs, input and parameter gradients), float64 gradient checks, the encoder and
decoder shapes, the l2-normalised codes, the straight-through and codebook gradients, the
checks on bad input, saving, and the transformer prior's shapes and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from zoo_checks import random_inputs

import lamina
from helpers import check_gradients, compare_layer_with_torch, randn
from lamina import functional as F
from lamina import models, nn
from lamina.errors import ShapeError
from lamina.train import vqgan_loss


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _perturb(module, seed=3, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


def _tiny(**options):
    settings = {"base_channels": 4, "z_channels": 4, "num_embeddings": 8, "embedding_dim": 3, "groups": 2}
    return models.vqgan_tiny(**{**settings, **options})


# -- torch rewrites of the published formulas --------------------------------------------------
def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def _conv(x, w, b, padding):
    """NHWC x, lamina's (K, f, f, C) weight."""
    return _nhwc(TF.conv2d(_nchw(x), w.permute(0, 3, 1, 2), b, padding=padding))


def _gn(x, groups, gamma, beta):
    return _nhwc(TF.group_norm(_nchw(x), groups, gamma, beta, eps=1e-5))


def torch_res_block(x, g1, b1, w1, c1, g2, b2, w2, c2, *skip, groups):
    """h = conv3(swish(GN(x))), h = conv3(swish(GN(h))), y = skip(x) + h."""
    h = _conv(TF.silu(_gn(x, groups, g1, b1)), w1, c1, 1)
    h = _conv(TF.silu(_gn(h, groups, g2, b2)), w2, c2, 1)
    return (_conv(x, *skip, 0) if skip else x) + h


def torch_non_local(x, gamma, beta, wq, bq, wk, bk, wv, bv, wp, bp, groups):
    """y = x + proj(softmax(q k^T / sqrt(C)) v) over the H W positions, q, k, v of GN(x)."""
    n, height, width, c = x.shape
    h = _gn(x, groups, gamma, beta).reshape(n, height * width, c)
    q, k, v = (h @ w.reshape(c, c).T + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    attention = torch.softmax(q @ k.transpose(1, 2) / c ** 0.5, dim=-1)
    return x + ((attention @ v) @ wp.reshape(c, c).T + bp).reshape(x.shape)


def _res_params(block):
    params = [block.norm1.weight, block.norm1.bias, block.conv1.weight, block.conv1.bias, block.norm2.weight,
              block.norm2.bias, block.conv2.weight, block.conv2.bias]
    return params + ([block.skip.weight, block.skip.bias] if "skip" in block._modules else [])


@pytest.mark.parametrize("c_in", [4, 6])
def test_res_block_matches_torch(float64, c_in):
    x = randn(2, 3, 4, c_in, seed=1)
    block = models.VQGANResBlock(4, groups=2)
    block(x)
    _perturb(block)
    assert ("skip" in block._modules) == (c_in != 4)
    compare_layer_with_torch(block, _res_params(block), lambda t, *p: torch_res_block(t, *p, groups=2), x)


def test_non_local_block_matches_torch(float64):
    x = randn(2, 3, 2, 4, seed=2)
    block = models.NonLocalBlock(groups=2)
    block(x)
    _perturb(block)
    params = [block.norm.weight, block.norm.bias] + [p for part in ("q", "k", "v", "proj")
                                                      for p in (getattr(block, part).weight, getattr(block, part).bias)]
    compare_layer_with_torch(block, params, lambda t, *p: torch_non_local(t, *p, groups=2), x)


def test_blocks_gradient_check(float64):
    res, attention = models.VQGANResBlock(4, groups=2), models.NonLocalBlock(groups=2)
    x = randn(1, 2, 3, 2, seed=3)
    res(x)
    attention(randn(1, 2, 3, 4))
    _perturb(res)
    _perturb(attention)
    assert check_gradients(lambda t: attention(res(t)), x)


def test_decoder_gradient_check(float64):
    model = _tiny()
    _perturb(model, scale=0.1)
    codes = randn(1, 2, 2, 3, seed=4)
    assert check_gradients(lambda t: model.decode(t), codes)


def test_shapes_and_code_indices():
    model = _tiny(channel_multipliers=(1, 1, 2))
    out = model(random_inputs((2, 8, 12, 1), 0))
    assert model.factor == 4 and model.latent_shape((8, 12)) == (2, 3)
    assert out.reconstruction.shape == (2, 8, 12, 1) and out.indices.shape == (2, 2, 3)
    assert out.indices.min() >= 0 and out.indices.max() < 8 and 1 <= out.perplexity <= 8
    assert model.decode_indices(out.indices).shape == (2, 8, 12, 1)
    np.testing.assert_allclose(model.decode_indices(out.indices).numpy(), out.reconstruction.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_l2_normalised_codes_are_the_nearest_in_cosine(float64):
    model = _tiny(l2_normalize=True)
    z = randn(2, 2, 2, 3, seed=5)
    out = model.quantize(lamina.tensor(z))
    table = model.quantizer.embeddings.numpy()
    unit_z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    unit_table = table / np.linalg.norm(table, axis=-1, keepdims=True)
    np.testing.assert_array_equal(out.indices, (unit_z @ unit_table.T).argmax(-1))
    np.testing.assert_allclose(np.linalg.norm(out.quantized.numpy(), axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(model.codebook().numpy(), unit_table, rtol=1e-12)


def _latents(model, x):
    """The encoder's output z before quantisation (the steps of VQGAN.encode)."""
    h = model.encoder_in(x)
    for stage in model.down:
        for layer in stage:
            h = layer(h)
    for layer in model.encoder_mid:
        h = layer(h)
    return model.quant_conv(model.encoder_out(F.silu(model.encoder_norm(h))))


def test_codebook_gets_only_the_codebook_term_and_the_encoder_the_straight_through_gradient(float64):
    model = _tiny(beta=0.25)
    _perturb(model, scale=0.2)
    x = randn(2, 4, 4, 1, seed=6)
    loss = vqgan_loss(model, None, x, step=0, disc_start=10)
    loss.total.backward()
    z = _latents(model, lamina.tensor(x)).numpy()
    table = model.quantizer.embeddings.numpy()
    indices = model.encode(x).indices
    expected = np.zeros_like(table)                        # d/de of mean ||sg(z) - e_k||^2 alone
    np.add.at(expected, indices.reshape(-1), -2 * (z - table[indices]).reshape(-1, 3) / z.size)
    np.testing.assert_allclose(model.quantizer.embeddings.grad, expected, rtol=1e-10, atol=1e-14)
    model.zero_grad()
    F.l1_loss(model(x).reconstruction, lamina.tensor(x)).backward()    # no quantiser loss at all
    assert np.abs(model.encoder_in.weight.grad).sum() > 0             # straight through to the encoder
    assert model.quantizer.embeddings.grad is None or not np.any(model.quantizer.embeddings.grad)


def test_bad_input_is_reported():
    model = _tiny()
    with pytest.raises(ShapeError, match="multiples of the downsampling factor 2"):
        model(random_inputs((1, 5, 4, 1), 0))
    with pytest.raises(ShapeError, match=r"expected NHWC \(N, H, W, 1\)"):
        model(random_inputs((1, 4, 4, 3), 0))
    with pytest.raises(ShapeError, match="VQGANResBlock.*multiples of groups=4"):
        models.VQGANResBlock(6, groups=4)(random_inputs((1, 2, 2, 4), 0))
    with pytest.raises(ShapeError, match="NonLocalBlock.*4-D NHWC"):
        models.NonLocalBlock(groups=1)(random_inputs((2, 4), 0))
    with pytest.raises(ValueError, match="code indices must be integers in \\[0, 8\\)"):
        model.decode_indices(np.full((1, 2, 2), 8))


def test_config_and_save_load(tmp_path):
    model = _tiny(l2_normalize=True)
    _perturb(model, scale=0.05)
    x = random_inputs((2, 4, 4, 1), 1)
    model.eval()
    expected = model(x)
    clone = nn.layer_from_config(nn.layer_to_config(model))
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    lamina.save(model, tmp_path / "vqgan.safetensors")
    loaded = lamina.load(tmp_path / "vqgan.safetensors")
    loaded.eval()
    out = loaded(x)
    np.testing.assert_array_equal(out.reconstruction.numpy(), expected.reconstruction.numpy())
    np.testing.assert_array_equal(out.indices, expected.indices)
    assert loaded.l2_normalize and loaded.get_config() == model.get_config()


def test_prior_scores_loss_sampling_and_save_load(tmp_path):
    vq = _tiny()
    prior = models.VQGANTransformer(vq, (2, 2), hidden_size=8, num_layers=1, num_heads=2)
    indices = np.random.default_rng(0).integers(0, 8, (3, 2, 2))
    scores = prior(indices)
    assert scores.shape == (3, 4, 8)
    # the scores of position i do not see code i or later ones (causal)
    changed = indices.copy()
    changed[:, 1, 1] = (changed[:, 1, 1] + 1) % 8
    np.testing.assert_allclose(prior(changed).numpy(), scores.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(prior.loss(indices).item())
    drawn = prior.sample_indices(5, seed=0)
    assert drawn.shape == (5, 2, 2) and drawn.min() >= 0 and drawn.max() < 8
    np.testing.assert_array_equal(prior.sample_indices(5, seed=0), drawn)
    assert prior.sample_images(2, seed=1).shape == (2, 4, 4, 1)
    with pytest.raises(ShapeError, match=r"expected integer index maps \(N, 2, 2\)"):
        prior(np.zeros((1, 3, 3), dtype=np.int64))
    lamina.save(prior, tmp_path / "prior.safetensors")
    twin = lamina.load(tmp_path / "prior.safetensors")
    np.testing.assert_array_equal(twin(indices).numpy(), scores.numpy())
    np.testing.assert_array_equal(twin.vqgan.decode_indices(indices).numpy(), vq.decode_indices(indices).numpy())
