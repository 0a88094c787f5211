"""Matrix factorization for ratings (Koren, Bell & Volinsky 2009, the Netflix prize models) and
alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008).

A rating is predicted from a global mean, a user and an item bias and the dot product of
a user and an item factor vector:

    r_hat(u, i) = mu + b_u + b_i + p_u . q_i

trained by gradient descent on the squared error (plus weight decay on P, Q for the
usual L2 penalty). :func:`als` instead fits implicit feedback r_ui >= 0 in closed form:
with preferences p_ui = 1[r_ui > 0] and confidences c_ui = 1 + alpha r_ui it minimises

    sum_(u,i) c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2)

over all pairs, alternating the exact solutions for the users and the items,

    x_u = (Y^T Y + Y^T (C^u - I) Y + reg I)^(-1) Y^T C^u p(u),

where only the items of user u enter the correction Y^T (C^u - I) Y (and symmetrically for
y_i), so one sweep costs O(nnz d^2 + (n_users + n_items) d^3).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

from .id_inputs import checked_ids, checked_pairs

__all__ = ["MatrixFactorization", "als"]


@register_layer
class MatrixFactorization(Module):
    """(users (B,), items (B,)) -> predicted ratings mu + b_u + b_i + p_u . q_i (B,).

    ``dim``: the factor size d. ``biases=False`` keeps only p_u . q_i. Factors start from
    N(0, ``init_std``^2), biases from 0 and mu from ``global_mean`` (set it to the mean
    training rating). Tables: ``user_factors`` (n_users, d), ``item_factors`` (n_items, d),
    ``user_bias`` (n_users, 1), ``item_bias`` (n_items, 1), ``global_bias`` (1,)."""

    reads_ids = True

    def __init__(self, n_users: int, n_items: int, dim: int = 32, biases: bool = True, init_std: float = 0.1,
                 global_mean: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        for value, what in ((n_users, "n_users"), (n_items, "n_items"), (dim, "dim")):
            positive_int(value, f"MatrixFactorization: {what}")
        self.n_users, self.n_items, self.dim, self.biases = n_users, n_items, dim, bool(biases)
        self.init_std, self.global_mean = float(init_std), float(global_mean)
        factor_init = {"name": "normal", "std": self.init_std}
        self.user_factors = Embedding(n_users, dim, embeddings_init=factor_init)
        self.item_factors = Embedding(n_items, dim, embeddings_init=factor_init)
        if self.biases:
            self.user_bias = Embedding(n_users, 1, embeddings_init="zeros")
            self.item_bias = Embedding(n_items, 1, embeddings_init="zeros")
        self.build(None)

    def build(self, input_shape) -> None:
        for table in self.children():
            if not table.built:
                table.build(None)
        if self.biases and "global_bias" not in self._parameters:
            self.add_parameter("global_bias", np.full(1, self.global_mean, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, users, items) -> Tensor:
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        scores = F.sum(self.user_factors(users) * self.item_factors(items), axis=-1)
        if self.biases:
            bias = self.user_bias(users) + self.item_bias(items) + self.global_bias
            scores = scores + F.reshape(bias, (-1,))
        return scores

    def score_all(self, users) -> np.ndarray:
        """The predicted ratings of every item for each user: (len(users), n_items), NumPy."""
        users = checked_ids(users, self.n_users, "user", self._label())
        p, q = (backend.to_numpy(t.weight.data) for t in (self.user_factors, self.item_factors))
        scores = p[users] @ q.T
        if self.biases:
            scores += (backend.to_numpy(self.user_bias.weight.data)[users]
                       + backend.to_numpy(self.item_bias.weight.data)[:, 0]
                       + backend.to_numpy(self.global_bias.data))
        return scores

    def get_config(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "biases": self.biases,
                "init_std": self.init_std, "global_mean": self.global_mean, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.n_users}, {self.n_items}, dim={self.dim}, biases={self.biases}"


def _csr(data):
    """A SciPy CSR matrix (users, items) from Interactions or any SciPy sparse matrix."""
    from scipy.sparse import csr_matrix, issparse

    if hasattr(data, "matrix") and hasattr(data, "n_items"):
        return data.matrix()
    if issparse(data):
        return csr_matrix(data)
    raise TypeError(f"als: expected Interactions or a SciPy sparse (users, items) matrix, got {type(data).__name__}")


def _solve_rows(matrix, fixed: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """Each row's exact least-squares factors given the other side's ``fixed`` factors."""
    dim = fixed.shape[1]
    gram = fixed.T @ fixed + reg * np.eye(dim)
    out = np.zeros((matrix.shape[0], dim))
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        if start == stop:
            continue                             # no interaction: all p = 0, the solution is 0
        cols, confidence = matrix.indices[start:stop], 1.0 + alpha * matrix.data[start:stop]
        seen = fixed[cols]
        lhs = gram + seen.T @ ((confidence - 1.0)[:, None] * seen)
        out[row] = np.linalg.solve(lhs, seen.T @ confidence)
    return out


def als(data, dim: int = 16, reg: float = 0.1, alpha: float = 10.0, iterations: int = 10,
        init_std: float = 0.01, seed=None) -> MatrixFactorization:
    """Fit implicit feedback by alternating least squares (Hu, Koren & Volinsky 2008): see the
    module docstring. ``data``: Interactions (their values as r_ui; repeated pairs add up) or a
    SciPy sparse (users, items) matrix of r_ui >= 0. Returns a bias-free
    :class:`MatrixFactorization` holding X and Y (``score_all`` then ranks items)."""
    positive_int(dim, "als: dim")
    positive_int(iterations, "als: iterations")
    if reg < 0 or alpha < 0:
        raise ValueError(f"als: reg and alpha must be >= 0, got reg={reg!r}, alpha={alpha!r}")
    by_user = _csr(data)
    if by_user.nnz and by_user.data.min() < 0:
        raise ValueError(f"als: implicit feedback must be >= 0, got a value {by_user.data.min()}")
    by_user.eliminate_zeros()
    by_item = by_user.T.tocsr()
    n_users, n_items = by_user.shape
    rng = np.random.default_rng(seed)
    y = rng.normal(0, init_std, (n_items, dim))
    for _ in range(iterations):
        x = _solve_rows(by_user, y, reg, alpha)
        y = _solve_rows(by_item, x, reg, alpha)
    model = MatrixFactorization(n_users, n_items, dim, biases=False)
    model.user_factors.weight.data[...] = backend.xp.asarray(x)
    model.item_factors.weight.data[...] = backend.xp.asarray(y)
    return model
