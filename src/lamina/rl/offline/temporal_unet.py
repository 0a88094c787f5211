"""The denoiser of the diffusion policy's CNN variant (Chi et al. 2023): a 1-D temporal
convolutional U-Net over action sequences (N, H, d_a), conditioned by FiLM on a global
vector g = [e(k), c] of the diffusion step k's features and the observation features c.

* :class:`ConditionalResidualBlock1D`: with B(x) = mish(GroupNorm(Conv1D(x))) (kernel f,
  'same' padding) and [gamma, beta] = W mish(g) + b (FiLM, one scale and shift per channel),

      h = gamma * B_1(x) + beta,    out = B_2(h) + skip(x)

  skip the identity, or a 1x1 convolution when the channels change.
* :class:`TemporalUNet`: with widths D_0 .. D_{L-1} (``down_dims``) and the step features
  e(k) = W_2 mish(W_1 s(k) + b_1) + b_2 (s the sinusoidal embedding,
  :func:`~lamina.models.diffusion_nets.timestep_embedding`):

      down_l:  two blocks to D_l (the output kept as skip_l), then, but at the last level, a
               stride-2 convolution (kernel 3, padding 1) halving the length
      middle:  two blocks at D_{L-1}
      up_l:    for l = L-1 .. 1: [h, skip_l] joined along the channels, two blocks to D_{l-1},
               a transposed convolution (kernel 4, stride 2, padding 1) doubling the length
      head:    B (D_0 channels), then a 1x1 convolution back to d_a

  The horizon H must be divisible by 2^(L-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import timestep_embedding
from lamina.nn import Conv1D, Conv1DTranspose, Dense, GroupNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["ConditionalResidualBlock1D", "TemporalUNet"]


class _ConvBlock(Module):
    """B(x) = mish(GroupNorm(Conv1D(x))) on (N, L, C) sequences."""

    def __init__(self, channels: int, kernel_size: int, groups: int, name: str | None = None):
        super().__init__(name=name)
        self.conv = Conv1D(channels, kernel_size, padding="same", name="conv")
        self.norm = GroupNorm(math.gcd(groups, channels), name="norm")

    def forward(self, x) -> Tensor:
        h = self.conv(x)
        n, length, channels = h.shape
        return F.mish(F.reshape(self.norm(F.reshape(h, n, 1, length, channels)), n, length, channels))


@register_with_arguments
class ConditionalResidualBlock1D(Module):
    """h = gamma * B_1(x) + beta, out = B_2(h) + skip(x): two convolution blocks of
    ``out_channels`` with FiLM by the conditioning vector g (module notes). Built for inputs of
    ``in_channels`` channels and g of ``cond_dim`` values; ``forward(x, g)`` with x (N, L, C_in)
    and g (N, cond_dim)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 3, groups: int = 8,
                 name: str | None = None):
        super().__init__(name=name)
        who = "ConditionalResidualBlock1D"
        self.in_channels = positive_int(in_channels, f"{who}: in_channels")
        self.out_channels = positive_int(out_channels, f"{who}: out_channels")
        self.cond_dim = positive_int(cond_dim, f"{who}: cond_dim")
        kernel_size = positive_int(kernel_size, f"{who}: kernel_size")
        groups = positive_int(groups, f"{who}: groups")
        self.block1 = _ConvBlock(self.out_channels, kernel_size, groups, name="block1")
        self.block2 = _ConvBlock(self.out_channels, kernel_size, groups, name="block2")
        self.film = Dense(2 * self.out_channels, name="film")
        if self.in_channels != self.out_channels:
            self.skip = Conv1D(self.out_channels, 1, name="skip")
        dtype = backend.get_default_dtype()
        with no_grad():
            self.forward(np.zeros((1, 1, self.in_channels), dtype), np.zeros((1, self.cond_dim), dtype))
        self.built = True

    def forward(self, x, g) -> Tensor:
        x, g = as_tensor(x), as_tensor(g)
        if x.ndim != 3 or x.shape[2] != self.in_channels:
            raise ShapeError(f"{self._label()}: got a sequence of {describe(x)}; expected (batch, length, "
                             f"{self.in_channels})")
        if g.ndim != 2 or g.shape != (x.shape[0], self.cond_dim):
            raise ShapeError(f"{self._label()}: got a conditioning vector of {describe(g)}; expected "
                             f"({x.shape[0]}, {self.cond_dim})")
        film = F.reshape(self.film(F.mish(g)), x.shape[0], 1, 2 * self.out_channels)
        h = film[:, :, :self.out_channels] * self.block1(x) + film[:, :, self.out_channels:]
        skip = self.skip(x) if "skip" in self._modules else x
        return self.block2(h) + skip

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, cond_dim={self.cond_dim}"


