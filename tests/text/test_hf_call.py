"""The Hugging Face-style call of lamina's tokenizers (padding, truncation, masks, offsets, tensors),
word labels aligned to tokens for token classification, and BPE dropout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import lamina
from lamina.autograd import Tensor
from lamina.text import (
    ENDOFTEXT,
    BPETokenizer,
    GPT2Tokenizer,
    HFTokenizer,
    WordPieceTokenizer,
    align_labels_with_tokens,
    align_word_labels,
)

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Café naïve résumé, HELLO world!",
         "unaffable running cats 中国 don't"] * 2


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer.train(TEXTS, 120)


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.from_bpe(BPETokenizer.train(TEXTS, 300, special_tokens=[ENDOFTEXT]))


def test_the_call_pads_truncates_and_masks(bert):
    hf = HFTokenizer.from_str(bert.to_hf_json())
    texts, pairs = ["the fox", "Café naïve résumé, hello world", "dog"], ["lazy dog", "x", "the quick brown"]
    lengths = [len(hf.encode(t, p)) for t, p in zip(texts, pairs)]
    batch = hf(texts, pairs, padding=True, return_tensors="np", return_offsets_mapping=True)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "offset_mapping"}
    assert batch["input_ids"].shape == (3, max(lengths)) and batch.offset_mapping.shape == (3, max(lengths), 2)
    pad = hf.token_to_id("[PAD]")
    for row, (text, pair) in enumerate(zip(texts, pairs)):
        n = lengths[row]
        assert batch["input_ids"][row, :n].tolist() == hf.encode(text, pair)
        assert (batch["input_ids"][row, n:] == pad).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["token_type_ids"][row, :n].tolist() == hf.encode_full(text, pair).type_ids
        assert (batch["offset_mapping"][row, n:] == 0).all()
        assert batch.word_ids(row)[n:] == [None] * (max(lengths) - n)
    ours = hf.encode_batch(texts, pairs)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(batch[key], ours[key])
    # truncation, padding to max_length, on the left
    cut = hf(texts, pairs, truncation=True, max_length=6, padding="max_length", padding_side="left")
    assert all(len(row) == 6 for row in cut["input_ids"])
    assert [row.count(1) for row in cut["attention_mask"]] == [min(n, 6) for n in lengths]
    assert cut["attention_mask"][2] == [0] * (6 - min(lengths[2], 6)) + [1] * min(lengths[2], 6)
    assert cut["input_ids"][1] == hf.encode(texts[1], pairs[1], max_length=6)
    wide = hf(texts, padding="max_length", max_length=20, pad_to_multiple_of=8, return_tensors="lamina")
    assert isinstance(wide["input_ids"], Tensor) and wide["input_ids"].shape == (3, 24)
    # one text: plain lists, no padding
    single = hf("the fox", return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
    assert single["input_ids"] == hf.encode("the fox") and single["length"] == len(single["input_ids"])
    offsets = single["offset_mapping"]
    assert offsets[0] == offsets[-1] == (0, 0) and offsets[1][0] == 0 and offsets[-2][1] == len("the fox")
    assert single["special_tokens_mask"][0] == 1
    with pytest.raises(ValueError, match="padding=True"):
        hf(texts, return_tensors="np")
    with pytest.raises(ValueError, match="max_length"):
        hf(texts, truncation=True)
    with pytest.raises(TypeError, match="both be str"):
        hf(texts, "x")


def test_lamina_tokenizers_take_the_same_call(bert, gpt2):
    texts = ["hello world", "the lazy dog jumps"]
    batch = bert(texts, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], bert.encode_batch(texts)["input_ids"])
    assert "token_type_ids" in batch
    out = gpt2(texts, return_offsets_mapping=True)
    assert out["input_ids"] == [gpt2.encode(t) for t in texts] and "token_type_ids" not in out
    for text, offsets in zip(texts, out["offset_mapping"]):
        assert "".join(text[s:e] for s, e in offsets) == text        # byte-level spans tile the text


def test_word_labels_are_aligned_to_tokens(bert):
    hf = HFTokenizer.from_str(bert.to_hf_json())
    sentences = [["unaffable", "foxcats", "jumps", "!"], ["the", "dog"], ["Café", "résumédogs"]]
    labels = [[1, 2, 3, 4], [5, 6], [7, 8]]
    batch = hf([" ".join(words) for words in sentences], padding=True, return_offsets_mapping=True,
               return_special_tokens_mask=True)
    first_only = align_labels_with_tokens(batch, labels)
    every = align_labels_with_tokens(batch, labels, label_all_tokens=True)
    for row, words in enumerate(sentences):
        text = " ".join(words)
        starts = [m.start() for m in re.finditer(r"\S+", text)]               # where each word begins
        seen = set()
        for k, (start, _) in enumerate(batch["offset_mapping"][row]):
            if batch["special_tokens_mask"][row][k]:
                assert first_only[row][k] == every[row][k] == -100
                continue
            word = max(w for w, s in enumerate(starts) if s <= start)
            assert every[row][k] == labels[row][word]
            assert first_only[row][k] == (labels[row][word] if word not in seen else -100)
            seen.add(word)
        assert seen == set(range(len(words)))
    assert sum(label == -100 for label in first_only[0]) > sum(label == -100 for label in every[0])    # split words
    pair = hf("the the", "the")
    assert pair.sequence_ids() == [None, 0, 0, None, 1, None]
    assert align_labels_with_tokens(pair, [5, 6]) == [-100, 5, 6, -100, -100, -100]
    assert align_word_labels([None, 0, 0, 1, None], [3, 4]) == [-100, 3, -100, 4, -100]
    with pytest.raises(ValueError, match="word 1"):
        align_word_labels([0, 1], [3])


# -- BPE dropout ----------------------------------------------------------------------------------
def bpe_json(dropout) -> dict:
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "abc", "bc"])}
    return {"pre_tokenizer": {"type": "WhitespaceSplit"},
            "model": {"type": "BPE", "vocab": vocab, "merges": ["a b", "ab c", "b c"], "dropout": dropout}}


def test_bpe_dropout_skips_merges_with_probability_p():
    text = " ".join(["abc", "ab", "cab", "bca"] * 5)
    plain = HFTokenizer.from_str(json.dumps(bpe_json(None)))
    assert HFTokenizer.from_str(json.dumps(bpe_json(0.0))).encode(text) == plain.encode(text)
    assert HFTokenizer.from_str(json.dumps(bpe_json(1.0))).tokenize(text) == [c for c in text if c != " "]
    half = HFTokenizer.from_str(json.dumps(bpe_json(0.5)))
    lamina.manual_seed(3)
    first = [half.tokenize(text) for _ in range(5)]
    lamina.manual_seed(3)
    assert [half.tokenize(text) for _ in range(5)] == first
    assert len({tuple(t) for t in first}) > 1                          # the segmentations vary
    assert half.decode(plain.encode("abc")) == plain.decode(plain.encode("abc")) == "abc"      # decoding: no dropout
    # 'ab' has one merge: it stays split exactly when that merge is skipped
    for p in (0.2, 0.7):
        model = HFTokenizer.from_str(json.dumps(bpe_json(p)))
        lamina.manual_seed(0)
        tokens = model.tokenize(" ".join(["ab"] * 3000))
        split = (len(tokens) - 3000) / 3000
        assert abs(split - p) < 0.04, (p, split)
    with pytest.raises(ValueError, match="dropout"):
        HFTokenizer.from_str(json.dumps(bpe_json(1.5)))
