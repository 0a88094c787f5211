"""Truncation of lamina.text.HFTokenizer as the ``tokenizers`` library does it: the strategies
(longest_first, only_first, only_second, do_not_truncate) and sides against references written
here, overflowing windows with a stride (overlap, reassembly, offsets, word and sequence ids,
pairs, padding, overflow_to_sample_mapping) and the switches of the Hugging Face-style call."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lamina.autograd import Tensor
from lamina.text import HFTokenizer
from lamina.text.hf_truncation import truncated_lengths, window_ranges

WORDS = [f"w{k}" for k in range(40)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(scope="module")
def words_tokenizer() -> HFTokenizer:
    """One token per space-separated word, BERT's template: token k of a text is its word k."""
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    template = {"single": "[CLS]:0 $A:0 [SEP]:0", "pair": "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")}}
    return HFTokenizer.from_str(json.dumps({
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": {"type": "TemplateProcessing", **template},
        "added_tokens": [{"id": vocab[t], "content": t, "special": True} for t in SPECIALS]}))


def text_of(first: int, count: int) -> str:
    return " ".join(WORDS[first:first + count])


# -- references ------------------------------------------------------------------------------------
def reference_lengths(n1: int, n2: int | None, budget: int, strategy: str) -> tuple[int, int | None]:
    """Tokens removed one at a time. longest_first: from the longer text; on a tie from the text
    that was not the longer one at the start (the first when they started equal). only_*: all from
    that text, which must keep at least one token."""
    if budget == 0:
        return 0, None if n2 is None else 0
    if n2 is None:
        if strategy == "OnlySecond" and n1 > budget:
            raise ValueError("no second text to truncate")
        return min(n1, budget), None
    a, b = n1, n2
    first_was_longer = n1 > n2
    while a + b > budget:
        if strategy == "OnlyFirst":
            a -= 1
        elif strategy == "OnlySecond":
            b -= 1
        elif a > b or (a == b and not first_was_longer):
            a -= 1
        else:
            b -= 1
    target = {"OnlyFirst": a, "OnlySecond": b}.get(strategy, 1)
    if n1 + n2 > budget and target <= 0:
        raise ValueError("the text to truncate is too short")
    return a, b


def reference_windows(n: int, length: int, stride: int, from_left: bool) -> list[list[int]]:
    """The token indices of each window: the kept one, then the overflowing ones, every window
    ``length`` tokens (the last may be shorter) moving by ``length - stride`` until the text is covered."""
    order = list(range(n))[::-1] if from_left else list(range(n))
    windows, at = [], 0
    while True:
        window = order[at:at + length]
        windows.append(sorted(window))
        if at + length >= n:
            return windows
        at += length - stride


def test_truncated_lengths_match_the_reference_for_every_strategy():
    for n1, n2, budget in itertools.product(range(7), range(-1, 7), range(9)):
        second = None if n2 < 0 else n2
        for strategy in ("LongestFirst", "OnlyFirst", "OnlySecond"):
            try:
                expected = reference_lengths(n1, second, budget, strategy)
            except ValueError:
                with pytest.raises(ValueError):
                    truncated_lengths(n1, second, budget, strategy)
                continue
            assert truncated_lengths(n1, second, budget, strategy) == expected, (n1, second, budget, strategy)
    # the table of the tokenizers library's own unit test (max_length 7; lengths 0, 2, 4, 8)
    table = {(0, 8): (0, 7), (2, 8): (2, 5), (4, 4): (3, 4), (4, 8): (3, 4), (8, 2): (5, 2), (8, 4): (4, 3),
             (8, 8): (3, 4), (4, 2): (4, 2)}
    for (n1, n2), kept in table.items():
        assert truncated_lengths(n1, n2, 7) == kept


def test_window_ranges_match_the_reference():
    for n, length, from_left in itertools.product(range(1, 13), range(1, 6), (False, True)):
        for stride in range(length):
            ranges = window_ranges(n, length, stride, from_left)
            expected = reference_windows(n, length, stride, from_left)
            assert [list(range(a, b)) for a, b in ranges] == expected, (n, length, stride, from_left)
    with pytest.raises(ValueError, match="stride=3"):
        window_ranges(10, 3, 3)


