"""The Mamba block (Gu and Dao 2023): a gated, input-selective state-space mixer over
sequences (N, T, hidden_size), Hugging Face's ``MambaMixer`` with its sub-layer names.

    [x, z] = in_proj(h)                              (2 I features, I = expand * hidden_size)
    x = silu(conv1d(x))                              (causal depthwise, kernel d_conv, with bias)
    [dt, B, C] = x_proj(x)                           (dt_rank, S, S features)
    y = selective_scan(x, dt dt_proj.W, -exp(A_log), B, C, D, z, dt_proj.b, softplus)
    out = out_proj(y)

(see :func:`lamina.functional.selective_scan`: y_t = C_t h_t + D x_t with
h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t, Delta = softplus(dt dt_proj.W + dt_proj.b),
gated by silu(z)). Weights are lamina's: Dense (in, out) is PyTorch's ``Linear`` weight
transposed, the depthwise ``conv1d.weight`` is (I, d_conv, 1), PyTorch's (I, 1, d_conv)
transposed.

Step by step: with ``stateful=True`` (or within :func:`lamina.text.carrying_states`) each
call continues the sequence of the previous one, carrying the last d_conv - 1 inputs of the
convolution and the state h (N, I, S), detached from the graph: O(1) work per new token.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.selective_scan import selective_scan
from lamina.nn import init as initializers
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MambaBlock", "inverse_softplus_time_steps"]


def inverse_softplus_time_steps(size: int, dt_min: float, dt_max: float, floor: float, dtype=None):
    """softplus^-1(dt) for dt log-uniform in [dt_min, dt_max] (at least ``floor``): the
    ``dt_proj`` bias Mamba starts from, so that softplus(bias) spans those step sizes.
    softplus^-1(dt) = dt + log(1 - exp(-dt))."""
    xp = backend.xp
    low, high = math.log(dt_min), math.log(dt_max)
    dt = xp.exp(xp.asarray(backend.rng().random(size)) * (high - low) + low)
    dt = xp.maximum(dt, floor)
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return (dt + xp.log(-xp.expm1(-dt))).astype(dtype)


@register_layer
class MambaBlock(Module):
    """Mamba's mixer on (N, T, ``hidden_size``) -> (N, T, ``hidden_size``) (formulas in the
    module docstring). Arguments are Hugging Face ``MambaConfig``'s: ``state_size`` S,
    ``conv_kernel`` d_conv, ``expand`` (I = expand * hidden_size), ``time_step_rank``
    (``"auto"``: ceil(hidden_size / 16)), ``use_bias`` (in/out projections),
    ``use_conv_bias``.

    Initialisation as Hugging Face's: in_proj and x_proj N(0, ``initializer_range``);
    dt_proj.weight U(+-dt_rank^-1/2 ``time_step_scale``) (``time_step_init_scheme``
    'random', or that constant for 'constant'); dt_proj.bias softplus^-1 of a log-uniform
    step in [``time_step_min``, ``time_step_max``] floored at ``time_step_floor``;
    A_log = log(1..S) on every channel; D = 1; conv1d.weight U(+-1/sqrt(d_conv)) and a zero
    bias; out_proj U(+-1/sqrt(I)); zero projection biases.

    ``attention_mask`` (N, T), 0 on the padding steps of the call (Hugging Face's): the
    convolution's inputs and outputs are zeroed there, so a padding step changes neither the
    convolution of the later steps nor the state (its B x is 0): a left-padded row gives the
    outputs of its real steps alone.

    ``stateful``: calls continue one another's sequence (see the module docstring);
    :meth:`reset_states` starts again from zeros, :meth:`reorder_states` keeps and reorders
    the rows of the carried states (beam search)."""

    streamable = True

    def __init__(self, hidden_size: int, state_size: int = 16, conv_kernel: int = 4, expand: int = 2,
                 time_step_rank="auto", use_bias: bool = False, use_conv_bias: bool = True,
                 initializer_range: float = 0.1, time_step_min: float = 0.001, time_step_max: float = 0.1,
                 time_step_floor: float = 1e-4, time_step_scale: float = 1.0, time_step_init_scheme: str = "random",
                 stateful: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "MambaBlock: hidden_size")
        self.state_size = positive_int(state_size, "MambaBlock: state_size")
        self.conv_kernel = positive_int(conv_kernel, "MambaBlock: conv_kernel")
        self.expand = positive_int(expand, "MambaBlock: expand")
        self.intermediate_size = self.expand * self.hidden_size
        rank = math.ceil(self.hidden_size / 16) if time_step_rank == "auto" else time_step_rank
        self.time_step_rank = positive_int(rank, "MambaBlock: time_step_rank")
        if time_step_init_scheme not in ("random", "constant"):
            raise ValueError(f"MambaBlock: time_step_init_scheme must be 'random' or 'constant', got "
                             f"{time_step_init_scheme!r}")
        if not 0 < time_step_min <= time_step_max:
            raise ValueError(f"MambaBlock: expected 0 < time_step_min <= time_step_max, got {time_step_min!r} "
                             f"and {time_step_max!r}")
        self.use_bias, self.use_conv_bias = bool(use_bias), bool(use_conv_bias)
        self.initializer_range = float(initializer_range)
        self.time_step_min, self.time_step_max = float(time_step_min), float(time_step_max)
        self.time_step_floor, self.time_step_scale = float(time_step_floor), float(time_step_scale)
        self.time_step_init_scheme = time_step_init_scheme
        self.stateful = bool(stateful)
        self._carried = None
        inner, normal = self.intermediate_size, initializers.normal(std=self.initializer_range)
        dt_std = self.time_step_rank ** -0.5 * self.time_step_scale
        dt_init = initializers.uniform(dt_std) if time_step_init_scheme == "random" else initializers.constant(
            dt_std)
        self.in_proj = Dense(2 * inner, use_bias=self.use_bias, kernel_init=normal)
        self.conv1d = Conv1D(inner, self.conv_kernel, padding="causal", groups=inner, use_bias=self.use_conv_bias,
                             kernel_init=initializers.uniform(1 / math.sqrt(self.conv_kernel)))
        self.x_proj = Dense(self.time_step_rank + 2 * self.state_size, use_bias=False, kernel_init=normal)
        self.dt_proj = Dense(inner, kernel_init=dt_init)
        self.out_proj = Dense(self.hidden_size, use_bias=self.use_bias,
                              kernel_init=initializers.uniform(1 / math.sqrt(inner)))

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.hidden_size:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.hidden_size}), got "
                             f"{shape}")
        inner = shape[:-1] + (self.intermediate_size,)
        for layer, layer_shape in ((self.in_proj, shape), (self.conv1d, inner), (self.x_proj, inner),
                                   (self.dt_proj, shape[:-1] + (self.time_step_rank,)),
                                   (self.out_proj, inner)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        dtype = backend.get_default_dtype()
        xp = backend.xp
        if initializers.is_meta():
            self.add_parameter("A_log", initializers.meta_array((self.intermediate_size, self.state_size), dtype))
            self.add_parameter("D", initializers.meta_array((self.intermediate_size,), dtype))
        else:
            self.dt_proj.bias.data = inverse_softplus_time_steps(
                self.intermediate_size, self.time_step_min, self.time_step_max, self.time_step_floor, dtype)
            a = xp.log(xp.arange(1, self.state_size + 1, dtype=dtype))
            self.add_parameter("A_log", xp.ascontiguousarray(xp.broadcast_to(a, (self.intermediate_size,
                                                                                  self.state_size))))
            self.add_parameter("D", xp.ones(self.intermediate_size, dtype=dtype))
        self.built = True

    def forward(self, x, attention_mask=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.hidden_size or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.hidden_size}) with at least one step")
        inner, rank, states = self.intermediate_size, self.time_step_rank, self.state_size
        projected = self.in_proj(x)
        hidden, gate = projected[..., :inner], projected[..., inner:]
        keep = self._step_mask(attention_mask, x)
        if keep is not None:
            hidden = hidden * keep
        history, state = self._history(x)
        hidden = F.silu(self._causal_conv(hidden, history))
        if keep is not None:
            hidden = hidden * keep
        parameters = self.x_proj(hidden)
        dt, b, c = parameters[..., :rank], parameters[..., rank:rank + states], parameters[..., rank + states:]
        delta = F.matmul(dt, self.dt_proj.weight)
        a = -F.exp(self.A_log)
        result = selective_scan(hidden, delta, a, b, c, D=self.D, z=gate, delta_bias=self.dt_proj.bias,
                                delta_softplus=True, initial_state=state, return_last_state=self.stateful)
        if self.stateful:
            result, last = result
            inputs = projected.data[..., :inner] if keep is None else projected.data[..., :inner] * keep.data
            earlier = backend.xp.concatenate([history.data, inputs], axis=1) if history is not None else inputs
            self._carried = (self._last_inputs(earlier), last.data)
        return self.out_proj(result)

    def _step_mask(self, attention_mask, x) -> Tensor | None:
        """``attention_mask`` (N, T) as a (N, T, 1) constant of the input's dtype, or None."""
        if attention_mask is None:
            return None
        mask = backend.xp.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
        if mask.shape != tuple(x.shape[:2]):
            raise ShapeError(f"{self._label()}: attention_mask of shape {tuple(mask.shape)} for an input "
                             f"{tuple(x.shape)}; expected {tuple(x.shape[:2])} (1 on real steps, 0 on padding)")
        return Tensor._wrap(mask.astype(x.dtype)[..., None])

    def _causal_conv(self, x: Tensor, history: Tensor | None) -> Tensor:
        """The depthwise convolution over [history, x]: step t sees the d_conv inputs up to
        t, zeros before the sequence started (no history)."""
        k = self.conv_kernel
        steps = x.shape[1]
        if history is None:
            history = Tensor._wrap(backend.xp.zeros((x.shape[0], k - 1, x.shape[2]), dtype=x.dtype))
        padded = F.concat([history, x], axis=1) if k > 1 else x
        weight = self.conv1d.weight
        out = None
        for i in range(k):
            term = padded[:, i:i + steps] * weight[:, i, 0]
            out = term if out is None else out + term
        return out + self.conv1d.bias if self.use_conv_bias else out

    def _last_inputs(self, inputs):
        """The last d_conv - 1 steps of the convolution's inputs (zeros before the start)."""
        xp = backend.xp
        k = self.conv_kernel - 1
        if inputs.shape[1] < k:
            pad = xp.zeros((inputs.shape[0], k - inputs.shape[1], inputs.shape[2]), dtype=inputs.dtype)
            inputs = xp.concatenate([pad, inputs], axis=1)
        return xp.ascontiguousarray(inputs[:, inputs.shape[1] - k:])

    def _history(self, x):
        """(conv inputs, state) carried from the previous call, or (None, None)."""
        if not self.stateful or self._carried is None:
            return None, None
        history, state = self._carried
        if history.shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of {history.shape[0]}, "
                             f"got an input of {describe(x)}; call reset_states() before changing the batch size")
        dtype = x.dtype
        return Tensor._wrap(history.astype(dtype, copy=False)), Tensor._wrap(state.astype(dtype, copy=False))

    def reset_states(self) -> None:
        """Forget the carried convolution inputs and state: the next call starts afresh."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried states of the rows ``rows`` (R,), in that order (row i becomes the
        old row ``rows[i]``; rows may repeat or be left out). Refused for a layer that is not
        stateful; nothing to do before its first call."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is None:
            return
        self._carried = tuple(array[index] for array in self._carried)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "state_size": self.state_size, "conv_kernel": self.conv_kernel,
                "expand": self.expand, "time_step_rank": self.time_step_rank, "use_bias": self.use_bias,
                "use_conv_bias": self.use_conv_bias, "initializer_range": self.initializer_range,
                "time_step_min": self.time_step_min, "time_step_max": self.time_step_max,
                "time_step_floor": self.time_step_floor, "time_step_scale": self.time_step_scale,
                "time_step_init_scheme": self.time_step_init_scheme, "stateful": self.stateful, "name": self.name}

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, state_size={self.state_size}, conv_kernel={self.conv_kernel}, "
                f"intermediate_size={self.intermediate_size}, time_step_rank={self.time_step_rank}")
