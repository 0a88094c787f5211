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
training one. With theta_j the plain frequencies, d the features, M ``max_position_embeddings``
(the model's context), L = original_max_position_embeddings (default M) and s the factor:

    linear    theta_j / s    (position interpolation, Chen et al., 2023)
    llama3    with wavelength lambda_j = 2 pi / theta_j:
              theta_j                      if lambda_j < L / high_freq_factor   (high frequencies)
              theta_j / s                  if lambda_j > L / low_freq_factor    (low frequencies)
              (1 - r) theta_j / s + r theta_j otherwise,
              r = (L / lambda_j - low_freq_factor) / (high_freq_factor - low_freq_factor)
    dynamic   dynamic NTK: for a call over T positions, the base grows once T passes M,
              base' = base (s T' / M - (s - 1))^(d / (d - 2)),  T' = max(T, M)
              (the frequencies are recomputed for each call; below M they are the plain ones)
    yarn      YaRN (Peng et al., 2023): theta_j (1 - r_j) / s + theta_j r_j with the ramp
              r_j = 1 - clip((j - lo) / (hi - lo), 0, 1) between the dimensions
              lo = floor(c(beta_fast)), hi = ceil(c(beta_slow)) (unrounded when truncate is
              False; clipped to [0, d - 1]), c(n) = d ln(L / (2 pi n)) / (2 ln base), where a
              frequency turns n times over L positions; beta_fast 32, beta_slow 1 by default.
              Attention factor m (cos and sin both times m, so the scores times m^2):
              ``attention_factor`` if given, else g(s, mscale) / g(s, mscale_all_dim) when both
              are given, else g(s, 1), with g(s, k) = 1 + 0.1 k ln s for s > 1 (else 1)
    longrope  LongRoPE (Ding et al., 2024; Phi-3): theta_j / short_factor[j] for a call over
              T <= L positions and theta_j / long_factor[j] beyond; attention factor
              ``attention_factor`` if given, else sqrt(1 + ln s' / ln L) for s' > 1 (else 1),
              s' = M / L when original_max_position_embeddings is given, else ``factor``

'dynamic' and 'longrope' depend on the length of the call (:func:`rope_depends_on_length`).
Hugging Face's YaRN takes the frequencies' factor from the config's ``factor``, as here; its
releases between 4.45 and 4.55 replaced it by M / L whenever original_max_position_embeddings
was given (the same when M = s L).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, is_grad_enabled
from lamina.errors import ShapeError
from lamina.functional.shape import concat, getitem

__all__ = ["ROPE_TYPES", "check_rope_scaling", "rope_depends_on_length", "rotary_angles", "rotary_embedding",
           "rotary_frequencies", "rotary_parameters"]


_REQUIRED_KEYS = {"default": (), "linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor",),
                  "longrope": ("short_factor", "long_factor"),
                  "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
ROPE_TYPES = tuple(_REQUIRED_KEYS)
"""The ``rope_type`` values of Hugging Face's ``rope_scaling`` that lamina computes."""


def _kind(scaling: Mapping | None) -> str:
    if scaling is None:
        return "default"
    return scaling.get("rope_type", scaling.get("type"))


def rope_depends_on_length(scaling: Mapping | None) -> bool:
    """Whether the frequencies of ``scaling`` change with the length of the call ('dynamic',
    'longrope'): a model must then recompute them per call and its export cannot fix them."""
    return _kind(scaling) in ("dynamic", "longrope")


def check_rope_scaling(scaling: Mapping | None, d: int, max_position_embeddings: int | None = None,
                       who: str = "rotary_frequencies") -> None:
    """Raise a ValueError naming ``who`` and the key when ``scaling`` (a ``rope_scaling``
    mapping, or None) has an unknown ``rope_type``, lacks one of its keys, holds a bad value,
    or needs ``max_position_embeddings`` and none is given."""
    if scaling is None:
        return
    if not isinstance(scaling, Mapping):
        raise ValueError(f"{who}: rope_scaling must be a mapping with a 'rope_type', got {scaling!r}")
    kind = _kind(scaling)
    if kind not in _REQUIRED_KEYS:
        raise ValueError(f"{who}: rope_scaling['rope_type'] must be one of {ROPE_TYPES}, got {kind!r}")
    missing = [key for key in _REQUIRED_KEYS[kind] if key not in scaling]
    if missing:
        raise ValueError(f"{who}: a {kind!r} rope_scaling needs the key(s) {missing}, got {dict(scaling)}")
    if "factor" in scaling and kind != "default" and not float(scaling["factor"]) > 0:
        raise ValueError(f"{who}: rope_scaling['factor'] must be > 0, got {scaling['factor']!r}")
    if kind == "llama3" and not float(scaling["high_freq_factor"]) > float(scaling["low_freq_factor"]):
        raise ValueError(f"{who}: rope_scaling['high_freq_factor'] {scaling['high_freq_factor']} must exceed "
                         f"rope_scaling['low_freq_factor'] {scaling['low_freq_factor']}")
    if kind == "longrope":
        for key in ("short_factor", "long_factor"):
            if np.shape(scaling[key]) != (d // 2,):
                raise ValueError(f"{who}: rope_scaling[{key!r}] must hold head_dim / 2 = {d // 2} values, got "
                                 f"shape {np.shape(scaling[key])}")
    if kind == "longrope" and "original_max_position_embeddings" not in scaling and "factor" not in scaling:
        raise ValueError(f"{who}: a 'longrope' rope_scaling needs the key 'factor' or "
                         f"'original_max_position_embeddings' (for its attention factor), got {dict(scaling)}")
    needs_context = kind == "dynamic" or (kind in ("yarn", "longrope")
                                          and "original_max_position_embeddings" not in scaling)
    if needs_context and max_position_embeddings is None:
        raise ValueError(f"{who}: a {kind!r} rope_scaling needs max_position_embeddings (the model's context) "
                         f"or, for 'yarn' and 'longrope', rope_scaling['original_max_position_embeddings']")


def _scale_log(s: float, k: float = 1.0) -> float:
    """YaRN's g(s, k) = 1 + 0.1 k ln s for s > 1, else 1."""
    return 1.0 + 0.1 * k * math.log(s) if s > 1 else 1.0


def _yarn(theta: np.ndarray, d: int, base: float, scaling: Mapping, context: float) -> tuple[np.ndarray, float]:
    factor = float(scaling["factor"])

    def dimension(turns: float) -> float:      # the dimension whose frequency turns `turns` times over context
        return d * math.log(context / (turns * 2.0 * math.pi)) / (2.0 * math.log(base))

    low, high = dimension(float(scaling.get("beta_fast") or 32)), dimension(float(scaling.get("beta_slow") or 1))
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    extrapolated = 1.0 - np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    frequencies = theta / factor * (1.0 - extrapolated) + theta * extrapolated
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _scale_log(factor, float(mscale)) / _scale_log(factor, float(mscale_all_dim))
        else:
            attention_factor = _scale_log(factor)
    return frequencies, float(attention_factor)


def _longrope(theta: np.ndarray, scaling: Mapping, context: float, max_positions: int | None,
              length: int | None) -> tuple[np.ndarray, float]:
    if "original_max_position_embeddings" in scaling and max_positions is not None:
        factor = max_positions / context
    else:
        factor = float(scaling["factor"])
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = math.sqrt(1.0 + math.log(factor) / math.log(context)) if factor > 1 else 1.0
    long = length is not None and length > context
    divisors = np.asarray(scaling["long_factor" if long else "short_factor"], dtype=np.float64)
    return theta / divisors, float(attention_factor)


def rotary_parameters(d: int, base: float = 10000.0, scaling: Mapping | None = None,
                      max_position_embeddings: int | None = None, length: int | None = None,
                      who: str = "rotary_parameters") -> tuple[np.ndarray, float]:
    """(theta, attention_factor): the frequencies theta_j (d/2,) in float64 and the factor m
    that multiplies cos and sin, for a call over ``length`` positions (0 .. length - 1; None:
    a call within the context) of a model of context ``max_position_embeddings``, rescaled by
    ``scaling`` (a Hugging Face ``rope_scaling`` mapping: see the module docstring; None or
    'default': unscaled, m = 1). Bad scalings raise a ValueError naming ``who``."""
    check_rope_scaling(scaling, d, max_position_embeddings, who)
    theta = base ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    kind = _kind(scaling)
    if kind == "default":
        return theta, 1.0
    if kind == "linear":
        return theta / float(scaling["factor"]), 1.0
    if kind == "dynamic":
        factor, context = float(scaling["factor"]), float(max_position_embeddings)
        seen = max(float(length or 0), context)
        grown = base * (factor * seen / context - (factor - 1.0)) ** (d / (d - 2.0))
        return grown ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d), 1.0
    context = float(scaling.get("original_max_position_embeddings") or max_position_embeddings)
    if kind == "yarn":
        return _yarn(theta, d, base, scaling, context)
    if kind == "longrope":
        return _longrope(theta, scaling, context, max_position_embeddings, length)
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    wavelength = 2.0 * np.pi / theta
    smooth = np.clip((context / wavelength - low) / (high - low), 0.0, 1.0)
    return (1.0 - smooth) * theta / factor + smooth * theta, 1.0


def rotary_frequencies(d: int, base: float = 10000.0, scaling: Mapping | None = None,
                       max_position_embeddings: int | None = None, length: int | None = None) -> np.ndarray:
    """theta_j = base^(-2j / d), j = 0 .. d/2 - 1, in float64, rescaled by ``scaling`` (a
    ``rope_scaling`` mapping; see the module docstring and :func:`rotary_parameters`, which
    also gives the attention factor), or unscaled when it is None or of ``rope_type`` 'default'."""
    return rotary_parameters(d, base, scaling, max_position_embeddings, length, "rotary_frequencies")[0]


def rotary_angles(positions, d: int, base: float = 10000.0, frequencies=None) -> np.ndarray:
    """The angles p theta_j, (..., T, d/2) in float64, for ``positions`` (..., T) and d
    features (``frequencies`` theta (d/2,) when given, else base^(-2j / d))."""
    theta = rotary_frequencies(d, base) if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    return np.asarray(positions, dtype=np.float64)[..., None] * theta


def rotary_embedding(x, offset: int = 0, base: float = 10000.0, positions=None, frequencies=None,
                     attention_factor: float = 1.0) -> Tensor:
    """Rotate the features of ``x`` (..., T, d), d even, by their positions: ``offset`` +
    0 .. T-1 by default, or the given ``positions``: (T,), or (N, T) for an input (N, ..., T, d)
    whose rows sit at different positions (left-padded batches). ``frequencies`` (d/2,): theta
    computed once (:func:`rotary_frequencies`, scaled perhaps) instead of from ``base``;
    ``attention_factor`` m multiplies cos and sin (YaRN's and LongRoPE's; see
    :func:`rotary_parameters`)."""
    x = x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ShapeError(f"rotary_embedding: expected an input (..., steps, features) with an even number of "
                         f"features, got shape {tuple(x.shape)}")
    if not base > 0:
        raise ValueError(f"rotary_embedding: base must be > 0, got {base!r}")
    t, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = offset + np.arange(t)
    positions = np.asarray(positions.data if isinstance(positions, Tensor) else positions)
    per_row = x.ndim >= 3 and positions.shape == (x.shape[0], t)
    if positions.shape != (t,) and not per_row:
        raise ShapeError(f"rotary_embedding: positions of shape {positions.shape} for {t} steps; expected ({t},) "
                         f"or, per row of the input {tuple(x.shape)}, ({x.shape[0]}, {t})")
    if frequencies is not None and np.shape(frequencies) != (d // 2,):
        raise ShapeError(f"rotary_embedding: frequencies of shape {np.shape(frequencies)} for {d} features; "
                         f"expected ({d // 2},)")
    angles = rotary_angles(positions, d, base, frequencies)
    dtype = x.data.dtype
    cos = backend.xp.asarray(attention_factor * np.cos(angles), dtype=dtype)
    sin = backend.xp.asarray(attention_factor * np.sin(angles), dtype=dtype)
    if per_row:                             # (N, T, d/2) -> (N, 1, ..., T, d/2)
        cos, sin = (a.reshape(x.shape[0], *(1,) * (x.ndim - 3), t, d // 2) for a in (cos, sin))
    half = d // 2
    if x.requires_grad and is_grad_enabled():
        first = getitem(x, (Ellipsis, slice(0, half)))
        second = getitem(x, (Ellipsis, slice(half, d)))
        return concat(list(_turned(first, second, cos, sin)), axis=-1)
    # nothing to record (inference, a cached decoding step): the same products on the arrays
    return Tensor._wrap(backend.xp.concatenate(_turned(x.data[..., :half], x.data[..., half:], cos, sin), axis=-1))


def _turned(first, second, cos, sin) -> tuple:
    """(x1 cos - x2 sin, x1 sin + x2 cos): the two halves of the features turned, on tensors
    (recorded ops) or on arrays alike."""
    return first * cos - second * sin, first * sin + second * cos
