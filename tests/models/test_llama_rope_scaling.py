"""Hugging Face's rope scalings 'dynamic' (NTK), 'yarn' and 'longrope' (and 'linear', 'llama3')
in Llama: frequencies and attention factors against Hugging Face's formulas written in torch,
a tiny Llama with each kind against the PyTorch reference (past max_position_embeddings too),
cached decoding, the config round trip and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table, backward_with_one_upstream
from torch_llama_reference import LlamaForCausalLM, rope_parameters

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import models, saving
from lamina.models.llama import hf_llama_table
from lamina.text import caching_keys_values

CONTEXT = 8                 # max_position_embeddings of the tiny models: the tests run past it
TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_theta": 500.0,
        "max_position_embeddings": CONTEXT}
HEAD_DIM = 8
LONGROPE = {"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [1.0, 2.0, 4.0, 9.0],
            "original_max_position_embeddings": 4}
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 3.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 8, "beta_slow": 0.5, "truncate": False},
    "yarn_original_mscale": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4, "mscale": 0.7,
                             "mscale_all_dim": 0.3},
    "longrope": LONGROPE,
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 4},
}
STATIC = ("linear", "yarn", "yarn_original_mscale", "llama3")


@pytest.mark.parametrize("d, base, scaling, context, lengths", [
    (8, 500.0, SCALINGS["dynamic"], 8, (None, 5, 8, 9, 20)),
    (128, 500000.0, {"rope_type": "dynamic", "factor": 4.0}, 4096, (None, 4097, 10000)),
    (8, 500.0, SCALINGS["yarn"], 16, (None,)),
    (8, 500.0, SCALINGS["yarn_original_mscale"], 16, (None,)),
    (128, 10000.0, {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32,
                    "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}, 163840, (None,)),
    (128, 1000000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 131072,
     (None,)),
    (64, 10000.0, {"rope_type": "yarn", "factor": 2.0, "attention_factor": 0.8}, 2048, (None,)),
    (8, 500.0, LONGROPE, 8, (None, 4, 5, 30)),
    (8, 500.0, {**LONGROPE, "original_max_position_embeddings": 8, "factor": 3.0}, 8, (None, 9)),
    (8, 500.0, {**{key: LONGROPE[key] for key in ("rope_type", "short_factor", "long_factor")}, "factor": 2.0}, 8,
     (None, 9)),
])
def test_frequencies_and_attention_factor_follow_hugging_faces_formulas(d, base, scaling, context, lengths):
    for length in lengths:
        theta, factor = F.rotary_parameters(d, base, scaling, context, length)
        inv_freq, attention_scaling = rope_parameters(d, base, scaling, context, length)
        assert_close(theta, inv_freq.numpy(), 1e-14, f"frequencies, length {length}")
        assert factor == pytest.approx(attention_scaling, rel=1e-14), length
        assert np.array_equal(F.rotary_frequencies(d, base, scaling, context, length), theta)


def test_dynamic_ntk_grows_the_base_only_past_the_context():
    plain = F.rotary_frequencies(8, 500.0)
    within = F.rotary_frequencies(8, 500.0, SCALINGS["dynamic"], CONTEXT, CONTEXT)
    assert np.array_equal(within, plain)
    beyond = F.rotary_frequencies(8, 500.0, SCALINGS["dynamic"], CONTEXT, 2 * CONTEXT)
    grown = 500.0 * (2.0 * 2 - 1.0) ** (8 / 6)          # base (s T / M - (s - 1))^(d / (d - 2))
    assert_close(beyond, grown ** (-np.arange(4) * 2.0 / 8), 1e-15, "grown base")
    assert beyond[0] == plain[0] and np.all(beyond[1:] < plain[1:])


def test_yarn_keeps_the_fast_frequencies_and_interpolates_the_slow_ones():
    scaling = {"rope_type": "yarn", "factor": 4.0}
    theta, factor = F.rotary_parameters(32, 10000.0, scaling, 64)
    plain = F.rotary_frequencies(32, 10000.0)
    assert theta[0] == plain[0]
    assert_close(theta[-1], plain[-1] / 4.0, 1e-15, "slowest frequency")
    assert factor == pytest.approx(1 + 0.1 * np.log(4.0))


def _pair(scaling, seed: int = 0):
    config = {**TINY, "head_dim": HEAD_DIM, "rope_scaling": scaling}
    torch.manual_seed(seed)
    reference = LlamaForCausalLM(config).double()
    model = models.Llama(**config)
    models.load_hf_llama_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_logits_and_gradients_equal_the_reference_past_the_context(f64, kind):
    model, reference = _pair(SCALINGS[kind])
    for steps in (5, CONTEXT + 3):
        ids = np.random.default_rng(steps).integers(0, TINY["vocab_size"], size=(2, steps))
        ours = model(ids)
        theirs = reference(torch.tensor(ids))
        assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, f"{kind} logits, {steps} steps")
    backward_with_one_upstream(ours, theirs)
    grads = {key.removeprefix("model."): value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_llama_table(model), grads)


def _cached_and_whole(model, ids, prompt: int):
    with lamina.no_grad():
        whole = model(ids).numpy()
        with caching_keys_values(model):
            pieces = [model(ids[:, :prompt]).numpy()]
            pieces += [model(ids[:, t:t + 1]).numpy() for t in range(prompt, ids.shape[1])]
    return np.concatenate(pieces, axis=1), whole


def _reference_cached(reference, ids, prompt: int):
    caches = [[] for _ in reference.model.layers]
    with torch.no_grad():
        pieces = [reference(torch.tensor(ids[:, :prompt]), caches=caches)]
        pieces += [reference(torch.tensor(ids[:, t:t + 1]), caches=caches) for t in range(prompt, ids.shape[1])]
    return torch.cat(pieces, dim=1).numpy()


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_cached_decoding_as_hugging_face(f64, kind):
    """Static kinds: the cache gives one call's logits at any length. 'dynamic' and 'longrope'
    recompute the frequencies per call, for the steps read so far: within the context the
    cache gives one call's logits; past it the cached keys keep the rotation they were read
    with, so the logits are Hugging Face's cached ones, not those of a rerun."""
    model, reference = _pair(SCALINGS[kind])
    model.eval()
    ids = np.random.default_rng(3).integers(0, TINY["vocab_size"], size=(2, CONTEXT + 4))
    cached, whole = _cached_and_whole(model, ids, prompt=3)
    assert_close(cached, _reference_cached(reference, ids, prompt=3), 1e-10, f"{kind} cached logits")
    limit = CONTEXT if kind == "dynamic" else SCALINGS[kind].get("original_max_position_embeddings")
    if kind in STATIC:
        assert_close(cached, whole, 1e-10, f"{kind} cached against one call")
    else:
        with lamina.no_grad():
            within = model(ids[:, :limit]).numpy()
        assert_close(cached[:, :limit], within, 1e-10, f"{kind} within the context")
        assert np.abs(cached[:, limit + 1:] - whole[:, limit + 1:]).max() > 1e-6


