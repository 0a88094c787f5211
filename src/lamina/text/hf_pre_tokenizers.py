"""Pre-tokenizers of ``tokenizer.json`` files: a normalized text -> the words the model encodes one by one.

Splitting by a pattern (Split, Punctuation, Digits, Metaspace) finds the matches and then applies
a *behaviour* to the alternating runs of matched and unmatched text:

* Removed: matches dropped; Isolated: each match a word of its own;
* MergedWithPrevious / MergedWithNext: a match glued to the unmatched run before / after it
  (a match that follows another match stays alone);
* Contiguous: adjacent matches joined into one word.

``invert`` swaps matched and unmatched before the behaviour. Empty words are dropped.
ByteLevel cuts with GPT-2's pattern (:func:`~lamina.text.gpt2_pattern`) and spells every UTF-8
byte as a printable character (:func:`~lamina.text.bytes_to_unicode`).

Pre-tokenizers cut an :class:`~lamina.text.hf_alignment.AlignedString` into
:class:`~lamina.text.hf_alignment.Words` (``cut``: the ranges of the words in it, and the spelling
the model reads them in), so each word keeps the original span of every character;
``split_aligned`` gives the words as aligned strings, ``split``/``pre_tokenize`` as plain texts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from lamina.text.gpt2_tokenizer import bytes_to_unicode, gpt2_pattern
from lamina.text.hf_alignment import AlignedString, Span, Words
from lamina.text.hf_normalizers import component_class, pattern_from_json, require
from lamina.text.hf_patterns import compile_pattern
from lamina.text.wordpiece import _is_punctuation

__all__ = ["PreTokenizer", "pre_tokenizer_from_json", "run_ranges", "split_runs"]

BEHAVIOURS = {"Removed": "removed", "Isolated": "isolated", "MergedWithPrevious": "merged_with_previous",
              "MergedWithNext": "merged_with_next", "Contiguous": "contiguous"}
_WHITESPACE_WORDS = re.compile(r"\w+|[^\w\s]+")
_NON_SPACE = re.compile(r"\S+")
_SPACE = re.compile(" ")


def run_ranges(length: int, spans: Iterable[tuple[int, int]], behaviour: str,
               invert: bool = False) -> list[tuple[int, int]]:
    """The ranges ``[start, end)`` of the words a text of ``length`` characters is cut into at the
    match ``spans`` (sorted, disjoint) under ``behaviour`` (module docstring)."""
    runs: list[tuple[int, int, bool]] = []
    end = 0
    for start, stop in spans:
        if start > end:
            runs.append((end, start, invert))
        if stop > start:
            runs.append((start, stop, not invert))
        end = stop
    if end < length:
        runs.append((end, length, invert))
    words: list[tuple[int, int]] = []
    if behaviour == "removed":
        words = [(a, b) for a, b, matched in runs if not matched]
    elif behaviour == "isolated":
        words = [(a, b) for a, b, _ in runs]
    elif behaviour == "contiguous":
        previous = None
        for a, b, matched in runs:
            if words and matched and previous:
                words[-1] = (words[-1][0], b)
            else:
                words.append((a, b))
            previous = matched
    elif behaviour == "merged_with_previous":
        previous = False
        for a, b, matched in runs:
            if matched and not previous and words:
                words[-1] = (words[-1][0], b)
            else:
                words.append((a, b))
            previous = matched
    elif behaviour == "merged_with_next":
        following = False
        for a, b, matched in reversed(runs):
            if matched and not following and words:
                words[-1] = (a, words[-1][1])
            else:
                words.append((a, b))
            following = matched
        words.reverse()
    else:
        raise ValueError(f"split_runs: unknown behaviour {behaviour!r}; expected one of {list(BEHAVIOURS.values())}")
    return [(a, b) for a, b in words if b > a]


def split_runs(text: str, spans: Iterable[tuple[int, int]], behaviour: str, invert: bool = False) -> list[str]:
    """``text`` cut at the match ``spans`` (sorted, disjoint) under ``behaviour`` (module docstring)."""
    return [text[a:b] for a, b in run_ranges(len(text), spans, behaviour, invert)]


def _char_spans(text: str, predicate: Callable[[str], bool]) -> list[tuple[int, int]]:
    return [(i, i + 1) for i, char in enumerate(text) if predicate(char)]


def _behaviour(data: dict, path: str, default: str) -> str:
    name = data.get("behavior", default)
    if name not in BEHAVIOURS:
        raise ValueError(f"tokenizer.json: {path}.behavior is {name!r}; expected one of {list(BEHAVIOURS)}")
    return BEHAVIOURS[name]


def _behaviour_name(behaviour: str) -> str:
    return next(name for name, value in BEHAVIOURS.items() if value == behaviour)


class PreTokenizer:
    """Base: ``cut(word, at_start) -> Words``; ``at_start``: the word begins the input."""

    type_name = ""

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        raise NotImplementedError

    def pre_tokenize_words(self, words: list[AlignedString], at_start: bool = True) -> list[Words]:
        """Every word of ``words`` cut; only the first can be ``at_start``."""
        return [self.cut(word, at_start and k == 0) for k, word in enumerate(words)]

    def pre_tokenize_aligned(self, words: list[AlignedString], at_start: bool = True) -> list[AlignedString]:
        """Every word of ``words`` split into aligned strings; only the first can be ``at_start``."""
        return [part for cut in self.pre_tokenize_words(words, at_start) for part in cut.aligned()]

    def split_aligned(self, word: AlignedString, at_start: bool) -> list[AlignedString]:
        return self.pre_tokenize_aligned([word], at_start)

    def split(self, word: str, at_start: bool) -> list[str]:
        return [part.text for part in self.split_aligned(AlignedString.original(word), at_start)]

    def pre_tokenize(self, words: list[str], at_start: bool = True) -> list[str]:
        """``pre_tokenize_aligned`` on plain texts."""
        aligned = [AlignedString.original(word) for word in words]
        return [part.text for part in self.pre_tokenize_aligned(aligned, at_start)]

    def to_json(self) -> dict:
        return {"type": self.type_name}

    @classmethod
    def from_json(cls, data: dict, path: str) -> PreTokenizer:
        return cls()


class ByteLevel(PreTokenizer):
    type_name = "ByteLevel"

    def __init__(self, add_prefix_space: bool = True, use_regex: bool = True, trim_offsets: bool = True):
        self.add_prefix_space, self.use_regex, self.trim_offsets = add_prefix_space, use_regex, trim_offsets
        self._spelling = {b: char for b, char in bytes_to_unicode().items()}     # a str.translate table

    def spelled(self, text: str) -> str:
        """Each UTF-8 byte of ``text`` as its printable character."""
        return text.encode("utf-8").decode("latin-1").translate(self._spelling)

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        if self.add_prefix_space and not word.text.startswith(" "):
            word = word.prepend(" ")
        if not self.use_regex:
            return Words(word, [(0, len(word))] if word.text else [], self.spelled)
        # every alternative of the pattern takes at least one character: no empty words
        return Words(word, [m.span() for m in gpt2_pattern().finditer(word.text)], self.spelled)

    def to_json(self) -> dict:
        return {"type": self.type_name, "add_prefix_space": self.add_prefix_space,
                "trim_offsets": self.trim_offsets, "use_regex": self.use_regex}

    @classmethod
    def from_json(cls, data: dict, path: str) -> ByteLevel:
        return cls(bool(data.get("add_prefix_space", True)), bool(data.get("use_regex", True)),
                   bool(data.get("trim_offsets", True)))


class Whitespace(PreTokenizer):
    """Runs of word characters and runs of other non-space characters (\\w+|[^\\w\\s]+)."""

    type_name = "Whitespace"

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        return Words(word, [m.span() for m in _WHITESPACE_WORDS.finditer(word.text)])


class WhitespaceSplit(PreTokenizer):
    type_name = "WhitespaceSplit"

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        return Words(word, [m.span() for m in _NON_SPACE.finditer(word.text)])


class BertPreTokenizer(PreTokenizer):
    """Split at whitespace (removed), then every punctuation character a word of its own."""

    type_name = "BertPreTokenizer"

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        ranges: list[Span] = []
        for match in _NON_SPACE.finditer(word.text):
            start, part = match.start(), match.group()
            if part.isalnum():                      # no punctuation character is alphanumeric
                ranges.append(match.span())
                continue
            ranges += [(start + a, start + b)
                       for a, b in run_ranges(len(part), _char_spans(part, _is_punctuation), "isolated")]
        return Words(word, ranges)


class Punctuation(PreTokenizer):
    type_name = "Punctuation"

    def __init__(self, behaviour: str = "isolated"):
        self.behaviour = behaviour

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        return Words(word, run_ranges(len(word), _char_spans(word.text, _is_punctuation), self.behaviour))

    def to_json(self) -> dict:
        return {"type": self.type_name, "behavior": _behaviour_name(self.behaviour)}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Punctuation:
        return cls(_behaviour(data, path, "Isolated"))


class Digits(PreTokenizer):
    """Numeric characters split off: each alone (``individual_digits``) or in runs."""

    type_name = "Digits"

    def __init__(self, individual_digits: bool = False):
        self.individual_digits = individual_digits

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        spans = _char_spans(word.text, lambda c: unicodedata.category(c).startswith("N"))
        return Words(word, run_ranges(len(word), spans, "isolated" if self.individual_digits else "contiguous"))

    def to_json(self) -> dict:
        return {"type": self.type_name, "individual_digits": self.individual_digits}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Digits:
        return cls(bool(data.get("individual_digits", False)))


class Split(PreTokenizer):
    type_name = "Split"

    def __init__(self, kind: str, pattern: str, behaviour: str, invert: bool = False):
        self.kind, self.pattern, self.behaviour, self.invert = kind, pattern, behaviour, invert
        self._compiled = compile_pattern(pattern if kind == "Regex" else re.escape(pattern), kind == "Regex")

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        spans = [match.span() for match in self._compiled.finditer(word.text) if match.end() > match.start()]
        return Words(word, run_ranges(len(word), spans, self.behaviour, self.invert))

    def to_json(self) -> dict:
        return {"type": self.type_name, "pattern": {self.kind: self.pattern},
                "behavior": _behaviour_name(self.behaviour), "invert": self.invert}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Split:
        kind, pattern = pattern_from_json(require(data, "pattern", path), f"{path}.pattern")
        return cls(kind, pattern, _behaviour(data, path, "Isolated"), bool(data.get("invert", False)))


def prepend_scheme(data: dict, path: str) -> str:
    """'always', 'first' or 'never', from ``prepend_scheme`` or the older ``add_prefix_space``."""
    if "prepend_scheme" in data:
        scheme = data["prepend_scheme"]
        if scheme not in ("always", "first", "never"):
            raise ValueError(f"tokenizer.json: {path}.prepend_scheme is {scheme!r}; expected always, first or never")
        return scheme
    return "always" if data.get("add_prefix_space", True) else "never"


class Metaspace(PreTokenizer):
    """Spaces -> ``replacement`` ('▁'), the replacement prepended (always, on the input's first
    word, or never) unless already there, then (``split``) a cut before every replacement."""

    type_name = "Metaspace"

    def __init__(self, replacement: str = "\u2581", scheme: str = "always", split: bool = True):
        self.replacement, self.scheme, self.split_words = replacement, scheme, split

    def cut(self, word: AlignedString, at_start: bool) -> Words:
        if " " in word.text:
            word = word.map_matches(_SPACE, lambda _: self.replacement)
        prepend = self.scheme == "always" or (self.scheme == "first" and at_start)
        if prepend and not word.text.startswith(self.replacement):
            word = word.prepend(self.replacement)
        if not self.split_words:
            return Words(word, [(0, len(word))] if word.text else [])
        spans = [(m.start(), m.end()) for m in re.finditer(re.escape(self.replacement), word.text)]
        return Words(word, run_ranges(len(word), spans, "merged_with_next"))

    def to_json(self) -> dict:
        return {"type": self.type_name, "replacement": self.replacement, "prepend_scheme": self.scheme,
                "split": self.split_words}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Metaspace:
        replacement = data.get("replacement", data.get("str_rep", "\u2581"))
        return cls(replacement, prepend_scheme(data, path), bool(data.get("split", True)))


class PreTokenizerSequence(PreTokenizer):
    type_name = "Sequence"

    def __init__(self, pre_tokenizers: list[PreTokenizer]):
        self.pre_tokenizers = pre_tokenizers

    def pre_tokenize_words(self, words: list[AlignedString], at_start: bool = True) -> list[Words]:
        """Each pre-tokenizer on the words of the one before; the last one's cuts."""
        if not self.pre_tokenizers:
            return [Words(word, [(0, len(word))]) for word in words]
        for pre_tokenizer in self.pre_tokenizers[:-1]:
            words = pre_tokenizer.pre_tokenize_aligned(words, at_start)
        return self.pre_tokenizers[-1].pre_tokenize_words(words, at_start)

    def to_json(self) -> dict:
        return {"type": self.type_name, "pretokenizers": [p.to_json() for p in self.pre_tokenizers]}

    @classmethod
    def from_json(cls, data: dict, path: str) -> PreTokenizerSequence:
        items = require(data, "pretokenizers", path)
        return cls([pre_tokenizer_from_json(item, f"{path}.pretokenizers[{k}]") for k, item in enumerate(items)])


PRE_TOKENIZERS = {c.type_name: c for c in (ByteLevel, Whitespace, WhitespaceSplit, BertPreTokenizer, Punctuation,
                                           Digits, Split, Metaspace, PreTokenizerSequence)}


def pre_tokenizer_from_json(data: Any, path: str = "pre_tokenizer") -> PreTokenizer | None:
    """The pre-tokenizer of a tokenizer.json ``pre_tokenizer`` entry (None for null)."""
    if data is None:
        return None
    return component_class(PRE_TOKENIZERS, data, path, "pre_tokenizer").from_json(data, path)
