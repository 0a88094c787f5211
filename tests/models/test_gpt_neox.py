"""GPT-NeoX (Pythia) in Hugging Face's layout against a PyTorch reference of
GPTNeoXForCausalLM: the fused query_key_value with its per-head [heads, 3, head_dim] rows,
partial rotary positions, parallel (and sequential) residuals, LayerNorms, the untied
embed_out; cached and left-padded generation, Pythia's parameter counts and the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from language_model_checks import assert_cached_generation_equals_rerun
from lm_family_checks import (
    assert_left_padded_greedy_generation,
    assert_loader_errors,
    assert_logits_and_gradients_match,
    assert_padding_matches,
)
from torch_lm_families_reference import GPTNeoXForCausalLM

import lamina
from helpers import check_gradients, randn
from lamina import models
from lamina.models.gpt_neox import GPTNeoXLayer, hf_gpt_neox_table
from lamina.nn import MultiHeadAttention, init

TINY = {"vocab_size": 13, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "rotary_pct": 0.5, "rotary_emb_base": 500.0}


def _pair(seed: int = 0, **options):
    config = {**TINY, **options}
    torch.manual_seed(seed)
    reference = GPTNeoXForCausalLM(config).double()
    model = models.GPTNeoX(**config)
    models.load_hf_gpt_neox_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("options", [{}, {"use_parallel_residual": False, "rotary_pct": 0.25},
                                     {"rotary_pct": 1.0}])
def test_logits_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    rotary = model.layers[0].attention.rotary_dims
    assert rotary == int(8 * model.get_config()["rotary_pct"])
    assert_logits_and_gradients_match(model, reference, hf_gpt_neox_table(model), TINY["vocab_size"])


def test_partial_rotary_leaves_the_other_features_unturned(f64):
    attention = MultiHeadAttention(8, 1, rotary=True, rotary_dims=4)
    heads = randn(1, 1, 5, 8)
    turned = attention._rotate(lamina.tensor(heads), offset=0).numpy()
    assert np.array_equal(turned[..., 4:], heads[..., 4:])
    assert np.abs(turned[..., 1:, :4] - heads[..., 1:, :4]).max() > 1e-3
    with pytest.raises(ValueError, match="rotary features"):
        MultiHeadAttention(8, 1, rotary=True, rotary_dims=3)


def test_layer_gradients_by_finite_differences(f64):
    layer = GPTNeoXLayer(8, 2, 12, rotary_pct=0.5)
    assert check_gradients(lambda x: layer(x), randn(2, 3, 8))


def test_padding_and_generation(f64):
    model, reference = _pair(1)
    assert_padding_matches(model, reference)
    assert_left_padded_greedy_generation(model)
    assert_cached_generation_equals_rerun(lambda vocab_size: models.GPTNeoX(
        **{**TINY, "vocab_size": vocab_size, "max_position_embeddings": 16, "initializer_range": 0.5}))


def test_parameter_counts_of_pythia():
    for name, count in {"pythia_70m": 70_426_624, "pythia_160m": 162_322_944}.items():
        with init.meta():
            model = models.gpt_neox(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
        config = model.get_config()
        assert models.gpt_neox_parameter_count(config["vocab_size"], config["hidden_size"],
                                               config["intermediate_size"], config["num_hidden_layers"]) == count
    assert isinstance(models.get_model("gpt_neox"), models.GPTNeoX)


def test_loader_sorts_the_interleaved_heads_and_checks_keys(f64):
    model, reference = _pair(2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    fused = arrays["gpt_neox.layers.0.attention.query_key_value.weight"]       # rows [head, (q, k, v), 8]
    in_weight = model.layers[0].attention.in_weight.numpy()
    head1_key_rows = fused[1 * 24 + 8:1 * 24 + 16]
    assert np.array_equal(in_weight[:, 32 + 8:32 + 16], head1_key_rows.T)
    buffers = {"gpt_neox.layers.0.attention.bias": np.ones((1, 1, 4, 4)),
               "gpt_neox.layers.0.attention.masked_bias": np.array(-1e9)}
    models.load_hf_gpt_neox_state_dict(models.GPTNeoX(**TINY), {**arrays, **buffers})      # ignored
    assert_loader_errors(models.load_hf_gpt_neox_state_dict, lambda: models.GPTNeoX(**TINY), arrays,
                         "layers.1.attention.query_key_value.bias",
                         models.GPTNeoX(**{**TINY, "intermediate_size": 48}), "dense_h_to_4h", "GPTNeoX")
