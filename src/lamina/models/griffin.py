"""Griffin and Hawk language models (De et al. 2024, "Griffin: Mixing Gated Linear Recurrences
with Local Attention for Efficient Language Models"):

    h_0 = sqrt(D) E[x]
    h <- h + mix(RMSNorm(h))                    (mix: recurrent block or local MQA attention)
    h <- h + W_down (GeLU(W_gate h') * W_up h'),  h' = RMSNorm(h)     (GeGLU, expansion 3)
    logits = cap tanh((RMSNorm(h) E^T) / cap)   (tied head, soft-capped when cap > 0)

Hawk uses recurrent blocks only (:class:`lamina.nn.GriffinRecurrentBlock`, the RG-LRU); Griffin
repeats two recurrent blocks then one local attention block: multi-query attention (one key
and value head shared by every query head) over a sliding window of the last ``window``
tokens, queries and keys rotated by their positions (RoPE) on the first half of each head's
features, as in RecurrentGemma. No position table: the recurrent blocks order the sequence.

Generation: :meth:`Griffin.forward` with ``cache`` continues a sequence from its state (each
recurrent block's convolution inputs and RG-LRU state, each attention block's last
window - 1 keys and values), so :meth:`Griffin.generate` reads the prompt once and then one
token per step with constant work and memory.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.rglru import GriffinRecurrentBlock
from lamina.nn.rms_norm import RMSNorm

__all__ = ["GRIFFIN_CONFIGS", "Griffin", "GriffinResidualBlock", "Hawk", "LocalMQAttention", "griffin",
           "griffin_parameter_count", "hawk"]

GRIFFIN_CONFIGS = {
    "tiny": {"vocab_size": 256, "width": 64, "depth": 3, "num_heads": 4, "window": 32},
    "small": {"vocab_size": 256, "width": 128, "depth": 6, "num_heads": 4, "window": 64},
    "2b": {"vocab_size": 256000, "width": 2560, "depth": 26, "num_heads": 10, "window": 2048},
}
"""Small configurations for experiments, and '2b', the sizes of RecurrentGemma-2B
(2,682,862,080 parameters, published as 2.7B; no checkpoint loader)."""


def _build(layer: Module, shape) -> None:
    if not layer.built:
        layer.build(tuple(shape))
        layer.built = True


@register_with_arguments
class LocalMQAttention(Module):
    """Causal multi-query attention over a sliding window: the query at step t attends to the
    keys of steps t - window + 1 .. t, softmax(q k^T / sqrt(head_dim)) v, ``num_heads`` query
    heads sharing one key/value head; (N, T, ``width``) -> (N, T, ``width``). Queries and keys
    get rotary position embeddings (base ``rope_base``) on their first head_dim / 2 features
    (rounded down to even).
    ``forward(x, cache=None, return_cache=False)``: ``cache`` = (keys (N, P, d), values
    (N, P, d), tokens seen before) from a previous call, P <= window - 1."""

    def __init__(self, width: int, num_heads: int, window: int, rope_base: float = 10000.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.width = positive_int(width, "LocalMQAttention: width")
        self.num_heads = positive_int(num_heads, "LocalMQAttention: num_heads")
        self.window = positive_int(window, "LocalMQAttention: window")
        if width % num_heads:
            raise ValueError(f"LocalMQAttention: width {width} is not divisible by num_heads {num_heads}")
        self.head_dim = width // num_heads
        self.rope_base = float(rope_base)
        self.rope_dim = self.head_dim // 4 * 2
        self.q = Dense(width, use_bias=False, kernel_init="glorot_uniform")
        self.k = Dense(self.head_dim, use_bias=False, kernel_init="glorot_uniform")
        self.v = Dense(self.head_dim, use_bias=False, kernel_init="glorot_uniform")
        self.out = Dense(width, kernel_init="glorot_uniform")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for layer in (self.q, self.k, self.v, self.out):
            _build(layer, shape)
        self.built = True

    def forward(self, x, cache=None, return_cache: bool = False):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.width or x.shape[1] == 0:
            raise input_error(self, x, f"(batch, time, {self.width}) with at least one step")
        n, steps = x.shape[0], x.shape[1]
        q = F.reshape(self.q(x), (n, steps, self.num_heads, self.head_dim))
        k, v, seen = self.k(x), self.v(x), 0
        if cache is not None:
            past_k, past_v, seen = as_tensor(cache[0]), as_tensor(cache[1]), int(cache[2])
            if past_k.shape[0] != n or past_k.shape[2] != self.head_dim or past_k.shape != past_v.shape:
                raise ShapeError(f"{self._label()}: cached keys {past_k.shape} and values {past_v.shape} for a "
                                 f"batch of {n}; expected (N, P, {self.head_dim}) each")
        k = self._rotate(k, seen)
        q = F.transpose(self._rotate(F.transpose(q, (0, 2, 1, 3)), seen), (0, 2, 1, 3))
        if cache is not None:
            k, v = F.concat([past_k, k], axis=1), F.concat([past_v, v], axis=1)
        keys = np.arange(k.shape[1]) + seen + steps - k.shape[1]
        queries = np.arange(steps) + seen
        allowed = (keys[None] <= queries[:, None]) & (keys[None] > queries[:, None] - self.window)
        bias = Tensor._wrap(backend.xp.asarray(np.where(allowed, 0.0, -1e30), dtype=x.dtype))
        scores = F.einsum("nthd,nsd->nhts", q, k) / math.sqrt(self.head_dim) + bias
        mixed = F.einsum("nhts,nsd->nthd", F.softmax(scores, axis=-1), v)
        out = self.out(F.reshape(mixed, (n, steps, self.width)))
        if not return_cache:
            return out
        keep = max(k.shape[1] - (self.window - 1), 0)
        return out, (Tensor._wrap(k.data[:, keep:]), Tensor._wrap(v.data[:, keep:]), seen + steps)

    def _rotate(self, x: Tensor, seen: int) -> Tensor:
        """RoPE on the first ``rope_dim`` features of x (..., T, head_dim) at positions seen + t."""
        if self.rope_dim == 0:
            return x
        rotated = F.rotary_embedding(x[..., :self.rope_dim], offset=seen, base=self.rope_base)
        return F.concat([rotated, x[..., self.rope_dim:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_with_arguments
class GriffinResidualBlock(Module):
    """x + mix(RMSNorm(x)), then x + GeGLU(RMSNorm(x)) with ``mlp_expansion`` x width hidden
    features; ``kind`` 'recurrent' (:class:`lamina.nn.GriffinRecurrentBlock`) or 'attention'
    (:class:`LocalMQAttention`). ``forward(x, cache=None, return_cache=False)`` passes the
    cache to the mixer."""

    def __init__(self, width: int, kind: str = "recurrent", num_heads: int = 1, window: int = 128,
                 lru_width: int | None = None, conv_width: int = 4, mlp_expansion: int = 3,
                 name: str | None = None):
        super().__init__(name=name)
        if kind not in ("recurrent", "attention"):
            raise ValueError(f"GriffinResidualBlock: kind must be 'recurrent' or 'attention', got {kind!r}")
        self.width, self.kind = positive_int(width, "GriffinResidualBlock: width"), kind
        self.norm_mix, self.norm_mlp = RMSNorm(width, eps=1e-6), RMSNorm(width, eps=1e-6)
        if kind == "recurrent":
            self.mixer = GriffinRecurrentBlock(width, lru_width, num_blocks=num_heads, conv_width=conv_width)
        else:
            self.mixer = LocalMQAttention(width, num_heads, window)
        hidden = positive_int(mlp_expansion, "GriffinResidualBlock: mlp_expansion") * width
        self.mlp_gate = Dense(hidden, kernel_init="glorot_uniform")
        self.mlp_up = Dense(hidden, kernel_init="glorot_uniform")
        self.mlp_down = Dense(width, kernel_init="glorot_uniform")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for layer in (self.norm_mix, self.mixer, self.norm_mlp, self.mlp_gate, self.mlp_up):
            _build(layer, shape)
        _build(self.mlp_down, shape[:-1] + (self.mlp_gate.units,))
        self.built = True

    def forward(self, x, cache=None, return_cache: bool = False):
        x = as_tensor(x)
        mixed = self.mixer(self.norm_mix(x), cache=cache, return_cache=return_cache)
        mixed, cache = mixed if return_cache else (mixed, None)
        x = x + mixed
        h = self.norm_mlp(x)
        x = x + self.mlp_down(F.gelu(self.mlp_gate(h), approximate="tanh") * self.mlp_up(h))
        return (x, cache) if return_cache else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_with_arguments
class Griffin(Module):
    """Griffin language model: token ids (N, T) -> scores (N, T, ``vocab_size``) (formulas in
    the module docstring). ``pattern``: the block kinds repeated over the ``depth`` blocks
    (Griffin's ('recurrent', 'recurrent', 'attention')); ``num_heads`` the attention's query
    heads and the RG-LRU's gate blocks; ``window`` the local attention span; ``lru_width``
    the recurrent width (default ``width``); ``logits_soft_cap`` (0: none).

    ``model(ids, cache=None, return_cache=False)``: with ``return_cache`` also the state
    after the sequence, from which a next call continues."""

    def __init__(self, vocab_size: int, width: int, depth: int, num_heads: int = 1, window: int = 128,
                 pattern: tuple = ("recurrent", "recurrent", "attention"), lru_width: int | None = None,
                 conv_width: int = 4, mlp_expansion: int = 3, logits_soft_cap: float = 30.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, f"{type(self).__name__}: vocab_size")
        self.width = positive_int(width, f"{type(self).__name__}: width")
        self.depth = positive_int(depth, f"{type(self).__name__}: depth")
        self.pattern = tuple(pattern)
        if not self.pattern:
            raise ValueError(f"{type(self).__name__}: pattern must name at least one block kind")
        self.logits_soft_cap = float(logits_soft_cap)
        self.embed = Embedding(vocab_size, width)
        self.blocks = ModuleList([GriffinResidualBlock(width, self.pattern[i % len(self.pattern)], num_heads, window,
                                                       lru_width, conv_width, mlp_expansion) for i in range(depth)])
        self.norm = RMSNorm(width, eps=1e-6)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ShapeError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        _build(self.embed, ids)
        for layer in (*self.blocks, self.norm):
            _build(layer, ids + (self.width,))
        if getattr(self, "build_input_shape", None) is None:
            object.__setattr__(self, "build_input_shape", ids)
        self.built = True

    def forward(self, ids, cache=None, return_cache: bool = False):
        ids = backend.xp.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise input_error(self, ids, "token ids (batch, time) with at least one step")
        if cache is not None and len(cache) != self.depth:
            raise ValueError(f"{self._label()}: the cache has {len(cache)} entries, expected one per block "
                             f"({self.depth})")
        x = self.embed(ids) * math.sqrt(self.width)
        caches = []
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if cache is None else cache[i], return_cache=return_cache)
            if return_cache:
                x, state = x
                caches.append(state)
        logits = F.matmul(self.norm(x), F.transpose(self.embed.weight, 1, 0))
        if self.logits_soft_cap > 0:
            logits = F.tanh(logits / self.logits_soft_cap) * self.logits_soft_cap
        return (logits, caches) if return_cache else logits

    def generate(self, ids, max_new_tokens: int, temperature: float = 0.0, seed: int | None = None) -> np.ndarray:
        """``ids`` (N, T) followed by ``max_new_tokens`` tokens, each from the scores of the
        cached state: the most likely one (``temperature`` 0) or sampled from
        softmax(scores / temperature)."""
        ids = np.asarray(ids)
        rng = np.random.default_rng(seed)
        out = [ids]
        with no_grad():
            logits, cache = self(ids, return_cache=True)
            for _ in range(max_new_tokens):
                scores = np.asarray(logits.data[:, -1], dtype=np.float64)
                if temperature > 0:
                    p = np.exp((scores - scores.max(-1, keepdims=True)) / temperature)
                    p /= p.sum(-1, keepdims=True)
                    token = np.array([rng.choice(self.vocab_size, p=row) for row in p])
                else:
                    token = scores.argmax(-1)
                out.append(token[:, None].astype(ids.dtype))
                logits, cache = self(out[-1], cache=cache, return_cache=True)
        return np.concatenate(out, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)


@register_with_arguments
class Hawk(Griffin):
    """Hawk: :class:`Griffin` with recurrent blocks only (no attention)."""

    def __init__(self, vocab_size: int, width: int, depth: int, num_heads: int = 1, lru_width: int | None = None,
                 conv_width: int = 4, mlp_expansion: int = 3, logits_soft_cap: float = 30.0,
                 name: str | None = None):
        super().__init__(vocab_size, width, depth, num_heads, 1, ("recurrent",), lru_width, conv_width,
                         mlp_expansion, logits_soft_cap, name)


def griffin(config: str = "tiny", **options) -> Griffin:
    """A :class:`Griffin` of :data:`GRIFFIN_CONFIGS` ``config`` ('tiny', 'small', '2b');
    ``options`` override its arguments. Unbuilt: the weights are made on the first call."""
    if config not in GRIFFIN_CONFIGS:
        raise ValueError(f"griffin: config must be one of {tuple(GRIFFIN_CONFIGS)}, got {config!r}")
    return Griffin(**{**GRIFFIN_CONFIGS[config], **options})


def hawk(config: str = "tiny", **options) -> Hawk:
    """A :class:`Hawk` of :data:`GRIFFIN_CONFIGS` ``config`` (its window unused)."""
    if config not in GRIFFIN_CONFIGS:
        raise ValueError(f"hawk: config must be one of {tuple(GRIFFIN_CONFIGS)}, got {config!r}")
    settings = {k: v for k, v in GRIFFIN_CONFIGS[config].items() if k != "window"}
    return Hawk(**{**settings, **options})


def griffin_parameter_count(vocab_size: int, width: int, depth: int, num_heads: int = 1,
                            pattern: tuple = ("recurrent", "recurrent", "attention"), lru_width: int | None = None,
                            conv_width: int = 4, mlp_expansion: int = 3, **_unused) -> int:
    """The parameters of :class:`Griffin` by formula, without building it: V D (tied table)
    + D (final norm) + per block 2 D (norms) + 2 (D E + E) + E D + D (GeGLU, E = expansion D)
    + the mixer: recurrent 2 (D L + L) + (k + 1) L (conv) + 2 (L^2 / heads + L) + L (RG-LRU)
    + L D + D, or attention 2 D^2 + 2 D D / heads + D (one key/value head)."""
    lru = width if lru_width is None else lru_width
    expanded = mlp_expansion * width
    recurrent = 2 * (width * lru + lru) + (conv_width + 1) * lru + 2 * (lru * lru // num_heads + lru) + lru
    recurrent += lru * width + width
    attention = 2 * width * width + 2 * width * (width // num_heads) + width
    mlp = 2 * (width * expanded + expanded) + expanded * width + width
    total = vocab_size * width + width
    for i in range(depth):
        total += 2 * width + mlp + (recurrent if pattern[i % len(pattern)] == "recurrent" else attention)
    return total
