"""GPT-2 in Hugging Face's layout: outputs and gradients against a PyTorch reference written
with Hugging Face's names (weights moved by load_hf_gpt2_state_dict), parameter counts,
cached generation, a quick overfit, and the loader's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from language_model_checks import assert_cached_generation_equals_rerun, assert_overfits_a_short_text
from reference_checks import assert_gradients_match_the_table, backward_with_one_upstream
from torch_gpt2_reference import GPT2LMHeadModel

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import models, saving
from lamina.io.safetensors import save_file
from lamina.models.gpt2 import GPT2Block, hf_gpt2_table
from lamina.nn import init

TINY = {"vocab_size": 13, "n_positions": 8, "n_embd": 8, "n_layer": 2, "n_head": 2}


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    reference = GPT2LMHeadModel(**TINY).double()
    model = models.GPT2(**TINY, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    models.load_hf_gpt2_state_dict(model, reference.state_dict())
    return model, reference


def test_logits_and_gradients_equal_the_reference(f64):
    model, reference = _pair()
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 6))
    ours = model(ids)
    theirs = reference(torch.tensor(ids))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "logits")
    backward_with_one_upstream(ours, theirs)
    grads = {key: value.grad.numpy() for key, value in reference.transformer.named_parameters()}
    assert_gradients_match_the_table(model, hf_gpt2_table(TINY["n_layer"]), grads)


def test_padding_mask_matches_the_reference(f64):
    model, reference = _pair(1)
    ids = np.array([[0, 3, 4, 5, 6], [0, 0, 7, 8, 9]])      # left padding: a causal model reads the pads
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    ours = model(ids, key_mask=mask.astype(bool)).numpy()
    theirs = reference(torch.tensor(ids), torch.tensor(mask)).detach().numpy()
    real = mask.astype(bool)
    assert_close(ours[real], theirs[real], 1e-10, "logits at real tokens")


def test_block_gradients_by_finite_differences(f64):
    block = GPT2Block(4, 2, resid_pdrop=0.0, attn_pdrop=0.0)
    assert check_gradients(lambda x: block(x), randn(2, 3, 4))


def test_parameter_counts_of_the_full_sizes():
    expected = {"small": 124_439_808, "medium": 354_823_168, "large": 774_030_080, "xl": 1_557_611_200}
    for size, count in expected.items():
        config = models.gpt2(size).get_config()
        assert models.gpt2_parameter_count(config["vocab_size"], config["n_positions"], config["n_embd"],
                                           config["n_layer"]) == count, size
    with init.meta():            # shape-only weights: the full model costs no memory
        model = models.gpt2("small")
        model.build((None, 1))
    assert model.num_parameters() == expected["small"]
    tiny = models.GPT2(**TINY)
    tiny.build((None, 1))
    assert tiny.num_parameters() == models.gpt2_parameter_count(13, 8, 8, 2)


def test_cached_generation_equals_rerun_generation(f64):
    assert_cached_generation_equals_rerun(lambda vocab_size: models.GPT2(
        vocab_size=vocab_size, n_positions=16, n_embd=8, n_layer=2, n_head=2))


def test_a_tiny_gpt2_overfits_a_short_text():
    assert_overfits_a_short_text(lambda vocab_size: models.GPT2(
        vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2, embd_pdrop=0.0, resid_pdrop=0.0,
        attn_pdrop=0.0), steps=120)


def test_dropout_acts_in_training_only():
    lamina.manual_seed(0)
    model = models.GPT2(**TINY)
    ids = np.array([[1, 2, 3, 4]])
    assert not np.allclose(model(ids).numpy(), model(ids).numpy())
    model.eval()
    assert np.allclose(model(ids).numpy(), model(ids).numpy())


def test_loading_from_safetensors_and_its_checks(tmp_path, f64):
    model, reference = _pair(2)
    arrays = {k.removeprefix("transformer."): v.numpy() for k, v in reference.state_dict().items()
              if k != "lm_head.weight"}
    path = tmp_path / "model.safetensors"
    save_file(arrays, path)
    loaded = models.GPT2(**TINY)
    models.load_hf_gpt2_state_dict(loaded, path)
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    with pytest.raises(KeyError, match="missing keys.*h.1.mlp.c_fc.bias"):
        models.load_hf_gpt2_state_dict(models.GPT2(**TINY),
                                       {k: v for k, v in arrays.items() if k != "h.1.mlp.c_fc.bias"})
    with pytest.raises(KeyError, match="unexpected keys.*score.weight"):
        models.load_hf_gpt2_state_dict(models.GPT2(**TINY), {**arrays, "score.weight": np.zeros((2, 8))})
    with pytest.raises(lamina.ShapeError, match="wte.weight"):
        models.load_hf_gpt2_state_dict(models.GPT2(**{**TINY, "vocab_size": 14}), arrays)
    with pytest.raises(ValueError, match="size must be one of"):
        models.gpt2("huge")
    with pytest.raises(ValueError, match="n_embd 8 is not divisible by n_head 3"):
        models.GPT2(n_embd=8, n_head=3)


def test_weights_start_as_hugging_face_initializes_them():
    lamina.manual_seed(0)
    model = models.GPT2(vocab_size=200, n_positions=64, n_embd=64, n_layer=8, n_head=4)
    model.build((None, 1))
    residual = 0.02 / np.sqrt(2 * 8)
    assert abs(model.wte.weight.numpy().std() - 0.02) < 0.002
    assert abs(model.wpe.weight.numpy().std() - 0.02) < 0.002
    block = model.h[0]
    assert abs(block.self_attention.in_weight.numpy().std() - 0.02) < 0.002
    assert abs(block.linear1.weight.numpy().std() - 0.02) < 0.002
    assert abs(block.self_attention.out_weight.numpy().std() - residual) < 0.1 * residual
    assert abs(block.linear2.weight.numpy().std() - residual) < 0.1 * residual
    assert not block.linear2.bias.numpy().any()


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.GPT2(**TINY)
    model.eval()
    ids = np.array([[1, 2, 3]])
    expected = model(ids).numpy()
    saving.save(model, tmp_path / "gpt2.lamina")
    loaded = saving.load(tmp_path / "gpt2.lamina")
    loaded.eval()
    assert isinstance(loaded, models.GPT2) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids).numpy(), expected)
