"""The tokenizers that BLEU is computed on, as sacrebleu names them.

* ``'13a'``: mteval-v13a.pl's rules (the WMT default). Drop ``<skipped>``, join lines
  broken by ``-\\n``, turn newlines into spaces, undo the HTML entities ``&quot;``,
  ``&amp;``, ``&lt;``, ``&gt;``; then split off as tokens: every ASCII punctuation mark
  or symbol except the period, comma and dash (``{|}~ [\\]^_` !"#$%& ()*+ :;<=>?@ /``);
  a period or comma unless it sits between digits (``3.14`` and ``1,000`` stay whole);
  a dash that follows a digit. Hyphens between letters (``well-known``) and apostrophes
  (``don't``) stay inside their words.
* ``'intl'``: the international rules (mteval-v14's ``--international-tokenization``)
  on Unicode classes: a punctuation mark (category P*) is split off unless it sits
  against a digit (category N*) on the side being split; every symbol (category S*) is
  split off.
* ``'char'``: every character but whitespace is a token.
* ``'none'``: the text split on whitespace only.

Every tokenizer returns the tokens joined by single spaces; ``.split()`` gives the list.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from functools import lru_cache

__all__ = ["TOKENIZERS", "get_tokenizer", "tokenize_13a", "tokenize_char", "tokenize_intl", "tokenize_none"]

_13A_RULES = (
    # ASCII punctuation and symbols, except . , - (ranges { .. ~, [ .. `, space .. &, ( .. +, : .. @ and /)
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),      # a period or comma after a non-digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),      # a period or comma before a non-digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),           # a dash after a digit
)


def tokenize_none(text: str) -> str:
    """Whitespace splitting only."""
    return " ".join(text.split())


def tokenize_13a(text: str) -> str:
    """mteval-v13a.pl's tokenization (see the module notes)."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def tokenize_char(text: str) -> str:
    """One token per non-whitespace character."""
    return " ".join(ch for ch in text if not ch.isspace())


def _character_class(prefix: str) -> str:
    """A regular-expression class of every code point whose Unicode category starts with
    ``prefix``, written as ranges."""
    ranges, start, previous = [], None, None
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)).startswith(prefix):
            if start is None:
                start = code
            previous = code
        elif start is not None:
            ranges.append((start, previous))
            start = None
    if start is not None:
        ranges.append((start, previous))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@lru_cache(maxsize=1)
def _intl_rules() -> tuple:
    punctuation, number, symbol = (_character_class(p) for p in "PNS")
    return (
        (re.compile(f"([^{number}])([{punctuation}])"), r"\1 \2 "),   # a mark after a non-digit
        (re.compile(f"([{punctuation}])([^{number}])"), r" \1 \2"),   # a mark before a non-digit
        (re.compile(f"([{symbol}])"), r" \1 "),                       # every symbol
    )


def tokenize_intl(text: str) -> str:
    """The international tokenization on Unicode categories (see the module notes). The
    first call builds the character classes (under a second)."""
    for pattern, replacement in _intl_rules():
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


TOKENIZERS: dict[str, Callable[[str], str]] = {
    "13a": tokenize_13a, "intl": tokenize_intl, "char": tokenize_char, "none": tokenize_none,
}


def get_tokenizer(name: str, caller: str = "get_tokenizer") -> Callable[[str], str]:
    """The tokenizer called ``name`` (one of :data:`TOKENIZERS`)."""
    if name not in TOKENIZERS:
        raise ValueError(f"{caller}: unknown tokenize={name!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]
