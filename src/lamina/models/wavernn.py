"""WaveRNN (Kalchbrenner et al. 2018): a single GRU that writes a waveform one sample at a time.

Dual softmax (``mode="dual"``, the paper's): a 16-bit sample x in [0, 65536) (the signed value
plus 2^15) is split into a coarse and a fine byte, c = x // 256 and f = x mod 256. The GRU state
h = [h_c, h_f] is split in two halves; its input at step t is x_t = [c_{t-1}, f_{t-1}, c_t]
(each scaled to [-1, 1]) followed by the conditioning, and the input matrix is masked so that
the coarse half never reads the current coarse byte c_t:

    r = sigma(x_t (M * W_x)_r + b_r + h_{t-1} W_hr + b'_r)
    z = sigma(x_t (M * W_x)_z + b_z + h_{t-1} W_hz + b'_z)
    n = tanh(x_t (M * W_x)_n + b_n + r * (h_{t-1} W_hn + b'_n)),   h_t = (1 - z) * n + z * h_{t-1}

(PyTorch's GRU with the mask M zero on the row of c_t and the columns of the coarse half of
every gate). Then P(c_t) = softmax(relu(h_c O_1 + o_1) O_2 + o_2) and P(f_t) =
softmax(relu(h_f O_3 + o_3) O_4 + o_4). Training is teacher-forced (c_t is known) and the loss
is CE(coarse) + CE(fine); generation computes the coarse half, draws c_t, then the fine half.

Single softmax (``mode="single"``, the common "WaveRNN with mel upsampling"): the samples are
mu-law codes of ``bits`` bits (Q = 2^bits), the input is [x_{t-1}, conditioning], one MLP head
gives Q logits and the loss is CE.

Conditioning: mel frames (batch, frames, C) become one vector per sample, frame t // hop at
step t, by repetition (``upsample="repeat"``) or by a learned transposed convolution of kernel
and stride ``hop_length`` (``upsample="learned"``: offset k within a frame gets frame W_k + b,
W_k starting as the identity).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.wavenet import draw_levels
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode

__all__ = ["WaveRNN", "merge_coarse_fine", "split_coarse_fine"]

MODES = ("dual", "single")
UPSAMPLING = ("repeat", "learned")


def split_coarse_fine(samples) -> tuple[np.ndarray, np.ndarray]:
    """(coarse, fine) bytes of 16-bit samples in [0, 65536): x // 256 and x mod 256."""
    x = np.asarray(samples)
    if x.dtype.kind not in "iu" or (x.size and (int(x.min()) < 0 or int(x.max()) > 65535)):
        raise ValueError("split_coarse_fine: expected integer 16-bit samples in [0, 65536), got dtype "
                         f"{x.dtype}" + (f" and the range [{int(x.min())}, {int(x.max())}]" if x.size else ""))
    x = x.astype(np.int64)
    return x // 256, x % 256


def merge_coarse_fine(coarse, fine) -> np.ndarray:
    """16-bit samples 256 c + f from coarse and fine bytes in [0, 256)."""
    c, f = np.asarray(coarse).astype(np.int64), np.asarray(fine).astype(np.int64)
    if c.shape != f.shape or (c.size and (min(c.min(), f.min()) < 0 or max(c.max(), f.max()) > 255)):
        raise ValueError(f"merge_coarse_fine: expected coarse and fine bytes of one shape in [0, 256), got shapes "
                         f"{c.shape} and {f.shape}")
    return 256 * c + f


def _scaled(values, levels: int, dtype) -> Tensor:
    """Integer levels in [0, levels) as a constant of floats in [-1, 1]."""
    scaled = np.asarray(values, dtype=np.float64) * (2.0 / (levels - 1)) - 1.0
    return Tensor._constant(backend.xp.asarray(scaled), np.dtype(dtype))


