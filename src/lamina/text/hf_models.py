"""Models of ``tokenizer.json`` files: one pre-tokenized word -> its (id, token) pairs.

* BPE: the word's characters (the first plain, the others with ``continuing_subword_prefix``,
  the last with ``end_of_word_suffix``) become symbols; a character missing from the vocabulary
  becomes its UTF-8 bytes '<0xNN>' (``byte_fallback``, when all are there) or ``unk_token``
  (runs of unknowns joined into one with ``fuse_unk``; dropped when there is no unk token).
  Then, while some adjacent pair is a merge, the earliest merge is joined (its occurrences left to
  right; a heap keeps this O(n log n) for a word of n characters). ``ignore_merges``: a word
  that is itself in the vocabulary is taken whole.
* WordPiece: greedy longest match first, pieces after the first carrying the prefix '##'; a
  word that cannot be covered, or longer than ``max_input_chars_per_word``, is ``unk_token``.
* Unigram: the segmentation maximizing the sum of the pieces' log-probabilities (Viterbi:
  best(j) = max over pieces w = word[i:j] of best(i) + score(w)). A character that starts no
  piece of length one may be covered by the unknown piece, of score min(scores) - 10; adjacent
  unknowns are joined, and spelled as '<0xNN>' bytes with ``byte_fallback``.
* WordLevel: the word's id, or ``unk_token``'s.

``tokenize_spans(word)`` gives each token with the range ``[start, end)`` of the word's characters it
covers (byte pieces of one character: that character's; an unknown piece: its characters').
BPE ``dropout`` p: while encoding, each merge about to be applied is skipped with probability p
(skipped merges return to the queue after the next merge that is applied), drawing from
:func:`lamina.backend.rng` (seeded by :func:`lamina.manual_seed`); p = 1 leaves the characters.
"""

from __future__ import annotations

import heapq
from typing import Any

from lamina import backend
from lamina.text.hf_normalizers import component_class, require

__all__ = ["Model", "model_from_json"]

UNK_PENALTY = 10.0
_CACHE_LIMIT = 1 << 15


def byte_token(byte: int) -> str:
    """The byte-fallback token of a byte: '<0x0A>' for a newline."""
    return f"<0x{byte:02X}>"


def _vocab_dict(data: Any, path: str) -> dict[str, int]:
    if not isinstance(data, dict) or not all(isinstance(i, int) and not isinstance(i, bool) for i in data.values()):
        raise ValueError(f"tokenizer.json: {path} must map token strings to int ids")
    return dict(data)


class Model:
    type_name = ""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab
        self.id_to_token = {i: token for token, i in vocab.items()}

    @property
    def deterministic(self) -> bool:
        """Whether a word always gives the same tokens (so that they may be cached)."""
        return True

    def tokenize_spans(self, word: str) -> list[tuple[int, str, int, int]]:
        """(id, token, start, end) of each token of ``word``: it covers ``word[start:end]``."""
        raise NotImplementedError

    def tokenize(self, word: str) -> list[tuple[int, str]]:
        return [(token_id, token) for token_id, token, _, _ in self.tokenize_spans(word)]

    def _unk_id(self, unk_token: str | None, who: str) -> int | None:
        if unk_token is not None and unk_token not in self.vocab:
            raise ValueError(f"tokenizer.json: model ({who}) unk_token {unk_token!r} is not in its vocab")
        return None if unk_token is None else self.vocab[unk_token]


