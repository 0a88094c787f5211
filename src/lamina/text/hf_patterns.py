"""Regular expressions of ``tokenizer.json`` files (Rust syntax, with Unicode classes) for Python.

Split pre-tokenizers and Replace normalizers hold patterns such as Llama 3's
``[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}``. The standard library's ``re`` has no ``\\p{...}``, so
:func:`compile_pattern` uses the third-party ``regex`` package when it is importable and otherwise
rewrites the pattern for ``re`` (:func:`translate_pattern`): ``\\p{X}`` (X a general category or a
major class: L, Lu, Ll, Lt, Lm, Lo, M, Mn, N, Nd, P, S, Z, C... also written ``\\pL`` or
``\\p{Letter}``-free short forms) becomes the ranges of the code points of that category, found with
:mod:`unicodedata`, and ``\\P{X}`` the ranges of the others. Inside a bracketed class the ranges are
inserted in place; outside, they are wrapped in brackets.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

try:                                            # optional: the ``regex`` package understands \p{...} itself
    import regex as _regex
except ImportError:                             # pragma: no cover - depends on the environment
    _regex = None

__all__ = ["category_ranges", "compile_pattern", "translate_pattern"]

_PROPERTY = re.compile(r"\\([pP])(?:\{\^?([A-Za-z_&]+)\}|([A-Za-z]))")
_ALIASES = {"L&": "LC", "Letter": "L", "Number": "N", "Punctuation": "P", "Symbol": "S", "Mark": "M",
            "Separator": "Z", "Other": "C"}


@functools.cache
def _categories() -> tuple[str, ...]:
    return tuple(unicodedata.category(chr(code)) for code in range(sys.maxunicode + 1))


def _escaped(code: int) -> str:
    return f"\\U{code:08x}"


@functools.cache
def category_ranges(name: str, negated: bool = False) -> str:
    """The code points of the Unicode general category ``name`` ('Lu', or a major class 'L'
    for every category starting with it; 'LC' for Lu, Ll, Lt), or of all others when
    ``negated``, as the inside of a regular-expression character class ('\\U00000041-\\U0000005a...')."""
    name = _ALIASES.get(name, name)
    wanted = {"Lu", "Ll", "Lt"} if name == "LC" else None
    if wanted is None and not any(c.startswith(name) for c in set(_categories())):
        raise ValueError(f"translate_pattern: unknown Unicode property \\p{{{name}}}")
    parts, start = [], None
    categories = _categories()
    for code in range(len(categories) + 1):
        inside = code < len(categories) and (
            (categories[code] in wanted) if wanted is not None else categories[code].startswith(name)) != negated
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            parts.append(_escaped(start) if code - 1 == start else f"{_escaped(start)}-{_escaped(code - 1)}")
            start = None
    return "".join(parts)


def translate_pattern(pattern: str) -> str:
    """``pattern`` with every ``\\p{X}``/``\\P{X}`` replaced by explicit code-point ranges, for
    Python's ``re`` (see the module docstring)."""
    out, depth, i = [], 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            match = _PROPERTY.match(pattern, i)
            if match:
                kind, braced, short = match.groups()
                name = braced or short
                negated = (kind == "P") != ("{^" in match.group())
                ranges = category_ranges(name, negated)
                out.append(ranges if depth else f"[{ranges}]")
                i = match.end()
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "[" and depth == 0:
            depth = 1
            out.append(char)
            i += 1
            if pattern.startswith("^", i):      # a leading ^ and a leading ] are literal parts of the opening
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if char == "]" and depth:
            depth = 0
        out.append(char)
        i += 1
    return "".join(out)


@functools.cache
def compile_pattern(pattern: str, use_regex_package: bool = True):
    """A compiled form of the Rust-syntax ``pattern``: ``regex.compile`` when the ``regex``
    package is importable (and ``use_regex_package``), else ``re.compile`` of
    :func:`translate_pattern`. Both offer ``finditer``, ``sub`` and ``fullmatch``."""
    if use_regex_package and _regex is not None:
        return _regex.compile(pattern)
    try:
        return re.compile(translate_pattern(pattern))
    except re.error as error:
        raise ValueError(f"compile_pattern: cannot compile {pattern!r} for Python's re ({error})") from None
