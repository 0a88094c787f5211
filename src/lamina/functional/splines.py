"""The monotone rational-quadratic spline of neural spline flows (Durkan et al. 2019), with its
closed-form inverse and log-derivative.

K bins split [-B, B] on both axes. With bin k running from (x_k, y_k) to (x_{k+1}, y_{k+1}),
width w_k, height h_k, slope s_k = h_k / w_k and the derivatives d_k, d_{k+1} at its knots, a
point x of the bin with xi = (x - x_k) / w_k goes to

    g(x) = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)),

    g'(x) = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))^2.

The inverse solves a quadratic a xi^2 + b xi + c = 0 for xi in [0, 1] by the cancellation-free
root xi = 2c / (-b - sqrt(b^2 - 4ac)). The widths and heights come from unconstrained values
through a softmax (each at least ``min_bin_width`` / ``min_bin_height`` of the interval), the
derivatives through softplus + ``min_derivative``; with ``tails='linear'`` the spline is the
identity outside [-B, B] and its end derivatives are 1, so it joins the identity smoothly
(these are nflows' conventions and defaults).
"""

from __future__ import annotations

import math

import numpy as np

from lamina.autograd import Tensor
from lamina.functional.activation import softmax
from lamina.functional.elementwise import log, sqrt, where
from lamina.functional.indexing import gather
from lamina.functional.math_parity import clamp
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat
from lamina.functional.smooth_activation import softplus

__all__ = ["DEFAULT_MIN_BIN_HEIGHT", "DEFAULT_MIN_BIN_WIDTH", "DEFAULT_MIN_DERIVATIVE", "SPLINE_TAILS",
           "rational_quadratic_spline"]

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3
SPLINE_TAILS = ("linear", None)


def _knots(unnormalized: Tensor, minimum: float, low: float, high: float) -> tuple[Tensor, Tensor]:
    """(knot positions, bin sizes) along the last axis: K sizes that sum to high - low, each at
    least ``minimum`` of it, and the K + 1 knots from ``low`` to ``high`` (ends exact)."""
    bins = unnormalized.shape[-1]
    fractions = minimum + (1.0 - minimum * bins) * softmax(unnormalized, axis=-1)
    inner = (high - low) * cumsum(fractions, axis=-1)[..., :-1] + low
    edge = Tensor._wrap(np.zeros(unnormalized.shape[:-1] + (1,), dtype=unnormalized.dtype))
    knots = concat([edge + low, inner, edge + high], axis=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _bin_of(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The bin index (0 .. K-1) of each value, knots along the last axis; one slot of trailing axis."""
    inside = (values[..., None] >= knots[..., 1:-1]).sum(axis=-1)
    return inside[..., None].astype(np.int64)


def _check(x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor, tails, tail_bound: float,
           min_bin_width: float, min_bin_height: float) -> None:
    who = "rational_quadratic_spline"
    if tails not in SPLINE_TAILS:
        raise ValueError(f"{who}: tails must be one of {SPLINE_TAILS}, got {tails!r}")
    if not (isinstance(tail_bound, (int, float)) and math.isfinite(tail_bound) and tail_bound > 0):
        raise ValueError(f"{who}: tail_bound must be a positive number, got {tail_bound!r}")
    bins = widths.shape[-1] if widths.ndim else 0
    expected_derivatives = bins - 1 if tails == "linear" else bins + 1
    shapes = {"widths": widths.shape, "heights": heights.shape, "derivatives": derivatives.shape}
    wanted = {"widths": x.shape + (bins,), "heights": x.shape + (bins,),
              "derivatives": x.shape + (expected_derivatives,)}
    if bins < 1 or any(shapes[k] != wanted[k] for k in shapes):
        raise ValueError(f"{who}: for x of shape {x.shape} and K bins, widths and heights must have shape "
                         f"x.shape + (K,) and derivatives x.shape + (K{' - 1' if tails == 'linear' else ' + 1'},) "
                         f"(tails={tails!r}); got widths {widths.shape}, heights {heights.shape}, "
                         f"derivatives {derivatives.shape}")
    if min_bin_width * bins > 1.0 or min_bin_height * bins > 1.0:
        raise ValueError(f"{who}: {bins} bins of min_bin_width {min_bin_width} / min_bin_height {min_bin_height} "
                         "do not fit in the interval")


def rational_quadratic_spline(x, widths, heights, derivatives, inverse: bool = False, tails: str | None = "linear",
                              tail_bound: float = 1.0, min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
                              min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
                              min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> tuple[Tensor, Tensor]:
    """(y, log|dy/dx|) elementwise: the spline g (``inverse=False``) or g^-1 of ``x``.

    ``widths``, ``heights``: unconstrained bin parameters, shape x.shape + (K,); ``derivatives``:
    unconstrained inner-knot derivatives, x.shape + (K - 1,) with ``tails='linear'`` (identity
    outside [-tail_bound, tail_bound], end derivatives 1), or every knot's, x.shape + (K + 1,),
    with ``tails=None`` (x must lie in the interval). The log-derivative is that of the map
    applied, so the inverse's is -log g'(g^-1(x))."""
    x, widths, heights, derivatives = (v if isinstance(v, Tensor) else Tensor._wrap(np.asarray(v))
                                       for v in (x, widths, heights, derivatives))
    _check(x, widths, heights, derivatives, tails, tail_bound, min_bin_width, min_bin_height)
    bound = float(tail_bound)
    if tails == "linear":
        ends = Tensor._wrap(np.full(x.shape + (1,), math.log(math.expm1(1.0 - min_derivative)), dtype=x.dtype))
        derivatives = concat([ends, derivatives, ends], axis=-1)
        data = x.data
        inside = (data >= -bound) & (data <= bound)
        x_in = clamp(x, -bound, bound)
    else:
        inside = None
        x_in = x
    x_knots, bin_widths = _knots(widths, min_bin_width, -bound, bound)
    y_knots, bin_heights = _knots(heights, min_bin_height, -bound, bound)
    slopes = min_derivative + softplus(derivatives)

    index = _bin_of(np.asarray(x_in.data), np.asarray((y_knots if inverse else x_knots).data))

    def pick(values: Tensor) -> Tensor:
        return gather(values, -1, index)[..., 0]

    x_k, w_k, y_k, h_k = pick(x_knots), pick(bin_widths), pick(y_knots), pick(bin_heights)
    s_k = h_k / w_k
    d_k, d_next = pick(slopes[..., :-1]), pick(slopes[..., 1:])
    bend = d_k + d_next - 2.0 * s_k
    if inverse:
        offset = x_in - y_k
        a = offset * bend + h_k * (s_k - d_k)
        b = h_k * d_k - offset * bend
        c = -s_k * offset
        xi = (2.0 * c) / (-b - sqrt(b * b - 4.0 * a * c))
        out = xi * w_k + x_k
    else:
        xi = (x_in - x_k) / w_k
        mix = xi * (1.0 - xi)
        out = y_k + h_k * (s_k * xi * xi + d_k * mix) / (s_k + bend * mix)
    mix = xi * (1.0 - xi)
    denominator = s_k + bend * mix
    numerator = s_k * s_k * (d_next * xi * xi + 2.0 * s_k * mix + d_k * (1.0 - xi) * (1.0 - xi))
    log_derivative = log(numerator) - 2.0 * log(denominator)
    if inverse:
        log_derivative = -log_derivative
    if inside is None:
        return out, log_derivative
    return where(inside, out, x), where(inside, log_derivative, x * 0.0)