@register_with_arguments
class TemporalUNet(Module):
    """The 1-D U-Net denoiser eps_theta(a_k, k, c) of the module notes: noisy action sequences
    (N, H, ``action_dim``), N diffusion steps and N conditioning vectors of ``cond_dim`` values
    -> (N, H, ``action_dim``). ``down_dims``: the widths per level; ``step_embed_dim``: the size
    of the step features e(k)."""

    def __init__(self, action_dim: int, cond_dim: int, down_dims: Sequence[int] = (32, 64, 128), kernel_size: int = 5,
                 groups: int = 8, step_embed_dim: int = 32, name: str | None = None):
        super().__init__(name=name)
        who = "TemporalUNet"
        self.action_dim = positive_int(action_dim, f"{who}: action_dim")
        self.cond_dim = positive_int(cond_dim, f"{who}: cond_dim")
        dims = (down_dims,) if isinstance(down_dims, int) else tuple(down_dims)
        if not dims:
            raise ValueError(f"{who}: down_dims must hold at least one width, got {down_dims!r}")
        self.down_dims = tuple(positive_int(d, f"{who}: down_dims") for d in dims)
        self.step_embed_dim = positive_int(step_embed_dim, f"{who}: step_embed_dim")
        f, g = positive_int(kernel_size, f"{who}: kernel_size"), positive_int(groups, f"{who}: groups")
        width = self.step_embed_dim + self.cond_dim
        self.step_in = Dense(4 * self.step_embed_dim, name="step_in")
        self.step_out = Dense(self.step_embed_dim, name="step_out")
        ins = (self.action_dim, *self.down_dims[:-1])
        self.down_blocks = ModuleList([block for k, (c, d) in enumerate(zip(ins, self.down_dims))
                                       for block in (ConditionalResidualBlock1D(c, d, width, f, g, name=f"down{k}_0"),
                                                     ConditionalResidualBlock1D(d, d, width, f, g, name=f"down{k}_1"))])
        self.downsamplers = ModuleList([Conv1D(d, 3, stride=2, padding=1, name=f"downsample{k}")
                                        for k, d in enumerate(self.down_dims[:-1])])
        top = self.down_dims[-1]
        self.middle = ModuleList([ConditionalResidualBlock1D(top, top, width, f, g, name=f"middle{j}")
                                  for j in range(2)])
        self.up_blocks = ModuleList([ConditionalResidualBlock1D(c, self.down_dims[k - 1], width, f, g,
                                                                name=f"up{k}_{j}")
                                     for k in range(len(self.down_dims) - 1, 0, -1)
                                     for j, c in enumerate((2 * self.down_dims[k], self.down_dims[k - 1]))])
        self.upsamplers = ModuleList([Conv1DTranspose(self.down_dims[k - 1], 4, stride=2, padding=1,
                                                      name=f"upsample{k}")
                                      for k in range(len(self.down_dims) - 1, 0, -1)])
        self.head_block = _ConvBlock(self.down_dims[0], f, g, name="head_block")
        self.head = Conv1D(self.action_dim, 1, name="head")
        dtype = backend.get_default_dtype()
        with no_grad():
            self.forward(np.zeros((1, self.length_multiple, self.action_dim), dtype), np.zeros(1, np.int64),
                         np.zeros((1, self.cond_dim), dtype))
        self.built = True

    @property
    def length_multiple(self) -> int:
        """2^(L-1): every horizon must be a multiple of it."""
        return 2 ** (len(self.down_dims) - 1)

    def step_features(self, t, n: int, dtype) -> Tensor:
        """e(k) of the module notes for N steps ``t`` (ints, one int for all, or a length-N array)."""
        steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t)
        steps = np.full(n, steps) if steps.ndim == 0 else steps
        if steps.shape != (n,):
            raise ShapeError(f"{self._label()}: diffusion steps of shape {steps.shape} do not fit a batch of {n}; "
                             f"expected ({n},)")
        s = Tensor._wrap(timestep_embedding(steps, self.step_embed_dim, dtype))
        return self.step_out(F.mish(self.step_in(s)))

    def forward(self, x, t, cond) -> Tensor:
        x, cond = as_tensor(x), as_tensor(cond)
        n = x.shape[0]
        if x.ndim != 3 or x.shape[2] != self.action_dim or x.shape[1] % self.length_multiple:
            raise ShapeError(f"{self._label()}: got action sequences of {describe(x)}; expected (batch, horizon, "
                             f"{self.action_dim}) with the horizon a multiple of {self.length_multiple} "
                             f"({len(self.down_dims)} levels)")
        if cond.ndim != 2 or cond.shape != (n, self.cond_dim):
            raise ShapeError(f"{self._label()}: got conditions of {describe(cond)}; expected ({n}, {self.cond_dim})")
        g = F.concat([self.step_features(t, n, x.dtype), cond], axis=-1)
        h, skips = x, []
        for level in range(len(self.down_dims)):
            h = self.down_blocks[2 * level + 1](self.down_blocks[2 * level](h, g), g)
            skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
        for block in self.middle:
            h = block(h, g)
        for k, upsample in enumerate(self.upsamplers):
            h = F.concat([h, skips[len(self.down_dims) - 1 - k]], axis=-1)
            h = upsample(self.up_blocks[2 * k + 1](self.up_blocks[2 * k](h, g), g))
        return self.head(self.head_block(h))

    def extra_repr(self) -> str:
        return f"action_dim={self.action_dim}, cond_dim={self.cond_dim}, down_dims={self.down_dims}"
