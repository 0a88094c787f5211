"""The encoding pipeline of :class:`lamina.text.HFTokenizer` on one text (or pair): the added
tokens cut out of the raw and the normalized text, the normalizer, the pre-tokenizer and the
model on each word (with a cache of each word's tokens and the characters they cover), then
truncation with its overflowing windows and the post-processor's special tokens. The steps are
described in :mod:`lamina.text.hf_tokenizer`; :class:`_EncodingPipeline` is a base class of
``HFTokenizer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from lamina.text.hf_alignment import AlignedString, Words
from lamina.text.hf_encoding_parts import TextColumns, WordTokens, content_range, split_at_added_tokens
from lamina.text.hf_processors import Encoding, default_process
from lamina.text.hf_truncation import truncate_pair

__all__: list[str] = []

_WORD_CACHE_LIMIT = 1 << 15


class _EncodingPipeline:
    """:class:`lamina.text.HFTokenizer`'s encoding of one text or pair (module docstring)."""

    # -- encoding -----------------------------------------------------------------------------
    def _encode_text(self, text: str) -> Encoding:
        """Steps 1 and 2 of :mod:`lamina.text.hf_tokenizer`, without special tokens: every token with its
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
