"""Text that remembers where each of its characters came from, so that tokens can be mapped back
to character spans (offsets) of the input after normalization and pre-tokenization.

An :class:`AlignedString` is a text and, for each of its characters, the span ``(start, end)`` of
the original input it stands for. Every normalization step rebuilds it
(:meth:`AlignedString.with_replacements`):

* a character replaced by several (lower-casing 'İ' -> 'i̇', a CJK ideograph -> ' 中 ', a byte
  spelled as GPT-2 characters) gives each new character the span of the old one;
* a run of characters replaced by one text (a Replace match, a Unicode composition 'e' + U+0301 -> 'é')
  gives every new character the union of the run's spans;
* removed characters take their spans with them; prepended characters share the first character's span.

Every step keeps the spans in order (neither starts nor ends ever decrease along the text), so the
span of a token, the union of its characters' spans, runs from its first character's start to its
last character's end.

Most texts reach the model with every character where it was, so the spans are kept in one of two
forms: the *identity* form, where character ``i`` stands for the input character
``offset + max(i - lead, 0)`` (the ``lead`` characters in front are prepended ones), which slicing,
one-for-one replacements and prepending keep; and a list of spans, written out only when a step
changes lengths. :class:`Words` are the words a pre-tokenizer cuts from one aligned text, as ranges of it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = ["AlignedString", "Span", "Words"]

_NON_ASCII_RUNS = re.compile(r"[^\x00-\x7f]+")

Span = tuple[int, int]


class AlignedString:
    """``text`` with ``spans[i]``, the original span of ``text[i]`` (module docstring: its two forms)."""

    __slots__ = ("_lead", "_offset", "_spans", "text")

    def __init__(self, text: str, spans: list[Span]):
        if len(spans) != len(text):
            raise ValueError(f"AlignedString: {len(text)} characters but {len(spans)} spans")
        self.text, self._spans, self._offset, self._lead = text, spans, 0, 0

    @classmethod
    def original(cls, text: str, offset: int = 0) -> AlignedString:
        """``text`` aligned to itself, starting at ``offset`` of the input."""
        return cls._identity(text, offset, 0)

    @classmethod
    def _identity(cls, text: str, offset: int, lead: int) -> AlignedString:
        out = cls.__new__(cls)
        out.text, out._spans, out._offset, out._lead = text, None, offset, lead
        return out

    def _with_text(self, text: str) -> AlignedString:
        """``text``, as long as this text, with this string's spans."""
        out = AlignedString.__new__(AlignedString)
        out.text, out._spans, out._offset, out._lead = text, self._spans, self._offset, self._lead
        return out

    @property
    def spans(self) -> list[Span]:
        """The span of each character (an identity string writes them out here, once)."""
        if self._spans is None:
            first, lead, n = self._offset, self._lead, len(self.text)
            self._spans = [(first, first + 1)] * lead + list(zip(range(first, first + n - lead),
                                                                 range(first + 1, first + n - lead + 1)))
        return self._spans

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"AlignedString({self.text!r}, {self.spans!r})"

    def slice(self, start: int, end: int) -> AlignedString:
        text = self.text[start:end]
        if self._spans is not None:
            return AlignedString(text, self._spans[start:end])
        lead = self._lead
        return AlignedString._identity(text, self._offset + max(start - lead, 0), min(max(lead - start, 0), len(text)))

    def _char_span(self, i: int) -> Span:
        if self._spans is not None:
            return self._spans[i]
        at = self._offset + max(i - self._lead, 0)
        return at, at + 1

    def span(self, start: int = 0, end: int | None = None) -> Span:
        """The original span covered by ``text[start:end]`` (empty at the nearest character when
        the range is empty)."""
        n = len(self.text)
        end = n if end is None else min(end, n)
        if start < end:
            return self._char_span(start)[0], self._char_span(end - 1)[1]
        if start < n:
            at = self._char_span(start)[0]
            return at, at
        if not n:
            return 0, 0
        at = self._char_span(n - 1)[1]
        return at, at

    def spans_of(self, starts: list[int], ends: list[int]) -> list[Span]:
        """``span(start, end)`` of each range ``[starts[k], ends[k])`` (non-empty ranges in order
        along the text): the offsets of tokens covering those characters."""
        if self._spans is not None:
            spans = self._spans
            return [(spans[s][0], spans[e - 1][1]) for s, e in zip(starts, ends)]
        first, shift = self._offset, self._offset - self._lead
        out = list(zip(map(shift.__add__, starts), map(shift.__add__, ends)))
        k = 0
        while k < len(out) and out[k][0] < first:   # ranges within the prepended characters: the first one's span
            out[k] = (first, max(out[k][1], first + 1))
            k += 1
        return out

    # -- rebuilding ---------------------------------------------------------------------------
    def with_replacements(self, replacements: Iterable[tuple[int, int, str]]) -> AlignedString:
        """Each range ``[start, end)`` of the text (sorted, disjoint) replaced by its new text, every
        character of which gets the range's span; the other characters keep theirs. When every
        replacement puts one character for one, the spans stay as they are (in their form)."""
        replacements = list(replacements)
        if not replacements:
            return self
        parts, done = [], 0
        for start, end, new in replacements:
            parts += (self.text[done:start], new)
            done = end
        parts.append(self.text[done:])
        text = "".join(parts)
        if all(end - start == 1 == len(new) for start, end, new in replacements):
            return self._with_text(text)
        own, spans, done = self.spans, [], 0
        for start, end, new in replacements:
            spans += own[done:start]
            spans += [self.span(start, end)] * len(new)
            done = end
        spans += own[done:]
        return AlignedString(text, spans)

    def map_chars(self, function: Callable[[str], str]) -> AlignedString:
        """Each character replaced by ``function(char)`` (any length, '' drops it)."""
        return self.with_replacements((k, k + 1, new) for k, char in enumerate(self.text)
                                      if (new := function(char)) != char)

    def map_matches(self, pattern: re.Pattern, function: Callable[[str], str]) -> AlignedString:
        """Each match of ``pattern`` replaced by ``function(match text)``, whose characters get the
        match's span; the text between matches is kept as it is (cheap when matches are rare)."""
        return self.with_replacements((m.start(), m.end(), function(m.group())) for m in pattern.finditer(self.text))

    def map_text(self, function: Callable[[str], str]) -> AlignedString:
        """``map_chars`` for a ``function`` that maps texts character by character: applied to the
        whole text at once when it keeps the length (each character then maps to one)."""
        mapped = function(self.text)
        if len(mapped) == len(self.text):
            return self._with_text(mapped)
        return self.map_chars(function)

    def prepend(self, prefix: str) -> AlignedString:
        """``prefix + text``, the prefix aligned with the first character (nothing for an empty text)."""
        if not self.text or not prefix:
            return self
        if self._spans is None:
            return AlignedString._identity(prefix + self.text, self._offset, self._lead + len(prefix))
        return AlignedString(prefix + self.text, [self._spans[0]] * len(prefix) + self._spans)

    def replace_ranges(self, ranges: Iterable[Span], content: str) -> AlignedString:
        """Each range ``[start, end)`` of the text (sorted, disjoint) replaced by ``content``, whose
        characters get the range's span."""
        return self.with_replacements((start, end, content) for start, end in ranges)

    def lower(self) -> AlignedString:
        """``str.lower`` of the text (final sigma included), each character's lower case with its span."""
        lowered = self.text.lower()
        if len(lowered) == len(self.text):
            return self._with_text(lowered)
        longer = ((k, k + 1, char.lower()) for k, char in enumerate(self.text) if len(char.lower()) != 1)
        return self.with_replacements(longer)._with_text(lowered)

    def unicode_normalize(self, form: str) -> AlignedString:
        """Unicode normalization ``form`` (NFC, NFD, NFKC, NFKD), cluster by cluster: a cluster is
        a character with everything that may combine with it; a cluster that changes gives all its
        new characters its span. ASCII text away from other characters stays as it is."""
        text = self.text
        if unicodedata.is_normalized(form, text):
            return self
        changed: list[tuple[int, int, str]] = []
        done = 0
        for match in _NON_ASCII_RUNS.finditer(text):
            start = max(match.start() - 1, done)        # the ASCII letter before may take a combining mark
            changed += self._changed_clusters(form, start, match.end())
            done = match.end()
        out = self.with_replacements(changed)
        whole = unicodedata.normalize(form, text)
        if out.text != whole:                           # a composition no cluster rule foresaw
            return self.with_replacements([(0, len(text), whole)])
        return out

    def _changed_clusters(self, form: str, first: int, last: int) -> list[tuple[int, int, str]]:
        text, changed, start = self.text, [], first
        for i in range(first + 1, last + 1):
            if i < last and not self._starts_cluster(form, text[start:i], text[i]):
                continue
            cluster = text[start:i]
            normalized = unicodedata.normalize(form, cluster)
            if normalized != cluster:
                changed.append((start, i, normalized))
            start = i
        return changed

    @staticmethod
    def _starts_cluster(form: str, cluster: str, char: str) -> bool:
        if unicodedata.combining(char):
            return False
        if char.isascii() and cluster[-1].isascii():
            return True
        return unicodedata.normalize(form, cluster + char) == (unicodedata.normalize(form, cluster)
                                                              + unicodedata.normalize(form, char))


class Words(NamedTuple):
    """The words a pre-tokenizer cuts from ``source``: ``ranges``, the ``[start, end)`` of each in
    ``source.text``; the model reads each word through ``spell`` (a function mapping a text
    character by character, as :meth:`AlignedString.map_text` takes it; None: as it is)."""

    source: AlignedString
    ranges: list[Span]
    spell: Callable[[str], str] | None = None

    def aligned(self) -> list[AlignedString]:
        """Each word as an aligned string of its own, spelled."""
        words = [self.source.slice(start, end) for start, end in self.ranges]
        return words if self.spell is None else [word.map_text(self.spell) for word in words]
