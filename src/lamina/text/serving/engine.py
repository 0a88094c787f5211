"""A small LLM serving engine in the manner of vLLM: requests join at any time and share one
paged key/value cache (:class:`BlockManager`), and a scheduler batches at the level of single
iterations (continuous batching): each :meth:`LLMEngine.step` decodes one token for every
running sequence and prefills waiting requests while sequence slots and blocks allow.
When a running sequence needs a block and none is free, the most recently admitted one is
preempted: its blocks are freed and it waits again, to be recomputed from its prompt and the
tokens it already produced.

The engine runs lamina's :class:`~lamina.models.GPT2` and :class:`~lamina.models.Llama`
(with Mistral and Qwen2, built the same way) through small inference-only forward passes that
read the model's weights (:mod:`lamina.text.serving.runners`). Each request's scores pass its
``SamplingParams``' repetition penalty and logits processors (such as
:class:`lamina.text.RegexLogitsProcessor`, for constrained generation) before the choice.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import functional as F
from lamina.autograd import no_grad
from lamina.text.logits_processors import RepetitionPenaltyLogitsProcessor, TopPLogitsWarper
from lamina.text.serving.block_manager import BlockManager
from lamina.text.serving.paged_attention import prefill_attention, write_paged_cache
from lamina.text.serving.runners import runner_for

__all__ = ["LLMEngine", "RequestOutput", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 is greedy decoding; otherwise the next token is drawn from
    softmax(logits / temperature), kept to the ``top_k`` best and the ``top_p`` nucleus when
    given; ``seed`` seeds the request's own generator; generation stops at ``eos_token_id``.
    Before the choice, the scores of each request pass ``repetition_penalty`` (Hugging Face's)
    and then ``logits_processors`` (lamina's :class:`~lamina.text.LogitsProcessor` s or any
    ``(ids (1, t), scores (1, V)) -> scores``), called with the request's prompt and generated
    ids; a processor with ``with_prompt_length`` (:class:`~lamina.text.RegexLogitsProcessor`)
    is copied for each request, so one ``SamplingParams`` may serve many."""

    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None
    eos_token_id: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    logits_processors: Sequence = ()

    def __post_init__(self):
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams: top_p must lie in (0, 1], got {self.top_p!r}")
        bad = next((p for p in self.logits_processors if not callable(p)), None)
        if bad is not None:
            raise TypeError(f"SamplingParams: every logits processor must be callable (ids, scores) -> scores, "
                            f"got {type(bad).__name__}")

    def processors_for(self, prompt_length: int) -> list:
        """The processors of one request whose prompt has ``prompt_length`` tokens."""
        processors = [] if self.repetition_penalty is None else [
            RepetitionPenaltyLogitsProcessor(self.repetition_penalty)]
        for processor in self.logits_processors:
            copy = getattr(processor, "with_prompt_length", None)
            processors.append(copy(prompt_length) if copy else processor)
        return processors


@dataclass
class RequestOutput:
    """A finished request: its prompt, the generated ids and why it stopped ('length' or 'eos')."""

    request_id: int
    prompt_ids: list[int]
    output_ids: list[int]
    finish_reason: str


@dataclass
class _Sequence:
    request_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    params: SamplingParams
    rng: np.random.Generator
    processors: list
    output_ids: list[int] = field(default_factory=list)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


