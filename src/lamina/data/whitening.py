"""Whitening fitted on training data (course notes, data preprocessing): PCA and ZCA.

Both centre the data, take the eigendecomposition of its covariance, rotate into the
eigenbasis and divide by sqrt(eigenvalue + eps); ZCA then rotates back, so the whitened
data stays as close as possible to the original. Fit on the training split only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.data.preprocessing import _CHUNK_ROWS, Preprocessor, _mean_var
from lamina.errors import ShapeError

__all__ = ["PCAWhitening", "ZCAWhitening"]


def _covariance(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Covariance ``Xc^T Xc / N`` of the centred 2-d data, in float64, chunk by chunk."""
    d = rows.shape[1]
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        centred = rows[start:start + _CHUNK_ROWS].astype(np.float64) - mean
        cov += centred.T @ centred
    return cov / rows.shape[0]


class _Whitening(Preprocessor):
    """Shared fit of PCA and ZCA whitening: eigendecomposition of the data covariance.

    Each sample is flattened to a vector of ``D`` features. With the centred training
    data ``Xc`` (N, D), the covariance ``C = Xc^T Xc / N`` is decomposed as
    ``C = U diag(lam) U^T`` (``numpy.linalg.eigh``; eigenvalues sorted in decreasing
    order, each eigenvector's sign fixed so that its largest-magnitude entry is
    positive, which makes the result reproducible).
    """

    _state_keys = ("mean", "eigenvectors", "eigenvalues", "shape")

    def __init__(self, eps: float) -> None:
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0; got {eps!r}")
        self.eps = float(eps)

    def _eigen(self, x: np.ndarray) -> dict[str, np.ndarray]:
        rows = x.reshape(x.shape[0], -1)
        mean, _ = _mean_var(rows)
        eigenvalues, eigenvectors = np.linalg.eigh(_covariance(rows, mean))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        eigenvectors = eigenvectors[:, order]
        pivot = np.abs(eigenvectors).argmax(axis=0)
        signs = np.sign(eigenvectors[pivot, np.arange(eigenvectors.shape[1])])
        eigenvectors = eigenvectors * np.where(signs == 0, 1.0, signs)
        return {"mean": mean, "eigenvectors": eigenvectors, "eigenvalues": eigenvalues,
                "shape": np.array(x.shape[1:], dtype=np.int64)}

    def _flat(self, x: np.ndarray, state: dict[str, np.ndarray], who: str) -> np.ndarray:
        expected = tuple(int(s) for s in state["shape"])
        if x.shape[1:] != expected:
            raise ShapeError(f"{type(self).__name__}.{who}: fitted on samples of shape {expected}; "
                             f"got samples of shape {x.shape[1:]}")
        return x.reshape(x.shape[0], -1)

    def _validate_state(self, state: dict[str, np.ndarray]) -> None:
        d = int(np.prod(state["shape"]))
        vectors, values, mean = state["eigenvectors"], state["eigenvalues"], state["mean"]
        if mean.shape != (d,) or vectors.ndim != 2 or vectors.shape[0] != d or \
                values.shape != (vectors.shape[1],):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: inconsistent shapes: mean {mean.shape}, "
                f"eigenvectors {vectors.shape}, eigenvalues {values.shape} for samples of shape "
                f"{tuple(state['shape'])}"
            )


