"""Trainers of ``tokenizer.json`` models, as the ``tokenizers`` library's (``tokenizers.trainers``):
the words of a corpus with their counts (normalized and pre-tokenized by
:meth:`HFTokenizer.train_from_iterator <lamina.text.HFTokenizer.train_from_iterator>`) -> a model.
Every trainer puts its ``special_tokens`` first in the vocabulary (ids 0, 1, ...).

* BpeTrainer: the alphabet is every character of the words (plus ``initial_alphabet``; with
  ``limit_alphabet`` only that many, the most frequent, ``initial_alphabet`` counting as most
  frequent), in code-point order. Each word becomes its characters (characters outside the
  alphabet dropped; all but the first carrying ``continuing_subword_prefix``, the last
  ``end_of_word_suffix``; these spellings take ids in the order the words first appear). Then,
  until the vocabulary holds ``vocab_size`` tokens, the adjacent pair of tokens with the highest
  count over all words (count of a word = its number of occurrences) is merged everywhere, left
  to right; among equal counts the pair of smallest ids (first id, then second) wins, as in the
  ``tokenizers`` library. A pair counted fewer than ``min_frequency`` times (or never) ends
  training; with ``max_token_length`` no pair whose token would span more characters is counted.
  Pair counts are kept up to date incrementally: a merge recounts only the words that hold the
  pair (an index from pair to words), and a heap with lazily discarded stale entries gives the
  best pair.
* WordPieceTrainer: BPE training with the continuing prefix '##'; the WordPiece model takes the
  resulting vocabulary (the ``tokenizers`` library's construction).
* WordLevelTrainer: the special tokens, then the words counted at least ``min_frequency`` times,
  most frequent first (ties in code-point order), ``vocab_size`` in all.
* UnigramTrainer: :mod:`lamina.text.hf_unigram_trainer`.

``show_progress`` is accepted (and ignored) for compatibility. Unlike the ``tokenizers``
library, a ``vocab_size`` too small for the special tokens and the alphabet is refused rather than
exceeded, and a model's ``unk_token`` missing from the trained vocabulary is refused rather than
left to fail when first needed; ``max_token_length`` bounds every pair counted (the library checks
only the pairs a merge forms, with a strict bound); the words are taken in order of first
appearance (the library's hash order decides which prefixed characters get the smaller ids).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from lamina.text.hf_encoding_parts import AddedToken
from lamina.text.hf_models import BPE, Model, WordLevel, WordPiece

__all__ = ["BpeTrainer", "Trainer", "WordLevelTrainer", "WordPieceTrainer"]


def special_token_list(tokens: Iterable[str | AddedToken], who: str) -> list[AddedToken]:
    """Strings or added tokens -> special added tokens (ids filled in by the tokenizer), duplicates dropped."""
    out: list[AddedToken] = []
    for token in tokens:
        if isinstance(token, str):
            token = AddedToken(-1, token, normalized=False, special=True)
        if not isinstance(token, AddedToken) or not token.content:
            raise TypeError(f"{who}: special_tokens must be non-empty strings or AddedTokens, got {token!r}")
        if all(token.content != t.content for t in out):
            out.append(token)
    return out


class Trainer:
    """Base: ``train_model(words, model)`` gives the model trained on ``words`` (word -> count),
    taking the settings a trainer does not set (unk token, dropout...) from ``model`` (None: defaults)."""

    model_type = ""

    def __init__(self, vocab_size: int, special_tokens: Iterable[str | AddedToken] = ()):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"{self.name}: vocab_size must be a positive int, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.special_tokens = special_token_list(special_tokens, self.name)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def special_contents(self) -> list[str]:
        return [t.content for t in self.special_tokens]

    def train_model(self, words: Mapping[str, int], model: Model | None = None) -> Model:
        raise NotImplementedError

    def _check_size(self, needed: int, what: str = "") -> None:
        if self.vocab_size < needed:
            raise ValueError(f"{self.name}: vocab_size={self.vocab_size} is too small: the {len(self.special_tokens)} "
                             f"special tokens{what} already take {needed} tokens")

    def _check_unk(self, unk_token: str | None, vocab: Mapping[str, int]) -> None:
        if unk_token is not None and unk_token not in vocab:
            raise ValueError(f"{self.name}: the model's unk_token {unk_token!r} is not among the trained tokens; "
                             "add it to special_tokens")

    def __repr__(self) -> str:
        return f"{self.name}(vocab_size={self.vocab_size}, special_tokens={self.special_contents})"


class _Vocabulary:
    """Tokens in id order, each with the number of characters of the words it spans."""

    def __init__(self):
        self.tokens: list[str] = []
        self.ids: dict[str, int] = {}
        self.spans: list[int] = []

    def add(self, token: str, span: int) -> int:
        if token not in self.ids:
            self.ids[token] = len(self.tokens)
            self.tokens.append(token)
            self.spans.append(span)
        return self.ids[token]

    def __len__(self) -> int:
        return len(self.tokens)


class BpeTrainer(Trainer):
    """Byte-pair-encoding training (module docstring); the arguments are the ``tokenizers`` library's."""

    model_type = "BPE"

    def __init__(self, vocab_size: int = 30000, min_frequency: int = 0, special_tokens: Iterable = (),
                 limit_alphabet: int | None = None, initial_alphabet: Iterable[str] = (),
                 continuing_subword_prefix: str | None = None, end_of_word_suffix: str | None = None,
                 max_token_length: int | None = None, show_progress: bool = False):
        super().__init__(vocab_size, special_tokens)
        self.min_frequency, self.limit_alphabet = int(min_frequency), limit_alphabet
        self.initial_alphabet = sorted({text[0] for text in initial_alphabet if text})   # first characters, as theirs
        self.prefix, self.suffix = continuing_subword_prefix or "", end_of_word_suffix or ""
        self.max_token_length, self.show_progress = max_token_length, show_progress
        if limit_alphabet is not None and limit_alphabet < 0:
            raise ValueError(f"{self.name}: limit_alphabet must be >= 0 or None, got {limit_alphabet}")
        if max_token_length is not None and max_token_length < 1:
            raise ValueError(f"{self.name}: max_token_length must be >= 1 or None, got {max_token_length}")

    def alphabet(self, words: Mapping[str, int]) -> list[str]:
        """The characters kept (module docstring), in code-point order."""
        counts: dict[str, float] = {}
        for word, count in words.items():
            for char in word:
                counts[char] = counts.get(char, 0) + count
        for char in self.initial_alphabet:
            counts[char] = float("inf")
        chars = sorted(counts)
        if self.limit_alphabet is not None and len(chars) > self.limit_alphabet:
            # most frequent first; among equals the smaller code point
            chars = sorted(sorted(chars, key=lambda c: (-counts[c], c))[:self.limit_alphabet])
        return chars

    def initial_symbols(self, words: Mapping[str, int]) -> tuple[_Vocabulary, list[list[int]]]:
        """The vocabulary before any merge and each word as its symbols' ids."""
        vocab = _Vocabulary()
        for token in self.special_contents:
            vocab.add(token, len(token))
        alphabet = self.alphabet(words)
        for char in alphabet:
            vocab.add(char, 1)
        kept = set(alphabet)
        symbols = []
        for word in words:
            last = len(word) - 1
            symbols.append([vocab.add((self.prefix if k else "") + char + (self.suffix if k == last else ""), 1)
                            for k, char in enumerate(word) if char in kept])
        self._check_size(len(vocab), f" and the {len(alphabet)} characters of the alphabet (with their "
                                     "prefixed/suffixed forms)")
        return vocab, symbols

    def learn_merges(self, words: Mapping[str, int]) -> tuple[_Vocabulary, list[tuple[str, str]]]:
        """The final vocabulary and the merges, in order (module docstring)."""
        vocab, symbols = self.initial_symbols(words)
        counts = list(words.values())
        spans, limit = vocab.spans, self.max_token_length

        def pairs(word: list[int]) -> dict[tuple[int, int], int]:
            found: dict[tuple[int, int], int] = {}
            for pair in zip(word, word[1:]):
                if limit is None or spans[pair[0]] + spans[pair[1]] <= limit:
                    found[pair] = found.get(pair, 0) + 1
            return found

        pair_counts: dict[tuple[int, int], int] = {}
        holders: dict[tuple[int, int], set[int]] = {}
        for w, word in enumerate(symbols):
            for pair, n in pairs(word).items():
                pair_counts[pair] = pair_counts.get(pair, 0) + n * counts[w]
                holders.setdefault(pair, set()).add(w)
        heap = [(-n, *pair) for pair, n in pair_counts.items()]
        heapq.heapify(heap)
        merges: list[tuple[str, str]] = []
        while len(vocab) < self.vocab_size and heap:
            negative, a, b = heapq.heappop(heap)
            count = pair_counts.get((a, b), 0)
            if -negative != count:
                continue                      # stale: the current count has an entry of its own
            if count < 1 or count < self.min_frequency:
                break
            left, right = vocab.tokens[a], vocab.tokens[b]
            joined = left + (right[len(self.prefix):] if self.prefix and right.startswith(self.prefix) else right)
            new = vocab.add(joined, spans[a] + spans[b])
            merges.append((left, right))
            changed: dict[tuple[int, int], int] = {}
            for w in holders.pop((a, b), ()):
                before = pairs(symbols[w])
                symbols[w] = merged(symbols[w], a, b, new)
                after = pairs(symbols[w])
                for pair in before.keys() | after.keys():
                    delta = (after.get(pair, 0) - before.get(pair, 0)) * counts[w]
                    if delta:
                        changed[pair] = changed.get(pair, 0) + delta
                for pair in after:
                    holders.setdefault(pair, set()).add(w)
            for pair, delta in changed.items():
                n = pair_counts.get(pair, 0) + delta
                if n > 0:
                    pair_counts[pair] = n
                    heapq.heappush(heap, (-n, *pair))
                else:
                    pair_counts.pop(pair, None)
        return vocab, merges

    def train_model(self, words: Mapping[str, int], model: Model | None = None) -> BPE:
        vocab, merges = self.learn_merges(words)
        base = model if isinstance(model, BPE) else BPE({}, [])
        self._check_unk(base.unk_token, vocab.ids)
        return BPE(dict(vocab.ids), merges, base.unk_token, self.prefix or None, self.suffix or None, base.fuse_unk,
                   base.byte_fallback, base.ignore_merges, base.dropout, base.merges_as_pairs)

    def __repr__(self) -> str:
        return (f"{self.name}(vocab_size={self.vocab_size}, min_frequency={self.min_frequency}, "
                f"special_tokens={self.special_contents}, limit_alphabet={self.limit_alphabet})")


