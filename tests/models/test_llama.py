"""Llama in Hugging Face's layout: outputs and gradients against a PyTorch reference written
with Hugging Face's names (weights moved by load_hf_llama_state_dict), parameter counts,
cached generation and beam search, a quick overfit, and the loader's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from language_model_checks import assert_cached_generation_equals_rerun, assert_overfits_a_short_text
from reference_checks import assert_gradients_match_the_table, backward_with_one_upstream
from torch_llama_reference import LlamaForCausalLM

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import models, saving
from lamina.io.safetensors import save_file
from lamina.models.llama import LlamaDecoderLayer, hf_llama_table
from lamina.nn import init

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 500.0}


def _pair(seed: int = 0, **options):
    config = {**TINY, **options}
    torch.manual_seed(seed)
    reference = LlamaForCausalLM(config).double()
    model = models.Llama(**config)
    models.load_hf_llama_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("options", [{}, {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True,
                                          "num_key_value_heads": 1}])
def test_logits_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 7))
    ours = model(ids)
    theirs = reference(torch.tensor(ids))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "logits")
    backward_with_one_upstream(ours, theirs)
    grads = {key.removeprefix("model."): value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_llama_table(model), grads, every_parameter=True)


def test_padding_mask_matches_the_reference(f64):
    model, reference = _pair(1)
    ids = np.array([[0, 3, 4, 5, 6], [0, 0, 7, 8, 9]])      # left padding: later queries see it
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    ours = model(ids, key_mask=mask.astype(bool)).numpy()
    theirs = reference(torch.tensor(ids), torch.tensor(mask)).detach().numpy()
    real = mask.astype(bool)
    assert_close(ours[real], theirs[real], 1e-10, "logits at real tokens")


def test_layer_gradients_by_finite_differences(f64):
    layer = LlamaDecoderLayer(8, 4, 12, num_key_value_heads=2, attention_bias=True)
    assert check_gradients(lambda x: layer(x), randn(2, 3, 8))


def test_parameter_counts_of_the_published_configs():
    expected = {"tinyllama_1.1b": 1_100_048_384, "llama2_7b": 6_738_415_616, "llama2_13b": 13_015_864_320,
                "llama2_70b": 68_976_648_192, "llama3_8b": 8_030_261_248}
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "tie_word_embeddings")
    for name, count in expected.items():
        config = models.llama(name).get_config()
        assert models.llama_parameter_count(*(config[key] for key in keys)) == count, name
    for name in ("tinyllama_1.1b", "llama2_7b"):
        with init.meta():            # shape-only weights: the full model costs no memory
            model = models.llama(name)
            model.build((None, 1))
        assert model.num_parameters() == expected[name], name
    tied = models.Llama(**TINY, tie_word_embeddings=True)
    tied.build((None, 1))
    assert tied.num_parameters() == models.llama_parameter_count(13, 16, 24, 2, 4, 2, tie_word_embeddings=True)
    assert "llama" in models.list_models("language")
    assert isinstance(models.get_model("llama", config="tiny"), models.Llama)


def test_cached_generation_equals_rerun_generation_and_beam_search(f64):
    fast = assert_cached_generation_equals_rerun(lambda vocab_size: models.Llama(
        **{**TINY, "vocab_size": vocab_size, "max_position_embeddings": 16, "initializer_range": 0.5}))
    assert len({tuple(h.ids) for h in fast}) == 3
    scores = [h.log_prob for h in fast]
    assert scores == sorted(scores, reverse=True)


def test_a_tiny_llama_overfits_a_short_text():
    assert_overfits_a_short_text(lambda vocab_size: models.llama(
        "tiny", vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2), steps=100)


def test_loading_from_safetensors_and_its_checks(tmp_path, f64):
    model, reference = _pair(2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file({**arrays, "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(2)}, path)
    loaded = models.Llama(**TINY)
    models.load_hf_llama_state_dict(loaded, path)
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    with pytest.raises(KeyError, match="missing keys.*layers.1.mlp.up_proj.weight"):
        models.load_hf_llama_state_dict(models.Llama(**TINY),
                                        {k: v for k, v in arrays.items() if k != "model.layers.1.mlp.up_proj.weight"})
    with pytest.raises(KeyError, match="missing keys.*lm_head.weight"):
        models.load_hf_llama_state_dict(models.Llama(**TINY),
                                        {k: v for k, v in arrays.items() if k != "lm_head.weight"})
    with pytest.raises(KeyError, match="unexpected keys.*score.weight"):
        models.load_hf_llama_state_dict(models.Llama(**TINY), {**arrays, "score.weight": np.zeros((2, 16))})
    with pytest.raises(lamina.ShapeError, match="embed_tokens.weight"):
        models.load_hf_llama_state_dict(models.Llama(**{**TINY, "vocab_size": 14}), arrays)
    with pytest.raises(lamina.ShapeError, match="self_attn.in_weight"):     # 4 key/value heads expected, not 2
        models.load_hf_llama_state_dict(models.Llama(**{**TINY, "num_key_value_heads": 4}), arrays)
    with pytest.raises(TypeError, match="expected a Llama model"):
        models.load_hf_llama_state_dict(models.GPT2(n_embd=8, n_head=2, n_layer=1), arrays)
    with pytest.raises(ValueError, match="config must be one of"):
        models.llama("llama9_1t")
    with pytest.raises(ValueError, match="num_key_value_heads 3 must divide num_attention_heads 4"):
        models.Llama(**{**TINY, "num_key_value_heads": 3})


def test_loading_bfloat16_shards_through_their_index(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    _, reference = _pair(4)
    weights = {key: value.to(torch.bfloat16).contiguous() for key, value in reference.state_dict().items()}
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        safetensors_torch.save_file({key: weights[key] for key in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {key: shard for shard, keys in shards.items() for key in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    from_files = models.Llama(**TINY)
    models.load_hf_llama_state_dict(from_files, tmp_path)          # the folder: found through the index
    from_tensors = models.Llama(**TINY)
    models.load_hf_llama_state_dict(from_tensors, weights)        # bfloat16 torch tensors
    expected = weights["model.layers.1.mlp.down_proj.weight"].float().numpy().T
    assert np.array_equal(from_files.layers[1].mlp.down_proj.weight.numpy(), expected)
    for key, value in from_tensors.state_dict().items():
        assert np.array_equal(from_files.state_dict()[key], value), key
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor"):
        models.load_hf_llama_state_dict(models.Llama(**TINY), empty)


def test_a_tied_model_ignores_the_head_copy_and_shares_the_table(f64):
    model, reference = _pair(3, tie_word_embeddings=True)
    assert "lm_head.weight" in reference.state_dict()      # the tied copy, ignored by the loader
    assert not hasattr(model, "lm_head") or model._modules.get("lm_head") is None
    ids = np.array([[1, 2, 3]])
    assert_close(model(ids).numpy(), reference(torch.tensor(ids)).detach().numpy(), 1e-10, "tied logits")


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.Llama(**TINY)
    model.eval()
    ids = np.array([[1, 2, 3]])
    expected = model(ids).numpy()
    saving.save(model, tmp_path / "llama.lamina")
    loaded = saving.load(tmp_path / "llama.lamina")
    loaded.eval()
    assert isinstance(loaded, models.Llama) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids).numpy(), expected)
