"""Mechanistic interpretability: activation cache, hooks that patch, the logit lens, activation
and attribution patching, linear probes, and splicing an autoencoder into a model. Checked on
a tiny GPT-2 trained for a second on a task whose circuit is known (every position predicts
the first token, so its identity must move by attention from position 0 to the others), on
linear toy models where first-order attribution is exact, and against NumPy / scikit-learn."""

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
from sklearn.linear_model import LogisticRegression, Ridge

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import models, nn
from lamina.analysis.interpretability import (
    COMPONENTS,
    TunedLens,
    activation_patching,
    attribution_patching,
    explained_variance,
    feature_l0,
    logit_difference,
    logit_lens,
    loss_recovered,
    patching_grid,
    probe_layers,
    run_with_cache,
    run_with_hooks,
    train_probe,
    transformer_parts,
)
from lamina.errors import ShapeError
from lamina.train import train_tuned_lens


@pytest.fixture(scope="module")
def first_token_model():
    """A tiny GPT-2 trained (about a second) to predict, at every position, the sequence's first token."""
    model = first_token_gpt2()
    return model


# -- cache and hooks ---------------------------------------------------------------------------------

def test_cache_holds_every_named_module_with_its_shape_and_the_residual_decomposition_sums_up():
    model = tiny_gpt2()
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(3, LENGTH))
    logits, cache = run_with_cache(model, ids)
    assert list(cache) == [name for name, _ in model.named_modules() if name and name != "h"]  # the list never runs
    assert cache["h.1.linear1"].shape == (3, LENGTH, 64) and cache["ln_f"].shape == (3, LENGTH, 16)
    assert isinstance(cache["h.0"], np.ndarray) and logits.shape == (3, LENGTH, VOCAB)
    names, stream = cache.residual_stream()
    assert names == ["drop", "h.0", "h.1"] and stream.shape == (3, 3, LENGTH, 16)
    names, parts = cache.decompose_residual()
    assert names == ["drop", "h.0.dropout1", "h.0.dropout2", "h.1.dropout1", "h.1.dropout2"]
    np.testing.assert_allclose(parts.sum(axis=0), stream[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts[:3].sum(axis=0), stream[1], rtol=1e-5, atol=1e-6)
    assert list(run_with_cache(model, ids, ["h.1", "drop"])[1]) == ["h.1", "drop"]


def test_llama_blocks_are_recognised():
    model = models.Llama(vocab_size=11, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=8)
    ids = np.random.default_rng(0).integers(0, 11, size=(2, 5))
    logits, cache = run_with_cache(model, ids)
    names, parts = cache.decompose_residual()
    assert names == ["embed_tokens", "layers.0.self_attn", "layers.0.mlp", "layers.1.self_attn", "layers.1.mlp"]
    np.testing.assert_allclose(parts.sum(axis=0), cache["layers.1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logit_lens(model, ids).logits[-1], logits, rtol=1e-6, atol=1e-6)


def test_unknown_names_suggest_close_matches():
    model = tiny_gpt2()
    ids = np.zeros((1, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"'h\.0\.dropout'.*did you mean.*h\.0\.dropout1"):
        run_with_cache(model, ids, ["h.0.dropout"])
    with pytest.raises(ValueError, match="h.3"):
        run_with_hooks(model, ids, [("h.3", lambda a, name: None)])
    with pytest.raises(KeyError, match="did you mean"):
        run_with_cache(model, ids, ["h.0"])[1]["h.0.norm"]


def test_a_patch_of_the_wrong_shape_is_refused():
    model = tiny_gpt2()
    ids = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(ShapeError, match=r"'h\.0'.*\(2, 3, 16\).*\(2, 4, 16\)"):
        run_with_hooks(model, ids, [("h.0", lambda a, name: np.zeros((2, 3, 16)))])


def test_replacing_every_activation_with_itself_leaves_the_logits_exactly():
    model = tiny_gpt2()
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(2, LENGTH))
    clean, _ = run_with_cache(model, ids, [])
    seen = []

    def same(activation, name):
        seen.append(name)
        return activation.numpy().copy()

    hooks = [(name, same) for name, _ in model.named_modules() if name and name != "h"]
    with lamina.no_grad():
        patched = run_with_hooks(model, ids, hooks).numpy()
    assert np.array_equal(patched, clean) and len(seen) == len(hooks)


def test_patching_the_whole_last_residual_gives_the_clean_logits_exactly():
    model = tiny_gpt2()
    clean, corrupted = clean_corrupted_pair()
    clean_logits, cache = run_with_cache(model, clean, ["h.1"])
    with lamina.no_grad():
        patched = run_with_hooks(model, corrupted, [("h.1", lambda a, name: cache["h.1"])]).numpy()
    assert np.array_equal(patched, clean_logits)
    result = activation_patching(model, clean, corrupted, clean_minus_corrupted, "h.1", positions=None)
    assert result.scores.shape == (1, 1) and result.scores[0, 0] == 1.0


# -- activation and attribution patching ------------------------------------------------------------

def test_patching_grid_finds_where_the_first_token_travels(first_token_model):
    clean, corrupted = clean_corrupted_pair()
    pre = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "resid_pre")
    post = patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, "resid_post")
    assert pre.names == ["drop", "h.0"] and post.names == ["h.0", "h.1"] and pre.scores.shape == (2, LENGTH)
    assert pre.clean_metric > 5 > -5 > pre.corrupted_metric
    np.testing.assert_array_equal(pre.scores[0], [1, 0, 0, 0, 0, 0])       # the embeddings differ at 0 only
    np.testing.assert_array_equal(post.scores[1], [0, 0, 0, 0, 0, 1])      # causal: the last step reads h_L[-1] only
    assert post.scores[1, -1] == 1.0 and np.all(np.abs(post.scores[0]) < 1)


def test_attribution_patching_equals_patching_for_a_linear_model():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(6), nn.Dense(4))
    rng = np.random.default_rng(0)
    clean, corrupted = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    model(clean)
    for positions in ("each", None, [0, 2]):
        actual = activation_patching(model, clean, corrupted, _linear_metric, ["dense", "dense_1"], positions)
        estimate = attribution_patching(model, clean, corrupted, _linear_metric, ["dense", "dense_1"], positions)
        np.testing.assert_allclose(estimate.scores, actual.scores, rtol=1e-9, atol=1e-12)
    assert actual.positions == [0, 2] and np.abs(actual.scores).max() > 0.05