@pytest.mark.parametrize("kind", ["dynamic", "yarn_original_mscale", "longrope"])
def test_config_round_trip_and_saving(kind, tmp_path):
    model = models.mistral("tiny", vocab_size=11, hidden_size=16, intermediate_size=24, head_dim=8,
                           max_position_embeddings=CONTEXT, rope_scaling=SCALINGS[kind]).eval()
    ids = np.arange(1, CONTEXT + 3)[None] % 11
    expected = model(ids).numpy()
    again = models.Mistral(**model.get_config())
    assert again.get_config() == model.get_config()
    assert again.layers[0].self_attn.rotary_scaling == SCALINGS[kind]
    saving.save(model, tmp_path / "model.lamina")
    loaded = saving.load(tmp_path / "model.lamina").eval()
    assert loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids).numpy(), expected)


@pytest.mark.parametrize("scaling, message", [
    ({"rope_type": "ntk-by-parts", "factor": 2.0}, r"Llama: rope_scaling\['rope_type'\] must be one of"),
    ({"rope_type": "yarn"}, r"Llama: a 'yarn' rope_scaling needs the key\(s\) \['factor'\]"),
    ({"rope_type": "dynamic"}, r"Llama: a 'dynamic' rope_scaling needs the key\(s\) \['factor'\]"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4}, r"needs the key\(s\) \['long_factor'\]"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 4},
     r"rope_scaling\['short_factor'\] must hold head_dim / 2 = 4 values"),
    ({"rope_type": "yarn", "factor": -1.0}, r"rope_scaling\['factor'\] must be > 0"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4},
     r"Llama: a 'longrope' rope_scaling needs the key 'factor' or 'original_max_position_embeddings'"),
])
def test_bad_rope_scalings_name_the_model_and_the_key(scaling, message):
    with pytest.raises(ValueError, match=message):
        models.Llama(**TINY, head_dim=8, rope_scaling=scaling)
    with pytest.raises(ValueError, match=message.replace("Llama", "Mistral")):
        models.Mistral(**TINY, head_dim=8, rope_scaling=scaling)


def test_dynamic_attention_needs_the_context():
    with pytest.raises(ValueError, match="needs max_position_embeddings"):
        lamina.nn.MultiHeadAttention(16, 2, rotary=True, rotary_scaling={"rope_type": "dynamic", "factor": 2.0})
    layer = lamina.nn.MultiHeadAttention(16, 2, rotary=True, rotary_scaling={"rope_type": "dynamic", "factor": 2.0},
                                         rotary_max_positions=4)
    assert lamina.nn.MultiHeadAttention(**layer.get_config()).rotary_max_positions == 4
