"""Text that remembers where each of its characters came from, so that tokens can be mapped back
to character spans (offsets) of the input after normalization and pre-tokenization.

An :class:`AlignedString` is a text and, for each of its characters, the span ``(start, end)`` of
the original input it stands for. Every normalization step rebuilds it:

* a character replaced by several (lower-casing 'İ' -> 'i̇', a CJK ideograph -> ' 中 ', a byte
  spelled as GPT-2 characters) gives each new character the span of the old one;
* a run of characters replaced by one text (a Replace match, a Unicode composition 'e' + U+0301 -> 'é')
  gives every new character the union of the run's spans;
* removed characters take their spans with them; prepended characters share the first character's span.

Every step keeps the spans in order (neither starts nor ends ever decrease along the text), so the
span of a token, the union of its characters' spans, runs from its first character's start to its
last character's end.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

__all__ = ["AlignedString", "Span"]

_NON_ASCII_RUNS = re.compile(r"[^\x00-\x7f]+")

Span = tuple[int, int]


class AlignedString:
    """``text`` with ``spans[i]``, the original span of ``text[i]``."""

    __slots__ = ("spans", "text")

    def __init__(self, text: str, spans: list[Span]):
        if len(spans) != len(text):
            raise ValueError(f"AlignedString: {len(text)} characters but {len(spans)} spans")
        self.text, self.spans = text, spans

    @classmethod
    def original(cls, text: str, offset: int = 0) -> AlignedString:
        """``text`` aligned to itself, starting at ``offset`` of the input."""
        return cls(text, [(offset + i, offset + i + 1) for i in range(len(text))])

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"AlignedString({self.text!r}, {self.spans!r})"

    def slice(self, start: int, end: int) -> AlignedString:
        return AlignedString(self.text[start:end], self.spans[start:end])

    def span(self, start: int = 0, end: int | None = None) -> Span:
        """The original span covered by ``text[start:end]`` (empty at the nearest character when
        the range is empty)."""
        end = len(self.spans) if end is None else min(end, len(self.spans))
        if start < end:
            return self.spans[start][0], self.spans[end - 1][1]
        if start < len(self.spans):
            return self.spans[start][0], self.spans[start][0]
        return (self.spans[-1][1], self.spans[-1][1]) if self.spans else (0, 0)

    # -- rebuilding ---------------------------------------------------------------------------
    @classmethod
    def from_pieces(cls, pieces: Iterable[tuple[str, Span]]) -> AlignedString:
        """Each piece's text, all its characters with the piece's span."""
        text, spans = [], []
        for piece, span in pieces:
            text.append(piece)
            spans.extend([span] * len(piece))
        return cls("".join(text), spans)

    def map_chars(self, function: Callable[[str], str]) -> AlignedString:
        """Each character replaced by ``function(char)`` (any length, '' drops it)."""
        return AlignedString.from_pieces((function(char), span) for char, span in zip(self.text, self.spans))

    def map_matches(self, pattern: re.Pattern, function: Callable[[str], str]) -> AlignedString:
        """Each match of ``pattern`` replaced by ``function(match text)``, whose characters get the
        match's span; the text between matches is kept as it is (cheap when matches are rare)."""
        text, spans, done = [], [], 0
        for match in pattern.finditer(self.text):
            start, end = match.span()
            text.append(self.text[done:start])
            spans.extend(self.spans[done:start])
            new = function(match.group())
            text.append(new)
            spans.extend([self.span(start, end)] * len(new))
            done = end
        if not text:
            return self
        text.append(self.text[done:])
        spans.extend(self.spans[done:])
        return AlignedString("".join(text), spans)

    def map_text(self, function: Callable[[str], str]) -> AlignedString:
        """``map_chars`` for a ``function`` that maps texts character by character: applied to the
        whole text at once when it keeps the length (each character then maps to one)."""
        mapped = function(self.text)
        if len(mapped) == len(self.text):
            return AlignedString(mapped, self.spans)
        return self.map_chars(function)

    def filter(self, keep: Callable[[str], bool]) -> AlignedString:
        kept = [k for k, char in enumerate(self.text) if keep(char)]
        if len(kept) == len(self.text):
            return self
        return AlignedString("".join(self.text[k] for k in kept), [self.spans[k] for k in kept])

    def prepend(self, prefix: str) -> AlignedString:
        """``prefix + text``, the prefix aligned with the first character (nothing for an empty text)."""
        if not self.text or not prefix:
            return self
        return AlignedString(prefix + self.text, [self.spans[0]] * len(prefix) + self.spans)

    def replace_ranges(self, ranges: Iterable[Span], content: str) -> AlignedString:
        """Each range ``[start, end)`` of the text (sorted, disjoint) replaced by ``content``, whose
        characters get the range's span."""
        pieces, done = [], 0
        for start, end in ranges:
            pieces.extend((char, span) for char, span in zip(self.text[done:start], self.spans[done:start]))
            pieces.append((content, self.span(start, end)))
            done = end
        pieces.extend((char, span) for char, span in zip(self.text[done:], self.spans[done:]))
        return AlignedString.from_pieces(pieces)

    def lower(self) -> AlignedString:
        """``str.lower`` of the text (final sigma included), each character's lower case with its span."""
        lowered = self.text.lower()
        if len(lowered) == len(self.text):
            return AlignedString(lowered, self.spans)
        spans: list[Span] = []
        for char, span in zip(self.text, self.spans):
            spans.extend([span] * len(char.lower()))
        return AlignedString(lowered, spans)

    def unicode_normalize(self, form: str) -> AlignedString:
        """Unicode normalization ``form`` (NFC, NFD, NFKC, NFKD), cluster by cluster: a cluster is
        a character with everything that may combine with it; a cluster that changes gives all its
        new characters its span. ASCII text away from other characters stays as it is."""
        text = self.text
        if unicodedata.is_normalized(form, text):
            return self
        pieces: list[tuple[str, Span]] = []
        done = 0
        for match in _NON_ASCII_RUNS.finditer(text):
            start = max(match.start() - 1, done)        # the ASCII letter before may take a combining mark
            pieces.extend(zip(text[done:start], self.spans[done:start]))
            pieces.extend(self._normalized_clusters(form, start, match.end()))
            done = match.end()
        pieces.extend(zip(text[done:], self.spans[done:]))
        out = AlignedString.from_pieces(pieces)
        if out.text != unicodedata.normalize(form, text):     # a composition no cluster rule foresaw
            return AlignedString.from_pieces([(unicodedata.normalize(form, text), self.span())])
        return out

    def _normalized_clusters(self, form: str, first: int, last: int) -> list[tuple[str, Span]]:
        text, pieces, start = self.text, [], first
        for i in range(first + 1, last + 1):
            if i < last and not self._starts_cluster(form, text[start:i], text[i]):
                continue
            cluster = text[start:i]
            normalized = unicodedata.normalize(form, cluster)
            if normalized == cluster:
                pieces.extend(zip(cluster, self.spans[start:i]))
            else:
                pieces.append((normalized, self.span(start, i)))
            start = i
        return pieces

    @staticmethod
    def _starts_cluster(form: str, cluster: str, char: str) -> bool:
        if unicodedata.combining(char):
            return False
        if char.isascii() and cluster[-1].isascii():
            return True
        return unicodedata.normalize(form, cluster + char) == (unicodedata.normalize(form, cluster)
                                                              + unicodedata.normalize(form, char))
