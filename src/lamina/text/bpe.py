"""Byte-pair encoding (BPE): a subword tokenizer over the UTF-8 bytes of a text.

Training starts from the 256 byte values as the tokens and repeatedly merges the most
frequent pair of adjacent tokens (a, b) into one new token ab, until the vocabulary holds
``vocab_size`` tokens (Sennrich et al. 2016, after Gage's 1994 compression scheme, on the
bytes of the text as in GPT-2). Every byte is a token, so any text encodes and decodes
back to itself: there is no unknown token.

* Ids: 0..255 are the bytes, 256, 257, ... the merged tokens in the order they were learned,
  then the special tokens (padding, beginning and end of sequence, any others).
* Pre-tokenization: the text is first cut into chunks by a regular expression (by default
  :data:`GPT2_SPLIT`: a word with the space before it, a number, a run of other symbols, a
  run of spaces), and pairs are counted and merged within each chunk only, so no token
  spans a word and its punctuation. ``pre_tokenize=None`` keeps each text whole (meant for
  short texts such as names: encoding a chunk takes time that grows with its length times
  the merges it goes through).
* Ties: of the pairs with the highest count, the one with the smallest first id, then the
  smallest second id, merges first (so the byte order decides between byte pairs).
* Encoding a chunk merges, while any adjacent pair has been learned, the pair learned
  earliest (all its occurrences, left to right): the tokens that replaying the merges in
  order would give. Each distinct chunk is encoded once and cached.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lamina.io.atomic import write_bytes_atomic
from lamina.text.vocabulary import Vocabulary

__all__ = ["GPT2_SPLIT", "BPETokenizer", "tokenizer_from_config"]

# GPT-2's pattern written for the standard library's ``re``, which lacks \p{L} and \p{N}:
# letters are the word characters that are neither digits nor '_' ([^\W\d_]), numbers are
# decimal digits (\d). (Other numerals, such as '²' or 'Ⅻ', thus count as letters.)
GPT2_SPLIT = (r"'s|'t|'re|'ve|'m|'ll|'d"
              r"| ?[^\W\d_]+"
              r"| ?\d+"
              r"| ?(?:[^\s\w]|_)+"
              r"|\s+(?!\S)|\s+")

_KIND, _VERSION = "bpe", 1
_BYTES = 256
_CACHE_LIMIT = 1 << 16
_ROLES = ("pad", "bos", "eos")

Pair = tuple[int, int]


def _merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair``, scanned left to right, replaced by ``new_id``."""
    first, second = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _learn_merges(chunk_counts: dict[bytes, int], num_merges: int) -> list[Pair]:
    """Up to ``num_merges`` merges learned from chunks (bytes) and their counts.

    The tokens of all chunks, one chunk after another, form a doubly linked list: position i
    holds ``tokens[i]`` (-1 once merged into its left neighbour), its neighbours ``before[i]``
    and ``after[i]`` (-1 at the ends of a chunk) and ``weight[i]``, its chunk's count. The
    pair counts are kept up to date rather than recounted: merging (a, b) at position i, with
    x before and y after, takes (x, a), (a, b), (b, y) off the counts and adds (x, ab) and
    (ab, y), so a merge costs time in proportion to its occurrences. ``places`` holds the
    positions where each pair starts (some stale, checked when used); a heap ordered by
    (-count, pair) yields the next merge, skipping entries whose count is out of date."""
    tokens: list[int] = []
    before: list[int] = []
    after: list[int] = []
    weight: list[int] = []
    for chunk, count in chunk_counts.items():
        start, n = len(tokens), len(chunk)
        tokens.extend(chunk)
        before.extend(range(start - 1, start + n - 1))
        after.extend(range(start + 1, start + n + 1))
        before[start], after[-1] = -1, -1
        weight.extend([count] * n)
    counts: dict[Pair, int] = defaultdict(int)
    places: dict[Pair, set[int]] = defaultdict(set)
    for i, j in enumerate(after):
        if j >= 0:
            pair = (tokens[i], tokens[j])
            counts[pair] += weight[i]
            places[pair].add(i)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while heap and len(merges) < num_merges:
        negative_count, pair = heapq.heappop(heap)
        if counts.get(pair) != -negative_count:
            continue
        first, second = pair
        new_id = _BYTES + len(merges)
        merges.append(pair)
        changed = {pair}
        for i in sorted(places.pop(pair)):                 # left to right: 'aaa' merges its first 'aa'
            j = after[i]
            if tokens[i] != first or j < 0 or tokens[j] != second:
                continue
            w = weight[i]
            counts[pair] -= w
            x, y = before[i], after[j]
            if x >= 0:
                for old_or_new, delta in (((tokens[x], first), -w), ((tokens[x], new_id), w)):
                    counts[old_or_new] += delta
                    changed.add(old_or_new)
                places[(tokens[x], new_id)].add(x)
            if y >= 0:
                for old_or_new, delta in (((second, tokens[y]), -w), ((new_id, tokens[y]), w)):
                    counts[old_or_new] += delta
                    changed.add(old_or_new)
                places[(new_id, tokens[y])].add(i)
                before[y] = i
            tokens[i], tokens[j], after[i] = new_id, -1, y
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
    return merges


