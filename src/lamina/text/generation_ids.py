"""Hugging Face-style ``generate`` on token ids for causal language models.

:func:`generate_ids` continues a batch of prompts ``input_ids`` (B, T) with the options of
Hugging Face's ``GenerationConfig``: greedy decoding or sampling (temperature, top-k, top-p,
min-p, typical-p), repetition penalty, n-gram and bad-word bans, a minimum number of new
tokens, end tokens, left-padded batches, several sequences per prompt, beam search and
speculative (assisted) decoding. At each step the model's last scores pass through a
:class:`~lamina.text.LogitsProcessorList`, then the next token is the argmax or a draw.

The whole batch is decoded together on the model's key/value cache (a causal Transformer)
or its carried states (Mamba), reading the prompts once and then one token per row and
step; a model with neither reruns on the whole text. Left padding: ``attention_mask``
(B, T), 0 on the pads, goes to an attention model as ``key_mask`` over every token read and
as ``position_ids`` = cumsum(attention_mask) - 1 (GPT-2, Llama, Mistral), to a recurrent
model as the ``attention_mask`` of each call's steps (Mamba zeroes the pads' inputs). A
model that takes neither decodes a padded batch one row at a time. A row that ends (draws
an end token) is continued with ``pad_token_id``.

Speculative decoding (Leviathan et al., "Fast inference from transformers via speculative
decoding", 2023): a small ``assistant_model`` drafts k tokens, the big model scores all of
them in one call, and the longest agreeing prefix is kept plus the big model's own next
token. Greedy: a draft token is kept when it is the big model's argmax, so the output is
the big model's greedy decoding. Sampling: draft token x ~ q is kept with probability
min(1, p(x) / q(x)); at the first refusal a token is drawn from max(p - q, 0) (normalized),
which makes every new token distributed as under the big model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lamina.autograd import Tensor
from lamina.text.beam_generation import BeamSettings, beam_search_output, for_prompt_length
from lamina.text.constrained import PrefixAllowedTokensLogitsProcessor
from lamina.text.generate import sample_token
from lamina.text.generation_reader import _forward_options, _Reader
from lamina.text.logits_processors import (
    LogitsProcessorList,
    MinNewTokensLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

__all__ = ["GenerateOutput", "GenerationMixin", "build_processors", "generate_ids"]

_WHO = "generate_ids"
DEFAULT_MAX_LENGTH = 20
"""Hugging Face's default ``max_length`` (prompt included) when neither limit is given."""


