"""ENet: the initial block, an asymmetric bottleneck and a downsampling bottleneck against
float64 PyTorch rewrites (values, input and parameter gradients), gradients of the whole model,
the paper-sized model's parameter count, save/load and learning to segment discs and squares."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from segmentation_shapes import all_background_miou, shapes_dataset, train_and_score
from zoo_checks import check_config_and_save_load

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.nn import init

EPS = 1e-3


def _float64(layer, shape, seed=0):
    layer.build(shape)
    layer.to(np.float64)
    rng = np.random.default_rng(seed)
    for name, param in layer.named_parameters():
        if name.endswith("alpha"):
            param.data = rng.uniform(0.05, 0.5, param.shape)
        else:
            shift = 1.0 if name.split(".")[-2].startswith("bn") and name.endswith("weight") else 0.0
            param.data = rng.standard_normal(param.shape) * 0.5 + shift
    return layer


def _bn(h, p, key):
    return TF.batch_norm(h, None, None, p[f"{key}.weight"], p[f"{key}.bias"], training=True, eps=EPS)


def _w(p, key):
    return p[f"{key}.weight"].permute(0, 3, 1, 2)


def torch_initial_block(x, p):
    """cat(conv3x3 stride 2 (no bias), maxpool 2x2) -> BN -> PReLU, NCHW."""
    h = torch.cat([TF.conv2d(x, _w(p, "conv"), stride=2, padding=1), TF.max_pool2d(x, 2)], dim=1)
    return TF.prelu(_bn(h, p, "bn"), p["act.alpha"])


def torch_asymmetric_bottleneck(x, p, kernel):
    """PReLU(x + BN(1x1(PReLU(BN(1xk(kx1(PReLU(BN(1x1(x)))))))))), no dropout, NCHW."""
    pad = kernel // 2
    h = TF.prelu(_bn(TF.conv2d(x, _w(p, "project")), p, "bn1"), p["act1.alpha"])
    h = TF.conv2d(h, _w(p, "conv.0"), padding=(pad, 0))
    h = TF.conv2d(h, _w(p, "conv.1"), p["conv.1.bias"], padding=(0, pad))
    h = TF.prelu(_bn(h, p, "bn2"), p["act2.alpha"])
    h = _bn(TF.conv2d(h, _w(p, "expand")), p, "bn3")
    return TF.prelu(h + x, p["act.alpha"])


def torch_downsampling(x, p, out_channels):
    """The main branch (2x2 stride-2 projection, 3x3 conv) plus the max-pooled input padded
    with zero channels; also the pooling's indices."""
    h = TF.prelu(_bn(TF.conv2d(x, _w(p, "project"), stride=2), p, "bn1"), p["act1.alpha"])
    h = TF.prelu(_bn(TF.conv2d(h, _w(p, "conv"), p["conv.bias"], padding=1), p, "bn2"), p["act2.alpha"])
    h = _bn(TF.conv2d(h, _w(p, "expand")), p, "bn3")
    pooled, indices = TF.max_pool2d(x, 2, return_indices=True)
    pooled = TF.pad(pooled, (0, 0, 0, 0, 0, out_channels - x.shape[1]))
    return TF.prelu(h + pooled, p["act.alpha"]), indices


def _compare(layer, x, torch_fn, out_shape, seed=2):
    """Values, the input gradient and every parameter's gradient of ``layer`` (train mode) and
    ``torch_fn(x_nchw, params)`` under a random upstream gradient."""
    up = np.random.default_rng(seed).standard_normal(out_shape)
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer.train()(ours)
    first = out[0] if isinstance(out, tuple) else out
    (first * lamina.tensor(up, dtype=np.float64)).sum().backward()

    params = {k: torch.tensor(np.asarray(v), requires_grad=True)
              for k, v in layer.state_dict().items() if "running" not in k}
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    expected = torch_fn(theirs, params)
    expected_first = expected[0] if isinstance(expected, tuple) else expected
    (expected_first * torch.tensor(up.transpose(0, 3, 1, 2))).sum().backward()

    assert first.shape == out_shape
    assert_close(first.numpy(), expected_first.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "output")
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "input gradient")
    named = dict(layer.named_parameters())
    assert sorted(named) == sorted(params)
    for key, param in named.items():
        if key in ("conv.bias", "conv.1.bias"):     # a bias before BN: zero gradient up to rounding
            assert np.abs(param.grad).max() < 1e-9 and params[key].grad.abs().max() < 1e-9, key
        else:
            assert_close(param.grad, params[key].grad.numpy(), 1e-10, key)
    return out, expected


def test_initial_block_matches_a_torch_rewrite():
    block = _float64(models.ENetInitialBlock(3, 16), (None, 6, 8, 3))
    x = np.random.default_rng(1).standard_normal((2, 6, 8, 3))
    _compare(block, x, torch_initial_block, (2, 3, 4, 16))


@pytest.mark.parametrize("kernel", [5, 3])
def test_asymmetric_bottleneck_matches_a_torch_rewrite(kernel):
    block = _float64(models.ENetBottleneck(8, "asymmetric", kernel=kernel, dropout=0.0), (None, 6, 7, 8), seed=3)
    x = np.random.default_rng(4).standard_normal((2, 6, 7, 8))
    _compare(block, x, lambda a, p: torch_asymmetric_bottleneck(a, p, kernel), (2, 6, 7, 8))


