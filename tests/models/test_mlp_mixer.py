"""MLP-Mixer and ResMLP: timm's parameter counts, summary rows, the blocks and small networks
against torch references with timm's names (outputs and every gradient, float64), finite
differences, configs and saving, bad arguments, and a small Mixer learning 8x8 digits."""

import time

import numpy as np
import pytest
import torch_timm_zoo as tt
from timm_checks import compare_with_reference
from zoo_checks import check_config_and_save_load, check_published_size, eval_output, random_inputs

import lamina
from helpers import check_gradients, randn, train_classifier
from lamina import models
from lamina.analysis import summary
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import Affine, MixerBlock, ResMLPBlock
from lamina.optim import Adam

# timm's parameter counts with 1000 classes at 224x224x3
PUBLISHED = {
    "mixer_s32_224": 19_104_624, "mixer_s16_224": 18_528_264, "mixer_b32_224": 60_293_428,
    "mixer_b16_224": 59_880_472, "mixer_l16_224": 208_196_168, "resmlp_12_224": 15_350_872,
    "resmlp_24_224": 30_020_680,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_timm_parameter_counts(name):
    check_published_size(name, PUBLISHED[name], None)
    assert name in models.list_models(module="classification")


def test_mixer_summary_rows_and_macs():
    result = summary(models.mixer_b16_224)
    rows = {r["name"]: r for r in result.rows}
    assert result.total_params == 59_880_472
    assert rows["stem.proj"]["output_shape"] == [14, 14, 768]
    assert rows["blocks.0.mlp_tokens.fc1"]["output_shape"] == [768, 384]      # over the 196 patches
    assert rows["blocks.0.mlp_tokens.fc1"]["macs"] == 768 * 196 * 384
    assert rows["blocks.0.mlp_channels.fc1"]["macs"] == 196 * 768 * 3072
    per_block = 2 * 768 * 196 * 384 + 2 * 196 * 768 * 3072
    pooling = 196 * 768                                                         # the mean over the patches
    assert result.total_macs == 196 * 768 * 16 * 16 * 3 + 12 * per_block + pooling + 768 * 1000
    assert rows["pool"]["macs"] == pooling


def test_resmlp_summary_rows():
    rows = {r["name"]: r for r in summary(models.resmlp_12_224).rows}
    assert rows["blocks.0.linear_tokens"]["params"] == 196 * 196 + 196
    assert rows["blocks.0.linear_tokens"]["macs"] == 384 * 196 * 196
    assert rows["blocks.0.norm1"]["params"] == 2 * 384
    assert rows["blocks.11"]["params"] == 2 * 384                               # its own: the layer scales


def test_mixer_block_matches_torch():
    compare_with_reference(MixerBlock(6, 5, 3, 8), tt.MixerBlock(6, 5, 3, 8), randn(2, 5, 6), images=False)


def test_resmlp_block_and_affine_match_torch():
    compare_with_reference(ResMLPBlock(6, 5, 8, init_values=0.3), tt.ResBlock(6, 5, 8, 0.3), randn(2, 5, 6, seed=1),
                           images=False, seed=1)
    compare_with_reference(Affine(), tt.Affine(4), randn(3, 2, 4, seed=2), images=False, seed=2)


def test_small_mixer_and_resmlp_match_torch():
    x = randn(2, 8, 8, 3, seed=3)
    compare_with_reference(models.mlp_mixer(4, 8, 2, num_classes=5, input_shape=(8, 8, 3)),
                           tt.MlpMixer(8, 4, 3, 8, 2, 5), x, images=True, seed=3)
    compare_with_reference(models.resmlp(4, 8, 2, num_classes=5, input_shape=(8, 8, 3)),
                           tt.MlpMixer(8, 4, 3, 8, 2, 5, resmlp=True), x, images=True, seed=4)


@pytest.mark.parametrize("make", [lambda: MixerBlock(4, 3, 2, 5), lambda: ResMLPBlock(4, 3, 5, init_values=0.5)])
def test_blocks_gradients_by_finite_differences(make):
    lamina.set_default_dtype(np.float64)
    block = make()
    block.build((None, 3, 4))
    assert check_gradients(lambda x: block(x), randn(2, 3, 4, seed=5))


def test_config_and_save_load(tmp_path):
    x = random_inputs((2, 8, 8, 3), 6)
    for k, model in enumerate([models.mlp_mixer(4, 8, 2, num_classes=5, input_shape=(8, 8, 3)),
                               models.resmlp(4, 8, 1, num_classes=5, input_shape=(8, 8, 3))]):
        model.build((None, 8, 8, 3))
        check_config_and_save_load(model, x, tmp_path / f"model{k}.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        models.mlp_mixer(16, input_shape=(40, 40, 3))
    with pytest.raises(ValueError, match="dim"):
        models.resmlp(dim=0)
    block = MixerBlock(4, 3, 2, 5)
    with pytest.raises(ShapeError, match="made for 3"):
        block.build((None, 5, 4))
    model = models.mlp_mixer(4, 8, 1, num_classes=2, input_shape=(8, 8, 1))
    model.build((None, 8, 8, 1))
    with pytest.raises(ShapeError):
        model(np.zeros((1, 12, 12, 1), np.float32))


def test_a_small_mixer_learns_digits():
    """A 2-block Mixer on 2x2 patches of the 8x8 digits (16 patches of width 32) reaches a high
    held-out accuracy after a few epochs of Adam."""
    start = time.perf_counter()
    images, labels = load_digits(size=8)
    x = images.astype(np.float32) / 255.0
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    model = models.mlp_mixer(2, 32, 2, num_classes=10, input_shape=(8, 8, 1))
    model.build((None, 8, 8, 1))
    optimizer = Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    batches = (rows for _ in range(8) for rows in np.array_split(rng.permutation(train), len(train) // 64))
    train_classifier(model, x, labels, batches, optimizer)
    accuracy = float((eval_output(model, x[test]).argmax(axis=1) == labels[test]).mean())
    print(f"tiny Mixer on 8x8 digits: held-out accuracy {accuracy:.3f} in {time.perf_counter() - start:.1f} s")
    assert accuracy > 0.9