class LLMEngine:
    """Serve a built lamina GPT-2 or Llama-layout (Llama, Mistral, Qwen2) ``model`` to many
    requests at once (see the module docstring).

    ``max_num_seqs``: the most sequences running together; ``num_blocks`` cache blocks of
    ``block_size`` tokens per layer; ``enable_prefix_caching`` reuses the blocks of shared
    prompt prefixes. ``add_request(prompt_ids, max_new_tokens, params)`` -> request id,
    ``step()`` -> the requests that finished during the step, ``generate(prompts, ...)``.
    Counters: ``num_preemptions``, ``num_prefill_tokens`` (tokens computed during prefill;
    cached prefixes are skipped), ``num_decode_tokens``.
    """

    def __init__(self, model, max_num_seqs: int = 8, num_blocks: int = 64, block_size: int = 16,
                 enable_prefix_caching: bool = True):
        if int(max_num_seqs) < 1:
            raise ValueError(f"LLMEngine: max_num_seqs must be positive, got {max_num_seqs}")
        self.model = model
        self.runner = runner_for(model)
        self.max_num_seqs = int(max_num_seqs)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        runner = self.runner
        shape = (runner.num_layers, num_blocks, block_size, runner.kv_heads, runner.head_dim)
        self.key_cache = np.zeros(shape, dtype=runner.dtype)
        self.value_cache = np.zeros(shape, dtype=runner.dtype)
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self._ids = itertools.count()
        self.num_preemptions = self.num_prefill_tokens = self.num_decode_tokens = 0

    # -- requests -----------------------------------------------------------------------------
    def add_request(self, prompt_ids: Sequence[int], max_new_tokens: int = 16,
                    params: SamplingParams | None = None) -> int:
        """Queue a request; returns its id."""
        prompt = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
        if not prompt or int(max_new_tokens) < 1:
            raise ValueError(f"LLMEngine.add_request: needs a non-empty prompt and max_new_tokens >= 1, got "
                             f"{len(prompt)} tokens and {max_new_tokens}")
        total = len(prompt) + int(max_new_tokens)
        if total > self.runner.max_positions:
            raise ValueError(f"LLMEngine.add_request: prompt {len(prompt)} + max_new_tokens {max_new_tokens} exceeds "
                             f"the model's {self.runner.context_name} {self.runner.max_positions}")
        manager = self.block_manager
        if -(-total // manager.block_size) > manager.num_blocks:
            raise ValueError(f"LLMEngine.add_request: {total} tokens need {-(-total // manager.block_size)} blocks of "
                             f"{manager.block_size}, the pool has {manager.num_blocks}")
        params = params or SamplingParams()
        request_id = next(self._ids)
        self.waiting.append(_Sequence(request_id, prompt, int(max_new_tokens), params,
                                      np.random.default_rng(params.seed), params.processors_for(len(prompt))))
        return request_id

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 16,
                 params: SamplingParams | None = None) -> list[list[int]]:
        """The generated ids of each prompt, in the prompts' order."""
        ids = [self.add_request(p, max_new_tokens, params) for p in prompts]
        done: dict[int, list[int]] = {}
        while self.has_unfinished_requests():
            done.update((out.request_id, out.output_ids) for out in self.step())
        return [done[i] for i in ids]

    # -- scheduling ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One iteration: decode a token for every running sequence (preempting the latest
        admitted while blocks run out), then prefill waiting requests that fit; returns the
        requests that finished."""
        finished: list[RequestOutput] = []
        decoding = self._reserve_decode_slots()
        if decoding:
            tokens = self._decode(decoding)
            for (seq, _), token in zip(decoding, tokens):
                self._append(seq, token, finished)
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq.token_ids):
                break
            self.waiting.popleft()
            self.running.append(seq)
            self._append(seq, self._prefill(seq), finished)
        return finished

    def _reserve_decode_slots(self) -> list[tuple[_Sequence, int]]:
        """The running sequences with the slot of their newest token reserved."""
        reserved, manager = [], self.block_manager
        for seq in list(self.running):
            if seq not in self.running:       # preempted to make room for an earlier one
                continue
            while not manager.can_append(seq.request_id):
                self._preempt(self.running[-1])
                if seq not in self.running:
                    break
            else:
                slot, copy = manager.append_slot(seq.request_id, seq.output_ids[-1])
                if copy is not None:
                    self.key_cache[:, copy[1]] = self.key_cache[:, copy[0]]
                    self.value_cache[:, copy[1]] = self.value_cache[:, copy[0]]
                reserved.append((seq, slot))
        return [pair for pair in reserved if pair[0] in self.running]

    def _preempt(self, seq: _Sequence) -> None:
        self.block_manager.free(seq.request_id)
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _append(self, seq: _Sequence, token: int, finished: list[RequestOutput]) -> None:
        seq.output_ids.append(token)
        reason = ("eos" if token == seq.params.eos_token_id
                  else "length" if len(seq.output_ids) >= seq.max_new_tokens else None)
        if reason:
            self.block_manager.free(seq.request_id)
            self.running.remove(seq)
            finished.append(RequestOutput(seq.request_id, seq.prompt_ids, list(seq.output_ids), reason))

    def _sample(self, logits: np.ndarray, seq: _Sequence) -> int:
        params = seq.params
        if seq.processors:
            ids = np.array([seq.token_ids])
            for processor in seq.processors:
                logits = np.asarray(processor(ids, logits[None]))[0]
        if params.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / params.temperature
        if params.top_k is not None and params.top_k < z.size:
            z[z < np.partition(z, -params.top_k)[-params.top_k]] = -np.inf
        if params.top_p is not None:
            z = TopPLogitsWarper(params.top_p)(np.array([seq.token_ids]), z[None])[0]
        p = np.exp(z - z.max())
        return int(seq.rng.choice(z.size, p=p / p.sum()))

    # -- the model ----------------------------------------------------------------------------
    def _prefill(self, seq: _Sequence) -> int:
        """Blocks for the sequence's tokens (a cached prefix is reused), their keys and values
        written, and the next token from the last position's scores."""
        tokens = seq.token_ids
        start = self.block_manager.allocate(seq.request_id, tokens)
        positions = np.arange(start, len(tokens))
        slots = np.array([self.block_manager.slot(seq.request_id, p) for p in positions])
        table = self.block_manager.block_table(seq.request_id)
        self.num_prefill_tokens += len(positions)

        def attend(layer, q, k, v, scale):
            write_paged_cache(self.key_cache[layer], self.value_cache[layer], k, v, slots)
            return prefill_attention(q, self.key_cache[layer], self.value_cache[layer], table, start, scale)

        logits = self.runner.forward(np.asarray(tokens)[positions], positions, attend)
        return self._sample(logits[-1], seq)

    def _decode(self, decoding: list[tuple[_Sequence, int]]) -> list[int]:
        seqs = [seq for seq, _ in decoding]
        slots = np.array([slot for _, slot in decoding])
        lens = np.array([len(seq.token_ids) for seq in seqs])
        tables = [self.block_manager.block_table(seq.request_id) for seq in seqs]
        width = max(len(t) for t in tables)
        block_tables = np.array([t + [0] * (width - len(t)) for t in tables])
        self.num_decode_tokens += len(seqs)

        def attend(layer, q, k, v, scale):
            write_paged_cache(self.key_cache[layer], self.value_cache[layer], k, v, slots)
            with no_grad():
                out = F.paged_attention(q, self.key_cache[layer], self.value_cache[layer], block_tables, lens, scale)
            return np.asarray(out.data)

        logits = self.runner.forward(np.array([seq.output_ids[-1] for seq in seqs]), lens - 1, attend)
        return [self._sample(row, seq) for row, seq in zip(logits, seqs)]
