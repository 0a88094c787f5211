"""kNN-LM: the datastore holds the model's hidden states and the next tokens, the search and
p_kNN match a brute-force NumPy reference, the interpolation meets its ends (lambda 0: the LM,
lambda 1: p_kNN), cached generation draws the uncached tokens, and on a new domain a datastore
of that domain's text lowers the perplexity of a briefly trained LM by far."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import models

V = 13



def _gpt2(n_positions: int = 24, seed: int = 0) -> models.GPT2:
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=V, n_positions=n_positions, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                        resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    return model.eval()


def _sequences(count: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, size=length) for _ in range(count)]


def _brute_force_neighbours(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every squared distance computed as sum (q - k)^2, sorted stably: ties keep index order."""
    d = ((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def _brute_force_p_knn(distances: np.ndarray, values: np.ndarray, vocab: int, temperature: float) -> np.ndarray:
    p = np.zeros((len(distances), vocab))
    for row in range(len(distances)):
        weights = [np.exp(-d / temperature) for d in distances[row]]
        for weight, value in zip(weights, values[row]):
            p[row, value] += weight / sum(weights)
    return p


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_search_and_p_knn_match_a_brute_force_reference_with_ties(temperature):
    rng = np.random.default_rng(1)
    # integer-valued keys and queries: every distance is exact, and many tie (repeated keys too)
    keys = rng.integers(-2, 3, size=(40, 3)).astype(np.float64)
    keys[20:30] = keys[:10]
    values = rng.integers(0, 4, size=40)          # few values: neighbours often share one
    queries = rng.integers(-2, 3, size=(15, 3)).astype(np.float64)
    store = models.KNNDatastore(keys, values)
    indices, distances = store.search(queries, k=7, chunk_size=6)
    ref_indices, ref_distances = _brute_force_neighbours(keys, queries, 7)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(distances, ref_distances)
    assert (np.diff(distances, axis=1) == 0).any(), "the case should hold ties"
    p = models.knn_distribution(distances, values[indices], 6, temperature)
    np.testing.assert_allclose(p, _brute_force_p_knn(ref_distances, values[ref_indices], 6, temperature),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)


def test_equal_values_add_up_and_temperature_sharpens():
    p = models.knn_distribution([[0.0, 1.0, 1.0]], [[2, 0, 0]], 3, temperature=1.0)
    e = np.exp(-1.0)
    np.testing.assert_allclose(p, [[2 * e / (1 + 2 * e), 0.0, 1 / (1 + 2 * e)]], rtol=1e-14)
    cold = models.knn_distribution([[0.0, 1.0, 1.0]], [[2, 0, 0]], 3, temperature=0.1)
    assert cold[0, 2] > 0.99
    flat = models.knn_distribution([[0.0, 1.0, 1.0]], [[2, 0, 0]], 3, temperature=1e6)
    np.testing.assert_allclose(flat, [[2 / 3, 0.0, 1 / 3]], rtol=1e-5)


def test_chunked_search_equals_unchunked():
    rng = np.random.default_rng(2)
    store = models.KNNDatastore(rng.normal(size=(101, 8)), rng.integers(0, V, size=101))
    queries = rng.normal(size=(23, 8))
    whole = store.search(queries, k=9, chunk_size=1000)
    for chunk in (1, 5, 17):
        indices, distances = store.search(queries, k=9, chunk_size=chunk)
        np.testing.assert_array_equal(indices, whole[0])
        np.testing.assert_allclose(distances, whole[1], rtol=1e-12)
    ref_indices, ref_distances = _brute_force_neighbours(store.keys, queries, 9)
    np.testing.assert_array_equal(whole[0], ref_indices)
    np.testing.assert_allclose(whole[1], ref_distances, rtol=1e-10)


def test_stored_keys_are_the_hidden_states_before_the_output_layer(float64):
    model = _gpt2()
    sequences = _sequences(3, 7, seed=3) + _sequences(2, 5, seed=4)
    store = models.build_datastore(model, sequences, batch_size=2)
    assert len(store) == 3 * 6 + 2 * 4 and store.keys.shape[1] == 16
    np.testing.assert_array_equal(store.values, np.concatenate([s[1:] for s in sequences]))
    wte = model.wte.weight.numpy()
    with lamina.no_grad():
        scores = [model(lamina.tensor(s[None])).numpy()[0, :-1] for s in sequences]
        hidden = [model.ln_f(model.h[1](model.h[0](model.wpe(model.wte(lamina.tensor(s[None])))))).numpy()[0, :-1]
                  for s in sequences]
    np.testing.assert_allclose(store.keys, np.concatenate(hidden), rtol=1e-12, atol=1e-12)
    # GPT-2's output layer is the tied token table: the keys give the model's scores
    np.testing.assert_allclose(store.keys @ wte.T, np.concatenate(scores), rtol=1e-10, atol=1e-10)


def test_keys_from_a_named_layer_are_its_outputs(float64):
    model = _gpt2()
    sequences = _sequences(2, 6, seed=5)
    store = models.build_datastore(model, sequences, layer="h.0")
    with lamina.no_grad():
        outputs = [model.h[0](model.wpe(model.wte(lamina.tensor(s[None])))).numpy()[0, :-1] for s in sequences]
    np.testing.assert_allclose(store.keys, np.concatenate(outputs), rtol=1e-12, atol=1e-12)
    assert store.layer == "h.0"
    log_p = models.knn_lm_log_probs(model, store, sequences[0], k=4, lam=1.0)
    indices, distances = store.search(np.asarray(outputs[0]), 4)
    p_knn = models.knn_distribution(distances, store.values[indices], V)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log_p[:-1], np.log(p_knn), rtol=1e-12)


def test_interpolation_ends_are_the_lm_and_p_knn(float64):
    model = _gpt2()
    store = models.build_datastore(model, _sequences(6, 10, seed=6))
    ids = np.stack(_sequences(2, 9, seed=7))
    with lamina.no_grad():
        scores = model(lamina.tensor(ids)).numpy()
        keys = model.hidden_states(lamina.tensor(ids)).numpy().reshape(-1, 16)
    p_lm = np.exp(_log_softmax(scores))
    lm_only = models.knn_lm_log_probs(model, store, ids, k=5, lam=0.0)
    np.testing.assert_array_equal(lm_only, _log_softmax(scores.astype(np.float64)))
    indices, distances = _brute_force_neighbours(store.keys, keys, 5)
    p_knn = _brute_force_p_knn(distances, store.values[indices], V, 2.0).reshape(2, 9, V)
    knn_only = models.knn_lm_log_probs(model, store, ids, k=5, lam=1.0, temperature=2.0)
    np.testing.assert_allclose(np.exp(knn_only), p_knn, rtol=1e-10, atol=1e-300)
    assert np.isneginf(knn_only[p_knn == 0]).all()
    mixed = models.knn_lm_log_probs(model, store, ids, k=5, lam=0.3, temperature=2.0)
    np.testing.assert_allclose(np.exp(mixed), 0.3 * p_knn + 0.7 * p_lm, rtol=1e-10)
    ppl = models.knn_lm_perplexity(model, store, list(ids), k=5, lam=0.3, temperature=2.0)
    picked = np.take_along_axis(mixed[:, :-1], ids[:, 1:, None], 2)
    np.testing.assert_allclose(ppl, np.exp(-picked.mean()), rtol=1e-12)


def _watch_hidden_states(model) -> list[int]:
    seen, original = [], model.hidden_states

    def watch(ids, **options):
        seen.append(ids.shape[1])
        return original(ids, **options)

    model.hidden_states = watch
    return seen


@pytest.mark.parametrize("sample_temperature", [0.0, 0.8])
def test_cached_generation_draws_the_uncached_tokens(float64, sample_temperature):
    model = _gpt2(n_positions=12)
    store = models.build_datastore(model, _sequences(8, 12, seed=8))
    prompt = np.array([3, 1, 4, 1, 5])
    options = dict(max_new_tokens=11, k=6, lam=0.5, temperature=3.0, sample_temperature=sample_temperature, seed=9)
    seen = _watch_hidden_states(model)
    cached = models.knn_lm_generate(model, store, prompt, **options)
    assert seen == [5] + [1] * 7 + [12] * 3          # the cache while the text fits in 12 tokens
    uncached = models.knn_lm_generate(model, store, prompt, use_cache=False, **options)
    assert len(cached) == 16
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[:5], prompt)