class BPE(Model):
    type_name = "BPE"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], unk_token: str | None = None,
                 continuing_subword_prefix: str | None = None, end_of_word_suffix: str | None = None,
                 fuse_unk: bool = False, byte_fallback: bool = False, ignore_merges: bool = False,
                 dropout: float | None = None, merges_as_pairs: bool = False):
        super().__init__(vocab)
        self.merges = merges
        self.unk_token, self.unk_id = unk_token, self._unk_id(unk_token, "BPE")
        self.prefix, self.suffix = continuing_subword_prefix or "", end_of_word_suffix or ""
        self.fuse_unk, self.byte_fallback, self.ignore_merges = fuse_unk, byte_fallback, ignore_merges
        self.dropout, self.merges_as_pairs = dropout, merges_as_pairs
        self._ranks = {pair: rank for rank, pair in reversed(list(enumerate(merges)))}
        self._cache: dict[str, list[tuple[int, str, int, int]]] = {}
        if dropout is not None and not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"tokenizer.json: model (BPE) dropout must lie in [0, 1], got {dropout}")

    @property
    def dropping(self) -> bool:
        return bool(self.dropout) and float(self.dropout) > 0.0

    @property
    def deterministic(self) -> bool:
        return not self.dropping

    def _symbols(self, word: str) -> tuple[list[str], list[int], list[int]]:
        """The starting symbols and the character range [start, end) of each."""
        symbols: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        previous_unknown = False
        for k, char in enumerate(word):
            piece = (self.prefix if k else "") + char + (self.suffix if k == len(word) - 1 else "")
            if piece in self.vocab:
                symbols.append(piece)
                starts.append(k)
                ends.append(k + 1)
                previous_unknown = False
                continue
            if self.byte_fallback:
                pieces = [byte_token(b) for b in char.encode("utf-8")]
                if all(p in self.vocab for p in pieces):
                    symbols.extend(pieces)
                    starts.extend([k] * len(pieces))
                    ends.extend([k + 1] * len(pieces))
                    previous_unknown = False
                    continue
            if self.unk_token is not None:
                if self.fuse_unk and previous_unknown:
                    ends[-1] = k + 1
                else:
                    symbols.append(self.unk_token)
                    starts.append(k)
                    ends.append(k + 1)
            previous_unknown = self.unk_token is not None
        return symbols, starts, ends

    def _joined(self, left: str, right: str) -> str:
        return left + (right[len(self.prefix):] if self.prefix and right.startswith(self.prefix) else right)

    def _merge(self, symbols: list[str], ends: list[int]) -> list[int]:
        """The merges applied lowest rank first, leftmost first among equals: a heap of candidate
        pairs over a linked list of symbols, each candidate checked when popped (its symbols may
        have been merged since), so a word of n symbols takes O(n log n). ``symbols`` and
        ``ends`` are updated in place; returns the indices of the symbols left."""
        ranks = self._ranks
        drop = float(self.dropout) if self.dropping else 0.0
        skipped: list[tuple] = []
        following = list(range(1, len(symbols))) + [-1]
        preceding = list(range(-1, len(symbols) - 1))
        alive = [True] * len(symbols)
        heap = [(ranks[pair], i, *pair) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank, i, left, right = heapq.heappop(heap)
            j = following[i]
            if not alive[i] or j < 0 or symbols[i] != left or symbols[j] != right:
                continue
            if drop and backend.rng().random() < drop:
                skipped.append((rank, i, left, right))
                continue
            for candidate in skipped:
                heapq.heappush(heap, candidate)
            skipped.clear()
            symbols[i] = self._joined(left, right)
            ends[i] = ends[j]
            alive[j] = False
            following[i] = following[j]
            if following[j] >= 0:
                preceding[following[j]] = i
            for a, b in ((preceding[i], i), (i, following[i])):
                if a >= 0 and b >= 0 and (symbols[a], symbols[b]) in ranks:
                    heapq.heappush(heap, (ranks[symbols[a], symbols[b]], a, symbols[a], symbols[b]))
        return [k for k, kept in enumerate(alive) if kept]

    def tokenize_spans(self, word: str) -> list[tuple[int, str, int, int]]:
        cached = None if self.dropping else self._cache.get(word)
        if cached is not None:
            return cached
        if self.ignore_merges and word in self.vocab:
            pieces = [(word, 0, len(word))]
        else:
            symbols, starts, ends = self._symbols(word)
            pieces = [(symbols[k], starts[k], ends[k]) for k in self._merge(symbols, ends)]
        missing = [t for t, _, _ in pieces if t not in self.vocab]
        if missing:
            raise ValueError(f"BPE.tokenize: the merges of {word!r} give {missing}, which are not in the vocab")
        result = [(self.vocab[t], t, start, end) for t, start, end in pieces]
        if not self.dropping:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = result
        return result

    def to_json(self) -> dict:
        merges = [list(pair) for pair in self.merges] if self.merges_as_pairs else [f"{a} {b}" for a, b in self.merges]
        return {"type": self.type_name, "dropout": self.dropout, "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix or None, "end_of_word_suffix": self.suffix or None,
                "fuse_unk": self.fuse_unk, "byte_fallback": self.byte_fallback, "ignore_merges": self.ignore_merges,
                "vocab": self.vocab, "merges": merges}

    @classmethod
    def from_json(cls, data: dict, path: str) -> BPE:
        merges, as_pairs = [], False
        for k, merge in enumerate(data.get("merges", [])):
            if isinstance(merge, str):
                parts = merge.split(" ")
            else:
                parts, as_pairs = list(merge), True
            if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
                raise ValueError(f"tokenizer.json: {path}.merges[{k}] must be 'a b' or [a, b], got {merge!r}")
            merges.append((parts[0], parts[1]))
        return cls(_vocab_dict(require(data, "vocab", path), f"{path}.vocab"), merges, data.get("unk_token"),
                   data.get("continuing_subword_prefix"), data.get("end_of_word_suffix"),
                   bool(data.get("fuse_unk", False)), bool(data.get("byte_fallback", False)),
                   bool(data.get("ignore_merges", False)), data.get("dropout"), as_pairs)


class WordPiece(Model):
    type_name = "WordPiece"

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", continuing_subword_prefix: str = "##",
                 max_input_chars_per_word: int = 100):
        super().__init__(vocab)
        self.unk_token, self.unk_id = unk_token, self._unk_id(unk_token, "WordPiece")
        self.prefix, self.max_chars = continuing_subword_prefix, max_input_chars_per_word

    def tokenize_spans(self, word: str) -> list[tuple[int, str, int, int]]:
        unknown = [(self.unk_id, self.unk_token, 0, len(word))]
        if len(word) > self.max_chars:
            return unknown
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return unknown
            pieces.append((self.vocab[piece], piece, start, end))
            start = end
        return pieces

    def to_json(self) -> dict:
        return {"type": self.type_name, "unk_token": self.unk_token, "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_chars, "vocab": self.vocab}

    @classmethod
    def from_json(cls, data: dict, path: str) -> WordPiece:
        return cls(_vocab_dict(require(data, "vocab", path), f"{path}.vocab"), data.get("unk_token", "[UNK]"),
                   data.get("continuing_subword_prefix", "##"), int(data.get("max_input_chars_per_word", 100)))


class Unigram(Model):
    type_name = "Unigram"

    def __init__(self, pieces: list[tuple[str, float]], unk_id: int | None = None, byte_fallback: bool = False):
        vocab: dict[str, int] = {}
        for i, (piece, _) in enumerate(pieces):
            vocab.setdefault(piece, i)
        super().__init__(vocab)
        self.id_to_token = {i: piece for i, (piece, _) in enumerate(pieces)}
        self.pieces, self.unk_id, self.byte_fallback = pieces, unk_id, byte_fallback
        if unk_id is not None and not 0 <= unk_id < len(pieces):
            raise ValueError(f"tokenizer.json: model (Unigram) unk_id {unk_id} is outside its {len(pieces)} pieces")
        self.scores = {piece: float(score) for piece, score in reversed(pieces)}
        self.unk_score = min((s for _, s in pieces), default=0.0) - UNK_PENALTY
        self.longest = max((len(p) for p, _ in pieces), default=1)

    def segment(self, word: str) -> list[tuple[str, bool]]:
        """The best segmentation as (piece, is_unknown), adjacent unknowns joined."""
        n = len(word)
        best: list[tuple[float, int, bool] | None] = [None] * (n + 1)    # (score, start, unknown)
        best[0] = (0.0, 0, False)
        for start in range(n):
            if best[start] is None:
                continue
            base = best[start][0]
            single = False
            for end in range(start + 1, min(n, start + self.longest) + 1):
                score = self.scores.get(word[start:end])
                if score is None:
                    continue
                single |= end == start + 1
                if best[end] is None or base + score > best[end][0]:
                    best[end] = (base + score, start, False)
            if not single and self.unk_id is not None:
                score = base + self.unk_score
                if best[start + 1] is None or score > best[start + 1][0]:
                    best[start + 1] = (score, start, True)
        if best[n] is None:
            raise ValueError(f"Unigram.tokenize: {word!r} has a character no piece covers and the model has no unk_id")
        pieces: list[tuple[str, bool]] = []
        end = n
        while end > 0:
            _, start, unknown = best[end]
            if unknown and pieces and pieces[-1][1]:
                pieces[-1] = (word[start:end] + pieces[-1][0], True)
            else:
                pieces.append((word[start:end], unknown))
            end = start
        return pieces[::-1]

    def tokenize_spans(self, word: str) -> list[tuple[int, str, int, int]]:
        out = []
        start = 0
        for piece, unknown in self.segment(word):
            end = start + len(piece)
            byte_pieces = [byte_token(b) for b in piece.encode("utf-8")] if unknown else []
            if not unknown:
                out.append((self.vocab[piece], piece, start, end))
            elif self.byte_fallback and all(p in self.vocab for p in byte_pieces):
                out.extend((self.vocab[p], p, start, end) for p in byte_pieces)
            else:
                out.append((self.unk_id, self.id_to_token[self.unk_id], start, end))
            start = end
        return out

    def to_json(self) -> dict:
        return {"type": self.type_name, "unk_id": self.unk_id, "vocab": [[p, s] for p, s in self.pieces],
                "byte_fallback": self.byte_fallback}

    @classmethod
    def from_json(cls, data: dict, path: str) -> Unigram:
        pieces = require(data, "vocab", path)
        if not isinstance(pieces, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pieces):
            raise ValueError(f"tokenizer.json: {path}.vocab must be a list of [piece, log-probability]")
        unk_id = data.get("unk_id")
        return cls([(str(p), float(s)) for p, s in pieces], None if unk_id is None else int(unk_id),
                   bool(data.get("byte_fallback", False)))


class WordLevel(Model):
    type_name = "WordLevel"

    def __init__(self, vocab: dict[str, int], unk_token: str | None = None):
        super().__init__(vocab)
        self.unk_token, self.unk_id = unk_token, self._unk_id(unk_token, "WordLevel")

    def tokenize_spans(self, word: str) -> list[tuple[int, str, int, int]]:
        if word in self.vocab:
            return [(self.vocab[word], word, 0, len(word))]
        if self.unk_id is None:
            raise ValueError(f"WordLevel.tokenize: {word!r} is not in the vocab and the model has no unk_token")
        return [(self.unk_id, self.unk_token, 0, len(word))]

    def to_json(self) -> dict:
        return {"type": self.type_name, "vocab": self.vocab, "unk_token": self.unk_token}

    @classmethod
    def from_json(cls, data: dict, path: str) -> WordLevel:
        return cls(_vocab_dict(require(data, "vocab", path), f"{path}.vocab"), data.get("unk_token"))


MODELS = {c.type_name: c for c in (BPE, WordPiece, Unigram, WordLevel)}


def model_from_json(data: Any, path: str = "model") -> Model:
    """The model of a tokenizer.json ``model`` entry (its ``type`` may be missing: then it is
    guessed from the keys, as older files omit it)."""
    if isinstance(data, dict) and "type" not in data:
        kind = "BPE" if "merges" in data else "Unigram" if isinstance(data.get("vocab"), list) else (
            "WordPiece" if "continuing_subword_prefix" in data or "max_input_chars_per_word" in data else "WordLevel")
        data = {**data, "type": kind}
    return component_class(MODELS, data, path, "model").from_json(data, path)
