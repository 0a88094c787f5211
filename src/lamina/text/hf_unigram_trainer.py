"""Unigram language-model training (SentencePiece's, as the ``tokenizers`` library's UnigramTrainer).

A unigram model gives a word w the probability P(w) = sum over its segmentations s of the product
of p(piece) over the pieces of s; the corpus log-likelihood is L = sum_w count(w) log P(w).

1. Seed: every character of the words, and every substring of 2 to ``max_piece_length``
   characters counted at least twice (a plain count over the words, weighted by their counts;
   SentencePiece finds them with a suffix array). A character scores its count, a substring its
   count times its length; the ``seed_size`` best are kept and p(piece) = score / sum of scores.
2. EM, ``n_sub_iterations`` times: the E-step runs forward-backward over each word's lattice
   (every piece found in the word is an edge) to get the expected count c(piece) of every
   piece; the M-step sets p(piece) = c(piece) / sum c. This is plain maximum likelihood
   (SentencePiece replaces c by exp(digamma(c)) and the sum likewise, a Bayesian update that
   thins the vocabulary faster); with it L never decreases while the vocabulary stays the same.
   ``history`` keeps (number of pieces, L) at every E-step.
3. Pruning, while the vocabulary is larger than wanted: the Viterbi segmentation of every word
   gives each piece its frequency f; removing a piece x would send its f occurrences to the
   pieces of its own best segmentation without it (its alternatives), which changes the
   likelihood by about f(x) (log p(x) - sum over the alternatives a of log p'(a)), where p'
   are the frequencies after the move (SentencePiece's approximation). The pieces of least loss
   go first, leaving max(vocabulary wanted, shrinking_factor x current size); the characters of
   the corpus and ``initial_alphabet`` always stay. Then EM again (step 2).

The model's pieces are the special tokens (score 0; ``unk_token`` first when it is not one of
them), then the pieces by decreasing log-probability; characters of ``initial_alphabet`` never
seen get scores just below the lowest. The lattices are numpy arrays of edges swept one character
position at a time for all words at once (:class:`PieceLattices`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lamina.text.hf_models import Model, Unigram
from lamina.text.hf_trainers import Trainer

__all__ = ["PieceLattices", "UnigramTrainer"]

_FLOOR = 1e-12          # the least expected count a piece is given in the M-step (no log of zero)
_UNSEEN_STEP = 1e-4     # the score gap between characters of initial_alphabet never seen


class PieceLattices:
    """The lattices of ``words`` over a vocabulary (``piece_ids``: piece -> index): one edge
    (word, start, end, piece) for every piece that spells ``word[start:end]``. With
    ``whole=False`` an edge covering a whole word is left out (a piece's segmentations without itself)."""

    def __init__(self, words: Sequence[str], piece_ids: Mapping[str, int], max_length: int, whole: bool = True):
        word, start, end, piece = [], [], [], []
        for w, text in enumerate(words):
            n = len(text)
            for a in range(n):
                for b in range(a + 1, min(n, a + max_length) + 1):
                    found = piece_ids.get(text[a:b])
                    if found is not None and (whole or b - a < n):
                        word.append(w)
                        start.append(a)
                        end.append(b)
                        piece.append(found)
        self.lengths = np.array([len(text) for text in words], dtype=np.int64)
        self._set_edges(*(np.array(column, dtype=np.int64) for column in (word, start, end, piece)))

    def _set_edges(self, word: np.ndarray, start: np.ndarray, end: np.ndarray, piece: np.ndarray) -> None:
        self.word, self.start, self.end, self.piece = word, start, end, piece
        self.width = int(self.lengths.max(initial=0))
        positions = np.arange(self.width + 2)
        self._by_end = np.lexsort((start, word, end))       # by end, then word, then start
        self._by_start = np.lexsort((end, word, start))
        self._end_bounds = np.searchsorted(end[self._by_end], positions)
        self._start_bounds = np.searchsorted(start[self._by_start], positions)

    def keep_pieces(self, keep: np.ndarray) -> None:
        """Only the edges of the pieces with ``keep[piece]``, pieces renumbered in order among the kept."""
        renumbered = np.cumsum(keep) - 1
        mask = keep[self.piece]
        self._set_edges(self.word[mask], self.start[mask], self.end[mask], renumbered[self.piece[mask]])

    def _groups(self, by_end: bool, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The edges ending (or starting) at ``position``, grouped by word: the edges, the word of each
        group and the index of each group's first edge."""
        order, bounds = (self._by_end, self._end_bounds) if by_end else (self._by_start, self._start_bounds)
        edges = order[bounds[position]:bounds[position + 1]]
        words = self.word[edges]
        firsts = np.flatnonzero(np.r_[True, words[1:] != words[:-1]]) if len(edges) else edges
        return edges, words[firsts], firsts

    def _table(self, fill: float) -> np.ndarray:
        return np.full((len(self.lengths), self.width + 1), fill)

    def forward(self, log_probs: np.ndarray) -> np.ndarray:
        """alpha[w, t] = log of the summed probability of the segmentations of ``word[:t]``."""
        alpha = self._table(-np.inf)
        alpha[:, 0] = 0.0
        for t in range(1, self.width + 1):
            edges, words, firsts = self._groups(True, t)
            if len(edges):
                values = alpha[self.word[edges], self.start[edges]] + log_probs[self.piece[edges]]
                alpha[words, t] = np.logaddexp.reduceat(values, firsts)
        return alpha

    def backward(self, log_probs: np.ndarray) -> np.ndarray:
        """beta[w, t] = log of the summed probability of the segmentations of ``word[t:]``."""
        beta = self._table(-np.inf)
        beta[np.arange(len(self.lengths)), self.lengths] = 0.0
        for t in range(self.width - 1, -1, -1):
            edges, words, firsts = self._groups(False, t)
            if len(edges):
                values = log_probs[self.piece[edges]] + beta[self.word[edges], self.end[edges]]
                beta[words, t] = np.logaddexp.reduceat(values, firsts)
        return beta

    def log_likelihoods(self, log_probs: np.ndarray) -> np.ndarray:
        """log P(w) of every word."""
        return self.forward(log_probs)[np.arange(len(self.lengths)), self.lengths]

    def expected_counts(self, log_probs: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, float]:
        """The E-step: the expected number of uses of every piece over the corpus (word w taken
        ``counts[w]`` times), and the corpus log-likelihood sum_w counts[w] log P(w)."""
        alpha, beta = self.forward(log_probs), self.backward(log_probs)
        log_z = alpha[np.arange(len(self.lengths)), self.lengths]
        posterior = np.exp(alpha[self.word, self.start] + log_probs[self.piece] + beta[self.word, self.end]
                           - log_z[self.word]) * counts[self.word]
        return np.bincount(self.piece, posterior, minlength=len(log_probs)), float(counts @ log_z)

    def viterbi(self, log_probs: np.ndarray) -> tuple[np.ndarray, list[list[int] | None]]:
        """The best segmentation of every word: its log-probability and its pieces (None where no
        segmentation exists). Among equal scores, the segmentation whose last piece starts earliest
        wins (and so on backwards), as :class:`~lamina.text.hf_models.Unigram` decides."""
        best = self._table(-np.inf)
        best[:, 0] = 0.0
        back = np.full(best.shape, -1, dtype=np.int64)
        for t in range(1, self.width + 1):
            edges, words, firsts = self._groups(True, t)
            if not len(edges):
                continue
            values = best[self.word[edges], self.start[edges]] + log_probs[self.piece[edges]]
            maxima = np.maximum.reduceat(values, firsts)
            sizes = np.diff(np.r_[firsts, len(edges)])
            hits = np.flatnonzero(values == np.repeat(maxima, sizes))
            group = np.repeat(np.arange(len(firsts)), sizes)[hits]
            first_hits = hits[np.r_[True, group[1:] != group[:-1]]]
            best[words, t] = maxima
            back[words, t] = edges[first_hits]
        scores = best[np.arange(len(self.lengths)), self.lengths]
        paths: list[list[int] | None] = [[] if np.isfinite(s) else None for s in scores]
        position = self.lengths.copy()
        active = np.flatnonzero((position > 0) & np.isfinite(scores))
        while active.size:
            edges = back[active, position[active]]
            for w, piece in zip(active.tolist(), self.piece[edges].tolist()):
                paths[w].append(piece)
            position[active] = self.start[edges]
            active = active[position[active] > 0]
        return scores, [None if path is None else path[::-1] for path in paths]


def _normalized(log_probs: np.ndarray) -> np.ndarray:
    return log_probs - np.logaddexp.reduce(log_probs) if len(log_probs) else log_probs


class UnigramTrainer(Trainer):
    """Unigram training (module docstring); the arguments are the ``tokenizers`` library's, plus
    ``seed_size`` (the most pieces the seed keeps)."""

    model_type = "Unigram"

    def __init__(self, vocab_size: int = 8000, n_sub_iterations: int = 2, shrinking_factor: float = 0.75,
                 show_progress: bool = False, special_tokens: Iterable = (), initial_alphabet: Iterable[str] = (),
                 unk_token: str | None = None, max_piece_length: int = 16, seed_size: int = 1_000_000):
        super().__init__(vocab_size, special_tokens)
        if not 0.0 < shrinking_factor < 1.0:
            raise ValueError(f"{self.name}: shrinking_factor must lie in (0, 1), got {shrinking_factor}")
        if n_sub_iterations < 1 or max_piece_length < 1 or seed_size < 1:
            raise ValueError(f"{self.name}: n_sub_iterations, max_piece_length and seed_size must be >= 1, got "
                             f"{n_sub_iterations}, {max_piece_length}, {seed_size}")
        self.n_sub_iterations, self.shrinking_factor = int(n_sub_iterations), float(shrinking_factor)
        self.initial_alphabet = sorted({text[0] for text in initial_alphabet if text})
        self.unk_token, self.max_piece_length, self.seed_size = unk_token, int(max_piece_length), int(seed_size)
        self.show_progress = show_progress
        self.history: list[tuple[int, float]] = []

    def seed(self, words: Sequence[str], counts: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The seed pieces (characters by decreasing count, then substrings by decreasing count x
        length, ties in code-point order) and their log-probabilities."""
        chars: dict[str, int] = {}
        substrings: dict[str, int] = {}
        for text, count in zip(words, counts.tolist()):
            n = len(text)
            for a in range(n):
                chars[text[a]] = chars.get(text[a], 0) + count
                for b in range(a + 2, min(n, a + self.max_piece_length) + 1):
                    piece = text[a:b]
                    substrings[piece] = substrings.get(piece, 0) + count
        ranked_chars = sorted(chars, key=lambda c: (-chars[c], c))
        candidates = sorted(((count * len(piece), piece) for piece, count in substrings.items() if count >= 2),
                            key=lambda item: (-item[0], item[1]))[:max(self.seed_size - len(chars), 0)]
        pieces = ranked_chars + [piece for _, piece in candidates]
        scores = np.array([chars[c] for c in ranked_chars] + [score for score, _ in candidates], dtype=np.float64)
        return pieces, _normalized(np.log(scores))

    def _em(self, lattices: PieceLattices, log_probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        for _ in range(self.n_sub_iterations):
            expected, likelihood = lattices.expected_counts(log_probs, counts)
            self.history.append((len(log_probs), likelihood))
            log_probs = _normalized(np.log(np.maximum(expected, _FLOOR)))
        return log_probs

    def _kept(self, pieces: list[str], log_probs: np.ndarray, lattices: PieceLattices, counts: np.ndarray,
              wanted: int) -> np.ndarray:
        """Which pieces survive one pruning step (module docstring, step 3)."""
        _, paths = lattices.viterbi(log_probs)
        frequency = np.zeros(len(pieces))
        for path, count in zip(paths, counts.tolist()):
            for piece in path or ():
                frequency[piece] += count
        total = frequency.sum()
        candidates = [i for i, piece in enumerate(pieces) if len(piece) > 1]
        used = [i for i in candidates if frequency[i] > 0.0]      # the others cost nothing to remove
        ids = {piece: i for i, piece in enumerate(pieces)}
        _, alternatives = PieceLattices([pieces[i] for i in used], ids, self.max_piece_length,
                                        whole=False).viterbi(log_probs)
        loss = dict.fromkeys(candidates, 0.0)
        for i, alternative in zip(used, alternatives):
            f = frequency[i]
            if not alternative:
                continue
            uses = Counter(alternative)
            new_total = total + f * (len(alternative) - 1)
            moved = sum(m * np.log((frequency[a] + m * f) / new_total) for a, m in uses.items())
            loss[i] = f * (np.log(f / total) - moved)
        keep = np.array([len(piece) == 1 for piece in pieces])
        size = max(wanted, int(len(pieces) * self.shrinking_factor))
        ranked = sorted(candidates, key=lambda i: (-loss[i], -log_probs[i], pieces[i]))
        keep[ranked[:max(size - int(keep.sum()), 0)]] = True
        return keep

    def train_model(self, words: Mapping[str, int], model: Model | None = None) -> Unigram:
        texts, counts = list(words), np.array(list(words.values()), dtype=np.float64)
        specials = self.special_contents
        unk_id = None
        if self.unk_token is not None:
            if self.unk_token not in specials:
                specials = [self.unk_token, *specials]
            unk_id = specials.index(self.unk_token)
        seen = {char for text in texts for char in text}
        unseen = [char for char in self.initial_alphabet if char not in seen]
        wanted = self.vocab_size - len(specials) - len(unseen)
        if wanted < len(seen):
            needed = len(specials) + len(seen) + len(unseen)
            raise ValueError(f"{self.name}: vocab_size={self.vocab_size} is too small: the {len(specials)} special "
                             f"tokens (unk_token included) and the {len(seen) + len(unseen)} characters of the corpus "
                             f"and initial_alphabet already take {needed} tokens")
        pieces, log_probs = self.seed(texts, counts) if texts else ([], np.zeros(0))
        lattices = PieceLattices(texts, {piece: i for i, piece in enumerate(pieces)}, self.max_piece_length)
        self.history = []
        while True:
            log_probs = self._em(lattices, log_probs, counts)
            if len(pieces) <= wanted:
                break
            keep = self._kept(pieces, log_probs, lattices, counts, wanted)
            pieces = [piece for piece, kept in zip(pieces, keep) if kept]
            log_probs = _normalized(log_probs[keep])
            lattices.keep_pieces(keep)
        order = sorted(range(len(pieces)), key=lambda i: (-log_probs[i], pieces[i]))
        trained = [(pieces[i], float(log_probs[i])) for i in order]
        lowest = trained[-1][1] if trained else 0.0
        trained += [(char, lowest - _UNSEEN_STEP * (k + 1)) for k, char in enumerate(unseen)]
        byte_fallback = model.byte_fallback if isinstance(model, Unigram) else False
        return Unigram([(token, 0.0) for token in specials] + trained, unk_id, byte_fallback)
