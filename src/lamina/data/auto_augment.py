"""Automatic augmentation policies, as torchvision's ``transforms.v2`` defines them: AutoAugment
(Cubuk et al., 2019), RandAugment (Cubuk et al., 2020), TrivialAugmentWide (Mueller and Hutter,
2021) and AugMix (Hendrycks et al., 2020).

Each is a per-sample transform on one image (h, w, c), uint8 or float in [0, 1], built from
the operations of :mod:`lamina.data.image_ops` (``IMAGE_OPS``). An operation's strength comes
from a table of magnitude bins (:meth:`magnitude_table`, torchvision's values: shears up to
0.3, translations up to 150/331 of the side, rotations up to 30 degrees, colour factors
1 +- 0.9, posterize 8 down to 4 bits, solarize thresholds from the top of the range down to 0;
TrivialAugmentWide's wider ranges and AugMix's are listed with each table). For the signed
operations a fair coin flips the sign.

All draws come from :func:`lamina.backend.rng`, so :func:`lamina.manual_seed` makes them
reproducible, and inside the :class:`~lamina.data.DataLoader`'s per-batch random scopes a batch
gets the same augmentations with or without worker threads or processes. What the last call
drew is kept in ``last_ops`` (a list of ``(operation, magnitude)``; AugMix: ``last_chains``
and ``last_weights``); with worker threads it is whichever sample was made last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.image_ops import IMAGE_OPS, Fill, check_image, check_interpolation
from lamina.errors import ShapeError

__all__ = ["AUTO_AUGMENT_POLICIES", "AugMix", "AutoAugment", "RandAugment", "TrivialAugmentWide"]

MagnitudeTable = Callable[[int, int, int], np.ndarray]


def _zero_to(top: float) -> MagnitudeTable:
    return lambda bins, height, width: np.linspace(0.0, top, bins)


def _zero_to_width(fraction: float) -> MagnitudeTable:
    return lambda bins, height, width: np.linspace(0.0, fraction * width, bins)


def _zero_to_height(fraction: float) -> MagnitudeTable:
    return lambda bins, height, width: np.linspace(0.0, fraction * height, bins)


def _bits_down(start: int, drop: int) -> MagnitudeTable:
    """``round(start - k drop / (bins - 1))`` for bin k: from ``start`` bits down to ``start - drop``."""
    return lambda bins, height, width: np.round(start - np.arange(bins) / ((bins - 1) / drop)).astype(np.int64)


def _solarize_thresholds(bins: int, height: int, width: int) -> np.ndarray:
    """Thresholds as fractions of the range, from 1 (nothing inverted) down to 0 (everything)."""
    return np.linspace(1.0, 0.0, bins)


# operation -> (magnitude table or None for an operation without one, whether the sign is drawn)
_SPACE: dict[str, tuple[MagnitudeTable | None, bool]] = {
    "Identity": (None, False),
    "ShearX": (_zero_to(0.3), True),
    "ShearY": (_zero_to(0.3), True),
    "TranslateX": (_zero_to_width(150 / 331), True),
    "TranslateY": (_zero_to_height(150 / 331), True),
    "Rotate": (_zero_to(30.0), True),
    "Brightness": (_zero_to(0.9), True),
    "Color": (_zero_to(0.9), True),
    "Contrast": (_zero_to(0.9), True),
    "Sharpness": (_zero_to(0.9), True),
    "Posterize": (_bits_down(8, 4), False),
    "Solarize": (_solarize_thresholds, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
    "Invert": (None, False),
}
_AUTO_AUGMENT_SPACE = {op: entry for op, entry in _SPACE.items() if op != "Identity"}
_RAND_AUGMENT_SPACE = {op: entry for op, entry in _SPACE.items() if op != "Invert"}
_TRIVIAL_AUGMENT_WIDE_SPACE = {
    **_RAND_AUGMENT_SPACE,
    "ShearX": (_zero_to(0.99), True),
    "ShearY": (_zero_to(0.99), True),
    "TranslateX": (_zero_to(32.0), True),
    "TranslateY": (_zero_to(32.0), True),
    "Rotate": (_zero_to(135.0), True),
    "Brightness": (_zero_to(0.99), True),
    "Color": (_zero_to(0.99), True),
    "Contrast": (_zero_to(0.99), True),
    "Sharpness": (_zero_to(0.99), True),
    "Posterize": (_bits_down(8, 6), False),
}
_AUGMIX_GEOMETRY_AND_TONE = {
    "ShearX": (_zero_to(0.3), True),
    "ShearY": (_zero_to(0.3), True),
    "TranslateX": (_zero_to_width(1 / 3), True),
    "TranslateY": (_zero_to_height(1 / 3), True),
    "Rotate": (_zero_to(30.0), True),
    "Posterize": (_bits_down(4, 4), False),
    "Solarize": (_solarize_thresholds, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}
_AUGMIX_ALL = {**_AUGMIX_GEOMETRY_AND_TONE, **{op: _SPACE[op] for op in ("Brightness", "Color", "Contrast",
                                                                        "Sharpness")}}


def _parse_policy(text: str) -> tuple[tuple[tuple[str, float, int | None], ...], ...]:
    """Sub-policies, one a line: ``Op probability [bin], Op probability [bin]``."""
    policy = []
    for line in text.strip().splitlines():
        steps = []
        for step in line.split(","):
            name, probability, *level = step.split()
            steps.append((name, float(probability), int(level[0]) if level else None))
        policy.append(tuple(steps))
    return tuple(policy)


AUTO_AUGMENT_POLICIES = {
    "imagenet": _parse_policy("""
        Posterize 0.4 8, Rotate 0.6 9
        Solarize 0.6 5, AutoContrast 0.6
        Equalize 0.8, Equalize 0.6
        Posterize 0.6 7, Posterize 0.6 6
        Equalize 0.4, Solarize 0.2 4
        Equalize 0.4, Rotate 0.8 8
        Solarize 0.6 3, Equalize 0.6
        Posterize 0.8 5, Equalize 1.0
        Rotate 0.2 3, Solarize 0.6 8
        Equalize 0.6, Posterize 0.4 6
        Rotate 0.8 8, Color 0.4 0
        Rotate 0.4 9, Equalize 0.6
        Equalize 0.0, Equalize 0.8
        Invert 0.6, Equalize 1.0
        Color 0.6 4, Contrast 1.0 8
        Rotate 0.8 8, Color 1.0 2
        Color 0.8 8, Solarize 0.8 7
        Sharpness 0.4 7, Invert 0.6
        ShearX 0.6 5, Equalize 1.0
        Color 0.4 0, Equalize 0.6
        Equalize 0.4, Solarize 0.2 4
        Solarize 0.6 5, AutoContrast 0.6
        Invert 0.6, Equalize 1.0
        Color 0.6 4, Contrast 1.0 8
        Equalize 0.8, Equalize 0.6
    """),
    "cifar10": _parse_policy("""
        Invert 0.1, Contrast 0.2 6
        Rotate 0.7 2, TranslateX 0.3 9
        Sharpness 0.8 1, Sharpness 0.9 3
        ShearY 0.5 8, TranslateY 0.7 9
        AutoContrast 0.5, Equalize 0.9
        ShearY 0.2 7, Posterize 0.3 7
        Color 0.4 3, Brightness 0.6 7
        Sharpness 0.3 9, Brightness 0.7 9
        Equalize 0.6, Equalize 0.5
        Contrast 0.6 7, Sharpness 0.6 5
        Color 0.7 7, TranslateX 0.5 8
        Equalize 0.3, AutoContrast 0.4
        TranslateY 0.4 3, Sharpness 0.2 6
        Brightness 0.9 6, Color 0.2 8
        Solarize 0.5 2, Invert 0.0
        Equalize 0.2, AutoContrast 0.6
        Equalize 0.2, Equalize 0.6
        Color 0.9 9, Equalize 0.6
        AutoContrast 0.8, Solarize 0.2 8
        Brightness 0.1 3, Color 0.7 0
        Solarize 0.4 5, AutoContrast 0.9
        TranslateY 0.9 9, TranslateY 0.7 9
        AutoContrast 0.9, Solarize 0.8 3
        Equalize 0.8, Invert 0.1
        TranslateY 0.7 9, AutoContrast 0.9
    """),
    "svhn": _parse_policy("""
        ShearX 0.9 4, Invert 0.2
        ShearY 0.9 8, Invert 0.7
        Equalize 0.6, Solarize 0.6 6
        Invert 0.9, Equalize 0.6
        Equalize 0.6, Rotate 0.9 3
        ShearX 0.9 4, AutoContrast 0.8
        ShearY 0.9 8, Invert 0.4
        ShearY 0.9 5, Solarize 0.2 6
        Invert 0.9, AutoContrast 0.8
        Equalize 0.6, Rotate 0.9 3
        ShearX 0.9 4, Solarize 0.3 3
        ShearY 0.8 8, Invert 0.7
        Equalize 0.9, TranslateY 0.6 6
        Invert 0.9, Equalize 0.6
        Contrast 0.3 3, Rotate 0.8 4
        Invert 0.8, TranslateY 0.0 2
        ShearY 0.7 6, Solarize 0.4 8
        Invert 0.6, Rotate 0.8 4
        ShearY 0.3 7, TranslateX 0.9 3
        ShearX 0.1 6, Invert 0.6
        Solarize 0.7 2, TranslateY 0.6 7
        ShearY 0.8 4, Invert 0.8
        ShearX 0.7 9, TranslateY 0.8 3
        ShearY 0.8 5, AutoContrast 0.7
        ShearX 0.7 2, Invert 0.1
    """),
}
"""The learned AutoAugment policies: 25 sub-policies each, a sub-policy two steps
``(operation, probability, magnitude bin of 10 or None)``."""


def _check_int(value: Any, name: str, where: str, low: int, high: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ValueError(f"{where}: {name} must be {allowed}; got {value!r}")
    return int(value)


class _PolicyTransform:
    """What the policies share: interpolation and fill, the magnitude tables, applying an
    operation with a drawn sign, ``get_config`` and ``__repr__``."""

    _space: dict[str, tuple[MagnitudeTable | None, bool]] = _SPACE
    _num_bins = 10

    def __init__(self, interpolation: str, fill: Fill) -> None:
        name = type(self).__name__
        self.interpolation = check_interpolation(interpolation, name)
        if fill is not None:
            values = np.asarray(fill, dtype=np.float64) if not isinstance(fill, str) else None
            if values is None or values.ndim > 1 or values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError(f"{name}: fill must be None, a number or one number per channel; got {fill!r}")
            fill = float(values) if values.ndim == 0 else tuple(float(v) for v in values)
        self.fill = fill
        self.last_ops: list[tuple[str, float]] = []

    def _check(self, x: np.ndarray) -> np.ndarray:
        """The image, checked, and ``fill`` checked against its channels."""
        name = type(self).__name__
        x = check_image(x, name)
        if isinstance(self.fill, tuple) and len(self.fill) not in (1, x.shape[2]):
            raise ShapeError(f"{name}: fill has {len(self.fill)} values but the image of shape {x.shape} has "
                             f"{x.shape[2]} channels")
        return x

    @property
    def operations(self) -> tuple[str, ...]:
        """The names of the operations this transform draws from."""
        return tuple(self._space)

    def magnitude_table(self, operation: str, height: int, width: int) -> np.ndarray | None:
        """The magnitude bins of ``operation`` for an image of (height, width), or None for an
        operation without a magnitude."""
        if operation not in self._space:
            raise ValueError(f"{type(self).__name__}: unknown operation {operation!r}; expected one of "
                             f"{self.operations}")
        table, _ = self._space[operation]
        return None if table is None else table(self._num_bins, height, width)

    def _magnitude(self, operation: str, level: int | None, x: np.ndarray, rng: np.random.Generator) -> float:
        """The magnitude of bin ``level`` for ``x``, its sign drawn for signed operations."""
        table = self.magnitude_table(operation, *x.shape[:2])
        if table is None or level is None:
            return 0.0
        magnitude = float(table[level])
        if self._space[operation][1] and rng.random() < 0.5:
            magnitude = -magnitude
        return magnitude

    def _apply(self, x: np.ndarray, operation: str, magnitude: float, record: list) -> np.ndarray:
        """``operation`` at ``magnitude`` on ``x``, noted in ``record``."""
        record.append((operation, magnitude))
        return IMAGE_OPS[operation](x, magnitude, self.interpolation, self.fill)

    def get_config(self) -> dict[str, Any]:
        return {"interpolation": self.interpolation, "fill": self.fill}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class AutoAugment(_PolicyTransform):
    """AutoAugment with a learned ``policy`` ('imagenet', 'cifar10' or 'svhn'; see
    :data:`AUTO_AUGMENT_POLICIES`): draw one of its 25 sub-policies uniformly, then apply each
    of its two steps with its probability, at its magnitude bin of 10 (sign drawn for
    signed operations). Geometry uses ``interpolation`` ('nearest' or 'bilinear') and ``fill``
    (None is 0; a number or one per channel, in the image's units)."""

    _space = _AUTO_AUGMENT_SPACE

    def __init__(self, policy: str = "imagenet", interpolation: str = "nearest", fill: Fill = None) -> None:
        if policy not in AUTO_AUGMENT_POLICIES:
            raise ValueError(f"AutoAugment: policy must be one of {tuple(AUTO_AUGMENT_POLICIES)}; got {policy!r}")
        super().__init__(interpolation, fill)
        self.policy = policy
        self.sub_policies = AUTO_AUGMENT_POLICIES[policy]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        rng = backend.rng()
        applied: list[tuple[str, float]] = []
        for operation, probability, level in self.sub_policies[int(rng.integers(len(self.sub_policies)))]:
            if rng.random() < probability:
                x = self._apply(x, operation, self._magnitude(operation, level, x, rng), applied)
        self.last_ops = applied
        return x

    def get_config(self) -> dict[str, Any]:
        return {"policy": self.policy, **super().get_config()}


class RandAugment(_PolicyTransform):
    """RandAugment: ``num_ops`` operations in a row, each drawn uniformly from the 14 of
    :attr:`operations` (Identity, shears, translations, Rotate, the colour four, Posterize,
    Solarize, AutoContrast, Equalize), all at bin ``magnitude`` of ``num_magnitude_bins``."""

    _space = _RAND_AUGMENT_SPACE

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 interpolation: str = "nearest", fill: Fill = None) -> None:
        self.num_ops = _check_int(num_ops, "num_ops", "RandAugment", 0)
        self.num_magnitude_bins = _check_int(num_magnitude_bins, "num_magnitude_bins", "RandAugment", 2)
        self.magnitude = _check_int(magnitude, "magnitude", "RandAugment", 0, self.num_magnitude_bins - 1)
        self._num_bins = self.num_magnitude_bins
        super().__init__(interpolation, fill)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        rng = backend.rng()
        applied: list[tuple[str, float]] = []
        for _ in range(self.num_ops):
            operation = self.operations[int(rng.integers(len(self._space)))]
            x = self._apply(x, operation, self._magnitude(operation, self.magnitude, x, rng), applied)
        self.last_ops = applied
        return x

    def get_config(self) -> dict[str, Any]:
        return {"num_ops": self.num_ops, "magnitude": self.magnitude,
                "num_magnitude_bins": self.num_magnitude_bins, **super().get_config()}