def _linear_metric(outputs):
    return logit_difference(outputs, 0, 1)


def test_attribution_patching_is_first_order_accurate_for_small_differences():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(8, activation="tanh"), nn.Dense(4))
    rng = np.random.default_rng(1)
    clean = rng.standard_normal((2, 3, 5))
    errors, changes = [], []
    for size in (1e-2, 1e-3):
        corrupted = clean + size * rng.standard_normal(clean.shape)
        actual = activation_patching(model, clean, corrupted, _linear_metric, ["dense", "dense_1"])
        estimate = attribution_patching(model, clean, corrupted, _linear_metric, ["dense", "dense_1"])
        scale = abs(actual.clean_metric - actual.corrupted_metric)      # back to metric units
        errors.append(np.abs(estimate.scores - actual.scores).max() * scale)
        changes.append(np.abs(actual.scores).max() * scale)
    assert errors[1] < 0.03 * errors[0]                  # second order: 10x smaller differences, ~100x smaller error
    assert errors[1] < 0.01 * changes[1]


def test_attribution_patching_tracks_patching_on_a_trained_gpt2(first_token_model):
    clean, corrupted = clean_corrupted_pair()
    actual, estimate = [], []
    for component in COMPONENTS:
        actual.append(patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted,
                                    component).scores.ravel())
        estimate.append(patching_grid(first_token_model, clean, corrupted, clean_minus_corrupted, component,
                                      method="attribution").scores.ravel())
    correlation = np.corrcoef(np.concatenate(actual), np.concatenate(estimate))[0, 1]
    assert correlation > 0.75, correlation                                    # measured 0.86
    residual = np.corrcoef(actual[1], estimate[1])[0, 1]
    assert residual > 0.9, residual                                           # resid_post: measured 0.98
    strongest = np.argmax(np.abs(actual[1]))
    assert np.sign(estimate[1][strongest]) == np.sign(actual[1][strongest])