@register_with_arguments
class WaveRNN(Module):
    """WaveRNN over 16-bit samples (``mode="dual"``) or ``bits``-bit mu-law codes
    (``mode="single"``), see the module docstring. ``hidden_size`` is the GRU state (even for
    the dual mode: two halves), ``head_size`` the width of the output MLPs. ``local_channels``
    (mel bins) with ``hop_length`` and ``upsample`` enables conditioning.

    ``forward(x, mels)`` takes samples (batch, steps) and returns the logits predicting samples
    1 .. steps - 1, (batch, steps - 1, 256) twice (coarse, fine) or (batch, steps - 1, Q) once;
    prediction i reads mel frame i // hop_length."""

    def __init__(self, hidden_size: int = 64, head_size: int | None = None, mode: str = "dual", bits: int = 9,
                 local_channels: int | None = None, hop_length: int = 256, upsample: str = "repeat",
                 name: str | None = None):
        super().__init__(name=name)
        if mode not in MODES:
            raise ValueError(f"WaveRNN: mode must be one of {MODES}, got {mode!r}")
        if upsample not in UPSAMPLING:
            raise ValueError(f"WaveRNN: upsample must be one of {UPSAMPLING}, got {upsample!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"WaveRNN: bits must be an int in [2, 16], got {bits!r}")
        h = self.hidden_size = positive_int(hidden_size, "WaveRNN: hidden_size")
        if mode == "dual" and h % 2:
            raise ValueError(f"WaveRNN: the dual mode splits the state in two halves, hidden_size must be even, "
                             f"got {h}")
        m = self.head_size = positive_int(head_size or hidden_size, "WaveRNN: head_size")
        self.mode, self.bits, self.upsample = mode, bits, upsample
        self.levels = 256 if mode == "dual" else 2 ** bits
        self.local_channels = None if local_channels is None else positive_int(local_channels,
                                                                               "WaveRNN: local_channels")
        self.hop_length = positive_int(hop_length, "WaveRNN: hop_length")
        c = self.local_channels or 0
        d = (3 if mode == "dual" else 1) + c
        dtype = backend.get_default_dtype()
        glorot = initializers.get("xavier_uniform")
        self.add_parameter("input_weight", glorot((d, 3 * h), d, 3 * h, dtype))
        self.add_parameter("recurrent_weight", initializers.get("orthogonal")((h, 3 * h), h, 3 * h, dtype))
        self.add_parameter("input_bias", backend.xp.zeros(3 * h, dtype=dtype))
        self.add_parameter("recurrent_bias", backend.xp.zeros(3 * h, dtype=dtype))
        mask = backend.xp.ones((d, 3 * h), dtype=dtype)
        if mode == "dual":
            for gate in range(3):                       # the coarse half of each gate never reads c_t
                mask[2, gate * h:gate * h + h // 2] = 0.0
        self.input_mask = mask
        heads = ("coarse", "fine") if mode == "dual" else ("output",)
        width = h // 2 if mode == "dual" else h
        for head in heads:
            self.add_parameter(f"{head}_hidden_weight", glorot((width, m), width, m, dtype))
            self.add_parameter(f"{head}_hidden_bias", backend.xp.zeros(m, dtype=dtype))
            self.add_parameter(f"{head}_output_weight", glorot((m, self.levels), m, self.levels, dtype))
            self.add_parameter(f"{head}_output_bias", backend.xp.zeros(self.levels, dtype=dtype))
        if c and upsample == "learned":
            identity = np.tile(np.eye(c), (1, self.hop_length)).astype(dtype)
            self.add_parameter("upsample_weight", backend.xp.asarray(identity))
            self.add_parameter("upsample_bias", backend.xp.zeros(c, dtype=dtype))
        self.built = True

    # -- inputs ------------------------------------------------------------------------------

    @property
    def sample_levels(self) -> int:
        """The number of sample values: 65536 (dual) or 2^bits (single)."""
        return 65536 if self.mode == "dual" else self.levels

    def samples(self, x) -> np.ndarray:
        """``x`` as int64 samples (batch, steps) in [0, sample_levels)."""
        data = np.asarray(backend.to_numpy(x.data) if isinstance(x, Tensor) else x)
        if data.ndim != 2:
            raise ShapeError(f"{self._label()}: expected samples (batch, steps), got shape {tuple(data.shape)}")
        if data.dtype.kind not in "iu":
            raise TypeError(f"{self._label()}: samples must be integers, got dtype {data.dtype}")
        top = self.sample_levels
        if data.size and (int(data.min()) < 0 or int(data.max()) >= top):
            raise ValueError(f"{self._label()}: samples must be in [0, {top}), got the range "
                             f"[{int(data.min())}, {int(data.max())}]")
        return data.astype(np.int64)

    def encode(self, audio) -> np.ndarray:
        """Integer samples of a float waveform in [-1, 1]: 16-bit (dual) or mu-law codes (single)."""
        audio = np.clip(np.asarray(backend.to_numpy(audio.data) if isinstance(audio, Tensor) else audio,
                                   dtype=np.float64), -1.0, 1.0)
        if self.mode == "dual":
            return np.rint((audio + 1.0) * 32767.5).astype(np.int64)
        return backend.to_numpy(F.mu_law_encoding(Tensor._constant(backend.xp.asarray(audio), None),
                                                  self.levels).data).astype(np.int64)

    def decode(self, samples) -> np.ndarray:
        """The float waveform in [-1, 1] of integer samples (the inverse of :meth:`encode`)."""
        x = np.asarray(samples)
        if self.mode == "dual":
            return x / 32767.5 - 1.0
        codes = Tensor._constant(backend.xp.asarray(x.astype(np.float64)), None)
        return backend.to_numpy(F.mu_law_decoding(codes, self.levels).data)

    def conditioning(self, mels, batch: int, steps: int) -> Tensor | None:
        """Mel frames (batch, frames, C) as one vector per sample (batch, steps, C)."""
        if not self.local_channels:
            if mels is not None:
                raise ValueError(f"{self._label()}: has no conditioning (local_channels=None), got mels")
            return None
        if mels is None:
            raise ValueError(f"{self._label()}: needs mels (batch, frames, {self.local_channels})")
        mels = mels if isinstance(mels, Tensor) else Tensor._constant(backend.xp.asarray(mels),
                                                                            np.dtype(self.input_weight.dtype))
        frames = -(-steps // self.hop_length)
        if mels.ndim != 3 or mels.shape[0] != batch or mels.shape[2] != self.local_channels or mels.shape[1] < frames:
            raise ShapeError(f"{self._label()}: mels must be (batch={batch}, frames >= {frames}, "
                             f"{self.local_channels}) for {steps} steps with hop_length={self.hop_length}, "
                             f"got shape {tuple(mels.shape)}")
        mels = mels[:, :frames]
        if self.upsample == "repeat":
            return mels[:, backend.xp.arange(steps) // self.hop_length]
        c = self.local_channels
        up = F.matmul(mels, self.upsample_weight).reshape(batch, frames * self.hop_length, c) + self.upsample_bias
        return up[:, :steps]

    def _inputs(self, samples: np.ndarray, local: Tensor | None) -> Tensor:
        """The GRU inputs of the teacher-forced predictions 1 .. steps - 1."""
        if self.mode == "dual":
            coarse, fine = split_coarse_fine(samples)
            values = np.stack([coarse[:, :-1], fine[:, :-1], coarse[:, 1:]], axis=-1)
        else:
            values = samples[:, :-1, None]
        x = _scaled(values, self.levels, self.input_weight.dtype)
        return x if local is None else F.concat([x, local], axis=-1)

    # -- the network -------------------------------------------------------------------------

    def masked_input_weight(self) -> Tensor:
        """M * W_x: the input matrix with the coarse half blind to c_t (dual mode)."""
        return self.input_weight * self.input_mask.astype(self.input_weight.dtype)

    def cell(self, x: Tensor, h: Tensor) -> Tensor:
        """One GRU step h_t of inputs x_t (batch, D) and state h_{t-1} (batch, H), written out
        with tensor ops (the formula in the module docstring)."""
        n = self.hidden_size
        gx = F.matmul(x, self.masked_input_weight()) + self.input_bias
        gh = F.matmul(h, self.recurrent_weight) + self.recurrent_bias
        r = (gx[:, :n] + gh[:, :n]).sigmoid()
        z = (gx[:, n:2 * n] + gh[:, n:2 * n]).sigmoid()
        candidate = (gx[:, 2 * n:] + r * gh[:, 2 * n:]).tanh()
        return (1.0 - z) * candidate + z * h

    def head(self, h: Tensor, which: str = "output") -> Tensor:
        """Logits of the ``which`` head ('coarse', 'fine' or, single mode, 'output') from the
        (half) state it reads."""
        hidden = (F.matmul(h, getattr(self, f"{which}_hidden_weight")) + getattr(self, f"{which}_hidden_bias")).relu()
        return F.matmul(hidden, getattr(self, f"{which}_output_weight")) + getattr(self, f"{which}_output_bias")

    def states(self, x, mels=None) -> Tensor:
        """The teacher-forced GRU states h_1 .. h_{steps-1} (batch, steps - 1, H)."""
        samples = self.samples(x)
        batch, steps = samples.shape
        if steps < 2:
            raise ShapeError(f"{self._label()}: needs at least 2 steps (a previous sample and a target), "
                             f"got shape {samples.shape}")
        inputs = self._inputs(samples, self.conditioning(mels, batch, steps - 1))
        sequence, _ = F.gru(inputs, None, self.masked_input_weight(), self.recurrent_weight, self.input_bias,
                            self.recurrent_bias)
        return sequence

    def forward(self, x, mels=None):
        sequence = self.states(x, mels)
        if self.mode == "single":
            return self.head(sequence)
        half = self.hidden_size // 2
        return self.head(sequence[..., :half], "coarse"), self.head(sequence[..., half:], "fine")

    def loss(self, x, mels=None) -> Tensor:
        """Teacher-forced cross-entropy in nats: CE(coarse) + CE(fine), or CE over the codes."""
        samples = self.samples(x)
        logits = self.forward(samples, mels)
        q = self.levels
        if self.mode == "single":
            return F.cross_entropy(logits.reshape(-1, q), samples[:, 1:].reshape(-1))
        coarse, fine = split_coarse_fine(samples[:, 1:])
        return F.cross_entropy(logits[0].reshape(-1, q), coarse.reshape(-1)) \
            + F.cross_entropy(logits[1].reshape(-1, q), fine.reshape(-1))

    # -- generation --------------------------------------------------------------------------

    def silence(self) -> int:
        """The sample value of silence (the previous sample before the first)."""
        return 32768 if self.mode == "dual" else self.levels // 2

    def step(self, previous: np.ndarray, h: Tensor, local_t: Tensor | None, temperature: float, rng):
        """Draw one sample per sequence after ``previous`` (batch,) from state ``h``; returns
        (samples (batch,), the new state)."""
        parts = [] if local_t is None else [local_t]
        if self.mode == "single":
            x = _scaled(previous[:, None], self.levels, self.input_weight.dtype)
            h = self.cell(F.concat([x] + parts, axis=-1) if parts else x, h)
            return draw_levels(self.head(h).data, temperature, rng), h
        coarse, fine = split_coarse_fine(previous)
        half = self.hidden_size // 2

        def inputs(current):
            values = np.stack([coarse, fine, current], axis=-1)
            x = _scaled(values, 256, self.input_weight.dtype)
            return F.concat([x] + parts, axis=-1) if parts else x

        coarse_state = self.cell(inputs(np.zeros_like(coarse)), h)[:, :half]      # blind to c_t
        c_t = draw_levels(self.head(coarse_state, "coarse").data, temperature, rng)
        h = self.cell(inputs(c_t), h)
        f_t = draw_levels(self.head(h[:, half:], "fine").data, temperature, rng)
        return merge_coarse_fine(c_t, f_t), h

    def generate(self, mels=None, length: int | None = None, temperature: float = 1.0, seed: int | None = None,
                 batch: int = 1) -> np.ndarray:
        """Draw samples one at a time with :meth:`cell` (no graph) from softmax(logits /
        temperature) (argmax at 0): frames * hop_length samples for ``mels`` (batch, frames, C),
        else ``length`` samples for ``batch`` sequences. Returns int64 samples (batch, n), to be
        turned into audio with :meth:`decode`."""
        if temperature < 0:
            raise ValueError(f"{self._label()}.generate: temperature must be >= 0, got {temperature!r}")
        if mels is not None:
            batch = mels.shape[0]
            length = mels.shape[1] * self.hop_length if length is None else length
        if length is None:
            raise ValueError(f"{self._label()}.generate: give mels or a length")
        length, batch = int(length), positive_int(batch, "WaveRNN.generate: batch")
        rng = np.random.default_rng(seed)
        out = np.zeros((batch, length), dtype=np.int64)
        previous = np.full(batch, self.silence(), dtype=np.int64)
        with no_grad(), evaluation_mode(self):
            local = self.conditioning(mels, batch, length)
            h = Tensor._constant(backend.xp.zeros((batch, self.hidden_size)), np.dtype(self.input_weight.dtype))
            for t in range(length):
                previous, h = self.step(previous, h, None if local is None else local[:, t], temperature, rng)
                out[:, t] = previous
        return out
