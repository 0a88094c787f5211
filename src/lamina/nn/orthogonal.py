"""``orthogonal(module, "weight")``: a weight kept orthogonal (W^T W = I for a tall W, W W^T = I
for a wide one) by a parametrization, as ``torch.nn.utils.parametrizations.orthogonal``.

For a tall (n, k) matrix X (a wide one is transposed first and the result transposed back)
the map to an orthogonal Q is one of

    matrix_exp:   A = L - L^T with L = tril(X) padded to (n, n),  Q = exp(A)[:, :k]
    cayley:       the same A,  Q = ((I - A/2)^-1 (I + A/2))[:, :k]
    householder:  Q = H_1 ... H_k [:, :k] * sign-ish(diag X),  H_i = I - tau_i v_i v_i^T,
                  v_i = e_i + the part of column i below the diagonal, tau_i = 2 / ||v_i||^2

(A is skew-symmetric, so exp(A) and the Cayley transform are orthogonal; each H_i is a
reflection.) The result is multiplied on the left by a fixed orthogonal ``base`` (the buffer
``parametrizations.weight.0.base``): the "trivialization" of Lezcano-Casado and Martinez-Rubio
(2019), so that gradient steps move Q near base, where the map is well conditioned. When the
parametrization is registered, base becomes the weight made orthogonal (its QR factor with a
non-negative diagonal of R; a tall non-square weight is first completed with random columns
from ``lamina.backend.rng()``) and ``original`` becomes -I, which every map sends to I, so the
module starts with base[:, :k], the nearest-to-the-weight orthogonal matrix in this sense.
Assigning ``module.weight = Q`` (orthogonal) moves base to it the same way.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.linalg import matrix_exp, solve
from lamina.functional.linalg_structure import tril
from lamina.nn.module import Module
from lamina.nn.parametrize import register_parametrization

__all__ = ["orthogonal"]

_MAPS = ("matrix_exp", "cayley", "householder")


class Orthogonal(Module):
    """The parametrization behind :func:`orthogonal`: ``forward(X)`` is base times the
    orthogonal matrix of X under ``orthogonal_map``; ``right_inverse(W)`` resets base."""

    def __init__(self, shape: tuple[int, ...], orthogonal_map: str):
        super().__init__()
        if orthogonal_map not in _MAPS:
            raise ValueError(f"orthogonal: orthogonal_map must be one of {_MAPS} or None, got {orthogonal_map!r}")
        self.shape = tuple(shape)
        self.orthogonal_map = orthogonal_map
        self.register_buffer("base", None)
        self.built = True

    def forward(self, x) -> Tensor:
        n, k = x.shape[-2:]
        transposed = n < k
        if transposed:
            x, (n, k) = F.swapaxes(x, -1, -2), (k, n)
        if self.orthogonal_map == "householder":
            q = _householder(x, n, k)
        else:
            lower = tril(x)
            if n != k:
                zeros = Tensor._wrap(backend.xp.zeros(x.shape[:-1] + (n - k,), dtype=x.dtype))
                lower = F.concat([lower, zeros], axis=-1)
            a = F.sub(lower, F.swapaxes(lower, -1, -2))
            if self.orthogonal_map == "matrix_exp":
                q = matrix_exp(a)
            else:
                eye = Tensor._wrap(backend.xp.eye(n, dtype=x.dtype))
                half = F.mul(a, 0.5)
                q = solve(F.sub(eye, half), F.add(eye, half))
            if n != k:
                q = q[..., :k]
        if self.base is not None:
            q = F.matmul(Tensor._wrap(self.base), q)
        return F.swapaxes(q, -1, -2) if transposed else q

    def right_inverse(self, w):
        """base <- w made orthogonal (tall form, completed to square); original <- -I."""
        xp = backend.xp
        data = xp.asarray(w.data if isinstance(w, Tensor) else w)
        if tuple(data.shape) != self.shape:
            raise ValueError(f"orthogonal: expected a weight of shape {self.shape}, got {tuple(data.shape)}")
        q = data
        n, k = q.shape[-2:]
        if n < k:
            q, (n, k) = xp.swapaxes(q, -1, -2), (k, n)
        if n != k:
            extra = backend.rng().standard_normal(q.shape[:-2] + (n, n - k))
            q = _orthogonalized(xp.concatenate([q, xp.asarray(extra, dtype=q.dtype)], axis=-1))
        elif not _is_orthogonal(q):
            q = _orthogonalized(q)
        self.base = xp.array(q, dtype=data.dtype)
        minus_identity = xp.zeros(data.shape, dtype=data.dtype)
        rows = xp.arange(min(data.shape[-2:]))
        minus_identity[..., rows, rows] = -1
        return minus_identity

    def extra_repr(self) -> str:
        return f"orthogonal_map={self.orthogonal_map!r}"


def _householder(x, n: int, k: int):
    """H_1 ... H_k [:, :k] with the reflections of the columns of tril(x, -1), times the
    integer part of x's diagonal per column (+-1 from -I; held constant)."""
    xp = backend.xp
    below = tril(x, -1)
    eye = xp.eye(n, k, dtype=x.dtype)
    v = F.add(below, Tensor._wrap(eye))                      # columns v_i = e_i + below-diagonal part
    tau = F.div(2.0, F.add(F.sum(F.mul(below, below), axis=-2, keepdims=True), 1.0))
    q = Tensor._wrap(xp.broadcast_to(eye, x.shape[:-2] + (n, k)).copy())
    for i in reversed(range(k)):
        vi = v[..., :, i:i + 1]
        q = F.sub(q, F.mul(F.mul(tau[..., :, i:i + 1], vi), F.matmul(F.swapaxes(vi, -1, -2), q)))
    signs = xp.trunc(xp.diagonal(x.data, axis1=-2, axis2=-1))[..., None, :]
    return F.mul(q, Tensor._wrap(signs.astype(x.dtype)))


