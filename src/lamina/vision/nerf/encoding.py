"""NeRF's positional encoding of coordinates (Mildenhall et al. 2020, section 5.1):

    gamma(p) = (p, sin(f_0 p), cos(f_0 p), ..., sin(f_(L-1) p), cos(f_(L-1) p)),

applied to every coordinate of p (..., d), giving (..., d (1 + 2L)) values in that order (p itself
only with ``include_input``). The frequencies are f_k = 2^k (``log_sampling``, the default) or L
evenly spaced values from 1 to 2^(L-1). As in the original code, pi is *not* a factor of the
frequencies unless ``include_pi`` (the paper writes sin(2^k pi p); with coordinates of size ~1
both work, the factor only rescales the frequencies).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["encoding_frequencies", "encoding_size", "positional_encoding"]


def _check_num_freqs(num_freqs, who: str) -> int:
    if isinstance(num_freqs, bool) or not isinstance(num_freqs, (int, np.integer)) or num_freqs < 0:
        raise ValueError(f"{who}: num_freqs must be an int >= 0, got {num_freqs!r}")
    return int(num_freqs)


def encoding_frequencies(num_freqs: int, log_sampling: bool = True, include_pi: bool = False) -> np.ndarray:
    """The L = ``num_freqs`` frequencies f_k (float64) of :func:`positional_encoding`."""
    num_freqs = _check_num_freqs(num_freqs, "encoding_frequencies")
    if log_sampling:
        freqs = 2.0 ** np.arange(num_freqs, dtype=np.float64)
    else:
        freqs = np.linspace(1.0, 2.0 ** max(num_freqs - 1, 0), num_freqs)
    return freqs * np.pi if include_pi else freqs


def encoding_size(input_dims: int, num_freqs: int, include_input: bool = True) -> int:
    """The number of values gamma gives for ``input_dims`` coordinates: d (include_input + 2L)."""
    num_freqs = _check_num_freqs(num_freqs, "encoding_size")
    return int(input_dims) * (int(bool(include_input)) + 2 * num_freqs)


def positional_encoding(x, num_freqs: int, include_input: bool = True, log_sampling: bool = True,
                        include_pi: bool = False) -> Tensor:
    """gamma(x) of the module docstring on the last axis of ``x`` (..., d): (..., d (include_input + 2L)),
    differentiable in ``x``."""
    who = "positional_encoding"
    num_freqs = _check_num_freqs(num_freqs, who)
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x), dtype=np.asarray(x).dtype)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: expected floating-point coordinates, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ShapeError(f"{who}: expected coordinates of shape (..., d) with d >= 1, got {tuple(x.shape)}")
    if not include_input and num_freqs == 0:
        raise ValueError(f"{who}: with include_input=False and num_freqs=0 the encoding would be empty")
    parts = [x] if include_input else []
    if num_freqs:
        freqs = encoding_frequencies(num_freqs, log_sampling, include_pi).astype(x.dtype)
        scaled = F.expand_dims(x, -2) * Tensor(freqs[:, None], dtype=x.dtype)             # (..., L, d)
        waves = F.stack([F.sin(scaled), F.cos(scaled)], axis=-2)            # (..., L, 2, d)
        parts.append(waves.reshape(*x.shape[:-1], 2 * num_freqs * x.shape[-1]))
    return parts[0] if len(parts) == 1 else F.concat(parts, axis=-1)
