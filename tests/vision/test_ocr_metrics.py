"""Text-recognition metrics on hand-made pairs, against values worked out by hand."""

from __future__ import annotations

import pytest

from lamina.vision import (
    character_error_rate,
    edit_distance,
    normalized_edit_distance,
    recognition_metrics,
    word_accuracy,
)


@pytest.mark.parametrize("a, b, distance", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
    ("12345", "12345", 0), ("1234", "4321", 4), ("intention", "execution", 5), (["the", "cat"], ["a", "cat"], 1),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_corpus_metrics_by_hand():
    predictions = ["123", "4456", "", "78"]
    references = ["123", "456", "9", "789"]
    # edits 0, 1 (an extra 4), 1 (a missing 9), 1 (a missing 9); reference characters 3 + 3 + 1 + 3
    assert character_error_rate(predictions, references) == pytest.approx(3 / 10)
    assert word_accuracy(predictions, references) == pytest.approx(1 / 4)
    # per pair D / max(len): 0, 1/4, 1/1, 1/3
    ned = (0 + 1 / 4 + 1 + 1 / 3) / 4
    assert normalized_edit_distance(predictions, references) == pytest.approx(ned)
    assert recognition_metrics(predictions, references) == pytest.approx(
        {"cer": 0.3, "word_accuracy": 0.25, "ned": ned, "one_minus_ned": 1 - ned})


def test_corpus_rate_is_not_the_mean_of_line_rates():
    # line rates 1/1 and 0/9 average to 0.5; the corpus rate is 1 edit in 10 characters
    assert character_error_rate(["x", "123456789"], ["y", "123456789"]) == pytest.approx(0.1)
    assert character_error_rate(["abcd"], ["a"]) == pytest.approx(3.0)


def test_empty_pairs_and_case():
    assert normalized_edit_distance(["", "ab"], ["", "ab"]) == 0.0
    assert word_accuracy(["Hello", "world"], ["hello", "World"]) == 0.0
    assert word_accuracy(["Hello", "world"], ["hello", "World"], ignore_case=True) == 1.0


def test_errors():
    with pytest.raises(ValueError, match="character_error_rate: expected as many predictions as references.*2 and 1"):
        character_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no characters"):
        character_error_rate([""], [""])
    with pytest.raises(TypeError, match="word_accuracy.*wrap a single pair"):
        word_accuracy("abc", "abc")
