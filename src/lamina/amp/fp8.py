"""FP8 emulation: the two 8-bit floating-point formats of Micikevicius et al. (2022), "FP8
Formats for Deep Learning", computed exactly in float32/float64 (NumPy has no 8-bit float).

==========  ========  ===============  ===========  ================  =================
format      bits e/m  exponent bias    largest      smallest normal   smallest subnormal
==========  ========  ===============  ===========  ================  =================
``e4m3``    4 / 3     7                448          2^-6              2^-9
``e5m2``    5 / 2     15               57344        2^-14             2^-16
==========  ========  ===============  ===========  ================  =================

E4M3 is the OCP "fn" variant: no infinities, one NaN pattern per sign (S.1111.111), so its
top binade reaches 1.75 · 2^8 = 448. E5M2 follows IEEE 754: exponent field 31 is ±inf
(mantissa 0) or NaN. A value v with |v| in the binade [2^e, 2^(e+1)) (e at least the smallest
normal exponent e_min, subnormals sharing e_min) is rounded to a multiple of the quantum
2^(e - m) (m mantissa bits), the nearest one, ties to the even multiple. Overflow:

- ``saturate=True`` (the training recipes' choice, CUDA's ``satfinite``): magnitudes above the
  largest value, and infinities, become ± the largest value;
- ``saturate=False``: a magnitude that rounds above the largest value becomes ±inf in E5M2 and
  NaN in E4M3 (it has no infinity).

NaN stays NaN. torch's casts are ``saturate=True`` for ``float8_e4m3fn`` and
``saturate=False`` for ``float8_e5m2``.

Per-tensor scaling (NVIDIA Transformer Engine's recipes): a tensor x is stored as
q = FP8(x · s) and read back as q / s, with the scale

    s = (fmax / amax) / 2^margin

chosen so that the largest magnitude amax lands at the top of the format. *Delayed scaling*
takes amax as the maximum (or the latest, ``amax_compute_algo="most_recent"``) of the last
``amax_history_len`` steps' amaxes, so the scale used at a step comes from earlier steps;
*current scaling* takes it from the tensor being quantized. Where amax is 0 or not finite the
previous scale is kept.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor

__all__ = ["FP8_FORMATS", "FP8Format", "fake_quantize_fp8", "fp8_values", "quantize_fp8", "scale_from_amax",
           "scale_from_history", "update_amax_history"]


@dataclass(frozen=True)
class FP8Format:
    """An 8-bit float: sign, ``exponent_bits``, ``mantissa_bits``, ``bias``, its largest finite
    value ``max`` and whether it has infinities."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max: float
    has_infinity: bool

    @property
    def min_exponent(self) -> int:
        """e_min = 1 - bias, the exponent of the smallest normal value (and of the subnormals)."""
        return 1 - self.bias

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.min_exponent

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.min_exponent - self.mantissa_bits)


FP8_FORMATS = {
    "e4m3": FP8Format("e4m3", 4, 3, 7, 448.0, False),
    "e5m2": FP8Format("e5m2", 5, 2, 15, 57344.0, True),
}


def get_format(fmt: str | FP8Format, who: str = "fp8") -> FP8Format:
    """The :class:`FP8Format` named ``fmt`` (``"e4m3"`` or ``"e5m2"``)."""
    if isinstance(fmt, FP8Format):
        return fmt
    if fmt not in FP8_FORMATS:
        raise ValueError(f"{who}: unknown FP8 format {fmt!r}; expected one of {sorted(FP8_FORMATS)}")
    return FP8_FORMATS[fmt]


def _decode(fmt: FP8Format, code: int) -> float:
    """The value of the 8-bit pattern ``code`` (NaN or ±inf for the special patterns)."""
    m = fmt.mantissa_bits
    sign = -1.0 if code >> 7 else 1.0
    exponent = (code >> m) & ((1 << fmt.exponent_bits) - 1)
    mantissa = code & ((1 << m) - 1)
    top = (1 << fmt.exponent_bits) - 1
    if exponent == top:
        if fmt.has_infinity:
            return sign * numpy.inf if mantissa == 0 else numpy.nan
        if mantissa == (1 << m) - 1:
            return numpy.nan
    if exponent == 0:
        return sign * 2.0 ** fmt.min_exponent * (mantissa / 2 ** m)
    return sign * 2.0 ** (exponent - fmt.bias) * (1 + mantissa / 2 ** m)


def fp8_values(fmt: str | FP8Format) -> numpy.ndarray:
    """Every finite value of the format, ascending, float64 (zero once: +0 and -0 are one value);
    253 values for E4M3, 247 for E5M2."""
    fmt = get_format(fmt, "fp8_values")
    values = numpy.array([_decode(fmt, code) for code in range(256)])
    return numpy.unique(values[numpy.isfinite(values)])


