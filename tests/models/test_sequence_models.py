"""The sequence models: a recurrent language model learns the real names corpus, a
recurrent classifier remembers the start of a sequence, and both save and load."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.text import Vocabulary, load_names, pad_sequences, sample_text, shifted_pairs
from lamina.train import Trainer

SHARED_TEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"
IGNORE = -100


@pytest.fixture(scope="module")
def names():
    if not SHARED_TEXT.is_dir():
        pytest.skip("no shared text corpora beside the project")
    all_names = load_names(SHARED_TEXT, download=False)
    order = np.random.default_rng(0).permutation(len(all_names))
    return [all_names[i] for i in order[:4000]], [all_names[i] for i in order[-2000:]]


def _bigram_probabilities(x, y, classes: int) -> np.ndarray:
    """P[a, b]: the add-one bigram model fitted on the (x, y) pairs, the best a model that
    sees only the previous character can do."""
    counts = np.ones((classes, classes))
    keep = y >= 0
    np.add.at(counts, (x[keep], y[keep]), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def test_a_gru_language_model_beats_the_bigram_model_on_real_names(names):
    lamina.manual_seed(0)
    train_names, test_names = names
    vocab = Vocabulary.from_texts(train_names, bos=".", eos=".")

    def pairs(ns):
        return shifted_pairs([vocab.encode(n, add_bos=True, add_eos=True) for n in ns], pad=vocab.pad_id,
                             ignore_index=IGNORE)

    (x, y), (x_test, y_test) = pairs(train_names), pairs(test_names)
    model = models.rnn_language_model(len(vocab), embed_dim=16, hidden=64, cell="gru")
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True, ignore_index=IGNORE)
    Trainer(model, loss, optim.Adam(model, lr=0.01), metrics=(), verbose=0).fit((x, y), epochs=3, batch_size=64)
    with lamina.no_grad():
        test_cost = loss(model(lamina.tensor(x_test)), y_test).item()
    bigram = _bigram_probabilities(x, y, len(vocab))
    kept = y_test != IGNORE
    bigram_cost = -np.log(bigram[x_test[kept], y_test[kept]]).mean()
    # uniform guessing costs log 29 = 3.37 nats, the bigram model about 2.47
    assert test_cost < bigram_cost - 0.15, (test_cost, bigram_cost)
    samples = [sample_text(model, vocab, seed=s, max_length=20) for s in range(20)]
    assert all(s.isalpha() and s.islower() for s in samples if s)
    assert len(set(samples)) >= 15 and np.mean([len(s) for s in samples]) > 3


def test_a_recurrent_classifier_remembers_the_first_token(names):
    """Does the name start with a vowel? Read left to right with the padding in front, the
    answer lies up to 15 steps back from the last state."""
    lamina.manual_seed(1)
    train_names, test_names = names
    vocab = Vocabulary.from_texts(train_names, unk=None)

    def data(ns):
        x = pad_sequences([vocab.encode(n) for n in ns], maxlen=12)
        return x, np.array([n[0] in "aeiou" for n in ns], dtype=np.int64)

    (x, y), (x_test, y_test) = data(train_names), data(test_names)
    model = models.rnn_classifier(len(vocab), 2, embed_dim=8, hidden=32, cell="lstm")
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True)
    trainer = Trainer(model, loss, optim.Adam(model, lr=0.01), verbose=0)
    trainer.fit((x, y), epochs=4, batch_size=64)
    accuracy = trainer.evaluate((x_test, y_test))["accuracy"]
    assert accuracy > 0.95, accuracy                       # the majority class alone: about 0.8


@pytest.mark.parametrize("build", [
    lambda v: models.rnn_language_model(v, embed_dim=4, hidden=5, cell="lstm", num_layers=2, dropout=0.1),
    lambda v: models.rnn_classifier(v, 3, embed_dim=4, hidden=5, cell="rnn", bidirectional=True, num_layers=2),
])
def test_sequence_models_save_and_load(tmp_path, build):
    model = build(11)
    ids = np.random.default_rng(0).integers(0, 11, (3, 7))
    model.eval()
    before = model(lamina.tensor(ids)).numpy()
    lamina.save(model, tmp_path / "model.safetensors")
    again = lamina.load(tmp_path / "model.safetensors")
    again.eval()
    np.testing.assert_array_equal(again(lamina.tensor(ids)).numpy(), before)


def test_sequence_model_arguments_are_checked():
    with pytest.raises(ValueError, match="rnn_language_model: cell must be one of"):
        models.rnn_language_model(10, cell="transformer")
    with pytest.raises(ValueError, match="rnn_classifier: num_classes must be a positive int"):
        models.rnn_classifier(10, 0)