class TrivialAugmentWide(_PolicyTransform):
    """TrivialAugment (wide ranges): one operation drawn uniformly from the 14 of RandAugment,
    at a bin drawn uniformly from ``num_magnitude_bins``; the ranges are wider (shear 0.99,
    translation 32 pixels, rotation 135 degrees, colour factors 1 +- 0.99, posterize 8 down
    to 2 bits)."""

    _space = _TRIVIAL_AUGMENT_WIDE_SPACE

    def __init__(self, num_magnitude_bins: int = 31, interpolation: str = "nearest", fill: Fill = None) -> None:
        self.num_magnitude_bins = _check_int(num_magnitude_bins, "num_magnitude_bins", "TrivialAugmentWide", 2)
        self._num_bins = self.num_magnitude_bins
        super().__init__(interpolation, fill)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        rng = backend.rng()
        applied: list[tuple[str, float]] = []
        operation = self.operations[int(rng.integers(len(self._space)))]
        level = int(rng.integers(self.num_magnitude_bins))
        x = self._apply(x, operation, self._magnitude(operation, level, x, rng), applied)
        self.last_ops = applied
        return x

    def get_config(self) -> dict[str, Any]:
        return {"num_magnitude_bins": self.num_magnitude_bins, **super().get_config()}


class AugMix(_PolicyTransform):
    """AugMix: ``mixture_width`` chains of augmentations, each ``chain_depth`` operations long
    (<= 0: a depth drawn from 1..3 per chain), mixed with the image:

        y = m x + (1 - m) sum_k w_k chain_k(x),   m ~ Beta(alpha, alpha),  w ~ Dirichlet(alpha, ..., alpha)

    An operation is drawn uniformly from shears, translations (up to a third of the side),
    Rotate, Posterize (4 down to 0 bits), Solarize, AutoContrast, Equalize, and with
    ``all_ops`` also the colour four; its magnitude bin uniformly from the lowest ``severity``
    (1..10) of 10. A uint8 result is truncated, as torchvision's."""

    _PARAMETER_MAX = 10

    @property
    def _space(self) -> dict[str, tuple[MagnitudeTable | None, bool]]:  # type: ignore[override]
        return _AUGMIX_ALL if self.all_ops else _AUGMIX_GEOMETRY_AND_TONE

    def __init__(self, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1, alpha: float = 1.0,
                 all_ops: bool = True, interpolation: str = "bilinear", fill: Fill = None) -> None:
        self.severity = _check_int(severity, "severity", "AugMix", 1, self._PARAMETER_MAX)
        self.mixture_width = _check_int(mixture_width, "mixture_width", "AugMix", 1)
        if isinstance(chain_depth, bool) or not isinstance(chain_depth, (int, np.integer)):
            raise ValueError(f"AugMix: chain_depth must be an integer (<= 0 for a random depth 1..3); "
                             f"got {chain_depth!r}")
        self.chain_depth = int(chain_depth)
        if (isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating))
                or not 0 < alpha < math.inf):
            raise ValueError(f"AugMix: alpha must be a positive finite number; got {alpha!r}")
        self.alpha = float(alpha)
        if not isinstance(all_ops, (bool, np.bool_)):
            raise ValueError(f"AugMix: all_ops must be True or False; got {all_ops!r}")
        self.all_ops = bool(all_ops)
        super().__init__(interpolation, fill)
        self.last_chains: list[list[tuple[str, float]]] = []
        self.last_weights: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        rng = backend.rng()
        original_weight = rng.dirichlet([self.alpha, self.alpha])[0]
        chain_weights = rng.dirichlet([self.alpha] * self.mixture_width) * (1.0 - original_weight)
        work = np.float32 if x.dtype == np.uint8 else x.dtype.type
        mix = x.astype(work) * work(original_weight)
        chains = []
        for weight in chain_weights:
            chain: list[tuple[str, float]] = []
            depth = self.chain_depth if self.chain_depth > 0 else int(rng.integers(1, 4))
            augmented = x
            for _ in range(depth):
                operation = self.operations[int(rng.integers(len(self._space)))]
                level = int(rng.integers(self.severity))
                augmented = self._apply(augmented, operation, self._magnitude(operation, level, augmented, rng), chain)
            mix += augmented.astype(work) * work(weight)
            chains.append(chain)
        self.last_chains = chains
        self.last_ops = [step for chain in chains for step in chain]
        self.last_weights = np.concatenate([[original_weight], chain_weights])
        top = 255 if x.dtype == np.uint8 else 1
        return np.clip(mix, 0, top).astype(x.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"severity": self.severity, "mixture_width": self.mixture_width, "chain_depth": self.chain_depth,
                "alpha": self.alpha, "all_ops": self.all_ops, **super().get_config()}