def test_patching_errors_are_clear():
    model = tiny_gpt2()
    clean, corrupted = clean_corrupted_pair()
    with pytest.raises(ShapeError, match="clean inputs of shape"):
        activation_patching(model, clean, corrupted[:, :3], clean_minus_corrupted, "h.0")
    with pytest.raises(ValueError, match="component must be one of"):
        patching_grid(model, clean, corrupted, clean_minus_corrupted, "heads")
    with pytest.raises(ValueError, match="nothing to restore"):
        activation_patching(model, clean, clean, clean_minus_corrupted, "h.0")
    with pytest.raises(TypeError, match="not a decoder language model"):
        transformer_parts(nn.Sequential(nn.Dense(3)))


# -- logit lens ------------------------------------------------------------------------------------

def test_logit_lens_last_layer_equals_the_model_and_the_first_token_rises(first_token_model):
    clean, _ = clean_corrupted_pair()
    logits, _ = run_with_cache(first_token_model, clean, [])
    lens = logit_lens(first_token_model, clean)
    assert lens.names == ["drop", "h.0", "h.1"] and lens.logits.shape == (3, 4, LENGTH, VOCAB)
    assert np.array_equal(lens.logits[-1], logits)
    scores = lens.logits[:, :, -1].astype(np.float64)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(lens.probabilities(), expected, rtol=1e-12)
    np.testing.assert_array_equal(lens.top_tokens(1)[..., 0], scores.argmax(-1))
    for layer, best in enumerate(lens.top_tokens(1)[..., 0]):
        np.testing.assert_array_equal(lens.target_rank(best)[layer], 0)
    probability = lens.target_probability(2)
    assert probability[-1].min() > 0.9 and probability[0].max() < 0.5     # formed by the blocks, not the embedding
    assert (lens.target_rank(2)[-1] == 0).all()


def _kl_to_last(lens):
    """mean KL(softmax(final logits) || softmax(each layer's logits)) per layer."""
    def log_softmax(z):
        z = z.astype(np.float64) - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = log_softmax(lens.logits[-1])
    return np.array([(np.exp(p) * (p - log_softmax(layer))).sum(-1).mean() for layer in lens.logits])


def test_tuned_lens_starts_as_the_logit_lens_and_trains_closer_to_the_final_logits(first_token_model):
    ids = np.random.default_rng(5).integers(0, VOCAB, size=(64, LENGTH))
    held_out = np.random.default_rng(6).integers(0, VOCAB, size=(64, LENGTH))
    before = [p.numpy().copy() for p in first_token_model.parameters()]
    plain = logit_lens(first_token_model, held_out)
    untrained = logit_lens(first_token_model, held_out, tuned=TunedLens(16, 2))
    np.testing.assert_allclose(untrained.logits, plain.logits, rtol=1e-5, atol=1e-5)
    lens, history = train_tuned_lens(first_token_model, ids, steps=150, lr=1e-2, batch_size=128)
    assert history[-1] < history[0] / 2
    plain_kl, tuned_kl = _kl_to_last(plain), _kl_to_last(logit_lens(first_token_model, held_out, tuned=lens))
    assert (tuned_kl[:-1] < 0.5 * plain_kl[:-1]).all() and tuned_kl[-1] == 0.0     # measured 5.8 -> 1.9, 0.43 -> 0.01
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(first_token_model.parameters(), before))
    with pytest.raises(ValueError, match="3 translators; the model has 2 blocks"):
        logit_lens(first_token_model, held_out, tuned=TunedLens(16, 3))


