"""Keras-style numerical and categorical preprocessing layers: :class:`Normalization`,
:class:`Discretization`, :class:`CategoryEncoding` and :class:`Hashing`.

They go at the front of a model (or in the input pipeline) and learn their state with
``adapt(data)`` (see :mod:`lamina.nn.adapt`) instead of by gradient descent. The state is
saved twice over: as buffers in ``state_dict`` and in ``get_config()``, so that a layer
rebuilt from its config (as :func:`lamina.load` rebuilds a model) is ready at once.
Integer outputs are int64 tensors and encodings float tensors, without gradients;
:class:`Normalization` is an affine map, differentiable in its input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.adapt import (
    ENCODINGS,
    PreprocessingLayer,
    as_array,
    check_mode,
    check_not_sparse,
    encode_categorical,
    encoded_shape,
    stable_hash,
)
from lamina.nn.layer import register_layer
from lamina.nn.module import as_tensor

__all__ = ["CategoryEncoding", "Discretization", "Hashing", "Normalization"]

EPSILON = 1e-7     # the smallest standard deviation Normalization divides by (Keras's epsilon)


def _axes_tuple(axis: Any, who: str) -> tuple[int, ...] | None:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{who}: axis must be None, an int or a tuple of distinct ints; got {axis!r}")
    return axes


def _float_list(array: np.ndarray | None):
    return None if array is None else np.asarray(array, dtype=np.float64).tolist()


@register_layer
class Normalization(PreprocessingLayer):
    """Feature-wise standardisation, ``y = (x - mean) / max(sqrt(variance), 1e-7)``, and with
    ``invert=True`` its inverse ``y = x * max(sqrt(variance), 1e-7) + mean``.

    ``axis``: the axis (or axes) that keep their own statistics; every other axis is
    averaged over. The default -1 gives one mean and variance per feature of ``(N, D)``
    data or per channel of NHWC images; ``None`` one scalar mean and variance. The batch
    axis cannot be one of them. ``mean`` and ``variance`` (scalars, or arrays of the kept
    axes' shape) fix the statistics; otherwise :meth:`adapt` learns them as the
    mean and the population variance over the data, accumulated in float64 with the exact
    pairwise combination of batch moments (Chan, Golub and LeVeque):
    ``n = n_a + n_b``, ``mean = mean_a + d n_b / n``, ``M2 = M2_a + M2_b + d^2 n_a n_b / n``
    with ``d = mean_b - mean_a`` and ``variance = M2 / n``.
    """

    def __init__(self, axis: int | tuple[int, ...] | None = -1, mean: Any = None, variance: Any = None,
                 invert: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.axis = _axes_tuple(axis, "Normalization")
        if (mean is None) != (variance is None):
            raise ValueError(f"Normalization: pass both mean and variance or neither; got mean={mean!r}, "
                             f"variance={variance!r}")
        self.invert = bool(invert)
        self.register_buffer("mean", None if mean is None else np.asarray(mean, dtype=np.float64))
        self.register_buffer("variance", None if variance is None else np.asarray(variance, dtype=np.float64))
        if variance is not None and np.any(self.variance < 0):
            raise ValueError(f"Normalization: variance must be >= 0; got {variance!r}")

    @property
    def is_adapted(self) -> bool:
        return self.mean is not None

    # -- axes -----------------------------------------------------------------------------
    def _kept_axes(self, ndim: int) -> tuple[int, ...]:
        if self.axis is None:
            return ()
        kept = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ShapeError(f"{self._label()}: axis {a} is out of range for inputs of {ndim} dims")
            kept.append(a % ndim)
        if 0 in kept:
            raise ShapeError(f"{self._label()}: axis {self.axis} names the batch axis 0 of {ndim}-dim inputs; "
                             "the statistics are per feature, so use the feature axes (e.g. -1)")
        return tuple(sorted(kept))

    def _broadcast_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        kept = self._kept_axes(len(shape))
        return tuple(shape[i] if i in kept else 1 for i in range(len(shape)))

    def _statistic(self, value: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        """``value`` reshaped to broadcast against inputs of ``shape``."""
        kept = self._kept_axes(len(shape))
        if value.size == 1:
            return value.reshape(())
        kept_shape = tuple(shape[i] for i in kept)
        if value.shape != kept_shape:
            raise ShapeError(f"{self._label()}: {what} has shape {value.shape} but inputs of shape {shape} with "
                             f"axis={self.axis} need one value per kept position, shape {kept_shape}")
        return value.reshape(self._broadcast_shape(shape))

    # -- adapt ----------------------------------------------------------------------------
    def _start_adapt(self) -> None:
        self._moments: tuple[int, np.ndarray, np.ndarray] | None = None
        self._feature_shape: tuple[int, ...] | None = None

    def _update_adapt(self, batch: np.ndarray) -> None:
        if not (np.issubdtype(batch.dtype, np.number) or batch.dtype == bool):
            raise TypeError(f"{self._label()}.adapt: expected numeric data; got dtype {batch.dtype}")
        if batch.ndim < 2 and self.axis is not None:
            batch = batch.reshape(-1, 1)
        target = self._broadcast_shape(batch.shape)
        if self._feature_shape is not None and target[1:] != self._feature_shape:
            raise ShapeError(f"{self._label()}.adapt: batches disagree on the kept axes: {target[1:]} after "
                             f"{self._feature_shape}")
        self._feature_shape = target[1:]
        reduce = tuple(i for i, t in enumerate(target) if t == 1 or i == 0)
        x = batch.astype(np.float64)
        n_b = x.size // max(int(np.prod(target)), 1)
        mean_b = x.mean(axis=reduce, keepdims=True)
        m2_b = ((x - mean_b) ** 2).sum(axis=reduce, keepdims=True)
        if self._moments is None:
            self._moments = (n_b, mean_b, m2_b)
            return
        n_a, mean_a, m2_a = self._moments
        n = n_a + n_b
        delta = mean_b - mean_a
        self._moments = (n, mean_a + delta * (n_b / n), m2_a + m2_b + delta**2 * (n_a * n_b / n))

    def _finish_adapt(self) -> None:
        n, mean, m2 = self._moments
        kept_shape = tuple(mean.shape[i] for i in self._kept_axes(mean.ndim))
        self.mean = mean.reshape(kept_shape)
        self.variance = (m2 / n).reshape(kept_shape)
        del self._moments, self._feature_shape

    # -- running --------------------------------------------------------------------------
    def forward(self, x) -> Tensor:
        self._require_adapted()
        x = as_tensor(x)
        if x.dtype.kind != "f":
            x = Tensor(x.numpy().astype(backend.get_default_dtype()))
        if x.ndim < 2 and self.axis is not None and self.mean.size > 1:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(x.shape)}; expected a batch "
                             f"(N, ...) whose axes {self.axis} match the statistics of shape {self.mean.shape}")
        shape = tuple(x.shape)
        mean = self._statistic(self.mean, shape, "mean").astype(x.dtype)
        std = np.maximum(np.sqrt(self._statistic(self.variance, shape, "variance")), EPSILON).astype(x.dtype)
        mean, std = Tensor(mean, dtype=x.dtype), Tensor(std, dtype=x.dtype)
        return x * std + mean if self.invert else (x - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"axis": self.axis if self.axis is None or len(self.axis) > 1 else self.axis[0],
                "mean": _float_list(self.mean), "variance": _float_list(self.variance),
                "invert": self.invert, "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}, invert={self.invert}{'' if self.is_adapted else ', not adapted'}"


@register_layer
class Discretization(PreprocessingLayer):
    """Bucket index of each value: ``i`` such that ``b[i-1] <= x < b[i]`` for the sorted
    ``bin_boundaries`` b (0 below the first, ``len(b)`` from the last on), as
    ``numpy.digitize``; optionally encoded (``output_mode`` 'one_hot', 'multi_hot',
    'count', see :class:`CategoryEncoding`) over ``len(b) + 1`` buckets.

    :meth:`adapt` with ``num_bins`` sets the boundaries to the exact quantiles
    ``k / num_bins``, k = 1..num_bins-1, of all the adapted values (``numpy.quantile``,
    linear interpolation), so each bucket holds about the same number of them. Keras
    computes approximate quantiles within ``epsilon``; here ``epsilon`` is kept for
    compatibility of configurations and does not change the result.
    """

    MODES = ("int", *ENCODINGS)

    def __init__(self, bin_boundaries: Any = None, num_bins: int | None = None, epsilon: float = 0.01,
                 output_mode: str = "int", sparse: bool = False, name: str | None = None):
        super().__init__(name=name)
        if bin_boundaries is None and num_bins is None:
            raise ValueError("Discretization: pass bin_boundaries, or num_bins and then call adapt(data)")
        if num_bins is not None and (isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1):
            raise ValueError(f"Discretization: num_bins must be a positive int; got {num_bins!r}")
        if bin_boundaries is not None:
            bin_boundaries = np.asarray(bin_boundaries, dtype=np.float64).reshape(-1)
            if np.any(np.diff(bin_boundaries) < 0):
                raise ValueError(f"Discretization: bin_boundaries must be sorted; got {bin_boundaries.tolist()}")
            if num_bins is not None and len(bin_boundaries) != num_bins - 1:
                raise ValueError(f"Discretization: {len(bin_boundaries)} bin_boundaries make "
                                 f"{len(bin_boundaries) + 1} bins, not num_bins={num_bins}")
        self.num_bins = num_bins
        self.epsilon = float(epsilon)
        self.output_mode = check_mode(output_mode, self.MODES, "Discretization")
        self.sparse = check_not_sparse(sparse, "Discretization")
        self.register_buffer("bin_boundaries", bin_boundaries)

    @property
    def is_adapted(self) -> bool:
        return self.bin_boundaries is not None

    def _start_adapt(self) -> None:
        if self.num_bins is None:
            raise ValueError(f"{self._label()}.adapt: the layer was given bin_boundaries and no num_bins; "
                             "pass num_bins to learn the boundaries")
        self._values: list[np.ndarray] = []

    def _update_adapt(self, batch: np.ndarray) -> None:
        if not (np.issubdtype(batch.dtype, np.number) or batch.dtype == bool):
            raise TypeError(f"{self._label()}.adapt: expected numeric data; got dtype {batch.dtype}")
        self._values.append(batch.astype(np.float64).reshape(-1))

    def _finish_adapt(self) -> None:
        values = np.concatenate(self._values)
        del self._values
        levels = np.arange(1, self.num_bins) / self.num_bins
        self.bin_boundaries = np.quantile(values, levels)

    def forward(self, x) -> Tensor:
        self._require_adapted()
        values = as_array(x)
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise TypeError(f"{self._label()}: expected numeric inputs; got dtype {values.dtype}")
        buckets = np.digitize(values.astype(np.float64), self.bin_boundaries).astype(np.int64)
        if self.output_mode == "int":
            return Tensor(buckets)
        return Tensor(encode_categorical(buckets, len(self.bin_boundaries) + 1, self.output_mode))

    def compute_output_shape(self, input_shape):
        self._require_adapted()
        return encoded_shape(input_shape, len(self.bin_boundaries) + 1, self.output_mode)

    def get_config(self) -> dict:
        return {"bin_boundaries": _float_list(self.bin_boundaries), "num_bins": self.num_bins,
                "epsilon": self.epsilon, "output_mode": self.output_mode, "sparse": self.sparse, "name": self.name}

    def extra_repr(self) -> str:
        bins = None if self.bin_boundaries is None else len(self.bin_boundaries) + 1
        return f"bins={bins}, output_mode={self.output_mode!r}"


def _check_indices(layer, values: np.ndarray, depth: int) -> np.ndarray:
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        if not (np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values))):
            raise TypeError(f"{layer._label()}: expected integer inputs; got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= depth):
        raise ValueError(f"{layer._label()}: inputs must lie in [0, {depth}); got values from {values.min()} "
                         f"to {values.max()}")
    return values.astype(np.int64)


@register_layer
class CategoryEncoding(PreprocessingLayer):
    """Dense encodings of integer category ids in ``[0, num_tokens)``.

    ``output_mode``: 'one_hot' (each id becomes a row of the identity; a last axis of size
    1 is replaced, otherwise one is appended), 'multi_hot' (the last axis is one sample's
    ids: 1 for each id present) or 'count' (how often each id occurs, or the sum of
    ``count_weights`` given to ``forward``). No state: nothing to adapt.
    """

    MODES = ENCODINGS
    reads_ids = True

    def __init__(self, num_tokens: int, output_mode: str = "multi_hot", sparse: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"CategoryEncoding: num_tokens must be a positive int; got {num_tokens!r}")
        self.num_tokens = num_tokens
        self.output_mode = check_mode(output_mode, self.MODES, "CategoryEncoding")
        self.sparse = check_not_sparse(sparse, "CategoryEncoding")

    @property
    def is_adapted(self) -> bool:
        return True

    def adapt(self, data: Any, batch_size: int | None = None, steps: int | None = None) -> None:
        raise TypeError(f"{self._label()}: CategoryEncoding has no state to adapt; set num_tokens")

    def forward(self, x, count_weights=None) -> Tensor:
        values = _check_indices(self, as_array(x), self.num_tokens)
        if count_weights is not None:
            if self.output_mode != "count":
                raise ValueError(f"{self._label()}: count_weights need output_mode='count'; got "
                                 f"{self.output_mode!r}")
            count_weights = as_array(count_weights)
            if count_weights.shape != values.shape:
                raise ShapeError(f"{self._label()}: count_weights have shape {count_weights.shape}; expected the "
                                 f"inputs' shape {values.shape}")
        return Tensor(encode_categorical(values, self.num_tokens, self.output_mode, count_weights))

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.num_tokens, self.output_mode)

    def get_config(self) -> dict:
        return {"num_tokens": self.num_tokens, "output_mode": self.output_mode, "sparse": self.sparse,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, output_mode={self.output_mode!r}"


@register_layer
class Hashing(PreprocessingLayer):
    """The hashing trick: each value (string or integer) goes to bucket
    ``h(value) mod num_bins`` with the stable keyed hash of :func:`lamina.nn.adapt.stable_hash`
    (64-bit BLAKE2b of the value's text; ``salt``, an int or a pair of ints, is the key).
    It is not the FarmHash / SipHash of Keras, so bucket numbers differ from Keras's.

    With ``mask_value`` set, that value goes to bucket 0 and every other to
    ``1 + h(value) mod (num_bins - 1)``. ``output_mode`` 'int' gives the buckets; 'one_hot',
    'multi_hot' and 'count' encode them as :class:`CategoryEncoding` does.
    """

    MODES = ("int", *ENCODINGS)
    reads_strings = True

    def __init__(self, num_bins: int, mask_value: Any = None, salt: Any = None, output_mode: str = "int",
                 sparse: bool = False, name: str | None = None):
        super().__init__(name=name)
        minimum = 2 if mask_value is not None else 1
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < minimum:
            raise ValueError(f"Hashing: num_bins must be an int >= {minimum}; got {num_bins!r}")
        self.num_bins = num_bins
        self.mask_value = mask_value
        stable_hash(np.array([0]), 1, salt, "Hashing")          # checks the salt
        self.salt = list(salt) if isinstance(salt, (tuple, list)) else salt
        self.output_mode = check_mode(output_mode, self.MODES, "Hashing")
        self.sparse = check_not_sparse(sparse, "Hashing")

    @property
    def is_adapted(self) -> bool:
        return True

    def adapt(self, data: Any, batch_size: int | None = None, steps: int | None = None) -> None:
        raise TypeError(f"{self._label()}: Hashing has no state to adapt")

    def forward(self, x) -> Tensor:
        values = as_array(x)
        if np.issubdtype(values.dtype, np.floating):
            raise TypeError(f"{self._label()}: expected strings or integers; got dtype {values.dtype}")
        if self.mask_value is None:
            buckets = stable_hash(values, self.num_bins, self.salt, self._label())
        else:
            buckets = 1 + stable_hash(values, self.num_bins - 1, self.salt, self._label())
            buckets[values == self.mask_value] = 0
        if self.output_mode == "int":
            return Tensor(buckets.astype(np.int64))
        return Tensor(encode_categorical(buckets, self.num_bins, self.output_mode))

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.num_bins, self.output_mode)

    def get_config(self) -> dict:
        return {"num_bins": self.num_bins, "mask_value": self.mask_value, "salt": self.salt,
                "output_mode": self.output_mode, "sparse": self.sparse, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}"
