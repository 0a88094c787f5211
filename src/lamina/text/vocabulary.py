"""A vocabulary: the ordered dictionary of the course notes' NLP word representation.

Each token (a character or a word) gets the integer id of its position in the vocabulary;
an id v stands for the one-hot vector o_v, and an embedding layer picks e_v = E o_v as the
row v of its matrix without ever forming o_v. Tokens outside the vocabulary map to the
unknown token (UKW in the notes) when the vocabulary has one.

Special tokens come first, in the order padding, unknown, beginning and end of sequence
(each optional), so padding is id 0 whenever it is present.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from lamina.io.atomic import write_bytes_atomic

__all__ = ["Vocabulary", "word_tokens"]

_WORD = re.compile(r"[\w']+|[^\w\s]")
_LEVELS = ("char", "word")


def word_tokens(text: str, lower: bool = True) -> list[str]:
    """Words (letters, digits, apostrophes) and single punctuation marks, in order."""
    return _WORD.findall(text.lower() if lower else text)


class Vocabulary:
    """Tokens <-> ids, for characters (``level='char'``) or words (``level='word'``).

    ``tokens``: the ordinary tokens, in id order after the specials. ``pad``, ``unk``,
    ``bos``, ``eos``: the special tokens (None leaves one out); ``bos`` and ``eos`` may be
    the same token (a name model's '.' that starts and ends every name).
    """

    def __init__(self, tokens: Iterable[str], level: str = "char", pad: str | None = "<pad>",
                 unk: str | None = "<unk>", bos: str | None = None, eos: str | None = None,
                 lower: bool = False):
        if level not in _LEVELS:
            raise ValueError(f"Vocabulary: level must be one of {_LEVELS}, got {level!r}")
        self.level, self.lower = level, bool(lower)
        self.specials = {"pad": pad, "unk": unk, "bos": bos, "eos": eos}
        ids: dict[str, int] = {}
        for token in [s for s in self.specials.values() if s is not None] + list(tokens):
            if not isinstance(token, str) or not token:
                raise TypeError(f"Vocabulary: tokens must be non-empty strings, got {token!r}")
            ids.setdefault(token, len(ids))
        self._tokens = list(ids)
        self._ids = ids

    @classmethod
    def from_texts(cls, texts: Iterable[str], level: str = "char", min_count: int = 1,
                   max_size: int | None = None, lower: bool = False, **specials) -> Vocabulary:
        """The tokens of ``texts`` seen at least ``min_count`` times, the most frequent first
        (ties in order of first appearance), at most ``max_size`` ids in all."""
        if level not in _LEVELS:
            raise ValueError(f"Vocabulary.from_texts: level must be one of {_LEVELS}, got {level!r}")
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_split(text, level, lower))
        vocab = cls((), level=level, lower=lower, **specials)
        room = None if max_size is None else max(max_size - len(vocab), 0)
        kept = [t for t, n in counts.most_common() if n >= min_count and t not in vocab._ids][:room]
        return cls(kept, level=level, lower=lower, **specials)

    # -- lookups --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __getitem__(self, token: str) -> int:
        return self._ids[token]

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def _special_id(self, role: str) -> int | None:
        token = self.specials[role]
        return None if token is None else self._ids[token]

    @property
    def pad_id(self) -> int | None:
        return self._special_id("pad")

    @property
    def unk_id(self) -> int | None:
        return self._special_id("unk")

    @property
    def bos_id(self) -> int | None:
        return self._special_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._special_id("eos")

    # -- encoding -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The tokens of ``text`` at this vocabulary's level."""
        return _split(text, self.level, self.lower)

    def encode(self, text: str | Sequence[str], add_bos: bool = False, add_eos: bool = False) -> np.ndarray:
        """The ids (int64) of a text, or of a list of tokens; unknown tokens become ``unk``
        (a KeyError naming the token when the vocabulary has none)."""
        tokens = self.tokenize(text) if isinstance(text, str) else list(text)
        unk = self.unk_id
        lookup = self._ids.get
        ids = [lookup(token, unk) for token in tokens]
        if unk is None and None in ids:
            position = ids.index(None)
            raise KeyError(f"Vocabulary.encode: token {tokens[position]!r} at position {position} is not in the "
                           f"vocabulary of {len(self)} tokens, which has no unknown token (unk=None)")
        if add_bos:
            ids.insert(0, self._required("bos"))
        if add_eos:
            ids.append(self._required("eos"))
        return np.asarray(ids, dtype=np.int64)

    def _required(self, role: str) -> int:
        special = self._special_id(role)
        if special is None:
            raise ValueError(f"Vocabulary.encode: add_{role}=True but the vocabulary has no {role} token")
        return special

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of ``ids`` (characters joined, words joined by spaces); the special
        tokens are left out unless ``skip_specials=False``."""
        skip = {self._ids[t] for t in self.specials.values() if t is not None} if skip_specials else set()
        out = []
        for i in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1):
            i = int(i)
            if not 0 <= i < len(self):
                raise ValueError(f"Vocabulary.decode: id {i} outside [0, {len(self)})")
            if i not in skip:
                out.append(self._tokens[i])
        return ("" if self.level == "char" else " ").join(out)

    # -- saving ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        ordinary = [t for t in self._tokens if t not in set(self.specials.values())]
        return {"tokens": ordinary, "level": self.level, "lower": self.lower, **self.specials}

    @classmethod
    def from_config(cls, config: dict) -> Vocabulary:
        return cls(**config)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        write_bytes_atomic(path, json.dumps(self.get_config(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        with open(path, encoding="utf-8") as f:
            return cls.from_config(json.load(f))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        specials = ", ".join(f"{k}={v!r}" for k, v in self.specials.items() if v is not None)
        return f"Vocabulary({len(self)} {self.level} tokens, {specials})"


def _split(text: str, level: str, lower: bool) -> list[str]:
    if level == "char":
        return list(text.lower() if lower else text)
    return word_tokens(text, lower)