@pytest.mark.parametrize("strategy", ["longest_first", True, "only_first", "only_second"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_each_strategy_and_side_cuts_as_the_reference(words_tokenizer, strategy, side):
    hf = words_tokenizer
    name = {"longest_first": "LongestFirst", True: "LongestFirst", "only_first": "OnlyFirst",
            "only_second": "OnlySecond"}[strategy]
    for n1, n2, max_length in itertools.product((1, 3, 6), (None, 1, 4, 7), (5, 8, 11)):
        first, second = text_of(0, n1), None if n2 is None else text_of(20, n2)
        extra = 2 if n2 is None else 3
        try:
            kept1, kept2 = reference_lengths(n1, n2, max_length - extra, name)
        except ValueError:
            with pytest.raises(ValueError, match="max_length"):
                hf(first, second, truncation=strategy, max_length=max_length, truncation_side=side)
            continue
        out = hf(first, second, truncation=strategy, max_length=max_length, truncation_side=side)

        def kept(start, count, keep):
            words = WORDS[start:start + count]
            return words[count - keep:] if side == "left" else words[:keep]

        expected = ["[CLS]", *kept(0, n1, kept1), "[SEP]"]
        if n2 is not None:
            expected += [*kept(20, n2, kept2), "[SEP]"]
        assert out.tokens() == expected, (n1, n2, max_length)
    # do_not_truncate and False leave everything
    long = text_of(0, 20)
    for off in (False, "do_not_truncate", None):
        assert len(hf(long, truncation=off, max_length=5)["input_ids"]) == 22
    assert len(hf(long, truncation=True, max_length=5)["input_ids"]) == 5


# -- overflowing windows ---------------------------------------------------------------------------
def context_indices(hf, row, sequence, full_offsets):
    """The indices, in the untruncated encoding, of the tokens of ``sequence`` in ``row`` (offsets are distinct)."""
    where = {offset: k for k, offset in enumerate(full_offsets)}
    return [where[tuple(o)] for o, s in zip(row.offsets, row.sequence_ids) if s == sequence]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("stride", [0, 1, 3])
def test_windows_overlap_by_stride_and_reassemble_the_text(words_tokenizer, side, stride):
    hf = words_tokenizer
    text = text_of(0, 23)
    full = hf.encode_full(text, add_special_tokens=False)
    out = hf(text, truncation=True, max_length=7, stride=stride, truncation_side=side,
             return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = [context_indices(hf, row, 0, full.offsets) for row in out.encodings]
    assert windows == reference_windows(23, 5, stride, side == "left")
    assert out["overflow_to_sample_mapping"] == [0] * len(windows)
    ordered = windows[::-1] if side == "left" else windows
    for before, after in zip(ordered, ordered[1:]):
        assert len(set(before) & set(after)) == stride
        assert before[len(before) - stride:] == after[:stride]
    rebuilt = list(ordered[0])
    for window in ordered[1:]:
        rebuilt += [k for k in window if k > rebuilt[-1]]
    assert rebuilt == list(range(23))
    for k, row in enumerate(out.encodings):
        assert row.tokens[0] == "[CLS]" and row.tokens[-1] == "[SEP]"
        inner = windows[k]
        assert out["input_ids"][k] == [hf.token_to_id("[CLS]"), *(full.ids[i] for i in inner),
                                       hf.token_to_id("[SEP]")]
        assert out.word_ids(k)[1:-1] == [full.word_ids[i] for i in inner]           # words of the whole text
        assert [text[s:e] for s, e in out["offset_mapping"][k][1:-1]] == [full.tokens[i] for i in inner]
        assert out.sequence_ids(k) == [None] + [0] * len(inner) + [None]
    # without return_overflowing_tokens: the kept window only, and the windows on the encoding
    plain = hf(text, truncation=True, max_length=7, stride=stride, truncation_side=side)
    assert plain["input_ids"] == out["input_ids"][0] and "overflow_to_sample_mapping" not in plain
    assert [w.ids for w in plain.encodings[0].overflowing] == out["input_ids"][1:]
    padded = hf(text, truncation=True, max_length=7, stride=stride, truncation_side=side, padding="max_length")
    assert {len(w) for w in padded.encodings[0].overflowing} == {7}                 # windows padded too


def test_question_kept_and_context_windowed_with_only_second(words_tokenizer):
    hf = words_tokenizer
    questions, contexts = [text_of(30, 3), text_of(35, 2)], [text_of(0, 12), text_of(12, 4)]
    out = hf(questions, contexts, truncation="only_second", max_length=10, stride=2,
             return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="np")
    budgets = [10 - 3 - 3, 10 - 3 - 2]                     # context tokens per window of each example
    expected_windows = [reference_windows(12, budgets[0], 2, False), [list(range(4))]]
    mapping = out["overflow_to_sample_mapping"].tolist()
    assert mapping == [0] * len(expected_windows[0]) + [1]
    assert out["input_ids"].shape == (len(mapping), 10)
    row = 0
    for example, windows in enumerate(expected_windows):
        full = hf.encode_full(contexts[example], add_special_tokens=False)
        question = hf.encode(questions[example], add_special_tokens=False)
        for window in windows:
            encoding = out.encodings[row]
            n = 3 + len(question) + len(window)
            assert encoding.ids[:n] == [2, *question, 3, *(full.ids[i] for i in window), 3]
            assert out["attention_mask"][row].tolist() == [1] * n + [0] * (10 - n)
            assert encoding.type_ids[:n] == [0] * (len(question) + 2) + [1] * (len(window) + 1)
            assert context_indices(hf, encoding, 1, full.offsets) == window
            assert encoding.sequence_ids[:n] == [None] + [0] * len(question) + [None] + [1] * len(window) + [None]
            row += 1
    lamina_out = hf(questions, contexts, truncation="only_second", max_length=10, stride=2,
                    return_overflowing_tokens=True, padding=True, return_tensors="lamina")
    assert isinstance(lamina_out["overflow_to_sample_mapping"], Tensor)
    np.testing.assert_array_equal(lamina_out["overflow_to_sample_mapping"].numpy(), mapping)


def test_longest_first_windows_pair_every_window_with_the_other_text(words_tokenizer):
    hf = words_tokenizer
    first, second = text_of(0, 9), text_of(20, 9)
    out = hf(first, second, truncation=True, max_length=11, stride=1, return_overflowing_tokens=True)
    a = [reference_windows(9, 4, 1, False), reference_windows(9, 4, 1, False)]    # 8 tokens: 4 each
    parts = [[WORDS[i] for i in w] for w in a[0]], [[WORDS[20 + i] for i in w] for w in a[1]]

    def row(x, y):
        return ["[CLS]", *x, "[SEP]", *y, "[SEP]"]

    expected = [row(parts[0][0], parts[1][0])]
    for x in parts[0][1:]:
        expected += [row(x, parts[1][0])] + [row(x, y) for y in parts[1][1:]]
    expected += [row(parts[0][0], y) for y in parts[1][1:]]
    assert [out.tokens(k) for k in range(len(out["input_ids"]))] == expected


def test_the_call_switches(words_tokenizer):
    hf = words_tokenizer
    texts = [text_of(0, 2), text_of(0, 5)]
    bare = hf(texts, return_attention_mask=False, return_token_type_ids=False)
    assert set(bare) == {"input_ids"}
    full = hf(texts, texts, padding=True, return_special_tokens_mask=True, return_length=True,
              return_token_type_ids=True)
    assert set(full) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "length"}
    assert full["length"] == [len(row) for row in full["input_ids"]] == [13, 13]    # padding counts, as fast ones do
    assert full["special_tokens_mask"][0] == [1, 0, 0, 1, 0, 0, 1] + [1] * 6         # padding is special
    assert hf(texts, return_length=True)["length"] == [4, 7]
    assert hf(texts[0], return_length=True)["length"] == 4
    with pytest.raises(ValueError, match="only_second"):
        hf(text_of(0, 9), truncation="only_second", max_length=5)
    with pytest.raises(ValueError, match="truncation_side"):
        hf(texts, truncation_side="middle")


def test_the_files_truncation_settings_apply_to_encode_full(words_tokenizer):
    data = words_tokenizer.to_json()
    data["truncation"] = {"max_length": 8, "strategy": "OnlySecond", "stride": 1, "direction": "Left"}
    hf = HFTokenizer.from_str(json.dumps(data))
    first, second = text_of(30, 2), text_of(0, 7)
    encoding = hf.encode_full(first, second)
    called = words_tokenizer(first, second, truncation="only_second", max_length=8, stride=1,
                             truncation_side="left", return_overflowing_tokens=True)
    assert [encoding.ids] + [w.ids for w in encoding.overflowing] == called["input_ids"]
    assert encoding.tokens == ["[CLS]", "w30", "w31", "[SEP]", "w4", "w5", "w6", "[SEP]"]
