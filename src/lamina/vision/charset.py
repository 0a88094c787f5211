"""Strings to CTC label ids and back, for text recognisers (the label converter of OCR toolkits).

A recogniser over a charset of K characters scores K + 1 classes: the characters and the CTC
blank. The blank takes index ``blank`` (0, as in the CRNN reference; some toolkits put it
last, ``blank=K``) and the characters fill the other indices in charset order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["CharsetMapper"]


class CharsetMapper:
    """Encodes strings as label ids (no id equals ``blank``) and decodes ids back to strings.

    ``charset``: the characters, each once (e.g. ``"0123456789"``); ``blank``: the blank's
    index in [0, K]. ``num_classes`` = K + 1 is the size of the recogniser's output."""

    def __init__(self, charset: Iterable[str], blank: int = 0):
        characters = list(charset)
        if not characters or any(not isinstance(c, str) or len(c) != 1 for c in characters):
            raise ValueError(f"CharsetMapper: charset must be a non-empty sequence of single characters, got "
                             f"{charset!r}")
        repeated = sorted({c for c in characters if characters.count(c) > 1})
        if repeated:
            raise ValueError(f"CharsetMapper: charset holds {repeated} more than once")
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank <= len(characters):
            raise ValueError(f"CharsetMapper: blank must be an int in [0, {len(characters)}], got {blank!r}")
        self.charset = "".join(characters)
        self.blank = int(blank)
        ids = [i for i in range(len(characters) + 1) if i != self.blank]
        self._id_of = dict(zip(characters, ids))
        self._char_of = dict(zip(ids, characters))

    @property
    def num_classes(self) -> int:
        return len(self.charset) + 1

    def __len__(self) -> int:
        return len(self.charset)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths): int64 ids (N, S) padded with the blank past each text's length S_n,
        S = max S_n (at least 1), and the lengths (N,)."""
        if isinstance(texts, str):
            texts = [texts]
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        ids = np.full((len(texts), max(1, int(lengths.max(initial=0)))), self.blank, dtype=np.int64)
        for n, text in enumerate(texts):
            unknown = sorted(set(text) - set(self._id_of))
            if unknown:
                raise ValueError(f"CharsetMapper.encode: text {n} ({text!r}) holds characters {unknown} that are "
                                 f"not in the charset {self.charset!r}")
            ids[n, :len(text)] = [self._id_of[c] for c in text]
        return ids, lengths

    def decode(self, ids: Iterable[int]) -> str:
        """The text of label ids, blanks skipped (already collapsed ids, e.g. a CTC decoder's)."""
        out = []
        for i in (int(i) for i in ids):
            if i == self.blank:
                continue
            if i not in self._char_of:
                raise ValueError(f"CharsetMapper.decode: id {i} is outside [0, {self.num_classes})")
            out.append(self._char_of[i])
        return "".join(out)

    def __repr__(self) -> str:
        return f"CharsetMapper({self.charset!r}, blank={self.blank})"
