"""Matrix and tensor decompositions behind low-rank layers, in NumPy float64.

* :func:`truncated_svd`: M ~ U_r S_r V_r^T, the best rank-r approximation of M in the Frobenius
  and spectral norms (Eckart-Young), with error ||M - M_r||_F^2 = sum_{i>r} s_i^2.
* :func:`rank_for_energy`: the smallest r with sum_{i<=r} s_i^2 >= energy * sum_i s_i^2.
* :func:`tucker2`: W ~ G x_a U_a x_b U_b along two modes a, b of a tensor (the two channel modes
  of a convolution kernel): U_a, U_b are the leading left singular vectors of the mode-a and
  mode-b unfoldings (HOSVD), optionally refined by alternating sweeps (HOOI), and the core is
  G = W x_a U_a^T x_b U_b^T.
* :func:`cp_als`: W ~ sum_r a^(1)_r o a^(2)_r o ... o a^(N)_r (CANDECOMP/PARAFAC) by alternating
  least squares: each factor in turn solves the linear least-squares problem
  A^(n) = W_(n) KR_n (V_n)^+,  KR_n the Khatri-Rao product of the other factors and
  V_n the Hadamard product of their Gram matrices A^(m)T A^(m).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["cp_als", "cp_to_tensor", "rank_for_energy", "relative_error", "truncated_svd", "tucker2",
           "tucker2_to_tensor"]


def _rank(value, largest: int, who: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {value!r}")
    if value > largest:
        raise ValueError(f"{who}: {what} {value} is larger than possible: at most {largest} here")
    return int(value)


def rank_for_energy(singular_values: np.ndarray, energy: float, who: str = "rank_for_energy") -> int:
    """The smallest r whose leading singular values keep ``energy`` (in (0, 1]) of sum s_i^2."""
    if isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0.0 < energy <= 1.0:
        raise ValueError(f"{who}: energy must be a fraction in (0, 1], got {energy!r}")
    squares = np.asarray(singular_values, dtype=np.float64) ** 2
    total = squares.sum()
    if total == 0.0:
        return 1
    kept = np.cumsum(squares) / total
    return int(min(np.searchsorted(kept, energy * (1 - 1e-12)) + 1, squares.size))


def truncated_svd(matrix, rank: int, who: str = "truncated_svd") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U_r, s_r, V_r^T) of the 2-D ``matrix``: U_r diag(s_r) V_r^T is its best rank-``rank``
    approximation; ``rank`` may be at most min(m, n)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{who}: expected a 2-D matrix, got shape {m.shape}")
    r = _rank(rank, min(m.shape), who, "rank")
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return u[:, :r], s[:r], vt[:r]


def relative_error(original, approximation) -> float:
    """||original - approximation||_F / ||original||_F (0 for an all-zero original)."""
    a = np.asarray(original, dtype=np.float64)
    norm = np.linalg.norm(a)
    return float(np.linalg.norm(a - np.asarray(approximation, dtype=np.float64)) / norm) if norm else 0.0


def _unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    """The mode-n unfolding: axis ``mode`` becomes the rows, the others (in order) the columns."""
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def _mode_product(tensor: np.ndarray, matrix: np.ndarray, mode: int) -> np.ndarray:
    """T x_n M: contracts axis ``mode`` of T (length I) with the columns of M (J, I)."""
    return np.moveaxis(np.tensordot(matrix, tensor, axes=(1, mode)), 0, mode)


def _leading_vectors(tensor: np.ndarray, mode: int, rank: int) -> np.ndarray:
    u, _, _ = np.linalg.svd(_unfold(tensor, mode), full_matrices=False)
    return u[:, :rank]


def tucker2(tensor, modes: tuple[int, int], ranks: tuple[int, int], iterations: int = 0,
            who: str = "tucker2") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tucker-2 of ``tensor`` along ``modes`` (a, b) with ``ranks`` (r_a, r_b): returns
    (G, U_a, U_b), U_a (I_a, r_a) and U_b (I_b, r_b) with orthonormal columns and the core
    G = W x_a U_a^T x_b U_b^T, so W ~ G x_a U_a x_b U_b. r_a may be at most
    min(I_a, prod of the other sizes) (the rank of the unfolding), likewise r_b.
    ``iterations`` HOOI sweeps refine the HOSVD start: U_a from W x_b U_b^T, U_b from W x_a U_a^T."""
    w = np.asarray(tensor, dtype=np.float64)
    a, b = modes
    limits = [min(w.shape[m], w.size // w.shape[m]) for m in (a, b)]
    r_a = _rank(ranks[0], limits[0], who, f"rank of mode {a} (size {w.shape[a]})")
    r_b = _rank(ranks[1], limits[1], who, f"rank of mode {b} (size {w.shape[b]})")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"{who}: iterations must be an int >= 0, got {iterations!r}")
    u_a = _leading_vectors(w, a, r_a)
    u_b = _leading_vectors(w, b, r_b)
    for _ in range(int(iterations)):
        u_a = _leading_vectors(_mode_product(w, u_b.T, b), a, r_a)
        u_b = _leading_vectors(_mode_product(w, u_a.T, a), b, r_b)
    core = _mode_product(_mode_product(w, u_a.T, a), u_b.T, b)
    return core, u_a, u_b


def tucker2_to_tensor(core: np.ndarray, u_a: np.ndarray, u_b: np.ndarray, modes: tuple[int, int]) -> np.ndarray:
    """G x_a U_a x_b U_b."""
    return _mode_product(_mode_product(core, u_a, modes[0]), u_b, modes[1])


def _khatri_rao(matrices: list[np.ndarray]) -> np.ndarray:
    """Column-wise Kronecker product, the first matrix's index varying slowest (C order)."""
    out = matrices[0]
    for m in matrices[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
    return out


def cp_to_tensor(factors: list[np.ndarray]) -> np.ndarray:
    """sum_r a^(1)_r o a^(2)_r o ... o a^(N)_r from the factors A^(n) (I_n, R)."""
    shape = tuple(f.shape[0] for f in factors)
    return (factors[0] @ _khatri_rao(factors[1:]).T).reshape(shape)


def cp_als(tensor, rank: int, iterations: int = 200, tol: float = 1e-12, seed: int | None = 0,
           who: str = "cp_als") -> tuple[list[np.ndarray], float]:
    """A rank-``rank`` CP decomposition of ``tensor`` by alternating least squares.

    Returns (factors, relative error): A^(n) of shape (I_n, R), with the weights of the rank-one
    terms spread evenly over the factors (equal column norms across modes). Starts from the
    leading singular vectors of each unfolding, completed by Gaussian columns drawn from
    ``seed``; stops after ``iterations`` sweeps or once the relative error changes by less
    than ``tol``."""
    w = np.asarray(tensor, dtype=np.float64)
    if w.ndim < 2:
        raise ValueError(f"{who}: expected a tensor of 2 or more axes, got shape {w.shape}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"{who}: rank must be a positive int, got {rank!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"{who}: iterations must be a positive int, got {iterations!r}")
    rank = int(rank)
    generator = np.random.default_rng(seed)
    factors = []
    for mode in range(w.ndim):
        start = generator.standard_normal((w.shape[mode], rank))
        u = _leading_vectors(w, mode, min(rank, w.shape[mode]))
        start[:, :u.shape[1]] = u
        factors.append(start)
    norm = np.linalg.norm(w)
    error = np.inf
    for _ in range(int(iterations)):
        for mode in range(w.ndim):
            others = [factors[m] for m in range(w.ndim) if m != mode]
            gram = np.ones((rank, rank))
            for f in others:
                gram *= f.T @ f
            factors[mode] = _unfold(w, mode) @ _khatri_rao(others) @ np.linalg.pinv(gram)
        new_error = np.linalg.norm(w - cp_to_tensor(factors)) / norm if norm else 0.0
        converged = abs(error - new_error) < tol
        error = new_error
        if converged:
            break
    return _balance(factors), float(error)


def _balance(factors: list[np.ndarray]) -> list[np.ndarray]:
    """Rescale each rank-one term so that its factor columns share the same norm."""
    norms = np.stack([np.linalg.norm(f, axis=0) for f in factors])      # (N, R)
    weight = np.prod(norms, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    scale = np.where(weight > 0, weight, 0.0) ** (1.0 / len(factors))
    return [f / safe[n] * scale for n, f in enumerate(factors)]
