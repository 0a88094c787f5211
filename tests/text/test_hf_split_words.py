"""Pre-split words (``is_split_into_words=True``) through lamina.text.HFTokenizer: the same ids as
the joined text where the pre-tokenizer splits on the same spaces, word ids indexing the given
words, offsets within each word (as the ``tokenizers`` library gives them), pairs and batches."""

from __future__ import annotations

import json
import re

import pytest

from lamina.text import BPETokenizer, GPT2Tokenizer, HFTokenizer, WordPieceTokenizer, align_labels_with_tokens

CORPUS = ["The quick brown fox jumps over the lazy dog, hello world! Café naïve résumé 1234 times.",
          "unaffable running cats don't sleep; the dogs do"] * 2
SENTENCES = [["The", "quick", "fox,", "jumps"], ["Café", "naïve", "résumé!"], ["unaffable", "dogs"], ["x"],
             ["hello", "world", "don't", "1234"]]


@pytest.fixture(scope="module")
def bert() -> HFTokenizer:
    return HFTokenizer.from_str(WordPieceTokenizer.train(CORPUS, 140).to_hf_json())


@pytest.fixture(scope="module")
def gpt2() -> HFTokenizer:
    data = json.loads(GPT2Tokenizer.from_bpe(BPETokenizer.train(CORPUS, 320)).to_hf_json())
    data["pre_tokenizer"]["add_prefix_space"] = True           # every word reads as after a space
    return HFTokenizer.from_str(json.dumps(data))


def word_starts(text: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\S+", text)]


def test_words_give_the_joined_texts_ids_with_word_ids_and_offsets_within_each_word(bert):
    batch = bert(SENTENCES, is_split_into_words=True, return_offsets_mapping=True)
    for row, words in enumerate(SENTENCES):
        text = " ".join(words)
        joined = bert(text, return_offsets_mapping=True)
        assert batch["input_ids"][row] == joined["input_ids"]
        starts = word_starts(text)
        for k, (word, (start, end)) in enumerate(zip(batch.word_ids(row), batch["offset_mapping"][row])):
            if word is None:
                assert joined.word_ids()[k] is None and (start, end) == (0, 0)
                continue
            at = starts[word]
            assert joined["offset_mapping"][k] == (at + start, at + end)           # the same characters
            assert max(w for w, s in enumerate(starts) if s <= joined["offset_mapping"][k][0]) == word
    one = bert(SENTENCES[0], is_split_into_words=True)
    assert one["input_ids"] == batch["input_ids"][0] and one.word_ids() == batch.word_ids(0)


def test_byte_level_words_each_get_the_prefix_space(gpt2):
    for words in SENTENCES:
        split = gpt2(words, is_split_into_words=True, return_offsets_mapping=True)
        joined = gpt2(" ".join(words))
        assert split["input_ids"] == joined["input_ids"]
        for index, word in enumerate(words):                       # offsets within the word, covering it
            tokens = [k for k, w in enumerate(split.word_ids()) if w == index]
            assert gpt2.decode([split["input_ids"][k] for k in tokens]) == " " + word
            spans = [split["offset_mapping"][k] for k in tokens]
            assert all(0 <= start <= end <= len(word) for start, end in spans)
            assert min(s for s, _ in spans) == 0 and max(e for _, e in spans) == len(word)


def test_pairs_labels_and_errors(bert):
    question, context = ["where", "is", "the", "fox"], ["the", "quick", "fox", "jumps"]
    pair = bert(question, context, is_split_into_words=True)
    assert pair["input_ids"] == bert(" ".join(question), " ".join(context))["input_ids"]
    assert [w for w, s in zip(pair.word_ids(), pair.sequence_ids()) if s == 1][0] == 0     # words of each text
    labels = [[1, 2, 3, 4], [5, 6, 7], [8, 9], [10], [11, 12, 13, 14]]
    batch = bert(SENTENCES, is_split_into_words=True, padding=True)
    aligned = align_labels_with_tokens(batch, labels, label_all_tokens=True)
    for row in range(len(SENTENCES)):
        assert [label for label, word in zip(aligned[row], batch.word_ids(row)) if word is not None] == [
            labels[row][word] for word in batch.word_ids(row) if word is not None]
    cut = bert(SENTENCES[4], is_split_into_words=True, truncation=True, max_length=4, stride=1,
               return_overflowing_tokens=True)
    assert [w for row in range(len(cut["input_ids"])) for w in cut.word_ids(row) if w is not None][-1] == 3
    with pytest.raises(TypeError, match="list of str"):
        bert(["a", 3], is_split_into_words=True)
    with pytest.raises(TypeError, match="lists of words"):
        bert([["a"], ["b"]], ["c"], is_split_into_words=True)
