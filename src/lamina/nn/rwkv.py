"""RWKV-4's blocks (Peng et al. 2023) on (N, T, C) -> (N, T, C). Token shift: x'_t = x_{t-1}
(zeros before the start), mixed into each input by a learned per-channel ratio mu:
mix(x, mu) = mu x_t + (1 - mu) x'_t.

Time mixing (:class:`RWKVTimeMix`):

    k = mix(x, mu_k) W_k,  v = mix(x, mu_v) W_v,  r = sigmoid(mix(x, mu_r) W_r)
    out = (r * WKV(time_decay, time_first, k, v)) W_o       (:mod:`lamina.functional.rwkv`)

Channel mixing (:class:`RWKVChannelMix`):

    k = relu(mix(x, mu_k) W_k)^2,  r = sigmoid(mix(x, mu_r) W_r),  out = r * (k W_v)

``form`` 'parallel' computes WKV for all steps at once (training), 'recurrent' step by step with
the max trick (the same values). With ``stateful=True`` (or within
:func:`lamina.text.carrying_states`) each call continues the previous one's sequence, carrying
the last input (the token shift) and, for time mixing, the WKV state (a, b, p), detached.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu, sigmoid
from lamina.functional.rwkv import rwkv_wkv_parallel, rwkv_wkv_recurrent
from lamina.functional.shape import concat
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RWKV_FORMS", "RWKVChannelMix", "RWKVTimeMix"]

RWKV_FORMS = ("parallel", "recurrent")


class _ShiftingLayer(Module):
    """Token shift and the carried states shared by the two mixers."""

    streamable = True

    def __init__(self, embed_dim: int, layer_id: int, num_layers: int, stateful: bool, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.embed_dim = positive_int(embed_dim, f"{who}: embed_dim")
        self.num_layers = positive_int(num_layers, f"{who}: num_layers")
        if isinstance(layer_id, bool) or not isinstance(layer_id, int) or not 0 <= layer_id < num_layers:
            raise ValueError(f"{who}: layer_id must be an int in [0, num_layers={num_layers}), got {layer_id!r}")
        self.layer_id = layer_id
        self.stateful = bool(stateful)
        self._carried = None

    def _ratios(self) -> tuple[float, float, np.ndarray]:
        """RWKV-4's initialisation ratios: (layer_id / (L - 1), 1 - layer_id / L, i / C)."""
        depth = self.layer_id / (self.num_layers - 1) if self.num_layers > 1 else 0.0
        return depth, 1.0 - self.layer_id / self.num_layers, np.arange(self.embed_dim) / self.embed_dim

    def _checked(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.embed_dim}) with at least one step")
        if self.stateful and self._carried is not None and self._carried[0].shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of "
                             f"{self._carried[0].shape[0]}, got an input of {describe(x)}; call reset_states() "
                             "before changing the batch size")
        return x

    def _shifted(self, x: Tensor) -> Tensor:
        """x'_t = x_{t-1}: the carried last input (or zeros) and then x without its last step."""
        if self.stateful and self._carried is not None:
            before = Tensor._wrap(self._carried[0].astype(x.dtype, copy=False)[:, None])
        else:
            before = Tensor._wrap(backend.xp.zeros((x.shape[0], 1, x.shape[2]), dtype=x.dtype))
        return concat([before, x[:, :-1]], axis=1) if x.shape[1] > 1 else before

    @staticmethod
    def _mix(x: Tensor, shifted: Tensor, ratio: Tensor) -> Tensor:
        return x * ratio + shifted * (1.0 - ratio)

    def reset_states(self) -> None:
        """Forget the carried states: the next call starts a new sequence."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried states of the rows ``rows``, in that order (beam search)."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is not None:
            self._carried = tuple(array[index] for array in self._carried)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _build_dense(self, layers_and_shapes) -> None:
        for layer, shape in layers_and_shapes:
            if not layer.built:
                layer.build(shape)
                layer.built = True

    def _check_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.embed_dim}), got {shape}")
        return shape


@register_layer
class RWKVTimeMix(_ShiftingLayer):
    """RWKV-4 time mixing (module docstring); ``layer_id`` of ``num_layers`` sets the
    initialisation as RWKV-4's: time_decay_c = -5 + 8 (c / (C - 1))^(0.7 + 1.3 depth),
    time_first = log(0.3) + 0.5 zigzag, mu_k = (c / C)^(1 - layer_id / L), mu_v = mu_k + 0.3 depth,
    mu_r = (c / C)^((1 - layer_id / L) / 2). ``forward(x, form=...)`` overrides ``form``."""

    def __init__(self, embed_dim: int, layer_id: int = 0, num_layers: int = 1, form: str = "parallel",
                 stateful: bool = False, name: str | None = None):
        super().__init__(embed_dim, layer_id, num_layers, stateful, name)
        self.form = self._check_form(form)
        self.key, self.value, self.receptance, self.output = (
            Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform") for _ in range(4))

    def _check_form(self, form: str) -> str:
        if form not in RWKV_FORMS:
            raise ValueError(f"{self._label()}: form must be one of {RWKV_FORMS}, got {form!r}")
        return form

    def build(self, input_shape) -> None:
        shape = self._check_shape(input_shape)
        self._build_dense((layer, shape) for layer in (self.key, self.value, self.receptance, self.output))
        depth, shallow, fraction = self._ratios()
        channels = np.arange(self.embed_dim)
        dtype, xp = backend.get_default_dtype(), backend.xp
        decay = -5 + 8 * (channels / max(self.embed_dim - 1, 1)) ** (0.7 + 1.3 * depth)
        zigzag = ((channels + 1) % 3 - 1) * 0.5
        for name, values in (("time_decay", decay), ("time_first", np.log(0.3) + zigzag),
                             ("time_mix_k", fraction ** shallow), ("time_mix_v", fraction ** shallow + 0.3 * depth),
                             ("time_mix_r", fraction ** (0.5 * shallow))):
            self.add_parameter(name, xp.asarray(values, dtype=dtype))
        self.built = True

    def forward(self, x, form: str | None = None) -> Tensor:
        x = self._checked(x)
        form = self.form if form is None else self._check_form(form)
        shifted = self._shifted(x)
        k = self.key(self._mix(x, shifted, self.time_mix_k))
        v = self.value(self._mix(x, shifted, self.time_mix_v))
        r = sigmoid(self.receptance(self._mix(x, shifted, self.time_mix_r)))
        state = None
        if self.stateful and self._carried is not None:
            state = tuple(Tensor._wrap(s.astype(x.dtype, copy=False)) for s in self._carried[1:])
        wkv_form = rwkv_wkv_recurrent if form == "recurrent" else rwkv_wkv_parallel
        wkv, last = wkv_form(self.time_decay, self.time_first, k, v, state)
        if self.stateful:
            self._carried = (x.data[:, -1], *(s.data for s in last))
        return self.output(r * wkv)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "layer_id": self.layer_id, "num_layers": self.num_layers,
                "form": self.form, "stateful": self.stateful, "name": self.name}

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, layer_id={self.layer_id}, form={self.form!r}"


@register_layer
class RWKVChannelMix(_ShiftingLayer):
    """RWKV-4 channel mixing (module docstring) through ``hidden_dim`` features (default
    4 embed_dim); mu_k = mu_r = (c / C)^(1 - layer_id / L) at initialisation."""

    def __init__(self, embed_dim: int, hidden_dim: int | None = None, layer_id: int = 0, num_layers: int = 1,
                 stateful: bool = False, name: str | None = None):
        super().__init__(embed_dim, layer_id, num_layers, stateful, name)
        self.hidden_dim = positive_int(4 * embed_dim if hidden_dim is None else hidden_dim,
                                       "RWKVChannelMix: hidden_dim")
        self.key = Dense(self.hidden_dim, use_bias=False, kernel_init="xavier_uniform")
        self.receptance = Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform")
        self.value = Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        shape = self._check_shape(input_shape)
        self._build_dense(((self.key, shape), (self.receptance, shape),
                           (self.value, shape[:-1] + (self.hidden_dim,))))
        _, shallow, fraction = self._ratios()
        dtype = backend.get_default_dtype()
        self.add_parameter("time_mix_k", backend.xp.asarray(fraction ** shallow, dtype=dtype))
        self.add_parameter("time_mix_r", backend.xp.asarray(fraction ** shallow, dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = self._checked(x)
        shifted = self._shifted(x)
        hidden = relu(self.key(self._mix(x, shifted, self.time_mix_k)))
        r = sigmoid(self.receptance(self._mix(x, shifted, self.time_mix_r)))
        if self.stateful:
            self._carried = (x.data[:, -1],)
        return r * self.value(hidden * hidden)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim, "layer_id": self.layer_id,
                "num_layers": self.num_layers, "stateful": self.stateful, "name": self.name}

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, hidden_dim={self.hidden_dim}, layer_id={self.layer_id}"
