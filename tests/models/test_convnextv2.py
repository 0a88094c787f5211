"""ConvNeXt V2: GlobalResponseNorm and the V2 block against float64 torch rewrites of the
published formulas (values and gradients), finite differences, the identity at
initialisation, the published parameter counts, saving, bad arguments, the README example
and a small V2 learning 8x8 digits."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section, train_classifier
from lamina import models, nn
from lamina.autograd import no_grad
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models.convnext import CONVNEXTV2_CONFIGS
from lamina.optim import Adam


def torch_grn(x, gamma, beta, eps=1e-6):
    """The paper's GRN on (N, H, W, C): Gx = ||X||_2 over H, W; Nx = Gx / (mean_c Gx + eps)."""
    gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + eps)
    return gamma * (x * nx) + beta + x


def test_grn_matches_torch_values_and_gradients():
    x, gamma, beta = randn(2, 3, 4, 5, seed=1), randn(5, seed=2), randn(5, seed=3)
    compare_with_torch(lambda a, g, b: nn.global_response_norm(a, g, b),
                       lambda a, g, b: torch_grn(a, g, b), x, gamma, beta, dtype=np.float64, rtol=1e-10)
    compare_with_torch(lambda a, g, b: nn.global_response_norm(a, g, b, eps=0.5),
                       lambda a, g, b: torch_grn(a, g, b, eps=0.5), x, gamma, beta, rtol=1e-5)


def test_grn_layer_matches_torch_and_gradient_check():
    lamina.set_default_dtype(np.float64)
    layer = nn.GlobalResponseNorm(4)
    x = randn(2, 3, 3, 4, seed=4)
    layer(x)
    layer.gamma.data, layer.beta.data = randn(4, seed=5), randn(4, seed=6)
    got = layer(lamina.tensor(x)).numpy()
    want = torch_grn(torch.tensor(x), torch.tensor(layer.gamma.data), torch.tensor(layer.beta.data))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    assert check_gradients(lambda a, g, b: nn.global_response_norm(a, g, b), x, randn(4, seed=7), randn(4, seed=8))
    assert check_gradients(lambda a: layer(a), x)


def test_grn_is_the_identity_at_initialisation():
    layer = nn.GlobalResponseNorm(6)
    x = randn(2, 4, 5, 6, seed=9).astype(np.float32)
    y = layer(lamina.tensor(x, requires_grad=True))
    assert np.array_equal(layer.gamma.numpy(), np.zeros(6)) and np.array_equal(layer.beta.numpy(), np.zeros(6))
    np.testing.assert_array_equal(y.numpy(), x)


def _torch_v2_block(block, x):
    """The V2 block in torch (NCHW depthwise conv, the rest channels-last) with ``block``'s weights."""
    def w(name):
        return torch.tensor(np.asarray(block.state_dict()[f"block.{name}"]))
    c = block.channels
    h = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w("0.weight").permute(0, 3, 1, 2), w("0.bias"),
                                   padding=3, groups=c).permute(0, 2, 3, 1)
    h = torch.nn.functional.layer_norm(h, (c,), w("2.weight"), w("2.bias"), eps=1e-6)
    h = torch.nn.functional.gelu(h @ w("3.weight") + w("3.bias"))
    h = torch_grn(h, w("grn.gamma"), w("grn.beta"))
    return x + h @ w("5.weight") + w("5.bias")


def test_v2_block_matches_torch_rewrite():
    lamina.set_default_dtype(np.float64)
    block = models.ConvNeXtV2Block(3)
    x = randn(2, 5, 4, 3, seed=10)
    block(x)
    rng = np.random.default_rng(11)
    for p in block.parameters():
        p.data = p.data + 0.3 * rng.normal(size=p.shape)
    assert "layer_scale" not in block.state_dict()
    compare_with_torch(lambda a: block(a), lambda a: _torch_v2_block(block, a), x, dtype=np.float64, rtol=1e-10)
    assert check_gradients(lambda a: block(a), randn(1, 3, 3, 3, seed=12))


# ConvNeXt V2 parameter counts with 1000 classes, as the paper gives them (millions)
PUBLISHED = {"atto": 3.7, "femto": 5.2, "pico": 9.1, "nano": 15.6, "tiny": 28.6}


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_published_parameter_counts(variant):
    model = getattr(models, f"convnextv2_{variant}")()
    with no_grad():
        model.build((None, 224, 224, 3))
    count = sum(p.size for p in model.parameters())
    assert round(count / 1e6, 1) == PUBLISHED[variant]
    blocks = [m for m in model.modules() if isinstance(m, models.ConvNeXtV2Block)]
    assert len(blocks) == sum(CONVNEXTV2_CONFIGS[variant][0])
    assert not any(isinstance(m, models.ConvNeXtBlock) for m in model.modules())
    assert f"convnextv2_{variant}" in models.list_models(module="classification")


def test_version_2_network_saves_and_loads(tmp_path):
    model = models.convnext((1, 1), (4, 8), 0.0, num_classes=3, input_shape=(8, 8, 2), version=2)
    x = randn(2, 8, 8, 2, seed=13).astype(np.float32)
    model.eval()
    with no_grad():
        model(x)
    for p in model.parameters():
        p.data = p.data + np.float32(0.1)
    with no_grad():
        expected = model(x).numpy()
    lamina.save(model, tmp_path / "v2.lamina")
    twin = lamina.load(tmp_path / "v2.lamina")
    twin.eval()
    with no_grad():
        np.testing.assert_array_equal(twin(x).numpy(), expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="GlobalResponseNorm: channels"):
        nn.GlobalResponseNorm(0)
    with pytest.raises(ValueError, match="eps"):
        nn.GlobalResponseNorm(3, eps=0.0)
    with pytest.raises(ShapeError, match=r"GlobalResponseNorm.*expected \(batch, h, w, 3\)"):
        nn.GlobalResponseNorm(3)(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"GlobalResponseNorm.*expected \(batch, h, w, 3\)"):
        nn.GlobalResponseNorm(3)(np.zeros((2, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="ConvNeXtV2Block: channels"):
        models.ConvNeXtV2Block(-1)
    with pytest.raises(ValueError, match="version"):
        models.convnext(version=3)


def test_a_small_convnextv2_learns_digits():
    """Two V2 stages (16 and 32 channels) on the 8x8 digits: high held-out accuracy in seconds."""
    start = time.perf_counter()
    images, labels = load_digits(size=8)
    x = images.astype(np.float32) / 255.0
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    model = models.convnext((1, 1), (16, 32), 0.0, num_classes=10, input_shape=(8, 8, 1), version=2)
    model.build((None, 8, 8, 1))
    optimizer = Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    batches = (rows for _ in range(8) for rows in np.array_split(rng.permutation(train), len(train) // 64))
    train_classifier(model, x, labels, batches, optimizer)
    model.eval()
    with no_grad():
        accuracy = float((model(x[test]).numpy().argmax(-1) == labels[test]).mean())
    print(f"held-out accuracy {accuracy:.3f} in {time.perf_counter() - start:.1f} s")
    assert accuracy > 0.85


def test_readme_example_runs():
    printed, names = run_readme_section("ConvNeXt V2")
    assert "parameters" in printed and names["y"].shape == (2, 10)
