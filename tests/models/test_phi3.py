"""Phi-3 in Hugging Face's layout against a PyTorch reference of Phi3ForCausalLM: the fused
qkv_proj and gate_up_proj split by the loader, LongRoPE ('longrope' or the older 'su') with
its short and long factors around original_max_position_embeddings, partial rotary
(partial_rotary_factor, Phi-4-mini's), cached and left-padded generation, the parameter count
of Phi-3-mini and the loader's errors."""

from __future__ import annotations

import numpy as np
import pytest
from language_model_checks import assert_cached_generation_equals_rerun
from lm_family_checks import (
    assert_left_padded_greedy_generation,
    assert_loader_errors,
    assert_logits_and_gradients_match,
    assert_padding_matches,
    loaded_pair,
)

import lamina
from lamina import models
from lamina.models.phi3 import hf_phi3_table
from lamina.nn import init

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500.0}
LONGROPE = {"short_factor": [1.0, 1.7], "long_factor": [2.5, 6.0]}


def _pair(seed: int = 0, **options):
    return loaded_pair(models.Phi3, models.load_hf_phi3_state_dict, "phi3", {**TINY, **options}, seed)


@pytest.mark.parametrize("options", [
    {}, {"sliding_window": 3, "num_key_value_heads": 4},
    # 9 steps past the original context of 8: the long factors (and an attention factor)
    {"rope_scaling": {"rope_type": "longrope", **LONGROPE}, "max_position_embeddings": 32,
     "original_max_position_embeddings": 8},
    # within the original context of 16: the short factors; 'su' is LongRoPE's former name
    {"rope_scaling": {"type": "su", **LONGROPE}, "max_position_embeddings": 64,
     "original_max_position_embeddings": 16},
    # partial rotary: 2 of 4 features, 6 of 8, and LongRoPE's factors over the 4 turned of 8
    {"partial_rotary_factor": 0.5}, {"head_dim": 8, "partial_rotary_factor": 0.75},
    {"head_dim": 8, "partial_rotary_factor": 0.5, "rope_scaling": {"rope_type": "longrope", **LONGROPE},
     "max_position_embeddings": 32, "original_max_position_embeddings": 8}])
def test_logits_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    assert_logits_and_gradients_match(model, reference, hf_phi3_table(model), TINY["vocab_size"])


def test_longrope_factors_change_the_logits(f64):
    scaled, _ = _pair(rope_scaling={"rope_type": "longrope", **LONGROPE}, max_position_embeddings=32,
                      original_max_position_embeddings=8)
    assert scaled.rope_scaling["original_max_position_embeddings"] == 8
    plain, _ = _pair()
    ids = np.random.default_rng(0).integers(0, 13, size=(1, 9))
    assert np.abs(scaled(ids).numpy() - plain(ids).numpy()).max() > 1e-4


def test_padding_and_generation(f64):
    model, reference = _pair(1)
    assert_padding_matches(model, reference)
    assert_left_padded_greedy_generation(model)
    assert_cached_generation_equals_rerun(lambda vocab_size: models.Phi3(
        **{**TINY, "vocab_size": vocab_size, "max_position_embeddings": 16, "initializer_range": 0.5}))


def test_parameter_count_of_phi3_mini():
    with init.meta():
        model = models.phi3("phi3_mini_4k")
        model.build((None, 1))
    assert model.num_parameters() == 3_821_079_552
    assert models.phi3_parameter_count(32064, 3072, 8192, 32, 32) == 3_821_079_552
    assert isinstance(models.get_model("phi3"), models.Phi3)


def test_loader_splits_the_fused_weights_and_checks_them(f64):
    model, reference = _pair(2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    fused = arrays["model.layers.1.mlp.gate_up_proj.weight"]
    assert np.array_equal(model.layers[1].mlp.up_proj.weight.numpy(), fused[24:].T)
    assert np.array_equal(model.layers[1].mlp.gate_proj.weight.numpy(), fused[:24].T)
    assert_loader_errors(models.load_hf_phi3_state_dict, lambda: models.Phi3(**TINY), arrays,
                         "layers.0.self_attn.qkv_proj.weight", models.Phi3(**{**TINY, "num_key_value_heads": 4}),
                         "self_attn.in_weight", "Phi3")
    with pytest.raises(lamina.ShapeError, match=r"Phi3.*layers.0.mlp.gate_up_proj.weight has shape \(48, 16\)"):
        models.load_hf_phi3_state_dict(models.Phi3(**{**TINY, "intermediate_size": 20}), arrays)


def test_partial_rotary_turns_only_the_first_features_and_round_trips(f64):
    model, _ = _pair(head_dim=8, partial_rotary_factor=0.75)
    assert model.layers[0].self_attn.rotary_dims == 6
    again = models.Phi3(**model.get_config())
    assert again.partial_rotary_factor == 0.75 and again.layers[1].self_attn.rotary_dims == 6
    plain, _ = _pair(head_dim=8)
    assert plain.layers[0].self_attn.rotary_dims == 8
    ids = np.random.default_rng(1).integers(0, 13, size=(1, 7))
    assert np.abs(model(ids).numpy() - plain(ids).numpy()).max() > 1e-4
    assert_cached_generation_equals_rerun(lambda vocab_size: models.Phi3(
        **{**TINY, "vocab_size": vocab_size, "head_dim": 8, "partial_rotary_factor": 0.75,
           "max_position_embeddings": 16, "initializer_range": 0.5}))


@pytest.mark.parametrize("factor, message", [(0.0, r"in \(0, 1\], got 0.0"), (1.5, r"in \(0, 1\], got 1.5"),
                                             (0.75, "head_dim 4 turns 3 features")])
def test_partial_rotary_factor_errors(factor, message):
    with pytest.raises(ValueError, match=rf"Phi3: partial_rotary_factor.*{message}"):
        models.Phi3(**TINY, partial_rotary_factor=factor)
