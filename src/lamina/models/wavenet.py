"""WaveNet (van den Oord et al. 2016): an autoregressive model of mu-law quantized audio.

A waveform of codes x_0 .. x_T in {0, ..., Q - 1} (Q = 256 mu-law levels, see
:func:`lamina.functional.mu_law_encoding`) gets p(x) = prod_t p(x_{t+1} | x_<=t, c, g): the
logits at step t read the inputs up to t alone. Each code is embedded (one-hot times a matrix,
as a lookup) to R residual channels, then layers l = 1 .. L with dilations d_l (1, 2, ...,
512, repeated per stack) compute, sequences being channels-last (batch, steps, channels),

    z = W_l *_{d_l} h + b_l + c_t V_l + g U_l                  (causal dilated convolution)
    u = tanh(z_f) (.) sigmoid(z_g)                              (z split in two halves of G)
    skip_l = u S_l + s_l,        h <- h + u R_l + r_l          (skip and residual 1 x 1)

and the head gives logits = relu(relu(sum_l skip_l) E_1 + e_1) E_2 + e_2 (Q-way softmax). c_t is
the local conditioning (mel frames (batch, frames, n_mels) repeated ``hop_length`` times, frame
t // hop_length at step t) and g the global one (a learned speaker embedding).

The receptive field is (k - 1) sum_l d_l + 1 steps for kernel size k. :meth:`WaveNet.generate`
samples one code at a time with per-layer queues (Paine et al. 2016): each layer keeps its
last d (k - 1) inputs, so a step costs O(L) instead of a pass over the whole history;
``fast=False`` recomputes the full forward pass each step and draws the same codes.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, evaluation_mode

__all__ = ["WaveNet", "WaveNetLayer"]


def _glorot(module: Module, name: str, shape: tuple, fan_in: int, fan_out: int) -> None:
    module.add_parameter(name, initializers.get("xavier_uniform")(shape, fan_in, fan_out,
                                                                    backend.get_default_dtype()))


def _zeros(module: Module, name: str, size: int) -> None:
    module.add_parameter(name, backend.xp.zeros(size, dtype=backend.get_default_dtype()))


@register_layer
class WaveNetLayer(Module):
    """One gated residual layer: a causal convolution of ``kernel_size`` taps ``dilation`` apart
    from R residual to 2 G gate channels (``conv_weight`` (2 G, k, R), lamina's Conv1D layout),
    optional local (``local_weight`` (C_l, 2 G)) and global (``global_weight`` (C_g, 2 G))
    conditioning, the gate tanh (.) sigmoid, and 1 x 1 projections to the skip (S) and residual
    (R) paths. ``forward`` maps h (batch, steps, R) to (h + residual, skip); with
    ``residual=False`` (a network's last layer, whose residual output nobody reads) there is no
    residual projection and h passes unchanged."""

    def __init__(self, residual_channels: int, gate_channels: int, skip_channels: int, kernel_size: int = 2,
                 dilation: int = 1, local_channels: int | None = None, global_channels: int | None = None,
                 residual: bool = True, name: str | None = None):
        super().__init__(name=name)
        r = self.residual_channels = positive_int(residual_channels, "WaveNetLayer: residual_channels")
        g = self.gate_channels = positive_int(gate_channels, "WaveNetLayer: gate_channels")
        s = self.skip_channels = positive_int(skip_channels, "WaveNetLayer: skip_channels")
        k = self.kernel_size = positive_int(kernel_size, "WaveNetLayer: kernel_size")
        self.dilation = positive_int(dilation, "WaveNetLayer: dilation")
        self.local_channels, self.global_channels, self.residual = local_channels, global_channels, bool(residual)
        _glorot(self, "conv_weight", (2 * g, k, r), k * r, 2 * g)
        _zeros(self, "conv_bias", 2 * g)
        if local_channels:
            _glorot(self, "local_weight", (positive_int(local_channels, "WaveNetLayer: local_channels"), 2 * g),
                    local_channels, 2 * g)
        if global_channels:
            _glorot(self, "global_weight", (positive_int(global_channels, "WaveNetLayer: global_channels"), 2 * g),
                    global_channels, 2 * g)
        _glorot(self, "skip_weight", (g, s), g, s)
        _zeros(self, "skip_bias", s)
        if self.residual:
            _glorot(self, "residual_weight", (g, r), g, r)
            _zeros(self, "residual_bias", r)

    @property
    def history(self) -> int:
        """The past steps one output reads besides the current one: d (k - 1)."""
        return self.dilation * (self.kernel_size - 1)

    def _gate(self, z):
        half = self.gate_channels
        return z[..., :half].tanh() * z[..., half:].sigmoid()

    def forward(self, h: Tensor, local: Tensor | None = None, speaker: Tensor | None = None):
        padded = F.pad(h, ((0, 0), (self.history, 0), (0, 0)))
        z = F.conv1d(padded, self.conv_weight, self.conv_bias, dilation=self.dilation)
        if self.local_channels:
            z = z + F.matmul(local, self.local_weight)
        if self.global_channels:
            z = z + F.expand_dims(F.matmul(speaker, self.global_weight), 1)
        u = self._gate(z)
        skip = F.matmul(u, self.skip_weight) + self.skip_bias
        if not self.residual:
            return h, skip
        return h + F.matmul(u, self.residual_weight) + self.residual_bias, skip

    def step(self, queue, position: int, h_t, local_t=None, speaker=None):
        """One step on raw arrays: h_t (batch, R) is written into ``queue`` (batch, d (k - 1) + 1,
        R), a ring indexed by ``position``; returns (next h_t, skip_t)."""
        size = queue.shape[1]
        queue[:, position % size] = h_t
        w = self.conv_weight.data
        z = self.conv_bias.data + 0.0
        for tap in range(self.kernel_size):
            back = self.dilation * (self.kernel_size - 1 - tap)      # tap i reads step t - d (k - 1 - i)
            z = z + queue[:, (position - back) % size] @ w[:, tap, :].T
        if self.local_channels:
            z = z + local_t @ self.local_weight.data
        if self.global_channels:
            z = z + speaker @ self.global_weight.data
        half = self.gate_channels
        u = backend.xp.tanh(z[:, :half]) / (1.0 + backend.xp.exp(-z[:, half:]))
        skip = u @ self.skip_weight.data + self.skip_bias.data
        if not self.residual:
            return h_t, skip
        return h_t + u @ self.residual_weight.data + self.residual_bias.data, skip

    def get_config(self) -> dict:
        return {"residual_channels": self.residual_channels, "gate_channels": self.gate_channels,
                "skip_channels": self.skip_channels, "kernel_size": self.kernel_size, "dilation": self.dilation,
                "local_channels": self.local_channels, "global_channels": self.global_channels,
                "residual": self.residual, "name": self.name}


def draw_levels(logits, temperature: float, rng) -> np.ndarray:
    """One level per row of ``logits`` (..., levels): the argmax at ``temperature`` 0, else a draw
    from softmax(logits / temperature) by inverse-CDF sampling with ``rng``'s uniforms."""
    logits = backend.to_numpy(logits).astype(np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    draws = (probs.cumsum(axis=-1) < rng.uniform(size=probs.shape[:-1] + (1,))).sum(axis=-1)
    return np.minimum(draws, probs.shape[-1] - 1)


@register_layer
class WaveNet(Module):
    """WaveNet over mu-law codes (batch, steps) -> logits (batch, steps, Q) predicting the next
    code (see the module docstring). ``dilations`` default to ``layers_per_stack`` powers of two
    (1 .. 512 for 10) repeated ``stacks`` times. ``local_channels`` (mel bins) with ``hop_length``
    enables local conditioning; ``num_speakers`` with ``global_channels`` the global one."""

    def __init__(self, quantization_channels: int = 256, residual_channels: int = 32, gate_channels: int = 32,
                 skip_channels: int = 64, end_channels: int | None = None, kernel_size: int = 2,
                 layers_per_stack: int = 10, stacks: int = 1, dilations=None, local_channels: int | None = None,
                 hop_length: int = 256, num_speakers: int | None = None, global_channels: int = 16,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(quantization_channels, bool) or not isinstance(quantization_channels, int) \
                or quantization_channels < 2:
            raise ValueError(f"WaveNet: quantization_channels must be an int >= 2, got {quantization_channels!r}")
        q = self.quantization_channels = quantization_channels
        r = self.residual_channels = positive_int(residual_channels, "WaveNet: residual_channels")
        self.gate_channels = positive_int(gate_channels, "WaveNet: gate_channels")
        s = self.skip_channels = positive_int(skip_channels, "WaveNet: skip_channels")
        e = self.end_channels = positive_int(end_channels or skip_channels, "WaveNet: end_channels")
        self.kernel_size = positive_int(kernel_size, "WaveNet: kernel_size")
        if dilations is None:
            per_stack = positive_int(layers_per_stack, "WaveNet: layers_per_stack")
            dilations = [2 ** i for i in range(per_stack)] * positive_int(stacks, "WaveNet: stacks")
        self.dilations = [positive_int(d, "WaveNet: dilations") for d in dilations]
        if not self.dilations:
            raise ValueError("WaveNet: dilations must name at least one layer")
        self.local_channels = None if local_channels is None else positive_int(local_channels,
                                                                               "WaveNet: local_channels")
        self.hop_length = positive_int(hop_length, "WaveNet: hop_length")
        self.num_speakers = None if num_speakers is None else positive_int(num_speakers, "WaveNet: num_speakers")
        self.global_channels = positive_int(global_channels, "WaveNet: global_channels")
        dtype = backend.get_default_dtype()
        self.add_parameter("input_embedding", initializers.normal(std=1.0)((q, r), q, r, dtype))
        if self.num_speakers:
            self.add_parameter("speaker_embedding",
                               initializers.normal(std=1.0)((self.num_speakers, self.global_channels), 1, 1, dtype))
        self.layers = ModuleList([
            WaveNetLayer(r, self.gate_channels, s, self.kernel_size, d, self.local_channels,
                         self.global_channels if self.num_speakers else None, residual=i < len(self.dilations) - 1)
            for i, d in enumerate(self.dilations)])
        _glorot(self, "end_weight", (s, e), s, e)
        _zeros(self, "end_bias", e)
        _glorot(self, "output_weight", (e, q), e, q)
        _zeros(self, "output_bias", q)

    @property
    def receptive_field(self) -> int:
        """The steps one output reads: (k - 1) sum of the dilations + 1."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    # -- checks ------------------------------------------------------------------------------

    def codes(self, x) -> np.ndarray:
        """``x`` as an int64 array (batch, steps) of codes in [0, Q)."""
        xp = backend.xp
        data = xp.asarray(x.data if isinstance(x, Tensor) else x)
        if data.ndim != 2:
            raise ShapeError(f"{self._label()}: expected mu-law codes (batch, steps), got shape {tuple(data.shape)}")
        if data.dtype.kind not in "iu":
            raise TypeError(f"{self._label()}: codes must be integers, got dtype {data.dtype}")
        q = self.quantization_channels
        if data.size and (int(data.min()) < 0 or int(data.max()) >= q):
            raise ValueError(f"{self._label()}: codes must be in [0, {q}), got the range "
                             f"[{int(data.min())}, {int(data.max())}]")
        return data.astype(xp.int64)

    def _local(self, local, batch: int, steps: int):
        if not self.local_channels:
            if local is not None:
                raise ValueError(f"{self._label()}: has no local conditioning (local_channels=None), got one")
            return None
        if local is None:
            raise ValueError(f"{self._label()}: needs local conditioning (batch, frames, {self.local_channels})")
        local = local if isinstance(local, Tensor) else Tensor._constant(local, None)
        frames_needed = -(-steps // self.hop_length)
        if local.ndim != 3 or local.shape[0] != batch or local.shape[2] != self.local_channels \
                or local.shape[1] < frames_needed:
            raise ShapeError(f"{self._label()}: local conditioning must be (batch={batch}, frames >= "
                             f"{frames_needed}, {self.local_channels}) for {steps} steps with hop_length="
                             f"{self.hop_length}, got shape {tuple(local.shape)}")
        frame_of_step = backend.xp.arange(steps) // self.hop_length
        return local[:, frame_of_step]

    def _speaker(self, speakers, batch: int):
        if not self.num_speakers:
            if speakers is not None:
                raise ValueError(f"{self._label()}: has no global conditioning (num_speakers=None), got speakers")
            return None
        if speakers is None:
            raise ValueError(f"{self._label()}: needs speaker ids (batch,) in [0, {self.num_speakers})")
        ids = backend.xp.asarray(speakers.data if isinstance(speakers, Tensor) else speakers)
        if ids.shape != (batch,) or ids.dtype.kind not in "iu" or int(ids.min()) < 0 \
                or int(ids.max()) >= self.num_speakers:
            raise ValueError(f"{self._label()}: speakers must be {batch} integer ids in [0, {self.num_speakers}), "
                             f"got {ids!r}")
        return self.speaker_embedding[ids]

    # -- training ----------------------------------------------------------------------------

    def forward(self, x, local=None, speakers=None) -> Tensor:
        """Codes (batch, steps) -> logits (batch, steps, Q); step t's logits give p(x_{t+1})."""
        codes = self.codes(x)
        batch, steps = codes.shape
        local_steps = self._local(local, batch, steps)
        speaker = self._speaker(speakers, batch)
        h = self.input_embedding[codes]
        skips = None
        for layer in self.layers:
            h, skip = layer(h, local_steps, speaker)
            skips = skip if skips is None else skips + skip
        hidden = (F.matmul(skips.relu(), self.end_weight) + self.end_bias).relu()
        return F.matmul(hidden, self.output_weight) + self.output_bias

    def loss(self, x, local=None, speakers=None) -> Tensor:
        """Mean cross-entropy of predicting x_{t+1} from the steps up to t, in nats."""
        codes = self.codes(x)
        logits = self.forward(codes, local, speakers)[:, :-1]
        q = self.quantization_channels
        return F.cross_entropy(logits.reshape(-1, q), codes[:, 1:].reshape(-1))

    # -- generation --------------------------------------------------------------------------

    def _head(self, skips):
        xp = backend.xp
        hidden = xp.maximum(xp.maximum(skips, 0.0) @ self.end_weight.data + self.end_bias.data, 0.0)
        return hidden @ self.output_weight.data + self.output_bias.data

    def generate(self, n: int, local=None, speakers=None, temperature: float = 1.0, seed: int | None = None,
                 prime=None, batch: int = 1, fast: bool = True) -> np.ndarray:
        """Draw ``n`` codes after ``prime`` (batch, P) (default: the code of silence, Q // 2, for
        ``batch`` sequences) from softmax(logits / temperature) (argmax at temperature 0):
        returns (batch, P + n) int64 codes, the prime included. ``local`` covers P + n - 1
        steps. ``fast`` uses the per-layer queues, else a full pass per step."""
        n = int(n)
        if n < 0:
            raise ValueError(f"{self._label()}.generate: n must be >= 0, got {n}")
        if temperature < 0:
            raise ValueError(f"{self._label()}.generate: temperature must be >= 0, got {temperature!r}")
        if prime is None:
            prime = np.full((positive_int(batch, "WaveNet.generate: batch"), 1), self.quantization_channels // 2)
        codes = backend.to_numpy(self.codes(prime))
        total = codes.shape[1] + n
        batch = codes.shape[0]
        rng = np.random.default_rng(seed)
        out = np.zeros((batch, total), dtype=np.int64)
        out[:, :codes.shape[1]] = codes
        with no_grad(), evaluation_mode(self):
            local_steps = self._local(local, batch, total - 1)
            speaker = self._speaker(speakers, batch)
            if fast:
                self._generate_fast(out, codes.shape[1], local_steps, speaker, temperature, rng)
            else:
                for t in range(codes.shape[1] - 1, total - 1):
                    logits = self.forward(out[:, :t + 1], local, speakers).data[:, t]
                    out[:, t + 1] = draw_levels(logits, temperature, rng)
        return out

    def _generate_fast(self, out, primed: int, local_steps, speaker, temperature: float, rng) -> None:
        xp = backend.xp
        batch, total = out.shape
        table = self.input_embedding.data
        queues = [xp.zeros((batch, layer.history + 1, self.residual_channels), dtype=table.dtype)
                  for layer in self.layers]
        speaker_data = None if speaker is None else speaker.data
        for t in range(total - 1):
            h = table[xp.asarray(out[:, t])]
            local_t = None if local_steps is None else local_steps.data[:, t]
            skips = 0.0
            for layer, queue in zip(self.layers, queues):
                h, skip = layer.step(queue, t, h, local_t, speaker_data)
                skips = skips + skip
            if t + 1 >= primed:
                out[:, t + 1] = draw_levels(self._head(skips), temperature, rng)

    def get_config(self) -> dict:
        return {"quantization_channels": self.quantization_channels, "residual_channels": self.residual_channels,
                "gate_channels": self.gate_channels, "skip_channels": self.skip_channels,
                "end_channels": self.end_channels, "kernel_size": self.kernel_size, "dilations": list(self.dilations),
                "local_channels": self.local_channels, "hop_length": self.hop_length,
                "num_speakers": self.num_speakers, "global_channels": self.global_channels, "name": self.name}
