"""Offsets, word ids and sequence ids of lamina.text.HFTokenizer: every token's span of the input,
checked with text[start:end] against what the token stands for (computed here independently),
through normalizers that change the length of the text and for every model type; and the
SentencePiece precompiled character map, on a blob written here in its double-array format."""

from __future__ import annotations

import base64
import json
import re
import struct
import unicodedata

import pytest

from lamina.text import (
    ENDOFTEXT,
    BPETokenizer,
    GPT2Tokenizer,
    HFTokenizer,
    WordPieceTokenizer,
    bytes_to_unicode,
    hf_precompiled,
)
from lamina.text.hf_precompiled import CharsMap

SPIECE = "\u2581"
BYTE_OF = {char: byte for byte, char in bytes_to_unicode().items()}


def tokenizer(**parts) -> HFTokenizer:
    return HFTokenizer.from_str(json.dumps(parts))


def spans(encoding, text, sequence=0):
    """(token, text[start:end]) of the tokens of one sequence."""
    return [(token, text[s:e]) for token, (s, e), seq in zip(encoding.tokens, encoding.offsets, encoding.sequence_ids)
            if seq == sequence]


# -- WordPiece with the BERT normalizer ------------------------------------------------------------
@pytest.fixture(scope="module")
def bert():
    texts = ["The quick brown fox jumps over the lazy dog.", "Café naïve résumé, HELLO world!",
             "unaffable running cats 中国 don't"] * 2
    return HFTokenizer.from_str(WordPieceTokenizer.train(texts, 120).to_hf_json())


