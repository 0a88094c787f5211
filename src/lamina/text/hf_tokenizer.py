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
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from lamina.io.atomic import write_bytes_atomic
from lamina.text.hf_alignment import AlignedString, Words
from lamina.text.hf_batch import BatchEncoding, call_inputs, padding_length, truncation_strategy
from lamina.text.hf_decoders import Decoder, decoder_from_json
from lamina.text.hf_encoding_parts import AddedToken, TextColumns, WordTokens, content_range, split_at_added_tokens
from lamina.text.hf_models import Model, model_from_json
from lamina.text.hf_normalizers import Normalizer, normalizer_from_json
from lamina.text.hf_pre_tokenizers import PreTokenizer, pre_tokenizer_from_json
from lamina.text.hf_processors import (
    BertProcessing,
    Encoding,
    PostProcessor,
    RobertaProcessing,
    TemplateProcessing,
    default_process,
    post_processor_from_json,
)
from lamina.text.hf_trainers import Trainer
from lamina.text.hf_training import train_new, trained_model
from lamina.text.hf_truncation import truncate_pair

__all__ = ["AddedToken", "BatchEncoding", "Encoding", "HFTokenizer"]

_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>")
_WORD_CACHE_LIMIT = 1 << 15


def _with_windows(rows: list[Encoding]) -> tuple[list[Encoding], list[int]]:
    """Each encoding followed by its overflowing windows, and the index of the encoding each came from."""
    out, samples = [], []
    for k, row in enumerate(rows):
        for part in (replace(row, overflowing=[]), *row.overflowing):
            out.append(part)
            samples.append(k)
    return out, samples


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

    # -- encoding -----------------------------------------------------------------------------
    def _encode_text(self, text: str) -> Encoding:
        """Steps 1 and 2 of the module docstring, without special tokens: every token with its
        offsets in ``text``, its word (a pre-tokenized word or an added token) and sequence 0."""
        out = TextColumns()
        whole = AlignedString.original(text)
        for start, end, token in split_at_added_tokens(text, self._raw_tokens):
            if token is not None:
                out.add_token(token, whole, *content_range(text, start, end, token))
                continue
            piece = AlignedString.original(text[start:end], start)
            normalized = self.normalizer.normalize_aligned(piece) if self.normalizer is not None else piece
            for k, (a, b, inner) in enumerate(split_at_added_tokens(normalized.text, self._normalized_tokens)):
                if inner is not None:
                    out.add_token(inner, normalized, *content_range(normalized.text, a, b, inner))
                    continue
                chunk = normalized.slice(a, b)
                cuts = [Words(chunk, [(0, len(chunk))])] if self.pre_tokenizer is None else (
                    self.pre_tokenizer.pre_tokenize_words([chunk], start == 0 and k == 0))
                for words in cuts:
                    self._add_words(out, words)
        return out.encoding()

    def _add_words(self, out: TextColumns, words: Words) -> None:
        """The tokens of each of ``words`` added to ``out`` (from the word cache, when the model allows it)."""
        keep = self.model.deterministic
        cache = self._word_caches.setdefault((self.model, words.spell), {}) if keep else {}
        text, ids, tokens, starts, ends = words.source.text, out.ids, out.tokens, out.starts, out.ends
        add_word_start, add_count = out.word_starts.append, out.counts.append
        before = len(ids)
        for a, b in words.ranges:
            raw = text[a:b]
            found = cache.get(raw)
            if found is None:
                found = self._word_tokens(raw, words.spell)
                if keep:
                    if len(cache) >= _WORD_CACHE_LIMIT:
                        cache.clear()
                    cache[raw] = found
            found_ids, found_tokens, found_starts, found_ends = found
            ids += found_ids
            tokens += found_tokens
            starts += found_starts
            ends += found_ends
            add_word_start(a)
            add_count(len(found_ids))
        out.add_source(words.source, len(ids) - before)

    def _word_tokens(self, raw: str, spell: Callable[[str], str] | None) -> WordTokens:
        """The model's tokens of the word ``raw`` read through ``spell``, each with the characters
        of ``raw`` it covers (an empty word has no tokens)."""
        word = AlignedString.original(raw)
        if spell is not None:
            word = word.map_text(spell)
        pieces = self.model.tokenize_spans(word.text) if raw else []
        spans = [word.span(first, last) for _, _, first, last in pieces]
        return WordTokens([p[0] for p in pieces], [p[1] for p in pieces], [s for s, _ in spans],
                           [e for _, e in spans])

    def _truncation_settings(self, max_length: int | None) -> tuple[int | None, str, bool, int]:
        """(max_length, strategy, from the left, stride) from the arguments and the file's truncation."""
        settings = self.truncation or {}
        if max_length is None:
            max_length = settings.get("max_length")
        return (max_length, settings.get("strategy", "LongestFirst"), settings.get("direction", "Right") == "Left",
                int(settings.get("stride", 0)))

    def _truncate(self, first: Encoding, second: Encoding | None, max_length: int | None,
                  add_special_tokens: bool, strategy: str = "LongestFirst", from_left: bool = False,
                  stride: int = 0) -> tuple[Encoding, Encoding | None]:
        """Both texts cut to fit ``max_length`` with the special tokens (see
        :mod:`lamina.text.hf_truncation`), each with its overflowing windows."""
        if max_length is None:
            return first, second
        extra = self.post_processor.added_count(second is not None) if (
            add_special_tokens and self.post_processor is not None) else 0
        if max_length < extra:
            raise ValueError(f"HFTokenizer.encode: max_length={max_length} leaves no room for the {extra} special "
                             "tokens")
        try:
            return truncate_pair(first, second, max_length - extra, strategy, stride, from_left)
        except ValueError as error:
            raise ValueError(f"HFTokenizer.encode: max_length={max_length}: {error}") from None

    def _join(self, first: Encoding, second: Encoding | None, add_special_tokens: bool) -> Encoding:
        if add_special_tokens and self.post_processor is not None:
            return self.post_processor.process(first, second)
        return default_process(first, second)

    def _post_process(self, first: Encoding, second: Encoding | None, add_special_tokens: bool) -> Encoding:
        """The post-processor's encoding of the texts; its overflowing windows pair every window
        of one text with the other's kept part and windows, in the ``tokenizers`` library's order:
        each window of the first with the second's kept part, then with each window of the second;
        then the first's kept part with each window of the second. Every window gets the token
        types of its text (the ``tokenizers`` library leaves the windows of a second text at type 0: its
        issue #1908)."""
        out = self._join(first, second, add_special_tokens)
        seconds = [] if second is None else second.overflowing
        if not (first.overflowing or seconds):
            return out
        windows = []
        for window in first.overflowing:
            windows.append(self._join(window, second, add_special_tokens))
            windows += [self._join(window, other, add_special_tokens) for other in seconds]
        windows += [self._join(first, other, add_special_tokens) for other in seconds]
        return replace(out, overflowing=windows)

    def _encode_words(self, words: Sequence[str]) -> Encoding:
        """Pre-split words, each encoded as a text of its own: its tokens get the word's index as
        their word id and offsets within the word (as the ``tokenizers`` library gives them)."""
        out = Encoding()
        for index, word in enumerate(words):
            encoding = self._encode_text(word)
            encoding.word_ids = [index] * len(encoding)
            out.extend(encoding)
        return out

    def _encode_input(self, value: Any, name: str, split_into_words: bool) -> Encoding:
        if not split_into_words:
            if not isinstance(value, str):
                raise TypeError(f"HFTokenizer.encode: {name} must be a str, got {type(value).__name__}")
            return self._encode_text(value)
        if isinstance(value, str) or not all(isinstance(word, str) for word in value):
            raise TypeError(f"HFTokenizer.encode: with is_split_into_words, {name} must be a list of str (words), "
                            f"got {value!r:.60}")
        return self._encode_words(value)

    def _encode_one(self, text: str | Sequence[str], pair: str | Sequence[str] | None, add_special_tokens: bool,
                    max_length: int | None, strategy: str = "LongestFirst", from_left: bool = False,
                    stride: int = 0, split_into_words: bool = False) -> Encoding:
        first = self._encode_input(text, "text", split_into_words)
        second = None if pair is None else self._encode_input(pair, "pair", split_into_words)
        first, second = self._truncate(first, second, max_length, add_special_tokens, strategy, from_left, stride)
        return self._post_process(first, second, add_special_tokens)

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
