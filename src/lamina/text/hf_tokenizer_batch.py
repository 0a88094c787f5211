"""Padding and batches for :class:`lamina.text.HFTokenizer`: the padding token, padding
encodings to one length, :meth:`~_BatchCalls.encode_batch` (NumPy arrays) and the Hugging
Face-style call (:meth:`~_BatchCalls.__call__`: truncation, overflowing windows as rows of
their own, padding, the requested fields). :class:`_BatchCalls` is a base class of
``HFTokenizer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from lamina.text.hf_batch import BatchEncoding, call_inputs, padding_length, truncation_strategy
from lamina.text.hf_processors import BertProcessing, Encoding, RobertaProcessing, TemplateProcessing

__all__: list[str] = []

_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>")


def _with_windows(rows: list[Encoding]) -> tuple[list[Encoding], list[int]]:
    """Each encoding followed by its overflowing windows, and the index of the encoding each came from."""
    out, samples = [], []
    for k, row in enumerate(rows):
        for part in (replace(row, overflowing=[]), *row.overflowing):
            out.append(part)
            samples.append(k)
    return out, samples


class _BatchCalls:
    """:class:`lamina.text.HFTokenizer`'s padding, batches and call (module docstring)."""

    def _pad_id(self, pad_id: int | None) -> int | None:
        if pad_id is not None:
            return int(pad_id)
        if self.padding and self.padding.get("pad_id") is not None:
            return int(self.padding["pad_id"])
        for name in _PAD_NAMES:
            if self.token_to_id(name) is not None:
                return self.token_to_id(name)
        return None

    def _pad_token(self, pad_id: int | None, who: str) -> tuple[int, str]:
        fill = self._pad_id(pad_id)
        if fill is None:
            raise ValueError(f"HFTokenizer.{who}: the texts encode to different lengths and the tokenizer has no "
                             "padding token; pass pad_id")
        token = self.id_to_token(fill)
        return fill, token if token is not None else (self.padding or {}).get("pad_token", "")

    def pad_encodings(self, encodings: Sequence[Encoding], length: int, left: bool | None = None,
                      pad_id: int | None = None, who: str = "pad_encodings") -> list[Encoding]:
        """Each encoding padded to ``length`` with the padding token (``pad_id``, else the
        file's, else a '[PAD]'/'<pad>' token) and the file's ``pad_type_id``, on the left when
        ``left`` (None: the file's padding direction, right by default)."""
        settings = self.padding or {}
        if left is None:
            left = settings.get("direction", "Right") == "Left"
        if all(len(e) >= length and all(len(w) >= length for w in e.overflowing) for e in encodings):
            return list(encodings)
        fill, token = self._pad_token(pad_id, who)
        pad_type = int(settings.get("pad_type_id", 0))
        return [e.padded(length, fill, token, pad_type, left) for e in encodings]

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, add_special_tokens: bool = True,
                     max_length: int | None = None, pad_id: int | None = None) -> dict[str, np.ndarray]:
        """Every text (and pair) encoded, truncated to ``max_length`` and padded to the longest
        (on the side the file's padding names, right by default): int64 arrays (N, T)
        ``input_ids`` (padding: ``pad_id``, else the file's, else a '[PAD]'/'<pad>' token),
        ``attention_mask`` (0 on padding), ``token_type_ids`` and ``special_tokens_mask``."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"HFTokenizer.encode_batch: {len(texts)} texts but {len(pairs)} pairs")
        rows = [self.encode_full(text, None if pairs is None else pairs[k], add_special_tokens, max_length)
                for k, text in enumerate(texts)]
        settings = self.padding or {}
        fixed = settings.get("strategy") if isinstance(settings.get("strategy"), dict) else None
        length = padding_length(True, [len(row) for row in rows], None, settings.get("pad_to_multiple_of"))
        if fixed and "Fixed" in fixed:
            length = padding_length("max_length", [len(row) for row in rows], int(fixed["Fixed"]),
                                    settings.get("pad_to_multiple_of"))
        rows = self.pad_encodings(rows, length, pad_id=pad_id, who="encode_batch")
        keys = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")
        batch = BatchEncoding.from_encodings(rows, True, keys, "np")
        return {key: batch[key].reshape(len(rows), length) for key in keys}

    def _gives_token_types(self) -> bool:
        """Whether the post-processor marks a pair's tokens with type 1 (BERT-style models take them)."""
        processor = self.post_processor
        if isinstance(processor, TemplateProcessing):
            return any(type_id for _, _, type_id in processor.pair or [])
        return isinstance(processor, BertProcessing) and not isinstance(processor, RobertaProcessing)

    def __call__(self, text: Any, text_pair: Any = None, *, add_special_tokens: bool = True,
                 padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
                 stride: int = 0, is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, truncation_side: str | None = None,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False) -> BatchEncoding:
        """Encode a text or a batch of texts (and pairs) as Hugging Face fast tokenizers do.

        ``truncation`` (True/'longest_first', 'only_first', 'only_second'; False/'do_not_truncate')
        cuts each example to ``max_length`` (default: the file's) from ``truncation_side`` ('right',
        'left'; default: the file's direction), the way :mod:`lamina.text.hf_truncation` describes;
        without it nothing is cut. The tokens cut off form overflowing windows of the same size,
        consecutive ones sharing ``stride`` tokens; each window is a full encoding (special tokens,
        the other text of a pair, offsets, word and sequence ids). With
        ``return_overflowing_tokens`` every window is a row of its own, after its example's kept
        row, and ``overflow_to_sample_mapping`` gives each row's example (the result is then a
        batch even for one text). ``padding`` (True/'longest': to the longest row, 'max_length')
        pads on ``padding_side`` ('right', 'left'; default: the file's).

        ``is_split_into_words``: each text (and pair) is a list of words, a batch a list of such
        lists. Each word is normalized, pre-tokenized and encoded on its own; its tokens get the
        word's index as word id and offsets within the word, not within the joined text (as the
        ``tokenizers`` library gives them).

        The result has ``input_ids``, ``token_type_ids`` (when the post-processor gives types, or
        asked; ``return_token_type_ids=False`` leaves them out), ``attention_mask`` (unless
        ``return_attention_mask=False``), ``special_tokens_mask``, ``offset_mapping`` and ``length``
        (each row's length, padding included, as fast tokenizers count it) when asked, as lists or,
        with ``return_tensors`` 'np' or 'lamina', arrays or tensors (N, T)."""
        batched, texts, pairs = call_inputs(text, text_pair, is_split_into_words)
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"HFTokenizer.__call__: padding_side must be 'left' or 'right', got {padding_side!r}")
        if truncation_side not in (None, "left", "right"):
            raise ValueError(f"HFTokenizer.__call__: truncation_side must be 'left' or 'right', got "
                             f"{truncation_side!r}")
        strategy = truncation_strategy(truncation)
        limit = None
        if strategy is not None:
            limit = max_length if max_length is not None else (self.truncation or {}).get("max_length")
            if limit is None:
                raise ValueError("HFTokenizer.__call__: truncation needs max_length (none given and none in the file)")
        if truncation_side is None:
            from_left = (self.truncation or {}).get("direction", "Right") == "Left"
        else:
            from_left = truncation_side == "left"
        rows = [self._encode_one(t, None if pairs is None else pairs[k], add_special_tokens, limit,
                                 strategy or "LongestFirst", from_left, stride, is_split_into_words)
                for k, t in enumerate(texts)]
        samples = None
        if return_overflowing_tokens:
            rows, samples = _with_windows(rows)
            batched = True
        length = padding_length(padding, [len(row) for row in rows], max_length, pad_to_multiple_of)
        if length is not None:
            left = None if padding_side is None else padding_side == "left"
            rows = self.pad_encodings(rows, length, left, who="__call__")
        keys = ["input_ids"]
        if return_token_type_ids or (return_token_type_ids is None and self._gives_token_types()):
            keys.append("token_type_ids")
        if return_attention_mask or return_attention_mask is None:
            keys.append("attention_mask")
        if return_special_tokens_mask:
            keys.append("special_tokens_mask")
        if return_offsets_mapping:
            keys.append("offset_mapping")
        out = BatchEncoding.from_encodings(rows, batched, keys, return_tensors)
        if return_length:
            out.add_vector("length", [len(row) for row in rows], return_tensors)
        if samples is not None:
            out.add_vector("overflow_to_sample_mapping", samples, return_tensors)
        return out
