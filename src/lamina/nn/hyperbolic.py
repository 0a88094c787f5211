r"""Layers of hyperbolic neural networks on the Poincaré ball (Ganea, Becigneul and Hofmann,
"Hyperbolic Neural Networks", 2018; Chami et al., "Hyperbolic Graph Convolutional Neural
Networks", 2019), over :class:`lamina.manifolds.PoincareBall`:

* :class:`HypLinear`: y = proj((M (x) x) (+) exp_0(b)), the Möbius version of x M^T + b;
* :class:`HypAct`: y = exp_0^{c_out}(act(log_0^{c_in}(x))), an activation in the tangent
  space at the origin (which may also change the curvature);
* :class:`PoincareEmbedding`: a table of points of the ball (Nickel and Kiela, 2017);
* :class:`HyperbolicMLR`: multinomial logistic regression with hyperplanes of the ball::

      logit_k(x) = lambda_{p_k} |a_k| / sqrt(c) asinh(2 sqrt(c) <w_k, a_k> / ((1 - c|w_k|^2) |a_k|)),
      w_k = (-p_k) (+) x,   p_k = exp_0(p'_k),   a_k = a'_k (1 - c|p_k|^2)

  with p'_k, a'_k Euclidean parameters (as the reference implementation).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.manifolds import PoincareBall
from lamina.manifolds.base import dot, norm
from lamina.nn.activation import get_activation, serialize_activation
from lamina.nn.embedding import check_ids, embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.manifold_parameter import ManifoldParameter
from lamina.nn.module import Module, as_tensor

__all__ = ["HypAct", "HypLinear", "HyperbolicMLR", "PoincareEmbedding"]


def _ball(ball, who: str) -> PoincareBall:
    if isinstance(ball, PoincareBall):
        return ball
    if isinstance(ball, (int, float)) and not isinstance(ball, bool):
        return PoincareBall(ball)
    raise TypeError(f"{who}: expected a PoincareBall or its curvature magnitude c > 0, got {ball!r}")


def _uniform(shape, limit: float) -> object:
    return backend.rng().uniform(-limit, limit, size=shape).astype(backend.get_default_dtype())


def _check_features(layer: Module, x: Tensor, expected: int) -> None:
    if x.ndim < 1 or x.shape[-1] != expected:
        raise ShapeError(f"{layer._label()}: expected points (..., {expected}), got shape {tuple(x.shape)}")


@register_layer
class HypLinear(Module):
    """The Möbius linear layer of HGCN: (..., in_features) points -> (..., out_features).

    ``weight`` (out_features, in_features) is Glorot-uniform with gain sqrt(2), ``bias``
    (out_features,) a Euclidean vector at the origin, zeros at first, mapped into the ball by
    exp_0 (``bias=False`` leaves it out). ``ball``: a PoincareBall or its c.
    """

    def __init__(self, in_features: int, out_features: int, ball=1.0, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        positive_int(in_features, "HypLinear: in_features")
        positive_int(out_features, "HypLinear: out_features")
        self.in_features, self.out_features = in_features, out_features
        self.ball = _ball(ball, "HypLinear")
        limit = math.sqrt(2.0) * math.sqrt(6.0 / (in_features + out_features))
        self.add_parameter("weight", _uniform((out_features, in_features), limit))
        self.use_bias = bias
        if bias:
            self.add_parameter("bias", backend.xp.zeros(out_features, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_features(self, x, self.in_features)
        ball = self.ball
        out = ball.projx(ball.mobius_matvec(self.weight, x))
        if self.use_bias:
            shift = ball.projx(ball.expmap0(F.reshape(self.bias, (1, -1))))
            out = ball.projx(ball.mobius_add(out, shift))
        return out

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "ball": self.ball.c,
                "bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, c={self.ball.c:g}, bias={self.use_bias}"


@register_layer
class HypAct(Module):
    """act applied in the tangent space at the origin: exp_0^{c_out}(act(log_0^{c_in}(x)))."""

    def __init__(self, activation="relu", ball_in=1.0, ball_out=None, name: str | None = None):
        super().__init__(name=name)
        self.activation = get_activation(activation)
        self.activation_spec = activation
        if self.activation is None:
            raise ValueError(f"HypAct: expected an activation, got {activation!r}")
        self.ball_in = _ball(ball_in, "HypAct")
        self.ball_out = self.ball_in if ball_out is None else _ball(ball_out, "HypAct")
        self.built = True

    def forward(self, x) -> Tensor:
        tangent = self.activation(self.ball_in.logmap0(as_tensor(x)))
        return self.ball_out.projx(self.ball_out.expmap0(tangent))

    def get_config(self) -> dict:
        act = self.activation
        return {"activation": serialize_activation(act if isinstance(act, Module) else self.activation_spec),
                "ball_in": self.ball_in.c, "ball_out": self.ball_out.c, "name": self.name}

    def extra_repr(self) -> str:
        return f"c_in={self.ball_in.c:g}, c_out={self.ball_out.c:g}"


@register_layer
class PoincareEmbedding(Module):
    """A table of ``num_embeddings`` points of the ball of dimension ``dim``, a
    :class:`ManifoldParameter` drawn from U(-init_scale, init_scale) (near the origin, as
    Nickel and Kiela); ids (...) -> points (..., dim). Train it with
    :class:`lamina.optim.RiemannianSGD` or :class:`lamina.optim.RiemannianAdam`."""

    reads_ids = True

    def __init__(self, num_embeddings: int, dim: int, ball=1.0, init_scale: float = 1e-3,
                 name: str | None = None):
        super().__init__(name=name)
        positive_int(num_embeddings, "PoincareEmbedding: num_embeddings")
        positive_int(dim, "PoincareEmbedding: dim")
        self.num_embeddings, self.dim, self.init_scale = num_embeddings, dim, init_scale
        self.ball = _ball(ball, "PoincareEmbedding")
        self.weight = ManifoldParameter(_uniform((num_embeddings, dim), init_scale), self.ball)
        self.built = True

    def forward(self, ids) -> Tensor:
        return embedding(check_ids(ids, self.num_embeddings, self._label()), self.weight)

    def distance(self, ids_a, ids_b) -> Tensor:
        """The hyperbolic distances between the points of ``ids_a`` and ``ids_b`` (broadcast)."""
        return self.ball.dist(self(ids_a), self(ids_b))

    def get_config(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "dim": self.dim, "ball": self.ball.c,
                "init_scale": self.init_scale, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}, c={self.ball.c:g}"


@register_layer
class HyperbolicMLR(Module):
    """Hyperbolic multinomial logistic regression: points (..., in_features) -> logits
    (..., num_classes) (see the module docstring). The offsets p'_k and normals a'_k,
    (num_classes, in_features) each, start from U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, num_classes: int, ball=1.0, name: str | None = None):
        super().__init__(name=name)
        positive_int(in_features, "HyperbolicMLR: in_features")
        positive_int(num_classes, "HyperbolicMLR: num_classes")
        self.in_features, self.num_classes = in_features, num_classes
        self.ball = _ball(ball, "HyperbolicMLR")
        limit = 1.0 / math.sqrt(in_features)
        self.add_parameter("offsets", _uniform((num_classes, in_features), limit))
        self.add_parameter("normals", _uniform((num_classes, in_features), limit))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_features(self, x, self.in_features)
        return hyperbolic_mlr(x, self.offsets, self.normals, self.ball)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "num_classes": self.num_classes, "ball": self.ball.c,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.num_classes}, c={self.ball.c:g}"


def hyperbolic_mlr(x, offsets, normals, ball: PoincareBall) -> Tensor:
    """The logits of :class:`HyperbolicMLR` for points x (..., n), Euclidean offsets p' and
    normals a' (K, n): (..., K)."""
    c, sqrt_c = ball.c, ball.sqrt_c
    p = ball.expmap0(offsets)                                       # (K, n)
    p2 = dot(p, p, keepdim=False)                                   # (K,)
    a = normals * (1.0 - c * F.expand_dims(p2, -1))
    a_norm = norm(a, keepdim=False)                                 # (K,)
    w = ball.mobius_add(-p, F.expand_dims(as_tensor(x), -2))        # (..., K, n)
    numerator = 2.0 * sqrt_c * dot(w, a, keepdim=False)
    denominator = a_norm * F.clip(1.0 - c * dot(w, w, keepdim=False), low=1e-15)
    return (2.0 / (1.0 - c * p2)) * a_norm / sqrt_c * F.asinh(numerator / denominator)
