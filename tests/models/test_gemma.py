"""Gemma and Gemma 2 in Hugging Face's layout against a PyTorch reference of GemmaForCausalLM
and Gemma2ForCausalLM: scaled embeddings, (1 + w) RMSNorms, GeGLU, head_dim apart from
hidden / heads, the tied head; Gemma 2's sandwich norms, soft-capped attention and final
logits, query_pre_attn_scalar and alternating sliding windows. Cached and left-padded
generation, parameter counts and the loaders."""

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
from torch_lm_families_reference import DecoderForCausalLM

from helpers import check_gradients, randn
from lamina import models
from lamina.models.gemma import GemmaRMSNorm, hf_gemma_table
from lamina.nn import init

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6, "rms_norm_eps": 1e-6,
        "rope_theta": 500.0}
# caps small enough that tanh bends the scores of these random weights
TINY2 = {**TINY, "query_pre_attn_scalar": 10, "sliding_window": 3, "attn_logit_softcapping": 0.5,
         "final_logit_softcapping": 3.0}


def _pair(version: int, seed: int = 0, **options):
    config = {**(TINY if version == 1 else TINY2), **options}
    torch.manual_seed(seed)
    reference = DecoderForCausalLM({**config, "family": "gemma" if version == 1 else "gemma2",
                                    "tie_word_embeddings": True})
    with torch.no_grad():                 # large weights, so that the soft caps matter
        for param in reference.parameters():
            param.mul_(2.0 if param.ndim == 2 else 1.0)
    reference = reference.double()
    model = (models.Gemma if version == 1 else models.Gemma2)(**config)
    load = models.load_hf_gemma_state_dict if version == 1 else models.load_hf_gemma2_state_dict
    load(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("version", [1, 2])
def test_logits_and_gradients_equal_the_reference(f64, version):
    model, reference = _pair(version)
    assert_logits_and_gradients_match(model, reference, hf_gemma_table(model), TINY["vocab_size"])


@pytest.mark.parametrize("options", [{"attn_logit_softcapping": None}, {"final_logit_softcapping": None},
                                     {"sliding_window": 9}])
def test_each_gemma2_feature_changes_the_logits(f64, options):
    """Turning soft-capping or the window off changes the logits: the reference check above
    depends on each of them."""
    model, _ = _pair(2)
    other, _ = _pair(2, **options)
    ids = np.random.default_rng(0).integers(0, 13, size=(1, 9))
    assert np.abs(model(ids).numpy() - other(ids).numpy()).max() > 1e-3


def test_gemma2_layers_alternate_sliding_and_global_attention():
    model = models.gemma2("tiny", num_hidden_layers=4)
    assert [layer.self_attn.window for layer in model.layers] == [8, None, 8, None]
    attention = model.layers[0].self_attn
    assert attention.scale == 16 ** -0.5 and attention.logit_softcap == 50.0
    assert model.final_logit_softcapping == 30.0


def test_gemma_norm_and_final_caps_stay_in_range(f64):
    norm = GemmaRMSNorm(5, eps=1e-6)
    x = randn(2, 3, 5)
    assert np.allclose(norm(x).numpy(), x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6))   # w = 0
    assert check_gradients(lambda v: norm(v), x)
    model, _ = _pair(2)
    logits = np.abs(model(np.array([[1, 2, 3]])).numpy())
    assert logits.max() < 3.0 and logits.max() > 1.0       # bent by the cap, not flattened


@pytest.mark.parametrize("version", [1, 2])
def test_padding_and_generation(f64, version):
    model, reference = _pair(version, 1)
    assert_padding_matches(model, reference)
    assert_left_padded_greedy_generation(model)
    make = models.Gemma if version == 1 else models.Gemma2
    caps = {} if version == 1 else {"attn_logit_softcapping": 2.0, "final_logit_softcapping": 5.0}
    assert_cached_generation_equals_rerun(lambda vocab_size: make(
        **{**(TINY if version == 1 else TINY2), **caps, "vocab_size": vocab_size, "max_position_embeddings": 16,
           "initializer_range": 0.5}))


def test_parameter_counts_of_the_published_configs():
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim")
    for build, name, version, count in ((models.gemma, "gemma_2b", 1, 2_506_172_416),
                                        (models.gemma2, "gemma2_2b", 2, 2_614_341_888)):
        with init.meta():
            model = build(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
        config = model.get_config()
        assert models.gemma_parameter_count(*(config[key] for key in keys), version=version) == count, name
    assert isinstance(models.get_model("gemma2"), models.Gemma2)


def test_loader_errors(f64):
    _, reference = _pair(2, 2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    assert_loader_errors(models.load_hf_gemma2_state_dict, lambda: models.Gemma2(**TINY2), arrays,
                         "layers.1.post_feedforward_layernorm.weight",
                         models.Gemma2(**{**TINY2, "head_dim": 8}), "self_attn.in_weight", "Gemma2")
