"""Mixtral in Hugging Face's layout against a PyTorch reference of MixtralForCausalLM: the
sparse mixture-of-experts blocks (softmax router, top-2, renormalized weights, experts
w1/w2/w3), the load-balancing loss of load_balancing_loss_func (with and without padding),
cached and left-padded generation, Mixtral-8x7B's parameter count and the loader."""

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
    loaded_pair,
)
from reference_checks import assert_gradients_match_the_table

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models.mixtral import hf_mixtral_table
from lamina.nn import init

TINY = {"vocab_size": 13, "hidden_size": 16, "intermediate_size": 12, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500.0,
        "num_local_experts": 4, "num_experts_per_tok": 2}


def _pair(seed: int = 0, **options):
    return loaded_pair(models.Mixtral, models.load_hf_mixtral_state_dict, "mixtral", {**TINY, **options}, seed)


def test_logits_and_gradients_equal_the_reference(f64):
    model, reference = _pair()
    assert_logits_and_gradients_match(model, reference, hf_mixtral_table(model), TINY["vocab_size"])


def test_router_aux_loss_and_its_gradients_equal_the_reference(f64):
    model, reference = _pair(1, num_experts_per_tok=1, num_local_experts=3)
    ids = np.random.default_rng(1).integers(0, 13, size=(2, 6))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    for key_mask in (None, mask):
        model.zero_grad()
        reference.zero_grad()
        model(ids, key_mask=None if key_mask is None else key_mask.astype(bool))
        reference(torch.tensor(ids), None if key_mask is None else torch.tensor(key_mask))
        theirs = reference.aux_loss(None if key_mask is None else torch.tensor(key_mask))
        assert_close(model.router_aux_loss.numpy(), theirs.detach().numpy(), 1e-12, "aux loss")
        model.router_aux_loss.backward()
        theirs.backward()
        grads = {key.removeprefix("model."): value.grad.numpy() for key, value in reference.named_parameters()
                 if value.grad is not None and "gate" in key and "gate_proj" not in key}
        table = {key: weight for key, weight in hf_mixtral_table(model).items() if weight.keys[0] in grads}
        assert len(table) == 2
        assert_gradients_match_the_table(model, table, grads)


def test_each_token_uses_its_two_best_experts(f64):
    model, _ = _pair(2)
    moe = model.layers[0].block_sparse_moe
    x = lamina.tensor(np.random.default_rng(0).standard_normal((1, 3, 16)))
    y = moe(x).numpy()[0]
    probs = lamina.functional.softmax(moe.router_logits, axis=-1).numpy()
    for t in range(3):
        best = np.argsort(-probs[t])[:2]
        expected = sum(probs[t, e] * moe.experts[int(e)](x[:, t:t + 1]).numpy()[0, 0] for e in best)
        assert_close(y[t], expected / probs[t, best].sum(), 1e-12, "token output")


def test_padding_and_generation(f64):
    model, reference = _pair(3)
    assert_padding_matches(model, reference)
    assert_left_padded_greedy_generation(model)
    assert_cached_generation_equals_rerun(lambda vocab_size: models.Mixtral(
        **{**TINY, "vocab_size": vocab_size, "max_position_embeddings": 16, "initializer_range": 0.5}))


def test_parameter_count_of_mixtral_8x7b():
    assert models.mixtral_parameter_count(32000, 4096, 14336, 32, 32, 8, 8) == 46_702_792_704
    with init.meta():                      # shape-only weights
        model = models.mixtral("mixtral_8x7b")
        model.build((None, 1))
    assert model.num_parameters() == 46_702_792_704
    tiny = models.mixtral("tiny")
    tiny.build((None, 1))
    assert tiny.num_parameters() == models.mixtral_parameter_count(256, 64, 96, 2, 4, 2, 4)
    assert isinstance(models.get_model("mixtral"), models.Mixtral)


def test_loader_errors(f64):
    _, reference = _pair(4)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    assert_loader_errors(models.load_hf_mixtral_state_dict, lambda: models.Mixtral(**TINY), arrays,
                         "layers.1.block_sparse_moe.experts.3.w3.weight",
                         models.Mixtral(**{**TINY, "intermediate_size": 10}), "experts.0.gate_proj.weight",
                         "Mixtral")


def test_router_jitter_noise_acts_in_training_only(f64):
    jittered, reference = _pair(3, router_jitter_noise=0.2)
    plain, _ = _pair(3)
    ids = np.random.default_rng(3).integers(0, 13, size=(2, 7))
    jittered.eval()
    assert_close(jittered(ids).numpy(), reference(torch.tensor(ids)).detach().numpy(), 1e-10, "eval logits")
    jittered.train()
    assert np.abs(jittered(ids).numpy() - plain(ids).numpy()).max() > 1e-3
    again = models.Mixtral(**jittered.get_config())
    assert again.router_jitter_noise == 0.2 and again.layers[1].block_sparse_moe.router_jitter_noise == 0.2


def test_router_jitter_noise_scales_the_router_input_by_seeded_uniform_noise(f64):
    block = models.MixtralSparseMoeBlock(6, 5, num_local_experts=3, initializer_range=0.5, router_jitter_noise=0.3)
    x = np.random.default_rng(4).standard_normal((2, 4, 6))
    block.build(x.shape)
    lamina.backend.manual_seed(11)
    out = block(x).numpy()
    lamina.backend.manual_seed(11)
    noise = lamina.backend.rng().uniform(0.7, 1.3, size=(8, 6))
    expected_logits = (x.reshape(8, 6) * noise) @ block.gate.weight.numpy()
    assert_close(block.router_logits.numpy(), expected_logits, 1e-12, "router logits")
    block.eval()
    calm = block(x).numpy()
    assert_close(block.router_logits.numpy(), x.reshape(8, 6) @ block.gate.weight.numpy(), 1e-12, "eval logits")
    assert np.abs(out - calm).max() > 1e-3
    block.router_jitter_noise = 0.0
    block.train()
    assert_close(block(x).numpy(), calm, 1e-12, "training without noise")
    block.router_jitter_noise = 0.3

    def seeded(inputs):           # the same noise on every call, so that differences are taken
        lamina.backend.manual_seed(11)
        return block(inputs)
    assert check_gradients(seeded, x)
    with pytest.raises(ValueError, match=r"Mixtral: router_jitter_noise must be a finite number >= 0, got -0.1"):
        models.Mixtral(**TINY, router_jitter_noise=-0.1)
