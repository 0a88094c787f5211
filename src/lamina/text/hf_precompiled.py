"""SentencePiece's precompiled character map: the ``precompiled_charsmap`` of a ``Precompiled``
normalizer (T5, ALBERT, XLM-R, Llama... files keep their model's NFKC-like rules in it).

Format (SentencePiece's ``normalizer.cc`` writes it; base64 in tokenizer.json):

* bytes 0-3: ``n``, the size in bytes of the trie, a little-endian uint32;
* bytes 4 .. 4+n: the trie, a darts-clone double array of little-endian uint32 units;
* the rest: the replacement strings, UTF-8, each ended by a NUL byte.

The trie maps UTF-8 keys (a character or a short sequence) to the byte offset of their replacement in the
string pool. A darts-clone unit ``u`` holds: ``has_leaf = (u >> 8) & 1``; ``label = u & (2**31 | 0xFF)``;
``value = u & (2**31 - 1)`` (for a leaf unit); ``offset = (u >> 10) << ((u & 2**9) >> 6)``.
From the root (unit 0), ``pos ^= offset(unit)``, then for each key byte ``c``: ``pos ^= c``, the unit
there must carry ``label == c``; ``pos ^= offset(unit)``; when ``has_leaf``, the unit at ``pos`` is the
leaf whose value ends a key of the bytes read so far.

Two rules apply a map to a text:

* ``"tokenizers"`` (what the ``tokenizers`` library does with a tokenizer.json, the default): the text is
  cut into grapheme clusters (a character with its combining marks, an emoji sequence...); a cluster of
  fewer than 6 UTF-8 bytes that begins with a key is replaced whole by the string of the *shortest* such
  key; any other cluster is mapped character by character the same way (a character no key begins with
  stays). Grapheme clusters come from the ``regex`` package's ``\\X`` when it is installed, otherwise
  from a simpler rule (a character with the marks, joiners and modifiers that follow it).
* ``"sentencepiece"`` (SentencePiece's own normalizer): at each position the *longest* key that starts
  there is replaced by its string; where no key starts, one character is copied unchanged.
"""

from __future__ import annotations

import base64
import binascii
import struct
import unicodedata

from lamina.text.hf_alignment import AlignedString

try:                                            # optional: the ``regex`` package knows grapheme clusters
    import regex as _regex
except ImportError:                             # pragma: no cover - depends on the environment
    _regex = None

__all__ = ["CharsMap", "grapheme_ranges"]

_LEAF_BIT = 1 << 8
_EXTENSION_BIT = 1 << 9
_VALUE_MASK = (1 << 31) - 1
_LABEL_MASK = (1 << 31) | 0xFF


_ZERO_WIDTH_JOINER = "\u200d"
_MAX_CLUSTER_BYTES = 6


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & _EXTENSION_BIT) >> 6)


def _extends_cluster(previous: str, char: str) -> bool:
    return (unicodedata.category(char).startswith("M") or char == _ZERO_WIDTH_JOINER
            or previous == _ZERO_WIDTH_JOINER or "\U0001f3fb" <= char <= "\U0001f3ff"
            or (previous == "\r" and char == "\n"))


def grapheme_ranges(text: str) -> list[tuple[int, int]]:
    """The [start, end) character ranges of the grapheme clusters of ``text`` (see the module docstring)."""
    if _regex is not None:
        return [match.span() for match in _regex.finditer(r"\X", text)]
    ranges: list[tuple[int, int]] = []
    for k, char in enumerate(text):
        if ranges and _extends_cluster(text[k - 1], char):
            ranges[-1] = (ranges[-1][0], k + 1)
        else:
            ranges.append((k, k + 1))
    return ranges