def test_downsampling_bottleneck_matches_a_torch_rewrite_and_keeps_indices():
    block = _float64(models.ENetDownsampling(4, 8, dropout=0.0), (None, 6, 8, 4), seed=5)
    x = np.random.default_rng(6).standard_normal((2, 6, 8, 4))
    (_, indices), (_, expected) = _compare(block, x, lambda a, p: torch_downsampling(a, p, 8), (2, 3, 4, 8))
    np.testing.assert_array_equal(indices, expected.numpy().transpose(0, 2, 3, 1))


def test_bottleneck_kinds_keep_the_shape_and_dropout_drops_whole_channels():
    x = lamina.tensor(np.random.default_rng(7).standard_normal((2, 8, 8, 8)).astype(np.float32))
    for kind, dilation in (("regular", 1), ("dilated", 4), ("asymmetric", 1)):
        assert models.ENetBottleneck(8, kind, dilation=dilation).eval()(x).shape == (2, 8, 8, 8)
    block = models.ENetBottleneck(8, dropout=0.5)
    block.build(x.shape)
    assert not np.allclose(block.train()(x).numpy(), block.eval()(x).numpy())
    with pytest.raises(ValueError, match="kind must be one of"):
        models.ENetBottleneck(8, "separable")
    with pytest.raises(lamina.ShapeError, match="divisible by 8"):
        models.enet_small(2, (12, 16, 1))(np.zeros((1, 12, 16, 1), dtype=np.float32))


def test_enet_gradients_float64():
    model = _float64(models.enet_small(2, (8, 8, 1), widths=(4, 8, 8)), (None, 8, 8, 1), seed=8).eval()
    x = np.random.default_rng(9).standard_normal((1, 8, 8, 1))
    assert check_gradients(lambda a: model(a), x)


def _bottleneck_params(c_in, c_out, main):
    """A bottleneck's parameters with r = c_out / 4: the projection's, the main conv's (given),
    the expansion's, three BNs and three PReLUs."""
    r = c_out // 4
    return c_in * r * (4 if c_in != c_out else 1) + main + r * c_out + 2 * (2 * r + c_out) + 2 * r + c_out


def test_enet_size():
    """The paper's 0.37 M (Table 3) is a rounded figure; the exact count is checked against the
    sum of the parts of the module docstring and is within 2 % of it."""
    model = models.enet(12)
    assert model.input_shape == (None, 512, 512, 3) and not model.built
    with init.meta():
        model.build(model.input_shape)
    initial = 13 * 3 * 9 + 2 * 16 + 16
    regular = lambda r: 9 * r * r + r             # noqa: E731
    asymmetric = lambda r: 10 * r * r + r         # noqa: E731
    encoder = (_bottleneck_params(16, 64, regular(16)) + 4 * _bottleneck_params(64, 64, regular(16))
               + _bottleneck_params(64, 128, regular(32))
               + 2 * (6 * _bottleneck_params(128, 128, regular(32)) + 2 * _bottleneck_params(128, 128,
                                                                                             asymmetric(32))))

    def upsampling(c_in, c_out):
        r = c_out // 4
        return c_in * r + 9 * r * r + r + r * c_out + 2 * (2 * r + c_out) + c_in * c_out + 2 * c_out

    def decoder_regular(c):
        return _bottleneck_params(c, c, regular(c // 4)) - 2 * (c // 4) - c     # ReLU: no slopes

    decoder = upsampling(128, 64) + 2 * decoder_regular(64) + upsampling(64, 16) + decoder_regular(16)
    fullconv = 16 * 12 * 4 + 12
    assert model.num_parameters() == initial + encoder + decoder + fullconv == 363_843
    assert abs(model.num_parameters() - 0.37e6) < 0.02 * 0.37e6
    assert model.compute_output_shape(model.input_shape) == (None, 512, 512, 12)


def test_enet_config_and_save_load_round_trip(tmp_path):
    model = models.enet_small(3, (16, 16, 2))
    model.build(model.input_shape)
    x = np.random.default_rng(10).standard_normal((1, 16, 16, 2)).astype(np.float32)
    check_config_and_save_load(model, x, tmp_path / "enet.safetensors")
    assert type(lamina.load(tmp_path / "enet.safetensors")) is models.ENet


def test_enet_learns_discs_and_squares():
    x, y = shapes_dataset(256, seed=1)
    x_test, y_test = shapes_dataset(96, seed=2)
    model = models.enet_small(3, (16, 16, 1), widths=(16, 32, 32))

    def loss(scores, labels):
        return lamina.functional.categorical_cross_entropy(scores, labels, from_logits=True)

    # ENet's 1/8-resolution middle (2 x 2 here) and 2x2 final upsampling make the shapes hard to
    # tell apart on 16 x 16 images: a smaller margin than the full-resolution decoders'
    miou = train_and_score(model, loss, (x, y), (x_test, y_test), epochs=10, lr=5e-3, batch_size=16)
    assert miou > all_background_miou(y_test) + 0.1, miou
