"""Per-head interpretability: the heads' outputs recorded by run_with_cache once the head hooks
are on, each head's contribution through W_O (summing to the attention output), patching one
head (by hand, activation_patching, patching_grid's 'head' grid) and attribution patching per
head, exact on a model linear after the heads and checked against actual patching on a tiny
GPT-2 trained for a second to copy the first token to every position."""

from __future__ import annotations

import numpy as np
import pytest
from interpretability_toys import (
    LENGTH,
    VOCAB,
    clean_corrupted_pair,
    clean_minus_corrupted,
    first_token_gpt2,
    tiny_gpt2,
)

import lamina
from lamina import models, nn
from lamina.analysis.interpretability import (
    activation_patching,
    attribution_patching,
    disable_head_hooks,
    enable_head_hooks,
    head_contributions,
    head_hook_names,
    logit_difference,
    patching_grid,
    run_with_cache,
    run_with_hooks,
)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.fixture(scope="module")
def first_token_model():
    """The tiny GPT-2 of test_interpretability (same recipe): trained to predict, at every
    position, the sequence's first token; head hooks on."""
    model = first_token_gpt2()
    enable_head_hooks(model)
    return model


def _llama():
    lamina.manual_seed(0)
    return models.Llama(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8, attention_bias=True)


# -- cache and contributions -------------------------------------------------------------------------

@pytest.mark.parametrize("make, attention", [(tiny_gpt2, "h.{}.self_attention"), (_llama, "layers.{}.self_attn")],
                         ids=["gpt2", "llama_gqa"])
def test_head_contributions_sum_to_the_attention_output(f64, make, attention):
    model = make()
    names = enable_head_hooks(model)
    assert names == [attention.format(0) + ".head_outputs", attention.format(1) + ".head_outputs"]
    assert head_hook_names(model) == names
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(3, 5))
    _, cache = run_with_cache(model, ids)
    for layer in (0, 1):
        module = model.get_submodule(attention.format(layer))
        h, d = module.num_heads, module.head_dim
        assert cache[names[layer]].shape == (3, 5, h, d) and cache[names[layer]].dtype == np.float64
        parts = head_contributions(cache, layer)
        assert parts.shape == (3, 5, h, module.embed_dim)
        total = parts.sum(axis=2) + module.out_bias.numpy()
        np.testing.assert_allclose(total, cache[attention.format(layer)], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(head_contributions(cache, attention.format(layer)), parts)
        weights = module.out_weight.numpy()[d:2 * d]                    # head 1's rows of W_O
        np.testing.assert_allclose(parts[:, :, 1], cache[names[layer]][:, :, 1] @ weights, rtol=1e-13, atol=1e-14)


def test_patching_one_head_with_its_clean_value_restores_exactly_its_contribution(f64):
    model = tiny_gpt2()
    model(np.zeros((1, 2), dtype=np.int64))
    rng = np.random.default_rng(1)
    for p in model.parameters():                     # off the small initial weights
        p.data = p.data + 0.3 * rng.standard_normal(p.shape)
    hooks = enable_head_hooks(model)
    clean, corrupted = clean_corrupted_pair()
    _, clean_cache = run_with_cache(model, clean)
    _, corrupted_cache = run_with_cache(model, corrupted)
    head = 1

    def patch(z, name):
        patched = z.numpy().copy()
        patched[:, :, head] = clean_cache[name][:, :, head]
        return patched

    _, patched_cache = run_with_cache(model, corrupted, fwd_hooks=[(hooks[1], patch)])
    clean_parts, corrupted_parts = head_contributions(clean_cache, 1), head_contributions(corrupted_cache, 1)
    patched_parts = head_contributions(patched_cache, 1)
    np.testing.assert_array_equal(patched_parts[:, :, head], clean_parts[:, :, head])
    np.testing.assert_array_equal(patched_parts[:, :, 0], corrupted_parts[:, :, 0])
    d = model.n_embd // model.n_head
    w_o = model.get_submodule("h.1.self_attention").out_weight.numpy()
    change = (clean_cache[hooks[1]][:, :, head] - corrupted_cache[hooks[1]][:, :, head]) @ w_o[head * d:(head + 1) * d]
    np.testing.assert_allclose(patched_cache["h.1.self_attention"], corrupted_cache["h.1.self_attention"] + change,
                               rtol=0, atol=1e-12)
    assert np.abs(change).max() > 0.1
    np.testing.assert_array_equal(patched_cache["h.0.self_attention"], corrupted_cache["h.0.self_attention"])


# -- patching per head ---------------------------------------------------------------------------------

def test_patching_every_head_of_a_layer_is_patching_its_attention_branch(first_token_model):
    clean, corrupted = clean_corrupted_pair()
    hooks = head_hook_names(first_token_model)
    _, cache = run_with_cache(first_token_model, clean)
    for layer, name in enumerate(hooks):
        with lamina.no_grad():
            by_heads = run_with_hooks(first_token_model, corrupted, [(name, lambda z, n: cache[n])]).numpy()
            by_branch = run_with_hooks(first_token_model, corrupted,
                                       [(f"h.{layer}.dropout1", lambda a, n: cache[n])]).numpy()
        assert np.array_equal(by_heads, by_branch)


def test_the_head_grid_finds_the_head_that_moves_the_first_token(first_token_model):
    clean, corrupted = clean_corrupted_pair()
    grid = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "head", positions=None)
    assert grid.names == head_hook_names(first_token_model) and grid.heads == [0, 1]
    assert grid.scores.shape == (2, 2, 1)
    scores = grid.scores[..., 0]
    # measured [[0.60, 0.16], [0.22, 0.13]]: block 0's head 0 moves most of the first token
    layer, head = np.unravel_index(np.argmax(scores), scores.shape)
    assert scores[layer, head] > 0.5 and np.sort(scores.ravel())[-2] < 0.5 * scores[layer, head]
    each = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "head")
    assert each.scores.shape == (2, 2, LENGTH) and each.positions == list(range(LENGTH))
    # only the last position's output is read by the metric: patching elsewhere in the last block does nothing
    np.testing.assert_array_equal(each.scores[1, :, :-1], 0)
    np.testing.assert_array_equal(each.scores[1, :, -1], scores[1])
    one = activation_patching(first_token_model, clean, corrupted, clean_minus_corrupted, grid.names[layer], None,
                              heads=[head])
    assert one.scores.shape == (1, 1, 1) and one.scores[0, 0, 0] == scores[layer, head]


