"""Llama's Hugging Face config options beyond the base model: rope scaling ('llama3' of
Llama 3.1/3.2 and 'linear'), a head_dim other than hidden_size / num_attention_heads, and
Mistral's sliding-window attention, against the PyTorch reference; parameter counts of the
published configs; Mistral's cached decoding within its window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table, backward_with_one_upstream
from torch_llama_reference import LlamaForCausalLM, scaled_inv_freq

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, saving
from lamina.models.llama import LlamaDecoderLayer, hf_llama_table
from lamina.nn import init
from lamina.text import caching_keys_values

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 500.0}
# with head_dim 8 and base 500 the wavelengths 2 pi / theta_j are 6.3, 30, 140 and 664: one
# high, one medium and two low frequencies for a context of 64
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


def _reference_frequencies(d: int, base: float, scaling) -> np.ndarray:
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    return scaled_inv_freq(inv_freq, scaling).numpy()


@pytest.mark.parametrize("d, base, scaling", [
    (8, 500.0, LLAMA3_SCALING), (128, 500000.0, models.llama("llama3_1_8b").rope_scaling),
    (64, 500000.0, models.llama("llama3_2_1b").rope_scaling), (16, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    (16, 10000.0, None)])
def test_scaled_rotary_frequencies_follow_the_published_formulas(d, base, scaling):
    ours = F.rotary_frequencies(d, base, scaling)
    assert_close(ours, _reference_frequencies(d, base, scaling), 1e-15, "frequencies")


def test_llama3_scaling_keeps_high_frequencies_and_divides_low_ones():
    plain = F.rotary_frequencies(8, 500.0)
    scaled = F.rotary_frequencies(8, 500.0, LLAMA3_SCALING)
    assert scaled[0] == plain[0]
    assert_close(scaled[2:], plain[2:] / 8.0, 1e-15, "low frequencies")
    assert plain[1] / 8.0 < scaled[1] < plain[1]


def test_bad_rope_scaling_is_refused():
    with pytest.raises(ValueError, match="rope_type"):
        F.rotary_frequencies(8, 500.0, {"rope_type": "ntk-by-parts", "factor": 2.0})
    with pytest.raises(ValueError, match="low_freq_factor"):
        F.rotary_frequencies(8, 500.0, {"rope_type": "llama3", "factor": 2.0})
    with pytest.raises(ValueError, match="factor"):
        F.rotary_frequencies(8, 500.0, {"rope_type": "linear", "factor": 0.0})


def _pair(seed: int = 0, **options):
    config = {**TINY, **options}
    torch.manual_seed(seed)
    reference = LlamaForCausalLM(config).double()
    model = models.Mistral(**config) if "sliding_window" in config else models.Llama(**config)
    load = models.load_hf_mistral_state_dict if "sliding_window" in config else models.load_hf_llama_state_dict
    load(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("options", [
    {"head_dim": 6},
    {"head_dim": 8, "rope_scaling": LLAMA3_SCALING, "tie_word_embeddings": True},
    {"rope_scaling": {"rope_type": "linear", "factor": 3.0}, "attention_bias": True},
    {"sliding_window": 3, "head_dim": 6, "num_key_value_heads": 1}])
def test_logits_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 9))
    ours = model(ids)
    theirs = reference(torch.tensor(ids))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "logits")
    backward_with_one_upstream(ours, theirs)
    grads = {key.removeprefix("model."): value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_llama_table(model), grads)


def test_layer_gradients_by_finite_differences(f64):
    layer = LlamaDecoderLayer(8, 2, 12, num_key_value_heads=1, head_dim=6, rope_scaling=LLAMA3_SCALING,
                              sliding_window=2)
    assert check_gradients(lambda x: layer(x), randn(2, 4, 8))


def test_head_dim_shapes_and_config_round_trip():
    model = models.llama("tiny", head_dim=24, rope_scaling={"rope_type": "linear", "factor": 2.0})
    model.build((None, 1))
    attention = model.layers[0].self_attn
    assert attention.in_weight.shape == (64, 4 * 24 + 2 * 2 * 24)
    assert attention.out_weight.shape == (4 * 24, 64)
    again = models.Llama(**model.get_config())
    again.build((None, 1))
    assert again.layers[1].self_attn.head_dim == 24
    assert_close(again.layers[1].self_attn.rotary_frequencies, attention.rotary_frequencies, 0, "frequencies")
    assert model.num_parameters() == models.llama_parameter_count(256, 64, 176, 2, 4, 2, head_dim=24)


def test_parameter_counts_of_the_published_configs():
    expected = {("llama", "llama3_1_8b"): 8_030_261_248, ("llama", "llama3_2_1b"): 1_235_814_400,
                ("mistral", "7b_v0.1"): 7_241_732_096}
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "tie_word_embeddings", "head_dim")
    for (family, name), count in expected.items():
        with init.meta():
            model = getattr(models, family)(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
        config = model.get_config()
        assert models.llama_parameter_count(*(config[key] for key in keys)) == count, name
    assert isinstance(models.mistral("7b_v0.1"), models.Llama)
    assert "mistral" in models.list_models("language")
    assert models.get_model("mistral", config="tiny").sliding_window == 8
    with pytest.raises(ValueError, match="mistral: config"):
        models.mistral("8x7b")


def test_mistral_cached_decoding_equals_one_call_and_keeps_the_window(f64):
    lamina.manual_seed(0)
    model = models.mistral("tiny", vocab_size=11, hidden_size=16, intermediate_size=24, sliding_window=4,
                           initializer_range=0.5)
    ids = np.random.default_rng(2).integers(0, 11, size=(2, 13))
    model.eval()
    with lamina.no_grad():
        whole = model(ids).numpy()
        with caching_keys_values(model):
            pieces = [model(ids[:, :5]).numpy()]
            held = [model.layers[0].self_attn._cached_keys.shape[2]]
            for t in range(5, 13):
                pieces.append(model(ids[:, t:t + 1]).numpy())
                held.append(model.layers[0].self_attn._cached_keys.shape[2])
        with caching_keys_values(model):   # from one token: the cache holds fewer keys than the window
            steps = [model(ids[:, t:t + 1]).numpy() for t in range(13)]
            assert model.layers[0].self_attn._cached_keys.shape[2] == 3
        unwindowed = models.Llama(**{**model.get_config(), "sliding_window": None})
        unwindowed.build((None, 1))
        unwindowed.load_state_dict(model.state_dict())
        full_attention = unwindowed(ids).numpy()
    assert_close(np.concatenate(pieces, axis=1), whole, 1e-10, "cached logits")
    assert_close(np.concatenate(steps, axis=1), whole, 1e-10, "logits cached from the first token")
    assert held == [3] * 9                  # the last window - 1 steps only
    assert_close(full_attention[:, :4], whole[:, :4], 1e-10, "logits within the first window")
    assert np.abs(full_attention[:, 4:] - whole[:, 4:]).max() > 1e-3


def test_a_saved_mistral_loads_with_its_options(tmp_path):
    model = models.mistral("tiny", head_dim=8, rope_scaling=LLAMA3_SCALING).eval()
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    expected = model(ids).numpy()
    saving.save(model, tmp_path / "mistral.lamina")
    loaded = saving.load(tmp_path / "mistral.lamina").eval()
    assert isinstance(loaded, models.Mistral) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids).numpy(), expected)
