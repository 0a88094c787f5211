"""lamina.text BpeTrainer, WordPieceTrainer, WordLevelTrainer and HFTokenizer.train_from_iterator /
train_new_from_iterator: merges against a brute-force BPE, tokenizers of the GPT-2 and BERT kinds
retrained, save/load round trips and the errors."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from lamina.text import (
    ENDOFTEXT,
    BPETokenizer,
    BpeTrainer,
    GPT2Tokenizer,
    HFTokenizer,
    UnigramTrainer,
    WordLevelTrainer,
    WordPieceTokenizer,
    WordPieceTrainer,
)

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Café naïve résumé, HELLO world!",
         "unaffable running cats don't stop; 3.14 apples", "jumping foxes and lazy cats run over dogs",
         "the other fox, the brown one, keeps running"] * 3


def random_words(seed: int, n: int = 40, alphabet: str = "abcde") -> dict[str, int]:
    rng = np.random.default_rng(seed)
    words: dict[str, int] = {}
    for _ in range(n):
        word = "".join(rng.choice(list(alphabet), size=int(rng.integers(1, 8))))
        words[word] = words.get(word, 0) + int(rng.integers(1, 5))
    return words


def reference_bpe(words: dict[str, int], vocab_size: int, specials=(), min_frequency=0, prefix="", suffix="",
                  limit_alphabet=None, max_token_length=None):
    """BPE training recounting every pair at every step: the highest count wins, ties to the pair
    of smallest ids (first, then second)."""
    tokens = list(dict.fromkeys(specials))
    chars = Counter()
    for word, count in words.items():
        for char in word:
            chars[char] += count
    alphabet = sorted(chars)
    if limit_alphabet is not None:
        alphabet = sorted(sorted(alphabet, key=lambda c: (-chars[c], c))[:limit_alphabet])
    tokens += [c for c in alphabet if c not in tokens]
    segments = []
    for word in words:
        segment = [(prefix if k else "") + c + (suffix if k == len(word) - 1 else "")
                   for k, c in enumerate(word) if c in alphabet]
        tokens += [s for s in dict.fromkeys(segment) if s not in tokens]
        segments.append(segment)

    def width(token):
        return len(token.removeprefix(prefix).removesuffix(suffix)) if token not in specials else len(token)

    merges = []
    while len(tokens) < vocab_size:
        counts = Counter()
        for segment, count in zip(segments, words.values()):
            for pair in zip(segment, segment[1:]):
                if max_token_length is None or width(pair[0]) + width(pair[1]) <= max_token_length:
                    counts[pair] += count
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], tokens.index(p[0]), tokens.index(p[1])))
        if counts[best] < max(min_frequency, 1):
            break
        left, right = best
        new = left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)
        merges.append(best)
        if new not in tokens:
            tokens.append(new)
        for segment in segments:
            k = 0
            while k < len(segment) - 1:
                if (segment[k], segment[k + 1]) == best:
                    segment[k:k + 2] = [new]
                k += 1
    return {t: i for i, t in enumerate(tokens)}, merges


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("options", [{}, {"prefix": "##"}, {"suffix": "</w>"}, {"min_frequency": 6},
                                     {"limit_alphabet": 3}, {"max_token_length": 3}])
def test_bpe_merges_equal_a_brute_force_recount(seed, options):
    words = random_words(seed)
    trainer = BpeTrainer(60, options.get("min_frequency", 0), ["[UNK]", "<s>"], options.get("limit_alphabet"),
                         continuing_subword_prefix=options.get("prefix"), end_of_word_suffix=options.get("suffix"),
                         max_token_length=options.get("max_token_length"))
    model = trainer.train_model(words)
    vocab, merges = reference_bpe(words, 60, ["[UNK]", "<s>"], **options)
    assert model.merges == merges
    assert model.vocab == vocab
    assert model.vocab["[UNK]"] == 0 and model.vocab["<s>"] == 1
    if "min_frequency" in options:
        assert len(vocab) < 60          # stopped by the frequency, not the size
    if "limit_alphabet" in options:
        assert sum(len(t) == 1 for t in model.vocab) == 3
    if "suffix" in options:
        for word in words:
            assert model.tokenize(word)[-1][1].endswith("</w>")


def test_bpe_training_through_a_tokenizer_counts_pre_tokenized_words(tmp_path):
    tokenizer = HFTokenizer.from_str(json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []},
                                                 "normalizer": {"type": "Lowercase"},
                                                 "pre_tokenizer": {"type": "Whitespace"}}))
    trainer = BpeTrainer(100, special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator(iter(TEXTS[:5]), trainer)
    words = Counter(w for text in TEXTS[:5] for w in re.findall(r"\w+|[^\w\s]+", text.lower()))
    vocab, merges = reference_bpe(dict(words), 100, ["[PAD]", "[UNK]"])
    assert tokenizer.model.merges == merges
    assert tokenizer.vocab_size == len(vocab) == 100
    assert [(t.content, t.id, t.special) for t in tokenizer.added_tokens] == [("[PAD]", 0, True), ("[UNK]", 1, True)]
    assert tokenizer.encode("[PAD] the fox") == [0, *tokenizer.encode("the fox")]
    path = tokenizer.save(tmp_path / "tokenizer.json")
    loaded = HFTokenizer.from_file(path)
    for text in TEXTS[:5] + ["unseen words here"]:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_wordpiece_vocabulary_covers_its_training_words_and_round_trips(tmp_path):
    bert = HFTokenizer.from_str(WordPieceTokenizer.train(TEXTS, 80).to_hf_json())
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bert.train_from_iterator(TEXTS, WordPieceTrainer(130, special_tokens=specials))
    assert [bert.token_to_id(t) for t in specials] == list(range(5))
    for text in TEXTS[:5]:
        tokens = bert.tokenize(text)
        assert "[UNK]" not in tokens, (text, tokens)
    bert.save(tmp_path / "tokenizer.json")
    loaded = HFTokenizer.from_file(tmp_path / "tokenizer.json")
    assert loaded.model.type_name == "WordPiece" and loaded.vocab_size == 130
    for text in TEXTS[:5]:
        assert loaded.encode(text) == bert.encode(text)


def test_word_level_keeps_the_most_frequent_words():
    tokenizer = HFTokenizer.from_str(json.dumps({"model": {"type": "WordLevel", "vocab": {"[UNK]": 0},
                                                           "unk_token": "[UNK]"},
                                                 "pre_tokenizer": {"type": "WhitespaceSplit"}}))
    texts = ["b a c a b a", "d e a"]
    tokenizer.train_from_iterator(texts, WordLevelTrainer(4, special_tokens=["[UNK]"]))
    assert tokenizer.model.vocab == {"[UNK]": 0, "a": 1, "b": 2, "c": 3}     # a:4, b:2, then c before d and e
    assert tokenizer.tokenize("a d") == ["a", "[UNK]"]
    tokenizer.train_from_iterator(texts, WordLevelTrainer(10, min_frequency=2, special_tokens=["[UNK]"]))
    assert tokenizer.model.vocab == {"[UNK]": 0, "a": 1, "b": 2}


# -- train_new_from_iterator -------------------------------------------------------------------------
NEW_TEXTS = ["Completely different text: tokenizers learn merges from counts.",
             "Counting pairs, merging pairs, and counting again until the vocabulary is full.",
             "Numbers 12345 and symbols #@! appear too; ÜBER naïve."] * 4


def test_train_new_from_iterator_on_a_gpt2_like_tokenizer(tmp_path):
    gpt2 = GPT2Tokenizer.from_bpe(BPETokenizer.train(TEXTS, 300, special_tokens=[ENDOFTEXT]))
    data = json.loads(gpt2.to_hf_json())
    size = len(data["model"]["vocab"])
    data["added_tokens"] += [{"id": size, "content": "<s>", "special": True, "normalized": False},
                             {"id": size + 1, "content": "</s>", "special": True, "normalized": False}]
    data["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", size + 1], "cls": ["<s>", size],
                              "trim_offsets": False, "add_prefix_space": False}
    old = HFTokenizer.from_str(json.dumps(data))
    new = old.train_new_from_iterator(iter(NEW_TEXTS), 300, new_special_tokens=["<mask>"])
    assert new.vocab_size == 300 and new.model.type_name == "BPE"
    specials = [t.content for t in old.added_tokens] + ["<mask>"]
    assert specials[-3:] == ["<s>", "</s>", "<mask>"] and ENDOFTEXT in specials
    assert [new.token_to_id(t) for t in specials] == list(range(len(specials)))
    assert len(new.model.merges) == 300 - len(specials) - 256        # the 256 byte characters are the alphabet
    cls, sep = new.token_to_id("<s>"), new.token_to_id("</s>")
    assert new.post_processor.to_json()["cls"] == ["<s>", cls] and new.post_processor.to_json()["sep"] == ["</s>", sep]
    assert type(new.pre_tokenizer) is type(old.pre_tokenizer) and type(new.decoder) is type(old.decoder)
    for text in NEW_TEXTS[:3] + ["unseen ✓ bytes 😀"]:
        ids = new.encode(text)
        assert ids[0] == cls and ids[-1] == sep
        assert new.decode(ids) == text
    merged = new.tokenize(" counting pairs")
    assert len(merged) < len(" counting pairs")          # it learned merges from the new text
    new.save(tmp_path / "tokenizer.json")
    loaded = HFTokenizer.from_file(tmp_path / "tokenizer.json")
    for text in NEW_TEXTS[:3]:
        assert loaded.encode(text, "a pair") == new.encode(text, "a pair")


def test_train_new_from_iterator_on_a_bert_like_tokenizer(tmp_path):
    bert = HFTokenizer.from_str(WordPieceTokenizer.train(TEXTS, 90).to_hf_json())
    specials = {t.content: t.id for t in bert.added_tokens}
    new = bert.train_new_from_iterator(NEW_TEXTS, 160)
    assert new.vocab_size == 160 and new.model.type_name == "WordPiece"
    ordered = sorted(specials, key=specials.get)
    assert [new.token_to_id(t) for t in ordered] == list(range(len(ordered)))
    template = new.post_processor.to_json()["special_tokens"]
    for token in ("[CLS]", "[SEP]"):
        assert template[token]["ids"] == [new.token_to_id(token)]
    ids = new.encode("counting pairs", "again")
    assert ids[0] == new.token_to_id("[CLS]") and ids.count(new.token_to_id("[SEP]")) == 2
    for text in NEW_TEXTS[:3]:
        assert "[UNK]" not in new.tokenize(text)
    new.save(tmp_path / "tokenizer.json")
    loaded = HFTokenizer.from_file(tmp_path / "tokenizer.json")
    for text in NEW_TEXTS[:3]:
        assert loaded.encode(text, "pair text") == new.encode(text, "pair text")


# -- errors ------------------------------------------------------------------------------------------
def test_errors_name_the_trainer():
    tokenizer = HFTokenizer.from_str(json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []},
                                                 "pre_tokenizer": {"type": "Whitespace"}}))
    with pytest.raises(ValueError, match=r"BpeTrainer: vocab_size=5 is too small.*alphabet"):
        tokenizer.train_from_iterator(["abcdefgh"], BpeTrainer(5, special_tokens=["<s>"]))
    with pytest.raises(ValueError, match=r"a UnigramTrainer trains a Unigram model but this tokenizer's model is BPE"):
        tokenizer.train_from_iterator(["abc"], UnigramTrainer(50))
    with pytest.raises(TypeError, match=r"BpeTrainer.*item 1 of the texts is int"):
        tokenizer.train_from_iterator(["abc", 3], BpeTrainer(50))
    with pytest.raises(TypeError, match=r"special_tokens must be non-empty strings"):
        BpeTrainer(50, special_tokens=[""])
    wordpiece = HFTokenizer.from_str(json.dumps({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}))
    with pytest.raises(ValueError, match=r"WordPieceTrainer: the model's unk_token '\[UNK\]' is not among"):
        wordpiece.train_from_iterator(["abc"], WordPieceTrainer(50))
    unigram = HFTokenizer.from_str(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(ValueError, match=r"UnigramTrainer: vocab_size=4 is too small"):
        unigram.train_from_iterator(["abcdef"], UnigramTrainer(4, special_tokens=["<unk>"]))


def test_train_on_files_reads_their_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS[:5]) + "\n", encoding="utf-8")
    spec = json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}})
    from_file, from_texts = HFTokenizer.from_str(spec), HFTokenizer.from_str(spec)
    from_file.train([path], BpeTrainer(90))
    from_texts.train_from_iterator([text + "\n" for text in TEXTS[:5]], BpeTrainer(90))
    assert from_file.model.merges == from_texts.model.merges and from_file.model.vocab == from_texts.model.vocab
    with pytest.raises(FileNotFoundError, match="HFTokenizer.train: no file"):
        from_file.train([tmp_path / "missing.txt"], BpeTrainer(90))