class CharsMap:
    """A decoded precompiled map: ``units`` (the double array) and ``pool`` (the replacement strings)."""

    def __init__(self, units: list[int], pool: bytes):
        if not units:
            raise ValueError("CharsMap: the trie has no units")
        self.units, self.pool = units, pool

    @classmethod
    def from_bytes(cls, blob: bytes) -> CharsMap:
        if len(blob) < 4:
            raise ValueError(f"CharsMap: a precompiled map needs at least 4 bytes, got {len(blob)}")
        (size,) = struct.unpack_from("<I", blob, 0)
        if size % 4 or 4 + size > len(blob):
            raise ValueError(f"CharsMap: the trie size {size} does not fit a blob of {len(blob)} bytes "
                             "(expected a multiple of 4 within it)")
        units = list(struct.unpack_from(f"<{size // 4}I", blob, 4))
        return cls(units, bytes(blob[4 + size:]))

    @classmethod
    def from_base64(cls, text: str) -> CharsMap:
        try:
            blob = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"CharsMap: precompiled_charsmap is not base64 ({error})") from None
        return cls.from_bytes(blob)

    def prefix_matches(self, data: bytes, start: int = 0) -> list[tuple[int, int]]:
        """(length in bytes, pool offset) of every key that ``data[start:]`` begins with, shortest first."""
        units = self.units
        position = _offset(units[0])
        found = []
        for k in range(start, len(data)):
            byte = data[k]
            position ^= byte
            if position >= len(units) or (units[position] & _LABEL_MASK) != byte:
                break
            unit = units[position]
            position ^= _offset(unit)
            if unit & _LEAF_BIT:
                if position >= len(units):
                    break
                found.append((k + 1 - start, units[position] & _VALUE_MASK))
        return found

    def longest_match(self, data: bytes, start: int) -> tuple[int, int] | None:
        """(length in bytes, pool offset) of the longest key that ``data[start:]`` begins with."""
        found = self.prefix_matches(data, start)
        return found[-1] if found else None

    def transform(self, chunk: str) -> str | None:
        """The string of the shortest key ``chunk`` begins with; None when no key does."""
        found = self.prefix_matches(chunk.encode("utf-8"))
        return self.replacement(found[0][1]) if found else None

    def replacement(self, pool_offset: int) -> str:
        end = self.pool.find(b"\0", pool_offset)
        if pool_offset >= len(self.pool) or end < 0:
            raise ValueError(f"CharsMap: replacement offset {pool_offset} lies outside the string pool of "
                             f"{len(self.pool)} bytes or is not NUL-ended")
        return self.pool[pool_offset:end].decode("utf-8", errors="replace")

    def apply(self, text: AlignedString, rule: str = "tokenizers") -> AlignedString:
        """``text`` normalized by ``rule`` (module docstring); a replaced run of characters gives
        its replacement the run's span."""
        if rule == "sentencepiece":
            return self._apply_longest(text)
        if rule != "tokenizers":
            raise ValueError(f"CharsMap.apply: rule must be 'tokenizers' or 'sentencepiece', got {rule!r}")
        replacements = []
        for start, end in grapheme_ranges(text.text):
            cluster = text.text[start:end]
            replaced = self.transform(cluster) if len(cluster.encode("utf-8")) < _MAX_CLUSTER_BYTES else None
            if replaced is not None:
                replacements.append((start, end, replaced))
                continue
            for k in range(start, end):
                replaced = self.transform(text.text[k])
                if replaced is not None:
                    replacements.append((k, k + 1, replaced))
        return text.with_replacements(replacements)

    def _apply_longest(self, text: AlignedString) -> AlignedString:
        data = text.text.encode("utf-8")
        char_at = []                                    # byte index -> character index
        for k, char in enumerate(text.text):
            char_at.extend([k] * len(char.encode("utf-8")))
        char_at.append(len(text.text))
        replacements, at = [], 0
        while at < len(data):
            first = char_at[at]
            match = self.longest_match(data, at)
            if match is None:
                at += len(text.text[first].encode("utf-8"))
                continue
            length, pool_offset = match
            replacements.append((first, char_at[at + length], self.replacement(pool_offset)))
            at += length
        return text.with_replacements(replacements)

    def normalize(self, text: str, rule: str = "tokenizers") -> str:
        return self.apply(AlignedString.original(text), rule).text
