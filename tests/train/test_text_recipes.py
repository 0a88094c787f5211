"""The language-model data of ``lamina train-text``: disjoint parts, the vocabulary of the
training part, pairs shifted by one, and the bigram baseline."""

from pathlib import Path

import numpy as np
import pytest

from lamina.text import load_names
from lamina.train.text_recipes import IGNORE_INDEX, bigram_cost, prepare_corpus

SHARED_TEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"
pytestmark = pytest.mark.skipif(not SHARED_TEXT.is_dir(), reason="no shared text corpora beside the project")


def test_names_are_split_disjointly_and_framed_by_the_dot():
    data = prepare_corpus("names", SHARED_TEXT, download=False, seed=3)
    sizes = [len(part[0]) for part in (data.train, data.val, data.test)]
    assert sum(sizes) == 32033 and sizes[0] == int(0.8 * 32033)
    decoded = sorted(data.vocab.decode(row) for part in (data.train, data.val, data.test) for row in part[0])
    assert decoded == sorted(load_names(SHARED_TEXT, download=False))     # the parts partition the corpus
    x, y = data.train
    dot = data.vocab.bos_id
    assert (x[:, 0] == dot).all() and (y[:, 1:][x[:, 1:] != data.vocab.pad_id] >= 0).all()
    assert ((y == IGNORE_INDEX) == (np.roll(x, -1, axis=1) == data.vocab.pad_id)).sum() > 0
    again = prepare_corpus("names", SHARED_TEXT, download=False, seed=3, limit=100)
    assert len(again.train[0]) == 100 and again.info["vocabulary"]["bos"] == "."


def test_shakespeare_windows_are_contiguous_and_shifted():
    data = prepare_corpus("shakespeare", SHARED_TEXT, download=False, seq_len=32, limit=50)
    x, y = data.train
    assert x.shape == y.shape == (50, 32) and (x[:, 1:] == y[:, :-1]).all()
    assert data.vocab.decode(x[0]).startswith("First Citizen")
    assert len(data.val[0]) == len(data.test[0]) > 1000


def test_bigram_cost_is_that_of_the_counted_pairs():
    x = np.array([[0, 1, 0, 1]])
    y = np.array([[1, 0, 1, IGNORE_INDEX]])
    # counts with add-one: from 0: to 1 twice (3 of 4), from 1: to 0 once (2 of 3)
    expected = -(2 * np.log(3 / 4) + np.log(2 / 3)) / 3
    assert bigram_cost((x, y), (x, y), 2) == pytest.approx(expected)
