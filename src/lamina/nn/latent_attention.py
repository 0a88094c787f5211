"""Multi-head latent attention (MLA; DeepSeek-AI 2024, "DeepSeek-V2"), on (N, T, d) -> (N, T, d)
with H heads:

    c_KV = RMSNorm(x W_DKV)                        (N, T, r)   the latent of keys and values
    k^R  = RoPE(x W_KR)                            (N, T, d_R) one rotary key shared by the heads
    k^C_h = c_KV W_UK,h,  v_h = c_KV W_UV,h        (d_nope and d_v features per head)
    c_Q = RMSNorm(x W_DQ) (or x itself when q_lora_rank is None)
    q^C_h = c_Q W_UQ,h,   q^R_h = RoPE(c_Q W_QR,h)
    o_h = softmax([q^C_h, q^R_h] [k^C_h, k^R]^T / sqrt(d_nope + d_R) + causal mask) v_h
    out = concat(o_1 .. o_H) W_O

Projections carry Hugging Face's names: ``kv_a_proj_with_mqa`` (W_DKV and W_KR side by side),
``kv_a_layernorm``, ``kv_b_proj`` (per head W_UK then W_UV), ``q_proj`` or ``q_a_proj``,
``q_a_layernorm``, ``q_b_proj`` (per head W_UQ then W_QR), ``o_proj``; no biases. RoPE turns
the two halves of the rotary features (:func:`lamina.functional.rotary_embedding`).

Absorbed form (``absorb=True``): as q^C_h k^C_h^T = (q^C_h W_UK,h^T) c_KV^T, the up-projection
of the keys folds into the query, and as the weights sum values linearly,
o_h = (softmax(...) c_KV) W_UV,h; attention then runs over the latents [c_KV, k^R] themselves,
never forming per-head keys and values (the same values and gradients as the naive form).

Cache: within :meth:`start_caching` .. :meth:`stop_caching` (or
:func:`lamina.text.caching_keys_values`) each call continues one sequence, and the layer keeps
[c_KV, k^R] of every step read: r + d_R numbers per token (:attr:`cache`), against
2 H d_head for the keys and values of multi-head attention.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, is_grad_enabled
from lamina.errors import ShapeError
from lamina.functional.rotary import rotary_embedding
from lamina.nn.cache_rows import cache_rows
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.rms_norm import RMSNorm

__all__ = ["MultiHeadLatentAttention"]


def _dense(units: int, in_features: int) -> Dense:
    layer = Dense(units, use_bias=False, kernel_init="xavier_uniform")
    layer.build((None, in_features))
    return layer


def _norm(features: int, eps: float) -> RMSNorm:
    layer = RMSNorm(features, eps=eps)
    layer.build((None, features))
    layer.built = True
    return layer


@register_layer
class MultiHeadLatentAttention(Module):
    """DeepSeek-V2's multi-head latent attention (formulas in the module docstring):
    ``d_model`` features, ``num_heads`` heads, keys and values from a latent of
    ``kv_lora_rank`` features, queries from one of ``q_lora_rank`` (None: straight from the
    input), per head ``qk_nope_head_dim`` query/key features without rotation,
    ``qk_rope_head_dim`` (even) rotated ones, ``v_head_dim`` value features (by default
    d_model / num_heads, its half, and d_model / num_heads). ``rope_theta``: the rotary base;
    ``rms_norm_eps``: the latents' RMSNorm eps; ``absorb``: compute in the absorbed form.

    ``layer(x, causal=True, absorb=None)`` on (batch, time, d_model). Cache methods
    (evaluation only: ``eval()`` and ``lamina.no_grad()``): :meth:`start_caching`,
    :meth:`stop_caching`, :meth:`reorder_cache`, :meth:`crop_cache`; :attr:`cache` holds the
    latents (batch, steps, kv_lora_rank + qk_rope_head_dim)."""

    def __init__(self, d_model: int, num_heads: int, kv_lora_rank: int, q_lora_rank: int | None = None,
                 qk_nope_head_dim: int | None = None, qk_rope_head_dim: int | None = None,
                 v_head_dim: int | None = None, rope_theta: float = 10000.0, rms_norm_eps: float = 1e-6,
                 absorb: bool = False, name: str | None = None):
        super().__init__(name=name)
        who = "MultiHeadLatentAttention"
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.num_heads = positive_int(num_heads, f"{who}: num_heads")
        self.kv_lora_rank = positive_int(kv_lora_rank, f"{who}: kv_lora_rank")
        self.q_lora_rank = None if q_lora_rank is None else positive_int(q_lora_rank, f"{who}: q_lora_rank")
        if None in (qk_nope_head_dim, qk_rope_head_dim, v_head_dim) and d_model % num_heads:
            raise ValueError(f"{who}: d_model {d_model} does not divide into num_heads {num_heads} heads; give "
                             f"qk_nope_head_dim, qk_rope_head_dim and v_head_dim explicitly")
        head_dim = d_model // num_heads
        self.qk_nope_head_dim = positive_int(head_dim if qk_nope_head_dim is None else qk_nope_head_dim,
                                             f"{who}: qk_nope_head_dim")
        rope = head_dim // 2 if qk_rope_head_dim is None else qk_rope_head_dim
        self.qk_rope_head_dim = positive_int(rope, f"{who}: qk_rope_head_dim")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"{who}: qk_rope_head_dim must be even (the rotation turns pairs of features), got "
                             f"{self.qk_rope_head_dim}")
        self.v_head_dim = positive_int(head_dim if v_head_dim is None else v_head_dim, f"{who}: v_head_dim")
        if not rope_theta > 0 or not rms_norm_eps > 0:
            raise ValueError(f"{who}: rope_theta and rms_norm_eps must be positive, got {rope_theta}, {rms_norm_eps}")
        self.rope_theta, self.rms_norm_eps, self.absorb = float(rope_theta), float(rms_norm_eps), bool(absorb)
        self.scale = 1.0 / math.sqrt(self.qk_nope_head_dim + self.qk_rope_head_dim)
        query_features = num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        if self.q_lora_rank is None:
            self.q_proj = _dense(query_features, d_model)
        else:
            self.q_a_proj = _dense(self.q_lora_rank, d_model)
            self.q_a_layernorm = _norm(self.q_lora_rank, self.rms_norm_eps)
            self.q_b_proj = _dense(query_features, self.q_lora_rank)
        self.kv_a_proj_with_mqa = _dense(kv_lora_rank + self.qk_rope_head_dim, d_model)
        self.kv_a_layernorm = _norm(kv_lora_rank, self.rms_norm_eps)
        self.kv_b_proj = _dense(num_heads * (self.qk_nope_head_dim + self.v_head_dim), kv_lora_rank)
        self.o_proj = _dense(d_model, num_heads * self.v_head_dim)
        self._caching = False
        self._cache = None
        self.built = True

    # -- projections -----------------------------------------------------------------
    def _heads(self, x: Tensor, features: int) -> Tensor:
        n, t = x.shape[0], x.shape[1]
        return x.reshape(n, t, self.num_heads, features).transpose(0, 2, 1, 3)

    def queries(self, x: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """(q^C, q^R) (N, H, T, d_nope) and (N, H, T, d_R), q^R rotated from position ``offset``."""
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = self._heads(q, self.qk_nope_head_dim + self.qk_rope_head_dim)
        nope = self.qk_nope_head_dim
        return q[..., :nope], rotary_embedding(q[..., nope:], offset=offset, base=self.rope_theta)

    def latents(self, x: Tensor, offset: int = 0) -> Tensor:
        """[c_KV, k^R] (N, T, r + d_R): what the cache keeps per token."""
        compressed = self.kv_a_proj_with_mqa(x)
        rank = self.kv_lora_rank
        latent = self.kv_a_layernorm(compressed[..., :rank])
        rope_key = rotary_embedding(compressed[:, None, :, rank:], offset=offset, base=self.rope_theta)
        return F.concat([latent, rope_key[:, 0]], axis=-1)

    def _up_projections(self) -> tuple[Tensor, Tensor]:
        """W_UK (H, d_nope, r) and W_UV (H, r, d_v) from kv_b_proj's weight."""
        weight = self.kv_b_proj.weight.reshape(self.kv_lora_rank, self.num_heads,
                                               self.qk_nope_head_dim + self.v_head_dim)
        nope = self.qk_nope_head_dim
        return weight[..., :nope].transpose(1, 2, 0), weight[..., nope:].transpose(1, 0, 2)

    # -- attention -------------------------------------------------------------------
    def forward(self, x, causal: bool = True, absorb: bool | None = None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.d_model}) with at least one step")
        absorb = self.absorb if absorb is None else bool(absorb)
        offset = self._check_cached_call(x, causal) if self._caching else 0
        q_nope, q_rope = self.queries(x, offset)
        latents = self.latents(x, offset)
        mask = None
        if self._caching:
            if self._cache is not None:
                latents = Tensor._wrap(backend.xp.concatenate([self._cache, latents.data], axis=1))
            self._cache = latents.data
            t, s = x.shape[1], latents.shape[1]
            xp = backend.xp
            mask = None if t == 1 else xp.arange(s)[None, :] <= (offset + xp.arange(t))[:, None]
            causal = False
        attend = self._absorbed if absorb else self._naive
        heads = attend(q_nope, q_rope, latents, mask, causal)
        n, t = x.shape[0], x.shape[1]
        return self.o_proj(heads.transpose(0, 2, 1, 3).reshape(n, t, self.num_heads * self.v_head_dim))

    def _naive(self, q_nope, q_rope, latents, mask, causal) -> Tensor:
        """Per-head keys and values up-projected from the latents, then attention."""
        rank, nope = self.kv_lora_rank, self.qk_nope_head_dim
        kv = self._heads(self.kv_b_proj(latents[..., :rank]), nope + self.v_head_dim)
        rope_key = latents[:, None, :, rank:]
        rope_key = F.broadcast_to(rope_key, (kv.shape[0], self.num_heads) + tuple(rope_key.shape[2:]))
        keys = F.concat([kv[..., :nope], rope_key], axis=-1)
        queries = F.concat([q_nope, q_rope], axis=-1)
        return F.scaled_dot_product_attention(queries, keys, kv[..., nope:], mask=mask, causal=causal,
                                              scale=self.scale)

    def _absorbed(self, q_nope, q_rope, latents, mask, causal) -> Tensor:
        """Attention over the latents with W_UK folded into the queries and W_UV applied after."""
        up_keys, up_values = self._up_projections()
        queries = F.concat([q_nope @ up_keys, q_rope], axis=-1)          # (N, H, T, r + d_R)
        shared = latents[:, None]                                       # (N, 1, S, r + d_R)
        latent_heads = F.scaled_dot_product_attention(queries, shared, shared[..., :self.kv_lora_rank], mask=mask,
                                                      causal=causal, scale=self.scale)
        return latent_heads @ up_values

    # -- latent cache ----------------------------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether consecutive calls continue one sequence through the latent cache."""
        return self._caching

    @property
    def cache(self):
        """The cached [c_KV, k^R] (batch, steps, kv_lora_rank + qk_rope_head_dim), or None."""
        return self._cache

    @property
    def cached_steps(self) -> int:
        """The number of steps whose latents are cached (0 when not caching)."""
        return 0 if self._cache is None else int(self._cache.shape[1])

    def start_caching(self) -> None:
        """Start an empty cache: the next call reads the first steps of a sequence, each later
        call its next steps."""
        if self._caching:
            raise ValueError(f"{self._label()}: start_caching while already caching latents; stop_caching first")
        self._caching, self._cache = True, None

    def stop_caching(self) -> None:
        """Drop the cached latents; calls are independent again."""
        self._caching, self._cache = False, None

    def reorder_cache(self, rows) -> None:
        """Keep the cached rows ``rows``, in that order (beam search)."""
        if not self._caching:
            raise ValueError(f"{self._label()}: reorder_cache needs a latent cache, and the layer is not caching; "
                             "call start_caching first")
        index = cache_rows(self, rows, None if self._cache is None else self._cache.shape[0])
        if self._cache is not None:
            self._cache = self._cache[index]

    def crop_cache(self, steps: int) -> None:
        """Forget every cached step after the first ``steps``."""
        held = self.cached_steps
        if not self._caching or isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= held:
            raise ValueError(f"{self._label()}: crop_cache keeps 0 .. {held} cached steps while caching, got "
                             f"{steps!r} (caching={self._caching})")
        self._cache = self._cache[:, :steps] if steps else None

    def _check_cached_call(self, x: Tensor, causal: bool) -> int:
        """The number of cached steps, after checking that the call may continue them."""
        label = self._label()
        if not causal:
            raise ValueError(f"{label}: cannot cache latents for non-causal attention: every step would see later "
                             "steps, which change with each new token; call it with causal=True")
        if self.training or is_grad_enabled():
            raise ValueError(f"{label}: the latent cache is for evaluation only; call eval() on the layer and run "
                             "it under lamina.no_grad()")
        if self._cache is not None and self._cache.shape[0] != x.shape[0]:
            raise ShapeError(f"{label}: an input of {describe(x)} continues a cached sequence of batch size "
                             f"{self._cache.shape[0]}; stop_caching to start another")
        return self.cached_steps

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "kv_lora_rank": self.kv_lora_rank,
                "q_lora_rank": self.q_lora_rank, "qk_nope_head_dim": self.qk_nope_head_dim,
                "qk_rope_head_dim": self.qk_rope_head_dim, "v_head_dim": self.v_head_dim,
                "rope_theta": self.rope_theta, "rms_norm_eps": self.rms_norm_eps, "absorb": self.absorb,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.d_model}, num_heads={self.num_heads}, kv_lora_rank={self.kv_lora_rank}, "
                f"q_lora_rank={self.q_lora_rank}")
