"""Normalizers of ``tokenizer.json`` files: text -> text before pre-tokenization.

Each class reads its JSON object (``from_json``) and writes it back (``to_json``); the key
``type`` names the class. Formulas of the less obvious ones:

* BertNormalizer: drop NUL, U+FFFD and control characters, whitespace -> ' ' (clean_text);
  ' c ' around each CJK ideograph c (handle_chinese_chars); NFD then drop the combining marks
  (strip_accents, by default = lowercase); lower case.
* Precompiled: SentencePiece's compiled character map (:mod:`lamina.text.hf_precompiled`),
  applied cluster by cluster as the ``tokenizers`` library does.
* Replace: every match of a string or a Regex pattern -> ``content``. Prepend: ``prepend`` + text
  (nothing for an empty text).

Every normalizer works on an :class:`~lamina.text.hf_alignment.AlignedString`
(``normalize_aligned``), which keeps the original span of each normalized character;
``normalize`` is the same on a plain text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from lamina.text.hf_alignment import AlignedString
from lamina.text.hf_patterns import compile_pattern
from lamina.text.hf_precompiled import CharsMap
from lamina.text.wordpiece import _is_cjk, _is_control, _is_whitespace

__all__ = ["Normalizer", "normalizer_from_json", "pattern_from_json"]


def require(data: dict, key: str, path: str) -> Any:
    if key not in data:
        raise ValueError(f"tokenizer.json: {path} lacks the key {key!r}")
    return data[key]


def pattern_from_json(data: Any, path: str) -> tuple[str, str]:
    """('String', s) or ('Regex', r) from ``{"String": s}`` / ``{"Regex": r}`` (a bare string: String)."""
    if isinstance(data, str):
        return "String", data
    if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in ("String", "Regex"):
        kind, value = next(iter(data.items()))
        return kind, value
    raise ValueError(f"tokenizer.json: {path} must be {{'String': ...}} or {{'Regex': ...}}, got {data!r}")


class Normalizer:
    """Base: ``normalize_aligned(aligned) -> aligned`` and ``normalize(text) -> text``."""

    type_name = ""

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        raise NotImplementedError

    def normalize(self, text: str) -> str:
        return self.normalize_aligned(AlignedString.original(text)).text

    def to_json(self) -> dict:
        return {"type": self.type_name}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Normalizer:
        return cls()


class _Unicode(Normalizer):
    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        return text.unicode_normalize(self.type_name)


class NFC(_Unicode):
    type_name = "NFC"


class NFD(_Unicode):
    type_name = "NFD"


class NFKC(_Unicode):
    type_name = "NFKC"


class NFKD(_Unicode):
    type_name = "NFKD"


class Lowercase(Normalizer):
    type_name = "Lowercase"

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        return text.lower()


_NOT_PRINTABLE_ASCII = re.compile(r"[^ -~]")         # the characters BertNormalizer may change
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def without_marks(text: AlignedString) -> AlignedString:
    """``text`` without its combining marks (category Mn; no ASCII character is one)."""
    return text.map_matches(_NON_ASCII, lambda char: "" if unicodedata.category(char) == "Mn" else char)


def strip_accents(text: AlignedString) -> AlignedString:
    """NFD, then the combining marks (category Mn) removed."""
    return without_marks(text.unicode_normalize("NFD"))


class StripAccents(Normalizer):
    type_name = "StripAccents"

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        return without_marks(text)


class Strip(Normalizer):
    type_name = "Strip"

    def __init__(self, left: bool = True, right: bool = True):
        self.left, self.right = left, right

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        start = len(text.text) - len(text.text.lstrip()) if self.left else 0
        end = len(text.text.rstrip()) if self.right else len(text.text)
        return text.slice(start, max(start, end))

    def to_json(self) -> dict:
        return {"type": self.type_name, "strip_left": self.left, "strip_right": self.right}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Strip:
        return cls(bool(data.get("strip_left", True)), bool(data.get("strip_right", True)))


class PatternReplacement:
    """Every match of ``pattern`` replaced by ``content``: a literal string (``kind`` 'String')
    or a regular expression (``kind`` 'Regex'). The Replace normalizer and decoder share it."""

    type_name = "Replace"

    def __init__(self, kind: str, pattern: str, content: str):
        self.kind, self.pattern, self.content = kind, pattern, content
        self._compiled = compile_pattern(pattern) if kind == "Regex" else None

    def substitute(self, text: str) -> str:
        if self._compiled is None:
            return text.replace(self.pattern, self.content)
        return self._compiled.sub(lambda _: self.content, text)

    def match_ranges(self, text: str) -> list[tuple[int, int]]:
        """The ranges ``substitute`` replaces (a literal pattern: non-overlapping, left to right)."""
        if self._compiled is not None:
            return [match.span() for match in self._compiled.finditer(text)]
        ranges, start = [], text.find(self.pattern)
        while start >= 0:
            ranges.append((start, start + len(self.pattern)))
            start = text.find(self.pattern, start + len(self.pattern))
        return ranges

    def to_json(self) -> dict:
        return {"type": self.type_name, "pattern": {self.kind: self.pattern}, "content": self.content}

    @classmethod
    def from_json(cls, data: dict, path: str) -> PatternReplacement:
        kind, pattern = pattern_from_json(require(data, "pattern", path), f"{path}.pattern")
        return cls(kind, pattern, require(data, "content", path))


class Replace(PatternReplacement, Normalizer):
    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        if self._compiled is None and not self.pattern:     # an empty literal matches nothing
            return text
        if self._compiled is None and len(self.pattern) == len(self.content) == 1:   # one character for one
            return text.map_text(self.substitute)
        return text.replace_ranges(self.match_ranges(text.text), self.content)


class Prepend(Normalizer):
    type_name = "Prepend"

    def __init__(self, prepend: str):
        self.prepend = prepend

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        return text.prepend(self.prepend)

    def to_json(self) -> dict:
        return {"type": self.type_name, "prepend": self.prepend}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Prepend:
        return cls(require(data, "prepend", path))


class BertNormalizer(Normalizer):
    type_name = "BertNormalizer"

    def __init__(self, clean_text: bool = True, handle_chinese_chars: bool = True, strip_accents: bool | None = None,
                 lowercase: bool = True):
        self.clean_text, self.handle_chinese_chars = clean_text, handle_chinese_chars
        self.strip_accents, self.lowercase = strip_accents, lowercase

    def _clean(self, char: str) -> str:
        if self.clean_text and (char in ("\x00", "\ufffd") or _is_control(char)):
            return ""
        if self.clean_text and _is_whitespace(char):
            return " "
        return f" {char} " if self.handle_chinese_chars and _is_cjk(char) else char

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        text = text.map_matches(_NOT_PRINTABLE_ASCII, self._clean)
        if self.lowercase if self.strip_accents is None else self.strip_accents:
            text = strip_accents(text)
        return text.lower() if self.lowercase else text

    def to_json(self) -> dict:
        return {"type": self.type_name, "clean_text": self.clean_text,
                "handle_chinese_chars": self.handle_chinese_chars, "strip_accents": self.strip_accents,
                "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, data: dict, path: str) -> BertNormalizer:
        return cls(bool(data.get("clean_text", True)), bool(data.get("handle_chinese_chars", True)),
                   data.get("strip_accents"), bool(data.get("lowercase", True)))


class Precompiled(Normalizer):
    """SentencePiece's compiled map (base64 ``precompiled_charsmap``; null or empty: no change)."""

    type_name = "Precompiled"

    def __init__(self, charsmap: str | None):
        self.charsmap = charsmap
        self._map = CharsMap.from_base64(charsmap) if charsmap else None

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        return text if self._map is None else self._map.apply(text)

    def to_json(self) -> dict:
        return {"type": self.type_name, "precompiled_charsmap": self.charsmap}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Precompiled:
        try:
            return cls(data.get("precompiled_charsmap"))
        except ValueError as error:
            raise ValueError(f"tokenizer.json: {path}.precompiled_charsmap: {error}") from None


