"""``ManifoldParameter``: a parameter whose values are points of a manifold."""

from __future__ import annotations

from lamina.nn.parameter import Parameter

__all__ = ["ManifoldParameter"]


class ManifoldParameter(Parameter):
    """A :class:`Parameter` tagged with the manifold its values lie on (any object with the
    interface of :class:`lamina.manifolds.Manifold`). Modules register it like any
    parameter; :class:`lamina.optim.RiemannianSGD` and :class:`lamina.optim.RiemannianAdam`
    read ``manifold`` to step along it (other optimizers treat it as a plain array)."""

    __slots__ = ("manifold",)

    def __init__(self, data, manifold, trainable: bool = True, dtype=None):
        super().__init__(data, trainable=trainable, dtype=dtype)
        for needed in ("egrad2rgrad", "retr", "transp", "projx"):
            if not callable(getattr(manifold, needed, None)):
                raise TypeError(f"ManifoldParameter: manifold must offer {needed}(), got {manifold!r}")
        self.manifold = manifold

    def __repr__(self) -> str:
        return (f"ManifoldParameter(shape={self.shape}, dtype={self.dtype}, manifold={self.manifold!r}, "
                f"trainable={self.trainable})")