# -- probes ----------------------------------------------------------------------------------------

def test_logistic_probe_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 5)) * [1, 2, 3, 1, 1] + 2
    labels = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.standard_normal(120) > 2).astype(int) + (x[:, 2] > 3)
    probe = train_probe(x, labels, "logistic", l2=0.05)
    standardised = (x - x.mean(0)) / x.std(0)
    reference = LogisticRegression(C=1 / (0.05 * len(x)), tol=1e-10, max_iter=5000).fit(standardised, labels)
    ours = np.exp(probe.decision(x))
    ours /= ours.sum(1, keepdims=True)
    np.testing.assert_allclose(ours, reference.predict_proba(standardised), atol=1e-4)
    assert probe.score(x, labels) == pytest.approx(reference.score(standardised, labels))


def test_ridge_probe_matches_scikit_learn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4, 2))
    targets = x.reshape(50, -1) @ rng.standard_normal(8) + 0.1 * rng.standard_normal(50)
    probe = train_probe(x, targets, "ridge", l2=0.1)
    flat = x.reshape(50, -1)
    standardised = (flat - flat.mean(0)) / flat.std(0)
    reference = Ridge(alpha=0.1 * 50).fit(standardised, targets)
    np.testing.assert_allclose(probe.predict(x), reference.predict(standardised), rtol=1e-10)
    assert probe.score(x, targets) == pytest.approx(reference.score(standardised, targets))


def test_probe_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        train_probe(np.zeros((4, 2)), [0, 1, 0, 1], "svm")
    with pytest.raises(ShapeError, match="4 activation rows but 3 labels"):
        train_probe(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ShapeError, match="LinearProbe: activations with 3 features"):
        train_probe(np.eye(4)[:, :2], [0, 1, 0, 1]).predict(np.zeros((2, 3)))


def test_probe_sweep_finds_the_first_token_after_attention(first_token_model):
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(300, LENGTH))
    _, cache = run_with_cache(first_token_model, ids, ["drop", "h.0", "h.1"])
    last = {name: cache[name][:, -1] for name in ("drop", "h.0", "h.1")}
    scores = probe_layers(last, ids[:, 0] % 2, "logistic", l2=1e-2)     # the first token's parity
    assert scores["drop"].test < 0.7                                       # the embedding at the end cannot see it
    assert scores["h.1"].test > 0.95


# -- splicing an autoencoder in --------------------------------------------------------------------

def _first_token_loss(logits, ids):
    return F.categorical_cross_entropy(logits, np.repeat(ids[:, :1], LENGTH, axis=1), from_logits=True)


def test_loss_recovered_is_one_for_the_identity_and_zero_for_zeros(first_token_model):
    ids = np.random.default_rng(4).integers(0, VOCAB, size=(8, LENGTH))
    perfect = loss_recovered(first_token_model, ids, "h.0", lambda activation: activation, _first_token_loss)
    assert perfect.fraction_recovered == 1.0 and perfect.spliced_loss == perfect.clean_loss
    assert perfect.zero_ablation_loss > perfect.clean_loss
    useless = loss_recovered(first_token_model, ids, "h.0", lambda activation: activation * 0, _first_token_loss)
    assert useless.fraction_recovered == 0.0


# -- the README's example ---------------------------------------------------------------------------

def test_readme_interpretability_example_runs_and_keeps_its_promises():

    _, names = run_readme_section("Mechanistic interpretability: caches, logit lens")
    np.testing.assert_array_equal(names["grid"].scores[0], [1, 0, 0, 0, 0, 0])
    assert names["estimate"].scores.shape == names["grid"].scores.shape == (2, LENGTH)
    assert names["scores"]["h.1"].test > 0.9
    out, acts = names["out"], names["acts"]
    assert feature_l0(out.features) == 4.0 and explained_variance(acts, out.reconstruction) > 0.8
