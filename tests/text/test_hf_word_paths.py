"""HFTokenizer's encoding path (spans kept in their identity form while lengths do not change, words
as ranges of their aligned text, a cache of each word's tokens, offsets placed in bulk) against the
per-word path written out here: spans listed for every character from the start, every word an
aligned string of its own, every word tokenized by the model. Ids, offsets and word ids must agree
on random texts with accents, ligatures, CJK, emoji and odd spaces."""

from __future__ import annotations

import json
import random

import pytest

from lamina.text import BPETokenizer, GPT2Tokenizer, HFTokenizer, WordPieceTokenizer
from lamina.text.hf_alignment import AlignedString

SPIECE = "\u2581"
CORPUS = ["hello world, hello there! The quick brown fox jumps over the lazy dog 1234 times.",
          "café naïve 北京 😀 don't   spaces\n\nnew lines", "It's 3.14159 o'clock; über ﬁne résumé"] * 2
ATOMS = ["the", "The", "quick", "fox", "hello,", "world!", "don't", "1234", "3.14", "x_y", "café", "cafe\u0301",
         "naïve", "NAÏVE", "über", "résumé", "ﬁne", "ﬀ", "İstanbul", "ΣΟΦΟΣ", "straße", "北京", "中国", "한국어",
         "😀", "👩\u200d👩\u200d👧", "👍🏽", "½", "²", "Ⅻ", "—", "...", "Ａ", "a\u0308\u0301", "Жж", "\u0301", SPIECE]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "", "\u00a0", "\u3000", " \n "]


def random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [rng.choice(ATOMS) + rng.choice(SEPARATORS) for _ in range(rng.randint(0, 12))]
        texts.append((" " if rng.random() < 0.3 else "") + "".join(parts))
    return texts + ["", " ", "a", SPIECE, "ﬁ", "e\u0301"]


def per_word_path(hf: HFTokenizer, text: str) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Ids, offsets and word ids of ``text`` (no added tokens in it) the slow way."""
    aligned = AlignedString(text, [(i, i + 1) for i in range(len(text))])        # spans listed from the start
    if hf.normalizer is not None:
        aligned = hf.normalizer.normalize_aligned(aligned)
    words = [aligned] if hf.pre_tokenizer is None else hf.pre_tokenizer.pre_tokenize_aligned([aligned], True)
    ids, offsets, word_ids = [], [], []
    for index, word in enumerate(words):
        for token_id, _, first, last in hf.model.tokenize_spans(word.text):
            ids.append(token_id)
            offsets.append(word.span(first, last))
            word_ids.append(index)
    return ids, offsets, word_ids


def gpt2_style(add_prefix_space: bool) -> HFTokenizer:
    data = json.loads(GPT2Tokenizer.from_bpe(BPETokenizer.train(CORPUS, 350)).to_hf_json())
    data["pre_tokenizer"]["add_prefix_space"] = add_prefix_space
    return HFTokenizer.from_str(json.dumps(data))


def bert_style() -> HFTokenizer:
    return HFTokenizer.from_str(WordPieceTokenizer.train(CORPUS, 150).to_hf_json())


def unigram_metaspace(scheme: str) -> HFTokenizer:
    pieces = [["<unk>", 0.0], [SPIECE, -1.0], [SPIECE + "the", -1.5], ["he", -2.0], ["ll", -2.0], ["fi", -2.0],
              ["é", -2.5], ["中", -2.0]] + [[c, -4.0] for c in "abcdefghijklmnopqrstuvwxyz"]
    return HFTokenizer.from_str(json.dumps({
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"},
                                                           {"type": "Replace", "pattern": {"Regex": " {2,}"},
                                                            "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": scheme, "split": True},
        "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces}}))


TOKENIZERS = {"gpt2": lambda: gpt2_style(False), "gpt2 with a prefix space": lambda: gpt2_style(True),
              "bert": bert_style, "unigram, metaspace always": lambda: unigram_metaspace("always"),
              "unigram, metaspace first": lambda: unigram_metaspace("first")}


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_the_encoding_path_agrees_with_the_per_word_path(name):
    hf = TOKENIZERS[name]()
    texts = random_texts(120, seed=len(name))
    expected = {text: per_word_path(hf, text) for text in texts}
    for text in texts + texts[::-1]:                       # again in the other order: words from the cache
        encoding = hf.encode_full(text, add_special_tokens=False)
        assert (encoding.ids, encoding.offsets, encoding.word_ids) == expected[text], (name, text)
        assert encoding.sequence_ids == [0] * len(encoding)
    long_text = " ".join(texts)                             # one long text: many words of one aligned string
    encoding = hf.encode_full(long_text, add_special_tokens=False)
    assert (encoding.ids, encoding.offsets, encoding.word_ids) == per_word_path(hf, long_text)


def test_identity_spans_slice_prepend_and_replace_like_listed_ones():
    text = "ab cde f"
    identity, listed = AlignedString.original(text, 5), AlignedString(text, [(5 + i, 6 + i) for i in range(8)])
    for step in (lambda s: s.prepend("__").slice(1, 6), lambda s: s.slice(3, 8).prepend("^"),
                 lambda s: s.prepend("<>").prepend("!").slice(0, 2), lambda s: s.map_text(str.upper).slice(2, 4),
                 lambda s: s.replace_ranges([(2, 3)], "_"), lambda s: s.replace_ranges([(0, 2)], "xyz"),
                 lambda s: s.replace_ranges([(1, 3), (5, 7)], "XY").slice(1, 6)):
        fast, slow = step(identity), step(listed)
        assert fast.text == slow.text and fast.spans == slow.spans
        assert all(fast.span(a, b) == slow.span(a, b) for a in range(len(fast) + 1) for b in range(len(fast) + 2))
    assert AlignedString.original("abcd").replace_ranges([(1, 3)], "XY").spans == [(0, 1), (1, 3), (1, 3), (3, 4)]
    assert AlignedString.original("abcd", 2).prepend("_").spans == [(2, 3), (2, 3), (3, 4), (4, 5), (5, 6)]


def test_an_empty_word_has_no_tokens():
    hf = HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1},
                                                    "unk_token": "[UNK]"}}))
    assert hf.encode("") == [] and hf.encode("a") == [1]
