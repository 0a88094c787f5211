"""Hugging Face's beam search for :func:`lamina.text.generate_ids`: plain, sampled and diverse.

B prompts (left-padded to T tokens), n = ``num_beams`` beams per prompt in G =
``num_beam_groups`` groups of g = n / G beams, V tokens. A beam's score is the sum of the
processed log-probabilities of its new tokens. At the start only the first beam of each
group is live (the others score -1e9). At each step, group after group:

1. processed(beam, v): the log-softmax of the model's next-token scores, minus (groups after
   the first) ``diversity_penalty`` times the number of beams of the earlier groups of the
   same prompt that chose v at this step (Hamming diversity), then the logits processors
   (and, when sampling, the warpers);
2. s(beam, v) = score(beam) + processed(beam, v);
3. k = max(2, 1 + number of end tokens) * g candidates among the g * V pairs of each prompt:
   the k best, or (``do_sample``) k drawn without replacement from softmax(s) over the pairs
   and then sorted by s;
4. best first: a candidate ending in an end token that ranks among the first g becomes a
   finished hypothesis scored s / new_length ** ``length_penalty`` (new_length counts the end
   token; the group keeps its g best), any later one is skipped; the others continue the
   beams until g are filled.

A group of a prompt is done once it keeps g finished hypotheses and (``early_stopping``),
with w the worst kept score, b the best candidate's s and L the new length after the step:
``True``: at once; ``False``: when w >= b / L ** length_penalty (the best live beam ended
now); ``"never"``: when w >= b / M ** length_penalty with M = ``max_new`` if
length_penalty > 0 (the longest it could grow) else L, a bound no continuation can beat.
A done group continues with ``pad_token_id`` and a score of 0. The search ends once every
group is done, or after ``max_new`` steps; the live beams of unfinished groups then count as
hypotheses too. Each prompt returns its ``num_return`` best hypotheses over all its groups,
ending with the end token it chose (Hugging Face writes the first of the end tokens there).
As in Hugging Face, the processors see the whole rows, left pads included (a repetition
penalty thus also lowers the pad token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lamina.text.generation_reader import _forward_options, _Reader
from lamina.text.logits_processors import LogitsProcessorList, MinNewTokensLogitsProcessor

__all__ = ["BeamHypotheses", "BeamResult", "BeamSettings", "assemble_beams", "beam_generate", "beam_search_output",
           "draw_candidates", "for_prompt_length"]

_WHO = "generate_ids"
_NOT_LIVE = -1e9
"""Hugging Face's starting score of all but the first beam of a group."""


@dataclass
class BeamSettings:
    """The options of a beam search (see the module docstring); ``eos`` is the list of end
    tokens, ``pad`` the token of finished groups, ``rng`` the draws of ``do_sample``."""

    num_beams: int
    max_new: int
    num_groups: int = 1
    diversity_penalty: float = 0.0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return: int = 1
    eos: list[int] = field(default_factory=list)
    pad: int | None = None
    do_sample: bool = False
    rng: np.random.Generator | None = None

    def __post_init__(self):
        if self.num_groups < 1 or self.num_beams % self.num_groups:
            raise ValueError(f"{_WHO}: num_beams={self.num_beams} must split into num_beam_groups={self.num_groups} "
                             "groups of equal size")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"{_WHO}: early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if not 1 <= self.num_return <= self.num_beams:
            raise ValueError(f"{_WHO}: num_return_sequences={self.num_return} exceeds num_beams={self.num_beams}")
        if self.diversity_penalty and self.num_groups == 1:
            raise ValueError(f"{_WHO}: diversity_penalty={self.diversity_penalty} needs num_beam_groups > 1")
        if self.do_sample and self.num_groups > 1:
            raise ValueError(f"{_WHO}: diverse (group) beam search does not sample; pass do_sample=False or "
                             "num_beam_groups=1")
        if self.do_sample and self.rng is None:
            self.rng = np.random.default_rng()
        if self.pad is None and self.eos:
            self.pad = self.eos[0]

    @property
    def group_size(self) -> int:
        return self.num_beams // self.num_groups

    @property
    def candidates(self) -> int:
        return max(2, 1 + len(self.eos)) * self.group_size


