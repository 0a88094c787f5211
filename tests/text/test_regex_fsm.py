"""The regex engine (parser, Thompson NFA, subset-construction DFA) against Python's
``re.fullmatch`` (ASCII meanings) on random strings, and its syntax errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lamina.text import RegexSyntaxError, compile_regex, escape_regex

PATTERNS = [
    "a", "ab", "a|b", "a*", "a+", "a?", "ab*c", "(ab)+", "(a|b)*c", "a{2}", "a{2,}", "a{1,3}", "a{,2}",
    "(?:ab|c){2,3}", "[abc]+", "[a-c0-2]*", "[^a]b", "[^a-c]*", ".", ".*x", r"\d+", r"\d{2,4}", r"\w+",
    r"\s?a", r"\D\W\S", r"[\d_]+", r"[\w.-]+@x", r"-?(0|[1-9]\d*)(\.\d+)?", r"\.", r"a\|b", r"\(a\)",
    "(a|)b", "()a", "(?P<name>ab)?c", "a*?b", "[]a]", "[a-]+", "x{", "a{}", r"[^\n]*", r"\x41|\u0062",
    "(a|b|c)(d|e)?", "(ab|a)(bc|c)", "((a|b)(c|d))*", "[.]x", r"\t\n",
]
ALPHABET = "abcdex_-.@0129 \n\tABZ{}()|"


def _random_strings(rng: np.random.Generator, pattern: str, count: int) -> list[str]:
    literal = [c for c in pattern if c != "\\"]
    strings = []
    for _ in range(count):
        length = int(rng.integers(0, 7))
        pool = literal if rng.random() < 0.7 else list(ALPHABET)
        strings.append("".join(pool[int(rng.integers(len(pool)))] for _ in range(length)))
    return strings


def _walks(rng: np.random.Generator, dfa, count: int) -> list[str]:
    """Strings spelled by random walks on the DFA (matches, if the DFA is right) and their
    one-character edits (mostly not)."""
    strings = []
    for _ in range(count):
        state, chars = dfa.start, []
        while True:
            moves = [i for i, target in enumerate(dfa.transitions[state]) if target >= 0]
            if state in dfa.accepting and (not moves or len(chars) >= 12 or rng.random() < 0.3):
                break
            i = moves[int(rng.integers(len(moves)))]
            high = dfa.boundaries[i + 1] - 1 if i + 1 < len(dfa.boundaries) else 0x10FFFF
            chars.append(chr(int(rng.integers(dfa.boundaries[i], min(high, dfa.boundaries[i] + 40) + 1))))
            state = dfa.transitions[state][i]
        text = "".join(chars)
        strings.append(text)
        at = int(rng.integers(len(text) + 1))
        strings.append(text[:at] + ALPHABET[int(rng.integers(len(ALPHABET)))] + text[at + 1:])
    return strings


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fullmatch_agrees_with_python(pattern):
    dfa = compile_regex(pattern)
    rng = np.random.default_rng(sum(map(ord, pattern)))
    strings = _random_strings(rng, pattern, 200) + _walks(rng, dfa, 50)
    expected = [re.fullmatch(pattern, s, re.ASCII) is not None for s in strings]
    assert [dfa.fullmatch(s) for s in strings] == expected
    assert any(expected), f"no random string matched {pattern!r}; the test would be weak"


def test_enough_patterns():
    assert len(PATTERNS) >= 30


@pytest.mark.parametrize("text", ["a.b", "1+1=2", "(x|y)*", "[^]\\{3}", "tab\there", "$^", "é?"])
def test_escape_matches_the_literal_only(text):
    dfa = compile_regex(escape_regex(text))
    assert dfa.fullmatch(text)
    assert not dfa.fullmatch(text + "a") and not dfa.fullmatch(text[:-1])


def test_dead_states_are_pruned():
    dfa = compile_regex("ab|ac")
    state = dfa.walk(dfa.start, "a")
    assert state >= 0 and dfa.step(state, "d") == -1 and dfa.walk(dfa.start, "x") == -1
    assert compile_regex("[^\\x00-\\U0010ffff]".replace("\\U0010ffff", "\U0010ffff")).start == -1


@pytest.mark.parametrize("pattern, states", [
    ("(a|b)*", 1), ("a*a*a*", 1), ("a|ab|abc", 4), ("(ab)+", 3), ("(a|b)*abb", 4), ("[ab]*a(b)b", 4),
    (r"\d{2}|\d{2}", 3), ("x{0,3}", 4),
])
def test_dfa_is_minimal(pattern, states):
    """The sizes of the minimal automata (dead state left out), counted by hand."""
    assert compile_regex(pattern).num_states == states


@pytest.mark.parametrize("pattern, construct, position", [
    ("ab^", "anchor '^'", 2), ("a$", "anchor '$'", 1), (r"a\bc", "word boundary", 1),
    (r"(a)\1", "backreference", 3), ("(?=a)b", "lookahead", 0), ("x(?<!a)b", "lookbehind", 1),
    ("(?i)a", "inline flag", 0), ("a**", "multiple repeat", 2), ("*a", "nothing to repeat", 0),
    ("(ab", "missing ')'", 0), ("ab)", "unbalanced parenthesis", 2), ("[ab", "unterminated character class", 0),
    ("[z-a]", "bad character range", 1), (r"\q", "bad escape", 0), (r"\x4", "bad escape \\x", 0),
    ("a{3,2}", "min repeat greater", 1),
])
def test_unsupported_syntax_names_the_construct_and_position(pattern, construct, position):
    with pytest.raises(RegexSyntaxError, match=re.escape(construct)) as caught:
        compile_regex(pattern)
    assert caught.value.position == position
    assert f"position {position}" in str(caught.value)
