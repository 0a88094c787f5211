"""Constrained generation: the token index against brute force, and generation with random
scores (a random "model" and a tiny GPT-2) whose every output matches the constraint."""

from __future__ import annotations

import re

import numpy as np
import pytest

import lamina
from helpers import readme_example, run_readme_section
from lamina import models, nn
from lamina.text import (
    ENDOFTEXT,
    ChoiceLogitsProcessor,
    GPT2Tokenizer,
    PrefixAllowedTokensLogitsProcessor,
    RegexLogitsProcessor,
    TokenIndex,
    bytes_to_unicode,
    compile_regex,
    generate_ids,
    vocabulary_strings,
)

EOS = 0
VOCAB = ["<eos>", "a", "b", "c", "0", "1", "2", "9", "-", ".", " ", "ab", "ba", "abc", "12", "0.", "-1", ".5",
         "ca", "xyz", "a b", "cc", "90", "yes", "no", "maybe", "ye", "s"]
PATTERNS = [r"(ab|c)+", r"-?\d+(\.\d+)?", r"[abc]{2,5}", r"a*b", r"(a|b)( c)?", r"c*(ab)?9{1,2}",
            r"[ab ]*c", r"(-1|\.5|12)+"]


class RandomScores(nn.Module):
    """A "language model" whose scores are random: ids (B, T) -> (B, T, V)."""

    def __init__(self, vocab_size: int, seed: int):
        super().__init__()
        self.vocab_size, self.rng = vocab_size, np.random.default_rng(seed)

    def forward(self, ids):
        return self.rng.normal(scale=3.0, size=(*ids.shape, self.vocab_size))


def _generated(sequences: np.ndarray, prompt_length: int) -> list[tuple[list[int], bool]]:
    """Each row's new tokens up to its end token, and whether it ended."""
    out = []
    for row in sequences[:, prompt_length:].tolist():
        ended = EOS in row
        out.append((row[:row.index(EOS)] if ended else row, ended))
    return out


def _brute_finishing(dfa, vocabulary) -> set[int]:
    """The states reachable from the start by tokens from which tokens reach an accepting
    state: a search forwards, then a fixed-point iteration backwards."""
    seen, stack = {dfa.start}, [dfa.start]
    while stack:
        state = stack.pop()
        for text in vocabulary:
            end = dfa.walk(state, text) if text else -1
            if end >= 0 and end not in seen:
                seen.add(end)
                stack.append(end)
    finishing = seen & set(dfa.accepting)
    while True:
        more = {s for s in seen for text in vocabulary if text and dfa.walk(s, text) in finishing}
        if more <= finishing:
            return finishing
        finishing |= more


@pytest.mark.parametrize("pattern", PATTERNS)
def test_token_index_agrees_with_brute_force(pattern):
    dfa = compile_regex(pattern)
    vocabulary = [""] + VOCAB[1:]
    index = TokenIndex(dfa, vocabulary)
    finishing = _brute_finishing(dfa, vocabulary)
    assert set(index.states) == finishing
    for state in index.states:
        expected = {}
        for token_id, text in enumerate(vocabulary):
            end = state
            for char in text:                 # run the DFA over the token's characters one by one
                end = dfa.step(end, char)
                if end < 0:
                    break
            if text and end in finishing:
                expected[token_id] = end
        assert index.allowed[state] == expected
        np.testing.assert_array_equal(index.allowed_tokens(state), sorted(expected))


