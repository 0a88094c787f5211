"""Tokenizers read from (and written to) Hugging Face ``tokenizer.json`` files, the one-file format
of the ``tokenizers`` library that published models ship.

A file holds a pipeline; :meth:`HFTokenizer.encode` runs it on a text:

1. added tokens (``added_tokens``): the strings of the tokens with ``normalized: false`` are cut
   out of the raw text, those with ``normalized: true`` out of the normalized text, each becoming
   its one id (``lstrip``/``rstrip``: the whitespace on that side goes with it; ``single_word``:
   only where no word character touches it);
2. the normalizer maps each remaining piece to a normalized text (NFKC, lower case, '▁' for
   spaces...), the pre-tokenizer cuts it into words, the model encodes each word
   (BPE, WordPiece, Unigram or WordLevel);
3. truncation to ``max_length`` (the longer text of a pair loses its last token first), then the
   post-processor adds the special tokens and token types ([CLS] A [SEP] B [SEP]).

:meth:`HFTokenizer.decode` maps ids to token strings, drops the special ones if asked, and runs
the decoder. The components are in :mod:`lamina.text.hf_normalizers`, ``hf_pre_tokenizers``,
``hf_models``, ``hf_processors`` and ``hf_decoders``; unknown component types are refused with
the path of the entry in the file. Offsets (character spans of each token) are not computed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamina.io.atomic import write_bytes_atomic
from lamina.text.hf_decoders import Decoder, decoder_from_json
from lamina.text.hf_models import Model, model_from_json
from lamina.text.hf_normalizers import Normalizer, normalizer_from_json
from lamina.text.hf_pre_tokenizers import PreTokenizer, pre_tokenizer_from_json
from lamina.text.hf_processors import Encoding, PostProcessor, default_process, post_processor_from_json

__all__ = ["AddedToken", "Encoding", "HFTokenizer"]

_WORD_CHAR = re.compile(r"\w")
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>")


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


def _split_at(text: str, tokens: list[AddedToken]) -> list[tuple[str, AddedToken | None]]:
    """``text`` cut at the leftmost-longest occurrences of ``tokens``: (piece, None) for text
    between them, (matched text, token) for each occurrence."""
    if not tokens or not text:
        return [(text, None)]
    by_content = {t.content: t for t in tokens}
    pattern = re.compile("|".join(re.escape(c) for c in sorted(by_content, key=len, reverse=True)))
    out: list[tuple[str, AddedToken | None]] = []
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
            out.append((text[done:start], None))
        out.append((text[start:end], token))
        done = search_from = end
    if done < len(text):
        out.append((text[done:], None))
    return out


class HFTokenizer:
    """A ``tokenizer.json`` pipeline (see the module docstring). Build it with
    :meth:`from_file` or :meth:`from_str`; the constructor takes the parsed components."""

    def __init__(self, model: Model, normalizer: Normalizer | None = None, pre_tokenizer: PreTokenizer | None = None,
                 post_processor: PostProcessor | None = None, decoder: Decoder | None = None,
                 added_tokens: Iterable[AddedToken] = (), truncation: dict | None = None,
                 padding: dict | None = None):
        self.model, self.normalizer, self.pre_tokenizer = model, normalizer, pre_tokenizer
        self.post_processor, self.decoder = post_processor, decoder
        self.added_tokens = list(added_tokens)
        self.truncation, self.padding = truncation, padding
        self._added_by_id = {t.id: t for t in self.added_tokens}
        self._added_by_content = {t.content: t for t in self.added_tokens}
        self._raw_tokens = [t for t in self.added_tokens if not t.normalized]
        self._normalized_tokens = [t for t in self.added_tokens if t.normalized]

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def from_str(cls, text: str) -> HFTokenizer:
        """The tokenizer of a tokenizer.json's text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"HFTokenizer.from_str: not JSON ({error})") from None
        if not isinstance(data, dict) or "model" not in data:
            raise ValueError("HFTokenizer.from_str: a tokenizer.json is a JSON object with a 'model' entry")
        added = [AddedToken.from_json(item, f"added_tokens[{k}]") for k, item in enumerate(data.get("added_tokens")
                                                                                           or [])]
        return cls(model_from_json(data["model"]), normalizer_from_json(data.get("normalizer")),
                   pre_tokenizer_from_json(data.get("pre_tokenizer")),
                   post_processor_from_json(data.get("post_processor")), decoder_from_json(data.get("decoder")),
                   added, data.get("truncation"), data.get("padding"))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HFTokenizer:
        """The tokenizer of a ``tokenizer.json`` file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"HFTokenizer.from_file: no tokenizer.json at {os.fspath(path)}") from None
        try:
            return cls.from_str(text)
        except ValueError as error:
            raise ValueError(f"HFTokenizer.from_file: {os.fspath(path)}: {error}") from None

    def to_json(self) -> dict:
        """The tokenizer.json content as a dict."""
        def component(part):
            return None if part is None else part.to_json()

        return {"version": "1.0", "truncation": self.truncation, "padding": self.padding,
                "added_tokens": [asdict(t) for t in self.added_tokens],
                "normalizer": component(self.normalizer), "pre_tokenizer": component(self.pre_tokenizer),
                "post_processor": component(self.post_processor), "decoder": component(self.decoder),
                "model": self.model.to_json()}

    def to_str(self, indent: int | None = 2) -> str:
        """The tokenizer.json text (read back by :meth:`from_str`)."""
        return json.dumps(self.to_json(), ensure_ascii=False, indent=indent)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer.json to ``path`` atomically; returns the path."""
        write_bytes_atomic(path, self.to_str().encode("utf-8"))
        return Path(path)

    # -- vocabulary ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """One more than the largest id of the model and the added tokens."""
        ids = [*self.model.id_to_token, *self._added_by_id]
        return max(ids, default=-1) + 1

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {**self.model.vocab, **{t.content: t.id for t in self.added_tokens}}

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` (an added token or a model token), None if neither."""
        added = self._added_by_content.get(token)
        return added.id if added is not None else self.model.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The string of ``token_id``, None if no token has it."""
        added = self._added_by_id.get(int(token_id))
        return added.content if added is not None else self.model.id_to_token.get(int(token_id))

    # -- encoding -----------------------------------------------------------------------------
    def _encode_text(self, text: str) -> Encoding:
        """Steps 1 and 2 of the module docstring, without special tokens."""
        out = Encoding()
        offset = 0
        for raw, token in _split_at(text, self._raw_tokens):
            at_start, offset = offset == 0, offset + len(raw)
            if token is not None:
                out.append(token.id, token.content, special=token.special)
                continue
            normalized = self.normalizer.normalize(raw) if self.normalizer is not None else raw
            for k, (piece, inner) in enumerate(_split_at(normalized, self._normalized_tokens)):
                if inner is not None:
                    out.append(inner.id, inner.content, special=inner.special)
                    continue
                words = [piece] if self.pre_tokenizer is None else self.pre_tokenizer.pre_tokenize(
                    [piece], at_start and k == 0)
                for word in words:
                    for token_id, token_string in self.model.tokenize(word):
                        out.append(token_id, token_string)
        return out

    def _truncate(self, first: Encoding, second: Encoding | None, max_length: int | None,
                  add_special_tokens: bool) -> tuple[Encoding, Encoding | None]:
        settings = self.truncation or {}
        if max_length is None:
            max_length = settings.get("max_length")
        if max_length is None:
            return first, second
        extra = self.post_processor.added_count(second is not None) if (
            add_special_tokens and self.post_processor is not None) else 0
        budget = max_length - extra
        if budget < 0:
            raise ValueError(f"HFTokenizer.encode: max_length={max_length} leaves no room for the {extra} special "
                             "tokens")
        from_left = settings.get("direction", "Right") == "Left"
        strategy = settings.get("strategy", "LongestFirst")
        n1, n2 = len(first), 0 if second is None else len(second)
        if n1 + n2 <= budget:
            return first, second
        if second is None or strategy == "OnlyFirst":
            n1 = max(budget - n2, 0)
        elif strategy == "OnlySecond":
            n2 = max(budget - n1, 0)
        else:                                       # LongestFirst: the longer loses a token, ties the first
            while n1 + n2 > budget:
                if n1 >= n2:
                    n1 -= 1
                else:
                    n2 -= 1
        if n1 + n2 > budget:
            raise ValueError(f"HFTokenizer.encode: cannot truncate to max_length={max_length} with the strategy "
                             f"{strategy}")
        return first.truncated(n1, from_left), None if second is None else second.truncated(n2, from_left)

    def encode_full(self, text: str, pair: str | None = None, add_special_tokens: bool = True,
                    max_length: int | None = None) -> Encoding:
        """The :class:`Encoding` (ids, tokens, type ids, special-token mask, attention mask) of
        ``text`` (and ``pair``), truncated to ``max_length`` (default: the file's truncation)."""
        for name, value in (("text", text), ("pair", pair)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"HFTokenizer.encode: {name} must be a str, got {type(value).__name__}")
        first = self._encode_text(text)
        second = None if pair is None else self._encode_text(pair)
        first, second = self._truncate(first, second, max_length, add_special_tokens)
        if add_special_tokens and self.post_processor is not None:
            return self.post_processor.process(first, second)
        return default_process(first, second)

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None) -> list[int]:
        """The ids of ``text`` (and ``pair``), with the post-processor's special tokens unless
        ``add_special_tokens=False``."""
        return self.encode_full(text, pair, add_special_tokens, max_length).ids

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text``, without special tokens added."""
        return self.encode_full(text, add_special_tokens=False).tokens

    def _pad_id(self, pad_id: int | None) -> int | None:
        if pad_id is not None:
            return int(pad_id)
        if self.padding and self.padding.get("pad_id") is not None:
            return int(self.padding["pad_id"])
        for name in _PAD_NAMES:
            if self.token_to_id(name) is not None:
                return self.token_to_id(name)
        return None

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
        longest = max((len(row) for row in rows), default=0)
        settings = self.padding or {}
        fixed = settings.get("strategy") if isinstance(settings.get("strategy"), dict) else None
        if fixed and "Fixed" in fixed:
            longest = max(longest, int(fixed["Fixed"]))
        multiple = settings.get("pad_to_multiple_of")
        if multiple:
            longest = -(-longest // int(multiple)) * int(multiple)
        fill = self._pad_id(pad_id)
        if fill is None and any(len(row) < longest for row in rows):
            raise ValueError("HFTokenizer.encode_batch: the texts encode to different lengths and the tokenizer has "
                             "no padding token; pass pad_id")
        pad_type = int(settings.get("pad_type_id", 0))
        left = settings.get("direction", "Right") == "Left"
        columns = {"input_ids": (lambda r: r.ids, fill), "attention_mask": (lambda r: r.attention_mask, 0),
                   "token_type_ids": (lambda r: r.type_ids, pad_type),
                   "special_tokens_mask": (lambda r: r.special_tokens_mask, 1)}
        out = {}
        for key, (values, value) in columns.items():
            padded = [([value] * (longest - len(r)) + values(r)) if left else (values(r) + [value] * (longest - len(r)))
                      for r in rows]
            out[key] = np.asarray(padded, dtype=np.int64).reshape(len(rows), longest)
        return out

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """The text of ``ids``: their token strings (special added tokens left out when
        ``skip_special_tokens``) through the decoder (no decoder: joined by spaces)."""
        if isinstance(ids, np.ndarray):
            ids = ids.reshape(-1).tolist()
        tokens = []
        for token_id in ids:
            token = self.id_to_token(int(token_id))
            if token is None:
                raise ValueError(f"HFTokenizer.decode: id {int(token_id)} is not in the vocabulary of "
                                 f"{self.vocab_size} tokens")
            added = self._added_by_id.get(int(token_id))
            if not (skip_special_tokens and added is not None and added.special):
                tokens.append(token)
        return " ".join(tokens) if self.decoder is None else self.decoder.decode(tokens)

    def decode_batch(self, rows: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]

    def __repr__(self) -> str:
        parts = [f"model={self.model.type_name}"]
        for name in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            part = getattr(self, name)
            if part is not None:
                parts.append(f"{name}={part.type_name}")
        return f"HFTokenizer({self.vocab_size} tokens, {', '.join(parts)})"
