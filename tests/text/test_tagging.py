"""Entity spans, BIO/BIOES transition rules and entity-level scores (seqeval's conventions;
spans here end exclusively, seqeval's get_entities inclusively)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lamina.text import bio_allowed_transitions, bio_spans, entity_scores


def test_lenient_spans_follow_the_conll_rules():
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert bio_spans(["I-PER", "I-PER", "O"]) == [("PER", 0, 2)]                 # I after O opens an entity
    assert bio_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]  # a type change splits
    assert bio_spans(["B-PER", "B-PER", "O", "O"]) == [("PER", 0, 1), ("PER", 1, 2)]
    assert bio_spans(["O", "O"]) == []
    assert bio_spans(["B-X", "I-X"]) == [("X", 0, 2)]                             # open at the end


def test_lenient_spans_read_bioes():
    tags = ["B-PER", "E-PER", "S-LOC", "B-ORG", "I-ORG", "E-ORG", "E-ORG", "O", "I-PER"]
    assert bio_spans(tags, scheme="BIOES") == [("PER", 0, 2), ("LOC", 2, 3), ("ORG", 3, 6), ("ORG", 6, 7),
                                               ("PER", 8, 9)]


def test_strict_spans_keep_only_well_formed_entities():
    assert bio_spans(["I-NP", "I-NP", "O"], strict=True) == []
    assert bio_spans(["B-NP", "I-NP", "O"], strict=True) == [("NP", 0, 2)]
    assert bio_spans(["B-A", "I-B", "B-B", "I-B"], strict=True) == [("A", 0, 1), ("B", 2, 4)]
    tags = ["B-PER", "I-PER", "O", "S-LOC", "B-ORG", "E-ORG", "E-X", "B-Y"]
    assert bio_spans(tags, scheme="BIOES", strict=True) == [("LOC", 3, 4), ("ORG", 4, 6)]
    with pytest.raises(ValueError, match="bio_spans.*'S-LOC'"):
        bio_spans(["S-LOC"], scheme="BIO", strict=True)


def test_entity_scores_as_seqeval():
    truth = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    guess = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = entity_scores(truth, guess)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.5, 0.5, 0.5)
    assert scores["per_type"]["PER"]["f1"] == 1.0 and scores["per_type"]["MISC"]["f1"] == 0.0
    # seqeval's strict example: the same tags are right leniently and wrong strictly
    assert entity_scores([["B-NP", "I-NP", "O"]], [["I-NP", "I-NP", "O"]])["f1"] == 1.0
    assert entity_scores([["B-NP", "I-NP", "O"]], [["I-NP", "I-NP", "O"]], strict=True)["f1"] == 0.0


def test_entity_scores_count_and_take_tag_ids():
    labels = ["O", "B-A", "I-A", "B-B"]
    truth = [[1, 2, 0, 3], [0, 3]]
    guess = [[1, 2, 0, 1], [0, 0]]
    scores = entity_scores(truth, guess, labels=labels)
    assert (scores["true"], scores["predicted"], scores["correct"]) == (3, 2, 1)
    assert scores["precision"] == 0.5 and scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 / 3 / (0.5 + 1 / 3))
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="entity_scores.*sequence 0"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="entity_scores.*2 true sequences"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="entity_scores.*tag id 7"):
        entity_scores([[7]], [[0]], labels=labels)


def test_allowed_transitions_bio():
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    allowed = bio_allowed_transitions(labels)
    start, end = 5, 6
    assert allowed.shape == (7, 7) and allowed.dtype == bool
    assert allowed[start, 0] and allowed[start, 1] and not allowed[start, 2]
    assert allowed[1, 2] and allowed[2, 2] and not allowed[1, 4] and not allowed[0, 2]
    assert allowed[:5, end].all() and not allowed[end].any() and not allowed[:, start].any()


def test_allowed_transitions_bioes():
    labels = ["O", "B-A", "I-A", "E-A", "S-A", "B-B"]
    allowed = bio_allowed_transitions(labels, scheme="BIOES")
    start, end = 6, 7
    assert list(np.flatnonzero(allowed[start, :6])) == [0, 1, 4, 5]
    assert list(np.flatnonzero(allowed[1, :8])) == [2, 3]          # B-A goes on with I-A or E-A only
    assert list(np.flatnonzero(allowed[3, :8])) == [0, 1, 4, 5, end]
    assert not allowed[2, end] and allowed[4, end]


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_legal_sequences_are_exactly_the_well_formed_ones(scheme):
    """Every tag sequence of length 4 over two types: legal under the matrix iff its strict
    reading gives the same spans as its lenient reading and every tag lies in a span or is O."""
    prefixes = "BI" if scheme == "BIO" else "BIES"
    labels = ["O"] + [f"{p}-{t}" for t in "XY" for p in prefixes]
    allowed = bio_allowed_transitions(labels, scheme=scheme)
    k = len(labels)
    for path in itertools.product(range(k), repeat=4):
        ends = [k, *path, k + 1]
        legal = all(allowed[a, b] for a, b in zip(ends[:-1], ends[1:]))
        tags = [labels[i] for i in path]
        strict = bio_spans(tags, scheme, strict=True)
        covered = sum(stop - begin for _, begin, stop in strict) == sum(tag != "O" for tag in tags)
        assert legal == (covered and strict == bio_spans(tags, scheme)), tags


def test_tag_errors():
    with pytest.raises(ValueError, match="bio_allowed_transitions.*'X-A'"):
        bio_allowed_transitions(["O", "X-A"])
    with pytest.raises(ValueError, match="bio_allowed_transitions.*'E-A'"):
        bio_allowed_transitions(["O", "E-A"], scheme="BIO")
    with pytest.raises(ValueError, match="scheme"):
        bio_spans(["O"], scheme="IOB1")
    with pytest.raises(TypeError, match="bio_spans.*strings"):
        bio_spans([1, 2])
