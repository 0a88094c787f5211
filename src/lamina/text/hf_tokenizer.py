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
3. truncation to ``max_length`` with the ``tokenizers`` library's strategies, side and stride
   (:mod:`lamina.text.hf_truncation`; the tokens cut off form overflowing windows), then the
   post-processor adds the special tokens and token types ([CLS] A [SEP] B [SEP]) to the kept
   part and to every window.

:meth:`HFTokenizer.decode` maps ids to token strings, drops the special ones if asked, and runs
the decoder. The components are in :mod:`lamina.text.hf_normalizers`, ``hf_pre_tokenizers``,
``hf_models``, ``hf_processors`` and ``hf_decoders``; unknown component types are refused with
the path of the entry in the file.

Each token also gets its offsets, the (start, end) characters of the input it stands for: the
normalizer keeps the original span of every normalized character
(:class:`~lamina.text.hf_alignment.AlignedString`), the pre-tokenizer cuts with those spans and the
model says which characters of its word each token covers. A word's tokens and the characters
they cover are kept (a cache of up to 32768 words) unless the model draws at random (BPE dropout),
so a word met again costs a look-up. Calling the tokenizer
(:meth:`HFTokenizer.__call__`) gives a Hugging Face-style :class:`~lamina.text.hf_batch.BatchEncoding`.
:meth:`HFTokenizer.train_from_iterator` and :meth:`HFTokenizer.train_new_from_iterator` learn a new
model from texts (:mod:`lamina.text.hf_training`).

The encoding pipeline is in :mod:`lamina.text.hf_tokenizer_encoding` and the padding, batches and
call in :mod:`lamina.text.hf_tokenizer_batch` (base classes of :class:`HFTokenizer`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lamina.io.atomic import write_bytes_atomic
from lamina.text.hf_batch import BatchEncoding
from lamina.text.hf_decoders import Decoder, decoder_from_json
from lamina.text.hf_encoding_parts import AddedToken, WordTokens
from lamina.text.hf_models import Model, model_from_json
from lamina.text.hf_normalizers import Normalizer, normalizer_from_json
from lamina.text.hf_pre_tokenizers import PreTokenizer, pre_tokenizer_from_json
from lamina.text.hf_processors import Encoding, PostProcessor, post_processor_from_json
from lamina.text.hf_tokenizer_batch import _PAD_NAMES, _BatchCalls, _with_windows  # noqa: F401  (moved there)
from lamina.text.hf_tokenizer_encoding import _WORD_CACHE_LIMIT, _EncodingPipeline  # noqa: F401  (moved there)
from lamina.text.hf_trainers import Trainer
from lamina.text.hf_training import train_new, trained_model

__all__ = ["AddedToken", "BatchEncoding", "Encoding", "HFTokenizer"]


class HFTokenizer(_EncodingPipeline, _BatchCalls):
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
        self._word_caches: dict[tuple[Model, Callable | None], dict[str, WordTokens]] = {}

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

    # -- training (lamina.text.hf_training) -------------------------------------------------------
    def train_from_iterator(self, iterator: Iterable[Any], trainer: Trainer | None = None,
                            length: int | None = None) -> None:
        """Replace the model by one ``trainer`` (a :class:`~lamina.text.hf_trainers.BpeTrainer`,
        ``WordPieceTrainer``, ``UnigramTrainer`` or ``WordLevelTrainer`` matching the model; None:
        the model kind's default trainer) learns from the texts (or lists of texts) of
        ``iterator``, normalized and pre-tokenized by this tokenizer; the trainer's special
        tokens become added tokens. ``length`` (the number of texts) is accepted for
        compatibility and not needed."""
        model, added = trained_model(self, iterator, trainer, "HFTokenizer.train_from_iterator")
        self.__init__(model, self.normalizer, self.pre_tokenizer, self.post_processor, self.decoder, added,
                      self.truncation, self.padding)

    def train(self, files: Sequence[str | os.PathLike], trainer: Trainer | None = None) -> None:
        """:meth:`train_from_iterator` on the lines (with their line endings) of UTF-8 text ``files``."""
        if isinstance(files, str | os.PathLike):
            files = [files]

        def lines():
            for path in files:
                try:
                    with open(path, encoding="utf-8", newline="") as handle:
                        yield from handle
                except FileNotFoundError:
                    raise FileNotFoundError(f"HFTokenizer.train: no file at {os.fspath(path)}") from None

        model, added = trained_model(self, lines(), trainer, "HFTokenizer.train")
        self.__init__(model, self.normalizer, self.pre_tokenizer, self.post_processor, self.decoder, added,
                      self.truncation, self.padding)

    def train_new_from_iterator(self, text_iterator: Iterable[Any], vocab_size: int, length: int | None = None,
                                new_special_tokens: Iterable[str | AddedToken] | None = None,
                                special_tokens_map: dict[str, str] | None = None, **kwargs: Any) -> HFTokenizer:
        """A new tokenizer of the same kind (normalizer, pre-tokenizer, post-processor with its
        special ids remapped, decoder, model settings) with a vocabulary of ``vocab_size``
        trained on ``text_iterator``, as transformers' fast tokenizers'
        ``train_new_from_iterator``: the special added tokens keep their place first in the
        vocabulary (renamed through ``special_tokens_map``), ``new_special_tokens`` follow them,
        and ``kwargs`` go to the trainer (see :func:`lamina.text.hf_training.train_new`)."""
        return train_new(self, text_iterator, vocab_size, length, new_special_tokens, special_tokens_map, kwargs)

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


    def encode_full(self, text: str | Sequence[str], pair: str | Sequence[str] | None = None,
                    add_special_tokens: bool = True, max_length: int | None = None,
                    is_split_into_words: bool = False) -> Encoding:
        """The :class:`Encoding` (ids, tokens, type ids, special-token mask, attention mask,
        offsets, word and sequence ids) of ``text`` (and ``pair``), truncated to ``max_length``
        (default: the file's truncation, with its strategy, direction and stride; the tokens
        that do not fit go to ``overflowing``). With ``is_split_into_words`` the text and pair
        are lists of words (see :meth:`__call__`)."""
        return self._encode_one(text, pair, add_special_tokens, *self._truncation_settings(max_length),
                                split_into_words=is_split_into_words)

    def encode(self, text: str | Sequence[str], pair: str | Sequence[str] | None = None,
               add_special_tokens: bool = True, max_length: int | None = None,
               is_split_into_words: bool = False) -> list[int]:
        """The ids of ``text`` (and ``pair``), with the post-processor's special tokens unless
        ``add_special_tokens=False``."""
        return self.encode_full(text, pair, add_special_tokens, max_length, is_split_into_words).ids

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text``, without special tokens added."""
        return self.encode_full(text, add_special_tokens=False).tokens

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
