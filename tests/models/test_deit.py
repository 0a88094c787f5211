"""DeiT: timm's parameter counts, summary rows, attention, blocks and small networks (plain and
distilled, evaluation and training mode) against torch references with timm's names
(outputs and every gradient, float64), the hard distillation loss against torch, finite
differences, configs and saving, and bad arguments."""

import numpy as np
import pytest
import torch
import torch_timm_zoo as tt
from timm_checks import compare_with_reference
from zoo_checks import check_config_and_save_load, check_published_size, random_inputs

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import models
from lamina.analysis import summary
from lamina.errors import ShapeError
from lamina.models import DeiTAttention, DeiTBlock, hard_distillation_loss

# timm's parameter counts with 1000 classes at 224x224x3
PUBLISHED = {
    "deit_tiny_patch16_224": 5_717_416, "deit_small_patch16_224": 22_050_664, "deit_base_patch16_224": 86_567_656,
    "deit_tiny_distilled_patch16_224": 5_910_800, "deit_small_distilled_patch16_224": 22_436_432,
    "deit_base_distilled_patch16_224": 87_338_192,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_timm_parameter_counts(name):
    check_published_size(name, PUBLISHED[name], None)
    assert name in models.list_models(module="classification")


def test_summary_rows_and_macs():
    result = summary(models.deit_tiny_distilled_patch16_224)
    rows = {r["name"]: r for r in result.rows}
    assert result.total_params == 5_910_800
    assert rows["patch_embed.proj"]["output_shape"] == [14, 14, 192]
    assert rows["blocks.0.attn.qkv"]["output_shape"] == [198, 576]                # 196 patches + 2 tokens
    assert rows["blocks.0.attn.attend"]["macs"] == 2 * 198 * 198 * 192              # Q K^T and A V
    assert rows["head_dist"]["params"] == 192 * 1000 + 1000
    assert rows["deit_tiny_distilled_patch16_224"]["params"] == 2 * 192 + 198 * 192  # the tokens and positions
    assert abs(summary(models.deit_tiny_patch16_224).total_macs / 1e9 - 1.26) < 0.02   # timm's 1.3 GMACs


def test_attention_and_block_match_torch():
    compare_with_reference(DeiTAttention(6, 2), tt.Attention(6, 2), randn(2, 5, 6), images=False)
    compare_with_reference(DeiTBlock(6, 3, 12), tt.Block(6, 3, 12), randn(2, 4, 6, seed=1), images=False, seed=1)


@pytest.mark.parametrize("distilled", [False, True])
def test_small_deit_matches_torch(distilled):
    x = randn(2, 8, 8, 3, seed=2)
    model = models.deit(4, 8, 2, 2, distilled=distilled, num_classes=5, input_shape=(8, 8, 3))
    compare_with_reference(model, tt.DeiT(8, 4, 3, 8, 2, 2, 5, distilled), x, images=True, seed=2)


def test_distilled_deit_in_training_mode_gives_both_logits():
    x = randn(2, 8, 8, 3, seed=3)
    model = models.deit(4, 8, 1, 2, distilled=True, num_classes=5, input_shape=(8, 8, 3))
    scores, scores_dist = compare_with_reference(model, tt.DeiT(8, 4, 3, 8, 1, 2, 5, True), x, images=True, seed=3,
                                                 training=True)
    model.eval()
    with lamina.no_grad():
        mean = model(lamina.tensor(x)).numpy()
    np.testing.assert_allclose(mean, (scores.numpy() + scores_dist.numpy()) / 2, rtol=1e-12)


def test_hard_distillation_loss_matches_torch():
    rng = np.random.default_rng(4)
    labels, teacher = rng.integers(0, 5, size=6), rng.standard_normal((6, 5))

    def torch_loss(scores, scores_dist):
        ce = torch.nn.functional.cross_entropy
        hard = torch.from_numpy(teacher).argmax(dim=1)
        return ce(scores, torch.from_numpy(labels)) / 2 + ce(scores_dist, hard) / 2

    compare_with_torch(lambda a, b: hard_distillation_loss((a, b), labels, teacher), torch_loss, randn(6, 5, seed=5),
                       randn(6, 5, seed=6), dtype=np.float64)
    with pytest.raises(TypeError, match="pair"):
        hard_distillation_loss(lamina.tensor(randn(6, 5)), labels, teacher)
    with pytest.raises(ShapeError, match="teacher_logits"):
        hard_distillation_loss((lamina.tensor(randn(6, 5)), lamina.tensor(randn(6, 5))), labels, teacher[:, :4])


def test_block_gradients_by_finite_differences():
    lamina.set_default_dtype(np.float64)
    block = DeiTBlock(4, 2, 6)
    block.build((None, 3, 4))
    assert check_gradients(lambda x: block(x), randn(2, 3, 4, seed=7))


def test_config_and_save_load(tmp_path):
    model = models.deit(4, 8, 2, 2, distilled=True, num_classes=5, input_shape=(8, 8, 3))
    model.build((None, 8, 8, 3))
    check_config_and_save_load(model, random_inputs((2, 8, 8, 3), 8), tmp_path / "deit.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        DeiTAttention(6, 4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        models.deit(16, input_shape=(40, 40, 3))
    model = models.deit(4, 8, 1, 2, num_classes=3, input_shape=(8, 8, 1))
    model.build((None, 8, 8, 1))
    with pytest.raises(ShapeError, match="4 patches of 4x4"):
        model(np.zeros((1, 12, 12, 1), np.float32))
    with pytest.raises(ShapeError, match="multiples of the patch size"):
        model.compute_output_shape((None, 10, 8, 1))


def test_load_timm_state_dict_checks_keys_and_shapes():
    model = models.deit(4, 8, 1, 2, distilled=True, num_classes=5, input_shape=(8, 8, 3))
    state = tt.DeiT(8, 4, 3, 8, 1, 2, 5, distilled=True).state_dict()
    models.load_timm_state_dict(model, state)
    np.testing.assert_array_equal(model.blocks["0"].attn.qkv.weight.numpy(),
                                  state["blocks.0.attn.qkv.weight"].numpy().T)
    del state["dist_token"]
    with pytest.raises(KeyError, match=r"load_timm_state_dict: missing keys \['dist_token'\]"):
        models.load_timm_state_dict(model, state)
    state["dist_token"] = torch.zeros(1, 1, 9)
    with pytest.raises(ShapeError, match="load_timm_state_dict: .*'dist_token'"):
        models.load_timm_state_dict(model, state)
