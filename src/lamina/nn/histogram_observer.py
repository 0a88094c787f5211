"""The histogram observer of ``torch.ao.quantization``: a running histogram of the values seen,
and a range chosen from it that trades clipping for resolution.

**Observing.** The first input sets the range [min, max] to its own and counts its values in
``bins`` equal bins (``torch.histc``: a value v falls in bin floor((v - min) · bins / (max - min)),
the last bin closed on the right). A later input that stays inside the range adds its counts; one
that widens it is counted over the widened range [min', max'], and the old histogram is moved
onto the new bins: each old bin is cut into 16 equal parts, each carrying 1/16 of its count, and
every part goes to the new bin holding its midpoint. Infinite values are left out; an input
holding NaN is refused with a ValueError (PyTorch's histc refuses its range).

**Choosing the range** (:meth:`HistogramObserver.calculate_qparams`). The search of PyTorch (from
Caffe2's norm minimisation) trims the histogram from either end: with C the cumulative counts,
N their total and a step of 10^-5, it raises a lower quantile alpha or lowers an upper quantile
beta, each step moving the end that would drop the more bins, to the bins [l, r] just inside
(C[l] >= alpha N, C[r] <= beta N), and stops when the quantization error of the trimmed range
grows. The error of quantizing the bins [l, r] to 2^8 levels of width
delta = (r - l + 1) w / 256 (w the bin width) treats the values of a bin as spread evenly over
it (density d = count / w): a stretch [a, b] of values around a level centre costs
d (b^3 - a^3) / 3, each bin split at the level boundaries it crosses; values outside [l, r]
count as clipped to the nearest end level. The range is then [min + l w, min + (r + 1) w], and
the scale and zero point follow from it as for :class:`~lamina.nn.observers.MinMaxObserver`.

The arithmetic is float32 in the order PyTorch's takes (the cumulative counts summed in
float64, the thresholds alpha N and beta N rounded to float32 before the comparison), so the
parameters are PyTorch's; float32 sums taken in another order can differ in the last bits,
which moves the result only where two trimmings have errors within that rounding of each
other. On a range so wide that the cubes overflow float32 (beyond about 1e12) the errors are
inf or NaN, as PyTorch's, and the search ends where PyTorch's does.
"""

from __future__ import annotations

import bisect

import numpy

from lamina import backend
from lamina.nn.layer import register_layer
from lamina.nn.observers import _EPS, FakeQuantize, _Observer, _values, calculate_qparams

__all__ = ["HistogramObserver", "default_histogram_fake_quant", "default_histogram_observer"]

UPSAMPLE_RATE = 16
"""How many parts each old bin is cut into when the range widens."""

STEP = 1e-5
"""The step of the quantiles alpha and beta in the range search."""

_F32 = numpy.float32
_F32_MAX = float(numpy.finfo(numpy.float32).max)


def histc(values, bins: int, low, high):
    """Counts of ``values`` in ``bins`` equal bins over [low, high], as ``torch.histc`` on float32:
    values outside are dropped, the last bin is closed; a range of width 0 is replaced by the
    values' own, and that, if still of width 0, by [low - 1, high + 1]. The bin of v is
    floor((v - low) · bins / (high - low)) in float32, bit for bit torch's, where
    (high - low) · bins fits in float32; on a wider range (|v| ~ 1e35) it is taken in float64,
    where torch's float32 product overflows (and drops the value into a wrong bin)."""
    low, high = float(low), float(high)
    if low == high and values.size:
        low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 1, high + 1
    low, high = _F32(low), _F32(high)
    inside = values[(values >= low) & (values <= high)]
    if (float(high) - float(low)) * bins < _F32_MAX:
        position = ((inside - low) * _F32(bins) / (high - low)).astype(numpy.int64)
    else:
        position = ((inside.astype(numpy.float64) - float(low)) * bins / (float(high) - float(low))).astype(numpy.int64)
    position = numpy.minimum(position, bins - 1)
    return numpy.bincount(position, minlength=bins).astype(numpy.float32)