def test_greedy_generation_follows_the_interpolated_argmax(float64):
    model = _gpt2()
    store = models.build_datastore(model, _sequences(8, 12, seed=10), layer="h.1")
    out = models.knn_lm_generate(model, store, [2, 7], max_new_tokens=6, k=4, lam=0.6, eos_id=-1)
    log_p = models.knn_lm_log_probs(model, store, out, k=4, lam=0.6)
    np.testing.assert_array_equal(out[2:], log_p[1:-1].argmax(-1))
    lm_greedy = models.knn_lm_generate(model, store, [2, 7], max_new_tokens=6, lam=0.0)
    with lamina.no_grad():
        scores = model(lamina.tensor(lm_greedy[None])).numpy()[0]
    np.testing.assert_array_equal(lm_greedy[2:], scores[1:-1].argmax(-1))


ALPHABET = "^ .abcdefghijklmnopqrstuvwxyz"
COMMON = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "to", "big", "red", "old", "man", "saw", "hat"]
NAMES = ["zorblax", "quintopia", "vexmora", "plinkett", "drubnik"]
PLACES = ["kalyxford", "murgatroon", "vesperhold"]


def _encode(text: str) -> np.ndarray:
    return np.array([ALPHABET.index(c) for c in "^" + text], dtype=np.int64)


