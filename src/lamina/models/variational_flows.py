"""Flows made for variational inference: planar and radial flows (Rezende and Mohamed 2015)
and inverse autoregressive flow (IAF, Kingma et al. 2016).

All follow :class:`lamina.models.flows.InvertibleLayer`'s protocol (``forward`` -> (y, log|det J|),
``inverse`` -> (x, log|det J^-1|)). The planar and radial ``forward`` is the papers' map f, the
cheap direction (used on base samples in variational inference); the IAF's cheap direction is
its ``inverse``, so that a :class:`lamina.models.flows.NormalizingFlow` samples in one pass.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.models.flows import InvertibleLayer, MaskedAutoregressive
from lamina.nn.layer import register_layer

__all__ = ["InverseAutoregressive", "PlanarFlow", "RadialFlow"]


def _softplus(value: Tensor) -> Tensor:
    """softplus of a 0-d tensor."""
    return F.softplus(value.reshape(1)).reshape(())


@register_layer
class PlanarFlow(InvertibleLayer):
    """f(z) = z + u_hat tanh(w . z + b), log|det J| = log|1 + u_hat . w tanh'(w . z + b)|.

    u_hat = u + (m(w . u) - w . u) w / ||w||^2 with m(a) = -1 + softplus(a) makes
    w . u_hat > -1, so f is invertible. The inverse has no closed form: it solves the scalar
    equation w . y = a + (w . u_hat) tanh(a + b) for a = w . z by Newton's method (bracketed),
    off the gradient graph."""

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d, dtype = self.features, backend.get_default_dtype()
        rng = backend.rng()
        bound = 1.0 / np.sqrt(d)
        self.add_parameter("u", rng.uniform(-bound, bound, d).astype(dtype))
        self.add_parameter("w", rng.uniform(-bound, bound, d).astype(dtype))
        self.add_parameter("b", np.zeros((), dtype=dtype))

    def get_config(self) -> dict:
        return {"name": self.name}

    def u_hat(self) -> Tensor:
        """u moved along w so that w . u_hat = -1 + softplus(w . u) > -1."""
        wu = (self.w * self.u).sum()
        return self.u + (_softplus(wu) - 1.0 - wu) * self.w / (self.w * self.w).sum()

    def _forward(self, z):
        u_hat = self.u_hat()
        activation = F.tanh(F.matmul(z, self.w) + self.b)
        y = z + activation.reshape(-1, 1) * u_hat
        slope = 1.0 - activation * activation
        return y, F.log(F.abs(1.0 + slope * (u_hat * self.w).sum()))

    def _inverse(self, y):
        with no_grad():
            wu = float((self.u_hat() * self.w).sum().item())
            b = float(self.b.item())
            target = backend.to_numpy(F.matmul(y, self.w).data).astype(np.float64)
            # a + wu tanh(a + b) is increasing; its root lies within |wu| of the target
            low, high = target - abs(wu) - 1.0, target + abs(wu) + 1.0
            a = target.copy()
            for _ in range(100):
                t = np.tanh(a + b)
                value = a + wu * t - target
                low, high = np.where(value > 0, low, a), np.where(value > 0, a, high)
                step = a - value / (1.0 + wu * (1.0 - t * t))
                inside = (step >= low) & (step <= high)
                a = np.where(inside, step, 0.5 * (low + high))
                if np.all(np.abs(value) < 1e-14 * (1.0 + np.abs(target))):
                    break
            activation = np.tanh(a + b)
            u_hat = backend.to_numpy(self.u_hat().data)
            z = backend.to_numpy(y.data) - activation[:, None] * u_hat
            log_det = -np.log(np.abs(1.0 + (1.0 - activation ** 2) * wu))
        return Tensor._wrap(z.astype(y.dtype)), Tensor._wrap(log_det.astype(y.dtype))


@register_layer
class RadialFlow(InvertibleLayer):
    """f(z) = z + beta h(r) (z - z0), r = ||z - z0||, h(r) = 1 / (alpha + r), with
    alpha = softplus(alpha') > 0 and beta = -alpha + softplus(beta') > -alpha (invertible);
    log|det J| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r). The inverse is closed
    form: ||y - z0|| = r (1 + beta / (alpha + r)) is a quadratic in r."""

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d, dtype = self.features, backend.get_default_dtype()
        self.add_parameter("center", (backend.rng().standard_normal(d) / np.sqrt(d)).astype(dtype))
        self.add_parameter("raw_alpha", np.zeros((), dtype=dtype))
        self.add_parameter("raw_beta", np.zeros((), dtype=dtype))

    def get_config(self) -> dict:
        return {"name": self.name}

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        alpha = _softplus(self.raw_alpha)
        return alpha, _softplus(self.raw_beta) - alpha

    def _log_det(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1.0 / (alpha + r)
        scale = 1.0 + beta * h
        return (self.features - 1) * F.log(scale) + F.log(scale - beta * h * h * r)

    def _forward(self, z):
        alpha, beta = self.alpha_beta()
        offset = z - self.center
        r = F.sqrt((offset * offset).sum(axis=1))
        y = z + (beta / (alpha + r)).reshape(-1, 1) * offset
        return y, self._log_det(r, alpha, beta)

    def _inverse(self, y):
        alpha, beta = self.alpha_beta()
        offset = y - self.center
        r_y = F.sqrt((offset * offset).sum(axis=1))
        # r^2 + (alpha + beta - r_y) r - alpha r_y = 0, the positive root
        p = alpha + beta - r_y
        r = 0.5 * (F.sqrt(p * p + 4.0 * alpha * r_y) - p)
        z = self.center + offset / (1.0 + beta / (alpha + r)).reshape(-1, 1)
        return z, -self._log_det(r, alpha, beta)


@register_layer
class InverseAutoregressive(MaskedAutoregressive):
    """Inverse autoregressive flow: the MAF layer used in the sampling direction.

    In the flows' convention (``forward``: data -> code, ``inverse``: code -> data) the
    inverse is the one-pass direction: x_i = z_i e^(a_i) + mu_i with (mu_i, a_i) functions of
    z_1 .. z_{i-1} from a MADE network, log|det dx/dz| = sum_i a_i; ``forward(x)`` recovers z
    one feature at a time (``features`` passes), log|det dz/dx| = -sum_i a_i. So a
    :class:`NormalizingFlow` of these draws samples in one pass per layer, and a sample's
    density is cheap when its code is kept (variational inference)."""

    def _inverse(self, z):
        mu, a = self._shift_and_log_scale(z)
        return z * F.exp(a) + mu, a.sum(axis=1)

    def _forward(self, x):
        z = x * 0.0
        for i in range(self.features):
            mu, a = self._shift_and_log_scale(z)
            only_i = Tensor._wrap(np.eye(self.features, dtype=x.dtype)[i])
            z = z + only_i * ((x - mu) * F.exp(-a) - z)
        return z, -a.sum(axis=1)
