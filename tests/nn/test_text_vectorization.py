"""TextVectorization: tokenisation, vocabulary, int / multi_hot / count / tf_idf outputs
against hand-computed values and scikit-learn, saving, and a small sentiment model."""

from __future__ import annotations

import string

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

import lamina
from lamina import ShapeError, nn
from lamina.functional.loss import binary_cross_entropy

CORPUS = [
    "The cat sat on the mat.",
    "The dog ate my homework!",
    "A cat, a dog; and a bird?",
    "My dog sat; the cat ran.",
]


def _strip(text: str) -> str:
    return text.lower().translate(str.maketrans("", "", string.punctuation))


def test_int_mode_by_hand():
    layer = nn.TextVectorization()
    layer.adapt(CORPUS, batch_size=2)
    vocabulary = layer.get_vocabulary()
    assert vocabulary[:6] == ["", "[UNK]", "the", "dog", "cat", "a"]   # 'the' 4 times; ties of 3: decreasing
    assert set(vocabulary[2:]) == set(" ".join(_strip(t) for t in CORPUS).split())
    out = layer(["The cat flew", "dog"])
    assert out.dtype == np.int64 and not out.requires_grad
    ids = {t: i for i, t in enumerate(vocabulary)}
    np.testing.assert_array_equal(out.numpy(), [[ids["the"], ids["cat"], 1], [ids["dog"], 0, 0]])
    fixed = nn.TextVectorization(vocabulary=["x", "y"], output_sequence_length=3)
    np.testing.assert_array_equal(fixed(np.array([["y x y x"], ["z"]])).numpy(), [[3, 2, 3], [1, 0, 0]])
    np.testing.assert_array_equal(fixed("X").numpy(), [2, 0, 0])
    assert fixed.compute_output_shape((2, 1)) == (2, 3)


def test_splits_ngrams_and_callables():
    chars = nn.TextVectorization(split="character", standardize=None)
    chars.adapt(["ab a"])
    assert chars.tokenize("ab a") == ["a", "b", " ", "a"]
    assert chars.get_vocabulary() == ["", "[UNK]", "a", "b", " "]
    grams = nn.TextVectorization(ngrams=2)
    assert grams.tokenize("A b, c") == ["a", "b", "c", "a b", "b c"]
    assert nn.TextVectorization(ngrams=(2, 3)).tokenize("a b c") == ["a b", "b c", "a b c"]
    assert nn.TextVectorization(split=None, standardize="lower").tokenize("Hi There!") == ["hi there!"]
    custom = nn.TextVectorization(standardize=lambda s: s.upper(), split=lambda s: s.split("-"))
    assert custom.tokenize("a-b") == ["A", "B"]
    with pytest.raises(ValueError, match="TextVectorization.*callable"):
        custom.get_config()


def test_count_and_multi_hot_match_count_vectorizer():
    reference = CountVectorizer(preprocessor=_strip, token_pattern=r"\S+", ngram_range=(1, 2))
    counts = reference.fit_transform(CORPUS).toarray()
    for mode in ("count", "multi_hot"):
        layer = nn.TextVectorization(output_mode=mode, ngrams=2)
        layer.adapt(np.array(CORPUS))
        out = layer(CORPUS).numpy()
        vocabulary = layer.get_vocabulary()
        assert vocabulary[0] == "[UNK]" and sorted(vocabulary[1:]) == sorted(reference.get_feature_names_out())
        columns = [reference.vocabulary_[t] for t in vocabulary[1:]]
        expected = counts[:, columns] if mode == "count" else (counts[:, columns] > 0)
        np.testing.assert_array_equal(out[:, 1:], expected)
        np.testing.assert_array_equal(out[:, 0], 0)                    # every token is known


def test_tf_idf_against_sklearn_document_frequencies():
    """Keras's idf is log(1 + N / (1 + df)); scikit-learn's smoothed idf is
    log((1 + N) / (1 + df)) + 1. Both rest on the same df, recovered from sklearn's idf."""
    n = len(CORPUS)
    reference = TfidfVectorizer(preprocessor=_strip, token_pattern=r"\S+", norm=None, smooth_idf=True)
    reference.fit(CORPUS)
    df = (1 + n) / np.exp(reference.idf_ - 1) - 1
    layer = nn.TextVectorization(output_mode="tf_idf")
    layer.adapt(CORPUS, batch_size=3)
    vocabulary = layer.get_vocabulary()
    columns = [reference.vocabulary_[t] for t in vocabulary[1:]]
    idf = np.log1p(n / (1 + df[columns]))
    np.testing.assert_allclose(layer.lookup.idf_weights[1:], idf, rtol=1e-10)
    counts = CountVectorizer(preprocessor=_strip, token_pattern=r"\S+").fit(CORPUS)
    columns = [counts.vocabulary_[t] for t in vocabulary[1:]]
    tf = counts.transform(["the cat and the unknown word"]).toarray()[:, columns]
    out = layer(["the cat and the unknown word"]).numpy()
    np.testing.assert_allclose(out[0, 1:], (tf * idf)[0], rtol=1e-6)
    np.testing.assert_allclose(out[0, 0], 2 * idf.mean(), rtol=1e-6)     # 2 unknown tokens, mean idf