def bert_form(text: str) -> str:
    """BERT's lower-cased, accent-free form of a piece of text."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()


def test_wordpiece_offsets_through_accent_stripping_and_chinese_spacing(bert):
    text = "Café  NAÏVE résumé,\tunaffable 中国x don't Жж"
    encoding = bert.encode_full(text, "the lazy  dogs")
    for token, piece in spans(encoding, text):
        if token != "[UNK]":
            assert bert_form(piece) == token.removeprefix("##"), (token, piece)
    assert ("中", "中") in spans(encoding, text) and ("[UNK]", "Жж") in spans(encoding, text)
    words = re.findall(r"[^\W\d_]+|[^\w\s]|\w", text)          # letters, or one punctuation mark / CJK char
    words = [w for part in words for w in (list(part) if "\u4e00" <= part[0] <= "\u9fff" else [part])]
    word_ids = [w for w, seq in zip(encoding.word_ids, encoding.sequence_ids) if seq == 0]
    assert sorted(set(word_ids)) == list(range(len(words)))
    for index, word in enumerate(words):
        start, end = encoding.word_to_chars(index)
        assert text[start:end] == word
    second = spans(encoding, "the lazy  dogs", sequence=1)
    assert [piece for _, piece in second][:2] == ["the", "lazy"]
    assert encoding.sequence_ids[0] is None and encoding.offsets[0] == (0, 0) and encoding.word_ids[0] is None
    assert encoding.word_ids[encoding.sequence_ids.index(1)] == 0        # words count again in the pair


def test_alignment_queries(bert):
    text = "unaffable cats"
    encoding = bert.encode_full(text, "fox")
    first = encoding.char_to_token(0)
    assert encoding.word_ids[first] == 0 and encoding.offsets[first][0] == 0
    assert encoding.char_to_token(9) is None                                  # the space
    cats = encoding.char_to_token(10)
    assert encoding.word_ids[cats] == 1 and encoding.offsets[cats][0] == 10
    assert encoding.char_to_word(12) == 1
    start, end = encoding.word_to_tokens(0)
    assert "".join(t.removeprefix("##") for t in encoding.tokens[start:end]) == "unaffable"
    assert encoding.token_to_chars(0) is None                        # [CLS]
    fox = encoding.char_to_token(0, sequence_index=1)
    assert encoding.tokens[fox] == "fox" and encoding.token_to_chars(fox) == (0, 3)
    assert encoding.word_to_tokens(5) is None


# -- byte-level BPE (GPT-2, RoBERTa) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    corpus = ["hello world, hello there! The quick brown fox jumps over the lazy dog 1234 times.",
              "café naïve 北京 😀 don't   spaces\n\nnew lines"] * 2
    return GPT2Tokenizer.from_bpe(BPETokenizer.train(corpus, 350, special_tokens=[ENDOFTEXT]))


def byte_level(gpt2, trim: bool, prefix: bool, roberta: bool = False) -> HFTokenizer:
    data = json.loads(gpt2.to_hf_json())
    data["pre_tokenizer"]["add_prefix_space"] = prefix
    if roberta:
        data["post_processor"] = {"type": "RobertaProcessing", "sep": [ENDOFTEXT, gpt2.token_to_id(ENDOFTEXT)],
                                  "cls": [ENDOFTEXT, gpt2.token_to_id(ENDOFTEXT)], "trim_offsets": trim,
                                  "add_prefix_space": prefix}
    else:
        data["post_processor"] = {"type": "ByteLevel", "trim_offsets": trim, "add_prefix_space": prefix}
    return HFTokenizer.from_str(json.dumps(data))


BYTE_TEXT = "hello  world, café 😀x\n  the fox"


def check_byte_spans(encoding, text, trim: bool, prefix: bool):
    for k, (token, piece) in enumerate(spans(encoding, text)):
        data = bytes(BYTE_OF[c] for c in token)
        try:
            expected = data.decode("utf-8")
        except UnicodeDecodeError:             # part of a character: the span is that whole character
            assert len(piece) == 1 and data in piece.encode("utf-8"), (token, piece)
            continue
        if prefix and k == 0 and not text.startswith(" "):
            if expected == " ":                # the added space alone: aligned with the first character
                assert encoding.offsets[encoding.sequence_ids.index(0)][0] == 0
                continue
            expected = expected[1:]            # the space the pre-tokenizer added is no character of the text
        if trim:
            leading = len(expected) - len(expected.lstrip(" "))
            if not (prefix and k == 0 and leading == 1):     # the added space's rule: a first ' x' keeps it
                expected = expected.lstrip(" ")
            expected = expected.rstrip(" ")
        assert piece == expected, (token, piece)


@pytest.mark.parametrize("trim", [False, True])
@pytest.mark.parametrize("prefix", [False, True])
def test_byte_level_offsets_with_trim_offsets_and_add_prefix_space(gpt2, trim, prefix):
    hf = byte_level(gpt2, trim, prefix)
    for text in (BYTE_TEXT, " x  y", "a"):
        check_byte_spans(hf.encode_full(text), text, trim, prefix)
    roberta = byte_level(gpt2, trim, prefix, roberta=True).encode_full(BYTE_TEXT, "the fox")
    check_byte_spans(roberta, BYTE_TEXT, trim, prefix)
    assert roberta.offsets[0] == (0, 0) and roberta.sequence_ids.count(None) == 4
    assert "".join(p for _, p in spans(roberta, "the fox", 1)) == ("thefox" if trim else "the fox")


# -- BPE with byte fallback behind Prepend / Replace ('▁') ---------------------------------------------
def llama_style() -> HFTokenizer:
    merges = [(SPIECE, "h"), ("l", "l"), (SPIECE + "h", "e"), (SPIECE + "he", "ll"), (SPIECE + "hell", "o")]
    tokens = ["<unk>", *(f"<0x{b:02X}>" for b in range(256)), SPIECE, *"helowrd", *(a + b for a, b in merges)]
    return tokenizer(
        normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPIECE},
                                                        {"type": "Replace", "pattern": {"String": " "},
                                                         "content": SPIECE}]},
        model={"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "unk_token": "<unk>",
               "merges": [f"{a} {b}" for a, b in merges], "byte_fallback": True, "fuse_unk": True})


def test_bpe_byte_fallback_offsets_behind_a_prepended_metaspace():
    text = "hello wé😀rld"
    encoding = llama_style().encode_full(text)
    for k, (token, piece) in enumerate(spans(encoding, text)):
        if token.startswith("<0x"):
            assert len(piece) == 1 and int(token[3:5], 16) in piece.encode("utf-8")
        elif k == 0:
            assert piece == token.removeprefix(SPIECE)             # the prepended '▁' stands for no character
        else:
            assert piece == token.replace(SPIECE, " ")
    assert spans(encoding, text)[:2] == [(SPIECE + "hello", "hello"), (SPIECE, " ")]


# -- Unigram with Metaspace, WordLevel, and normalizers that change the length --------------------------
def test_unigram_and_metaspace_offsets():
    pieces = [["<unk>", 0.0], [SPIECE, -1.0], ["ab", -2.0], ["a", -3.0], ["b", -3.0], [SPIECE + "c", -1.5],
              ["c", -3.0]]
    hf = tokenizer(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "always"}]},
        model={"type": "Unigram", "unk_id": 0, "vocab": pieces})
    text = "abxyb  cab"
    got = spans(hf.encode_full(text), text)
    assert got == [(SPIECE, "a"), ("ab", "ab"), ("<unk>", "xy"), ("b", "b"), (SPIECE + "c", "c"), ("ab", "ab")]


def test_offsets_through_length_changing_normalizers():
    chars = {c: i for i, c in enumerate(["[UNK]", *"abcdefghijklmnopqrstuvwxyz", "\u0307", "é", "ﬁ", "İ", " "])}
    for normalizer, text, expected in [
        ({"type": "NFKC"}, "aﬁb", [("a", "a"), ("f", "ﬁ"), ("i", "ﬁ"), ("b", "b")]),
        ({"type": "Lowercase"}, "İx", [("i", "İ"), ("\u0307", "İ"), ("x", "x")]),
        ({"type": "NFC"}, "ae\u0301b", [("a", "a"), ("é", "e\u0301"), ("b", "b")]),
        ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}, "éa",
         [("e", "é"), ("a", "a")]),
        ({"type": "Strip"}, "  ab ", [("a", "a"), ("b", "b")]),
        ({"type": "Replace", "pattern": {"Regex": "x+"}, "content": "ab"}, "cxxxd",
         [("c", "c"), ("a", "xxx"), ("b", "xxx"), ("d", "d")]),
        ({"type": "BertNormalizer", "lowercase": True}, "A中\x00b",
         [("a", "A"), ("中", "中"), ("b", "b")]),
    ]:
        model = {"type": "BPE", "vocab": {**chars, "中": len(chars)}, "merges": [], "unk_token": "[UNK]"}
        hf = tokenizer(normalizer=normalizer, pre_tokenizer={"type": "WhitespaceSplit"}, model=model)
        assert spans(hf.encode_full(text), text) == expected, normalizer


def test_word_level_and_added_token_offsets():
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "!": 3}
    added = {"id": 4, "content": "[MASK]", "single_word": False, "lstrip": True, "rstrip": False,
             "normalized": False, "special": True}
    hf = tokenizer(added_tokens=[added], normalizer={"type": "Lowercase"}, pre_tokenizer={"type": "Whitespace"},
                   model={"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"})
    text = "HELLO  [MASK] World!? zz"
    encoding = hf.encode_full(text)
    assert spans(encoding, text) == [("hello", "HELLO"), ("[MASK]", "[MASK]"), ("world", "World"), ("[UNK]", "!?"),
                                     ("[UNK]", "zz")]
    assert encoding.word_ids == [0, 1, 2, 3, 4]


# -- the precompiled character map -----------------------------------------------------------------------
def darts_blob(mapping: dict[str, str]) -> bytes:
    """A SentencePiece precompiled map of ``mapping``: a darts-clone double array over the UTF-8
    keys (each node's children in a block of 256 units of its own, at block + byte; a leaf unit,
    value | 2**31, at block + 0) and the NUL-ended replacement strings."""
    pool, values = b"", {}
    for key, value in mapping.items():
        values[key.encode("utf-8")] = len(pool)
        pool += value.encode("utf-8") + b"\0"
    trie: dict = {}
    for key, value in values.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units = [0] * 256
    blocks = [0]

    def place(node, position, label):
        base = 256 * len(blocks)
        blocks.append(base)
        units.extend([0] * 256)
        has_leaf = None in node
        units[position] = ((position ^ base) << 10) | (int(has_leaf) << 8) | label
        if has_leaf:
            units[base] = node[None] | (1 << 31)
        for byte, child in node.items():
            if byte is not None:
                place(child, base + byte, byte)

    place(trie, 0, 0)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + pool


def longest_match_reference(mapping: dict[str, str], text: str) -> str:
    """SentencePiece's rule: the longest key at each position."""
    out, i = [], 0
    while i < len(text):
        keys = [k for k in mapping if text.startswith(k, i)]
        if keys:
            key = max(keys, key=len)
            out.append(mapping[key])
            i += len(key)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def grapheme_reference(mapping: dict[str, str], text: str) -> str:
    """The tokenizers rule: a cluster (here a character and its combining marks) of under 6 bytes
    that begins with a key becomes the shortest such key's string, else each character alone."""
    clusters = []
    for char in text:
        if clusters and unicodedata.category(char).startswith("M"):
            clusters[-1] += char
        else:
            clusters.append(char)

    def shortest(chunk):
        keys = [k for k in mapping if chunk.startswith(k)]
        return mapping[min(keys, key=len)] if keys else None

    out = []
    for cluster in clusters:
        whole = shortest(cluster) if len(cluster.encode()) < 6 else None
        out.append(whole if whole is not None else "".join(
            c if shortest(c) is None else shortest(c) for c in cluster))
    return "".join(out)


