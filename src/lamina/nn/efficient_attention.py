"""Multi-head self-attention layers with sub-quadratic cost, on (N, T, embed_dim) -> (N, T, embed_dim):

    Q = x W_q, K = x W_k, V = x W_v, split into H heads of d = embed_dim / H features
    head_h = attention(Q_h, K_h, V_h),   out = concat(head_1 .. head_H) W_o

with the attention of :mod:`lamina.functional.efficient_attention`:

- :class:`LinformerAttention`: keys and values projected along the sequence to ``proj_dim``
  rows by learned E, F (``max_seq_len`` columns; ``sharing`` 'none': E and F, 'key-value':
  E = F, 'layerwise': E = F and the matrix may be shared with other layers by
  :meth:`LinformerAttention.share_projection`); the heads share the projection.
- :class:`NystromAttention`: ``num_landmarks`` segment-mean landmarks and the iterative
  pseudo-inverse; ``conv_kernel_size`` adds the paper's depthwise convolution of the values
  along the sequence (one kernel per head) to each head's output.
- :class:`LSHAttention`: Reformer's shared-QK attention (Q = K = x W_qk) over ``num_buckets``
  hash buckets, ``num_hashes`` rounds and chunks of ``chunk_size``; the random rotations are
  the buffer ``rotations`` drawn with ``seed`` (:meth:`LSHAttention.redraw_rotations` draws anew).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.efficient_attention import linformer_attention, lsh_attention, nystrom_attention
from lamina.functional.shape import pad, reshape
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import head_split, input_error, positive_int, register_layer
from lamina.nn.linear_attention import merge_heads, split_heads
from lamina.nn.module import Module, as_tensor

__all__ = ["LSHAttention", "LinformerAttention", "NystromAttention"]

LINFORMER_SHARING = ("none", "key-value", "layerwise")


class _HeadedSelfAttention(Module):
    """Input checks, building and head bookkeeping shared by the three layers; subclasses
    name their projections in ``_projections`` and attend with ``_attend`` on (N, H, T, d)."""

    _projections = ("q_proj", "k_proj", "v_proj", "out_proj")

    def __init__(self, embed_dim: int, num_heads: int, use_bias: bool, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.embed_dim, self.num_heads, self.head_dim = head_split(embed_dim, num_heads, who)
        self.use_bias = bool(use_bias)
        for projection in self._projections:
            setattr(self, projection, Dense(embed_dim, use_bias=self.use_bias, kernel_init="xavier_uniform"))

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.embed_dim}), got {shape}")
        for projection in self._projections:
            layer = getattr(self, projection)
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self._build_own(shape)
        self.built = True

    def _build_own(self, shape) -> None:
        """Create the layer's own parameters beyond the projections."""

    def _check(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise input_error(self, x, f"an input (batch, time, {self.embed_dim})")
        return x

    def forward(self, x) -> Tensor:
        """Self-attention on ``x`` (N, T, embed_dim)."""
        x = self._check(x)
        return self.out_proj(merge_heads(self._attend(x)))

    def _heads(self, projection: str, x: Tensor) -> Tensor:
        return split_heads(getattr(self, projection)(x), self.num_heads)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _common_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "use_bias": self.use_bias,
                "name": self.name}