def test_max_tokens_and_padding():
    layer = nn.TextVectorization(max_tokens=5, output_mode="multi_hot", pad_to_max_tokens=True)
    layer.adapt(["a a a b b c d"])
    assert layer.get_vocabulary() == ["[UNK]", "a", "b", "d", "c"]
    assert layer(["a z"]).shape == (1, 5) == layer.compute_output_shape((1,))
    small = nn.TextVectorization(max_tokens=4)
    small.adapt(["a a a b b c"])
    assert small.get_vocabulary() == ["", "[UNK]", "a", "b"]


def test_errors_name_the_layer():
    with pytest.raises(RuntimeError, match="TextVectorization.*adapt"):
        nn.TextVectorization()(["hello"])
    with pytest.raises(ValueError, match="TextVectorization.*output_mode"):
        nn.TextVectorization(output_mode="one_hot")
    with pytest.raises(ValueError, match="TextVectorization.*standardize"):
        nn.TextVectorization(standardize="upper")
    layer = nn.TextVectorization(vocabulary=["a"])
    with pytest.raises(ShapeError, match=r"TextVectorization.*\(2, 2\)"):
        layer(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="TextVectorization.*strings"):
        layer([1, 2])
    with pytest.raises(ValueError, match="TextVectorization.*no data"):
        nn.TextVectorization().adapt(iter([]))


def test_config_state_dict_and_save_load(tmp_path):
    layer = nn.TextVectorization(max_tokens=12, output_mode="tf_idf", ngrams=(1, 2))
    layer.adapt(CORPUS)
    rebuilt = nn.layer_from_config(nn.layer_to_config(layer))
    np.testing.assert_array_equal(rebuilt(CORPUS).numpy(), layer(CORPUS).numpy())
    assert set(layer.state_dict()) == {"lookup.idf_weights", "lookup.vocabulary_bytes", "lookup.vocabulary_lengths"}
    lamina.manual_seed(0)
    model = nn.Sequential(layer, nn.Dense(3))
    x = np.array(CORPUS)
    expected = model(x).numpy()
    lamina.save(model, tmp_path / "text.safetensors")
    np.testing.assert_allclose(lamina.load(tmp_path / "text.safetensors")(x).numpy(), expected, rtol=1e-6)


POSITIVE = ["good", "great", "lovely", "superb", "fun", "wonderful"]
NEGATIVE = ["bad", "awful", "boring", "dull", "poor", "terrible"]
FILLER = ["the", "movie", "was", "really", "a", "plot", "and", "acting", "quite"]


def _reviews(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    texts = []
    for label in labels:
        words = list(rng.choice(FILLER, 5)) + list(rng.choice(POSITIVE if label else NEGATIVE, 2))
        texts.append(" ".join(rng.permutation(words)).capitalize() + "!")
    return np.array(texts), labels.astype(np.float32)[:, None]


def test_sentiment_model_learns_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    train_x, train_y = _reviews(200, rng)
    test_x, test_y = _reviews(100, rng)
    lamina.manual_seed(0)
    vectorize = nn.TextVectorization(max_tokens=40, output_sequence_length=8)
    vectorize.adapt(train_x, batch_size=64)
    model = nn.Sequential(vectorize, nn.Embedding(40, 8), nn.GlobalAvgPool1D(), nn.Dense(1))
    opt = lamina.optim.Adam(model, lr=0.05)
    for _ in range(40):
        loss = binary_cross_entropy(model(train_x), train_y, from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits = model(test_x).numpy()
    assert ((logits > 0) == (test_y > 0.5)).mean() > 0.95
    path = tmp_path / "sentiment.safetensors"
    lamina.save(model, path)
    np.testing.assert_allclose(lamina.load(path)(test_x).numpy(), logits, rtol=1e-6)