class NormalizerSequence(Normalizer):
    type_name = "Sequence"

    def __init__(self, normalizers: list[Normalizer]):
        self.normalizers = normalizers

    def normalize_aligned(self, text: AlignedString) -> AlignedString:
        for normalizer in self.normalizers:
            text = normalizer.normalize_aligned(text)
        return text

    def to_json(self) -> dict:
        return {"type": self.type_name, "normalizers": [n.to_json() for n in self.normalizers]}

    @classmethod
    def from_json(cls, data: dict, path: str) -> NormalizerSequence:
        items = require(data, "normalizers", path)
        return cls([normalizer_from_json(item, f"{path}.normalizers[{k}]") for k, item in enumerate(items)])


NORMALIZERS = {c.type_name: c for c in (NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Replace, Prepend,
                                        BertNormalizer, Precompiled, NormalizerSequence)}


def component_class(registry: dict, data: Any, path: str, family: str):
    """The class of the component ``data`` (a JSON object with a known ``type``)."""
    if not isinstance(data, dict):
        raise ValueError(f"tokenizer.json: {path} must be a JSON object, got {type(data).__name__}")
    kind = require(data, "type", path)
    if kind not in registry:
        raise ValueError(f"tokenizer.json: unknown {family} type {kind!r} at {path} (known: {', '.join(registry)})")
    return registry[kind]


def normalizer_from_json(data: Any, path: str = "normalizer") -> Normalizer | None:
    """The normalizer of a tokenizer.json ``normalizer`` entry (None for null)."""
    if data is None:
        return None
    return component_class(NORMALIZERS, data, path, "normalizer").from_json(data, path)
