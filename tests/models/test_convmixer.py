"""ConvMixer: timm's parameter counts, summary rows, a block and a small network against torch
references with timm's names (outputs and every gradient, float64), finite differences,
configs and saving, and bad arguments."""

import numpy as np
import pytest
import torch
import torch_timm_zoo as tt
from timm_checks import compare_with_reference
from zoo_checks import check_config_and_save_load, check_published_size, random_inputs

import lamina
from helpers import check_gradients, randn
from lamina import models, nn
from lamina.analysis import summary
from lamina.models import ConvMixerResidual

# timm's parameter counts with 1000 classes at 224x224x3
PUBLISHED = {"convmixer_1536_20": 51_625_960, "convmixer_768_32": 21_110_248,
             "convmixer_1024_20_ks9_p14": 24_383_464}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_timm_parameter_counts(name):
    check_published_size(name, PUBLISHED[name], None)
    assert name in models.list_models(module="classification")


def test_summary_rows_and_activations():
    rows = {r["name"]: r for r in summary(models.convmixer_1024_20_ks9_p14).rows}
    assert rows["stem.0"]["output_shape"] == [16, 16, 1024]
    assert rows["blocks.0.0.fn.0"]["params"] == 1024 * 81 + 1024                  # depthwise 9x9
    assert rows["blocks.0.0.fn.0"]["macs"] == 16 * 16 * 1024 * 81
    assert rows["blocks.19.1"]["macs"] == 16 * 16 * 1024 * 1024                   # pointwise
    assert isinstance(models.convmixer_768_32()["blocks"]["0"]["2"], nn.ReLU)     # timm's 768/32 uses ReLU
    assert isinstance(models.convmixer_1536_20()["stem"]["1"], nn.GELU)


def test_block_matches_torch():
    block = models.convmixer(6, 1, 3, 1, num_classes=2, input_shape=(5, 5, 6))["blocks"]["0"]
    compare_with_reference(block, tt.convmixer_block(6, 3), randn(2, 5, 5, 6), images=True)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_small_convmixer_matches_torch(activation):
    model = models.convmixer(8, 2, 3, 2, activation, num_classes=5, input_shape=(8, 8, 3))
    act = torch.nn.GELU if activation == "gelu" else torch.nn.ReLU
    compare_with_reference(model, tt.ConvMixer(8, 2, 3, 2, 3, 5, act), randn(2, 8, 8, 3, seed=1), images=True,
                           seed=1)


def test_residual_gradients_by_finite_differences():
    lamina.set_default_dtype(np.float64)
    residual = ConvMixerResidual(nn.Sequential(nn.Conv2D(3, 3, padding=1, groups=3), nn.GELU()))
    residual.build((None, 4, 4, 3))
    assert check_gradients(lambda x: residual(x), randn(2, 4, 4, 3, seed=2))


def test_config_and_save_load(tmp_path):
    model = models.convmixer(8, 2, 3, 2, num_classes=5, input_shape=(8, 8, 3))
    model.build((None, 8, 8, 3))
    check_config_and_save_load(model, random_inputs((2, 8, 8, 3), 3), tmp_path / "convmixer.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        models.convmixer(8, 2, 4, 2)
    with pytest.raises(ValueError, match="'gelu' or 'relu'"):
        models.convmixer(8, 2, 3, 2, "tanh")
    with pytest.raises(ValueError, match="depth"):
        models.convmixer(8, 0)