def _linear_metric(outputs):
    return logit_difference(outputs, 0, 1)


def test_attribution_per_head_equals_patching_when_the_model_is_linear_after_the_heads(f64):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8), nn.MultiHeadAttention(8, 2), nn.Dense(4))
    rng = np.random.default_rng(0)
    clean, corrupted = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    names = enable_head_hooks(model)
    assert names == ["multi_head_attention.head_outputs"]
    for positions in ("each", None, [0, 2]):
        actual = activation_patching(model, clean, corrupted, _linear_metric, names, positions, heads="each")
        estimate = attribution_patching(model, clean, corrupted, _linear_metric, names, positions, heads="each")
        assert estimate.heads == actual.heads == [0, 1]
        assert estimate.scores.shape == actual.scores.shape == (1, 2, 3 if positions == "each" else 1 + (
            positions is not None))
        np.testing.assert_allclose(estimate.scores, actual.scores, rtol=1e-9, atol=1e-12)
    assert np.abs(actual.scores).max() > 0.05


def test_attribution_per_head_tracks_patching_on_the_trained_gpt2(first_token_model):
    clean, corrupted = clean_corrupted_pair()
    actual = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "head").scores.ravel()
    estimate = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "head",
                             method="attribution").scores.ravel()
    correlation = np.corrcoef(actual, estimate)[0, 1]
    assert correlation > 0.8, correlation                                  # measured 0.95
    strongest = np.argmax(np.abs(actual))
    assert np.sign(estimate[strongest]) == np.sign(actual[strongest])


# -- errors --------------------------------------------------------------------------------------------

def test_per_head_errors_are_clear():
    model = tiny_gpt2()
    clean, corrupted = clean_corrupted_pair()
    with pytest.raises(ValueError, match=r"head hooks are not enabled on 'h\.0\.self_attention'.*enable_head_hooks"):
        patching_grid(model, clean, corrupted, clean_minus_corrupted, "head")
    with pytest.raises(ValueError, match=r"'h\.1\.self_attention\.head_outputs': head hooks are not enabled"):
        run_with_cache(model, clean, ["h.1.self_attention.head_outputs"])
    hooks = enable_head_hooks(model)
    with pytest.raises(ValueError, match=r"head indices \[2\] are out of range for attention layers of 2 heads"):
        activation_patching(model, clean, corrupted, clean_minus_corrupted, hooks, None, heads=[0, 2])
    with pytest.raises(ValueError, match=r"head indices \[-1\]"):
        attribution_patching(model, clean, corrupted, clean_minus_corrupted, hooks, None, heads=[-1])
    with pytest.raises(ValueError, match=r"'h\.0' outputs an activation of shape \(4, 6, 16\); per-head patching"):
        activation_patching(model, clean, corrupted, clean_minus_corrupted, "h.0", None, heads="each")
    _, cache = run_with_cache(model, clean, ["h.0"])
    with pytest.raises(KeyError, match=r"lacks the per-head outputs 'h\.1\.self_attention\.head_outputs'"):
        head_contributions(cache, 1)
    with pytest.raises(ValueError, match="layer 2 is out of range for a model of 2 blocks"):
        head_contributions(cache, 2)
    disable_head_hooks(model)
    assert not any(name.endswith("head_outputs") for name, _ in model.named_modules())
    with pytest.raises(ValueError, match="has no MultiHeadAttention layer"):
        enable_head_hooks(nn.Sequential(nn.Dense(3)))
