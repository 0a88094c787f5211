"""lamina.text.UnigramTrainer: EM raises the likelihood, the lattices' forward-backward and Viterbi
against brute force over all segmentations, the vocabulary asked for, a repeated morpheme learned,
and train_new_from_iterator on a Unigram tokenizer."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from lamina.text import HFTokenizer, UnigramTrainer
from lamina.text.hf_unigram_trainer import PieceLattices

SPIECE = "\u2581"


def corpus(seed: int = 0, n: int = 300) -> list[str]:
    """Sentences of words built from a few stems and endings, some glued to the morpheme 'zork'."""
    rng = np.random.default_rng(seed)
    stems = ["walk", "talk", "jump", "read", "play", "sing", "cook", "swim", "dance", "write"]
    endings = ["", "s", "ed", "ing", "er", "ers"]
    sentences = []
    for _ in range(n):
        words = []
        for _ in range(int(rng.integers(3, 8))):
            word = str(rng.choice(stems)) + str(rng.choice(endings))
            words.append("zork" + word if rng.random() < 0.3 else word)
        sentences.append(" ".join(words))
    return sentences


def unigram_tokenizer(**model) -> HFTokenizer:
    return HFTokenizer.from_str(json.dumps({"model": {"type": "Unigram", "vocab": [], **model},
                                            "pre_tokenizer": {"type": "Metaspace"},
                                            "decoder": {"type": "Metaspace"}}))


@pytest.fixture(scope="module")
def trained():
    tokenizer = unigram_tokenizer()
    trainer = UnigramTrainer(70, n_sub_iterations=3, special_tokens=["<unk>", "<pad>"], unk_token="<unk>")
    tokenizer.train_from_iterator(corpus(), trainer)
    return tokenizer, trainer


def segmentations(word: str):
    """Every way to cut ``word`` into non-empty pieces."""
    for cuts in itertools.product([False, True], repeat=len(word) - 1):
        pieces, start = [], 0
        for k, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(word[start:k])
                start = k
        yield [*pieces, word[start:]]


def test_em_never_lowers_the_likelihood_of_a_fixed_vocabulary(trained):
    _, trainer = trained
    rounds = {}
    for size, likelihood in trainer.history:
        rounds.setdefault(size, []).append(likelihood)
    assert len(rounds) >= 3 and all(len(values) == 3 for values in rounds.values())
    for values in rounds.values():
        assert all(b >= a - 1e-9 * abs(a) for a, b in zip(values, values[1:])), values
    assert any(values[-1] > values[0] for values in rounds.values())


def test_the_vocabulary_has_the_size_asked_and_every_character(trained):
    tokenizer, _ = trained
    assert tokenizer.vocab_size == 70
    assert [tokenizer.token_to_id(t) for t in ("<unk>", "<pad>")] == [0, 1] and tokenizer.model.unk_id == 0
    characters = {c for text in corpus() for c in text.replace(" ", SPIECE)} | {SPIECE}
    assert characters <= set(tokenizer.model.vocab)


def test_a_repeated_morpheme_becomes_a_piece(trained):
    tokenizer, _ = trained
    assert any("zork" in piece for piece in tokenizer.model.vocab)
    assert any("zork" in token for token in tokenizer.tokenize("zorkwalking"))
    assert "<unk>" not in tokenizer.tokenize("zorkswimmers dance")
    assert tokenizer.decode(tokenizer.encode("zorkswimmers dance")) == "zorkswimmers dance"


def test_viterbi_finds_the_best_segmentation_of_training_words(trained):
    tokenizer, _ = trained
    scores = {piece: score for piece, score in tokenizer.model.pieces[2:]}
    ids = {piece: i for i, piece in enumerate(scores)}
    log_probs = np.array(list(scores.values()))
    words = sorted({SPIECE + w for text in corpus() for w in text.split()}, key=len)[:40] + ["zorkwalk", "ers"]
    best_scores, paths = PieceLattices(words, ids, 16).viterbi(log_probs)
    pieces = list(scores)
    for word, best, path in zip(words, best_scores, paths):
        options = [sum(scores[p] for p in cut) for cut in segmentations(word) if all(p in scores for p in cut)]
        assert best == pytest.approx(max(options), abs=1e-9)
        assert sum(scores[pieces[p]] for p in path) == pytest.approx(best, abs=1e-9)
        assert "".join(pieces[p] for p in path) == word
        assert [pieces[p] for p in path] == [token for _, token in tokenizer.model.tokenize(word)]


def test_forward_backward_gives_the_expected_counts_of_all_segmentations():
    pieces = ["a", "b", "c", "ab", "bc", "abc", "ca", "aa"]
    rng = np.random.default_rng(3)
    log_probs = np.log(rng.dirichlet(np.ones(len(pieces))))
    words, counts = ["abca", "aabc", "cab", "b", "abcabc"], np.array([2.0, 1.0, 3.0, 1.0, 2.0])
    expected, total = np.zeros(len(pieces)), 0.0
    for word, count in zip(words, counts):
        cuts = [cut for cut in segmentations(word) if all(p in pieces for p in cut)]
        weights = np.array([math.exp(sum(log_probs[pieces.index(p)] for p in cut)) for cut in cuts])
        total += count * math.log(weights.sum())
        for cut, weight in zip(cuts, weights):
            for piece in cut:
                expected[pieces.index(piece)] += count * weight / weights.sum()
    lattices = PieceLattices(words, {p: i for i, p in enumerate(pieces)}, 3)
    ours, likelihood = lattices.expected_counts(log_probs, counts)
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    assert likelihood == pytest.approx(total, rel=1e-12)
    lattices.keep_pieces(np.array([p != "ab" for p in pieces]))          # renumbered without 'ab'
    kept = np.array([lp for p, lp in zip(pieces, log_probs) if p != "ab"])
    assert lattices.log_likelihoods(kept)[2] == pytest.approx(
        math.log(sum(math.exp(sum(log_probs[pieces.index(p)] for p in cut)) for cut in segmentations("cab")
                     if all(p in pieces and p != "ab" for p in cut))), rel=1e-12)


def test_trained_unigram_round_trips_and_trains_anew(tmp_path, trained):
    tokenizer, _ = trained
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = HFTokenizer.from_file(tmp_path / "tokenizer.json")
    for text in corpus(1, 5):
        assert loaded.encode(text) == tokenizer.encode(text)
    new = tokenizer.train_new_from_iterator(corpus(2, 100), 50, initial_alphabet=["q"])
    assert new.vocab_size == 50 and new.model.type_name == "Unigram"
    assert new.token_to_id("<unk>") == 0 and new.token_to_id("<pad>") == 1 and new.model.unk_id == 0
    assert "q" in new.model.vocab and "<unk>" not in new.tokenize("q q")


def test_characters_the_vocabulary_cannot_hold_are_refused():
    tokenizer = unigram_tokenizer()
    with pytest.raises(ValueError, match=r"UnigramTrainer: vocab_size=10 is too small.*characters"):
        tokenizer.train_from_iterator(["abcdefghijk"], UnigramTrainer(10, unk_token="<unk>"))


def test_viterbi_breaks_ties_as_the_unigram_model():
    pieces = [("a", -1.0), ("b", -1.0), ("ab", -2.0), ("ba", -2.0), ("c", -1.0)]
    model = HFTokenizer.from_str(json.dumps({"model": {"type": "Unigram", "vocab": [list(p) for p in pieces]}})).model
    words = ["ab", "aba", "abab", "cba", "bab"]
    _, paths = PieceLattices(words, {p: i for i, (p, _) in enumerate(pieces)}, 2).viterbi(np.array([s for _, s in
                                                                                                     pieces]))
    for word, path in zip(words, paths):
        assert [pieces[p][0] for p in path] == [token for _, token in model.tokenize(word)], word
