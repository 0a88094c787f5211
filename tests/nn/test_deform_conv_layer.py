"""DeformConv2D: a fresh layer is a (halved, when modulated) Conv2D; with trained offset weights
it matches a torch rewrite (values and gradients); gradient check, config round trip, errors,
and a learning check on randomly warped digits against a plain Conv2D network."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.functional.test_deform_conv import torch_deform_conv2d
from tests.helpers import assert_close, check_gradients, run_readme_section

import lamina
import lamina.functional as F
from lamina import ShapeError, nn
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.optim import Adam


def _layer(seed=0, scale=0.3, dtype=np.float64, **options):
    """A built layer (float64 unless told) whose offset convolution has random (non-zero) weights."""
    lamina.manual_seed(seed)
    layer = nn.DeformConv2D(**{"filters": 3, "kernel_size": 3, "padding": 1, **options})
    with _float64() if dtype == np.float64 else contextlib.nullcontext():
        layer(np.zeros((1, 6, 5, 4), dtype=dtype))
    rng = np.random.default_rng(seed)
    conv = layer.offset_conv
    conv.weight.data = (rng.standard_normal(conv.weight.shape) * scale).astype(dtype)
    conv.bias.data = (rng.standard_normal(conv.bias.shape) * scale).astype(dtype)
    return layer


@contextlib.contextmanager
def _float64():
    """New parameters and plain arrays given to the layer are float64 inside the block."""
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    try:
        yield
    finally:
        lamina.backend.set_default_dtype(before)


def _torch_layer(layer, x, params):
    """The layer's computation in torch: offsets (and mask logits) by a torch convolution, then
    the deformable convolution rewritten with explicit bilinear sampling. ``params``: torch
    copies of the layer's weight, bias, offset_conv.weight and offset_conv.bias."""
    predicted = TF.conv2d(x.permute(0, 3, 1, 2), params["offset_conv.weight"].permute(0, 3, 1, 2),
                          params["offset_conv.bias"], stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation).permute(0, 2, 3, 1)
    split = 2 * layer.offset_groups * layer.kernel_size[0] * layer.kernel_size[1]
    mask = torch.sigmoid(predicted[..., split:]) if layer.modulated else None
    return torch_deform_conv2d(x, predicted[..., :split], params["weight"], params["bias"], layer.stride,
                               layer.padding, layer.dilation, mask, layer.offset_groups)


@pytest.mark.parametrize("options", [
    {}, {"modulated": False}, {"stride": 2, "offset_groups": 2}, {"dilation": (2, 1), "padding": (2, 1)},
])
def test_matches_torch_rewrite(options):
    layer = _layer(**options)
    x = np.random.default_rng(1).standard_normal((2, 6, 5, 4))
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(x, requires_grad=True)
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in layer.named_parameters()}
    out, expected = layer(ours), _torch_layer(layer, theirs, params)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10)
    up = np.random.default_rng(2).standard_normal(expected.shape)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (expected * torch.tensor(up)).sum().backward()
    assert_close(ours.grad, theirs.grad.numpy(), 1e-10, "input gradient")
    for name, p in layer.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, f"gradient of {name}")


def test_fresh_layer_is_a_halved_conv2d():
    with _float64():
        x = lamina.tensor(np.random.default_rng(0).standard_normal((2, 7, 6, 3)))
        for modulated, factor in ((True, 0.5), (False, 1.0)):
            layer = nn.DeformConv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), modulated=modulated)
            out = layer(x).numpy()
            plain = F.conv2d(x, layer.weight, stride=(2, 1), padding=(1, 0)).numpy()
            np.testing.assert_allclose(out, factor * plain + layer.bias.numpy(), rtol=1e-12, atol=1e-12)
            assert layer.compute_output_shape((2, 7, 6, 3)) == out.shape


def test_gradients_numerically():
    layer = _layer(offset_groups=2)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 6, 5, 4))
    assert check_gradients(layer, x)


