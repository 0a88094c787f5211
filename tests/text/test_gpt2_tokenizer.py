"""lamina.text.GPT2Tokenizer: GPT-2's vocab.json / merges.txt files, its byte-to-unicode table,
its pre-tokenization pattern and its rank-ordered merges, on hand-computed examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from lamina import models
from lamina.text import ENDOFTEXT, BPETokenizer, GPT2Tokenizer, bytes_to_unicode, gpt2_pattern, sample_text

# the merges of the hand-written files, highest priority first
MERGES = [("l", "l"), ("h", "e"), ("o", "r"), ("he", "ll"), ("Ġ", "w"), ("Ġw", "or"), ("hell", "o"), ("a", "a"),
          ("r", "l")]
TEXTS = [
    "hello world", "Hello world's 123  !!", "café, naïve façade\n\n\tend  ", "北京欢迎你 — ½ ² Ⅻ",
    "emoji 👩‍👩‍👧 and e\u0301 combining", "x_y = [1, 2.5e-3]; 'quoted' don't", "  leading and trailing  \n",
    "a<|endoftext|>b", "",
]


def _write_files(directory, merges=MERGES, header="#version: 0.2", with_endoftext=True):
    """vocab.json (the 256 byte characters in byte order, each merge's result, '<|endoftext|>')
    and merges.txt, written by hand."""
    tokens = list(bytes_to_unicode().values()) + [a + b for a, b in merges]
    if with_endoftext:
        tokens.append(ENDOFTEXT)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges_path.write_text("\n".join([header, *(f"{a} {b}" for a, b in merges)]) + "\n", encoding="utf-8")
    return vocab_path, merges_path


@pytest.fixture
def tokenizer(tmp_path):
    return GPT2Tokenizer.from_files(*_write_files(tmp_path))


# -- the byte-to-unicode table ------------------------------------------------------------------
def test_the_byte_table_is_a_bijection_onto_256_printable_characters():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    chars = list(table.values())
    assert len(set(chars)) == 256
    assert all(len(c) == 1 and c.isprintable() and not c.isspace() for c in chars)
    assert all(table[b] == chr(b) for b in range(ord("!"), ord("~") + 1))     # printable ASCII is itself
    assert (table[ord(" ")], table[ord("\n")], table[0], table[0x7F], table[0xAD]) == ("Ġ", "Ċ", "Ā", "ġ", "Ń")


# -- pre-tokenization ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, chunks", [
    ("Hello world's 123  !!", ["Hello", " world", "'s", " 123", " ", " !!"]),
    ("I'm  fine\n\nok", ["I", "'m", " ", " fine", "\n", "\n", "ok"]),
    ("they'll've DON'T", ["they", "'ll", "'ve", " DON", "'", "T"]),         # contractions are lower case only
    ("x3.5%  ", ["x", "3", ".", "5", "%", "  "]),
    ("café 北京 ½ x_y", ["café", " 北京", " ½", " x", "_", "y"]),             # \p{L}, \p{N}; '_' is a symbol
])
def test_pre_tokenization_on_hand_computed_examples(text, chunks):
    assert gpt2_pattern().findall(text) == chunks


def test_pre_tokenization_agrees_with_the_unicode_property_pattern():
    regex = pytest.importorskip("regex")
    reference = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    rng = np.random.default_rng(0)
    alphabet = list("aZé北Ⅻ½²7_-'s ll\n\t!🙂\u0301") + ["'t", "'re", "  "]
    for text in TEXTS + ["".join(rng.choice(alphabet, 40)) for _ in range(50)]:
        assert gpt2_pattern().findall(text) == reference.findall(text), text


# -- encoding and decoding ----------------------------------------------------------------------
def test_encoding_follows_the_merges_in_rank_order(tokenizer):
    ids = tokenizer.encode("hello world")
    # 'hello': l+l (rank 0), h+e (1), he+ll (3), hell+o (6); 'Ġworld': o+r (2), Ġ+w (4), Ġw+or (5), no merge of l, d
    assert tokenizer.tokens(ids) == ["hello", "Ġwor", "l", "d"]
    assert ids == [tokenizer.token_to_id(t) for t in ("hello", "Ġwor", "l", "d")]
    # every occurrence of a pair, left to right: 'aaa' -> 'aa' 'a'; no merge joins 'aa' 'aa'
    assert tokenizer.tokens(tokenizer.encode("aaa aaaa")) == ["aa", "a", "Ġ", "aa", "aa"]
    # the earlier merge wins whatever its place in the word: 'hel' has h+e (1) and e+l (none)
    assert tokenizer.tokens(tokenizer.encode("ohell")) == ["o", "hell"]
    # of overlapping pairs the higher-priority merge joins first: o+r (2) before r+l (8)
    assert tokenizer.tokens(tokenizer.encode("orl")) == ["or", "l"]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode_on_varied_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_a_partial_character_decodes_as_the_replacement_character(tokenizer):
    first_byte = "é".encode()[0]              # the vocabulary holds the bytes at their own ids
    assert tokenizer.decode([first_byte]) == "\ufffd"
    assert tokenizer.decode(np.asarray([[first_byte, ord("a")]])) == "\ufffda"


def test_the_special_token_is_text_unless_allowed(tokenizer):
    eot = tokenizer.token_to_id(ENDOFTEXT)
    assert eot == len(tokenizer) - 1 == tokenizer.bos_id == tokenizer.eos_id
    plain = tokenizer.encode("a<|endoftext|>b")
    assert eot not in plain and tokenizer.tokens(plain)[:3] == ["a", "<", "|"]
    a, b = tokenizer.token_to_id("a"), tokenizer.token_to_id("b")
    assert tokenizer.encode("a<|endoftext|>b", allowed_special="all") == [a, eot, b]
    assert tokenizer.encode("a<|endoftext|>b", allowed_special={ENDOFTEXT}) == [a, eot, b]
    assert tokenizer.encode("a", add_bos=True, add_eos=True) == [eot, a, eot]
    assert tokenizer.decode([a, eot, b]) == "ab"
    assert tokenizer.decode([a, eot, b], skip_specials=False) == "a<|endoftext|>b"
    with pytest.raises(ValueError, match="GPT2Tokenizer.encode: allowed_special names"):
        tokenizer.encode("a", allowed_special={"<|im_start|>"})


def test_save_writes_files_that_load_to_the_same_tokenizer(tokenizer, tmp_path):
    vocab_path, merges_path = tokenizer.save(tmp_path / "saved")
    assert merges_path.read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    again = GPT2Tokenizer.from_files(vocab_path, merges_path)
    assert again.merges == MERGES and len(again) == len(tokenizer)
    assert json.loads(vocab_path.read_text(encoding="utf-8"))["Ġwor"] == tokenizer.token_to_id("Ġwor")
    for text in TEXTS:
        assert again.encode(text) == tokenizer.encode(text)


# -- files from lamina's own BPE training -----------------------------------------------------
def test_files_from_a_trained_bpe_tokenizer_encode_its_ids(tmp_path):
    corpus = ["the cat sat on the mat, the cat's hat", "a naïve café in the city; 42 cats and 7 hats"] * 3
    bpe = BPETokenizer.train(corpus, 300, pad=None, bos=ENDOFTEXT, eos=ENDOFTEXT)
    gpt2 = GPT2Tokenizer.from_files(*GPT2Tokenizer.from_bpe(bpe).save(tmp_path))
    assert len(gpt2) == len(bpe) and gpt2.eos_id == bpe.eos_id
    assert len(gpt2.merges) == len(bpe.merges) > 30
    for text in corpus + ["the hat sat on a café cat", "unseen words: zebra 99 !?"]:
        ids = bpe.encode(text, add_bos=True)
        assert gpt2.encode(text, add_bos=True) == ids
        assert gpt2.decode(ids) == bpe.decode(ids) == text


def test_a_bpe_tokenizer_with_two_tokens_of_the_same_bytes_is_refused():
    bpe = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])        # ab, abc, bc, a+bc = abc again
    with pytest.raises(ValueError, match="from_bpe: two of the tokenizer's tokens spell the same bytes"):
        GPT2Tokenizer.from_bpe(bpe)


# -- errors -------------------------------------------------------------------------------------
def test_missing_and_malformed_files_are_named(tmp_path):
    vocab_path, merges_path = _write_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="GPT2Tokenizer.from_files: no vocab.json file at .*nowhere"):
        GPT2Tokenizer.from_files(tmp_path / "nowhere.json", merges_path)
    with pytest.raises(FileNotFoundError, match="GPT2Tokenizer.from_files: no merges.txt file"):
        GPT2Tokenizer.from_files(vocab_path, tmp_path / "nowhere.txt")
    merges_path.write_text("#version: 0.2\nh e\nl l o\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"GPT2Tokenizer.from_files: line 3 of merges.txt .* got 'l l o'"):
        GPT2Tokenizer.from_files(vocab_path, merges_path)
    merges_path.write_text("h e\nh e\n", encoding="utf-8")
    with pytest.raises(ValueError, match="GPT2Tokenizer.from_files: .*repeat a pair"):
        GPT2Tokenizer.from_files(vocab_path, merges_path)
    vocab_path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="GPT2Tokenizer.from_files: .* must hold a JSON object"):
        GPT2Tokenizer.from_files(vocab_path, merges_path)
    vocab_path.write_text('{"a": 0, "b": 2}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"GPT2Tokenizer.from_files: .*ids must be 0 \.\. 2, each once"):
        GPT2Tokenizer.from_files(vocab_path, merges_path)


def test_a_token_missing_from_the_vocabulary_and_a_bad_id_are_named(tmp_path):
    tokens = {t: i for i, t in enumerate(bytes_to_unicode().values())}
    tokenizer = GPT2Tokenizer(tokens, [("h", "i")])                       # 'hi' merges but is no token
    with pytest.raises(ValueError, match="GPT2Tokenizer.encode: the token 'hi' of 'hi' is not in the vocabulary"):
        tokenizer.encode("hi")
    with pytest.raises(ValueError, match=r"GPT2Tokenizer.decode: id 999 outside \[0, 257\)"):
        tokenizer.decode([1, 999])


# -- sampling -----------------------------------------------------------------------------------
def test_sampling_from_a_tiny_gpt2_with_the_tokenizer(tokenizer):
    lamina.manual_seed(0)
    model = models.GPT2(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    text = sample_text(model, tokenizer, "Hello", max_length=12, seed=3)
    assert text.startswith("Hello") and len(text) > len("Hello")
    assert sample_text(model, tokenizer, "Hello", max_length=12, seed=3, stream=False) == text   # cache = rerun
    assert isinstance(sample_text(model, tokenizer, "", max_length=5, seed=1), str)    # starts from <|endoftext|>