@register_layer
class LinformerAttention(_HeadedSelfAttention):
    """Linformer self-attention (module docstring): each head
    softmax(Q (E K)^T / sqrt(d)) (F V) with E, F (proj_dim, max_seq_len), inputs of at most
    ``max_seq_len`` steps (the first T columns are used)."""

    def __init__(self, embed_dim: int, max_seq_len: int, proj_dim: int = 64, num_heads: int = 1,
                 sharing: str = "none", use_bias: bool = True, name: str | None = None):
        super().__init__(embed_dim, num_heads, use_bias, name)
        self.max_seq_len = positive_int(max_seq_len, "LinformerAttention: max_seq_len")
        self.proj_dim = positive_int(proj_dim, "LinformerAttention: proj_dim")
        if sharing not in LINFORMER_SHARING:
            raise ValueError(f"LinformerAttention: sharing must be one of {LINFORMER_SHARING}, got {sharing!r}")
        self.sharing = sharing

    def _build_own(self, shape) -> None:
        names = ("key_projection",) if self.sharing != "none" else ("key_projection", "value_projection")
        for name in names:
            if name not in self._parameters:
                weight = initializers.xavier_uniform((self.proj_dim, self.max_seq_len), self.max_seq_len,
                                                     self.proj_dim, backend.get_default_dtype())
                self.add_parameter(name, weight)

    def share_projection(self, other: LinformerAttention) -> None:
        """Use ``other``'s projection E (layerwise sharing: both layers must have
        sharing='layerwise' and the same proj_dim and max_seq_len)."""
        for layer in (self, other):
            if layer.sharing != "layerwise":
                raise ValueError(f"LinformerAttention.share_projection: both layers need sharing='layerwise', "
                                 f"{layer._label()} has {layer.sharing!r}")
        if (other.proj_dim, other.max_seq_len) != (self.proj_dim, self.max_seq_len):
            raise ShapeError(f"LinformerAttention.share_projection: projection ({other.proj_dim}, "
                             f"{other.max_seq_len}) differs from ({self.proj_dim}, {self.max_seq_len})")
        if not other.built:
            raise ValueError("LinformerAttention.share_projection: call the other layer once (build it) first")
        self.key_projection = other.key_projection

    def _attend(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.max_seq_len:
            raise ShapeError(f"{self._label()}: the input has {x.shape[1]} steps, more than max_seq_len "
                             f"{self.max_seq_len}")
        e = self._parameters["key_projection"]
        f = e if self.sharing != "none" else self._parameters["value_projection"]
        return linformer_attention(*(self._heads(p, x) for p in ("q_proj", "k_proj", "v_proj")), e, f)

    def get_config(self) -> dict:
        return {**self._common_config(), "max_seq_len": self.max_seq_len, "proj_dim": self.proj_dim,
                "sharing": self.sharing}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, max_seq_len={self.max_seq_len}, "
                f"proj_dim={self.proj_dim}, sharing={self.sharing!r}")


def depthwise_sequence_conv(v: Tensor, kernel: Tensor) -> Tensor:
    """sum_j kernel[h, j] v[n, h, t + j - p, :] with zero padding p = (K - 1) // 2 (same length):
    a depthwise convolution of ``v`` (N, H, T, d) along T with one kernel (H, K) per head."""
    heads, size = kernel.shape
    length = v.shape[2]
    before = (size - 1) // 2
    padded = pad(v, ((0, 0), (0, 0), (before, size - 1 - before), (0, 0)))
    taps = reshape(kernel, (1, heads, size, 1, 1))
    total = None
    for j in range(size):
        term = padded[:, :, j:j + length, :] * taps[:, :, j]
        total = term if total is None else total + term
    return total