def test_token_index_prunes_tokens_that_cannot_finish():
    index = TokenIndex(compile_regex("ab|cd"), ["a", "b", "c"])
    start = index.dfa.start
    assert index.allowed[start] == {0: index.dfa.walk(start, "a")}
    with pytest.raises(ValueError, match="dead end"):
        TokenIndex(compile_regex("xy"), ["x", "z"])
    with pytest.raises(ValueError, match="matches no string"):
        TokenIndex(compile_regex("[^\x00-\U0010ffff]"), ["x"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_random_generation_always_matches(pattern):
    processor = RegexLogitsProcessor(pattern, VOCAB, eos_token_id=EOS)
    ended_rows = 0
    for seed in range(6):
        model = RandomScores(len(VOCAB), seed)
        prompt = np.array([[3, 4], [5, 6], [1, 1]])
        out = generate_ids(model, prompt, max_new_tokens=25, do_sample=True, seed=seed, eos_token_id=EOS,
                           logits_processor=[processor])
        for tokens, ended in _generated(out, 2):
            text = "".join(VOCAB[t] for t in tokens)
            state = processor.index.dfa.walk(processor.index.dfa.start, text)
            assert state >= 0, f"{text!r} left {pattern!r}"
            if ended:                        # the end token only once the text fully matches
                ended_rows += 1
                assert re.fullmatch(pattern, text, re.ASCII), (pattern, text)
    assert ended_rows >= 12


def test_end_token_only_in_accepting_states():
    processor = RegexLogitsProcessor(r"ab(c|ba)", VOCAB, eos_token_id=[EOS, 19], prompt_length=1)
    rng = np.random.default_rng(0)
    for _ in range(30):
        ids = np.array([[7]])
        while True:
            scores = processor(ids, rng.normal(size=(1, len(VOCAB))))
            text = "".join(VOCAB[t] for t in ids[0, 1:])
            finite = np.isfinite(scores[0])
            assert finite[[EOS, 19]].all() == bool(re.fullmatch(r"ab(c|ba)", text))
            assert finite.any()
            token = int(scores[0].argmax())
            if token in (EOS, 19):
                break
            ids = np.concatenate([ids, [[token]]], axis=1)
        assert text in ("abc", "abba")


def test_choices_give_only_the_given_strings():
    choices = ["yes", "no", "maybe", "a b"]
    processor = ChoiceLogitsProcessor(choices, VOCAB, eos_token_id=EOS)
    seen = set()
    for seed in range(12):
        out = generate_ids(RandomScores(len(VOCAB), seed), np.array([[1], [2]]), max_new_tokens=10, do_sample=True,
                           seed=seed, eos_token_id=EOS, logits_processor=[processor])
        for tokens, ended in _generated(out, 1):
            assert ended
            seen.add("".join(VOCAB[t] for t in tokens))
    assert seen <= set(choices) and len(seen) >= 3
    with pytest.raises(ValueError, match="non-empty list of strings"):
        ChoiceLogitsProcessor([], VOCAB, EOS)


def test_padded_rows_decoded_alone_keep_the_constraint():
    pattern = r"(ab|c)+ ?9"
    processor = RegexLogitsProcessor(pattern, VOCAB, eos_token_id=EOS)
    prompt = np.array([[8, 8, 3, 4], [8, 1, 2, 5], [1, 2, 3, 4]])
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    for seed in range(4):
        out = generate_ids(RandomScores(len(VOCAB), seed), prompt, attention_mask=mask, max_new_tokens=30,
                           do_sample=True, seed=seed, eos_token_id=EOS, logits_processor=[processor])
        for tokens, ended in _generated(out, 4):
            text = "".join(VOCAB[t] for t in tokens)
            assert processor.index.dfa.walk(processor.index.dfa.start, text) >= 0
            assert not ended or re.fullmatch(pattern, text)


def test_tiny_gpt2_generates_matching_text():
    vocab_size = len(VOCAB)
    processor = RegexLogitsProcessor(r"-?\d+(\.\d+)?", VOCAB, eos_token_id=EOS)
    for seed in range(3):
        lamina.manual_seed(seed)
        model = models.GPT2(vocab_size=vocab_size, n_positions=48, n_embd=16, n_layer=1, n_head=2, embd_pdrop=0.0,
                            resid_pdrop=0.0, attn_pdrop=0.0)
        prompt = np.array([[1, 2, 3], [3, 2, 1]])
        out = generate_ids(model, prompt, max_new_tokens=20, do_sample=True, seed=seed, eos_token_id=EOS,
                           logits_processor=[processor])
        for tokens, ended in _generated(out, 3):
            text = "".join(VOCAB[t] for t in tokens)
            assert processor.index.dfa.walk(processor.index.dfa.start, text) >= 0
            if ended:
                assert re.fullmatch(r"-?\d+(\.\d+)?", text)
        beams = generate_ids(model, prompt, max_new_tokens=20, eos_token_id=EOS, num_beams=2,
                             logits_processor=[processor])
        for tokens, _ in _generated(beams, 3):
            assert processor.index.dfa.walk(processor.index.dfa.start, "".join(VOCAB[t] for t in tokens)) >= 0


def test_off_pattern_tokens_raise():
    processor = RegexLogitsProcessor("ab", VOCAB, eos_token_id=EOS, prompt_length=1)
    with pytest.raises(ValueError, match=r"leave the pattern 'ab' at token 3"):
        processor(np.array([[5, 1, 3]]), np.zeros((1, len(VOCAB))))
    with pytest.raises(ValueError, match="dead end"):
        RegexLogitsProcessor("q+", VOCAB, eos_token_id=EOS)


def test_vocabulary_from_tokenizer_and_mapping():
    class Tokenizer:
        def __len__(self):
            return 3

        def decode(self, ids):
            return ["", "x", "yz"][ids[0]]

    assert vocabulary_strings(Tokenizer()) == ["", "x", "yz"]
    assert vocabulary_strings({2: "b", 0: "a"}) == ["a", "", "b"]
    with pytest.raises(TypeError, match="vocabulary"):
        vocabulary_strings(3)


def test_gpt2_tokenizer_vocabulary():
    """A byte-level tokenizer: all 256 bytes, a few merges, and '<|endoftext|>' as the end token."""
    byte_chars = list(bytes_to_unicode().values())
    merges = [("a", "b"), ("Ġ", "ab"), ("1", "2"), ("Ġ", "1")]
    vocab = {token: i for i, token in enumerate(byte_chars + ["".join(pair) for pair in merges])}
    tokenizer = GPT2Tokenizer(vocab, merges)
    eos = tokenizer.token_to_id(ENDOFTEXT)
    strings = vocabulary_strings(tokenizer)
    assert strings[vocab["Ġab"]] == " ab" and strings[eos] == ""
    pattern = r"(ab|12)( ab| 12)*"
    processor = RegexLogitsProcessor(pattern, tokenizer, eos_token_id=eos)
    prompt = np.array(tokenizer.encode("12 ab"))[None]
    ended = 0
    for seed in range(4):
        out = generate_ids(RandomScores(len(tokenizer), seed), prompt, max_new_tokens=12, do_sample=True, seed=seed,
                           eos_token_id=eos, logits_processor=[processor])
        new = out[0, prompt.shape[1]:].tolist()
        text = tokenizer.decode(new)
        assert processor.index.dfa.walk(processor.index.dfa.start, text) >= 0
        assert eos not in new or re.fullmatch(pattern, text)
        ended += eos in new
    assert ended >= 2


def test_prefix_allowed_tokens_function():
    def allowed(batch_id, ids):
        return [batch_id + 1, int(ids[-1]) + 2]

    scores = np.random.default_rng(0).normal(size=(4, 9))
    ids = np.array([[0, 1], [0, 2], [0, 3], [0, 4]])
    out = PrefixAllowedTokensLogitsProcessor(allowed, num_beams=2)(ids, scores)
    for row in range(4):
        keep = {row // 2 + 1, ids[row, -1] + 2}
        for token in range(9):
            assert out[row, token] == (scores[row, token] if token in keep else -np.inf)
    with pytest.raises(ValueError, match="dead end"):
        PrefixAllowedTokensLogitsProcessor(lambda b, ids: [])(ids, scores)


def test_readme_example_prints_what_its_comments_say():
    printed, _ = run_readme_section("Constrained generation")
    said = [line.split("# ", 1)[1].strip() for line in readme_example("Constrained generation").splitlines()
            if line.startswith("print(") and "# " in line]
    assert printed.splitlines() == said


def test_generate_takes_prefix_allowed_tokens_fn():
    """Hugging Face's option: rows of prompt 0 may only write token 1 or 2, rows of prompt 1 only 3."""
    def allowed(batch_id, ids):
        return [1, 2] if batch_id == 0 else [3]

    prompt = np.array([[5, 6], [7, 8]])
    for options in ({"do_sample": True, "seed": 0, "num_return_sequences": 1}, {"num_beams": 3}):
        out = generate_ids(RandomScores(len(VOCAB), 1), prompt, max_new_tokens=6, prefix_allowed_tokens_fn=allowed,
                           **options)
        assert set(out[0, 2:].tolist()) <= {1, 2} and set(out[1, 2:].tolist()) == {3}
