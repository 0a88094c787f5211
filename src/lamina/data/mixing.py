"""Batch-mixing augmentation: MixUp and CutMix.

Both build every training example of a mini-batch from two: sample i and a partner
pi(i), where pi is a random permutation of the batch, with one weight lam ~ Beta(alpha, alpha)
drawn per batch. The labels, as one-hot rows y, are mixed in the same proportion, so the
targets become soft rows that the categorical cross-entropy takes as they are.

- MixUp (Zhang et al., 2018) blends the whole inputs:

      x~_i = lam x_i + (1 - lam) x_pi(i),        y~_i = lam y_i + (1 - lam) y_pi(i)

- CutMix (Yun et al., 2019) pastes a box B of the partner's image into the image:
  B has sides H sqrt(1 - lam) and W sqrt(1 - lam) (area fraction 1 - lam), a centre drawn
  uniformly over the pixels, and is clipped at the borders. Clipping shrinks the box, so the
  label weight is recomputed from the area actually pasted:

      lam' = 1 - |B| / (H W),                  y~_i = lam' y_i + (1 - lam') y_pi(i)

Small alpha puts lam near 0 or 1 (little mixing); alpha = 1 draws it uniformly. A sample
may be paired with itself, which leaves it unchanged.

The mixers are callables ``(xb, yb) -> (xb_mixed, y_soft)`` on NumPy batches, meant for
``DataLoader(..., batch_transform=...)``. Labels are integer classes ``(N,)`` (one-hot
encoded with ``num_classes``) or target rows ``(N, K)`` taken as given; the soft targets
come back as float32 rows. Each mixer draws from its own NumPy ``Generator``, seeded from
``seed`` or else from one draw of :func:`lamina.backend.rng` at construction, so
:func:`lamina.manual_seed` makes the mixing reproducible; ``state_dict()`` saves the
generator with a checkpoint. Called by a :class:`~lamina.data.DataLoader` (inside
:func:`lamina.backend.random_scope`), a mixer draws instead from a generator seeded with its
seed and the batch's (epoch, index) key, so that a batch is mixed the same way whichever
worker thread makes it, and in whatever order. What the last call drew is kept for inspection
(with worker threads, it is whichever batch was mixed last):
``last_applied``, ``last_sampled_lambda`` (the Beta draw), ``last_lambda`` (the weight of
each sample's own label) and ``last_permutation`` (CutMix also ``last_box``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.labels import one_hot
from lamina.errors import ShapeError

__all__ = ["CutMix", "MixUp"]


class _BatchMixer:
    """What MixUp and CutMix share: arguments, the generator, label handling, the draws.

    A subclass defines :meth:`_mix`, which mixes the inputs for the drawn ``lam`` and
    permutation and returns the weight of each sample's own label.
    """

    def __init__(self, alpha: float, num_classes: int | None, p: float, seed: int | None) -> None:
        name = type(self).__name__
        if (isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating))
                or not 0 < alpha < math.inf):
            raise ValueError(f"{name}: alpha must be a positive finite number (Beta(alpha, alpha)); got {alpha!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                        or num_classes < 1):
            raise ValueError(f"{name}: num_classes must be a positive integer or None; got {num_classes!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p <= 1:
            raise ValueError(f"{name}: p (the probability of mixing a batch) must lie in [0, 1]; got {p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"{name}: seed must be an integer or None; got {seed!r}")
        self.alpha = float(alpha)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.p = float(p)
        self.seed = seed
        if seed is None:
            seed = int(backend.rng().integers(0, 2**63 - 1))
        self._base_seed = int(seed)
        self._generator = np.random.default_rng(seed)
        self.last_applied: bool | None = None
        self.last_sampled_lambda: float | None = None
        self.last_lambda: float | None = None
        self.last_permutation: np.ndarray | None = None

    def __call__(self, xb: Any, yb: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mix one labelled batch; returns ``(mixed inputs, soft target rows (N, K) float32)``.

        With probability ``1 - p`` the inputs are returned as they are (MixUp still makes
        integer inputs float32) and only the labels are turned into rows; ``last_applied`` is
        then False, ``last_lambda`` 1 and ``last_permutation`` the identity.
        """
        if isinstance(xb, (tuple, list)):
            raise TypeError(f"{type(self).__name__}: the batch holds {len(xb)} input arrays (a model of several "
                            "inputs); mixing takes one array of inputs per batch")
        x = self._inputs(np.asarray(xb))
        targets = self._targets(np.asarray(yb), x.shape)
        n = len(x)
        generator = self._draws()
        if self.p < 1.0 and generator.random() >= self.p:
            self.last_applied, self.last_sampled_lambda, self.last_lambda = False, 1.0, 1.0
            self.last_permutation = np.arange(n)
            return x, targets
        lam = float(generator.beta(self.alpha, self.alpha))
        permutation = generator.permutation(n)
        mixed, own_weight = self._mix(x, lam, permutation, generator)
        soft = np.float32(own_weight) * targets + np.float32(1.0 - own_weight) * targets[permutation]
        self.last_applied, self.last_sampled_lambda, self.last_lambda = True, lam, own_weight
        self.last_permutation = permutation
        return mixed, soft

    def _draws(self) -> np.random.Generator:
        """The mixer's own generator, or inside a loader's random scope one keyed by the batch."""
        key = backend.random_scope_key()
        if key is None:
            return self._generator
        return np.random.default_rng(np.random.SeedSequence(self._base_seed, spawn_key=key))

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            raise ShapeError(f"{type(self).__name__}: inputs must have a batch axis; got a 0-d array")
        return x

    def _mix(self, x: np.ndarray, lam: float, permutation: np.ndarray,
             generator: np.random.Generator) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def _targets(self, y: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        """Integer labels ``(N,)`` as one-hot rows, or target rows ``(N, K)`` as float32."""
        name = type(self).__name__
        if y.ndim not in (1, 2):
            raise ShapeError(f"{name}: labels must be integer classes (N,) or target rows (N, K); "
                             f"got shape {y.shape}")
        if len(y) != x_shape[0]:
            raise ShapeError(f"{name}: inputs and labels must have the same batch size; "
                             f"got inputs {x_shape} and labels {y.shape}")
        if y.ndim == 2:
            if self.num_classes is not None and y.shape[1] != self.num_classes:
                raise ShapeError(f"{name}: target rows {y.shape} do not have num_classes={self.num_classes} columns")
            return y.astype(np.float32)
        if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name}: labels of shape {y.shape} must be integer classes; got dtype {y.dtype}")
        if self.num_classes is None:
            raise ValueError(f"{name}: integer labels {y.shape} need num_classes to be one-hot encoded; "
                             f"pass num_classes=, or give target rows (N, K)")
        outside = y[(y < 0) | (y >= self.num_classes)]
        if outside.size:
            raise ValueError(f"{name}: labels must lie in [0, {self.num_classes}); "
                             f"got out-of-range values {np.unique(outside)[:10].tolist()}")
        return one_hot(y, self.num_classes, dtype=np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and the seed: a restored mixer continues with the same draws."""
        return {"generator": copy.deepcopy(self._generator.bit_generator.state), "seed": self._base_seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        name = type(self).__name__
        if "generator" not in state:
            raise KeyError(f"{name}.load_state_dict: state lacks 'generator'")
        generator_state = copy.deepcopy(state["generator"])
        expected = type(self._generator.bit_generator).__name__
        if not isinstance(generator_state, dict) or generator_state.get("bit_generator") != expected:
            found = generator_state.get("bit_generator") if isinstance(generator_state, dict) else generator_state
            raise ValueError(f"{name}.load_state_dict: saved generator is {found!r}, expected {expected!r}")
        self._generator.bit_generator.state = generator_state
        if "seed" in state:
            self._base_seed = int(state["seed"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes}, p={self.p}, "
                f"seed={self.seed})")


class MixUp(_BatchMixer):
    """MixUp: x~_i = lam x_i + (1 - lam) x_pi(i), y~_i = lam y_i + (1 - lam) y_pi(i).

    Works on inputs of any shape ``(N, ...)``. Integer inputs (e.g. uint8 images) are
    converted to float32 first, mixed or not, so every batch has the same dtype; float
    inputs keep theirs. ``p`` is the probability that a batch is mixed at all.
    """

    def __init__(self, alpha: float = 0.2, num_classes: int | None = None, p: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__(alpha, num_classes, p, seed)

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        x = super()._inputs(x)
        return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)

    def _mix(self, x: np.ndarray, lam: float, permutation: np.ndarray,
             generator: np.random.Generator) -> tuple[np.ndarray, float]:
        weight = x.dtype.type(lam)
        return weight * x + (1 - weight) * x[permutation], lam


class CutMix(_BatchMixer):
    """CutMix: the box B of each image is replaced by the same box of its partner's image.

    Inputs are NHWC image batches ``(N, H, W, C)`` of any dtype (pixels are copied, not
    blended, so the dtype is kept). The box has sides ``round(H sqrt(1 - lam))`` and
    ``round(W sqrt(1 - lam))``, is centred on a pixel drawn uniformly over the image and
    clipped at the borders; it is the same for the whole batch. ``last_box`` is
    ``(top, left, bottom, right)``, rows ``top:bottom`` and columns ``left:right``; the
    label weight ``last_lambda`` is lam' = 1 - |B| / (H W), the fraction of the image kept.
    """

    def __init__(self, alpha: float = 1.0, num_classes: int | None = None, p: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__(alpha, num_classes, p, seed)
        self.last_box: tuple[int, int, int, int] | None = None

    def __call__(self, xb: Any, yb: Any) -> tuple[np.ndarray, np.ndarray]:
        self.last_box = None
        return super().__call__(xb, yb)

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ShapeError(f"CutMix: inputs must be a batch of NHWC images (N, H, W, C); got shape {x.shape}")
        return x

    def _mix(self, x: np.ndarray, lam: float, permutation: np.ndarray,
             generator: np.random.Generator) -> tuple[np.ndarray, float]:
        height, width = x.shape[1:3]
        side = math.sqrt(1.0 - lam)
        top, bottom = _span(height, int(round(height * side)), generator)
        left, right = _span(width, int(round(width * side)), generator)
        mixed = x.copy()
        mixed[:, top:bottom, left:right, :] = x[permutation, top:bottom, left:right, :]
        self.last_box = (top, left, bottom, right)
        area = height * width
        kept = 1.0 - (bottom - top) * (right - left) / area if area else 1.0
        return mixed, kept


def _span(size: int, length: int, generator: np.random.Generator) -> tuple[int, int]:
    """[start, stop) of a run of ``length`` pixels centred on a uniform pixel, clipped to [0, size)."""
    centre = int(generator.integers(0, size)) if size else 0
    start = centre - length // 2
    return max(start, 0), min(start + length, size)