class ByteLevelRoles:
    """The role ids of a byte-level tokenizer (:class:`BPETokenizer`, GPT-2's): ``pad_id``,
    ``bos_id``, ``eos_id`` from the subclass's ``_role_id(role)``, and no ``unk_id``."""

    def _role_id(self, role: str) -> int | None:
        raise NotImplementedError

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def unk_id(self) -> None:
        """None: every byte is a token, so nothing is unknown."""
        return None


class BPETokenizer(ByteLevelRoles):
    """Text <-> ids by byte-pair encoding (see the module docstring).

    ``merges``: the learned pairs of ids, in order; merge k makes id 256 + k.
    ``special_tokens``: extra special tokens; ``pad``, ``bos``, ``eos``: the special tokens
    of those roles (None leaves one out; ``bos`` and ``eos`` may be the same token). The
    specials take the ids after the merged tokens, in the order pad, bos, eos, the others.
    ``pre_tokenize``: the regular expression that cuts a text into chunks, or None.
    A drop-in for :class:`Vocabulary` in ``shifted_pairs``, ``sample_text`` and
    ``beam_search_text``.
    """

    def __init__(self, merges: Iterable[Sequence[int]] = (), special_tokens: Iterable[str] = (),
                 pad: str | None = "<pad>", bos: str | None = None, eos: str | None = None,
                 pre_tokenize: str | None = GPT2_SPLIT):
        self._merges: list[Pair] = []
        self._bytes: list[bytes] = [bytes([b]) for b in range(_BYTES)]
        for k, pair in enumerate(merges):
            new_id = _BYTES + k
            if (len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
                    or not all(0 <= i < new_id for i in pair)):
                raise ValueError(f"BPETokenizer: merge {k} must be a pair of ids of earlier tokens, in [0, {new_id}), "
                                 f"got {pair!r}")
            self._merges.append((pair[0], pair[1]))
            self._bytes.append(self._bytes[pair[0]] + self._bytes[pair[1]])
        self._ranks: dict[Pair, int] = {pair: _BYTES + k for k, pair in enumerate(self._merges)}
        if len(self._ranks) != len(self._merges):
            raise ValueError("BPETokenizer: the merges repeat a pair; each pair merges once")
        self.roles = {"pad": pad, "bos": bos, "eos": eos}
        self._special_ids: dict[str, int] = {}
        for token in [t for t in self.roles.values() if t is not None] + list(special_tokens):
            if not isinstance(token, str) or not token:
                raise TypeError(f"BPETokenizer: special tokens must be non-empty strings, got {token!r}")
            self._special_ids.setdefault(token, len(self._bytes) + len(self._special_ids))
        self._special_tokens = list(self._special_ids)
        if pre_tokenize is not None:
            try:
                self._pattern: re.Pattern | None = re.compile(pre_tokenize)
            except (re.error, TypeError) as error:
                raise ValueError(f"BPETokenizer: pre_tokenize must be a regular expression or None, got "
                                 f"{pre_tokenize!r} ({error})") from None
        else:
            self._pattern = None
        self.pre_tokenize = pre_tokenize
        self._specials_pattern = (re.compile("|".join(re.escape(t) for t in sorted(self._special_ids, key=len,
                                                                                     reverse=True)))
                                  if self._special_ids else None)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (),
              pad: str | None = "<pad>", bos: str | None = None, eos: str | None = None,
              pre_tokenize: str | None = GPT2_SPLIT) -> BPETokenizer:
        """Learn merges from a text or texts (no merge across texts nor chunks) until there are
        ``vocab_size`` tokens, the specials included; fewer when no adjacent pair is left."""
        base = cls((), special_tokens, pad=pad, bos=bos, eos=eos, pre_tokenize=pre_tokenize)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(base):
            raise ValueError(f"BPETokenizer.train: vocab_size must be an int >= {len(base)} (256 bytes and "
                             f"{len(base) - _BYTES} special tokens), got {vocab_size!r}")
        if isinstance(texts, str):
            texts = [texts]
        chunks: Counter[str] = Counter()
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"BPETokenizer.train: texts must be strings, got {type(text).__name__}")
            chunks.update(base._chunks(text))
        chunk_counts = {chunk.encode("utf-8"): count for chunk, count in chunks.items()}
        merges = _learn_merges(chunk_counts, vocab_size - len(base))
        return cls(merges, special_tokens, pad=pad, bos=bos, eos=eos, pre_tokenize=pre_tokenize)

    # -- lookups --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._bytes) + len(self._special_tokens)

    @property
    def merges(self) -> list[Pair]:
        return list(self._merges)

    @property
    def special_tokens(self) -> list[str]:
        return list(self._special_tokens)

    def special_id(self, token: str) -> int:
        """The id of special token ``token``."""
        if token not in self._special_ids:
            raise KeyError(f"BPETokenizer: {token!r} is not one of the special tokens {self._special_tokens}")
        return self._special_ids[token]

    def _role_id(self, role: str) -> int | None:
        token = self.roles[role]
        return None if token is None else self._special_ids[token]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 text)."""
        token_id = self._checked(token_id, "token_bytes")
        if token_id < len(self._bytes):
            return self._bytes[token_id]
        return self._special_tokens[token_id - len(self._bytes)].encode("utf-8")

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The text of each token, for reading: the bytes of a token that is not whole UTF-8
        characters appear as escapes such as '\\xe2'."""
        return [self.token_bytes(i).decode("utf-8", errors="backslashreplace") for i in _id_list(ids)]

    # -- encoding -------------------------------------------------------------------------
    def _chunks(self, text: str) -> Iterator[str]:
        """The pre-tokenization chunks of ``text``, the text between matches included, so
        that they always join back to the text."""
        if self._pattern is None:
            if text:
                yield text
            return
        end = 0
        for match in self._pattern.finditer(text):
            if match.start() > end:
                yield text[end:match.start()]
            if match.end() > match.start():
                yield match.group()
            end = max(end, match.end())
        if end < len(text):
            yield text[end:]

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = list(chunk.encode("utf-8"))
        ranks = self._ranks
        while len(ids) > 1:
            earliest = min(zip(ids, ids[1:]), key=lambda pair: ranks.get(pair, len(self._bytes)))
            if earliest not in ranks:
                break
            ids = _merge(ids, earliest, ranks[earliest])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = result = tuple(ids)
        return result

    def _pieces(self, text: str, specials: bool) -> Iterator[tuple[str, bool]]:
        """(piece, is_special) for ``text``, cut at the special tokens when ``specials``."""
        if not specials or self._specials_pattern is None:
            yield text, False
            return
        end = 0
        for match in self._specials_pattern.finditer(text):
            yield text[end:match.start()], False
            yield match.group(), True
            end = match.end()
        yield text[end:], False

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False, specials: bool = False) -> list[int]:
        """The ids of ``text``; ``add_bos``/``add_eos`` frame them by the bos/eos ids.
        ``specials=True`` reads the special tokens' strings in the text as those tokens;
        by default they are ordinary text (so no text can inject a special token)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: expected a str, got {type(text).__name__}")
        ids = [self._required("bos")] if add_bos else []
        for piece, special in self._pieces(text, specials):
            if special:
                ids.append(self._special_ids[piece])
            else:
                for chunk in self._chunks(piece):
                    ids.extend(self._encode_chunk(chunk))
        if add_eos:
            ids.append(self._required("eos"))
        return ids

    def encode_batch(self, texts: Iterable[str], add_bos: bool = False, add_eos: bool = False,
                     specials: bool = False) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(text, add_bos, add_eos, specials) for text in texts]

    def _required(self, role: str) -> int:
        token_id = self._role_id(role)
        if token_id is None:
            raise ValueError(f"BPETokenizer.encode: add_{role}=True but the tokenizer has no {role} token")
        return token_id

    def _checked(self, token_id, where: str) -> int:
        token_id = int(token_id)
        if not 0 <= token_id < len(self):
            raise ValueError(f"BPETokenizer.{where}: id {token_id} outside [0, {len(self)})")
        return token_id

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of ``ids``: their bytes joined and read as UTF-8, a byte sequence that is
        not UTF-8 (part of a character) read as U+FFFD; the special tokens are left out unless
        ``skip_specials=False``."""
        pieces = []
        for token_id in _id_list(ids):
            token_id = self._checked(token_id, "decode")
            if token_id < len(self._bytes):
                pieces.append(self._bytes[token_id])
            elif not skip_specials:
                pieces.append(self._special_tokens[token_id - len(self._bytes)].encode("utf-8"))
        return b"".join(pieces).decode("utf-8", errors="replace")

    # -- saving ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        role_tokens = {t for t in self.roles.values() if t is not None}
        return {"kind": _KIND, "version": _VERSION, "merges": [list(pair) for pair in self._merges],
                "special_tokens": [t for t in self._special_tokens if t not in role_tokens], **self.roles,
                "pre_tokenize": self.pre_tokenize}

    @classmethod
    def from_config(cls, config: dict) -> BPETokenizer:
        """The tokenizer of :meth:`get_config`; a config of another kind or version is refused."""
        if not isinstance(config, dict) or config.get("kind") != _KIND or config.get("version") != _VERSION:
            found = (f"kind={config.get('kind')!r}, version={config.get('version')!r}" if isinstance(config, dict)
                     else f"a {type(config).__name__}")
            raise ValueError(f"BPETokenizer.from_config: expected a config of kind {_KIND!r}, version {_VERSION}, "
                             f"got {found}")
        expected = {"kind", "version", "merges", "special_tokens", *_ROLES, "pre_tokenize"}
        if set(config) != expected:
            raise ValueError(f"BPETokenizer.from_config: expected the keys {sorted(expected)}, got {sorted(config)}")
        if not isinstance(config["merges"], list) or not isinstance(config["special_tokens"], list):
            raise ValueError("BPETokenizer.from_config: 'merges' and 'special_tokens' must be lists")
        return cls(config["merges"], config["special_tokens"], **{role: config[role] for role in _ROLES},
                   pre_tokenize=config["pre_tokenize"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON, atomically."""
        write_bytes_atomic(path, json.dumps(self.get_config(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """The tokenizer saved at ``path``; a file that is not one (of this version) is refused."""
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"BPETokenizer.load: {os.fspath(path)} is not a tokenizer file (not JSON: "
                             f"{error})") from None
        try:
            return cls.from_config(config)
        except (ValueError, TypeError) as error:
            raise ValueError(f"BPETokenizer.load: {os.fspath(path)} holds no valid tokenizer: {error}") from None

    def __eq__(self, other) -> bool:
        return isinstance(other, BPETokenizer) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        roles = "".join(f", {k}={v!r}" for k, v in self.roles.items() if v is not None)
        return f"BPETokenizer({len(self)} tokens: 256 bytes, {len(self._merges)} merges{roles})"


def _id_list(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, np.ndarray):
        return ids.reshape(-1).tolist()
    return [int(i) for i in ids]


def tokenizer_from_config(config: dict) -> Vocabulary | BPETokenizer:
    """The :class:`Vocabulary` or :class:`BPETokenizer` that ``get_config`` described (as
    a model bundle of ``lamina train-text`` stores it)."""
    if isinstance(config, dict) and config.get("kind") == _KIND:
        return BPETokenizer.from_config(config)
    return Vocabulary.from_config(config)