class BeamHypotheses:
    """The finished hypotheses of one prompt's group: the ``size`` best by
    sum_log_probs / len(tokens) ** length_penalty, and the stopping rule of the module
    docstring."""

    def __init__(self, size: int, length_penalty: float, early_stopping: bool | str, max_new: int):
        self.size, self.length_penalty = size, length_penalty
        self.early_stopping, self.max_new = early_stopping, max_new
        self.kept: list[tuple[float, list[int], tuple[int, ...]]] = []
        self.worst = 1e9

    def __len__(self) -> int:
        return len(self.kept)

    def add(self, tokens: list[int], sum_log_probs: float, beam_rows: tuple[int, ...]) -> None:
        """Offer the new ``tokens`` (the end token included if it ended)."""
        score = sum_log_probs / len(tokens) ** self.length_penalty
        if len(self.kept) < self.size or score > self.worst:
            self.kept.append((score, tokens, beam_rows))
            if len(self.kept) > self.size:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.kept))
                del self.kept[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_log_probs: float, new_length: int) -> bool:
        if len(self.kept) < self.size:
            return False
        if self.early_stopping is True:
            return True
        longest = self.max_new if self.early_stopping == "never" and self.length_penalty > 0 else new_length
        return self.worst >= best_sum_log_probs / longest ** self.length_penalty


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def draw_candidates(totals: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` flat indices of ``totals`` drawn one after another without replacement from
    softmax(totals), in the order drawn."""
    p = np.exp(totals - totals.max())
    p /= p.sum()
    if np.count_nonzero(p) < count:
        raise ValueError(f"{_WHO}: beam sampling draws {count} candidates but only {np.count_nonzero(p)} tokens "
                         "have a nonzero probability; loosen top_k / top_p or use fewer beams")
    return rng.choice(len(p), size=count, replace=False, p=p)


def _candidates(totals: np.ndarray, settings: BeamSettings) -> np.ndarray:
    """The flat indices of one prompt's candidates, best first."""
    if not settings.do_sample:
        return np.argsort(-totals, kind="stable")[:settings.candidates]
    drawn = draw_candidates(totals, settings.candidates, settings.rng)
    return drawn[np.argsort(-totals[drawn], kind="stable")]


@dataclass
class BeamResult:
    """Per prompt, its best hypotheses (score, new tokens, beam rows), best first; and the
    processed scores (B * num_beams, V) of each step."""

    best: list[list[tuple[float, list[int], tuple[int, ...]]]]
    scores: list[np.ndarray]


class _Search:
    """The state of a beam search over B prompts: the rows (B * n, t) of every beam, their
    scores, the beam rows each descends from, the groups' hypotheses."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray, settings: BeamSettings):
        self.settings = settings
        self.prompts, self.prompt_length = len(ids), ids.shape[1]
        n, g = settings.num_beams, settings.group_size
        self.rows = np.repeat(ids, n, axis=0)
        self.mask = np.repeat(mask, n, axis=0)
        scores = np.full((len(ids), n), _NOT_LIVE)
        scores[:, ::g] = 0.0
        self.beam_scores = scores.ravel()
        self.lineage: list[tuple[int, ...]] = [()] * len(self.rows)
        self.hypotheses = [[BeamHypotheses(g, settings.length_penalty, settings.early_stopping, settings.max_new)
                            for _ in range(settings.num_groups)] for _ in range(len(ids))]
        self.done = np.zeros((len(ids), settings.num_groups), dtype=bool)

    def new_tokens(self, row: int) -> list[int]:
        return self.rows[row, self.prompt_length:].tolist()

    def step(self, logits: np.ndarray, processors: LogitsProcessorList) -> tuple[np.ndarray, np.ndarray]:
        """One step of every group; returns the parent rows and the processed scores."""
        settings = self.settings
        n, g = settings.num_beams, settings.group_size
        log_probs = _log_softmax(logits.astype(np.float64))
        vocab = log_probs.shape[-1]
        if settings.candidates > g * vocab:
            raise ValueError(f"{_WHO}: beam search takes {settings.candidates} candidates per group from "
                             f"{g} beams x {vocab} tokens; use fewer beams")
        chosen = np.zeros(len(self.rows), dtype=np.int64)
        parents = np.arange(len(self.rows))
        new_scores = np.zeros(len(self.rows))
        processed = np.empty_like(log_probs)
        for group in range(settings.num_groups):
            members = (np.arange(self.prompts)[:, None] * n + group * g + np.arange(g)).ravel()
            scores = log_probs[members]
            if group and settings.diversity_penalty:
                scores = scores - settings.diversity_penalty * self._earlier_choices(chosen, group, vocab)
            scores = np.asarray(processors(self.rows[members], scores), dtype=np.float64)
            processed[members] = scores
            totals = (scores + self.beam_scores[members][:, None]).reshape(self.prompts, g * vocab)
            for prompt in range(self.prompts):
                first = prompt * n + group * g
                if self.done[prompt, group]:
                    chosen[first:first + g] = settings.pad
                    parents[first:first + g] = first
                    continue
                self._extend(prompt, group, totals[prompt], vocab, chosen, parents, new_scores)
        self.rows = np.concatenate([self.rows[parents], chosen[:, None]], axis=1)
        self.mask = np.concatenate([self.mask[parents], np.ones((len(parents), 1), dtype=self.mask.dtype)], axis=1)
        self.lineage = [self.lineage[p] + (int(p),) for p in parents]
        self.beam_scores = new_scores
        return parents, processed

    def _earlier_choices(self, chosen: np.ndarray, group: int, vocab: int) -> np.ndarray:
        """(B * g, V): how often each token was chosen at this step by the earlier groups of
        the beam's prompt."""
        n, g = self.settings.num_beams, self.settings.group_size
        counts = np.stack([np.bincount(chosen[p * n:p * n + group * g], minlength=vocab)[:vocab]
                           for p in range(self.prompts)])
        return np.repeat(counts, g, axis=0)

    def _extend(self, prompt: int, group: int, totals: np.ndarray, vocab: int, chosen: np.ndarray,
                parents: np.ndarray, new_scores: np.ndarray) -> None:
        settings = self.settings
        g = settings.group_size
        first = prompt * settings.num_beams + group * g
        hypotheses = self.hypotheses[prompt][group]
        order = _candidates(totals, settings)
        filled = 0
        for rank, flat in enumerate(order.tolist()):
            local, token = divmod(flat, vocab)
            parent = first + local
            if token in settings.eos:
                if rank < g:
                    hypotheses.add(self.new_tokens(parent) + [token], float(totals[flat]),
                                   self.lineage[parent] + (parent,))
            else:
                chosen[first + filled], parents[first + filled] = token, parent
                new_scores[first + filled] = totals[flat]
                filled += 1
                if filled == g:
                    break
        if filled < g:
            raise ValueError(f"{_WHO}: fewer than {g} of the {len(order)} beam candidates continue "
                             f"(the others are end tokens {settings.eos})")
        new_length = self.rows.shape[1] + 1 - self.prompt_length
        self.done[prompt, group] = hypotheses.is_done(float(totals[order[0]]), new_length)

    def finish(self) -> list[list[tuple[float, list[int], tuple[int, ...]]]]:
        """Offer the live beams of unfinished groups, then each prompt's best hypotheses."""
        n, g = self.settings.num_beams, self.settings.group_size
        best = []
        for prompt in range(self.prompts):
            for group in range(self.settings.num_groups):
                if not self.done[prompt, group]:
                    for row in range(prompt * n + group * g, prompt * n + group * g + g):
                        self.hypotheses[prompt][group].add(self.new_tokens(row), float(self.beam_scores[row]),
                                                           self.lineage[row])
            pool = sorted((h for hyps in self.hypotheses[prompt] for h in hyps.kept), key=lambda h: h[0])
            best.append([pool.pop() for _ in range(self.settings.num_return)])
        return best


def beam_generate(reader, ids: np.ndarray, mask: np.ndarray | None, processors: LogitsProcessorList,
                  settings: BeamSettings) -> BeamResult:
    """Beam search (see the module docstring) from the prompts ``ids`` (B, T) (``mask``
    (B, T): 0 on the left pads, or None). ``reader.read(ids, mask)`` gives the scores
    (N, t, V) of the tokens of ``ids`` (N, S) it has not read yet (``mask`` (N, S) or None);
    ``reader.reorder(rows)`` keeps its caches for the beams ``rows`` continue."""
    padded = mask is not None
    search = _Search(ids, mask if padded else np.ones(ids.shape, dtype=np.int64), settings)
    history = []
    logits = reader.read(search.rows, search.mask if padded else None)[:, -1]
    for step in range(settings.max_new):
        parents, processed = search.step(logits, processors)
        history.append(processed)
        if search.done.all() or step == settings.max_new - 1:
            break
        if not np.array_equal(parents, np.arange(len(parents))):
            reader.reorder(parents)
        logits = reader.read(search.rows, search.mask if padded else None)[:, -1]
    return BeamResult(search.finish(), history)


def assemble_beams(prompts: np.ndarray, best, pad: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outputs of :func:`beam_generate`'s ``best`` for the prompts (B, T): ``sequences``
    (B * num_return, T + new), each prompt and a hypothesis, padded on the right with ``pad``;
    ``sequences_scores`` (B * num_return,), the length-penalised scores; ``beam_indices``
    (B * num_return, new): the beam row (prompt * num_beams + beam) each new token
    extended, -1 after the end."""
    found = [(i, h) for i, hypotheses in enumerate(best) for h in hypotheses]
    width = max(len(tokens) for _, (_, tokens, _) in found)
    if pad is None and any(len(tokens) < width for _, (_, tokens, _) in found):
        raise ValueError(f"{_WHO}: beams of different lengths need a pad_token_id (or an eos_token_id)")
    sequences = np.full((len(found), prompts.shape[1] + width), 0 if pad is None else pad, dtype=np.int64)
    beam_indices = np.full((len(found), width), -1, dtype=np.int64)
    for row, (prompt, (_, tokens, lineage)) in enumerate(found):
        sequences[row, :prompts.shape[1]] = prompts[prompt]
        sequences[row, prompts.shape[1]:prompts.shape[1] + len(tokens)] = tokens
        beam_indices[row, :len(lineage)] = lineage
    return sequences, np.asarray([h[0] for _, h in found]), beam_indices


def for_prompt_length(processors: LogitsProcessorList, length: int) -> LogitsProcessorList:
    """``processors`` for a prompt of ``length`` tokens (a padded row decoded alone)."""
    def adapted(p):
        if isinstance(p, MinNewTokensLogitsProcessor) and p.prompt_length != length:
            return MinNewTokensLogitsProcessor(length, p.min_new_tokens, p.eos_token_id)
        if hasattr(p, "with_prompt_length") and getattr(p, "prompt_length", None) != length:   # constrained ones
            return p.with_prompt_length(length)
        return p

    return LogitsProcessorList(adapted(p) for p in processors)


def beam_search_output(model, ids: np.ndarray, mask: np.ndarray, settings: BeamSettings,
                       processors: LogitsProcessorList, output) -> None:
    """Beam search of the whole batch together, or of each prompt alone for a padded batch
    and a model that takes no mask; fills the ``sequences``, ``scores``,
    ``sequences_scores`` and ``beam_indices`` of the :class:`lamina.text.GenerateOutput`
    ``output``."""
    padded = bool((mask == 0).any())
    if padded and not {"key_mask", "attention_mask"} & _forward_options(model):
        best, output.scores = [], None
        for i, (row_ids, row_mask) in enumerate(zip(ids, mask)):
            start = int(np.argmax(row_mask))
            with _Reader(model, False) as reader:
                found = beam_generate(reader, row_ids[None, start:], None,
                                      for_prompt_length(processors, ids.shape[1] - start), settings).best[0]
            offset = i * settings.num_beams
            best.append([(score, tokens, tuple(r + offset for r in rows)) for score, tokens, rows in found])
    else:
        with _Reader(model, padded) as reader:
            result = beam_generate(reader, ids, mask if padded else None, processors, settings)
        best, output.scores = result.best, result.scores
    output.sequences, output.sequences_scores, output.beam_indices = assemble_beams(ids, best, settings.pad)
