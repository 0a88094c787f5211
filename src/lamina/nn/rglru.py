"""The Real-Gated Linear Recurrent Unit and Griffin's recurrent block (De et al. 2024,
"Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language
Models"), over sequences (N, T, width).

RG-LRU, with block-diagonal gate weights W_a, W_x (``num_blocks`` blocks of width / blocks):

    r_t = sigma(W_a x_t + b_a)                      (recurrence gate)
    i_t = sigma(W_x x_t + b_x)                      (input gate)
    log a_t = -c softplus(-Lambda) r_t              (a_t = a^(c r_t), a = sigma(Lambda), c = 8)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

Lambda starts so that a^c is uniform in [0.9, 0.999]. A whole sequence is one
:func:`lamina.functional.linear_scan` (log-depth, backward by the reverse scan);
:meth:`RGLRU.step` advances one token from a carried state h (N, width).

Recurrent block: y = W_out (GeLU(W_y x) * RGLRU(conv(W_x x))), conv a causal depthwise
convolution of ``conv_width`` steps with a bias. With a cache (:meth:`GriffinRecurrentBlock.forward`'s
``cache``: the last conv_width - 1 convolution inputs and the RG-LRU state) a call continues
the sequence of the previous one: O(1) work per new token.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.linear_scan import linear_scan
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RGLRU", "GriffinRecurrentBlock"]


@register_layer
class RGLRU(Module):
    """RG-LRU on (N, T, ``width``) with ``num_blocks`` diagonal blocks in the gate weights
    (formulas in the module docstring); ``c`` the gate's temperature (8 in the paper),
    [``min_rad``, ``max_rad``] the range of a^c at initialisation."""

    def __init__(self, width: int, num_blocks: int = 1, c: float = 8.0, min_rad: float = 0.9,
                 max_rad: float = 0.999, name: str | None = None):
        super().__init__(name=name)
        self.width = positive_int(width, "RGLRU: width")
        self.num_blocks = positive_int(num_blocks, "RGLRU: num_blocks")
        if width % num_blocks:
            raise ValueError(f"RGLRU: width {width} is not divisible by num_blocks {num_blocks}")
        if not 0.0 < min_rad < max_rad < 1.0:
            raise ValueError(f"RGLRU: need 0 < min_rad < max_rad < 1, got min_rad={min_rad}, max_rad={max_rad}")
        if not c > 0:
            raise ValueError(f"RGLRU: c must be > 0, got {c!r}")
        self.c, self.min_rad, self.max_rad = float(c), float(min_rad), float(max_rad)
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        block = width // num_blocks
        for gate in ("a", "x"):
            weight = rng.standard_normal((num_blocks, block, block)) / math.sqrt(block)
            self.add_parameter(f"gate_{gate}_weight", xp.asarray(weight, dtype=dtype))
            self.add_parameter(f"gate_{gate}_bias", xp.zeros(width, dtype=dtype))
        a = rng.uniform(min_rad, max_rad, size=width) ** (1.0 / self.c)
        self.add_parameter("a_param", xp.asarray(xp.log(a) - xp.log1p(-a), dtype=dtype))
        self.built = True

    def _gate(self, x: Tensor, which: str) -> Tensor:
        """sigma(W x + b) with W block-diagonal: (..., width) -> (..., width)."""
        blocks = F.reshape(x, (*x.shape[:-1], self.num_blocks, self.width // self.num_blocks))
        weight = getattr(self, f"gate_{which}_weight")
        mixed = F.einsum("...bi,bij->...bj", blocks, weight)
        return F.sigmoid(F.reshape(mixed, x.shape) + getattr(self, f"gate_{which}_bias"))

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, sqrt(1 - a_t^2) i_t x_t) of the recurrence, each shaped like ``x``."""
        log_a = -self.c * F.softplus(-self.a_param) * self._gate(x, "a")
        # 1 - a^2 floored at 1e-12: a gate r_t that underflows to 0 gives a_t = 1 and sqrt'(0) = inf
        multiplier = F.sqrt(F.clip(-F.expm1(2.0 * log_a), 1e-12, None))
        return F.exp(log_a), multiplier * (self._gate(x, "x") * x)

    def _check(self, x, state, time_axis: bool):
        x = as_tensor(x)
        expected = f"(N, T, {self.width}) with T >= 1" if time_axis else f"(N, {self.width})"
        if x.ndim != (3 if time_axis else 2) or x.shape[-1] != self.width or (time_axis and x.shape[1] == 0):
            raise input_error(self, x, expected)
        if state is not None:
            state = as_tensor(state)
            if state.shape != (x.shape[0], self.width):
                raise ShapeError(f"{self._label()}: the state has shape {state.shape}, expected (N, width) = "
                                 f"{(x.shape[0], self.width)}")
        return x, state

    def forward(self, x, state=None, return_state: bool = False):
        """h_1..h_T (N, T, width) from ``state`` h_0 (N, width) (zeros if None); with
        ``return_state`` the pair (outputs, h_T)."""
        x, state = self._check(x, state, time_axis=True)
        a, b = self.coefficients(x)
        h = linear_scan(a, b, state)
        return (h, h[:, -1]) if return_state else h

    def step(self, x_t, state=None) -> tuple[Tensor, Tensor]:
        """One token x_t (N, width): (h_t, h_t) from h_{t-1} = ``state`` (zeros if None)."""
        x_t, state = self._check(x_t, state, time_axis=False)
        a, b = self.coefficients(x_t)
        h = b if state is None else a * state + b
        return h, h

    def get_config(self) -> dict:
        return {"width": self.width, "num_blocks": self.num_blocks, "c": self.c, "min_rad": self.min_rad,
                "max_rad": self.max_rad, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.width}, num_blocks={self.num_blocks}, c={self.c}"


