"""CycleGAN's ResnetGenerator against a torch rewrite of the reference code, in float64."""

import numpy as np
import pytest
import torch
from image_translation_reference import (
    compare,
    randomize,
    resnet_generator_pairs,
    torch_parameters,
    torch_resnet_generator,
)

import lamina
from lamina.errors import ShapeError
from lamina.models import ResnetBlock, ResnetGenerator


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_matches_reference(norm):
    lamina.set_default_dtype(np.float64)
    torch.manual_seed(0)
    reference = torch_resnet_generator(2, 3, 4, 2, norm).double()
    randomize(reference)
    model = ResnetGenerator(3, ngf=4, n_blocks=2, norm=norm)
    model.build((2, 12, 8, 2))
    pairs = resnet_generator_pairs(model, reference)
    assert model.num_parameters() == torch_parameters(reference)
    out = compare(model, reference, np.random.default_rng(0).standard_normal((2, 12, 8, 2)), pairs)
    assert out.shape == (2, 12, 8, 3)


def test_full_size_parameter_counts():
    # resnet_9blocks, 3 -> 3 channels, ngf 64, instance norm: the reference's 11,378,179
    reference = torch_resnet_generator(3, 3, 64, 9, "instance")
    assert torch_parameters(reference) == 11_378_179
    model = ResnetGenerator(3, ngf=64, n_blocks=9, norm="instance")
    model.build((1, 256, 256, 3))
    assert model.num_parameters() == 11_378_179
    assert model.compute_output_shape((1, 256, 256, 3)) == (1, 256, 256, 3)
    model = ResnetGenerator(3, ngf=64, n_blocks=6, norm="batch")
    model.build((1, 128, 128, 3))
    assert model.num_parameters() == torch_parameters(torch_resnet_generator(3, 3, 64, 6, "batch"))


def test_residual_block_and_dropout():
    block = ResnetBlock(3, norm=None, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 3)).astype(np.float32)
    a, b = block(x).numpy(), block(x).numpy()
    assert not np.allclose(a, b)
    block.eval()
    assert np.array_equal(block(x).numpy(), block(x).numpy())


def test_errors_name_the_problem():
    model = ResnetGenerator(1, ngf=2, n_blocks=1, in_channels=1)
    with pytest.raises(ShapeError, match="multiples of 4"):
        model(np.zeros((1, 10, 8, 1), np.float32))
    with pytest.raises(ShapeError, match="expected 1 channels"):
        model(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ShapeError, match="expected 4 channels"):
        ResnetBlock(4)(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="n_blocks must be an int"):
        ResnetGenerator(3, n_blocks=-1)
