"""GPT-2's tokenizer, read from (and written to) its files ``vocab.json`` and ``merges.txt``,
so that published GPT-2 weights see the ids they were trained on.

GPT-2 runs byte-pair encoding over the UTF-8 bytes of a text, as :class:`~lamina.text.BPETokenizer`
does, but its files spell every byte as a printable character:

* Byte-to-unicode table (:func:`bytes_to_unicode`): the 188 bytes that are printable
  Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
  bytes, in increasing order, take the characters U+0100, U+0101, ... (so the space, byte
  32, is 'Ġ' U+0120 and the newline 'Ċ' U+010A). A token is the string of its bytes' characters.
* ``vocab.json``: token string -> id; ``merges.txt``: a '#version' line, then one merge
  "a b" per line, the earliest line the highest priority.
* Pre-tokenization (:data:`GPT2_PATTERN`): the text is cut into the contractions 's 't 're
  've 'm 'll 'd, runs of letters, runs of numbers and runs of other symbols (each with at
  most one space before it), and runs of whitespace (a run followed by a word leaves its last
  space to the word). Letters are the Unicode categories L*, numbers N*; Python's ``re`` has
  no \\p{L}, so the classes are written out as ranges of code points found with
  :mod:`unicodedata` (built once, on first use).
* Encoding a chunk: its bytes as characters, then, while some adjacent pair is a merge, the
  pair of the earliest merge is joined (every occurrence, left to right); the resulting
  tokens are looked up in the vocabulary. Each distinct chunk is encoded once and cached.
* Special tokens ('<|endoftext|>', id 50256 in GPT-2's files) are ordinary text unless
  ``encode(..., allowed_special=...)`` names them: then each occurrence is kept whole as
  its one id.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lamina.io.atomic import write_bytes_atomic
from lamina.text.bpe import BPETokenizer, ByteLevelRoles

__all__ = ["ENDOFTEXT", "GPT2Tokenizer", "bytes_to_unicode", "gpt2_pattern"]

ENDOFTEXT = "<|endoftext|>"
MERGES_HEADER = "#version: 0.2"
_CACHE_LIMIT = 1 << 16


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: the printable Latin-1 bytes map to themselves, the
    other bytes b, in increasing order, to chr(256 + k) for k = 0, 1, ... (see the module
    docstring). 256 distinct printable characters, none of them whitespace."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return dict(sorted(table.items()))


def _class_ranges(prefix: str) -> str:
    """The code points whose Unicode category starts with ``prefix`` ('L', 'N'), as the
    ranges of a regular-expression character class ('\\u0041-\\u005a...')."""
    def escaped(code: int) -> str:
        return f"\\U{code:08x}"

    parts, start = [], None
    for code in range(sys.maxunicode + 2):
        inside = code <= sys.maxunicode and unicodedata.category(chr(code)).startswith(prefix)
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            parts.append(escaped(start) if code - 1 == start else f"{escaped(start)}-{escaped(code - 1)}")
            start = None
    return "".join(parts)


@functools.cache
def gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenization pattern for the standard library's ``re``:

        's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^\\s L N]+|\\s+(?!\\S)|\\s+

    with L the letters (Unicode categories Lu, Ll, Lt, Lm, Lo: \\p{L}) and N the numbers (Nd,
    Nl, No: \\p{N}) of this Python's Unicode database. \\s is Python's whitespace."""
    letters, numbers = _class_ranges("L"), _class_ranges("N")
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^\s{letters}{numbers}]+"
                      r"|\s+(?!\S)|\s+")


