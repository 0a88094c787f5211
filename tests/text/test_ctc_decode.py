"""CTC decoding: greedy decoding of hand-made scores, prefix beam search against brute-force
enumeration of every path, the language-model hook, and ids written as text the way Hugging
Face's wav2vec 2.0 tokenizer does."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest

from lamina.text import ctc_collapse, ctc_greedy_decode, ctc_ids_to_text, ctc_prefix_beam_search

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "H": 6, "L": 7, "O": 8, "W": 9, "R": 10,
         "D": 11}


def _one_hot_frames(path, classes: int, sharpness: float = 0.9) -> np.ndarray:
    probs = np.full((len(path), classes), (1 - sharpness) / (classes - 1))
    probs[np.arange(len(path)), path] = sharpness
    return probs


def _random_log_probs(frames: int, classes: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(0.0, 1.5, (frames, classes))
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _brute_force(log_probs: np.ndarray, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log p(l) for every label sequence l, summing the probabilities of all C^T paths."""
    frames, classes = log_probs.shape
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(classes), repeat=frames):
        totals[tuple(ctc_collapse(path, blank))] += float(np.exp(log_probs[np.arange(frames), path].sum()))
    return {labels: np.log(p) for labels, p in totals.items()}


def test_collapse_merges_runs_then_drops_blanks():
    assert ctc_collapse([1, 1, 0, 2, 0, 2, 2]) == [1, 2, 2]
    assert ctc_collapse([3, 3, 3], blank=3) == []
    assert ctc_collapse([0, 1, 2, 2, 1], blank=2) == [0, 1, 1]


def test_greedy_decoding_of_hand_made_probabilities():
    path = [0, 6, 6, 5, 0, 7, 0, 7, 8, 4, 9, 9, 8, 10, 7, 11, 11, 0]
    probs = _one_hot_frames(path, len(VOCAB))
    ids = ctc_greedy_decode(probs)
    assert ids == [6, 5, 7, 7, 8, 4, 9, 8, 10, 7, 11]
    assert ctc_ids_to_text(ids, VOCAB) == "HELLO WORLD"
    assert ctc_greedy_decode(np.log(probs)) == ids                      # log-probabilities: the same argmax
    batch = np.stack([probs, _one_hot_frames([5] * 9 + [0] * 9, len(VOCAB))])
    assert ctc_greedy_decode(batch, lengths=[5, 18]) == [[6, 5], [5]]
    texts = ctc_ids_to_text(ctc_greedy_decode(batch), list(VOCAB))
    assert texts == ["HELLO WORLD", "E"]


@pytest.mark.parametrize("frames, classes, seed", [(5, 3, 0), (4, 4, 1), (6, 3, 2), (3, 5, 3)])
def test_prefix_beam_search_equals_brute_force_enumeration(frames, classes, seed):
    log_probs = _random_log_probs(frames, classes, seed)
    exact = _brute_force(log_probs)
    best = max(exact, key=exact.get)
    hypotheses = ctc_prefix_beam_search(log_probs, beam_width=len(exact))
    assert hypotheses[0].ids == best
    assert len(hypotheses) == len(exact)
    for hypothesis in hypotheses:                # a full beam sums every path of every prefix
        assert abs(hypothesis.log_prob - exact[hypothesis.ids]) < 1e-10
        assert hypothesis.score == hypothesis.log_prob
    narrow = ctc_prefix_beam_search(log_probs, beam_width=4)
    assert len(narrow) == 4 and narrow[0].log_prob <= exact[best] + 1e-12


def test_beam_search_finds_the_label_sequence_greedy_decoding_misses():
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))      # the blank wins each frame, label 1 overall
    assert ctc_greedy_decode(log_probs) == []
    best = ctc_prefix_beam_search(log_probs, beam_width=2)[0]
    assert best.ids == (1,) and abs(np.exp(best.log_prob) - 0.64) < 1e-12


def test_language_model_hook_rescores_the_prefixes():
    log_probs = np.log(np.array([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]]))
    assert ctc_prefix_beam_search(log_probs)[0].ids == (1,)
    calls = []

    def prefers_two(prefix, label):
        calls.append((prefix, label))
        return np.log(0.9 if label == 2 else 0.1)

    hypotheses = ctc_prefix_beam_search(log_probs, lm=prefers_two, lm_weight=1.0, label_bonus=0.25)
    assert hypotheses[0].ids == (2,)
    for hypothesis in hypotheses:
        lm_terms = sum(np.log(0.9 if c == 2 else 0.1) + 0.25 for c in hypothesis.ids)
        assert abs(hypothesis.score - hypothesis.log_prob - lm_terms) < 1e-12
    assert ((), 2) in calls and all(isinstance(prefix, tuple) for prefix, _ in calls)
    flat = ctc_prefix_beam_search(log_probs, lm=lambda prefix, label: 0.0)
    assert [h.ids for h in flat] == [h.ids for h in ctc_prefix_beam_search(log_probs)]


def test_top_k_pruning_and_logits_input():
    log_probs = _random_log_probs(5, 6, 4)
    full = ctc_prefix_beam_search(log_probs, beam_width=3)
    shifted = ctc_prefix_beam_search(log_probs + 3.0, beam_width=3)           # logits: normalised first
    assert [h.ids for h in full] == [h.ids for h in shifted]
    pruned = ctc_prefix_beam_search(log_probs, beam_width=3, top_k=6)
    assert [h.ids for h in pruned] == [h.ids for h in full]
    tiny = ctc_prefix_beam_search(log_probs, beam_width=3, top_k=1)
    assert all(len(set(h.ids) - set(log_probs.argmax(axis=1).tolist())) == 0 for h in tiny)


def test_decoders_reject_bad_arguments():
    with pytest.raises(ValueError, match="ctc_greedy_decode.*shape"):
        ctc_greedy_decode(np.zeros(4))
    with pytest.raises(ValueError, match="blank must be an int in \\[0, 3\\)"):
        ctc_greedy_decode(np.zeros((2, 3)), blank=3)
    with pytest.raises(ValueError, match="lengths"):
        ctc_greedy_decode(np.zeros((2, 4, 3)), lengths=[5, 1])
    with pytest.raises(ValueError, match="beam_width"):
        ctc_prefix_beam_search(np.zeros((2, 3)), beam_width=0)
    with pytest.raises(ValueError, match="ctc_ids_to_text: ids \\[40\\]"):
        ctc_ids_to_text([5, 40], VOCAB)