@register_layer
class GriffinRecurrentBlock(Module):
    """Griffin's temporal-mixing recurrent block (N, T, ``width``) -> (N, T, ``width``):
    two branches of ``lru_width`` features (GeLU(Dense) and Dense -> causal depthwise conv
    of ``conv_width`` -> :class:`RGLRU` with ``num_blocks`` gate blocks), multiplied, then
    a Dense back to ``width``.

    ``forward(x, cache=None, return_cache=False)``: ``cache`` a pair (the last conv_width - 1
    convolution inputs (N, conv_width - 1, lru_width), the RG-LRU state (N, lru_width)) from
    a previous call's ``return_cache``; the outputs continue that call's sequence."""

    def __init__(self, width: int, lru_width: int | None = None, num_blocks: int = 1, conv_width: int = 4,
                 name: str | None = None):
        super().__init__(name=name)
        self.width = positive_int(width, "GriffinRecurrentBlock: width")
        self.lru_width = positive_int(width if lru_width is None else lru_width, "GriffinRecurrentBlock: lru_width")
        self.num_blocks = positive_int(num_blocks, "GriffinRecurrentBlock: num_blocks")
        self.conv_width = positive_int(conv_width, "GriffinRecurrentBlock: conv_width")
        self.linear_y = Dense(self.lru_width, kernel_init="glorot_uniform")
        self.linear_x = Dense(self.lru_width, kernel_init="glorot_uniform")
        self.rg_lru = RGLRU(self.lru_width, self.num_blocks)
        self.linear_out = Dense(self.width, kernel_init="glorot_uniform")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.width:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.width}), got {shape}")
        inner = shape[:-1] + (self.lru_width,)
        for layer, layer_shape in ((self.linear_y, shape), (self.linear_x, shape), (self.linear_out, inner)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        xp, dtype = backend.xp, backend.get_default_dtype()
        bound = 1.0 / math.sqrt(self.conv_width)
        weight = backend.rng().uniform(-bound, bound, size=(self.conv_width, self.lru_width))
        self.add_parameter("conv_weight", xp.asarray(weight, dtype=dtype))
        self.add_parameter("conv_bias", xp.zeros(self.lru_width, dtype=dtype))
        self.built = True

    def _conv(self, x: Tensor, history: Tensor | None) -> Tensor:
        """out_t = sum_k w_k x_{t - (conv_width - 1) + k} + bias over [history, x]."""
        k, steps = self.conv_width, x.shape[1]
        if history is None:
            history = Tensor._wrap(backend.xp.zeros((x.shape[0], k - 1, x.shape[2]), dtype=x.dtype))
        padded = F.concat([history, x], axis=1) if k > 1 else x
        out = None
        for i in range(k):
            term = padded[:, i:i + steps] * self.conv_weight[i]
            out = term if out is None else out + term
        return out + self.conv_bias

    def _check_cache(self, cache, x: Tensor):
        if cache is None:
            return None, None
        history, state = (as_tensor(part) for part in cache)
        expected = ((x.shape[0], self.conv_width - 1, self.lru_width), (x.shape[0], self.lru_width))
        if (history.shape, state.shape) != expected:
            raise ShapeError(f"{self._label()}: the cache holds shapes {history.shape} and {state.shape}, expected "
                             f"{expected[0]} (conv inputs) and {expected[1]} (RG-LRU state)")
        return history, state

    def forward(self, x, cache=None, return_cache: bool = False):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.width or x.shape[1] == 0:
            raise input_error(self, x, f"(batch, time, {self.width}) with at least one step")
        history, state = self._check_cache(cache, x)
        gate = F.gelu(self.linear_y(x), approximate="tanh")
        inputs = self.linear_x(x)
        h, last = self.rg_lru(self._conv(inputs, history), state, return_state=True)
        out = self.linear_out(h * gate)
        if not return_cache:
            return out
        earlier = inputs if history is None else F.concat([history, inputs], axis=1)
        keep = self.conv_width - 1
        if earlier.shape[1] < keep:
            pad = backend.xp.zeros((x.shape[0], keep - earlier.shape[1], self.lru_width), dtype=x.dtype)
            earlier = F.concat([Tensor._wrap(pad), earlier], axis=1)
        return out, (Tensor._wrap(earlier.data[:, earlier.shape[1] - keep:]), Tensor._wrap(last.data))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"width": self.width, "lru_width": self.lru_width, "num_blocks": self.num_blocks,
                "conv_width": self.conv_width, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.width}, lru_width={self.lru_width}, num_blocks={self.num_blocks}, conv_width={self.conv_width}"
