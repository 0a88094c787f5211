r"""The Stiefel manifold St(n, p) = {X in R^{n x p} : X^T X = I} of orthonormal frames, with
the metric of R^{n x p} (the last two axes hold one point)::

    proj_X(U)   = U - X sym(X^T U),   sym(A) = (A + A^T) / 2
    retr_X(U)   = qf(X + U)                       (``retraction='qr'``: Q of QR, R's diagonal > 0)
                = (X + U) ((X + U)^T (X + U))^{-1/2} = W V^T for X + U = W S V^T   (``'polar'``)
                = (I - A/2)^{-1} (I + A/2) X,  A = G X^T - X G^T, G = proj_X(U)    (``'cayley'``)
    P_{X->Y}(V) = proj_Y(V)

The QR and polar retractions differentiate through lamina's ``qr`` and ``svd``.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import linalg, linalg_decomp
from lamina.manifolds.base import Manifold, as_tensor

__all__ = ["Stiefel"]

RETRACTIONS = ("qr", "polar", "cayley")


def _t(a: Tensor) -> Tensor:
    return F.swapaxes(a, -1, -2)


class Stiefel(Manifold):
    """Orthonormal n x p frames (n >= p), the last two axes; ``retraction`` one of 'qr',
    'polar' or 'cayley' (see the module docstring)."""

    name = "Stiefel"
    ndim = 2

    def __init__(self, retraction: str = "qr"):
        if retraction not in RETRACTIONS:
            raise ValueError(f"Stiefel: retraction must be one of {RETRACTIONS}, got {retraction!r}")
        self.retraction = retraction

    def __repr__(self) -> str:
        return f"Stiefel(retraction={self.retraction!r})"

    def _args(self, who: str, *tensors) -> list[Tensor]:
        tensors = [as_tensor(t) for t in tensors]
        self._check_shapes(who, *tensors)
        n, p = tensors[0].shape[-2:]
        if n < p:
            raise ShapeError(f"{self.name}.{who}: a frame (n, p) needs n >= p, got shape {tuple(tensors[0].shape)}")
        return tensors

    def check_point(self, x, who: str = "check_point", atol: float = 1e-4) -> None:
        xp = backend.xp
        data = x.data if isinstance(x, Tensor) else xp.asarray(x)
        gram = xp.swapaxes(data, -1, -2) @ data
        error = float(abs(gram - xp.eye(data.shape[-1])).max()) if gram.size else 0.0
        if error > atol:
            raise ValueError(f"{self.name}.{who}: X^T X differs from I by up to {error:.3g} (projx orthonormalises)")

    def inner(self, x, u, v=None, keepdim: bool = False) -> Tensor:
        u = as_tensor(u)
        v = u if v is None else as_tensor(v)
        return F.sum(u * v, axis=(-2, -1), keepdims=keepdim)

    def proju(self, x, u) -> Tensor:
        x, u = self._args("proju", x, u)
        xtu = _t(x) @ u
        return u - x @ ((xtu + _t(xtu)) / 2.0)

    def projx(self, x) -> Tensor:
        """The nearest frame, W V^T for x = W S V^T (the polar factor)."""
        (x,) = self._args("projx", x)
        w, _, vh = linalg_decomp.svd(x)
        return w @ vh

    def retr(self, x, u) -> Tensor:
        x, u = self._args("retr", x, u)
        if self.retraction == "polar":
            return self.projx(x + u)
        if self.retraction == "cayley":
            return self._cayley(x, self.proju(x, u))
        q, r = linalg_decomp.qr(x + u)
        signs = F.sign(F.diagonal(r, axis1=-2, axis2=-1))
        signs = F.where(signs.data == 0, 1.0 + 0.0 * signs, signs)
        return q * F.expand_dims(signs, -2)

    def _cayley(self, x: Tensor, g: Tensor) -> Tensor:
        n = x.shape[-2]
        a = g @ _t(x) - x @ _t(g)
        eye = backend.xp.eye(n, dtype=x.dtype)
        return linalg.solve(eye - a / 2.0, (eye + a / 2.0) @ x)

    def expmap(self, x, u) -> Tensor:
        """The retraction (a second-order one for 'polar' and 'cayley'), not the true geodesic."""
        return self.retr(x, u)

    def transp(self, x, y, v) -> Tensor:
        return self.proju(y, v)
