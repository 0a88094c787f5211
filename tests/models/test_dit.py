"""The Diffusion Transformer: a DiT block and a tiny DiT against a float64 torch rewrite of the
paper's code (NCHW inside, NHWC at the boundary), gradient checks, adaLN-Zero's identity start,
label dropout, guidance through DiffusionModel, learning bar orientations by class, saving and
the README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch_diffusion as ref

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models import DIT_CONFIGS, DiffusionModel, DiT, DiTBlock, dit_s, dit_xl, patchify, unpatchify
from lamina.nn import functional_call
from lamina.optim import Adam


# -- a torch rewrite of the reference (NCHW images, torch's (out, in) weights) ----------------------
def t_linear(p, name, x):
    return TF.linear(x, p[f"{name}.weight"].T, p[f"{name}.bias"])


def t_modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def t_attention(p, name, x, heads):
    n, t, d = x.shape
    q, k, v = (part.reshape(n, t, heads, d // heads).transpose(1, 2)
               for part in TF.linear(x, p[f"{name}.in_weight"].T, p[f"{name}.in_bias"]).chunk(3, dim=-1))
    context = TF.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
    return TF.linear(context, p[f"{name}.out_weight"].T, p[f"{name}.out_bias"])


def t_block(p, prefix, x, c, heads):
    d = x.shape[-1]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
        t_linear(p, f"{prefix}modulation", TF.silu(c)).chunk(6, dim=1)
    norm = TF.layer_norm(x, (d,), eps=1e-6)
    x = x + gate_msa.unsqueeze(1) * t_attention(p, f"{prefix}attn", t_modulate(norm, shift_msa, scale_msa), heads)
    norm = TF.layer_norm(x, (d,), eps=1e-6)
    hidden = TF.gelu(t_linear(p, f"{prefix}mlp_in", t_modulate(norm, shift_mlp, scale_mlp)), approximate="tanh")
    return x + gate_mlp.unsqueeze(1) * t_linear(p, f"{prefix}mlp_out", hidden)


def t_position_embedding(dim, rows, cols):
    """MAE's get_2d_sincos_pos_embed: meshgrid(w, h), the first half from grid[0] (the column)."""
    grid = torch.meshgrid(torch.arange(cols, dtype=torch.float64), torch.arange(rows, dtype=torch.float64),
                          indexing="xy")

    def one_d(positions, size):
        omega = 1.0 / 10000 ** (torch.arange(size // 2, dtype=torch.float64) / (size / 2.0))
        out = positions.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one_d(grid[0], dim // 2), one_d(grid[1], dim // 2)], dim=1)


def t_dit(p, x_nhwc, t, y, patch, heads, time_dim):
    x = x_nhwc.permute(0, 3, 1, 2)                                   # NCHW from here on
    n, channels, height, width = x.shape
    weight = p["patch_embed.weight"].permute(0, 3, 1, 2)
    tokens = TF.conv2d(x, weight, p["patch_embed.bias"], stride=patch).flatten(2).transpose(1, 2)
    dim, rows, cols = tokens.shape[-1], height // patch, width // patch
    h = tokens + t_position_embedding(dim, rows, cols)[None]
    frequencies = ref.timestep_embedding(t, time_dim, torch.float64)
    c = t_linear(p, "time_out", TF.silu(t_linear(p, "time_in", frequencies)))
    if y is not None:
        c = c + p["class_embedding.weight"][torch.as_tensor(y)]
    depth = len({name.split(".")[1] for name in p if name.startswith("blocks.")})
    for k in range(depth):
        h = t_block(p, f"blocks.{k}.", h, c, heads)
    shift, scale = t_linear(p, "final_modulation", TF.silu(c)).chunk(2, dim=1)
    h = t_linear(p, "final_linear", t_modulate(TF.layer_norm(h, (dim,), eps=1e-6), shift, scale))
    out_channels = h.shape[-1] // (patch * patch)
    h = h.reshape(n, rows, cols, patch, patch, out_channels)
    images = torch.einsum("nhwpqc->nchpwq", h).reshape(n, out_channels, height, width)
    return images.permute(0, 2, 3, 1)                                 # back to NHWC


# -- helpers ---------------------------------------------------------------------------------------
def _randomized(model, seed=0, scale=0.3):
    """``model`` with every weight drawn at random, the zero-initialised layers included."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return model


def _named(model):
    names = [name for name, _ in model.named_parameters()]
    return names, [p.numpy().copy() for _, p in model.named_parameters()]


# -- the block ------------------------------------------------------------------------------------
def test_block_matches_torch_and_gradcheck():
    lamina.set_default_dtype(np.float64)
    block = DiTBlock(8, 2, mlp_ratio=2.0)
    x, c = randn(2, 5, 8, seed=1), randn(2, 6, seed=2)
    block(x, c)
    _randomized(block)
    names, weights = _named(block)

    def ours(x, c, *params):
        return functional_call(block, dict(zip(names, params)), x, c)

    def theirs(x, c, *params):
        return t_block(dict(zip(names, params)), "", x, c, 2)

    compare_with_torch(ours, theirs, x, c, *weights, dtype=np.float64)
    assert check_gradients(ours, x, c, *weights)


def test_block_starts_as_the_identity():
    block = DiTBlock(8, 4)
    x, c = randn(3, 4, 8, seed=3).astype(np.float32), randn(3, 5, seed=4).astype(np.float32)
    np.testing.assert_array_equal(block(x, c).numpy(), x)
    assert not np.any(block.modulation.weight.numpy()) and not np.any(block.modulation.bias.numpy())
    with pytest.raises(ShapeError, match=r"DiTBlock.*conditioning c of shape \(2, 5\).*\(3, features\)"):
        block(x, c[:2])
    with pytest.raises(ValueError, match="DiTBlock: dim 6 is not divisible by num_heads 4"):
        DiTBlock(6, 4)


# -- the whole model ------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes, learn_sigma", [(3, False), (None, True)])
def test_dit_matches_torch(num_classes, learn_sigma):
    lamina.set_default_dtype(np.float64)
    model = DiT((4, 6), 2, 2, dim=8, depth=2, num_heads=2, num_classes=num_classes, learn_sigma=learn_sigma,
                class_dropout=0.0, mlp_ratio=2.0, time_dim=6)
    x, t = randn(2, 4, 6, 2, seed=1), np.array([3.0, 41.0])
    y = None if num_classes is None else np.array([2, 3])           # 3: the "no class" row
    model(x, t, y)
    _randomized(model)
    names, weights = _named(model)

    def ours(x, *params):
        return functional_call(model, dict(zip(names, params)), x, t, y)

    def theirs(x, *params):
        return t_dit(dict(zip(names, params)), x, t, y, 2, 2, 6)

    out = compare_with_torch(ours, theirs, x, *weights, dtype=np.float64)[0]
    assert out.shape == (2, 4, 6, 4 if learn_sigma else 2)


def test_dit_gradcheck():
    lamina.set_default_dtype(np.float64)
    model = DiT(4, 2, 1, dim=4, depth=1, num_heads=2, num_classes=2, class_dropout=0.0, mlp_ratio=1.0, time_dim=4)
    x, t, y = randn(2, 4, 4, 1, seed=5), np.array([1, 7]), np.array([0, 1])
    model(x, t, y)
    _randomized(model, scale=0.5)
    assert check_gradients(lambda x: model(x, t, y), x)


def test_dit_starts_at_zero_output():
    model = DiT(8, 4, 3, dim=16, depth=2, num_heads=4, num_classes=5)
    out = model(randn(2, 8, 8, 3).astype(np.float32), np.array([0, 999]), np.array([1, 4])).numpy()
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.float32 and not np.any(out)
    assert model.null_class == 5


def test_unpatchify_inverts_patchify():
    x = randn(2, 6, 4, 3, seed=6).astype(np.float32)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 6, 12)
    np.testing.assert_array_equal(tokens.numpy()[0, 1], x[0, 0:2, 2:4].reshape(-1))   # row 0, column 1
    np.testing.assert_array_equal(unpatchify(tokens, 2, (6, 4)).numpy(), x)


def test_dit_errors():
    model = DiT(8, 2, 1, dim=8, depth=1, num_heads=2)
    with pytest.raises(ShapeError, match=r"DiT: .*shape \(1, 8, 4, 1\).*expected \(batch, 8, 8, 1\)"):
        model(np.zeros((1, 8, 4, 1), np.float32), np.zeros(1))
    model(np.zeros((1, 8, 8, 1), np.float32), np.zeros(1))
    with pytest.raises(ShapeError, match=r"DiT: .*shape \(1, 8, 8, 2\).*expected a 4-D NHWC batch \(batch, 8, 8, 1\)"):
        model(np.zeros((1, 8, 8, 2), np.float32), np.zeros(1))
    with pytest.raises(ValueError, match=r"DiT: image_size \(8, 8\) must be a multiple of patch_size 3"):
        DiT(8, 3, 1, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="DiT: dim must be a multiple of 4"):
        DiT(8, 2, 1, dim=6, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="DiT.*no num_classes"):
        model(np.zeros((1, 8, 8, 1), np.float32), np.zeros(1), np.zeros(1, np.int64))


def test_label_dropout_in_training_only():
    model = DiT(4, 2, 1, dim=4, depth=1, num_heads=1, num_classes=3, class_dropout=0.3)
    labels = np.zeros(4000, dtype=np.int64)
    dropped = model._labels(labels, 4000) == 3
    assert 0.27 < dropped.mean() < 0.33
    model.eval()
    assert np.all(model._labels(labels, 4000) == 0)
    model.train()
    assert np.all(model._labels(None, 5) == 3)                          # no labels: all "no class"
    # the dropout reaches the output: a dropped label gives the null class's output
    x = np.zeros((4000, 4, 4, 1), np.float32)
    model(x[:1], np.zeros(1))
    _randomized(model)
    with no_grad():
        trained = model(x, np.zeros(4000), labels).numpy()
        model.eval()
        null = model(x[:1], np.zeros(1), np.array([3])).numpy()
        kept = model(x[:1], np.zeros(1), np.array([0])).numpy()
    assert np.abs(null - kept).max() > 1e-3
    like_null = np.all(np.abs(trained - null) < 1e-5, axis=(1, 2, 3))
    assert 0.27 < like_null.mean() < 0.33


def test_guided_sampling_through_diffusion_model():
    lamina.manual_seed(0)
    model = DiffusionModel(DiT(4, 2, 1, dim=8, depth=1, num_heads=2, num_classes=2, time_dim=8),
                           schedule="cosine", num_timesteps=20, label_dropout=0.0)
    model.loss(randn(3, 4, 4, 1).astype(np.float32), labels=np.array([0, 1, 1]))
    _randomized(model.net)
    model.eval()
    x, labels = randn(3, 4, 4, 1, seed=1), np.array([0, 1, 0])
    steps = np.array([2, 9, 19])
    guided = model.guided_output(x, steps, labels, guidance_scale=1.0).numpy()
    np.testing.assert_array_equal(guided, model(x, steps, labels).numpy())
    conditional, unconditional = model(x, steps, labels).numpy(), model(x, steps, np.full(3, 2)).numpy()
    np.testing.assert_allclose(model.guided_output(x, steps, labels, guidance_scale=3.0).numpy(),
                               unconditional + 3.0 * (conditional - unconditional), rtol=1e-4, atol=1e-5)
    samples = model.sample(4, steps=5, method="ddim", labels=np.array([0, 1, 0, 1]), guidance_scale=4.0)
    assert samples.shape == (4, 4, 4, 1) and np.isfinite(samples).all()


# -- learning: bar orientation by class ----------------------------------------------------------
def bars(n, seed):
    """8x8 images at -1 with one bar at +1: a random row (class 0) or column (class 1)."""
    rng = np.random.default_rng(seed)
    labels, where = rng.integers(0, 2, n), rng.integers(0, 8, n)
    x = -np.ones((n, 8, 8, 1), np.float32)
    x[labels == 0, where[labels == 0], :, 0] = 1
    x[np.flatnonzero(labels == 1), :, where[labels == 1], 0] = 1
    return x, labels


def horizontal_score(images):
    """Variance of the row means minus that of the column means: > 0 for a horizontal bar."""
    pixels = images[..., 0]
    return pixels.mean(axis=2).var(axis=1) - pixels.mean(axis=1).var(axis=1)


def test_tiny_dit_learns_bars_by_class():
    lamina.manual_seed(0)
    x, y = bars(512, seed=0)
    assert np.all((horizontal_score(x) > 0) == (y == 0))
    model = DiffusionModel(DiT(8, 2, 1, dim=32, depth=2, num_heads=4, num_classes=2, time_dim=16),
                           schedule="cosine", num_timesteps=50, label_dropout=0.0)   # the DiT drops labels
    probe_t = np.random.default_rng(2).integers(0, 50, 128)
    probe_noise = randn(128, 8, 8, 1, seed=3).astype(np.float32)

    def probe_loss():
        with no_grad():
            return model.loss(x[:128], labels=y[:128], t=probe_t, noise=probe_noise).item()

    model(x[:1], np.zeros(1, np.int64))
    model.net.class_dropout = 0.0
    before = probe_loss()
    model.net.class_dropout = 0.1
    optimizer = Adam(model, lr=2e-3)
    rng = np.random.default_rng(1)
    for _ in range(180):
        batch = rng.integers(0, len(x), 64)
        loss = model.loss(x[batch], labels=y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.net.class_dropout = 0.0
    after = probe_loss()
    # measured (OpenBLAS's own and Haswell kernels alike): probe loss 1.009 -> 0.097; 0.94 and 0.97 of the
    # samples horizontal and vertical as asked
    assert after < 0.25 * before, (before, after)
    labels = np.repeat([0, 1], 32)
    samples = model.sample(64, steps=20, method="ddim", labels=labels, guidance_scale=2.0, clip_x0=1.0)
    score = horizontal_score(samples)
    horizontal, vertical = np.mean(score[:32] > 0), np.mean(score[32:] < 0)
    assert horizontal > 0.75 and vertical > 0.75, (horizontal, vertical)


# -- zoo, saving, README ------------------------------------------------------------------
def test_variants_config_and_save_load(tmp_path):
    model = dit_s(image_size=16, patch_size=4, in_channels=3, num_classes=10)
    assert (model.dim, model.depth, model.num_heads) == DIT_CONFIGS["s"] == (384, 12, 6)
    assert model.out_channels == 6 and model.name == "dit_s_4"
    with lamina.nn.init.meta():                        # the weights do not depend on the image size
        xl = dit_xl(image_size=2)
        xl.build((1, 2, 2, 4))
    # the reference's 675,129,632 counts its fixed (256, 1152) position table as a frozen parameter
    assert sum(int(np.prod(p.shape)) for p in xl.parameters()) + 256 * 1152 == 675_129_632
    tiny = DiffusionModel(DiT(4, 2, 2, dim=8, depth=2, num_heads=2, num_classes=3, learn_sigma=False, time_dim=4),
                          schedule="cosine", num_timesteps=10)
    tiny.loss(randn(2, 4, 4, 2).astype(np.float32), labels=np.array([0, 2]))
    _randomized(tiny.net)
    for p in tiny.parameters():
        p.data = p.data.astype(np.float32)
    lamina.save(tiny, tmp_path / "dit.safetensors")
    loaded = lamina.load(tmp_path / "dit.safetensors")
    assert type(loaded.net) is DiT and loaded.get_config() == tiny.get_config()
    tiny.eval()
    loaded.eval()
    x, t, y = randn(2, 4, 4, 2).astype(np.float32), np.array([1, 8]), np.array([1, 3])
    np.testing.assert_array_equal(loaded(x, t, y).numpy(), tiny(x, t, y).numpy())


def test_readme_example():
    printed, names = run_readme_section("Diffusion Transformer (DiT)")
    assert printed.split()[:2] == ["(4,", "8,"] and names["samples"].shape == (4, 8, 8, 1)
