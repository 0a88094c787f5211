"""Decoding for :class:`~lamina.models.T5` as Hugging Face's ``generate``: greedy search,
sampling and beam search, every row of the batch decoded together (the encoder once; with the
cache, each step feeds the decoder only the new token of every row).

Greedy and sampling: every row starts with the start token; each step appends the likeliest
token, or one drawn by :func:`lamina.text.sample_token` (temperature, top-k, top-p) with the
row's own generator ``numpy.random.default_rng(seed + i)``, so a row draws the same tokens
alone or in a batch. A row that has produced the end token gets the pad token after it.

Beam search keeps ``beam_width`` hypotheses per row. Each step ranks the 2 ``beam_width``
best extensions (sums of log-probabilities) of all of them; an extension by the end token
among the first ``beam_width`` finishes a hypothesis, scored

    score = sum of log P / L^length_penalty,    L = tokens generated (end token included),

of which the ``beam_width`` best are kept; the other extensions fill the beams. A row is
done once it holds ``beam_width`` finished hypotheses and, by ``early_stopping``: True, at
once; False, when no live beam could still beat the worst of them (its best sum over the
current length); 'never', the same with the longest length ``max_length`` when
length_penalty > 0. At ``max_length`` the live beams of unfinished rows join the finished
ones; the best score wins, written with its end token when shorter than ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lamina import functional as F
from lamina.autograd import no_grad
from lamina.text.generate import sample_token

__all__ = ["BeamHypotheses", "generate_from_inputs", "t5_beam_search", "t5_greedy_or_sample"]

_UNREACHABLE = -1e9        # the initial sum of all beams but the first (they start identical)


class _Decoder:
    """The last step's scores (B, V) of the decoder for B prefixes over the encoded rows,
    through the caches (one new token per call) or by rerunning the prefixes."""

    def __init__(self, model, encoded, mask, use_cache: bool):
        self.model, self.encoded, self.mask = model, encoded, mask
        self.caches = [{} for _ in range(model.num_decoder_layers)] if use_cache else None

    def scores(self, prefixes: np.ndarray) -> np.ndarray:
        if self.caches is None:
            logits = self.model.decode(prefixes, self.encoded, self.mask)
        else:
            offset = prefixes.shape[1] - 1
            logits = self.model.decode(prefixes[:, -1:], self.encoded, self.mask, self.caches, offset)
        return logits.numpy()[:, -1].astype(np.float64)

    def select(self, rows: np.ndarray) -> None:
        """Keep and reorder the cached rows (beams) for the hypotheses that live on."""
        if self.caches is None:
            return
        for cache in self.caches:
            cache["self"] = tuple(kv[rows] for kv in cache["self"])


def t5_greedy_or_sample(model, encoded, mask, max_length: int, use_cache: bool, do_sample: bool,
                        temperature: float, top_k: int | None, top_p: float | None, seed: int | None) -> np.ndarray:
    """Ids (N, <= max_length) of greedy decoding or sampling (see the module docstring)."""
    n = encoded.shape[0]
    decoder = _Decoder(model, encoded, mask, use_cache)
    rngs = [np.random.default_rng(None if seed is None else seed + i) for i in range(n)]
    prefixes = np.full((n, 1), model.decoder_start_token_id, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    while prefixes.shape[1] < max_length and not done.all():
        scores = decoder.scores(prefixes)
        if do_sample:
            tokens = np.asarray([model.pad_token_id if done[i] else
                                 sample_token(scores[i], rngs[i], temperature, top_k, top_p) for i in range(n)])
        else:
            tokens = np.where(done, model.pad_token_id, scores.argmax(axis=-1))
        prefixes = np.concatenate([prefixes, tokens[:, None].astype(np.int64)], axis=1)
        done |= tokens == model.eos_token_id
    return prefixes


@dataclass
class BeamHypotheses:
    """The finished hypotheses of one row: at most ``width`` (score, ids) pairs, the best
    scores kept (Hugging Face's ``BeamHypotheses``)."""

    width: int
    length_penalty: float
    early_stopping: bool | str
    max_length: int
    beams: list[tuple[float, list[int]]] = field(default_factory=list)

    @property
    def worst_score(self) -> float:
        return min(score for score, _ in self.beams) if self.beams else float("inf")

    def add(self, ids: list[int], log_prob: float, generated: int) -> None:
        score = log_prob / generated ** self.length_penalty
        if len(self.beams) < self.width or score > self.worst_score:
            self.beams.append((score, ids))
            if len(self.beams) > self.width:
                worst = min(range(len(self.beams)), key=lambda k: self.beams[k][0])
                del self.beams[worst]

    def is_done(self, best_sum: float, generated: int) -> bool:
        """Whether no live beam, of best sum ``best_sum`` after ``generated`` tokens, can
        still enter the list."""
        if len(self.beams) < self.width:
            return False
        if self.early_stopping is True:
            return True
        longest = generated
        if self.early_stopping == "never" and self.length_penalty > 0:
            longest = self.max_length - 1
        return self.worst_score >= best_sum / longest ** self.length_penalty


def t5_beam_search(model, encoded, mask, max_length: int, width: int, use_cache: bool, length_penalty: float,
                   early_stopping: bool | str) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N, <= max_length), scores (N,)): the best hypothesis of each row and its score
    (see the module docstring)."""
    n, eos, pad = encoded.shape[0], model.eos_token_id, model.pad_token_id
    rows = np.repeat(np.arange(n), width)
    decoder = _Decoder(model, F.getitem(encoded, rows), None if mask is None else np.asarray(mask)[rows], use_cache)
    prefixes = np.full((n * width, 1), model.decoder_start_token_id, dtype=np.int64)
    sums = np.zeros((n, width))
    sums[:, 1:] = _UNREACHABLE
    finished = [BeamHypotheses(width, length_penalty, early_stopping, max_length) for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    while prefixes.shape[1] < max_length and not done.all():
        scores = decoder.scores(prefixes)
        log_probs = scores - scores.max(axis=-1, keepdims=True)
        log_probs = log_probs - np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
        vocab = log_probs.shape[1]
        totals = (sums.reshape(-1, 1) + log_probs).reshape(n, width * vocab)
        generated = prefixes.shape[1]           # tokens after the start token, the new one included
        parents, tokens = np.arange(n * width), np.full(n * width, pad, dtype=np.int64)
        new_sums = np.zeros((n, width))
        for i in range(n):
            if done[i]:
                continue
            order = np.argsort(-totals[i], kind="stable")[:2 * width]
            beam = 0
            for rank, flat in enumerate(order):
                parent, token = divmod(int(flat), vocab)
                if token == eos:
                    if rank < width:
                        finished[i].add(list(prefixes[i * width + parent]), float(totals[i, flat]), generated)
                else:
                    parents[i * width + beam], tokens[i * width + beam] = i * width + parent, token
                    new_sums[i, beam] = totals[i, flat]
                    beam += 1
                if beam == width:
                    break
            done[i] = finished[i].is_done(float(totals[i, order[0]]), generated)
        decoder.select(parents)
        prefixes = np.concatenate([prefixes[parents], tokens[:, None]], axis=1)
        sums = new_sums
    best = []
    for i in range(n):
        if not done[i]:
            for b in range(width):
                finished[i].add(list(prefixes[i * width + b]), float(sums[i, b]), prefixes.shape[1] - 1)
        best.append(max(finished[i].beams, key=lambda pair: pair[0]))
    longest = min(max(len(ids) for _, ids in best) + 1, max_length)
    out = np.full((n, longest), pad, dtype=np.int64)
    for i, (_, ids) in enumerate(best):
        out[i, :len(ids)] = ids
        if len(ids) < longest:
            out[i, len(ids)] = eos
    return out, np.asarray([score for score, _ in best])


def generate_from_inputs(model, input_ids, mask, max_length: int, beam_width: int, use_cache: bool,
                         length_penalty: float, early_stopping, return_scores: bool, do_sample: bool = False,
                         temperature: float = 1.0, top_k=None, top_p=None, seed=None):
    """The decoding shared by the encoder-decoder models' ``generate`` (checked arguments): in
    evaluation mode without a graph, encode once, then greedy or sampled decoding
    (:func:`t5_greedy_or_sample`, ``beam_width`` 1) or :func:`t5_beam_search`; ids, or (ids,
    scores) with ``return_scores``. The model's training mode is restored afterwards."""
    mode = model.training
    model.eval()
    try:
        with no_grad():
            encoded = model.encode(input_ids, mask)
            if beam_width == 1:
                return t5_greedy_or_sample(model, encoded, mask, max_length, use_cache, do_sample, temperature,
                                           top_k, top_p, seed)
            ids, scores = t5_beam_search(model, encoded, mask, max_length, beam_width, use_cache,
                                         float(length_penalty), early_stopping)
            return (ids, scores) if return_scores else ids
    finally:
        model.train(mode)