def linspace32(start, end, steps: int):
    """``steps`` evenly spaced float32 values from ``start`` to ``end``, formed as PyTorch's CPU
    linspace forms them: with the float32 step h = (end - start) / (steps - 1), start + i h in the
    first half and end - (steps - 1 - i) h after, each a fused multiply-add (one rounding)."""
    start, end = _F32(start), _F32(end)
    step = float((end - start) / _F32(steps - 1))
    index = numpy.arange(steps)
    exact = numpy.where(index < steps // 2, float(start) + step * index, float(end) - step * (steps - 1 - index))
    return exact.astype(numpy.float32)


def upscale_histogram(histogram, old_min, old_max, new_min, new_max):
    """The histogram of [old_min, old_max] moved onto as many bins over the wider [new_min, new_max]
    (see the module's docstring)."""
    bins = histogram.size
    fine = numpy.repeat(histogram, UPSAMPLE_RATE) / _F32(UPSAMPLE_RATE)
    part = (_F32(old_max) - _F32(old_min)) / _F32(bins * UPSAMPLE_RATE)
    midpoints = linspace32(old_min, old_max, bins * UPSAMPLE_RATE + 1)[:-1] + _F32(0.5) * part
    edges = linspace32(new_min, new_max, bins + 1)
    target = numpy.clip(numpy.searchsorted(edges, midpoints, side="right") - 1, 0, bins - 1)
    moved = numpy.zeros(bins, numpy.float32)
    numpy.add.at(moved, target, fine)
    return moved


def _cube_norm(begin, end, density):
    """d (b^3 - a^3) / 3: the squared error of values spread with density d over [a, b] around 0."""
    return density * ((end * end * end - begin * begin * begin) / _F32(3))


def quantization_error(histogram, low: float, high: float, start: int, end: int, levels: int) -> float:
    """The squared error of quantizing the histogram over [low, high] to ``levels`` levels spread
    over its bins [start, end] (see the module's docstring)."""
    bins = histogram.size
    width = (float(high) - float(low)) / bins
    level_width = width * (end - start + 1) / levels
    if level_width == 0.0:
        return 0.0
    w32, half = _F32(level_width), _F32(level_width / 2)
    begin = (numpy.arange(bins) - start).astype(numpy.float32) * _F32(width)
    stop = begin + _F32(width)
    first_level = numpy.clip(numpy.floor_divide(begin, w32), 0, levels - 1)
    last_level = numpy.clip(numpy.floor_divide(stop, w32), 0, levels - 1)
    density = histogram / _F32(width)
    norm = _cube_norm(begin - (first_level + _F32(0.5)) * w32, half, density)
    norm = norm + (last_level - first_level - _F32(1)) * _cube_norm(-half, half, density)
    norm = norm + _cube_norm(-half, stop - (last_level * w32 + half), density)
    return float(norm.sum(dtype=numpy.float32))


def search_range(histogram, low, high, levels: int) -> tuple:
    """(new_min, new_max), float32: the trimmed range of least quantization error (PyTorch's
    non-linear parameter search; see the module's docstring)."""
    bins = histogram.size
    cumulative = numpy.cumsum(histogram, dtype=numpy.float64).astype(numpy.float32).tolist()
    total = float(histogram.sum(dtype=numpy.float32))
    alpha, beta = 0.0, 1.0
    start, end = 0, bins - 1
    best = numpy.inf
    while alpha < beta:
        next_alpha, next_beta = alpha + STEP, beta - STEP
        # the first bin from start with C >= alpha N (at most end), the last down to start with C <= beta N
        left = min(max(bisect.bisect_left(cumulative, float(_F32(next_alpha * total))), start), end)
        right = max(min(bisect.bisect_right(cumulative, float(_F32(next_beta * total))) - 1, end), start)
        next_start, next_end = start, end
        if left - start > end - right:
            next_start, alpha = left, next_alpha
        else:
            next_end, beta = right, next_beta
        if next_start == start and next_end == end:
            continue
        error = quantization_error(histogram, low, high, next_start, next_end, levels)
        if error > best:
            break
        best, start, end = error, next_start, next_end
    width = (_F32(high) - _F32(low)) / _F32(bins)
    return _F32(low) + width * _F32(start), _F32(low) + width * _F32(end + 1)


@register_layer
class HistogramObserver(_Observer):
    """PyTorch's HistogramObserver: a running histogram of ``bins`` bins (buffers ``histogram``,
    ``min_val``, ``max_val``; +inf and -inf before the first input) and the range of least L2
    quantization error found from it (see the module's docstring). Per tensor only. The search
    always quantizes to 2^8 levels, whatever ``quant_min``, ``quant_max`` and ``reduce_range``
    (as PyTorch's); those set the integer range of the scale and zero point."""

    def __init__(self, bins: int = 2048, dtype: str = "uint8", qscheme: str = "per_tensor_affine",
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = _EPS,
                 name: str | None = None, *, reduce_range: bool = False):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name, reduce_range=reduce_range)
        if isinstance(bins, bool) or not isinstance(bins, (int, numpy.integer)) or bins < 1:
            raise ValueError(f"HistogramObserver: bins must be a positive int, got {bins!r}")
        self.bins = int(bins)
        self.levels = 2 ** 8
        self.reset_min_max_vals()

    def reset_min_max_vals(self) -> None:
        """Forget everything observed."""
        self.register_buffer("histogram", backend.xp.zeros((self.bins,), numpy.float32))
        self.register_buffer("min_val", backend.xp.asarray(numpy.float32(numpy.inf)).reshape(()))
        self.register_buffer("max_val", backend.xp.asarray(numpy.float32(-numpy.inf)).reshape(()))

    def forward(self, x):
        """Add the finite values of ``x`` to the histogram, widening its range if they need it;
        return ``x`` unchanged. An input holding NaN is refused (ValueError) and leaves the
        histogram as it was."""
        values = numpy.asarray(backend.to_numpy(_values(x))).reshape(-1)
        values = values[numpy.abs(values) != numpy.inf]
        if not values.size:
            return x
        self._add(values)
        return x

    def _add(self, values) -> None:
        low, high = values.min(), values.max()
        if numpy.isnan(low) or numpy.isnan(high):
            raise ValueError(f"{self._label()}: the input holds NaN, which has no place in a histogram (as in "
                             f"PyTorch, whose histc refuses the range); {int(numpy.isnan(values).sum())} of "
                             f"{values.size} values are NaN")
        histogram = backend.to_numpy(self.histogram)
        old_min, old_max = _F32(backend.to_numpy(self.min_val)), _F32(backend.to_numpy(self.max_val))
        if old_min == numpy.inf or old_max == -numpy.inf:
            self._store(histc(values, self.bins, low, high), low, high)
            return
        new_min, new_max = min(old_min, low), max(old_max, high)
        counts = histc(values, self.bins, new_min, new_max)
        if new_min == old_min and new_max == old_max:
            moved = histogram
        elif old_min == old_max:          # everything so far was one value
            moved = histc(numpy.asarray([old_min], numpy.float32), self.bins, new_min, new_max) * \
                histogram.sum(dtype=numpy.float32)
        else:
            moved = upscale_histogram(histogram, old_min, old_max, new_min, new_max)
        self._store(counts + moved, new_min, new_max)

    def _store(self, histogram, low, high) -> None:
        self.histogram = backend.xp.asarray(histogram.astype(numpy.float32))
        self.min_val = backend.xp.asarray(_F32(low)).reshape(())
        self.max_val = backend.xp.asarray(_F32(high)).reshape(())

    def calculate_qparams(self):
        """(scale, zero_point), 0-d arrays, of the range the search chooses; (1, 0) before
        anything was observed."""
        if not self._observed():
            return super().calculate_qparams()
        low, high = _F32(backend.to_numpy(self.min_val)), _F32(backend.to_numpy(self.max_val))
        with numpy.errstate(over="ignore", invalid="ignore"):
            new_min, new_max = search_range(backend.to_numpy(self.histogram), low, high, self.levels)
        return calculate_qparams(new_min, new_max, self.quant_min, self.quant_max, self.symmetric, self.dtype,
                                 self.eps, self.custom_range)

    def get_config(self) -> dict:
        return {"bins": self.bins, **super().get_config()}

    def extra_repr(self) -> str:
        return f"bins={self.bins}, {super().extra_repr()}"


def default_histogram_observer() -> HistogramObserver:
    """``torch.ao.quantization.default_histogram_observer``: uint8 affine to 0..127."""
    return HistogramObserver(quant_min=0, quant_max=127)


def default_histogram_fake_quant() -> FakeQuantize:
    """``default_histogram_fake_quant``: a histogram observer, uint8 affine with ``reduce_range`` (0..127)."""
    return FakeQuantize(HistogramObserver(quant_min=0, quant_max=255, reduce_range=True))
