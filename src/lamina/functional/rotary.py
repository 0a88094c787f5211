"""Rotary position embedding (RoPE; Su et al., "RoFormer", 2021).

Each pair of features (x_j, x_{j + d/2}) of the step at position p is turned by the angle
p theta_j, with theta_j = base^(-2j / d) for j = 0 .. d/2 - 1:

    y_j       = x_j cos(p theta_j) - x_{j + d/2} sin(p theta_j)
    y_{j+d/2} = x_j sin(p theta_j) + x_{j + d/2} cos(p theta_j)

(the "rotate half" pairing of GPT-NeoX and LLaMA). Applied to the queries and keys of
attention, the score of query position m and key position n,
<R(m) q, R(n) k> = <q, R(n - m) k>, depends on the positions only through their offset.
Built from primitive ops (a rotation is linear in x), so it has first and second derivatives.

Frequency scaling (``scaling``, Hugging Face's ``rope_scaling``), for contexts longer than the
training one:

    linear   theta_j / factor    (position interpolation, Chen et al., 2023)
    llama3   with wavelength lambda_j = 2 pi / theta_j, L = original_max_position_embeddings:
             theta_j                      if lambda_j < L / high_freq_factor   (high frequencies)
             theta_j / factor             if lambda_j > L / low_freq_factor    (low frequencies)
             (1 - s) theta_j / factor + s theta_j otherwise,
             s = (L / lambda_j - low_freq_factor) / (high_freq_factor - low_freq_factor)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import add, mul, sub
from lamina.functional.shape import concat, getitem

__all__ = ["rotary_angles", "rotary_embedding", "rotary_frequencies"]


_SCALING_KEYS = {"linear": ("factor",),
                 "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def rotary_frequencies(d: int, base: float = 10000.0, scaling: Mapping | None = None) -> np.ndarray:
    """theta_j = base^(-2j / d), j = 0 .. d/2 - 1, in float64, rescaled by ``scaling`` (a
    ``rope_scaling`` mapping with ``rope_type`` 'linear' or 'llama3' and its fields; see the
    module docstring), or unscaled when it is None or of ``rope_type`` 'default'."""
    theta = base ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    if scaling is None:
        return theta
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return theta
    if kind not in _SCALING_KEYS:
        raise ValueError(f"rotary_frequencies: rope_type must be 'default', 'linear' or 'llama3', got {kind!r}")
    missing = [key for key in _SCALING_KEYS[kind] if key not in scaling]
    if missing:
        raise ValueError(f"rotary_frequencies: a {kind!r} rope scaling needs {missing}, got {dict(scaling)}")
    factor = float(scaling["factor"])
    if not factor > 0:
        raise ValueError(f"rotary_frequencies: the scaling factor must be > 0, got {factor!r}")
    if kind == "linear":
        return theta / factor
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    if not high > low:
        raise ValueError(f"rotary_frequencies: high_freq_factor {high} must exceed low_freq_factor {low}")
    context = float(scaling["original_max_position_embeddings"])
    wavelength = 2.0 * np.pi / theta
    smooth = np.clip((context / wavelength - low) / (high - low), 0.0, 1.0)
    return (1.0 - smooth) * theta / factor + smooth * theta


def rotary_angles(positions, d: int, base: float = 10000.0, frequencies=None) -> np.ndarray:
    """The angles p theta_j, (T, d/2) in float64, for ``positions`` (T,) and d features
    (``frequencies`` theta (d/2,) when given, else base^(-2j / d))."""
    theta = rotary_frequencies(d, base) if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    return np.asarray(positions, dtype=np.float64)[:, None] * theta[None, :]


def rotary_embedding(x, offset: int = 0, base: float = 10000.0, positions=None, frequencies=None) -> Tensor:
    """Rotate the features of ``x`` (..., T, d), d even, by their positions: ``offset`` +
    0 .. T-1 by default, or the given ``positions`` (T,). ``frequencies`` (d/2,): theta
    computed once (:func:`rotary_frequencies`, scaled perhaps) instead of from ``base``."""
    x = x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ShapeError(f"rotary_embedding: expected an input (..., steps, features) with an even number of "
                         f"features, got shape {tuple(x.shape)}")
    if not base > 0:
        raise ValueError(f"rotary_embedding: base must be > 0, got {base!r}")
    t, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = offset + np.arange(t)
    positions = np.asarray(positions)
    if positions.shape != (t,):
        raise ShapeError(f"rotary_embedding: positions of shape {positions.shape} for {t} steps; expected ({t},)")
    if frequencies is not None and np.shape(frequencies) != (d // 2,):
        raise ShapeError(f"rotary_embedding: frequencies of shape {np.shape(frequencies)} for {d} features; "
                         f"expected ({d // 2},)")
    angles = rotary_angles(positions, d, base, frequencies)
    dtype = x.data.dtype
    cos = backend.xp.asarray(np.cos(angles), dtype=dtype)
    sin = backend.xp.asarray(np.sin(angles), dtype=dtype)
    half = d // 2
    first = getitem(x, (Ellipsis, slice(0, half)))
    second = getitem(x, (Ellipsis, slice(half, d)))
    return concat([sub(mul(first, cos), mul(second, sin)), add(mul(first, sin), mul(second, cos))], axis=-1)
