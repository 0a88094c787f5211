"""Extractive question-answering preprocessing with lamina.text.HFTokenizer: questions kept whole,
contexts cut into overlapping windows (truncation='only_second', stride), and the answer's
characters mapped to start/end tokens of each window by answer_token_positions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lamina.text import HFTokenizer, WordPieceTokenizer, answer_token_positions

VOCABULARY = ("the quick brown fox jumps over lazy dog river bank water flows north south city old new tower "
              "bridge built stone wood year people lived near far").split()


@pytest.fixture(scope="module")
def bert() -> HFTokenizer:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(VOCABULARY) for _ in range(30)) + "." for _ in range(20)]
    return HFTokenizer.from_str(WordPieceTokenizer.train(corpus, 90).to_hf_json())


def examples(count: int, seed: int = 1):
    """(question, context, (answer start, answer end)): the answer a run of 1-3 words of the context."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(VOCABULARY) for _ in range(rng.randint(10, 40))]
        context = " ".join(words) + "."
        first = rng.randrange(len(words) - 3)
        start = len(" ".join(words[:first])) + (first > 0)
        end = start + len(" ".join(words[first:first + rng.randint(1, 3)]))
        out.append(("where is the " + words[first] + "?", context, (start, end)))
    return out


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_answer_tokens_cover_the_answer_in_every_window_that_holds_it(bert, padding_side):
    data = examples(12)
    questions, contexts, answers = zip(*data)
    batch = bert(list(questions), list(contexts), truncation="only_second", max_length=32, stride=8,
                 return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                 padding_side=padding_side, return_tensors="np")
    starts, ends = answer_token_positions(batch, answers)
    samples = batch["overflow_to_sample_mapping"].tolist()
    assert len(starts) == len(ends) == batch["input_ids"].shape[0] > len(data)           # some contexts overflow
    found = set()
    for row, sample in enumerate(samples):
        a_start, a_end = answers[sample]
        offsets = batch["offset_mapping"][row].tolist()
        sequence = batch.sequence_ids(row)
        context = [k for k, s in enumerate(sequence) if s == 1]
        first_real = int(np.argmax(batch["attention_mask"][row]))
        holds = offsets[context[0]][0] <= a_start and offsets[context[-1]][1] >= a_end
        if not holds:
            assert starts[row] == ends[row] == first_real
            assert batch.tokens(row)[first_real] == "[CLS]"
            continue
        found.add(sample)
        start, end = starts[row], ends[row]
        assert sequence[start] == sequence[end] == 1 and start <= end
        assert offsets[start][0] <= a_start < offsets[start][1]           # the first token holds the first character
        assert offsets[end][0] < a_end <= offsets[end][1]                 # the last one the last character
        assert contexts[sample][offsets[start][0]:offsets[end][1]] == contexts[sample][a_start:a_end]
    assert found == set(range(len(data)))      # answers shorter than the stride: some window holds each whole


def test_without_overflow_rows_are_examples_and_spans_are_checked(bert):
    question, context, answer = examples(1, seed=5)[0]
    batch = bert(question, context)
    start, end = answer_token_positions(batch, [answer])
    offsets = batch.encodings[0].offsets
    assert offsets[start[0]][0] == answer[0] and offsets[end[0]][1] == answer[1]
    with pytest.raises(ValueError, match="ends"):
        answer_token_positions(batch, [(5, 2)])
    with pytest.raises(ValueError, match="1 answer spans"):
        answer_token_positions(bert([question] * 2, [context] * 2), [answer])
