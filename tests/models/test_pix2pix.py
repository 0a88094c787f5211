"""pix2pix's U-Net generator and PatchGAN discriminator against torch rewrites of the reference
code (junyanz/pytorch-CycleGAN-and-pix2pix, networks.py), in float64: outputs and gradients of
the input and every weight, NHWC here and NCHW there."""

import numpy as np
import pytest
import torch
from image_translation_reference import (
    compare,
    copy_conv,
    copy_norm,
    randomize,
    torch_nlayer,
    torch_parameters,
    torch_pixel,
    torch_unet,
)
from torch import nn as tnn

import lamina
from lamina.errors import ShapeError
from lamina.models import PatchGANDiscriminator, Pix2PixGenerator


def dropout_levels(model) -> list[int]:
    return [k for k in range(1, model.num_downs + 1)
            if any(layer.name == "dropout" for layer in model._modules[f"up{k}"])]


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_generator_matches_reference(norm):
    lamina.set_default_dtype(np.float64)
    torch.manual_seed(0)
    reference, blocks = torch_unet(2, 3, 6, 2, norm)
    reference.double()
    randomize(reference)
    for m in reference.modules():       # dropout off in both (train-mode batch statistics kept)
        if isinstance(m, tnn.Dropout):
            m.p = 0.0
    model = Pix2PixGenerator(3, num_downs=6, ngf=2, norm=norm, dropout=0.0)
    model.build((2, 64, 64, 2))
    # the dropout layers sit where the reference puts them
    assert dropout_levels(Pix2PixGenerator(3, num_downs=6, ngf=2)) == [5]
    pairs = []
    for k, block in enumerate(blocks, start=1):
        down, up = model._modules[f"down{k}"], model._modules[f"up{k}"]
        pairs += copy_conv(down["conv"], block.downconv)
        if block.downnorm is not None:
            pairs += copy_norm(down["norm"], block.downnorm)
        pairs += copy_conv(up["conv"], block.upconv)
        if block.upnorm is not None:
            pairs += copy_norm(up["norm"], block.upnorm)
    assert model.num_parameters() == torch_parameters(reference)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 2))
    out = compare(model, reference, x, pairs)
    assert out.shape == (2, 64, 64, 3) and np.abs(out.numpy()).max() <= 1


def test_unet_dropout_layout_and_counts():
    # unet_128 (7 levels) at ngf 8: two dropout blocks, as the reference's num_downs - 5
    model = Pix2PixGenerator(3, num_downs=7, ngf=8)
    assert dropout_levels(model) == [5, 6]
    model.build((1, 128, 128, 3))
    reference, _ = torch_unet(3, 3, 7, 8, "batch")
    assert model.num_parameters() == torch_parameters(reference)
    assert model.compute_output_shape((1, 128, 128, 3)) == (1, 128, 128, 3)


def test_unet_dropout_is_active_in_training_only():
    model = Pix2PixGenerator(1, num_downs=6, ngf=2, norm="instance")
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 1)).astype(np.float32)
    a, b = model(x).numpy(), model(x).numpy()
    assert not np.allclose(a, b)
    model.eval()
    assert np.array_equal(model(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_patchgan_matches_reference(norm):
    lamina.set_default_dtype(np.float64)
    torch.manual_seed(0)
    reference = torch_nlayer(6, 4, 3, norm).double()
    randomize(reference)
    model = PatchGANDiscriminator(ndf=4, n_layers=3, norm=norm)
    model.build((2, 32, 32, 6))
    convs = [m for m in reference if isinstance(m, tnn.Conv2d)]
    norms = [m for m in reference if isinstance(m, (tnn.BatchNorm2d, tnn.InstanceNorm2d))]
    body = model.body
    pairs = []
    for k, conv in enumerate(convs):
        pairs += copy_conv(body[f"conv{k}"], conv)
    for k, norm_module in enumerate(norms, start=1):
        pairs += copy_norm(body[f"norm{k}"], norm_module)
    assert model.num_parameters() == torch_parameters(reference)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 6))
    out = compare(model, reference, x, pairs)
    assert out.shape == (2, 2, 2, 1)


def test_pixelgan_matches_reference():
    lamina.set_default_dtype(np.float64)
    reference = torch_pixel(4, 3, "batch").double()
    randomize(reference)
    model = PatchGANDiscriminator(ndf=3, n_layers=0, norm="batch")
    model.build((2, 5, 5, 4))
    convs = [m for m in reference if isinstance(m, tnn.Conv2d)]
    pairs = []
    for k, conv in enumerate(convs):
        pairs += copy_conv(model.body[f"conv{k}"], conv)
    pairs += copy_norm(model.body["norm1"], reference[3])
    compare(model, reference, np.random.default_rng(0).standard_normal((2, 5, 5, 4)), pairs)


def test_patchgan_full_size_parameter_count():
    # the 70x70 PatchGAN, ndf 64, 3 input channels, instance norm (CycleGAN's D)
    reference = torch_nlayer(3, 64, 3, "instance")
    model = PatchGANDiscriminator(ndf=64, n_layers=3, norm="instance")
    model.build((1, 256, 256, 3))
    assert torch_parameters(reference) == 2_764_737
    assert model.num_parameters() == 2_764_737
    assert model.compute_output_shape((1, 256, 256, 3)) == (1, 30, 30, 1)
    # pix2pix's D sees the 6 channels of the pair, with batch norm
    model = PatchGANDiscriminator(norm="batch")
    model.build((1, 256, 256, 6))
    assert model.num_parameters() == torch_parameters(torch_nlayer(6, 64, 3, "batch"))


def test_errors_name_the_problem():
    model = Pix2PixGenerator(1, num_downs=3, ngf=2, in_channels=1)
    with pytest.raises(ShapeError, match=r"multiples of 2\^num_downs = 8"):
        model(np.zeros((1, 12, 16, 1), np.float32))
    with pytest.raises(ShapeError, match="expected 1 channels"):
        model(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ShapeError, match="multiples of 2"):
        Pix2PixGenerator(1, num_downs=3).build((1, 4, 4, 1))
    with pytest.raises(ValueError, match="norm must be one of"):
        Pix2PixGenerator(1, norm="layer")
    with pytest.raises(ValueError, match="num_downs must be at least 2"):
        Pix2PixGenerator(1, num_downs=1)
    disc = PatchGANDiscriminator(ndf=2, n_layers=1, in_channels=6)
    with pytest.raises(ShapeError, match="expected 6 channels"):
        disc(np.zeros((1, 16, 16, 3), np.float32))