@register_layer
class NystromAttention(_HeadedSelfAttention):
    """Nystromformer self-attention (module docstring) with ``num_landmarks`` landmarks, which
    must divide the sequence length, ``pinv_iterations`` steps of the pseudo-inverse and, when
    ``conv_kernel_size`` is not None, the depthwise value convolution (the paper's 33)."""

    def __init__(self, embed_dim: int, num_heads: int = 1, num_landmarks: int = 64, pinv_iterations: int = 6,
                 conv_kernel_size: int | None = 33, use_bias: bool = True, name: str | None = None):
        super().__init__(embed_dim, num_heads, use_bias, name)
        self.num_landmarks = positive_int(num_landmarks, "NystromAttention: num_landmarks")
        self.pinv_iterations = positive_int(pinv_iterations, "NystromAttention: pinv_iterations")
        self.conv_kernel_size = (None if conv_kernel_size is None
                                 else positive_int(conv_kernel_size, "NystromAttention: conv_kernel_size"))

    def _build_own(self, shape) -> None:
        if self.conv_kernel_size is not None and "conv_kernel" not in self._parameters:
            size = self.conv_kernel_size
            bound = 1.0 / math.sqrt(size)
            draw = backend.rng().uniform(-bound, bound, (self.num_heads, size))
            self.add_parameter("conv_kernel", np.asarray(draw, dtype=backend.get_default_dtype()))

    def _attend(self, x: Tensor) -> Tensor:
        if x.shape[1] % self.num_landmarks:
            raise ShapeError(f"{self._label()}: num_landmarks {self.num_landmarks} must divide the {x.shape[1]} "
                             "steps of the input")
        q, k, v = (self._heads(p, x) for p in ("q_proj", "k_proj", "v_proj"))
        out = nystrom_attention(q, k, v, self.num_landmarks, self.pinv_iterations)
        if self.conv_kernel_size is not None:
            out = out + depthwise_sequence_conv(v, self._parameters["conv_kernel"])
        return out

    def get_config(self) -> dict:
        return {**self._common_config(), "num_landmarks": self.num_landmarks,
                "pinv_iterations": self.pinv_iterations, "conv_kernel_size": self.conv_kernel_size}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_landmarks={self.num_landmarks}, "
                f"conv_kernel_size={self.conv_kernel_size}")


@register_layer
class LSHAttention(_HeadedSelfAttention):
    """Reformer LSH self-attention (module docstring): shared queries and keys, ``num_buckets``
    (even, or 1) buckets, ``num_hashes`` rounds, chunks of ``chunk_size`` sorted positions (which
    must divide the sequence length), ``causal`` masking; the rotations (head_dim,
    num_hashes, num_buckets / 2) are drawn with ``seed`` and shared by the heads."""

    _projections = ("qk_proj", "v_proj", "out_proj")

    def __init__(self, embed_dim: int, num_heads: int = 1, num_buckets: int = 8, num_hashes: int = 1,
                 chunk_size: int = 64, causal: bool = False, seed: int | None = None, use_bias: bool = True,
                 name: str | None = None):
        super().__init__(embed_dim, num_heads, use_bias, name)
        self.num_buckets = positive_int(num_buckets, "LSHAttention: num_buckets")
        if self.num_buckets % 2 and self.num_buckets != 1:
            raise ValueError(f"LSHAttention: num_buckets must be 1 or even (argmax over [xR, -xR]), got "
                             f"{num_buckets}")
        self.num_hashes = positive_int(num_hashes, "LSHAttention: num_hashes")
        self.chunk_size = positive_int(chunk_size, "LSHAttention: chunk_size")
        self.causal = bool(causal)
        self.seed = seed
        self.redraw_rotations(seed)

    def redraw_rotations(self, seed: int | None = None) -> None:
        """New random rotations N(0, 1) (head_dim, num_hashes, num_buckets / 2) drawn with ``seed``
        (None: fresh entropy); the paper draws new ones at every step of training."""
        shape = (self.head_dim, self.num_hashes, self.num_buckets // 2)
        self.register_buffer("rotations", np.random.default_rng(seed).standard_normal(shape))

    def _attend(self, x: Tensor) -> Tensor:
        if x.shape[1] % self.chunk_size:
            raise ShapeError(f"{self._label()}: chunk_size {self.chunk_size} must divide the {x.shape[1]} steps of "
                             "the input")
        rotations = backend.xp.asarray(self._buffers["rotations"], dtype=x.dtype)
        return lsh_attention(self._heads("qk_proj", x), self._heads("v_proj", x), rotations, self.chunk_size,
                             self.causal)

    def get_config(self) -> dict:
        return {**self._common_config(), "num_buckets": self.num_buckets, "num_hashes": self.num_hashes,
                "chunk_size": self.chunk_size, "causal": self.causal, "seed": self.seed}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
                f"num_hashes={self.num_hashes}, chunk_size={self.chunk_size}, causal={self.causal}")
