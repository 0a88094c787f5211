"""MobileViT: the patch unfold/fold round trip, the block against a float64 torch rewrite
(values and gradients), finite differences, the published parameter counts, configs and
saving, a tiny network learning 16x16 digits, and the README example."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section, train_classifier
from lamina import models
from lamina.backend import manual_seed
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import MobileViTBlock, fold_patches, unfold_patches

# the paper's Table / timm's counts with 1000 classes (millions, one decimal)
PUBLISHED_MILLIONS = {"xxs": 1.3, "xs": 2.3, "s": 5.6}
TNF = torch.nn.functional



@pytest.mark.parametrize("patch", [2, (2, 3)])
def test_unfold_fold_round_trip_is_exact(patch):
    x = randn(2, 4, 6, 3).astype(np.float32)
    tokens = unfold_patches(x, patch)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    assert tokens.shape == (2 * ph * pw, (4 // ph) * (6 // pw), 3)
    np.testing.assert_array_equal(fold_patches(tokens, patch, 4, 6).numpy(), x)
    # sequence i * pw + j of image b holds the pixels at (i, j) of every patch, patches row by row
    b, i, j = 1, 1, 0
    sequence = tokens.numpy()[b * ph * pw + i * pw + j]
    expected = x[b, i::ph, j::pw].reshape(-1, 3)
    np.testing.assert_array_equal(sequence, expected)


def _conv(h, weight, padding):
    return TNF.conv2d(h, weight.permute(0, 3, 1, 2), padding=padding)      # (K, f, f, C) -> (K, C, f, f)


def _conv_bn_silu(h, p, prefix, padding):
    h = _conv(h, p[f"{prefix}.0.weight"], padding)
    h = TNF.batch_norm(h, None, None, p[f"{prefix}.1.weight"], p[f"{prefix}.1.bias"], training=True, eps=1e-5)
    return TNF.silu(h)


def _torch_attention(x, p, prefix, heads):
    n, t, d = x.shape
    qkv = x @ p[f"{prefix}.in_weight"] + p[f"{prefix}.in_bias"]
    q, k, v = (part.reshape(n, t, heads, d // heads).transpose(1, 2) for part in qkv.split(d, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, t, d)
    return out @ p[f"{prefix}.out_weight"] + p[f"{prefix}.out_bias"]


def _torch_block(p: dict, x_nhwc, depth, heads, patch):
    """The MobileViT block as in the reference (NCHW inside, NHWC at the boundary)."""
    x = x_nhwc.permute(0, 3, 1, 2)
    b, c, h, w = x.shape
    local = _conv(_conv_bn_silu(x, p, "conv_kxk", 1), p["conv_1x1.weight"], 0)
    d = local.shape[1]
    ph, pw = patch
    # (B, d, H, W) -> (B, d, nh, ph, nw, pw) -> (B, ph, pw, nh, nw, d) -> (B P, N, d)
    tokens = local.reshape(b, d, h // ph, ph, w // pw, pw).permute(0, 3, 5, 2, 4, 1).reshape(b * ph * pw, -1, d)
    for i in range(depth):
        pre = f"transformer.{i}"
        normed = TNF.layer_norm(tokens, (d,), p[f"{pre}.norm1.weight"], p[f"{pre}.norm1.bias"], eps=1e-5)
        tokens = tokens + _torch_attention(normed, p, f"{pre}.self_attention", heads)
        normed = TNF.layer_norm(tokens, (d,), p[f"{pre}.norm2.weight"], p[f"{pre}.norm2.bias"], eps=1e-5)
        hidden = TNF.silu(normed @ p[f"{pre}.linear1.weight"] + p[f"{pre}.linear1.bias"])
        tokens = tokens + hidden @ p[f"{pre}.linear2.weight"] + p[f"{pre}.linear2.bias"]
    tokens = TNF.layer_norm(tokens, (d,), p["transformer.norm.weight"], p["transformer.norm.bias"], eps=1e-5)
    folded = tokens.reshape(b, ph, pw, h // ph, w // pw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
    fused = _conv_bn_silu(torch.cat([x, _conv_bn_silu(folded, p, "conv_proj", 0)], dim=1), p, "conv_fusion", 1)
    return fused.permute(0, 2, 3, 1)


@pytest.mark.parametrize("patch", [(2, 2), (1, 2)])
def test_block_matches_a_float64_torch_rewrite(float64, patch):
    manual_seed(0)
    block = MobileViTBlock(4, 6, depth=2, num_heads=2, mlp_dim=5, patch_size=patch)
    x = randn(2, 4, 4, 4, seed=1)
    block.build(x.shape)
    rng = np.random.default_rng(2)
    for param in block.parameters():      # move norms away from 1 and biases away from 0
        param.data = param.data + 0.3 * rng.standard_normal(param.shape)
    ours = dict(block.named_parameters())
    names = sorted(ours)
    assert len(names) == 3 + 1 + 2 * 12 + 2 + 3 + 3
    torch_params = {n: torch.tensor(ours[n].numpy(), requires_grad=True) for n in names}
    ours_x = lamina.tensor(x, requires_grad=True)
    out = block(ours_x)
    torch_x = torch.tensor(x, requires_grad=True)
    expected = _torch_block(torch_params, torch_x, 2, 2, patch)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-9, atol=1e-11)
    upstream = randn(*out.shape, seed=4)
    (out * lamina.tensor(upstream)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(np.asarray(ours_x.grad), torch_x.grad.numpy(), rtol=1e-8, atol=1e-10)
    for name in names:
        np.testing.assert_allclose(np.asarray(ours[name].grad), torch_params[name].grad.numpy(),
                                   rtol=1e-8, atol=1e-10, err_msg=name)


def test_block_gradients_by_finite_differences(float64):
    manual_seed(1)
    block = MobileViTBlock(2, 4, depth=1, num_heads=2, patch_size=2)
    assert check_gradients(lambda v: block(v), randn(1, 2, 4, 2, seed=5))


@pytest.mark.parametrize("variant", sorted(PUBLISHED_MILLIONS))
def test_published_parameter_counts(variant):
    model = getattr(models, f"mobilevit_{variant}")()
    model.build((None, 256, 256, 3))
    count = sum(int(p.size) for p in model.parameters())
    assert round(count / 1e6, 1) == PUBLISHED_MILLIONS[variant], count
    assert model.compute_output_shape((None, 256, 256, 3)) == (None, 1000)


TINY = {"channels": (8, 8, 16), "stages": ((24, 16),), "depths": (1,), "last": 32, "expand": 2, "stem_stride": 1}


def test_config_and_save_load(tmp_path):
    model = models.mobilevit(TINY, num_classes=5, input_shape=(16, 16, 1), num_heads=2)
    x = randn(2, 16, 16, 1).astype(np.float32)
    model.eval()
    expected = model(lamina.tensor(x)).numpy()
    lamina.save(model, tmp_path / "mobilevit.lamina")
    twin = lamina.load(tmp_path / "mobilevit.lamina")
    twin.eval()
    np.testing.assert_array_equal(twin(lamina.tensor(x)).numpy(), expected)
    # the inverted residuals between the blocks keep their SiLU through the config
    assert twin["stage1"].get_config()["activation"] == "silu" and "activation" not in models.InvertedResidual(
        4, 4).get_config()
    assert type(twin["stage3"]["1"]) is MobileViTBlock and twin["stage3"]["1"].patch_size == (2, 2)


def test_tiny_mobilevit_learns_digits():
    images, labels = load_digits(size=8)
    x = (images.astype(np.float32) / 255.0).repeat(2, axis=1).repeat(2, axis=2)       # 16x16
    x_train, y_train, x_test, y_test = x[:1400], labels[:1400], x[1400:], labels[1400:]
    manual_seed(0)
    model = models.mobilevit(TINY, num_classes=10, input_shape=(16, 16, 1), num_heads=2, dropout=0.0)
    optimizer = lamina.optim.Adam(model, lr=0.005)
    rng = np.random.default_rng(0)
    train_classifier(model, x_train, y_train, (order[start:start + 64] for _ in range(4)
                                               for order in [rng.permutation(len(x_train))]
                                               for start in range(0, len(order), 64)), optimizer)
    model.eval()
    with lamina.no_grad():
        accuracy = float(np.mean(model(lamina.tensor(x_test)).numpy().argmax(-1) == y_test))
    # measured after 4 epochs: 0.92 on the 397 held-out digits on both BLAS kernels (chance 0.1)
    assert accuracy > 0.85, accuracy


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MobileViTBlock(4, 6, num_heads=4)
    with pytest.raises(ValueError, match="variant"):
        models.mobilevit("m")
    with pytest.raises(ShapeError, match="patch size"):
        MobileViTBlock(4, 8).build((None, 5, 4, 4))
    with pytest.raises(ShapeError, match="channels"):
        MobileViTBlock(4, 8).build((None, 4, 4, 3))
    with pytest.raises(ShapeError, match="multiples of the patch size"):
        unfold_patches(randn(1, 3, 4, 2), 2)


def test_readme_example():
    printed, _ = run_readme_section("MobileViT: convolutions and transformers on unfolded patches")
    assert printed.split()[:2] == ["1272024", "(2,"]
