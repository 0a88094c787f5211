"""WordPiece tokenization as BERT's: basic tokenization, greedy longest match with "##"
continuations, [UNK], pairs of texts, padding, decoding, vocab.txt files and training."""

from __future__ import annotations

import pytest

from lamina.text import WordPieceTokenizer, basic_tokenize

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + ["un", "##aff", "##able", "the", "cat", "sat", ".", ",", "!", "hello", "cafe", "##s",
                    "a", "##a", "aa", "中", "国", "run", "##ning", "##n"]


@pytest.fixture
def tokenizer():
    return WordPieceTokenizer(VOCAB)


def test_greedy_longest_match_first_with_continuations(tokenizer):
    assert tokenizer.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tokenizer.tokenize("running") == ["run", "##ning"]        # "##ning" beats "##n" + ...
    assert tokenizer.tokenize("aaa") == ["aa", "##a"]                 # the longest prefix first
    assert tokenizer.tokenize("cats") == ["cat", "##s"]


def test_words_that_cannot_be_covered_become_one_unk(tokenizer):
    assert tokenizer.tokenize("unaffablex the") == ["[UNK]", "the"]
    assert tokenizer.tokenize("xcat") == ["[UNK]"]
    short = WordPieceTokenizer(VOCAB, max_word_length=4)
    assert short.tokenize("cats catss") == ["cat", "##s", "[UNK]"]


def test_basic_tokenization_lowercases_strips_accents_and_splits_punctuation():
    assert basic_tokenize("Hello, CAT!") == ["hello", ",", "cat", "!"]
    assert basic_tokenize("Café") == ["cafe"]
    assert basic_tokenize("Café", lower_case=False) == ["Café"]
    assert basic_tokenize("ab中国cd") == ["ab", "中", "国", "cd"]
    assert basic_tokenize("a\u00adb\tc\x00d\u3000e") == ["ab", "cd", "e"]   # soft hyphen, NUL dropped
    assert basic_tokenize("[CLS] Hi [MASK].", never_split=["[CLS]", "[MASK]"]) == ["[CLS]", "hi", "[MASK]", "."]
    assert basic_tokenize("don't") == ["don", "'", "t"]


def test_encode_a_pair_gives_ids_types_and_mask(tokenizer):
    ids = tokenizer.convert_tokens_to_ids
    single = tokenizer.encode("The cat sat.")
    assert single["input_ids"] == ids(["[CLS]", "the", "cat", "sat", ".", "[SEP]"])
    assert single["token_type_ids"] == [0] * 6 and single["attention_mask"] == [1] * 6
    pair = tokenizer.encode("Hello!", "unaffable", pad_to=10)
    assert pair["input_ids"] == ids(["[CLS]", "hello", "!", "[SEP]", "un", "##aff", "##able", "[SEP]",
                                     "[PAD]", "[PAD]"])
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert pair["attention_mask"] == [1] * 8 + [0, 0]
    cut = tokenizer.encode("the cat sat", "unaffable", max_length=7)    # the longer text loses tokens first
    assert cut["input_ids"] == ids(["[CLS]", "the", "cat", "[SEP]", "un", "##aff", "[SEP]"])


def test_decode_round_trips_normalized_text(tokenizer):
    text = "the cat sat . hello , unaffable !"
    assert tokenizer.decode(tokenizer.encode(text)["input_ids"]) == text
    assert tokenizer.decode(tokenizer.encode("cats")["input_ids"], skip_special_tokens=False) == "[CLS] cats [SEP]"


def test_errors(tokenizer):
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[MASK\]'\]"):
        WordPieceTokenizer(SPECIALS[:-1] + ["a"])
    with pytest.raises(ValueError, match="id 99 is outside the vocabulary of 25 tokens"):
        tokenizer.decode([99])
    with pytest.raises(ValueError, match="pad_to=3 is shorter than the 5 tokens"):
        tokenizer.encode("the cat sat", pad_to=3)
    with pytest.raises(ValueError, match="max_length=1 leaves no room"):
        tokenizer.encode("the", max_length=1)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        WordPieceTokenizer.train(["a"], 0)


def test_vocab_file_round_trip(tmp_path, tokenizer):
    path = tmp_path / "vocab.txt"
    tokenizer.save(path)
    assert path.read_text(encoding="utf-8").splitlines() == VOCAB
    loaded = WordPieceTokenizer(path)
    assert loaded.id_to_token == VOCAB
    assert loaded.encode("unaffable cats") == tokenizer.encode("unaffable cats")


def test_training_learns_frequent_pieces_and_covers_its_texts():
    texts = ["hug hugs hugging hugged", "pug pugs", "bun buns hug"] * 5
    trained = WordPieceTokenizer.train(texts, vocab_size=30)
    assert len(trained) == 30
    assert trained.id_to_token[:5] == SPECIALS
    assert {"h", "##u", "##g", "p", "b"} <= set(trained.id_to_token)          # the alphabet
    for text in texts:
        assert "[UNK]" not in trained.tokenize(text)
        assert trained.decode(trained.encode(text)["input_ids"]) == text
    # the score count(ab) / (count(a) count(b)): "##g" + "##s" (always together) merges first,
    # before "h" + "##u", whose second piece is common on its own
    small = WordPieceTokenizer.train(["hugs hugs hug hu gs"], vocab_size=len(SPECIALS) + 6 + 1)
    assert small.id_to_token[-1] == "##gs"


def test_decode_can_clean_up_spaces_before_punctuation(tokenizer):
    ids = tokenizer.encode("Hello, the cat sat!")["input_ids"]
    assert tokenizer.decode(ids) == "hello , the cat sat !"
    assert tokenizer.decode(ids, clean_up_spaces=True) == "hello, the cat sat!"
    assert basic_tokenize("cafe\u0301 a\ufffdb\u200bc") == ["cafe", "abc"]    # NFC, U+FFFD and format chars


def test_encode_batch_pads_to_the_longest(tokenizer):
    batch = tokenizer.encode_batch(["the cat", "unaffable cats sat"], ["hello", "the"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 10)
    assert batch["input_ids"][0].tolist() == tokenizer.encode("the cat", "hello", pad_to=10)["input_ids"]
    assert batch["attention_mask"].sum(axis=1).tolist() == [6, 10]
    assert batch["token_type_ids"][1].tolist() == [0] * 8 + [1, 1]
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        tokenizer.encode_batch(["a", "b"], ["c"])
