"""PoolFormer: the pooling mixer and a block against torch rewrites (values and gradients,
float64), finite differences, the published parameter counts, configs and saving, a tiny
network learning 8x8 digits, and the README example."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section, train_classifier
from lamina import models
from lamina.backend import manual_seed
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import PoolFormerBlock, PoolingMixer

# the paper's Table 1 / timm's counts with 1000 classes (millions, one decimal)
PUBLISHED_MILLIONS = {"s12": 11.9, "s24": 21.4, "s36": 30.9, "m36": 56.2, "m48": 73.5}



def _torch_pooling(x_nhwc, pool_size=3):
    x = x_nhwc.permute(0, 3, 1, 2)
    pool = torch.nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)
    return (pool(x) - x).permute(0, 2, 3, 1)


@pytest.mark.parametrize("pool_size", [3, 5])
def test_pooling_mixer_matches_torch(pool_size):
    mixer = PoolingMixer(pool_size)
    compare_with_torch(lambda x: mixer(x), lambda x: _torch_pooling(x, pool_size), randn(2, 5, 6, 3),
                       dtype=np.float64)
    compare_with_torch(lambda x: mixer(x), lambda x: _torch_pooling(x, pool_size), randn(2, 4, 4, 3, seed=1))


def test_pooling_mixer_gradients_by_finite_differences():
    assert check_gradients(lambda x: PoolingMixer()(x), randn(2, 4, 5, 2, seed=3))


def _torch_block(params: dict, x):
    """A PoolFormer block written with torch ops on NHWC input (Yu et al.'s Eq. 1-2)."""
    def conv1x1(h, prefix):
        weight = params[f"{prefix}.weight"].permute(0, 3, 1, 2)       # (K, 1, 1, C) -> (K, C, 1, 1)
        return torch.nn.functional.conv2d(h, weight, params[f"{prefix}.bias"])

    c = x.shape[-1]
    h = x.permute(0, 3, 1, 2)
    normed = torch.nn.functional.group_norm(h, 1, params["norm1.weight"], params["norm1.bias"], eps=1e-5)
    pooled = torch.nn.functional.avg_pool2d(normed, 3, 1, 1, count_include_pad=False) - normed
    h = h + params["layer_scale1"].view(1, c, 1, 1) * pooled
    normed = torch.nn.functional.group_norm(h, 1, params["norm2.weight"], params["norm2.bias"], eps=1e-5)
    mlp = conv1x1(torch.nn.functional.gelu(conv1x1(normed, "mlp.fc1")), "mlp.fc2")
    h = h + params["layer_scale2"].view(1, c, 1, 1) * mlp
    return h.permute(0, 2, 3, 1)


def test_block_matches_a_float64_torch_rewrite(float64):
    manual_seed(0)
    block = PoolFormerBlock(4, mlp_ratio=2, layer_scale_init=0.5)
    x = randn(2, 5, 5, 4, seed=1)
    block.build(x.shape)
    rng = np.random.default_rng(2)
    for param in block.parameters():      # move norms and scales away from 1 and 0
        param.data = param.data + 0.3 * rng.standard_normal(param.shape)
    ours = dict(block.named_parameters())
    names = sorted(ours)
    assert names == ["layer_scale1", "layer_scale2", "mlp.fc1.bias", "mlp.fc1.weight", "mlp.fc2.bias",
                     "mlp.fc2.weight", "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight"]
    params = [ours[n].numpy() for n in names]

    ours_x = lamina.tensor(x, requires_grad=True)
    out = block(ours_x)
    torch_params = {n: torch.tensor(p, requires_grad=True) for n, p in zip(names, params)}
    torch_x = torch.tensor(x, requires_grad=True)
    expected = _torch_block(torch_params, torch_x)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = randn(*out.shape, seed=4)
    (out * lamina.tensor(upstream)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(np.asarray(ours_x.grad), torch_x.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name in names:
        np.testing.assert_allclose(np.asarray(ours[name].grad), torch_params[name].grad.numpy(),
                                   rtol=1e-9, atol=1e-11, err_msg=name)
    assert check_gradients(lambda v: block(v), randn(1, 3, 3, 4, seed=5))


@pytest.mark.parametrize("variant", sorted(PUBLISHED_MILLIONS))
def test_published_parameter_counts(variant):
    model = getattr(models, f"poolformer_{variant}")()
    model.build((None, 224, 224, 3))
    count = sum(int(p.size) for p in model.parameters())
    assert round(count / 1e6, 1) == PUBLISHED_MILLIONS[variant], count
    assert model.compute_output_shape((None, 224, 224, 3)) == (None, 1000)
    assert f"poolformer_{variant}" in models.list_models(module="classification")


def test_stage_resolutions_and_layout():
    model = models.poolformer((1, 1, 1, 1), (4, 8, 12, 16), num_classes=3)
    x = lamina.tensor(randn(1, 32, 32, 3).astype(np.float32))
    features = model["features"]
    shapes = []
    for layer in features:
        x = layer(x)
        shapes.append(tuple(x.shape))
    assert shapes == [(1, 8, 8, 4), (1, 8, 8, 4), (1, 4, 4, 8), (1, 4, 4, 8), (1, 2, 2, 12), (1, 2, 2, 12),
                      (1, 1, 1, 16), (1, 1, 1, 16)]
    assert features["0"].kernel_size == (7, 7) and features["2"].kernel_size == (3, 3)


def test_config_and_save_load(tmp_path):
    model = models.poolformer((1, 1), (4, 8), layer_scale_init=0.3, num_classes=5, input_shape=(8, 8, 1))
    x = randn(2, 8, 8, 1).astype(np.float32)
    expected = model(lamina.tensor(x)).numpy()
    lamina.save(model, tmp_path / "poolformer.lamina")
    twin = lamina.load(tmp_path / "poolformer.lamina")
    np.testing.assert_array_equal(twin(lamina.tensor(x)).numpy(), expected)


def test_tiny_poolformer_learns_digits():
    images, labels = load_digits(size=8)
    x = images.astype(np.float32) / 255.0
    x_train, y_train, x_test, y_test = x[:1400], labels[:1400], x[1400:], labels[1400:]
    manual_seed(0)
    model = models.poolformer((1, 1), (16, 32), layer_scale_init=0.1, num_classes=10, input_shape=(8, 8, 1))
    optimizer = lamina.optim.Adam(model, lr=0.01)
    rng = np.random.default_rng(0)
    train_classifier(model, x_train, y_train, (order[start:start + 64] for _ in range(6)
                                               for order in [rng.permutation(len(x_train))]
                                               for start in range(0, len(order), 64)), optimizer)
    model.eval()
    with lamina.no_grad():
        accuracy = float(np.mean(model(lamina.tensor(x_test)).numpy().argmax(-1) == y_test))
    assert accuracy > 0.8, accuracy


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        PoolingMixer(4)
    with pytest.raises(ValueError, match="channels"):
        PoolFormerBlock(0)
    with pytest.raises(ValueError, match="equally long"):
        models.poolformer((2, 2), (64,))
    with pytest.raises(ShapeError, match="channels"):
        PoolFormerBlock(4).build((None, 5, 5, 3))


def test_readme_example():
    printed, names = run_readme_section("PoolFormer: pooling as the token mixer")
    assert printed.split() == ["11915176", "PoolingMixer(pool_size=3)", "(2,", "10)"]
    assert isinstance(names["tiny"]["features"]["1"]["0"], PoolFormerBlock)