@dataclass
class GenerateOutput:
    """What ``return_dict_in_generate=True`` returns: ``sequences`` (B * num_return_sequences,
    T + new), the prompts and their continuations; ``scores``: one (rows, V) array per new
    token, the processed scores the token was chosen from (NaN rows for sequences decoded
    alone that had already ended; for beam search the (B * num_beams, V) processed
    log-probabilities of every beam before its score is added, None for prompts searched
    alone); with an assistant, ``draft_tokens`` drafted and ``accepted_tokens`` kept. Beam
    search also gives ``sequences_scores`` (B * num_return_sequences,), each sequence's
    sum of processed log-probabilities / new_length ** length_penalty, and ``beam_indices``
    (B * num_return_sequences, new), the beam row (prompt * num_beams + beam) each new token
    extended, -1 after the end."""

    sequences: np.ndarray
    scores: list[np.ndarray] | None = None
    sequences_scores: np.ndarray | None = None
    beam_indices: np.ndarray | None = None
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        """accepted_tokens / draft_tokens (NaN without drafts)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else float("nan")


class GenerationMixin:
    """Gives a causal language model (ids (N, T) -> scores (N, T, V)) Hugging Face's
    ``model.generate(input_ids, ...)``: see :func:`generate_ids` for the options."""

    def generate(self, input_ids, **options):
        """:func:`generate_ids` on this model."""
        return generate_ids(self, input_ids, **options)


# -- options ---------------------------------------------------------------------------------
def _as_ids(input_ids) -> np.ndarray:
    ids = input_ids.numpy() if isinstance(input_ids, Tensor) else np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"{_WHO}: input_ids must be integer token ids of shape (B, T), T >= 1, got "
                         f"{ids.dtype} {ids.shape}")
    return ids.astype(np.int64)


def _as_mask(attention_mask, ids: np.ndarray) -> np.ndarray:
    if attention_mask is None:
        return np.ones(ids.shape, dtype=np.int64)
    mask = attention_mask.numpy() if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{_WHO}: attention_mask must hold 0 (padding) and 1 in the shape of input_ids "
                         f"{ids.shape}, got {mask.dtype} {mask.shape}")
    mask = mask.astype(np.int64)
    if (np.diff(mask, axis=1) < 0).any() or (mask[:, -1] == 0).any():
        raise ValueError(f"{_WHO}: attention_mask must pad on the left (0 ... 0 1 ... 1 in each row) with at "
                         "least one real token per row, as decoder-only generation needs")
    return mask


def _int_option(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{_WHO}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _new_tokens(max_new_tokens, max_length, prompt_length: int) -> int:
    if max_new_tokens is not None:
        return _int_option(max_new_tokens, "max_new_tokens", 1)
    limit = DEFAULT_MAX_LENGTH if max_length is None else _int_option(max_length, "max_length", 1)
    if limit <= prompt_length:
        raise ValueError(f"{_WHO}: max_length={limit} leaves no room after the prompt of {prompt_length} tokens; "
                         "pass max_new_tokens or a larger max_length")
    return limit - prompt_length


def _eos_ids(eos_token_id) -> list[int]:
    if eos_token_id is None:
        return []
    eos = np.atleast_1d(np.asarray(eos_token_id, dtype=object))
    if eos.ndim != 1 or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in eos):
        raise ValueError(f"{_WHO}: eos_token_id must be an int or a list of ints, got {eos_token_id!r}")
    return [int(i) for i in eos]


def build_processors(prompt_length: int, *, do_sample: bool = False, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None, typical_p: float | None = None,
                     min_p: float | None = None, repetition_penalty: float | None = None,
                     no_repeat_ngram_size: int | None = None, bad_words_ids=None, min_new_tokens: int = 0,
                     eos_token_id=None, logits_processor: Sequence | None = None,
                     prefix_allowed_tokens_fn: Callable | None = None, num_beams: int = 1) -> LogitsProcessorList:
    """The processors of :func:`generate_ids`'s options, in Hugging Face's order: repetition
    penalty, n-gram ban, bad words, minimum new tokens, ``prefix_allowed_tokens_fn`` (prompt
    ``row // num_beams``), then ``logits_processor`` (the
    user's, each with a ``with_prompt_length`` method given the prompt's length), then, when
    sampling, temperature, top-k, top-p, min-p, typical-p."""
    eos = _eos_ids(eos_token_id)
    processors = []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(bad_words_ids, eos or None))
    if min_new_tokens and eos:
        processors.append(MinNewTokensLogitsProcessor(prompt_length, min_new_tokens, eos))
    if prefix_allowed_tokens_fn is not None:
        processors.append(PrefixAllowedTokensLogitsProcessor(prefix_allowed_tokens_fn, num_beams))
    processors += [p.with_prompt_length(prompt_length) if hasattr(p, "with_prompt_length") else p
                   for p in logits_processor or ()]     # the constrained ones track the tokens after the prompt
    if do_sample:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
        if min_p is not None:
            processors.append(MinPLogitsWarper(min_p))
        if typical_p is not None and typical_p < 1.0:
            processors.append(TypicalLogitsWarper(typical_p))
    return LogitsProcessorList(processors)


class _Streamer:
    """Hugging Face's streamer protocol (``put(ids)`` for the prompt and then each new
    token, ``end()``) or a plain callable given each step's new ids (B,)."""

    def __init__(self, streamer):
        self.streamer = streamer
        self.protocol = streamer is not None and hasattr(streamer, "put")

    def prompt(self, ids: np.ndarray) -> None:
        if self.protocol:
            self.streamer.put(ids.copy())

    def token(self, new: np.ndarray) -> None:
        if self.protocol:
            self.streamer.put(new.copy())
        elif self.streamer is not None:
            self.streamer(new.copy())

    def end(self) -> None:
        if self.protocol and hasattr(self.streamer, "end"):
            self.streamer.end()


@dataclass
class _Options:
    max_new: int
    processors: LogitsProcessorList
    do_sample: bool
    eos: list[int]
    pad: int | None
    rng: np.random.Generator
    streamer: _Streamer


def _choose(scores: np.ndarray, rows, options: _Options) -> np.ndarray:
    """The next token of each row: the argmax, or a draw with ``sample_token``."""
    if not options.do_sample:
        return scores.argmax(axis=-1)
    chosen = np.zeros(len(scores), dtype=np.int64)
    for row in rows:
        chosen[row] = sample_token(scores[row], options.rng)
    return chosen