def merged(word: list[int], a: int, b: int, new: int) -> list[int]:
    """``word`` with every occurrence of the pair (a, b), left to right, replaced by ``new``."""
    out: list[int] = []
    k = 0
    while k < len(word):
        if k + 1 < len(word) and word[k] == a and word[k + 1] == b:
            out.append(new)
            k += 2
        else:
            out.append(word[k])
            k += 1
    return out


class WordPieceTrainer(BpeTrainer):
    """BPE training with the continuing prefix '##', then a WordPiece model of the resulting vocabulary."""

    model_type = "WordPiece"

    def __init__(self, vocab_size: int = 30000, min_frequency: int = 0, special_tokens: Iterable = (),
                 limit_alphabet: int | None = None, initial_alphabet: Iterable[str] = (),
                 continuing_subword_prefix: str = "##", end_of_word_suffix: str | None = None,
                 max_token_length: int | None = None, show_progress: bool = False):
        super().__init__(vocab_size, min_frequency, special_tokens, limit_alphabet, initial_alphabet,
                         continuing_subword_prefix, end_of_word_suffix, max_token_length, show_progress)

    def train_model(self, words: Mapping[str, int], model: Model | None = None) -> WordPiece:
        vocab, _ = self.learn_merges(words)
        base = model if isinstance(model, WordPiece) else None
        unk = base.unk_token if base is not None else "[UNK]"
        self._check_unk(unk, vocab.ids)
        return WordPiece(dict(vocab.ids), unk, self.prefix, base.max_chars if base is not None else 100)


class WordLevelTrainer(Trainer):
    """A vocabulary of whole words (module docstring)."""

    model_type = "WordLevel"

    def __init__(self, vocab_size: int = 30000, min_frequency: int = 0, special_tokens: Iterable = (),
                 show_progress: bool = False):
        super().__init__(vocab_size, special_tokens)
        self.min_frequency, self.show_progress = int(min_frequency), show_progress

    def train_model(self, words: Mapping[str, int], model: Model | None = None) -> WordLevel:
        self._check_size(len(self.special_tokens))
        ranked = sorted((word for word, count in words.items() if count >= self.min_frequency),
                        key=lambda word: (-words[word], word))
        vocab: dict[str, int] = {}
        for token in [*self.special_contents, *ranked]:
            if len(vocab) == self.vocab_size:
                break
            vocab.setdefault(token, len(vocab))
        unk = model.unk_token if isinstance(model, WordLevel) else None
        self._check_unk(unk, vocab)
        return WordLevel(vocab, unk)
