"""The spectral convolution of the Fourier neural operator (Li et al., 2021, "Fourier Neural
Operator for Parametric Partial Differential Equations").

The input's spatial axes are taken to the frequency domain with a real FFT; only the lowest
frequencies are kept, and at each kept frequency k the channels are mixed by a learned complex
matrix R_k; the result goes back with the inverse real FFT, the other frequencies set to 0:

    y = irfft( R_k rfft(x)[k]  for the kept k,  0 elsewhere )

In 1-D the kept frequencies are k = 0 .. modes - 1. In 2-D the last spatial axis (the halved
one of rfft2) keeps 0 .. m2 - 1, and the first keeps both ends, 0 .. m1 - 1 and -m1 .. -1 (its
negative frequencies are stored at the end), as in the paper. The layer is linear and, being
defined by the frequencies, works on grids of any size at least twice the modes.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.fft import irfft, irfft2, rfft, rfft2
from lamina.functional import concat, matmul, stack
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["SpectralConv1D", "SpectralConv2D", "spectral_conv1d", "spectral_conv2d"]


def _mix_channels(spectrum: Tensor, weight: Tensor) -> Tensor:
    """out[n, k, o] = sum_i spectrum[n, k, i] weight[k, i, o] (complex), for a spectrum (N, K, C_in, 2)
    and weights (K, C_in, C_out, 2): one real matrix product per frequency k, with the complex
    weight written as the real 2x2 blocks [[wr, wi], [-wi, wr]] acting on (re, im) pairs."""
    n, k, c_in, _ = spectrum.shape
    c_out = weight.shape[2]
    wr, wi = weight[..., 0], weight[..., 1]
    blocks = stack([stack([wr, wi], axis=-1), stack([-wi, wr], axis=-1)], axis=2)     # (K, C_in, 2, C_out, 2)
    rows = spectrum.reshape(n, k, 2 * c_in).transpose(1, 0, 2)                         # (K, N, 2 C_in)
    mixed = matmul(rows, blocks.reshape(k, 2 * c_in, 2 * c_out))                       # (K, N, 2 C_out)
    return mixed.transpose(1, 0, 2).reshape(n, k, c_out, 2)


def _check_weight(weight: Tensor, ndim: int, who: str, expected: str) -> None:
    if weight.ndim != ndim or weight.shape[-1] != 2:
        raise ShapeError(f"{who}: expected a complex weight of shape {expected}, got shape {weight.shape}")


def spectral_conv1d(x, weight) -> Tensor:
    """The FNO spectral convolution of x (N, L, C_in) with the complex weight (modes, C_in, C_out, 2):
    y = irfft_L(W[k] rfft(x)[k] for k < modes, 0 above), shape (N, L, C_out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    _check_weight(weight, 4, "spectral_conv1d", "(modes, in_channels, out_channels, 2)")
    modes, c_in = weight.shape[:2]
    if x.ndim != 3 or x.shape[2] != c_in or modes > x.shape[1] // 2 + 1:
        raise ShapeError(f"spectral_conv1d: expected x of shape (batch, length, {c_in}) with length // 2 + 1 >= "
                         f"modes={modes}, got shape {x.shape} (weight shape {weight.shape})")
    length = x.shape[1]
    kept = rfft(x, dim=1)[:, :modes]                                   # (N, modes, C_in, 2)
    return irfft(_mix_channels(kept, weight), n=length, dim=1)


def spectral_conv2d(x, weight) -> Tensor:
    """The FNO spectral convolution of NHWC x (N, H, W, C_in) with the complex weight
    (2 m1, m2, C_in, C_out, 2): its rows 0 .. m1 - 1 act on the frequencies 0 .. m1 - 1 of the
    height axis, its rows m1 .. 2 m1 - 1 on -m1 .. -1; along the width the frequencies
    0 .. m2 - 1 are kept. Shape (N, H, W, C_out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    _check_weight(weight, 5, "spectral_conv2d", "(2 m1, m2, in_channels, out_channels, 2)")
    rows, m2, c_in, c_out = weight.shape[:4]
    if rows % 2:
        raise ShapeError(f"spectral_conv2d: the weight's first axis holds 2 m1 rows of frequencies, got an odd "
                         f"{rows} (weight shape {weight.shape})")
    m1 = rows // 2
    if x.ndim != 4 or x.shape[3] != c_in or 2 * m1 > x.shape[1] or m2 > x.shape[2] // 2 + 1:
        raise ShapeError(f"spectral_conv2d: expected NHWC x (batch, h, w, {c_in}) with h >= 2 m1 = {2 * m1} and "
                         f"w // 2 + 1 >= m2 = {m2}, got shape {x.shape} (weight shape {weight.shape})")
    n, h, w = x.shape[:3]
    spectrum = rfft2(x, dim=(1, 2))                                     # (N, H, W // 2 + 1, C_in, 2)
    kept = concat([spectrum[:, :m1, :m2], spectrum[:, h - m1:, :m2]], axis=1)
    mixed = _mix_channels(kept.reshape(n, rows * m2, c_in, 2), weight.reshape(rows * m2, c_in, c_out, 2))
    mixed = mixed.reshape(n, rows, m2, c_out, 2)
    parts = [mixed[:, :m1], mixed[:, m1:]]
    if h > rows:                                                        # the dropped middle frequencies
        gap = Tensor._wrap(backend.xp.zeros((n, h - rows, m2, c_out, 2), dtype=mixed.dtype))
        parts.insert(1, gap)
    return irfft2(concat(parts, axis=1), s=(h, w), dim=(1, 2))


class _SpectralConv(Module):
    """What the 1-D and 2-D layers share: the weights drawn as in the FNO reference code,
    uniform in [0, 1 / (C_in C_out)) for the real and the imaginary parts."""

    spatial_axes = 0

    def __init__(self, out_channels: int, modes, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.out_channels = positive_int(out_channels, f"{who}: out_channels")
        modes = (modes,) * self.spatial_axes if isinstance(modes, int) else tuple(modes)
        if len(modes) != self.spatial_axes:
            raise ValueError(f"{who}: modes must be an int or {self.spatial_axes} ints, got {modes!r}")
        self.modes = tuple(positive_int(m, f"{who}: modes") for m in modes)

    def _weight_shape(self, c_in: int) -> tuple:
        raise NotImplementedError

    def build(self, input_shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != self.spatial_axes + 2 or input_shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, {self._spatial_names()}, channels) "
                             f"with known channels, got {input_shape}")
        c_in = input_shape[-1]
        scale = 1.0 / (c_in * self.out_channels)
        dtype = backend.get_default_dtype()
        draw = backend.rng().uniform(0.0, scale, self._weight_shape(c_in))
        self.add_parameter("weight", backend.xp.asarray(draw, dtype=dtype))
        self.built = True

    def _spatial_names(self) -> str:
        return "length" if self.spatial_axes == 1 else "h, w"

    def _check_input(self, x: Tensor) -> None:
        c_in = self.weight.shape[-3]
        if x.ndim != self.spatial_axes + 2 or x.shape[-1] != c_in:
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, {self._spatial_names()}, {c_in}), "
                             f"got shape {x.shape}")
        if any(m > most for m, most in zip(self.modes, self._most_modes(x.shape[1:-1]))):
            raise ShapeError(f"{self._label()}: modes={self.modes} do not fit inputs of shape {x.shape}; "
                             f"{self._modes_rule}")

    def _most_modes(self, spatial: tuple) -> tuple:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_channels,)

    def macs(self, input_shapes, output_shapes) -> int:
        """The channel mixing per sample: 4 real multiply-adds per complex one, C_in C_out at each
        kept frequency (the FFTs, O(n log n) additions and products, are not counted)."""
        if not input_shapes:
            return 0
        c_in = input_shapes[0][-1]
        kept = math.prod(self._weight_shape(c_in)[:self.spatial_axes])
        return 4 * kept * c_in * self.out_channels

    def get_config(self) -> dict:
        modes = self.modes[0] if self.spatial_axes == 1 else list(self.modes)
        return {"out_channels": self.out_channels, "modes": modes, "name": self.name}

    def extra_repr(self) -> str:
        sizes = f"in_channels={self.weight.shape[-3]}, " if self.built else ""
        modes = self.modes[0] if self.spatial_axes == 1 else self.modes
        return f"{sizes}out_channels={self.out_channels}, modes={modes}"


@register_layer
class SpectralConv1D(_SpectralConv):
    """The FNO spectral convolution on sequences (batch, length, channels): the ``modes`` lowest
    frequencies of each input channel mixed into ``out_channels`` by learned complex weights
    (parameter ``weight``, (modes, C_in, C_out, 2)), the higher ones dropped. See
    :func:`spectral_conv1d`."""

    spatial_axes = 1
    _modes_rule = "the kept frequencies need length // 2 + 1 >= modes"

    def _most_modes(self, spatial: tuple) -> tuple:
        return (spatial[0] // 2 + 1,)

    def _weight_shape(self, c_in: int) -> tuple:
        return (self.modes[0], c_in, self.out_channels, 2)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._check_input(x)
        return spectral_conv1d(x, self.weight)


@register_layer
class SpectralConv2D(_SpectralConv):
    """The FNO spectral convolution on NHWC images: with ``modes`` = (m1, m2) (or one int for both)
    the frequencies 0 .. m1 - 1 and -m1 .. -1 of the height and 0 .. m2 - 1 of the width are mixed
    into ``out_channels`` by learned complex weights (parameter ``weight``, (2 m1, m2, C_in, C_out,
    2)), the others dropped. See :func:`spectral_conv2d`."""

    spatial_axes = 2
    _modes_rule = "the kept frequencies need h >= 2 m1 and w // 2 + 1 >= m2"

    def _most_modes(self, spatial: tuple) -> tuple:
        return (spatial[0] // 2, spatial[1] // 2 + 1)

    def _weight_shape(self, c_in: int) -> tuple:
        m1, m2 = self.modes
        return (2 * m1, m2, c_in, self.out_channels, 2)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._check_input(x)
        return spectral_conv2d(x, self.weight)
