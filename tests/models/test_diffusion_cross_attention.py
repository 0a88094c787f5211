"""Cross-attention text conditioning of diffusion U-Nets: the spatial transformer block against
a float64 torch rewrite and by gradcheck, its identity at initialisation, the U-Net with and
without attention, the context path of DiffusionModel (condition dropout, classifier-free
guidance), saving, LatentDiffusion, learning bars from two-token descriptions, and the README."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch_diffusion as ref

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina.errors import ShapeError
from lamina.models import (
    AutoencoderKL,
    CrossAttentionUNet,
    DenoisingUNet,
    DiffusionModel,
    LatentDiffusion,
    SpatialCrossTransformer,
)
from lamina.nn import functional_call
from lamina.optim import Adam


def _randomized(model, seed=0, scale=0.4):
    """``model`` in float64 with every weight drawn at random (the zero projections too)."""
    model.double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return model


def _weights(model):
    return [n for n, _ in model.named_parameters()], [p.numpy().copy() for _, p in model.named_parameters()]


# -- the block, rewritten in torch --------------------------------------------------------------------
def torch_attention(p: dict, name: str, x, context, heads: int):
    source = x if context is None else context
    q, k, v = (source_ @ p[f"{name}.to_{s}.weight"] for s, source_ in (("q", x), ("k", source), ("v", source)))
    n, length, dim = q.shape

    def split(a):
        return a.reshape(a.shape[0], a.shape[1], heads, dim // heads).transpose(1, 2)

    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
    out = (weights @ split(v)).transpose(1, 2).reshape(n, length, dim)
    return ref.dense(p, f"{name}.to_out", out)


def torch_spatial_transformer(p: dict, x, context, heads: int, groups: int, depth: int):
    n, h, w, c = x.shape
    normed = TF.group_norm(x.permute(0, 3, 1, 2), math.gcd(groups, c), p["norm.weight"], p["norm.bias"], eps=1e-6)
    tokens = ref.dense(p, "proj_in", normed.permute(0, 2, 3, 1).reshape(n, h * w, c))
    for k in range(depth):
        name = f"layers.{k}"

        def norm(i, a, name=name):
            return TF.layer_norm(a, (c,), p[f"{name}.norm{i}.weight"], p[f"{name}.norm{i}.bias"], eps=1e-5)

        tokens = tokens + torch_attention(p, f"{name}.self_attention", norm(1, tokens), None, heads)
        tokens = tokens + torch_attention(p, f"{name}.cross_attention", norm(2, tokens), context, heads)
        a, gate = ref.dense(p, f"{name}.ff_in", norm(3, tokens)).chunk(2, dim=-1)
        tokens = tokens + ref.dense(p, f"{name}.ff_out", a * TF.gelu(gate))
    return x + ref.dense(p, "proj_out", tokens).reshape(n, h, w, c)


def _block(depth=2):
    block = SpatialCrossTransformer(4, 3, num_heads=2, depth=depth, groups=2)
    x, context = randn(2, 3, 2, 4, seed=1), randn(2, 5, 3, seed=2)
    block(x, context)
    return _randomized(block), x, context


def test_spatial_transformer_matches_torch_in_values_and_gradients():
    block, x, context = _block()
    names, weights = _weights(block)

    def ours(x, context, *params):
        return functional_call(block, dict(zip(names, params)), x, context)

    def theirs(x, context, *params):
        return torch_spatial_transformer(dict(zip(names, params)), x, context, heads=2, groups=2, depth=2)

    compare_with_torch(ours, theirs, x, context, *weights, dtype=np.float64)


def test_spatial_transformer_gradcheck():
    block, x, context = _block(depth=1)
    names, weights = _weights(block)
    chosen = [names.index(n) for n in ("layers.0.cross_attention.to_k.weight", "proj_out.weight")]

    def f(x, context, k_weight, out_weight):
        values = {names[chosen[0]]: k_weight, names[chosen[1]]: out_weight}
        return functional_call(block, values, x, context)

    assert check_gradients(f, x[:1, :2], context[:1, :3], weights[chosen[0]], weights[chosen[1]])


def test_zero_projection_makes_a_new_block_the_identity():
    block = SpatialCrossTransformer(8, 5, num_heads=4, groups=4)
    x, context = randn(2, 4, 4, 8, seed=3).astype(np.float32), randn(2, 3, 5, seed=4).astype(np.float32)
    out = block(x, context)
    np.testing.assert_array_equal(out.numpy(), x)
    assert not np.array_equal(block.proj_in(block.norm(lamina.tensor(x))).numpy(), 0 * x)   # the inside is live


def test_block_errors():
    with pytest.raises(ValueError, match="num_heads=3 must divide channels=4"):
        SpatialCrossTransformer(4, 3, num_heads=3)
    block = SpatialCrossTransformer(4, 3, groups=2)
    with pytest.raises(ShapeError, match=r"SpatialCrossTransformer.*context.*expected \(2, length, 3\)"):
        block(np.zeros((2, 2, 2, 4), np.float32), np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ShapeError, match="SpatialCrossTransformer.*NHWC"):
        block(np.zeros((2, 2, 2, 5), np.float32), np.zeros((2, 5, 3), np.float32))


# -- the U-Net -----------------------------------------------------------------------------------------
def _unet_pair(attention_levels):
    """A DenoisingUNet and a CrossAttentionUNet of the same arguments sharing every U-Net weight."""
    plain = DenoisingUNet(4, (1, 2), groups=2, time_dim=6)
    crossed = CrossAttentionUNet(4, (1, 2), groups=2, time_dim=6, context_dim=None if not attention_levels else 3,
                                 attention_levels=attention_levels)
    x, t = randn(2, 4, 4, 1, seed=5).astype(np.float32), np.array([3, 40])
    plain(x, t), crossed(x, t)
    rng = np.random.default_rng(6)
    for p in plain.parameters():
        p.data = (0.4 * rng.standard_normal(p.shape)).astype(np.float32)
    shared = dict(plain.named_parameters())
    for name, param in crossed.named_parameters():
        if name in shared:
            param.data = shared[name].data.copy()
    return plain, crossed, x, t


def test_unet_without_attention_is_the_old_unet_bit_for_bit():
    plain, crossed, x, t = _unet_pair(())
    assert sorted(n for n, _ in crossed.named_parameters()) == sorted(n for n, _ in plain.named_parameters())
    np.testing.assert_array_equal(crossed(x, t).numpy(), plain(x, t).numpy())
    with pytest.raises(ValueError, match="got a context but the net has no context_dim"):
        crossed(x, t, context=np.zeros((2, 1, 3), np.float32))


def test_new_attention_blocks_leave_the_unet_unchanged_and_then_condition_it():
    plain, crossed, x, t = _unet_pair((0, 1))
    context = randn(2, 4, 3, seed=7).astype(np.float32)
    assert len(crossed.down_transformers) == len(crossed.up_transformers) == 2 and "middle_transformer" in \
        crossed._modules
    np.testing.assert_array_equal(crossed(x, t, context=context).numpy(), plain(x, t).numpy())
    for block in (*crossed.down_transformers, *crossed.up_transformers, crossed.middle_transformer):
        block.proj_out.weight.data = np.random.default_rng(8).standard_normal(block.proj_out.weight.shape) \
            .astype(np.float32)
    one, other = crossed(x, t, context=context).numpy(), crossed(x, t, context=-context).numpy()
    assert np.abs(one - other).max() > 1e-3
    null = crossed.null_context(2, 4).numpy()
    np.testing.assert_allclose(crossed(x, t).numpy(), crossed(x, t, context=null).numpy(), rtol=1e-5, atol=1e-6)


def test_unet_gradients_reach_the_context():
    lamina.set_default_dtype(np.float64)
    try:
        unet = CrossAttentionUNet(2, (1, 2), groups=2, time_dim=4, context_dim=3, attention_levels=(1,))
        x, t, context = randn(1, 4, 4, 1, seed=9), np.array([5]), randn(1, 2, 3, seed=10)
        unet(x, t, context=context)
        _randomized(unet, seed=11, scale=0.3)
        assert check_gradients(lambda c: unet(x, t, context=c), context)
    finally:
        lamina.set_default_dtype(np.float32)


def test_unet_errors():
    with pytest.raises(ValueError, match="attention_levels and context_dim go together"):
        CrossAttentionUNet(4, (1, 2), attention_levels=(1,))
    with pytest.raises(ValueError, match=r"attention_levels=\(\) and context_dim=3"):
        CrossAttentionUNet(4, (1, 2), context_dim=3)
    with pytest.raises(ValueError, match=r"attention_levels must be levels in \[0, 2\)"):
        CrossAttentionUNet(4, (1, 2), context_dim=3, attention_levels=(2,))
    unet = CrossAttentionUNet(2, (1, 2), groups=2, context_dim=3, attention_levels=(1,))
    with pytest.raises(ShapeError, match=r"CrossAttentionUNet.*context.*expected \(2, length, 3\)"):
        unet(np.zeros((2, 4, 4, 1), np.float32), np.array([1, 2]), context=np.zeros((1, 4, 3), np.float32))


# -- guidance and condition dropout -------------------------------------------------------------------
def _trained_looking_model():
    lamina.manual_seed(0)
    unet = CrossAttentionUNet(4, (1, 2), groups=2, context_dim=3, attention_levels=(0, 1))
    model = DiffusionModel(unet, schedule="cosine", num_timesteps=20, sample_shape=(4, 4, 1))
    model(np.zeros((1, 4, 4, 1), np.float32), np.zeros(1, np.int64))
    rng = np.random.default_rng(12)
    for p in model.parameters():
        p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(np.float32)
    return model, randn(3, 2, 3, seed=13).astype(np.float32), randn(3, 4, 4, 1, seed=14).astype(np.float32)


def test_guidance_mixes_context_and_null_context_outputs():
    model, context, x = _trained_looking_model()
    steps = np.array([4, 9, 17])
    conditional = model(x, steps, context=context).numpy()
    unconditional = model(x, steps).numpy()
    assert np.abs(conditional - unconditional).max() > 1e-3
    for w in (0.0, 2.5):
        guided = model.guided_output(x, steps, guidance_scale=w, context=context).numpy()
        np.testing.assert_allclose(guided, unconditional + w * (conditional - unconditional), rtol=1e-4, atol=1e-5)


class _FixedContext(lamina.nn.Module):
    """The net with its context given at every call: plain conditional sampling, no guidance."""

    def __init__(self, net, context):
        super().__init__()
        self.inner, self.context = net, context

    def forward(self, x, t):
        return self.inner(x, t, context=self.context)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_guidance_scale_one_is_conditional_and_zero_is_null_context_sampling(method):
    model, context, _ = _trained_looking_model()
    start = randn(3, 4, 4, 1, seed=15).astype(np.float32)

    def sample(model, seed=3, **options):
        lamina.manual_seed(seed)
        return model.sample(3, steps=6, method=method, start=start, **options)

    fixed = DiffusionModel(_FixedContext(model.net, context), schedule=model.schedule, sample_shape=(4, 4, 1))
    np.testing.assert_array_equal(sample(model, context=context, guidance_scale=1.0), sample(fixed))
    null_context = sample(model)
    np.testing.assert_allclose(sample(model, context=context, guidance_scale=0.0), null_context, rtol=1e-4,
                               atol=1e-4)
    assert np.abs(sample(model, context=context, guidance_scale=3.0) - null_context).max() > 1e-2
    one = sample(model, context=context[0], guidance_scale=2.0)     # one sequence for every sample
    np.testing.assert_allclose(one, sample(model, context=np.stack([context[0]] * 3), guidance_scale=2.0),
                               rtol=1e-5, atol=1e-5)
    scheduled = model.sample(3, steps=4, scheduler="DDIMScheduler", start=start, context=context, guidance_scale=0.0)
    np.testing.assert_allclose(scheduled, model.sample(3, steps=4, scheduler="DDIMScheduler", start=start),
                               rtol=1e-4, atol=1e-4)


def test_condition_dropout_swaps_in_the_null_context():
    model, context, x = _trained_looking_model()
    t, noise = np.array([3, 8, 15]), randn(3, 4, 4, 1, seed=16).astype(np.float32)
    model.label_dropout = 1.0
    dropped = model.loss(x, t=t, noise=noise, context=context).item()
    assert dropped == pytest.approx(model.loss(x, t=t, noise=noise).item(), rel=1e-5)
    model.label_dropout = 0.0
    kept = model.loss(x, t=t, noise=noise, context=context).item()
    assert abs(kept - dropped) > 1e-4
    model.label_dropout = 1.0
    model.net.null_token.grad = None
    model.loss(x, t=t, noise=noise, context=context).backward()
    assert np.abs(model.net.null_token.grad).max() > 0          # the null context is learned
    with pytest.raises(ValueError, match="got a context, but the net takes none"):
        DiffusionModel(DenoisingUNet(2, (1,), groups=2), num_timesteps=30).loss(x, context=context)
    with pytest.raises(ShapeError, match=r"DiffusionModel.sample: got a context.*expected \(2, length, dim\)"):
        model.sample(2, context=context)


# -- saving and latent diffusion ----------------------------------------------------------------------
def test_diffusion_model_with_a_cross_attention_unet_saves_and_loads(tmp_path):
    model, context, x = _trained_looking_model()
    lamina.save(model, tmp_path / "model.safetensors")
    twin = lamina.load(tmp_path / "model.safetensors")
    assert type(twin.net) is CrossAttentionUNet and twin.net.attention_levels == (0, 1)
    steps = np.array([1, 2, 3])
    np.testing.assert_array_equal(twin(x, steps, context=context).numpy(), model(x, steps, context=context).numpy())
    np.testing.assert_array_equal(twin(x, steps).numpy(), model(x, steps).numpy())
    fresh = DiffusionModel(CrossAttentionUNet(2, (1,), groups=2, context_dim=3, attention_levels=(0,)),
                           schedule="cosine", num_timesteps=10)
    fresh.loss(x, context=context)                   # built by its first loss, with no labels
    lamina.save(fresh, tmp_path / "fresh.safetensors")
    again = lamina.load(tmp_path / "fresh.safetensors")
    np.testing.assert_array_equal(again(x, steps, context=context).numpy(), fresh(x, steps, context=context).numpy())


def test_latent_diffusion_passes_the_context():
    lamina.manual_seed(1)
    unet = CrossAttentionUNet(4, (1,), groups=2, context_dim=3, attention_levels=(0,))
    ldm = LatentDiffusion(AutoencoderKL(1, 2, channels=(2, 4), groups=2),
                          DiffusionModel(unet, schedule="cosine", num_timesteps=10))
    images, context = randn(2, 4, 4, 1, seed=17).astype(np.float32), randn(2, 3, 3, seed=18).astype(np.float32)
    ldm.loss(images, context=context)                      # builds the weights
    optimizer = Adam(ldm.diffusion, lr=1e-2)
    for _ in range(3):
        ldm.train_step(images, optimizer, context=context)
    assert np.abs(unet.down_transformers[0].proj_out.weight.numpy()).max() > 0
    out = ldm.sample(2, steps=3, method="ddim", context=context, guidance_scale=2.0)
    assert out.shape == (2, 4, 4, 1) and np.isfinite(out).all()


# -- learning: bars described by two tokens -----------------------------------------------------------
def bar_images():
    """Four 8x8 images of a 2-pixel bar, horizontal or vertical (token 0 or 1), in the first or
    second half (token 2 or 3); values -1 and 1."""
    images = -np.ones((4, 8, 8, 1), np.float32)
    tokens = np.zeros((4, 2), np.int64)
    for orientation in range(2):
        for half in range(2):
            k = 2 * orientation + half
            where = slice(4 * half + 1, 4 * half + 3)
            if orientation == 0:
                images[k, where, :, 0] = 1
            else:
                images[k, :, where, 0] = 1
            tokens[k] = orientation, 2 + half
    return images, tokens


def test_guided_samples_follow_their_descriptions():
    """A text-conditioned U-Net trained 120 steps: with guidance, samples are the described bar
    far more often than unconditioned samples are (chance: 1/4). Measured (OpenBLAS's own and
    Haswell kernels alike): guided 0.78, unconditioned 0.28."""
    images, tokens = bar_images()
    words = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)  # a frozen "text encoder"
    descriptions = words[tokens]
    lamina.manual_seed(0)
    model = DiffusionModel(CrossAttentionUNet(8, (1, 2), groups=4, context_dim=8, attention_levels=(1,),
                                              num_heads=2), schedule="cosine", num_timesteps=50, label_dropout=0.2)
    model(images[:1], np.zeros(1, np.int64))
    optimizer = Adam(model, lr=1e-2)
    rng = np.random.default_rng(1)
    for step in range(120):
        if step == 84:
            optimizer.lr = 2.5e-3
        batch = rng.integers(0, 4, 32)
        loss = model.loss(images[batch], context=descriptions[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    asked = np.repeat(np.arange(4), 8)

    def matched(samples):
        distances = ((samples[:, None] - images[None]) ** 2).sum(axis=(2, 3, 4))
        return np.mean(distances.argmin(axis=1) == asked)

    lamina.manual_seed(2)
    guided = matched(model.sample(32, steps=20, method="ddim", clip_x0=1.0, context=descriptions[asked],
                                  guidance_scale=4.0))
    unconditioned = matched(model.sample(32, steps=20, method="ddim", clip_x0=1.0))
    assert guided >= 0.6 and guided - unconditioned >= 0.3, (guided, unconditioned)


# -- README -----------------------------------------------------------------------------------------
def test_readme_example_runs():
    printed, names = run_readme_section("Text conditioning by cross-attention")
    assert names["samples"].shape == (4, 8, 8, 1) and printed.split()[0] == "(4,"