def test_a_datastore_of_a_new_domain_lowers_the_perplexity_there():
    """A character LM trained briefly on plain sentences meets a domain of rare made-up names:
    a datastore of 20 sentences of that domain brings the perplexity of 10 new ones (new
    combinations of the names) from ~230 down to ~3, while a datastore of the training text
    does not help (k=8, lambda=0.5, T=1)."""
    rng = np.random.default_rng(0)
    plain = [_encode(" ".join(rng.choice(COMMON, size=rng.integers(4, 7))) + ".") for _ in range(64)]
    lamina.manual_seed(0)
    model = models.GPT2(vocab_size=len(ALPHABET), n_positions=48, n_embd=32, n_layer=1, n_head=2,
                        embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        batch = [plain[i] for i in rng.choice(len(plain), 16)]
        ids = np.stack([s[:min(map(len, batch))] for s in batch])
        scores = model(lamina.tensor(ids[:, :-1])).reshape(-1, len(ALPHABET))
        loss = lamina.functional.cross_entropy(scores, lamina.tensor(ids[:, 1:].reshape(-1)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    domain = np.random.default_rng(1)
    sentences = [_encode(f"{domain.choice(NAMES)} went to {domain.choice(PLACES)}.") for _ in range(30)]
    store, held_out = models.build_datastore(model, sentences[:20]), sentences[20:]
    settings = dict(k=8, lam=0.5, temperature=1.0)
    lm = models.knn_lm_perplexity(model, store, held_out, lam=0.0)
    knn = models.knn_lm_perplexity(model, store, held_out, **settings)
    off_domain = models.knn_lm_perplexity(model, models.build_datastore(model, plain), held_out, **settings)
    assert knn < lm / 10 and knn < 6, (knn, lm)
    assert knn < off_domain / 10, (knn, off_domain)


def test_arguments_are_checked():
    model = _gpt2()
    store = models.build_datastore(model, _sequences(2, 4, seed=11))
    with pytest.raises(ValueError, match="k=7 exceeds the 6 entries"):
        models.knn_lm_log_probs(model, store, [1, 2], k=7)
    with pytest.raises(ValueError, match="lam .* must lie in"):
        models.knn_lm_log_probs(model, store, [1, 2], k=2, lam=1.5)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        models.build_datastore(model, _sequences(1, 4, seed=1), layer="nope")
    with pytest.raises(ValueError, match="exceeds the model's context of 24"):
        models.build_datastore(model, _sequences(1, 30, seed=1))
    with pytest.raises(lamina.errors.ShapeError, match="queries"):
        store.search(np.zeros((2, 3)), 1)


def test_readme_example_runs():
    printed, names = run_readme_section("Nearest-neighbour language models (kNN-LM)")
    assert names["with_memory"] < names["alone"] / 2, printed
    assert list(names["continued"]) == list(range(10)), printed      # the stored text, recalled
