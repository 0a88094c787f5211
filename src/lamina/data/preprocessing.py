"""Input preprocessing fitted on training data: mean subtraction and standardization
(whitening, built on the same base class, is in :mod:`lamina.data.whitening`).

Every preprocessor learns its statistics with ``fit(x_train)`` and then applies the same
fixed transformation to any data with ``transform`` (training, validation, test and
inputs at prediction time alike). **Fit on the training split only**: statistics taken
from validation or test data leak information about them into the model.

The learned statistics are plain arrays (:meth:`Preprocessor.state_dict`) and the
hyper-parameters a plain dict (:meth:`Preprocessor.get_config`), so a fitted
preprocessor can be saved next to a model and rebuilt with
:meth:`Preprocessor.from_state`. Statistics are computed in float64; outputs are float
arrays of the input's dtype when it is floating, else of lamina's default dtype.

Layouts: ``'feature'`` statistics are taken per feature, i.e. over the sample axis only
(``(N, D)`` tables, or every pixel of an image as its own feature); ``'channel'``
statistics are taken per channel of channels-last data, over every axis but the last
(NHWC images: one mean per colour channel, as VGG and ResNet preprocess).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from lamina import backend
from lamina.errors import ShapeError

__all__ = [
    "MeanSubtraction",
    "NotFittedError",
    "Preprocessor",
    "Standardizer",
]

_CHUNK_ROWS = 8192


class NotFittedError(RuntimeError):
    """A preprocessor was used before :meth:`Preprocessor.fit` (or a state load)."""


def _output_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if np.issubdtype(x.dtype, np.floating) else backend.get_default_dtype()


def _as_samples(x: Any, who: str, min_ndim: int = 2) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < min_ndim:
        raise ShapeError(f"{who}: expected an array of samples with at least {min_ndim} dims "
                         f"(N, ...); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{who}: expected numeric data; got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{who}: cannot fit on zero samples")
    return x


def _mean_var(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and (population) variance of a 2-d array, in float64, chunk by chunk."""
    m = rows.shape[0]
    total = np.zeros(rows.shape[1], dtype=np.float64)
    for start in range(0, m, _CHUNK_ROWS):
        total += rows[start:start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = total / m
    squares = np.zeros_like(mean)
    for start in range(0, m, _CHUNK_ROWS):
        centred = rows[start:start + _CHUNK_ROWS].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    return mean, squares / m


class Preprocessor:
    """Base class: ``fit`` / ``transform`` / ``inverse_transform`` plus (de)serialisation.

    Subclasses name their learned arrays in ``_state_keys`` and implement ``_fit``,
    ``_transform`` and ``_inverse``.
    """

    _registry: ClassVar[dict[str, type[Preprocessor]]] = {}
    _state_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Preprocessor._registry[cls.__name__] = cls

    def __init__(self) -> None:
        self._state: dict[str, np.ndarray] | None = None

    # -- public API -----------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether statistics have been learned (by ``fit``) or loaded."""
        return self._state is not None

    def fit(self, x: Any) -> Self:
        """Learn the statistics from training data ``x`` (first axis: samples); returns self."""
        x = _as_samples(x, f"{type(self).__name__}.fit", self._min_ndim())
        self._state = self._fit(x)
        self._after_load()
        return self

    def transform(self, x: Any) -> np.ndarray:
        """Apply the fitted transformation to ``x``."""
        state = self._require_fitted("transform")
        x = _as_samples(x, f"{type(self).__name__}.transform", self._min_ndim())
        return self._transform(x, state, _output_dtype(x))

    def inverse_transform(self, x: Any) -> np.ndarray:
        """Map transformed data back to the original space (up to dropped components)."""
        state = self._require_fitted("inverse_transform")
        x = _as_samples(x, f"{type(self).__name__}.inverse_transform", 2)
        return self._inverse(x, state, _output_dtype(x))

    def fit_transform(self, x: Any) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def get_config(self) -> dict[str, Any]:
        """The hyper-parameters (JSON-friendly), with the class name under ``'class'``."""
        return {"class": type(self).__name__, **self._config()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the learned arrays (raises :class:`NotFittedError` before ``fit``)."""
        state = self._require_fitted("state_dict")
        return {k: v.copy() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Install learned arrays from :meth:`state_dict`."""
        missing = set(self._state_keys) - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: state lacks {sorted(missing)}")
        self._state = {k: np.array(state[k]) for k in self._state_keys}
        self._validate_state(self._state)
        self._after_load()

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`get_config` and :meth:`state_dict`.

        Called on :class:`Preprocessor` itself it builds whichever class ``config['class']``
        names; called on a subclass the config must name that class (or omit ``'class'``).
        """
        name = config.get("class", cls.__name__)
        target = Preprocessor._registry.get(name)
        if target is None:
            raise ValueError(f"Preprocessor.from_state: unknown preprocessor class {name!r}; "
                             f"known: {sorted(Preprocessor._registry)}")
        if not issubclass(target, cls):
            raise ValueError(f"{cls.__name__}.from_state: config describes a {name}")
        obj = target(**{k: v for k, v in config.items() if k != "class"})
        obj.load_state_dict(state)
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args}){'' if self.fitted else ' (not fitted)'}"

    # -- hooks ----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _min_ndim(self) -> int:
        return 2

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _transform(self, x: np.ndarray, state: dict[str, np.ndarray], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError

    def _inverse(self, x: np.ndarray, state: dict[str, np.ndarray], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError

    def _validate_state(self, state: dict[str, np.ndarray]) -> None:
        """Check a loaded state's shapes; raise ValueError when they do not fit together."""

    def _after_load(self) -> None:
        """Derive cached quantities from the state (after fit or load)."""

    def _require_fitted(self, method: str) -> dict[str, np.ndarray]:
        if self._state is None:
            raise NotFittedError(
                f"{type(self).__name__}.{method}: this preprocessor is not fitted yet; call "
                f"fit(x_train) first (or restore it with load_state_dict / from_state)"
            )
        return self._state


class _PerAxisStatistics(Preprocessor):
    """Shared machinery of statistics per feature or per (last-axis) channel."""

    _layout_name: ClassVar[str] = "layout"

    def __init__(self, layout: str) -> None:
        super().__init__()
        if layout not in ("feature", "channel"):
            raise ValueError(f"{type(self).__name__}: {self._layout_name} must be 'feature' or "
                             f"'channel'; got {layout!r}")
        self._layout = layout

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """The data as a 2-d (observations, statistics) array."""
        if self._layout == "feature":
            return x.reshape(x.shape[0], -1)
        return x.reshape(-1, x.shape[-1])

    def _stat_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape[1:] if self._layout == "feature" else (x.shape[-1],)

    def _check_shape(self, x: np.ndarray, state: dict[str, np.ndarray], who: str) -> None:
        expected = tuple(int(s) for s in state["shape"])
        if self._layout == "feature" and x.shape[1:] != expected:
            raise ShapeError(f"{type(self).__name__}.{who}: fitted on samples of shape {expected}; "
                             f"got samples of shape {x.shape[1:]}")
        if self._layout == "channel" and x.shape[-1:] != expected:
            raise ShapeError(f"{type(self).__name__}.{who}: fitted on {expected[0]} channels "
                             f"(last axis); got data of shape {x.shape}")

    def _validate_state(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(s) for s in state["shape"])
        for key in self._state_keys:
            if key != "shape" and state[key].shape != shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape "
                                 f"{state[key].shape}, expected {shape}")


class MeanSubtraction(_PerAxisStatistics):
    """Subtract the training mean: ``x' = x - mu``.

    ``axis='feature'`` subtracts one mean per feature (per pixel and channel for images,
    AlexNet-style); ``axis='channel'`` one mean per channel of channels-last data (NHWC),
    VGG-style. Fit on training data only.
    """

    _state_keys = ("mean", "shape")
    _layout_name = "axis"

    def __init__(self, axis: str = "feature") -> None:
        super().__init__(axis)

    def _config(self) -> dict[str, Any]:
        return {"axis": self._layout}

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        mean, _ = _mean_var(self._rows(x))
        shape = self._stat_shape(x)
        return {"mean": mean.reshape(shape), "shape": np.array(shape, dtype=np.int64)}

    def _transform(self, x, state, dtype):
        self._check_shape(x, state, "transform")
        return x.astype(dtype, copy=False) - state["mean"].astype(dtype)

    def _inverse(self, x, state, dtype):
        self._check_shape(x, state, "inverse_transform")
        return x.astype(dtype, copy=False) + state["mean"].astype(dtype)


class Standardizer(_PerAxisStatistics):
    """Z-score normalisation: ``x' = (x - mu) / sqrt(var + eps)``.

    ``per='feature'`` uses a mean and variance per feature (columns of ``(N, D)`` data);
    ``per='channel'`` one per channel of channels-last images (ResNet-style). The
    variance is the population variance over the training samples; ``eps`` keeps
    constant features finite (they map to 0). Fit on training data only.
    """

    _state_keys = ("mean", "std", "shape")
    _layout_name = "per"

    def __init__(self, per: str = "feature", eps: float = 1e-8) -> None:
        super().__init__(per)
        if not eps >= 0:
            raise ValueError(f"Standardizer: eps must be >= 0; got {eps!r}")
        self.eps = float(eps)

    def _config(self) -> dict[str, Any]:
        return {"per": self._layout, "eps": self.eps}

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        mean, var = _mean_var(self._rows(x))
        shape = self._stat_shape(x)
        std = np.sqrt(var + self.eps)
        if np.any(std == 0):
            raise ValueError("Standardizer.fit: some features are constant and eps is 0; "
                             "pass eps > 0")
        return {"mean": mean.reshape(shape), "std": std.reshape(shape),
                "shape": np.array(shape, dtype=np.int64)}

    def _transform(self, x, state, dtype):
        self._check_shape(x, state, "transform")
        return (x.astype(dtype, copy=False) - state["mean"].astype(dtype)) / state["std"].astype(dtype)

    def _inverse(self, x, state, dtype):
        self._check_shape(x, state, "inverse_transform")
        return x.astype(dtype, copy=False) * state["std"].astype(dtype) + state["mean"].astype(dtype)