class PCAWhitening(_Whitening):
    """PCA whitening: centre, rotate onto the principal axes, scale each to unit variance.

    ``z = (x - mu) @ U_k / sqrt(lam_k + eps)`` where ``U_k`` holds the ``n_components``
    leading eigenvectors of the training covariance (all ``D`` when ``None``). Samples of
    any shape are flattened, so the output is ``(N, n_components)``. The whitened
    training data has covariance ``diag(lam / (lam + eps))``, i.e. about the identity.
    ``inverse_transform`` maps back to the original sample shape (exactly when all
    components are kept; otherwise the projection onto the kept ones). Fit on training
    data only.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-5) -> None:
        super().__init__(eps)
        if n_components is not None and (isinstance(n_components, bool)
                                         or not isinstance(n_components, (int, np.integer))
                                         or n_components < 1):
            raise ValueError(f"PCAWhitening: n_components must be a positive integer or None; "
                             f"got {n_components!r}")
        self.n_components = None if n_components is None else int(n_components)

    def _config(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "eps": self.eps}

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        d = int(np.prod(x.shape[1:]))
        if self.n_components is not None and self.n_components > d:
            raise ValueError(f"PCAWhitening.fit: n_components={self.n_components} exceeds the "
                             f"{d} features per sample")
        state = self._eigen(x)
        k = d if self.n_components is None else self.n_components
        state["eigenvectors"] = np.ascontiguousarray(state["eigenvectors"][:, :k])
        state["eigenvalues"] = state["eigenvalues"][:k]
        return state

    @property
    def explained_variance(self) -> np.ndarray:
        """The training-data variance along each kept principal axis (the eigenvalues)."""
        return self._require_fitted("explained_variance")["eigenvalues"].copy()

    def _transform(self, x, state, dtype):
        rows = self._flat(x, state, "transform")
        out = np.empty((rows.shape[0], state["eigenvectors"].shape[1]), dtype=dtype)
        projection = state["eigenvectors"] / np.sqrt(state["eigenvalues"] + self.eps)
        for start in range(0, rows.shape[0], _CHUNK_ROWS):
            chunk = rows[start:start + _CHUNK_ROWS].astype(np.float64) - state["mean"]
            out[start:start + _CHUNK_ROWS] = chunk @ projection
        return out

    def _inverse(self, z, state, dtype):
        k = state["eigenvectors"].shape[1]
        if z.ndim != 2 or z.shape[1] != k:
            raise ShapeError(f"PCAWhitening.inverse_transform: expected whitened data of shape "
                             f"(N, {k}); got {z.shape}")
        back = (state["eigenvectors"] * np.sqrt(state["eigenvalues"] + self.eps)).T
        rows = z.astype(np.float64) @ back + state["mean"]
        return rows.reshape((z.shape[0], *(int(s) for s in state["shape"]))).astype(dtype)


class ZCAWhitening(_Whitening):
    """ZCA whitening: PCA whitening rotated back into the original coordinates.

    ``z = (x - mu) @ W`` with ``W = U diag(1 / sqrt(lam + eps)) U^T`` (symmetric). The
    output keeps the input's sample shape and, of all whitening transforms, stays
    closest to the original data (whitened images still look like images, with edges
    emphasised). ``eps`` damps the directions of tiny variance. Fit on training data only.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__(eps)
        self._w: np.ndarray | None = None
        self._w_inv: np.ndarray | None = None

    def _config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self._eigen(x)

    def _validate_state(self, state: dict[str, np.ndarray]) -> None:
        super()._validate_state(state)
        if state["eigenvectors"].shape[0] != state["eigenvectors"].shape[1]:
            raise ValueError(f"ZCAWhitening.load_state_dict: eigenvectors must be square; got "
                             f"{state['eigenvectors'].shape}")

    def _after_load(self) -> None:
        state = self._state
        assert state is not None
        u, lam = state["eigenvectors"], state["eigenvalues"]
        root = np.sqrt(lam + self.eps)
        self._w = (u / root) @ u.T
        self._w_inv = (u * root) @ u.T

    @property
    def whitening_matrix(self) -> np.ndarray:
        """The symmetric ``D x D`` matrix ``W`` (float64)."""
        self._require_fitted("whitening_matrix")
        assert self._w is not None
        return self._w.copy()

    def _apply(self, x: np.ndarray, matrix: np.ndarray, shift_in: np.ndarray | None,
               shift_out: np.ndarray | None, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
        out = np.empty(rows.shape, dtype=dtype)
        for start in range(0, rows.shape[0], _CHUNK_ROWS):
            chunk = rows[start:start + _CHUNK_ROWS].astype(np.float64)
            if shift_in is not None:
                chunk -= shift_in
            chunk = chunk @ matrix
            if shift_out is not None:
                chunk += shift_out
            out[start:start + _CHUNK_ROWS] = chunk
        return out.reshape(x.shape)

    def _transform(self, x, state, dtype):
        rows = self._flat(x, state, "transform")
        return self._apply(x, self._w, state["mean"], None, rows, dtype)

    def _inverse(self, z, state, dtype):
        rows = self._flat(z, state, "inverse_transform")
        return self._apply(z, self._w_inv, None, state["mean"], rows, dtype)