# -- the decoders ----------------------------------------------------------------------------
def _decode(model, ids: np.ndarray, mask: np.ndarray, options: _Options) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding or sampling of the whole batch together."""
    padded = bool((mask == 0).any())
    unfinished = np.ones(len(ids), dtype=bool)
    history = []
    with _Reader(model, padded) as reader:
        logits = reader.read(ids, mask if padded else None)[:, -1]
        for step in range(options.max_new):
            scores = options.processors(ids, logits.astype(np.float64))
            chosen = _choose(scores, np.flatnonzero(unfinished), options)
            if options.pad is not None:
                chosen = np.where(unfinished, chosen, options.pad)
            ids = np.concatenate([ids, chosen[:, None]], axis=1)
            mask = np.concatenate([mask, np.ones((len(ids), 1), dtype=mask.dtype)], axis=1)
            history.append(scores)
            options.streamer.token(chosen)
            unfinished &= ~np.isin(chosen, options.eos)
            if not unfinished.any() or step == options.max_new - 1:
                break
            logits = reader.read(ids, mask if padded else None)[:, -1]
    return ids, history


def _decode_rows_alone(model, ids: np.ndarray, mask: np.ndarray,
                       options: _Options) -> tuple[np.ndarray, list[np.ndarray]]:
    """A padded batch for a model that takes no key_mask: each row decoded alone, from its
    real tokens, then padded back (on the left as given, on the right with pad_token_id)."""
    rows = []
    for row_ids, row_mask in zip(ids, mask):
        start = int(np.argmax(row_mask))
        alone = replace(options, processors=for_prompt_length(options.processors, len(row_ids) - start))
        out, history = _decode(model, row_ids[None, start:], row_mask[None, start:], alone)
        rows.append((start, out[0], history))
    steps = max(len(history) for _, _, history in rows)
    if options.pad is None and any(len(history) < steps for _, _, history in rows):
        raise ValueError(f"{_WHO}: rows of different lengths need a pad_token_id (or an eos_token_id)")
    sequences = np.full((len(ids), ids.shape[1] + steps), options.pad if options.pad is not None else 0)
    sequences[:, :ids.shape[1]] = ids
    vocab = rows[0][2][0].shape[-1]
    history = [np.full((len(ids), vocab), np.nan) for _ in range(steps)]
    for i, (start, out, row_history) in enumerate(rows):
        new = out[ids.shape[1] - start:]
        sequences[i, ids.shape[1]:ids.shape[1] + len(new)] = new
        for step, scores in enumerate(row_history):
            history[step][i] = scores[0]
    return sequences, history


def _assisted(model, assistant, ids: np.ndarray, options: _Options, draft_length: int):
    """Speculative decoding of one row (see the module docstring)."""
    processors, eos = options.processors, options.eos
    text = ids
    history, drafted, accepted = [], 0, 0
    prompt_length = ids.shape[1]
    with _Reader(model, False) as big, _Reader(assistant, False) as small:
        while text.shape[1] - prompt_length < options.max_new:
            left = options.max_new - (text.shape[1] - prompt_length)
            k = min(draft_length, left - 1)
            draft, q = [], []
            if k:
                small.rewind(text[:, :min(small.held, text.shape[1])])
                candidate = text
                logits = small.read(candidate, None)[:, -1]
                for j in range(k):
                    scores = processors(candidate, logits.astype(np.float64))
                    token = int(_choose(scores, [0], options)[0])
                    draft.append(token)
                    q.append(_softmax_row(scores[0]))
                    candidate = np.concatenate([candidate, [[token]]], axis=1)
                    if j < k - 1:
                        logits = small.read(candidate, None)[:, -1]
            full = np.concatenate([text, np.asarray([draft], dtype=np.int64).reshape(1, -1)], axis=1)
            big_logits = big.read(full, None)[0, -(k + 1):]
            if big_logits.shape[-1] != (q[0].shape[-1] if q else big_logits.shape[-1]):
                raise ValueError(f"{_WHO}: the assistant scores {q[0].shape[-1]} tokens and the model "
                                 f"{big_logits.shape[-1]}; they must share a vocabulary")
            new = []
            for j in range(k + 1):
                scores = processors(full[:, :text.shape[1] + j], big_logits[j][None].astype(np.float64))
                history.append(scores)
                if j == k:                   # every draft token kept: the model's own next token
                    new.append(int(_choose(scores, [0], options)[0]))
                    break
                if _keeps(draft[j], scores[0], q[j], options):
                    new.append(draft[j])
                    accepted += 1
                    if draft[j] in eos:
                        break
                    continue
                new.append(_correction(draft[j], scores[0], q[j], options))
                break
            drafted += k
            for token in new:
                options.streamer.token(np.asarray([token]))
            text = np.concatenate([text, np.asarray([new], dtype=np.int64)], axis=1)
            kept = text.shape[1] - 1
            big.rewind(text[:, :kept])
            small.rewind(text[:, :min(small.held, kept)])
            if any(token in eos for token in new):
                break
    return text, history, drafted, accepted


def _softmax_row(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max())
    return z / z.sum()


def _keeps(token: int, scores: np.ndarray, q: np.ndarray, options: _Options) -> bool:
    """Whether the draft ``token`` stands: greedy, it is the model's argmax; sampling, with
    probability min(1, p(token) / q(token))."""
    if not options.do_sample:
        return token == int(scores.argmax())
    p = _softmax_row(scores)
    return options.rng.random() < min(1.0, p[token] / q[token])


def _correction(token: int, scores: np.ndarray, q: np.ndarray, options: _Options) -> int:
    """The token that replaces a refused draft: the argmax, or a draw from max(p - q, 0)."""
    if not options.do_sample:
        return int(scores.argmax())
    residual = np.maximum(_softmax_row(scores) - q, 0.0)
    if residual.sum() <= 0:                  # p == q up to rounding: draw from p
        residual = _softmax_row(scores)
    return int(options.rng.choice(len(residual), p=residual / residual.sum()))


# -- the entry point -------------------------------------------------------------------------
def generate_ids(model, input_ids, *, max_new_tokens: int | None = None, max_length: int | None = None,
                 min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, typical_p: float | None = None,
                 min_p: float | None = None, repetition_penalty: float | None = None,
                 no_repeat_ngram_size: int | None = None, bad_words_ids: Sequence[Sequence[int]] | None = None,
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
                 attention_mask=None, num_return_sequences: int = 1, num_beams: int = 1,
                 length_penalty: float = 1.0, early_stopping: bool | str = False, num_beam_groups: int = 1,
                 diversity_penalty: float = 0.0, seed: int | None = None,
                 generator: np.random.Generator | None = None, streamer: Callable | None = None,
                 return_dict_in_generate: bool = False, logits_processor: Sequence | None = None,
                 prefix_allowed_tokens_fn: Callable | None = None,
                 assistant_model=None, num_assistant_tokens: int = 5):
    """Continue the prompts ``input_ids`` (B, T) (or (T,)) with a causal language model
    (ids (N, T) -> scores (N, T, V)), as Hugging Face's ``model.generate``.

    * Length: ``max_new_tokens`` new tokens at most, or ``max_length`` tokens in all
      (default 20 in all); ``min_new_tokens`` before an end token may be chosen.
    * Choice: the argmax (``do_sample=False``), or a draw from softmax(scores) after the
      warpers ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``typical_p``; the draws come
      from ``generator`` (a numpy Generator) or ``numpy.random.default_rng(seed)``, one
      :func:`lamina.text.sample_token` per unfinished row and step, in row order.
    * Processing (see :mod:`lamina.text.logits_processors`): ``repetition_penalty``,
      ``no_repeat_ngram_size``, ``bad_words_ids``, ``prefix_allowed_tokens_fn`` (Hugging
      Face's: ``fn(batch_id, ids)`` -> the allowed next ids), and ``logits_processor``, a
      list of your own processors ``(input_ids, scores) -> scores`` (such as
      :class:`lamina.text.RegexLogitsProcessor`), applied after those and before the warpers.
    * End: ``eos_token_id`` (int or list); a row that chose one is continued with
      ``pad_token_id`` (default: the first end token), and generation stops once every row
      has ended.
    * Padding: ``attention_mask`` (B, T), 1 on the real tokens, 0 on the pads, which must be
      on the left (see the module docstring).
    * ``num_return_sequences``: that many sequences per prompt (rows i * n .. i * n + n - 1),
      drawn (``do_sample``) or the best beams.
    * ``num_beams`` > 1: Hugging Face's beam search (:mod:`lamina.text.beam_generation`), the
      whole batch together: the processors act on the log-softmax of the scores, the
      hypotheses are ranked by their sum / new_length ** ``length_penalty``, and
      ``early_stopping`` (True, False (the default) or "never") says when a prompt is done.
      With ``do_sample``: beam sampling (candidates drawn from the softmax of the beams'
      accumulated scores, the warpers applied to the log-softmax); with ``num_beam_groups``
      > 1: diverse beam search, ``diversity_penalty`` times the number of earlier groups'
      beams that chose a token at this step taken off its log-probability.
    * ``assistant_model``: speculative decoding of a single prompt, drafting
      ``num_assistant_tokens`` per round (see the module docstring).
    * ``streamer``: called with each step's new ids (B,), or an object with Hugging Face's
      ``put`` / ``end``.

    Returns the (B * num_return_sequences, T + new) ids, the prompts included, or, with
    ``return_dict_in_generate``, a :class:`GenerateOutput` (with beams, also
    ``sequences_scores`` and ``beam_indices``).
    """
    ids = _as_ids(input_ids)
    mask = _as_mask(attention_mask, ids)
    max_new = _new_tokens(max_new_tokens, max_length, ids.shape[1])
    min_new_tokens = _int_option(min_new_tokens, "min_new_tokens", 0)
    num_return = _int_option(num_return_sequences, "num_return_sequences", 1)
    num_beams = _int_option(num_beams, "num_beams", 1)
    eos = _eos_ids(eos_token_id)
    pad = eos[0] if pad_token_id is None and eos else pad_token_id
    if num_return > 1 and not do_sample and num_beams == 1:
        raise ValueError(f"{_WHO}: greedy decoding gives one sequence per prompt; num_return_sequences="
                         f"{num_return} needs do_sample=True or num_beams >= {num_return}")
    if generator is not None and seed is not None:
        raise ValueError(f"{_WHO}: pass seed or generator, not both")
    rng = generator if generator is not None else np.random.default_rng(seed)
    processors = build_processors(ids.shape[1], do_sample=do_sample, temperature=temperature, top_k=top_k,
                                  top_p=top_p, typical_p=typical_p, min_p=min_p,
                                  repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                  bad_words_ids=bad_words_ids, min_new_tokens=min_new_tokens, eos_token_id=eos,
                                  logits_processor=logits_processor,
                                  prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                                  num_beams=num_beams // max(int(num_beam_groups), 1))
    stream = _Streamer(streamer)
    options = _Options(max_new, processors, bool(do_sample), eos, pad, rng, stream)
    stream.prompt(ids)
    output = GenerateOutput(ids)
    if num_beams > 1:
        if assistant_model is not None:
            raise ValueError(f"{_WHO}: assisted decoding continues one sequence; it does not take num_beams > 1")
        groups = _int_option(num_beam_groups, "num_beam_groups", 1)
        settings = BeamSettings(num_beams, max_new, groups, float(diversity_penalty), float(length_penalty),
                                early_stopping, num_return, eos, pad, bool(do_sample), rng)
        beam_search_output(model, ids, mask, settings, processors, output)
        for token_column in output.sequences[:, ids.shape[1]:].T:
            stream.token(token_column)
    else:
        ids, mask = np.repeat(ids, num_return, axis=0), np.repeat(mask, num_return, axis=0)
        if assistant_model is not None:
            if len(ids) != 1:
                raise ValueError(f"{_WHO}: assisted decoding continues one prompt (one sequence), got {len(ids)} rows")
            if assistant_model is model:
                raise ValueError(f"{_WHO}: the assistant_model must be another model (each keeps its own caches)")
            draft = _int_option(num_assistant_tokens, "num_assistant_tokens", 1)
            start = int(np.argmax(mask[0]))
            sequences, history, output.draft_tokens, output.accepted_tokens = _assisted(
                model, assistant_model, ids[:, start:], options, draft)
            output.sequences = np.concatenate([ids[:, :start], sequences], axis=1)
        elif (mask == 0).any() and not {"key_mask", "attention_mask"} & _forward_options(model):
            output.sequences, history = _decode_rows_alone(model, ids, mask, options)
        else:
            output.sequences, history = _decode(model, ids, mask, options)
        output.scores = [np.asarray(s, dtype=np.float64) for s in history]
    stream.end()
    return output if return_dict_in_generate else output.sequences
