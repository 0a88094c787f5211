"""Search spaces for hyperparameter search: where each hyperparameter's trial values come from.

A space is a dict from a hyperparameter's name to one of

- a distribution: ``LogUniform(low, high)``, ``Uniform(low, high)``, ``IntUniform(low, high)``
  or ``Choice(options)``, sampled afresh for every trial;
- a list, read as ``Choice(list)`` (as scikit-learn's samplers and grids read lists);
- anything else (a number, a string, a tuple such as ``hidden=(64, 32)``): a constant.

The course notes' advice is to pick a learning rate on a log scale, e.g. from 0.0001 to 1: a
uniform draw on [0.0001, 1] lands above 0.1 nine times in ten and almost never tries 0.001,
while ``LogUniform`` gives each decade the same share of the trials. The same holds for
regularisation strengths and anything else whose effect scales by factors, not by steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Choice", "Distribution", "IntUniform", "LogUniform", "Uniform", "sample_config", "zoom_space"]


def _number(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ValueError(f"{who}: {name} must be a finite number, got {value!r}")
    return float(value)


def _box(center: float, width: float, low: float, high: float) -> tuple[float, float]:
    """The interval of ``width`` centred on ``center``, slid (not cut) to lie inside [low, high]."""
    start = min(max(center - width / 2, low), high - width)
    return start, start + width


class Distribution:
    """Where one hyperparameter's values come from: ``sample(rng)`` draws one value."""

    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def zoom(self, center: Any, shrink: float) -> Distribution:
        """The same kind of distribution on a box ``shrink`` times as wide (on its own scale)
        around ``center``, inside the current range: the fine stage of coarse-to-fine search."""
        return self


@dataclass(frozen=True)
class LogUniform(Distribution):
    """x with log10(x) uniform on [log10(low), log10(high)]: density 1 / (x ln(high / low)),
    every decade between low and high gets the same share of the draws."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number("LogUniform", "low", self.low), _number("LogUniform", "high", self.high)
        if not 0 < low < high:
            raise ValueError(f"LogUniform: needs 0 < low < high, got low={self.low!r}, high={self.high!r}")

    def sample(self, rng: np.random.Generator) -> float:
        value = 10.0 ** rng.uniform(math.log10(self.low), math.log10(self.high))
        return float(min(max(value, self.low), self.high))

    def zoom(self, center: float, shrink: float) -> LogUniform:
        low, high = math.log10(self.low), math.log10(self.high)
        start, stop = _box(math.log10(center), (high - low) * shrink, low, high)
        return LogUniform(10.0**start, 10.0**stop)


@dataclass(frozen=True)
class Uniform(Distribution):
    """x uniform on [low, high]: for hyperparameters whose effect is additive, such as a
    dropout rate or a momentum between 0.8 and 0.99."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number("Uniform", "low", self.low), _number("Uniform", "high", self.high)
        if not low < high:
            raise ValueError(f"Uniform: needs low < high, got low={self.low!r}, high={self.high!r}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def zoom(self, center: float, shrink: float) -> Uniform:
        return Uniform(*_box(float(center), (self.high - self.low) * shrink, self.low, self.high))


@dataclass(frozen=True)
class IntUniform(Distribution):
    """An integer drawn uniformly from low, low + 1, ..., high (both ends included), e.g. a
    number of layers or of units."""

    low: int
    high: int

    def __post_init__(self) -> None:
        for name, value in (("low", self.low), ("high", self.high)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"IntUniform: {name} must be an integer, got {value!r}")
        if self.low > self.high:
            raise ValueError(f"IntUniform: needs low <= high, got low={self.low!r}, high={self.high!r}")

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))

    def zoom(self, center: int, shrink: float) -> IntUniform:
        start, stop = _box(float(center), round((self.high - self.low) * shrink), self.low, self.high)
        return IntUniform(int(round(start)), int(round(stop)))


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``options``, each with probability 1 / len(options). Options are categories, not
    points on a scale: coarse-to-fine search keeps them all."""

    options: tuple

    def __init__(self, options) -> None:
        if isinstance(options, (str, bytes, Mapping)) or not hasattr(options, "__len__") or len(options) == 0:
            raise ValueError(f"Choice: options must be a non-empty list or tuple, got {options!r}")
        object.__setattr__(self, "options", tuple(options))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]


def as_distribution(value: Any) -> Distribution | None:
    """``value`` as a distribution (a list is a ``Choice``), or None for a constant."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, list):
        return Choice(value)
    return None


def check_space(who: str, space: Mapping) -> None:
    if not isinstance(space, Mapping):
        raise ValueError(f"{who}: the search space must be a dict from names to distributions, lists or "
                         f"constants, got a {type(space).__name__}")
    for name in space:
        if not isinstance(name, str):
            raise ValueError(f"{who}: hyperparameter names must be strings, got {name!r}")


def sample_config(space: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration: each distribution (or list) sampled once, in the space's key order,
    constants copied as they are."""
    check_space("sample_config", space)
    config = {}
    for name, value in space.items():
        distribution = as_distribution(value)
        config[name] = value if distribution is None else distribution.sample(rng)
    return config


def zoom_space(space: Mapping[str, Any], center: Mapping[str, Any], shrink: float) -> dict[str, Any]:
    """The space around the configuration ``center``: every range ``shrink`` times as wide (in
    log10 for ``LogUniform``), choices and constants unchanged."""
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float)) or not 0 < shrink < 1:
        raise ValueError(f"zoom_space: shrink must be a fraction in (0, 1), got {shrink!r}")
    zoomed = {}
    for name, value in space.items():
        distribution = as_distribution(value)
        zoomed[name] = value if distribution is None else distribution.zoom(center[name], shrink)
    return zoomed