MAPPING = {"ﬁ": "fi", "Ａ": "A", "ab": "X", "a": "Y", "\u00a0": " ", "x": "", "e\u0301": "é", "ℌ": "H",
           "o\u0301\u0301": "Q", "e\u0301\u0301": "E"}


@pytest.mark.parametrize("regex_package", [True, False])
def test_precompiled_map_decodes_a_hand_built_blob(regex_package, monkeypatch):
    if not regex_package:                              # grapheme clusters by the simpler rule
        monkeypatch.setattr(hf_precompiled, "_regex", None)
    blob = darts_blob(MAPPING)
    charsmap = CharsMap.from_bytes(blob)
    texts = ["ﬁÅＡab a\u00a0xé", "aab", "abab x", "", "zz ℌ", "xxxx", "e\u0301a\u0301", "o\u0301\u0301\u0301 o\u0301",
             "e\u0301\u0301"]
    for text in texts:
        assert charsmap.normalize(text, "sentencepiece") == longest_match_reference(MAPPING, text), text
        assert charsmap.normalize(text) == grapheme_reference(MAPPING, text), text
    assert charsmap.normalize("ab") == "Yb" and charsmap.normalize("ab", "sentencepiece") == "X"
    assert charsmap.normalize("e\u0301\u0301") == "é" and charsmap.normalize("e\u0301\u0301", "sentencepiece") == "E"
    hf = tokenizer(normalizer={"type": "Precompiled", "precompiled_charsmap": base64.b64encode(blob).decode()},
                   pre_tokenizer={"type": "WhitespaceSplit"},
                   model={"type": "BPE", "vocab": {c: i for i, c in enumerate(["[UNK]", *"fiAXYHzbeé\u0301"])},
                          "merges": [], "unk_token": "[UNK]"})
    text = "ﬁx ab\u00a0Ａa e\u0301"
    assert spans(hf.encode_full(text), text) == [("f", "ﬁ"), ("i", "ﬁ"), ("Y", "a"), ("b", "b"), ("A", "Ａ"),
                                                 ("Y", "a"), ("é", "e\u0301")]
    assert HFTokenizer.from_str(hf.to_str()).normalizer.normalize("ﬁ") == "fi"
    with pytest.raises(ValueError, match="precompiled_charsmap"):
        tokenizer(normalizer={"type": "Precompiled", "precompiled_charsmap": base64.b64encode(
            struct.pack("<I", 400) + blob[4:20]).decode()}, model={"type": "WordLevel", "vocab": {}})