def _read(path, who: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{who}: no {what} file at {os.fspath(path)}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{who}: {os.fspath(path)} is not UTF-8 text ({error})") from None


def _parse_merges(text: str, who: str) -> list[tuple[str, str]]:
    """The merges of a merges.txt: a first line starting '#version' is skipped, as are blank lines."""
    merges = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{who}: line {number} of merges.txt must be two tokens separated by one space, "
                             f"got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class GPT2Tokenizer(ByteLevelRoles):
    """GPT-2's byte-level BPE tokenizer (see the module docstring).

    ``vocab``: token string -> id, the ids 0 .. n-1 each once; ``merges``: the pairs of
    token strings, highest priority first. ``special_tokens``: tokens matched whole (when
    allowed) rather than byte-pair encoded; one missing from ``vocab`` takes the next free id.
    ``bos``, ``eos``, ``pad``: the special tokens of those roles (None: none). As GPT-2's,
    '<|endoftext|>' is both bos and eos: :func:`~lamina.text.sample_text` starts from it (so
    an empty prompt works) and stops when the model draws it; :meth:`encode` adds it only
    when asked. A drop-in for :class:`~lamina.text.Vocabulary` in ``sample_text``,
    ``sample_texts`` and ``beam_search_text``.
    """

    def __init__(self, vocab: Mapping[str, int], merges: Iterable[Sequence[str]],
                 special_tokens: Iterable[str] = (ENDOFTEXT,), bos: str | None = ENDOFTEXT,
                 eos: str | None = ENDOFTEXT, pad: str | None = None):
        who = "GPT2Tokenizer"
        if not isinstance(vocab, Mapping) or not all(
                isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool) for t, i in vocab.items()):
            raise ValueError(f"{who}: vocab must map token strings to int ids")
        self._ids: dict[str, int] = dict(vocab)
        specials = list(dict.fromkeys(special_tokens))
        for token in [*specials, *(t for t in (bos, eos, pad) if t is not None)]:
            if not isinstance(token, str) or not token:
                raise ValueError(f"{who}: special tokens must be non-empty strings, got {token!r}")
            if token not in specials:
                specials.append(token)
            self._ids.setdefault(token, len(self._ids))
        if sorted(self._ids.values()) != list(range(len(self._ids))):
            raise ValueError(f"{who}: the vocabulary's ids must be 0 .. {len(self._ids) - 1}, each once")
        self._tokens = [""] * len(self._ids)
        for token, i in self._ids.items():
            self._tokens[i] = token
        self._merges: list[tuple[str, str]] = []
        for k, pair in enumerate(merges):
            if len(pair) != 2 or not all(isinstance(part, str) and part for part in pair):
                raise ValueError(f"{who}: merge {k} must be a pair of non-empty token strings, got {pair!r}")
            self._merges.append((pair[0], pair[1]))
        self._ranks = {pair: k for k, pair in enumerate(self._merges)}
        if len(self._ranks) != len(self._merges):
            raise ValueError(f"{who}: the merges repeat a pair; each pair merges once")
        self._special_tokens = specials
        self.roles = {"bos": bos, "eos": eos, "pad": pad}
        self._byte_chars = bytes_to_unicode()
        self._char_bytes = {char: b for b, char in self._byte_chars.items()}
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- files ----------------------------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike,
                   **options) -> GPT2Tokenizer:
        """The tokenizer of a ``vocab.json`` and a ``merges.txt`` (GPT-2's, or written by
        :meth:`save`); ``options`` are the constructor's (special tokens and roles)."""
        who = "GPT2Tokenizer.from_files"
        try:
            vocab = json.loads(_read(vocab_json, who, "vocab.json"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{who}: {os.fspath(vocab_json)} is not JSON ({error})") from None
        if not isinstance(vocab, dict):
            raise ValueError(f"{who}: {os.fspath(vocab_json)} must hold a JSON object (token -> id), "
                             f"got a {type(vocab).__name__}")
        merges = _parse_merges(_read(merges_txt, who, "merges.txt"), who)
        try:
            return cls(vocab, merges, **options)
        except ValueError as error:
            raise ValueError(f"{who}: {os.fspath(vocab_json)} and {os.fspath(merges_txt)} hold no valid tokenizer "
                             f"({error})") from None

    def save(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``vocab.json`` (tokens in id order) and ``merges.txt`` (the '#version: 0.2'
        line, then one merge a line) into ``directory`` (made if missing), each atomically.
        Returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        vocab = {token: i for i, token in enumerate(self._tokens)}
        write_bytes_atomic(vocab_path, json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
        lines = [MERGES_HEADER, *(f"{a} {b}" for a, b in self._merges)]
        write_bytes_atomic(merges_path, ("\n".join(lines) + "\n").encode("utf-8"))
        return vocab_path, merges_path

    @classmethod
    def from_bpe(cls, tokenizer: BPETokenizer) -> GPT2Tokenizer:
        """The GPT-2 form of a trained :class:`~lamina.text.BPETokenizer`: its tokens spelled
        with :func:`bytes_to_unicode`, its merges as pairs of those strings, its special
        tokens and roles kept, every id the same. Saved with :meth:`save`, it gives GPT-2
        files for a trained tokenizer. Refused (ValueError) when two tokens spell the same
        bytes (merges (ab, c) and (a, bc)), which one vocab.json cannot hold. The ids agree
        with the tokenizer's own for one that pre-tokenizes with :data:`~lamina.text.GPT2_SPLIT`
        on text where that pattern and :func:`gpt2_pattern` cut alike (any ASCII text)."""
        if not isinstance(tokenizer, BPETokenizer):
            raise TypeError(f"GPT2Tokenizer.from_bpe: expected a BPETokenizer, got {type(tokenizer).__name__}")
        table = bytes_to_unicode()
        merged = len(tokenizer) - len(tokenizer.special_tokens)
        spelled = ["".join(table[b] for b in tokenizer.token_bytes(i)) for i in range(merged)]
        vocab: dict[str, int] = {}
        for i, token in enumerate(spelled):
            vocab.setdefault(token, i)
        if len(vocab) < merged:
            raise ValueError("GPT2Tokenizer.from_bpe: two of the tokenizer's tokens spell the same bytes, which "
                             "one vocab.json cannot hold")
        for token in tokenizer.special_tokens:
            vocab[token] = tokenizer.special_id(token)
        merges = [(spelled[a], spelled[b]) for a, b in tokenizer.merges]
        return cls(vocab, merges, tokenizer.special_tokens, **{role: tokenizer.roles[role]
                                                                 for role in ("bos", "eos", "pad")})

    def to_hf_json(self) -> str:
        """This tokenizer as the text of a Hugging Face ``tokenizer.json`` (see
        :mod:`lamina.text.hf_convert`), which :class:`~lamina.text.HFTokenizer` reads."""
        from lamina.text.hf_convert import gpt2_tokenizer_json

        return json.dumps(gpt2_tokenizer_json(self), ensure_ascii=False)

    def __call__(self, text, text_pair=None, **options):
        """Hugging Face-style call (padding, truncation, offsets...; the options of
        :meth:`HFTokenizer.__call__ <lamina.text.HFTokenizer.__call__>`) through this tokenizer's
        tokenizer.json, where special tokens in the text are always matched."""
        from lamina.text.hf_convert import call_as_hf

        return call_as_hf(self, text, text_pair, **options)

    # -- lookups --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def merges(self) -> list[tuple[str, str]]:
        return list(self._merges)

    @property
    def special_tokens(self) -> list[str]:
        return list(self._special_tokens)

    def token_to_id(self, token: str) -> int:
        """The id of ``token`` (a string of vocab.json)."""
        if token not in self._ids:
            raise KeyError(f"GPT2Tokenizer.token_to_id: {token!r} is not in the vocabulary")
        return self._ids[token]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The token strings of ``ids``, as vocab.json spells them ('Ġworld')."""
        return [self._tokens[self._checked(i, "tokens")] for i in _id_list(ids)]

    def _role_id(self, role: str) -> int | None:
        token = self.roles[role]
        return None if token is None else self._ids[token]

    def _checked(self, token_id, where: str) -> int:
        token_id = int(token_id)
        if not 0 <= token_id < len(self):
            raise ValueError(f"GPT2Tokenizer.{where}: id {token_id} outside [0, {len(self)})")
        return token_id

    # -- encoding -------------------------------------------------------------------------
    def pre_tokenize(self, text: str) -> list[str]:
        """The chunks GPT-2 encodes one by one (:func:`gpt2_pattern`); they join back to ``text``."""
        return gpt2_pattern().findall(text)

    def _bpe(self, word: str) -> list[str]:
        """The tokens of one chunk spelled in byte characters: the earliest merge of any
        adjacent pair joined, all its occurrences left to right, until no pair is a merge."""
        parts = list(word)
        ranks, unranked = self._ranks, len(self._ranks)
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda pair: ranks.get(pair, unranked))
            if best not in ranks:
                break
            joined, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    joined.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    joined.append(parts[i])
                    i += 1
            parts = joined
        return parts

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        word = "".join(self._byte_chars[b] for b in chunk.encode("utf-8"))
        ids = []
        for token in self._bpe(word):
            if token not in self._ids:
                raise ValueError(f"GPT2Tokenizer.encode: the token {token!r} of {chunk!r} is not in the "
                                 "vocabulary (vocab.json lacks a byte or a merge's result)")
            ids.append(self._ids[token])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = result = tuple(ids)
        return result

    def _allowed(self, allowed_special) -> list[str]:
        if allowed_special == "all":
            return list(self._special_tokens)
        if isinstance(allowed_special, str):
            allowed_special = {allowed_special}
        allowed = list(allowed_special)
        unknown = [t for t in allowed if t not in self._special_tokens]
        if unknown:
            raise ValueError(f"GPT2Tokenizer.encode: allowed_special names {unknown}, which are not among the "
                             f"special tokens {self._special_tokens}")
        return allowed

    def _pieces(self, text: str, allowed: list[str]) -> Iterator[tuple[str, bool]]:
        """(piece, is_special) for ``text`` cut at the ``allowed`` special tokens."""
        if not allowed:
            yield text, False
            return
        pattern = "|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True))
        end = 0
        for match in re.finditer(pattern, text):
            yield text[end:match.start()], False
            yield match.group(), True
            end = match.end()
        yield text[end:], False

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False,
               allowed_special: Iterable[str] | str = ()) -> list[int]:
        """The ids of ``text``. ``allowed_special``: the special tokens (or 'all') whose
        strings in the text stand for those tokens; the others are encoded as ordinary text,
        so no text injects a special token by default. ``add_bos``/``add_eos`` frame the ids
        by the bos/eos ids."""
        if not isinstance(text, str):
            raise TypeError(f"GPT2Tokenizer.encode: expected a str, got {type(text).__name__}")
        ids = [self._required("bos")] if add_bos else []
        for piece, special in self._pieces(text, self._allowed(allowed_special)):
            if special:
                ids.append(self._ids[piece])
            else:
                for chunk in self.pre_tokenize(piece):
                    ids.extend(self._encode_chunk(chunk))
        if add_eos:
            ids.append(self._required("eos"))
        return ids

    def encode_batch(self, texts: Iterable[str], add_bos: bool = False, add_eos: bool = False,
                     allowed_special: Iterable[str] | str = ()) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(text, add_bos, add_eos, allowed_special) for text in texts]

    def _required(self, role: str) -> int:
        token_id = self._role_id(role)
        if token_id is None:
            raise ValueError(f"GPT2Tokenizer.encode: add_{role}=True but the tokenizer has no {role} token")
        return token_id

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of ``ids``: their characters mapped back to bytes and read as UTF-8, a
        byte sequence that is not UTF-8 read as U+FFFD (as GPT-2's errors='replace'); the
        special tokens are left out unless ``skip_specials=False``."""
        pending = bytearray()
        specials = set(self._special_tokens)
        for token_id in _id_list(ids):
            token = self._tokens[self._checked(token_id, "decode")]
            if token in specials:
                if not skip_specials:
                    pending.extend(token.encode("utf-8"))
                continue
            try:
                pending.extend(self._char_bytes[char] for char in token)
            except KeyError:
                raise ValueError(f"GPT2Tokenizer.decode: the token {token!r} (id {token_id}) holds a character "
                                 "outside GPT-2's byte alphabet") from None
        return bytes(pending).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        roles = "".join(f", {k}={v!r}" for k, v in self.roles.items() if v is not None)
        return f"GPT2Tokenizer({len(self)} tokens, {len(self._merges)} merges{roles})"


def _id_list(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, np.ndarray):
        return ids.reshape(-1).tolist()
    return [int(i) for i in ids]
