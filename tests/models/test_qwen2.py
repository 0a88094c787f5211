"""Qwen2 in Hugging Face's layout against a PyTorch reference of Qwen2ForCausalLM: biased
q/k/v without an o_proj bias, the tied head, the sliding window of the blocks from
max_window_layers on, cached and left-padded generation, parameter counts and the loader."""

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

from lamina import models
from lamina.models.qwen2 import hf_qwen2_table
from lamina.nn import init

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 500.0}


def _pair(seed: int = 0, **options):
    return loaded_pair(models.Qwen2, models.load_hf_qwen2_state_dict, "qwen2", {**TINY, **options}, seed)


@pytest.mark.parametrize("options", [
    {}, {"tie_word_embeddings": True},
    {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1}])
def test_logits_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    assert "in_bias" in dict(model.layers[0].self_attn.named_parameters())
    assert "out_bias" not in dict(model.layers[0].self_attn.named_parameters())
    assert_logits_and_gradients_match(model, reference, hf_qwen2_table(model), TINY["vocab_size"])


def test_only_the_blocks_from_max_window_layers_slide(f64):
    model = models.Qwen2(**TINY, use_sliding_window=True, sliding_window=3, max_window_layers=1)
    assert [layer.self_attn.window for layer in model.layers] == [None, 3]
    assert [layer.self_attn.window for layer in models.Qwen2(**TINY, sliding_window=3).layers] == [None, None]


def test_padding_and_generation(f64):
    model, reference = _pair(1)
    assert_padding_matches(model, reference)
    assert_left_padded_greedy_generation(model)
    fast = assert_cached_generation_equals_rerun(lambda vocab_size: models.Qwen2(
        **{**TINY, "vocab_size": vocab_size, "max_position_embeddings": 16, "initializer_range": 0.5,
           "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}))
    assert len({tuple(h.ids) for h in fast}) == 3


def test_parameter_counts_of_the_published_configs():
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "tie_word_embeddings")
    for name, count in {"qwen2_0.5b": 494_032_768, "qwen2_1.5b": 1_543_714_304}.items():
        with init.meta():
            model = models.qwen2(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
        config = model.get_config()
        assert models.qwen2_parameter_count(*(config[key] for key in keys)) == count, name
    assert isinstance(models.get_model("qwen2"), models.Qwen2)


def test_loader_errors(f64):
    _, reference = _pair(2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    assert_loader_errors(models.load_hf_qwen2_state_dict, lambda: models.Qwen2(**TINY), arrays,
                         "layers.1.self_attn.k_proj.bias", models.Qwen2(**{**TINY, "num_key_value_heads": 4}),
                         "self_attn.in_weight", "Qwen2")
    with pytest.raises(KeyError, match="unexpected keys.*o_proj.bias"):
        models.load_hf_qwen2_state_dict(models.Qwen2(**TINY),
                                        {**arrays, "model.layers.0.self_attn.o_proj.bias": np.zeros(16)})
