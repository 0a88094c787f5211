"""The result of calling a tokenizer Hugging Face style: :class:`BatchEncoding`, a dict of columns
(``input_ids``, ``attention_mask``, ``token_type_ids``, ``offset_mapping``...) that also keeps the
:class:`~lamina.text.hf_processors.Encoding` of each row for alignment queries (``word_ids``,
``sequence_ids``, ``char_to_token``, ``token_to_chars``, ``word_to_tokens``).

Columns are Python lists (one row when a single text was given, a list of rows for a batch), or,
with ``return_tensors="np"``, int64 arrays (N, T) ((N, T, 2) for offsets), or with ``"lamina"``
constant :class:`~lamina.autograd.Tensor` objects around those arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lamina.autograd import Tensor
from lamina.text.hf_processors import Encoding

__all__ = ["BatchEncoding", "call_inputs", "padding_length", "truncation_strategy"]

_COLUMN_SOURCES = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask",
                   "special_tokens_mask": "special_tokens_mask", "offset_mapping": "offsets"}
_STRATEGIES = {True: "LongestFirst", "longest_first": "LongestFirst", "only_first": "OnlyFirst",
               "only_second": "OnlySecond"}


def truncation_strategy(truncation: Any) -> str | None:
    """The tokenizer.json strategy of a ``truncation`` argument (None: no truncation)."""
    if truncation in (None, False, "do_not_truncate"):
        return None
    if truncation not in _STRATEGIES:
        raise ValueError(f"truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
                         f"'do_not_truncate', got {truncation!r}")
    return _STRATEGIES[truncation]


def call_inputs(text: Any, text_pair: Any, split_into_words: bool = False,
                who: str = "HFTokenizer.__call__") -> tuple[bool, list, list | None]:
    """(batched, texts, pairs or None) of a tokenizer call's arguments: a str (or, with
    ``split_into_words``, a list of words) is one example, a sequence of them a batch."""
    def is_batch(value: Any) -> bool:
        if split_into_words:
            return isinstance(value, (list, tuple)) and len(value) > 0 and not isinstance(value[0], str)
        return not isinstance(value, str)

    batched = is_batch(text)
    texts = list(text) if batched else [text]
    if text_pair is None:
        return batched, texts, None
    if is_batch(text_pair) != batched:
        kinds = "lists of words or both batches of them" if split_into_words else "str or both be sequences"
        raise TypeError(f"{who}: text and text_pair must both be {kinds}")
    pairs = list(text_pair) if batched else [text_pair]
    if len(pairs) != len(texts):
        raise ValueError(f"{who}: {len(texts)} texts but {len(pairs)} pairs")
    return batched, texts, pairs


def padding_length(padding: Any, lengths: Sequence[int], max_length: int | None,
                   pad_to_multiple_of: int | None = None) -> int | None:
    """The length rows are padded to: the longest (``True``/'longest'), ``max_length``
    ('max_length'), rounded up to a multiple of ``pad_to_multiple_of``; None for no padding."""
    if padding in (None, False, "do_not_pad"):
        return None
    if padding in (True, "longest"):
        length = max(lengths, default=0)
    elif padding == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        length = max(int(max_length), max(lengths, default=0))
    else:
        raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if pad_to_multiple_of:
        length = -(-length // int(pad_to_multiple_of)) * int(pad_to_multiple_of)
    return length


class BatchEncoding(dict):
    """Columns by name (also readable as attributes) and ``encodings``, the rows' Encodings."""

    def __init__(self, columns: dict, encodings: list[Encoding], batched: bool):
        super().__init__(columns)
        self.encodings, self.is_batched = encodings, batched

    @classmethod
    def from_encodings(cls, encodings: list[Encoding], batched: bool, keys: Sequence[str],
                       return_tensors: str | None = None) -> BatchEncoding:
        """The columns ``keys`` of ``encodings`` (see the module docstring for the forms)."""
        if return_tensors not in (None, "np", "lamina"):
            raise ValueError(f"BatchEncoding: return_tensors must be None, 'np' or 'lamina', got {return_tensors!r}")
        if return_tensors is not None and len({len(e) for e in encodings}) > 1:
            raise ValueError(f"BatchEncoding: rows of lengths {sorted({len(e) for e in encodings})} cannot form one "
                             f"array; pass padding=True (or truncation with max_length)")
        columns = {}
        for key in keys:
            rows = [list(getattr(e, _COLUMN_SOURCES[key])) for e in encodings]
            if return_tensors is None:
                columns[key] = rows if batched else rows[0]
                continue
            width = len(encodings[0]) if encodings else 0
            shape = (len(rows), width, 2) if key == "offset_mapping" else (len(rows), width)
            array = np.asarray(rows, dtype=np.int64).reshape(shape)
            columns[key] = Tensor(array) if return_tensors == "lamina" else array
        return cls(columns, encodings, batched)

    def add_vector(self, key: str, values: list[int], return_tensors: str | None = None) -> None:
        """A column of one number per row (``length``, ``overflow_to_sample_mapping``): a list
        (one number when a single text was given), or an int64 array or tensor (N,)."""
        if return_tensors is None:
            self[key] = values if self.is_batched else values[0]
            return
        array = np.asarray(values, dtype=np.int64)
        self[key] = Tensor(array) if return_tensors == "lamina" else array

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no column {name!r} (columns: {list(self)})") from None

    def _row(self, batch_index: int) -> Encoding:
        if not -len(self.encodings) <= batch_index < len(self.encodings):
            raise IndexError(f"BatchEncoding: batch index {batch_index} outside {len(self.encodings)} rows")
        return self.encodings[batch_index]

    def _split(self, first: int, second: int | None) -> tuple[Encoding, int]:
        return (self._row(0), first) if second is None else (self._row(first), second)

    def tokens(self, batch_index: int = 0) -> list[str]:
        return list(self._row(batch_index).tokens)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The word of each token of row ``batch_index`` (None for special and padding tokens)."""
        return list(self._row(batch_index).word_ids)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 (text) or 1 (pair) for each token of row ``batch_index``, None for special ones."""
        return list(self._row(batch_index).sequence_ids)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        row, token = self._split(batch_or_token_index, token_index)
        return row.token_to_word(token)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> tuple[int, int] | None:
        row, token = self._split(batch_or_token_index, token_index)
        return row.token_to_chars(token)

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        row, char = self._split(batch_or_char_index, char_index)
        return row.char_to_token(char, sequence_index)

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None,
                       sequence_index: int = 0) -> tuple[int, int] | None:
        row, word = self._split(batch_or_word_index, word_index)
        return row.word_to_tokens(word, sequence_index)
