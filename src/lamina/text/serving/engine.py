"""A small LLM serving engine in the manner of vLLM: requests join at any time and share one
paged key/value cache (:class:`BlockManager`), and a scheduler batches at the level of single
iterations (continuous batching): each :meth:`LLMEngine.step` decodes one token for every
running sequence and prefills waiting requests while sequence slots and blocks allow.
When a running sequence needs a block and none is free, the most recently admitted one is
preempted: its blocks are freed and it waits again, to be recomputed from its prompt and the
tokens it already produced.

The engine runs lamina's :class:`~lamina.models.GPT2` with its own inference-only forward
pass that reads the model's weights (the model class is not changed):

    x = W_te[token] + W_pe[position]
    per block: x += attention(ln_1(x)) over the paged cache;  x += c_proj(gelu_tanh(c_fc(ln_2(x))))
    logits = ln_f(x) W_te^T
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import functional as F
from lamina.autograd import no_grad
from lamina.text.serving.block_manager import BlockManager
from lamina.text.serving.paged_attention import prefill_attention, write_paged_cache

__all__ = ["LLMEngine", "RequestOutput", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 is greedy decoding; otherwise the next token is drawn from
    softmax(logits / temperature), kept to the ``top_k`` best when given; ``seed`` seeds the
    request's own generator; generation stops at ``eos_token_id``."""

    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None
    eos_token_id: int | None = None


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
    output_ids: list[int] = field(default_factory=list)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class _GPT2Weights:
    """The raw arrays of a built GPT-2, read once."""

    def __init__(self, model):
        if not getattr(model, "built", False):
            raise ValueError("LLMEngine: build the model first (e.g. model.build((None, 1)))")
        arr = np.asarray
        self.wte, self.wpe = arr(model.wte.weight.data), arr(model.wpe.weight.data)
        self.eps = model.layer_norm_epsilon
        self.heads, self.head_dim = model.n_head, model.n_embd // model.n_head
        self.ln_f = (arr(model.ln_f.weight.data), arr(model.ln_f.bias.data), model.ln_f.eps)
        self.blocks = []
        for block in model.h:
            attn = block.self_attention
            self.blocks.append({
                "ln_1": (arr(block.norm1.weight.data), arr(block.norm1.bias.data), block.norm1.eps),
                "qkv": (arr(attn.in_weight.data), arr(attn.in_bias.data)),
                "proj": (arr(attn.out_weight.data), arr(attn.out_bias.data)),
                "ln_2": (arr(block.norm2.weight.data), arr(block.norm2.bias.data), block.norm2.eps),
                "fc": (arr(block.linear1.weight.data), arr(block.linear1.bias.data)),
                "mlp_proj": (arr(block.linear2.weight.data), arr(block.linear2.bias.data)),
            })


class LLMEngine:
    """Serve a built lamina GPT-2 ``model`` to many requests at once (see the module docstring).

    ``max_num_seqs``: the most sequences running together; ``num_blocks`` cache blocks of
    ``block_size`` tokens per layer; ``enable_prefix_caching`` reuses the blocks of shared
    prompt prefixes. ``add_request(prompt_ids, max_new_tokens, params)`` -> request id,
    ``step()`` -> the requests that finished during the step, ``generate(prompts, ...)``.
    Counters: ``num_preemptions``, ``num_prefill_tokens`` (tokens computed during prefill;
    cached prefixes are skipped), ``num_decode_tokens``.
    """

    def __init__(self, model, max_num_seqs: int = 8, num_blocks: int = 64, block_size: int = 16,
                 enable_prefix_caching: bool = True):
        if "GPT2" not in {cls.__name__ for cls in type(model).__mro__}:
            raise TypeError(f"LLMEngine: supports lamina's GPT2 models, got {type(model).__name__}")
        if int(max_num_seqs) < 1:
            raise ValueError(f"LLMEngine: max_num_seqs must be positive, got {max_num_seqs}")
        self.model = model
        self.weights = _GPT2Weights(model)
        self.max_num_seqs = int(max_num_seqs)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        w = self.weights
        shape = (len(w.blocks), num_blocks, block_size, w.heads, w.head_dim)
        self.key_cache = np.zeros(shape, dtype=w.wte.dtype)
        self.value_cache = np.zeros(shape, dtype=w.wte.dtype)
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
        if total > self.model.n_positions:
            raise ValueError(f"LLMEngine.add_request: prompt {len(prompt)} + max_new_tokens {max_new_tokens} exceeds "
                             f"the model's n_positions {self.model.n_positions}")
        manager = self.block_manager
        if -(-total // manager.block_size) > manager.num_blocks:
            raise ValueError(f"LLMEngine.add_request: {total} tokens need {-(-total // manager.block_size)} blocks of "
                             f"{manager.block_size}, the pool has {manager.num_blocks}")
        params = params or SamplingParams()
        request_id = next(self._ids)
        self.waiting.append(_Sequence(request_id, prompt, int(max_new_tokens), params,
                                      np.random.default_rng(params.seed)))
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
        if params.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / params.temperature
        if params.top_k is not None and params.top_k < z.size:
            z[z < np.partition(z, -params.top_k)[-params.top_k]] = -np.inf
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

        logits = self._forward(np.asarray(tokens)[positions], positions, attend)
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

        logits = self._forward(np.array([seq.output_ids[-1] for seq in seqs]), lens - 1, attend)
        return [self._sample(row, seq) for row, seq in zip(logits, seqs)]

    def _forward(self, tokens: np.ndarray, positions: np.ndarray, attend) -> np.ndarray:
        """Scores (T, vocab) of tokens at ``positions``; ``attend(layer, q, k, v, scale)`` stores
        the new keys and values (T, h, d) and returns the attention output (T, h, d)."""
        w = self.weights
        x = w.wte[tokens] + w.wpe[positions]
        t, scale = len(tokens), 1.0 / math.sqrt(w.head_dim)
        for layer, block in enumerate(w.blocks):
            qkv = _layer_norm(x, *block["ln_1"]) @ block["qkv"][0] + block["qkv"][1]
            q, k, v = (part.reshape(t, w.heads, w.head_dim) for part in np.split(qkv, 3, axis=-1))
            x = x + attend(layer, q, k, v, scale).reshape(t, -1) @ block["proj"][0] + block["proj"][1]
            hidden = _gelu_tanh(_layer_norm(x, *block["ln_2"]) @ block["fc"][0] + block["fc"][1])
            x = x + hidden @ block["mlp_proj"][0] + block["mlp_proj"][1]
        return _layer_norm(x, *w.ln_f) @ w.wte.T