def _is_orthogonal(q) -> bool:
    xp = backend.xp
    n, k = q.shape[-2:]
    eps = 10 * n * float(xp.finfo(q.dtype).eps)
    gram = xp.swapaxes(q, -1, -2) @ q
    eye = xp.eye(k, dtype=q.dtype)
    return bool(xp.all(xp.abs(gram - eye) <= eps + 1e-5 * xp.abs(eye)))


def _orthogonalized(a):
    """The Q of a = QR with R's diagonal made non-negative (unique for a full-rank a)."""
    xp = backend.xp
    q, r = xp.linalg.qr(a)
    signs = xp.sign(xp.diagonal(r, axis1=-2, axis2=-1))
    signs = xp.where(signs == 0, 1, signs)
    return q * signs[..., None, :]


def orthogonal(module: Module, name: str = "weight", orthogonal_map: str | None = None) -> Module:
    """Parametrize ``module.<name>`` (a matrix, or a batch of them on the last two axes) to stay
    orthogonal (see the module docstring). ``orthogonal_map`` defaults to 'matrix_exp' for a
    square weight and 'householder' otherwise, as PyTorch. The learned parameter is
    ``module.parametrizations.<name>.original``; the module must be built. Returns ``module``."""
    weight = module.__dict__.get("_parameters", {}).get(name)
    if weight is None:
        built = "" if module.built else " (the module is not built yet: call it once or build(input_shape) first)"
        raise ValueError(f"orthogonal({type(module).__name__}): the module has no parameter {name!r}{built}")
    if weight.ndim < 2:
        raise ValueError(f"orthogonal({type(module).__name__}): {name!r} has shape {tuple(weight.shape)}; expected "
                         "a matrix (at least 2 axes)")
    n, k = weight.shape[-2:]
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if n == k else "householder"
    return register_parametrization(module, name, Orthogonal(weight.shape, orthogonal_map), unsafe=True)
