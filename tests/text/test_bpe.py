"""lamina.text.BPETokenizer: byte-pair encoding, checked against a direct re-implementation."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import lamina
from cli_checks import exit_of
from lamina import functional as F
from lamina import models, optim
from lamina.text import (
    GPT2_SPLIT,
    BPETokenizer,
    Vocabulary,
    beam_search_text,
    sample_text,
    shifted_pairs,
    tokenizer_from_config,
)

SHARED_TEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"
END = "<|endoftext|>"
SAMPLE = ("The quick brown fox jumps over the lazy dog. The dog's bark: 'woof, woof!' "
          "Naïve café owners sell crème brûlée for 12 €; 東京 and 😀 too.\n\n  Indented   line\tend.")
NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail", "emily",
         "ella", "elizabeth", "camila", "luna", "sofia", "avery", "mila", "aria", "scarlett", "maria", "marianna"]


# -- a direct re-implementation: recount every pair at every merge ------------------------
def naive_chunks(text: str, pattern: str | None) -> list[str]:
    return [text] if pattern is None else re.findall(pattern, text)


def replace_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, skip_next = [], False
    for i, token in enumerate(ids):
        if skip_next:
            skip_next = False
        elif tuple(ids[i:i + 2]) == pair:
            out.append(new_id)
            skip_next = True
        else:
            out.append(token)
    return out


def naive_merges(texts: list[str], num_merges: int, pattern: str | None = GPT2_SPLIT) -> list[tuple[int, int]]:
    words = [list(chunk.encode("utf-8")) for text in texts for chunk in naive_chunks(text, pattern)]
    merges = []
    for k in range(num_merges):
        counts = Counter(pair for word in words for pair in zip(word, word[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))     # most frequent; ties: smallest ids
        merges.append(best)
        words = [replace_pair(word, best, 256 + k) for word in words]
    return merges


def naive_encode(text: str, merges: list[tuple[int, int]], pattern: str | None = GPT2_SPLIT) -> list[int]:
    """Replay every merge, in order, on every chunk."""
    out = []
    for chunk in naive_chunks(text, pattern):
        ids = list(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            ids = replace_pair(ids, pair, 256 + k)
        out += ids
    return out


def random_text(rng: np.random.Generator, length: int, alphabet: str = "aab c\nbé€😀'!") -> str:
    return "".join(rng.choice(list(alphabet), size=length))


def random_unicode(rng: np.random.Generator, length: int) -> str:
    points = rng.integers(1, 0x110000, size=length)
    return "".join(chr(int(p)) for p in points if not 0xD800 <= p < 0xE000)     # no lone surrogates


# -- the tests ------------------------------------------------------------------------------
def test_the_naive_pair_replacement_is_left_to_right_and_does_not_overlap():
    assert replace_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert replace_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert replace_pair([1, 2, 1, 2, 3], (1, 2), 9) == [9, 9, 3]


def test_the_hand_worked_example_merges_aa_then_ab_then_their_pair():
    # aaabdaaabac: aa 4 times -> Z; ZabdZabac: Za and ab 2 times each, (97, 98) < (256, 97) -> Y;
    # ZYdZYac: ZY 2 times -> X, giving XdXac
    tokenizer = BPETokenizer.train("aaabdaaabac", 259, pad=None, pre_tokenize=None)
    assert tokenizer.merges == [(97, 97), (97, 98), (256, 257)] == naive_merges(["aaabdaaabac"], 3, None)
    assert tokenizer.tokens(range(256, 259)) == ["aa", "ab", "aaab"]
    assert tokenizer.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert len(tokenizer) == 259


def test_incremental_counts_learn_the_merges_of_a_full_recount():
    rng = np.random.default_rng(0)
    for trial in range(6):
        texts = [random_text(rng, int(rng.integers(0, 120))) for _ in range(5)]
        pattern = GPT2_SPLIT if trial % 2 else None
        learned = BPETokenizer.train(texts, 256 + 40, pad=None, pre_tokenize=pattern).merges
        assert learned == naive_merges(texts, 40, pattern), (trial, texts)


def test_encoding_gives_the_tokens_of_replaying_the_merges():
    rng = np.random.default_rng(1)
    texts = [random_text(rng, 150) for _ in range(4)]
    tokenizer = BPETokenizer.train(texts, 256 + 60, pad=None)
    for text in texts + [random_text(rng, 200)]:
        assert tokenizer.encode(text) == naive_encode(text, tokenizer.merges)


def test_any_text_round_trips():
    rng = np.random.default_rng(2)
    tokenizer = BPETokenizer.train([SAMPLE, random_unicode(rng, 300)], 400)
    whole = BPETokenizer.train(SAMPLE, 300, pre_tokenize=None)
    texts = ["", " ", "a", "😀👍🏽🇫🇷", "Ça va? Ünïcödé, ñandú, Ἀθῆναι, भारत, 한국어", "\x00\x7f\t\r\n", "<pad>",
             SAMPLE, SAMPLE[::-1]] + [random_unicode(rng, int(n)) for n in rng.integers(1, 60, size=20)]
    for text in texts:
        for tok in (tokenizer, whole):
            ids = tok.encode(text)
            assert all(isinstance(i, int) and 0 <= i < 256 + len(tok.merges) for i in ids)
            assert tok.decode(ids) == text
            assert tok.decode(np.asarray(ids, dtype=np.int64)) == text
    assert tokenizer.encode("") == [] and tokenizer.decode([]) == ""
    assert len(tokenizer.encode(SAMPLE)) < 0.7 * len(SAMPLE.encode("utf-8"))      # the merges compress it


def test_part_of_a_character_decodes_to_the_replacement_character():
    tokenizer = BPETokenizer.train("plain", 260, pad=None)
    euro = list("€".encode())
    assert tokenizer.decode(euro[:2]) == "\ufffd" and tokenizer.decode(euro) == "€"
    assert tokenizer.tokens(euro[:1]) == ["\\xe2"] and tokenizer.tokens([ord("a")]) == ["a"]


def test_the_gpt2_split_keeps_words_with_their_space():
    assert re.findall(GPT2_SPLIT, "Hello world's 123 café!! a   b\n") == [
        "Hello", " world", "'s", " 123", " café", "!!", " a", "  ", " b", "\n"]
    assert "".join(re.findall(GPT2_SPLIT, SAMPLE)) == SAMPLE                 # every character in some chunk


def test_merges_never_cross_the_pre_tokenization_boundaries():
    rng = np.random.default_rng(3)
    text = SAMPLE + random_text(rng, 400)
    tokenizer = BPETokenizer.train(text, 256 + 80, pad=None)
    cuts, at = {0}, 0
    for chunk in re.findall(GPT2_SPLIT, text):
        at += len(chunk.encode("utf-8"))
        cuts.add(at)
    token_cuts = set(np.cumsum([0] + [len(tokenizer.token_bytes(i)) for i in tokenizer.encode(text)]).tolist())
    assert cuts <= token_cuts
    # a chunk holds a space only at its start; with no pre-tokenization, tokens span words
    def spans_words(tok):
        return [t for t in tok.tokens(range(256, 256 + len(tok.merges))) if re.search(r"\S ", t)]

    assert "ab ab ab" in spans_words(BPETokenizer.train("ab ab ab ab", 260, pad=None, pre_tokenize=None))
    assert spans_words(BPETokenizer.train("ab ab ab ab", 260, pad=None)) == []


def test_vocab_size_is_respected_and_training_is_deterministic():
    for size in (256 + 3, 300, 350):
        tokenizer = BPETokenizer.train(SAMPLE, size, bos=END, eos=END)
        assert len(tokenizer) == size and len(tokenizer.merges) == size - 258
    tiny = BPETokenizer.train("abab", 1000, pad=None)
    assert len(tiny) == 258                   # ab, then (ab, ab): no pair is left to merge
    texts = [SAMPLE, "another text", "and a third"]
    first = BPETokenizer.train(texts, 320)
    assert BPETokenizer.train(texts, 320) == first
    assert BPETokenizer.train(texts[::-1], 320).merges == first.merges       # counts do not depend on order
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 258 \(256 bytes and 2 special tokens\)"):
        BPETokenizer.train(SAMPLE, 257, bos=END, eos="<eos>", pad=None)


def test_special_tokens_take_the_ids_after_the_merges():
    tokenizer = BPETokenizer.train(SAMPLE, 300, special_tokens=["<sep>"], bos=END, eos=END)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (297, 298, 298, None)
    assert tokenizer.special_tokens == ["<pad>", END, "<sep>"] and len(tokenizer) == 300
    assert tokenizer.special_id("<sep>") == 299
    ids = tokenizer.encode("fox", add_bos=True, add_eos=True)
    assert ids[0] == ids[-1] == 298 and tokenizer.decode(ids) == "fox"
    assert tokenizer.decode(ids, skip_specials=False) == f"{END}fox{END}"
    marked = f"a<sep>b{END}"
    assert tokenizer.decode(tokenizer.encode(marked)) == marked            # plain text by default
    assert 299 not in tokenizer.encode(marked)
    read = tokenizer.encode(marked, specials=True)
    assert read == [ord("a"), 299, ord("b"), 298] and tokenizer.decode(read, skip_specials=False) == marked
    assert tokenizer.encode_batch(["a", "fox"], add_eos=True) == [[ord("a"), 298], tokenizer.encode("fox") + [298]]
    assert tokenizer.tokens([298]) == [END]
    with pytest.raises(ValueError, match="add_bos=True but the tokenizer has no bos token"):
        BPETokenizer.train("ab", 257).encode("a", add_bos=True)
    with pytest.raises(ValueError, match=r"BPETokenizer.decode: id 300 outside \[0, 300\)"):
        tokenizer.decode([1, 300])
    with pytest.raises(TypeError, match="special tokens must be non-empty strings"):
        BPETokenizer(special_tokens=[""])


def test_save_load_and_config_round_trips(tmp_path):
    tokenizer = BPETokenizer.train([SAMPLE, "héllo wörld"], 320, special_tokens=["<sep>"], bos="<s>", eos="</s>")
    tokenizer.save(tmp_path / "bpe.json")
    again = BPETokenizer.load(tmp_path / "bpe.json")
    assert again == tokenizer and again.encode(SAMPLE) == tokenizer.encode(SAMPLE)
    assert (again.pad_id, again.bos_id, again.eos_id) == (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    config = json.loads(json.dumps(tokenizer.get_config()))          # as a model bundle stores it
    assert BPETokenizer.from_config(config) == tokenizer == tokenizer_from_config(config)
    vocab = Vocabulary.from_texts(["abc"])
    assert tokenizer_from_config(vocab.get_config()) == vocab
    whole = BPETokenizer.train(SAMPLE, 270, pre_tokenize=None)
    assert BPETokenizer.from_config(whole.get_config()).pre_tokenize is None
    assert "BPETokenizer(320 tokens: 256 bytes, 60 merges" in repr(tokenizer)


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    tokenizer = BPETokenizer.train(SAMPLE, 300)
    path = tmp_path / "bpe.json"
    tokenizer.save(path)
    text = path.read_text(encoding="utf-8")
    cases = {
        "truncated": (text[: len(text) // 2], "is not a tokenizer file"),
        "binary": (None, "is not a tokenizer file"),
        "version": (text.replace('"version": 1', '"version": 99'), r"expected a config of kind 'bpe', version 1"),
        "vocabulary": (json.dumps(Vocabulary.from_texts(["abc"]).get_config()), "kind=None"),
        "merge": (json.dumps({**tokenizer.get_config(), "merges": [[97, 98], [97, 400]]}),
                  r"merge 1 must be a pair of ids of earlier tokens, in \[0, 257\), got \[97, 400\]"),
        "repeated": (json.dumps({**tokenizer.get_config(), "merges": [[97, 98], [97, 98]]}), "repeat a pair"),
        "keys": (json.dumps({**tokenizer.get_config(), "extra": 1}), "expected the keys"),
        "pattern": (json.dumps({**tokenizer.get_config(), "pre_tokenize": "(unclosed"}), "regular expression"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.json"
        if content is None:
            bad.write_bytes(b"\xff\xfe\x00garbage")
        else:
            bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            BPETokenizer.load(bad)
        assert str(bad) in str(pytest.raises(ValueError, BPETokenizer.load, bad).value)
    assert BPETokenizer.load(path) == tokenizer          # the file saved atomically is whole


def test_a_language_model_trains_samples_and_searches_on_bpe_ids():
    lamina.manual_seed(0)
    tokenizer = BPETokenizer.train(NAMES, 300, bos=END, eos=END)
    x, y = shifted_pairs(tokenizer.encode_batch(NAMES, add_bos=True, add_eos=True), pad=tokenizer.pad_id)
    assert (x[:, 0] == tokenizer.bos_id).all() and x.shape[1] < max(len(n) for n in NAMES) + 1  # subwords: shorter
    model = models.rnn_language_model(len(tokenizer), embed_dim=8, hidden=24)
    optimizer = optim.Adam(model, lr=0.02)
    costs = []
    for _ in range(15):
        cost = F.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True, ignore_index=-100)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        costs.append(cost.item())
    assert costs[0] == pytest.approx(math.log(len(tokenizer)), rel=0.05) and costs[-1] < 0.8 * costs[0]
    drawn = [sample_text(model, tokenizer, prompt="ma", max_length=10, seed=s) for s in range(3)]
    assert all(text.startswith("ma") and END not in text for text in drawn)
    best = beam_search_text(model, tokenizer, prompt="ma", beam_width=3, max_length=10)
    assert best.startswith("ma")
    assert sample_text(model, tokenizer, max_length=5, seed=0) == sample_text(model, tokenizer, max_length=5, seed=0)


@pytest.mark.skipif(not SHARED_TEXT.is_dir(), reason="no shared text corpora beside the project")
def test_the_cli_trains_samples_and_evaluates_a_bpe_language_model(tmp_path, capsys):
    # in-process through lamina.cli.main (tests/test_cli.py runs train-text in a subprocess)
    code, trained, err = exit_of(capsys, "train-text", "--tokenizer", "bpe", "--vocab-size", "300", "--data-dir",
                                 str(SHARED_TEXT), "--offline", "--limit", "500", "--epochs", "1", "--hidden", "16",
                                 "--out", str(tmp_path), "--verbose", "0", "--samples", "1")
    assert code == 0, err
    assert "300 tokens in the vocabulary" in trained
    per_token = float(trained.split("test cost ")[1].split()[0])
    per_character = float(trained.split("nats per token (perplexity")[1].split("), ")[1].split()[0])
    assert 0 < per_character < per_token                   # a subword stands for more than one character
    bundle = lamina.load_bundle(tmp_path / "model.safetensors")
    tokenizer = tokenizer_from_config(bundle.info["vocabulary"])
    assert isinstance(tokenizer, BPETokenizer) and len(tokenizer) == 300 and bundle.info["tokenizer"] == "bpe"
    assert bundle.info["test_loss_per_character"] == pytest.approx(per_character, abs=1e-4)
    code, evaluated, err = exit_of(capsys, "evaluate", str(tmp_path / "model.safetensors"), "--data-dir",
                                   str(SHARED_TEXT), "--offline")
    assert code == 0, err
    assert f"names test: cost {per_token:.4f} nats per token" in evaluated
    assert f"{per_character:.4f} nats per character" in evaluated
    code, drawn, err = exit_of(capsys, "sample", str(tmp_path / "model.safetensors"), "--count", "1", "--prompt", "ma",
                               "--max-length", "5")
    assert code == 0 and drawn.startswith("ma"), err   # any byte may follow