def test_config_round_trip():
    layer = nn.DeformConv2D(5, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), offset_groups=2,
                            modulated=False, activation="relu", name="dcn")
    again = layer_from_config(layer_to_config(layer))
    assert isinstance(again, nn.DeformConv2D) and again.get_config() == layer.get_config()
    assert again.offset_conv.filters == 2 * 2 * 6
    assert "offset_groups=2" in repr(layer) and "modulated=False" in repr(layer)


def test_save_and_load_keep_the_offset_convolution(tmp_path):
    layer = _layer(offset_groups=2, stride=2, dtype=np.float32)
    x = np.random.default_rng(4).standard_normal((1, 6, 5, 4)).astype(np.float32)
    path = tmp_path / "deform.safetensors"
    lamina.save(layer, path)
    twin = lamina.load(path)
    assert isinstance(twin, nn.DeformConv2D) and twin.get_config() == layer.get_config()
    with lamina.no_grad():
        np.testing.assert_array_equal(twin(x).numpy(), layer(x).numpy())


def test_errors_name_the_problem():
    with pytest.raises(ShapeError, match="offset_groups=3 must divide the 4 input channels"):
        nn.DeformConv2D(2, 3, offset_groups=3)(np.zeros((1, 5, 5, 4), dtype=np.float32))
    layer = nn.DeformConv2D(2, 3)
    layer(np.zeros((1, 5, 5, 3), dtype=np.float32))
    with pytest.raises(ShapeError, match="NCHW"):
        layer(np.zeros((1, 3, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="offset_groups"):
        nn.DeformConv2D(2, 3, offset_groups=0)


def _warped_digits(count: int, seed: int):
    """8x8 digits in a 16x16 frame, each rotated (up to 35 degrees), scaled (0.75-1.3) and moved."""
    from lamina.data import load_digits

    images, labels = load_digits(size=8)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), count)
    frames = np.zeros((count, 16, 16, 1), dtype=np.float32)
    frames[:, 4:12, 4:12] = images[pick] / 255.0
    angle, scale = rng.uniform(-0.6, 0.6, count), rng.uniform(0.75, 1.3, count)
    theta = np.zeros((count, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) / scale, -np.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) / scale, np.cos(angle) / scale
    theta[:, :, 2] = rng.uniform(-0.3, 0.3, (count, 2))
    grid = F.affine_grid(lamina.tensor(theta), (count, 16, 16, 1))
    return F.grid_sample(lamina.tensor(frames), grid).numpy(), labels[pick]


def _accuracy(deformable: bool, train, test, steps: int = 250) -> float:
    lamina.manual_seed(0)
    middle = (nn.DeformConv2D(16, 3, stride=2, padding=1) if deformable
              else nn.Conv2D(16, 3, stride=2, padding=1))
    model = nn.Sequential(nn.Conv2D(8, 3, padding=1, activation="relu"), middle, nn.ReLU(),
                          nn.Conv2D(16, 3, stride=2, padding=1, activation="relu"), nn.GlobalAvgPool2D(),
                          nn.Dense(10))
    model.build((None, 16, 16, 1))
    optimizer = Adam(model, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.integers(0, len(train[0]), 64)
        loss = F.cross_entropy(model(lamina.tensor(train[0][batch])), train[1][batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with lamina.no_grad():
        return float(np.mean(model(lamina.tensor(test[0])).numpy().argmax(axis=1) == test[1]))


def test_learns_warped_digits_at_least_as_well_as_conv2d():
    train, test = _warped_digits(1200, seed=0), _warped_digits(400, seed=1)
    plain, deformable = _accuracy(False, train, test), _accuracy(True, train, test)
    print(f"warped digits, test accuracy: Conv2D {plain:.3f}, DeformConv2D {deformable:.3f}")
    assert deformable > 0.55                      # chance is 0.1
    assert deformable >= plain


def test_readme_example():
    printed, _ = run_readme_section("Deformable convolution")
    assert printed.split() == ["True", "(2,", "8,", "8,", "16)", "27"]