def _round_magnitudes(a, fmt: FP8Format):
    """|v| (float64, finite, >= 0) rounded to the format's grid, extended without an upper
    bound: the quantum of the binade, 2^(max(floor(log2 a), e_min) - m), ties to even."""
    xp = backend.xp
    _, exponent = xp.frexp(a)                       # a = f · 2^exponent, f in [0.5, 1)
    binade = xp.maximum(exponent.astype(numpy.int64) - 1, fmt.min_exponent)
    quantum = xp.ldexp(xp.ones_like(a), (binade - fmt.mantissa_bits).astype(numpy.int32))
    return xp.rint(a / quantum) * quantum


def quantize_fp8(x, fmt: str = "e4m3", scale: float = 1.0, saturate: bool = True):
    """FP8(x · scale): the nearest value of the format (ties to even), as an array of x's
    floating dtype (float32 holds every FP8 value exactly). The product x · scale is formed
    in x's precision. Overflow, infinities and NaN as in the module's docstring."""
    fmt = get_format(fmt, "quantize_fp8")
    xp = backend.xp
    x = x.data if isinstance(x, Tensor) else xp.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"quantize_fp8: x must be floating point, got dtype {x.dtype}")
    scale = _check_scale(scale, "quantize_fp8")
    v = (x * x.dtype.type(scale) if scale != 1.0 else x).astype(numpy.float64)
    finite = xp.isfinite(v)
    magnitude = xp.where(finite, xp.abs(v), 0.0)
    rounded = _round_magnitudes(magnitude, fmt)
    overflow = (rounded > fmt.max) | xp.isinf(v)
    if saturate:
        rounded = xp.where(overflow, fmt.max, rounded)
    else:
        rounded = xp.where(overflow, numpy.inf if fmt.has_infinity else numpy.nan, rounded)
    out = xp.where(xp.isnan(v), numpy.nan, xp.copysign(rounded, v))
    return out.astype(x.dtype)


def _check_scale(scale, who: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
            numpy.isfinite(scale) and scale > 0):
        raise ValueError(f"{who}: scale must be a positive finite number, got {scale!r}")
    return float(scale)


class FakeQuantizeFP8(Function):
    """y = FP8(x · s) / s; the gradient passes straight through (dy/dx = 1)."""

    def forward(self, x):
        return (quantize_fp8(x, self.fmt, self.scale, self.saturate) / x.dtype.type(self.scale)).astype(x.dtype)

    def backward(self, dy):
        return (dy,)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy,)


def fake_quantize_fp8(x, fmt: str = "e4m3", scale: float = 1.0, saturate: bool = True) -> Tensor:
    """x rounded to FP8 with a per-tensor scale and read back, FP8(x · scale) / scale, for
    training with FP8 emulation; the gradient is the straight-through estimator."""
    get_format(fmt, "fake_quantize_fp8")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise ValueError(f"fake_quantize_fp8: x must be floating point, got dtype {x.dtype}")
    return FakeQuantizeFP8.apply(x, fmt=fmt, scale=_check_scale(scale, "fake_quantize_fp8"),
                                 saturate=bool(saturate))


def scale_from_amax(amax, fmt: str = "e4m3", margin: int = 0, previous=1.0):
    """s = (fmax / amax) / 2^margin, and ``previous`` where amax is 0 or not finite (elementwise
    for arrays of amaxes, float32 as Transformer Engine keeps them)."""
    fmt = get_format(fmt, "scale_from_amax")
    xp = backend.xp
    amax = xp.asarray(amax, dtype=numpy.float32)
    previous = xp.asarray(previous, dtype=numpy.float32)
    usable = xp.isfinite(amax) & (amax > 0)
    with numpy.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = (numpy.float32(fmt.max) / xp.where(usable, amax, 1)) / numpy.float32(2.0 ** margin)
    return xp.where(usable & xp.isfinite(scale), scale, previous).astype(numpy.float32)


def update_amax_history(history, amax):
    """The history (..., length) shifted one step back with ``amax`` (...,) as its newest,
    first, entry (the oldest falls off the end)."""
    xp = backend.xp
    rolled = xp.roll(xp.asarray(history), 1, axis=-1)
    rolled[..., 0] = amax
    return rolled


def scale_from_history(history, fmt: str = "e4m3", margin: int = 0, previous=1.0, algo: str = "max"):
    """Delayed scaling: the scale from the largest amax of the history (``algo="max"``) or its
    newest one (``"most_recent"``)."""
    if algo not in ("max", "most_recent"):
        raise ValueError(f"scale_from_history: algo must be 'max' or 'most_recent', got {algo!r}")
    history = backend.xp.asarray(history)
    amax = history.max(axis=-1) if algo == "max" else history[..., 0]
    return scale_from_amax(amax, fmt, margin, previous)
