"""lamina.text.HFTokenizer: tokenizer.json files in the styles of GPT-2, BERT, Llama 2, T5 and
Llama 3, checked against lamina's own tokenizers, hand-worked cases and brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lamina.text import ENDOFTEXT, BPETokenizer, GPT2Tokenizer, HFTokenizer, WordPieceTokenizer, bytes_to_unicode

CORPUS = ["hello world, hello there! The quick brown fox jumps over the lazy dog 1234 times.",
          "café naïve 北京 😀 don't   spaces\n\nnew lines", "It's 3.14159 o'clock; x_y = [1, 2]"] * 2
TEXTS = ["hello world", "Hello world's 123  !!", "café, naïve façade\n\n\tend  ", "北京欢迎你 — ½ ² Ⅻ",
         "emoji 👩‍👩‍👧 and e\u0301 combining", "x_y = [1, 2.5e-3]; 'quoted' don't", "  leading and trailing  \n",
         "numbers 1234567 and 3.14", ""]
SPIECE = "\u2581"


def added(content, token_id, special=True, normalized=False, **flags):
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special, **flags}


# -- GPT-2 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.from_bpe(BPETokenizer.train(CORPUS, 400, special_tokens=[ENDOFTEXT]))


def test_a_gpt2_tokenizer_json_encodes_and_decodes_as_gpt2_tokenizer(gpt2):
    hf = HFTokenizer.from_str(gpt2.to_hf_json())
    assert hf.vocab_size == len(gpt2)
    for text in TEXTS + CORPUS[:3]:
        ids = hf.encode(text)
        assert ids == gpt2.encode(text), text
        assert hf.tokenize(text) == gpt2.tokens(ids)
        assert hf.decode(ids) == gpt2.decode(ids) == text
    text = f"a{ENDOFTEXT}b"       # added tokens are matched in the raw text
    assert hf.encode(text) == gpt2.encode(text, allowed_special="all")
    assert hf.decode(hf.encode(text)) == "ab"
    assert hf.decode(hf.encode(text), skip_special_tokens=False) == text
    data = json.loads(gpt2.to_hf_json())
    data["pre_tokenizer"]["add_prefix_space"] = True            # RoBERTa's setting
    spaced = HFTokenizer.from_str(json.dumps(data))
    assert spaced.encode("hello world") == gpt2.encode(" hello world")
    assert spaced.encode(" hello") == gpt2.encode(" hello")


# -- BERT ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert():
    texts = ["The quick brown fox jumps over the lazy dog.", "Café naïve résumé, HELLO world!",
             "unaffable running cats 中国 don't"] * 2
    return WordPieceTokenizer.train(texts, 120)


BERT_TEXTS = ["The quick brown fox.", "Café NAÏVE résumé, hello!", "unaffable 中国 don't",
              "Ünïcödé  TEXT\twith\u00ad x", "e\u0301 cafe\u0301 [MASK] the [SEP]", "zzz qqq", ""]


def test_a_bert_tokenizer_json_encodes_as_wordpiece_tokenizer(bert):
    hf = HFTokenizer.from_str(bert.to_hf_json())
    for text in BERT_TEXTS:
        assert hf.tokenize(text) == bert.tokenize(text), text
        assert hf.encode(text) == bert.encode(text)["input_ids"]
        ids = hf.encode(text)
        assert hf.decode(ids) == bert.decode(ids)
        assert hf.decode(ids, skip_special_tokens=False) == bert.decode(ids, skip_special_tokens=False)
    for first, second in [("the fox", "lazy dogs!"), ("Café", ""), ("a b c d e f", "g h"), ("the fox", "lazy dog")]:
        ours, theirs = hf.encode_full(first, second), bert.encode(first, second)
        assert ours.ids == theirs["input_ids"] and ours.type_ids == theirs["token_type_ids"]
        assert ours.attention_mask == theirs["attention_mask"]
        # truncation: each text keeps a prefix of its tokens, together filling max_length (which text
        # loses how many tokens: tests/text/test_hf_truncation.py)
        a, b = (bert.encode(t, add_special_tokens=False)["input_ids"] for t in (first, second))
        for max_length in (5, 6, 7):
            cut = hf.encode_full(first, second, max_length=max_length)
            kept_a, kept_b = cut.sequence_ids.count(0), cut.sequence_ids.count(1)
            assert len(cut) == min(max_length, len(a) + len(b) + 3)
            assert cut.ids == [bert.cls_id, *a[:kept_a], bert.sep_id, *b[:kept_b], bert.sep_id]


def test_a_bert_tokenizer_json_batches_as_wordpiece_tokenizer(bert):
    hf = HFTokenizer.from_str(bert.to_hf_json())
    texts, pairs = BERT_TEXTS[:4], ["x", "the dog", "", "quick quick quick"]
    ours, theirs = hf.encode_batch(texts, pairs), bert.encode_batch(texts, pairs)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    cut = hf.encode_batch(texts, pairs, max_length=8)
    for row, (text, pair) in enumerate(zip(texts, pairs)):
        ids = hf.encode(text, pair, max_length=8)
        assert cut["input_ids"][row].tolist() == ids + [bert.pad_id] * (8 - len(ids))
    cased = WordPieceTokenizer(bert.id_to_token, lower_case=False)
    hf_cased = HFTokenizer.from_str(cased.to_hf_json())
    for text in BERT_TEXTS:
        assert hf_cased.encode(text) == cased.encode(text)["input_ids"]


# -- Llama 2: BPE with byte fallback, Prepend/Replace normalizer, <s> template -----------------------
LLAMA_MERGES = [(SPIECE, "h"), ("l", "l"), (SPIECE + "h", "e"), (SPIECE + "he", "ll"), (SPIECE + "hell", "o"),
                ("o", "r"), (SPIECE, "w"), (SPIECE + "w", "or"), ("l", "d"), (SPIECE + "wor", "ld")]


def llama2_json() -> dict:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), SPIECE, *"helowrdi"]
    tokens += [a + b for a, b in LLAMA_MERGES]
    replace = {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "}
    spaces = {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}

    def piece(kind, name, type_id):
        return {kind: {"id": name, "type_id": type_id}}

    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added("<unk>", 0), added("<s>", 1), added("</s>", 2)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPIECE}, spaces]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [piece("SpecialToken", "<s>", 0), piece("Sequence", "A", 0)],
                           "pair": [piece("SpecialToken", "<s>", 0), piece("Sequence", "A", 0),
                                    piece("SpecialToken", "<s>", 1), piece("Sequence", "B", 1)],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [replace, {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": [f"{a} {b}" for a, b in LLAMA_MERGES]},
    }


def test_a_llama2_style_tokenizer_on_hand_worked_cases():
    hf = HFTokenizer.from_str(json.dumps(llama2_json()))
    ids = hf.encode("hello world")
    assert hf.encode_full("hello world").tokens == ["<s>", SPIECE + "hello", SPIECE + "world"]
    assert ids == [1, hf.token_to_id(SPIECE + "hello"), hf.token_to_id(SPIECE + "world")]
    assert hf.decode(ids) == "hello world"
    # 'é' and '😀' are not in the vocabulary: their UTF-8 bytes stand for them
    tokens = hf.tokenize("hi é 😀")
    assert tokens == [SPIECE + "h", "i", SPIECE, "<0xC3>", "<0xA9>", SPIECE, "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert hf.token_to_id("<0xC3>") == 3 + 0xC3
    assert hf.decode(hf.encode("hi é 😀")) == "hi é 😀"
    assert hf.decode([hf.token_to_id("<0xC3>"), hf.token_to_id("h")]) == "\ufffdh"   # a lone lead byte
    # the special token is cut out before the normalizer prepends '▁' to the rest
    assert hf.tokenize("<s>hello") == ["<s>", SPIECE + "hello"]
    pair = hf.encode_full("hello", "world")
    assert pair.tokens == ["<s>", SPIECE + "hello", "<s>", SPIECE + "world"] and pair.type_ids == [0, 0, 1, 1]


def test_bpe_joins_the_earliest_merge_first():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "bc", "ba"])}
    hf = HFTokenizer.from_str(json.dumps({"model": {"type": "BPE", "vocab": vocab,
                                                    "merges": ["b c", "b a", "a b"]}}))
    assert hf.tokenize("abc") == ["a", "bc"]                 # 'b c' outranks 'a b'
    assert hf.tokenize("abab") == ["a", "ba", "b"]           # 'b a' first; then no 'a b' is left
    assert hf.tokenize("ababab") == ["a", "ba", "ba", "b"]
    assert hf.tokenize("abbab") == ["ab", "ba", "b"]


def test_bpe_without_byte_fallback_fuses_unknowns_and_applies_prefix_and_suffix():
    vocab = {t: i for i, t in enumerate(["<unk>", "a", "b", "##a", "##b", "ab", "b</w>", "##b</w>", "ab</w>"])}
    model = {"type": "BPE", "vocab": vocab, "merges": [["a", "##b</w>"], ["a", "##b"]], "unk_token": "<unk>",
             "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>", "fuse_unk": True}
    hf = HFTokenizer.from_str(json.dumps({"model": model, "pre_tokenizer": {"type": "WhitespaceSplit"},
                                          "decoder": {"type": "BPEDecoder", "suffix": "</w>"}}))
    assert hf.tokenize("ab") == ["ab</w>"]
    assert hf.tokenize("abb") == ["ab", "##b</w>"]
    assert hf.tokenize("xyzab") == ["<unk>", "##a", "##b</w>"]        # x, y, z fused into one <unk>
    assert hf.decode(hf.encode("ab ab")) == "ab ab"
    unfused = {**model, "fuse_unk": False, "ignore_merges": True, "vocab": {**vocab, "abab": 9}}
    hf = HFTokenizer.from_str(json.dumps({"model": unfused}))
    assert hf.tokenize("xy") == ["<unk>", "<unk>"]
    assert hf.tokenize("abab") == ["abab"]                                # a word in the vocab is kept whole


# -- T5: Unigram ----------------------------------------------------------------------------------
def unigram_json(pieces, unk_id=2, byte_fallback=False) -> dict:
    return {
        "added_tokens": [added("<pad>", 0), added("</s>", 1), added("<unk>", 2)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": None},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "always",
                                          "split": True}]},
        "post_processor": {"type": "TemplateProcessing", "single": ["$A:0", "</s>:0"],
                           "pair": ["$A:0", "</s>:0", "$B:1", "</s>:1"], "special_tokens": [["</s>", 1]]},
        "decoder": {"type": "Metaspace", "replacement": SPIECE, "add_prefix_space": True},
        "model": {"type": "Unigram", "unk_id": unk_id, "byte_fallback": byte_fallback,
                  "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], *pieces]},
    }


def _best_by_brute_force(word, scores):
    """All segmentations of ``word`` into pieces of ``scores`` with the largest total (reorderings
    of the same pieces tie)."""
    found = []
    for cuts in itertools.product([False, True], repeat=len(word) - 1):
        pieces, start = [], 0
        for k, cut in enumerate(cuts, start=1):
            if cut:
                pieces.append(word[start:k])
                start = k
        pieces.append(word[start:])
        if all(p in scores for p in pieces):
            found.append((sum(scores[p] for p in pieces), pieces))
    best = max(total for total, _ in found)
    return [pieces for total, pieces in found if total > best - 1e-9]


def test_unigram_viterbi_finds_the_best_segmentation():
    rng = np.random.default_rng(0)
    strings = ["".join(p) for n in (1, 2, 3) for p in itertools.product("abc", repeat=n)]
    pieces = [[SPIECE, -3.0]] + [[s, float(-rng.uniform(1, 10))] for s in strings]
    hf = HFTokenizer.from_str(json.dumps(unigram_json(pieces)))
    scores = {SPIECE: -3.0, **{p: s for p, s in pieces}}
    words = ["".join(rng.choice(list("abc"), size=rng.integers(1, 8))) for _ in range(40)]
    for word in words:
        assert hf.tokenize(word) in _best_by_brute_force(SPIECE + word, scores), word
    text = "  ".join(words[:4])
    assert hf.encode(text) == [i for w in words[:4] for i in hf.encode(w, add_special_tokens=False)] + [1]
    assert hf.decode(hf.encode(text)) == " ".join(words[:4])


def test_unigram_unknowns_are_fused_or_spelled_as_bytes():
    pieces = [[SPIECE, -1.0], ["a", -2.0], ["b", -2.0], ["ab", -3.0]]
    hf = HFTokenizer.from_str(json.dumps(unigram_json(pieces)))
    assert hf.tokenize("abxyb") == [SPIECE, "ab", "<unk>", "b"]            # x, y: one unknown piece
    assert hf.encode("abxyb", "a") == [3, 6, 2, 5, 1, 3, 4, 1]
    byte_pieces = [[f"<0x{b:02X}>", -20.0] for b in range(256)]
    hf = HFTokenizer.from_str(json.dumps(unigram_json(pieces + byte_pieces, byte_fallback=True)))
    assert hf.tokenize("aé") == [SPIECE, "a", "<0xC3>", "<0xA9>"]
    with pytest.raises(ValueError, match="unk_id"):
        HFTokenizer.from_str(json.dumps(unigram_json(pieces, unk_id=None))).encode("x")


# -- Llama 3: a Split regex with \p classes, then byte-level BPE -----------------------------------
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_json(gpt2_tokenizer) -> dict:
    data = json.loads(gpt2_tokenizer.to_hf_json())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    begin = {"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}}
    data["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing", "single": [begin, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [begin, {"Sequence": {"id": "A", "type_id": 0}}, begin, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {ENDOFTEXT: {"id": ENDOFTEXT, "ids": [gpt2_tokenizer.token_to_id(ENDOFTEXT)],
                                        "tokens": [ENDOFTEXT]}}}]}
    return data


def test_a_llama3_style_split_pattern_with_and_without_the_regex_package(gpt2, monkeypatch):
    from lamina.text import hf_patterns

    text = "Hello WORLD'S  123456!!\n\n x"
    expected = ["Hello", " WORLD", "'S", " ", " ", "123", "456", "!!\n\n", " x"]
    table = bytes_to_unicode()
    spelled = ["".join(table[b] for b in word.encode()) for word in expected]
    fallback = hf_patterns.compile_pattern(LLAMA3_PATTERN, use_regex_package=False)
    assert [m.group() for m in fallback.finditer(text)] == expected
    monkeypatch.setattr(hf_patterns, "_regex", None)
    hf_patterns.compile_pattern.cache_clear()
    try:
        hf = HFTokenizer.from_str(json.dumps(llama3_json(gpt2)))
        assert hf.pre_tokenizer.pre_tokenize([text]) == spelled
        for sample in TEXTS:
            assert hf.decode(hf.encode(sample)) == sample
            pieces = [m.group() for m in fallback.finditer(sample)]
            assert hf.encode(sample, add_special_tokens=False) == [i for p in pieces for i in gpt2.encode(p)]
        begin = gpt2.token_to_id(ENDOFTEXT)
        pair = hf.encode_full("hello", "world")
        assert pair.ids == [begin, *gpt2.encode("hello"), begin, *gpt2.encode("world")]
        assert pair.type_ids == [0] * (2 + len(gpt2.encode("hello"))) + [1] * len(gpt2.encode("world"))
        assert hf.decode(pair.ids) == "helloworld"
    finally:
        hf_patterns.compile_pattern.cache_clear()


def test_translated_patterns_match_the_regex_package():
    regex = pytest.importorskip("regex")
    from lamina.text.hf_patterns import compile_pattern

    patterns = [LLAMA3_PATTERN, r"[\p{Lu}\p{Lt}]+|\P{L}+", r"\p{N}|[^\P{P}]",
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{M}]*\p{Ll}+"]
    for pattern in patterns:
        ours = compile_pattern(pattern, use_regex_package=False)
        for text in TEXTS:
            assert [m.span() for m in ours.finditer(text)] == [m.span() for m in regex.finditer(pattern, text)]


# -- added tokens -------------------------------------------------------------------------------------
def test_added_tokens_with_strip_single_word_and_normalized_flags():
    vocab = {"[UNK]": 0, "a": 1, "b": 2, "hey": 3, "x": 4}
    data = {"added_tokens": [added("[MASK]", 5, lstrip=True), added("<b>", 6, single_word=True, rstrip=True),
                             added("hey", 3, special=False, normalized=True)],
            "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}
    hf = HFTokenizer.from_str(json.dumps(data))
    assert hf.vocab_size == 7 and hf.id_to_token(6) == "<b>" and hf.token_to_id("[MASK]") == 5
    assert hf.tokenize("a  [MASK] b") == ["a", "[MASK]", "b"]
    # '<b>' touching 'x' is no match: Whitespace cuts it into '<', 'b', '>'
    assert hf.tokenize("a <b>  b x<b>") == ["a", "<b>", "b", "x", "[UNK]", "b", "[UNK]"]
    assert hf.tokenize("HEYa") == ["hey", "a"]                                    # matched after lower-casing
    assert hf.decode(hf.encode("a [MASK] hey")) == "a hey"
    assert hf.decode(hf.encode("a [MASK] hey"), skip_special_tokens=False) == "a [MASK] hey"
    # without a pre-tokenizer the stripped spaces would otherwise reach the model
    hf = HFTokenizer.from_str(json.dumps({**data, "pre_tokenizer": None}))
    assert hf.tokenize("a [MASK]") == ["a", "[MASK]"] and hf.tokenize("a <b> b") == ["[UNK]", "<b>", "b"]
    assert hf.tokenize("a <b>b") == ["[UNK]"]


# -- components ----------------------------------------------------------------------------------------
def _pre(spec, text):
    return HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": {}},
                                            "pre_tokenizer": spec})).pre_tokenizer.pre_tokenize([text])


def test_split_behaviours_on_hand_worked_cases():
    def split(behaviour, invert=False):
        return _pre({"type": "Split", "pattern": {"String": "-"}, "behavior": behaviour, "invert": invert}, "a--b-c")

    assert split("Removed") == ["a", "b", "c"]
    assert split("Isolated") == ["a", "-", "-", "b", "-", "c"]
    assert split("MergedWithPrevious") == ["a-", "-", "b-", "c"]
    assert split("MergedWithNext") == ["a", "-", "-b", "-c"]
    assert split("Contiguous") == ["a", "--", "b", "-", "c"]
    assert split("Removed", invert=True) == ["-", "-", "-"]
    assert _pre({"type": "Digits", "individual_digits": True}, "ab123c4") == ["ab", "1", "2", "3", "c", "4"]
    assert _pre({"type": "Digits", "individual_digits": False}, "ab123c4") == ["ab", "123", "c", "4"]
    assert _pre({"type": "Punctuation"}, "hi,there!!") == ["hi", ",", "there", "!", "!"]
    assert _pre({"type": "Whitespace"}, "it's  a_b!?") == ["it", "'", "s", "a_b", "!?"]
    assert _pre({"type": "BertPreTokenizer"}, " don't\tgo.") == ["don", "'", "t", "go", "."]


def test_metaspace_prepend_schemes():
    def meta(scheme, split=True):
        return {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": scheme, "split": split}

    assert _pre(meta("always"), "hi  there") == [SPIECE + "hi", SPIECE, SPIECE + "there"]
    assert _pre(meta("never"), "hi there") == ["hi", SPIECE + "there"]
    assert _pre(meta("always", split=False), "hi there") == [SPIECE + "hi" + SPIECE + "there"]
    sequence = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, meta("first")]}
    assert _pre(sequence, "a b") == [SPIECE + "a", "b"]
    assert _pre({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, meta("always")]},
                "a b") == [SPIECE + "a", SPIECE + "b"]


def _normalize(spec, text):
    return HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": {}},
                                            "normalizer": spec})).normalizer.normalize(text)


def test_normalizers_on_hand_worked_cases():
    assert _normalize({"type": "NFKC"}, "ﬁ ½") == "fi 1⁄2"
    assert _normalize({"type": "NFD"}, "é") == "e\u0301"
    assert _normalize({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"},
                                                           {"type": "Lowercase"}]}, "ÉcOLE") == "ecole"
    assert _normalize({"type": "Strip", "strip_left": False, "strip_right": True}, "  a  ") == "  a"
    assert _normalize({"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": "_"}, "a \t b") == "a_b"
    assert _normalize({"type": "Prepend", "prepend": SPIECE}, "x") == SPIECE + "x"
    assert _normalize({"type": "BertNormalizer", "lowercase": False, "strip_accents": True}, "Ça\x00va中") == "Cava 中 "
    assert _normalize({"type": "Precompiled", "precompiled_charsmap": None}, "ﬁ") == "ﬁ"      # no map: no change
    with pytest.raises(ValueError, match=r"normalizer\.precompiled_charsmap"):
        _normalize({"type": "Precompiled", "precompiled_charsmap": "AAAA"}, "ﬁ")              # 3 bytes: no trie


def test_decoders_on_hand_worked_cases():
    def decode(spec, tokens):
        vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
        hf = HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": vocab}, "decoder": spec}))
        return hf.decode([vocab[t] for t in tokens])

    wordpiece = {"type": "WordPiece", "prefix": "##", "cleanup": True}
    assert decode(wordpiece, ["un", "##aff", "!", "it", "'s"]) == "unaff! it's"
    assert decode({"type": "ByteFallback"}, ["<0xE2>", "<0x82>", "<0xAC>", "a", "<0xFF>", "<0xFE>"]) == "€a\ufffd\ufffd"
    assert decode({"type": "Strip", "content": "x", "start": 2, "stop": 1}, ["xxxax", "xb"]) == "xab"
    assert decode({"type": "BPEDecoder", "suffix": "</w>"}, ["he", "llo</w>", "you</w>"]) == "hello you"
    assert decode({"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "never"}, [SPIECE + "a"]) == " a"
    assert decode(None, ["a", "b"]) == "a b"


def test_bert_and_roberta_processing_and_left_padding():
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "a", "b"])}
    data = {"model": {"type": "WordLevel", "vocab": vocab}, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                               "trim_offsets": True, "add_prefix_space": True},
            "padding": {"strategy": "BatchLongest", "direction": "Left", "pad_id": 0, "pad_type_id": 0,
                        "pad_token": "<pad>", "pad_to_multiple_of": None}}
    hf = HFTokenizer.from_str(json.dumps(data))
    pair = hf.encode_full("a", "b b")
    assert pair.ids == [1, 3, 2, 2, 4, 4, 2] and pair.special_tokens_mask == [1, 0, 1, 1, 0, 0, 1]
    batch = hf.encode_batch(["a", "a b a"])
    np.testing.assert_array_equal(batch["input_ids"], [[0, 0, 1, 3, 2], [1, 3, 4, 3, 2]])
    np.testing.assert_array_equal(batch["attention_mask"], [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(hf.encode_batch(["a b a b"], max_length=4)["input_ids"], [[1, 3, 4, 2]])
    data["post_processor"] = {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]}
    bert = HFTokenizer.from_str(json.dumps(data)).encode_full("a", "b")
    assert bert.ids == [1, 3, 2, 4, 2] and bert.type_ids == [0, 0, 0, 1, 1]


# -- files ---------------------------------------------------------------------------------------------
def test_to_str_from_str_and_save_round_trip(gpt2, bert, tmp_path):
    sources = [json.loads(gpt2.to_hf_json()), json.loads(bert.to_hf_json()), llama2_json(), llama3_json(gpt2),
               unigram_json([[SPIECE, -1.0], ["a", -2.0]])]
    for k, data in enumerate(sources):
        first = HFTokenizer.from_str(json.dumps(data))
        second = HFTokenizer.from_str(first.to_str())
        assert second.to_json() == first.to_json()
        path = first.save(tmp_path / f"t{k}" / "tokenizer.json")
        third = HFTokenizer.from_file(path)
        for text in ("hello world", "Café naïve, 123!", "a"):
            assert third.encode(text) == first.encode(text)
            assert third.encode_full(text, "b a").type_ids == first.encode_full(text, "b a").type_ids
    pairs = HFTokenizer.from_str(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                                                       "merges": [["a", "b"]]}}))
    assert pairs.to_json()["model"]["merges"] == [["a", "b"]] and pairs.encode("ab") == [2]


def test_errors_name_the_component_and_its_path(tmp_path):
    data = llama2_json()
    data["normalizer"]["normalizers"].append({"type": "Shout"})
    with pytest.raises(ValueError, match=r"normalizer type 'Shout' at normalizer\.normalizers\[2\]"):
        HFTokenizer.from_str(json.dumps(data))
    data = llama2_json()
    data["decoder"]["decoders"][1] = {"type": "Mystery"}
    with pytest.raises(ValueError, match=r"decoder type 'Mystery' at decoder\.decoders\[1\]"):
        HFTokenizer.from_str(json.dumps(data))
    with pytest.raises(ValueError, match="model type 'Magic' at model"):
        HFTokenizer.from_str(json.dumps({"model": {"type": "Magic"}}))
    with pytest.raises(ValueError, match=r"pre_tokenizer\.behavior is 'Sideways'"):
        HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": {}}, "pre_tokenizer": {
            "type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"}}))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        HFTokenizer.from_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        HFTokenizer.from_file(tmp_path / "missing.json")
    hf = HFTokenizer.from_str(json.dumps(llama2_json()))
    with pytest.raises(ValueError, match="id 100000"):
        hf.decode([100000])
    with pytest.raises(ValueError, match="max_length=0"):
        hf.encode("hello", max_length=0)
