"""The pieces a :class:`~lamina.text.hf_tokenizer.HFTokenizer` assembles an encoding from: the added
tokens cut out of a text, the tokens of one word with the characters each covers, and the columns
of one text's tokens placed at once (offsets, word ids, the special-tokens mask)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lamina.text.hf_alignment import AlignedString
from lamina.text.hf_processors import Encoding

__all__ = ["AddedToken", "TextColumns", "WordTokens", "content_range", "split_at_added_tokens"]

_WORD_CHAR = re.compile(r"\w")


@dataclass
class AddedToken:
    """An entry of ``added_tokens``: a string kept whole, with its id."""

    id: int
    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True
    special: bool = False

    @classmethod
    def from_json(cls, data: Any, path: str) -> AddedToken:
        if not isinstance(data, dict) or "id" not in data or not data.get("content"):
            raise ValueError(f"tokenizer.json: {path} must be an object with an 'id' and a non-empty 'content'")
        return cls(int(data["id"]), str(data["content"]), bool(data.get("single_word", False)),
                   bool(data.get("lstrip", False)), bool(data.get("rstrip", False)),
                   bool(data.get("normalized", not data.get("special", False))), bool(data.get("special", False)))


def split_at_added_tokens(text: str, tokens: list[AddedToken]) -> list[tuple[int, int, AddedToken | None]]:
    """``text`` cut at the leftmost-longest occurrences of ``tokens``: (start, end, None) for
    text between them, (start, end, token) for each occurrence (with the whitespace its
    ``lstrip``/``rstrip`` take)."""
    if not tokens or not text:
        return [(0, len(text), None)]
    by_content = {t.content: t for t in tokens}
    pattern = re.compile("|".join(re.escape(c) for c in sorted(by_content, key=len, reverse=True)))
    out: list[tuple[int, int, AddedToken | None]] = []
    done, search_from = 0, 0
    while (match := pattern.search(text, search_from)) is not None:
        start, end = match.span()
        token = by_content[match.group()]
        if token.single_word and ((start > 0 and _WORD_CHAR.match(text[start - 1]))
                                  or (end < len(text) and _WORD_CHAR.match(text[end]))):
            search_from = start + 1
            continue
        if token.lstrip:
            while start > done and text[start - 1].isspace():
                start -= 1
        if token.rstrip:
            while end < len(text) and text[end].isspace():
                end += 1
        if start > done:
            out.append((done, start, None))
        out.append((start, end, token))
        done = search_from = end
    if done < len(text):
        out.append((done, len(text), None))
    return out


def content_range(text: str, start: int, end: int, token: AddedToken) -> tuple[int, int]:
    """Where the token's content lies in ``text[start:end]`` (a match with the spaces it strips)."""
    at = text.find(token.content, start, end)
    return (at, at + len(token.content)) if at >= 0 else (start, end)


class WordTokens(NamedTuple):
    """The tokens of one word: ids, strings, and the characters ``[starts[k], ends[k])`` of the word each covers."""

    ids: list[int]
    tokens: list[str]
    starts: list[int]
    ends: list[int]


class TextColumns:
    """One text's tokens, gathered word by word as the words are encoded; :meth:`encoding` then
    places them all at once: a token's offsets from the characters of its word it covers and where
    the word starts in its aligned source, its word id from the number of tokens of each word."""

    def __init__(self):
        self.ids: list[int] = []
        self.tokens: list[str] = []
        self.starts: list[int] = []             # per token: the characters [start, end) of its word it covers
        self.ends: list[int] = []
        self.word_starts: list[int] = []        # per word: where it starts in its source
        self.counts: list[int] = []             # per word: its number of tokens
        self.sources: list[tuple[AlignedString, int]] = []     # the source of each run of tokens, and its length
        self.special_at: list[int] = []

    def add_source(self, source: AlignedString, n_tokens: int) -> None:
        """The last ``n_tokens`` tokens came from words of ``source``."""
        if self.sources and self.sources[-1][0] is source:
            n_tokens += self.sources.pop()[1]
        if n_tokens:
            self.sources.append((source, n_tokens))

    def add_token(self, token: AddedToken, source: AlignedString, start: int, end: int) -> None:
        """An added token, a word of its own covering ``source.text[start:end]``."""
        if token.special:
            self.special_at.append(len(self.ids))
        self.ids.append(token.id)
        self.tokens.append(token.content)
        self.starts.append(0)
        self.ends.append(end - start)
        self.word_starts.append(start)
        self.counts.append(1)
        self.add_source(source, 1)

    def encoding(self) -> Encoding:
        counts = np.asarray(self.counts, dtype=np.int64)
        shift = np.repeat(np.asarray(self.word_starts, dtype=np.int64), counts)
        starts = (shift + np.asarray(self.starts, dtype=np.int64)).tolist()
        ends = (shift + np.asarray(self.ends, dtype=np.int64)).tolist()
        offsets: list[tuple[int, int]] = []
        done = 0
        for source, n_tokens in self.sources:
            offsets += source.spans_of(starts[done:done + n_tokens], ends[done:done + n_tokens])
            done += n_tokens
        word_ids = np.repeat(np.arange(len(counts)), counts).tolist()
        n = len(self.ids)
        special = [0] * n
        for k in self.special_at:
            special[k] = 1
        return Encoding(self.ids, self.tokens, [0] * n, special, [1] * n, offsets, word_ids, [0] * n)
