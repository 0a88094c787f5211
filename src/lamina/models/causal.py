"""Neural estimators of individual treatment effects.

* :class:`TARNet` / :class:`CFRNet` (Shalit, Johansson and Sontag, 2017): a shared
  representation Phi(x) and two outcome heads h_0, h_1; the loss is the (optionally
  re-weighted) factual squared error plus, for CFR, alpha times an integral probability
  metric between the treated and the control representations::

      L = mean_i w_i (h_{t_i}(Phi(x_i)) - y_i)^2 + alpha IPM({Phi(x_i)}_{t_i=1}, {Phi(x_i)}_{t_i=0}),
      w_i = t_i / (2u) + (1 - t_i) / (2(1 - u)),   u = mean(t)   (w_i = 1 without re-weighting).

* :class:`DragonNet` (Shi, Blei and Veitch, 2019): a shared representation Z(x), two outcome
  heads Q(0, x), Q(1, x) and a propensity head g(x), trained with targeted regularisation::

      L = mean (Q(t_i, x_i) - y_i)^2 + alpha mean BCE(g(x_i), t_i) + beta mean (y_i - Q~_i)^2,
      Q~_i = Q(t_i, x_i) + epsilon (t_i / g(x_i) - (1 - t_i) / (1 - g(x_i))),

  epsilon a trainable scalar; g is kept in [0.01/1.02, 1.01/1.02] as (sigmoid + 0.01) / 1.02.

``model(x)`` gives (n, 2) potential-outcome predictions [mu0, mu1]; ``model.effect(x)`` their
difference.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.data.causal import check_treatment
from lamina.functional.activation import sigmoid
from lamina.functional.domain_adaptation import mmd_loss
from lamina.functional.elementwise import log
from lamina.functional.optimal_transport_entropic import sinkhorn_divergence
from lamina.functional.shape import concat
from lamina.nn import Dense, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["CFRNet", "DragonNet", "TARNet", "representation_ipm", "treatment_weights"]


def _stack(widths, activation: str, last: int | None = None) -> Sequential:
    layers = [Dense(int(w), activation=activation) for w in widths]
    if last is not None:
        layers.append(Dense(last))
    return Sequential(*layers)


def representation_ipm(treated, control, kind: str = "mmd", reg: float = 0.1) -> Tensor:
    """The integral probability metric between two sets of representations (n1, d) and (n0, d):
    ``'mmd'``: :func:`lamina.functional.mmd_loss` (squared MMD, Gaussian kernels);
    ``'wasserstein'``: :func:`lamina.functional.sinkhorn_divergence` with entropic ``reg``
    (squared Euclidean costs). Both are 0 for identical sets."""
    if kind == "mmd":
        return mmd_loss(treated, control)
    if kind == "wasserstein":
        return sinkhorn_divergence(treated, control, reg, p=2, num_iter=200)
    raise ValueError(f"representation_ipm: kind must be 'mmd' or 'wasserstein', got {kind!r}")


def treatment_weights(t) -> np.ndarray:
    """Shalit et al.'s w_i = t_i / (2u) + (1 - t_i) / (2(1 - u)), u the treated fraction."""
    t = check_treatment(t, None, "treatment_weights").astype(np.float64)
    u = t.mean()
    return t / (2 * u) + (1 - t) / (2 * (1 - u))


def _constant(values, like: Tensor) -> Tensor:
    return Tensor(np.asarray(values, dtype=like.data.dtype), dtype=like.data.dtype)


def _factual(outcomes: Tensor, t: np.ndarray) -> Tensor:
    tt = _constant(t, outcomes)
    return outcomes[:, 1] * tt + outcomes[:, 0] * (1.0 - tt)


@register_with_arguments
class TARNet(Module):
    """Phi: Dense layers of ``representation`` widths; h_0, h_1: Dense layers of ``head``
    widths then one linear unit each. ``alpha`` = 0 (TARNet) has no IPM term."""

    def __init__(self, representation=(32, 32), head=(32,), activation: str = "elu", alpha: float = 0.0,
                 ipm: str = "mmd", reweight: bool = False, sinkhorn_reg: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        if alpha < 0:
            raise ValueError(f"{type(self).__name__}: alpha must be >= 0, got {alpha!r}")
        if ipm not in ("mmd", "wasserstein"):
            raise ValueError(f"{type(self).__name__}: ipm must be 'mmd' or 'wasserstein', got {ipm!r}")
        self.alpha, self.ipm, self.reweight, self.sinkhorn_reg = float(alpha), ipm, bool(reweight), sinkhorn_reg
        self.phi = _stack(representation, activation)
        self.head0 = _stack(head, activation, 1)
        self.head1 = _stack(head, activation, 1)

    def representation(self, x) -> Tensor:
        return self.phi(as_tensor(x))

    def forward(self, x) -> Tensor:
        r = self.representation(x)
        return concat([self.head0(r), self.head1(r)], axis=1)

    def effect(self, x) -> np.ndarray:
        out = self(x).numpy()
        return out[:, 1] - out[:, 0]

    def loss(self, x, t, y) -> Tensor:
        """The factual (weighted) squared error plus alpha x IPM (see the module docstring)."""
        x = as_tensor(x)
        t = check_treatment(t, x.shape[0], f"{type(self).__name__}.loss")
        r = self.representation(x)
        outcomes = concat([self.head0(r), self.head1(r)], axis=1)
        residual = _factual(outcomes, t) - _constant(y, outcomes)
        squared = residual * residual
        if self.reweight:
            squared = squared * _constant(treatment_weights(t), outcomes)
        total = squared.mean()
        if self.alpha > 0:
            treated, control = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
            total = total + representation_ipm(r[treated], r[control], self.ipm, self.sinkhorn_reg) * self.alpha
        return total


@register_with_arguments
class CFRNet(TARNet):
    """TARNet with the IPM penalty on (default alpha = 1)."""

    def __init__(self, representation=(32, 32), head=(32,), activation: str = "elu", alpha: float = 1.0,
                 ipm: str = "mmd", reweight: bool = False, sinkhorn_reg: float = 0.1, name: str | None = None):
        super().__init__(representation, head, activation, alpha, ipm, reweight, sinkhorn_reg, name=name)


@register_with_arguments
class DragonNet(Module):
    """Z: Dense layers of ``representation`` widths; Q(0, .), Q(1, .): Dense layers of ``head``
    widths then one unit; g: one logistic unit on Z. ``alpha``, ``beta``: the weights of the
    propensity and targeted-regularisation terms."""

    def __init__(self, representation=(32, 32), head=(32,), activation: str = "elu", alpha: float = 1.0,
                 beta: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.alpha, self.beta = float(alpha), float(beta)
        self.z = _stack(representation, activation)
        self.head0 = _stack(head, activation, 1)
        self.head1 = _stack(head, activation, 1)
        self.propensity_head = Dense(1)
        self.add_parameter("epsilon", np.zeros((1,), dtype=np.float32))

    def outputs(self, x) -> tuple[Tensor, Tensor]:
        """((n, 2) outcome predictions, (n,) propensities g(x))."""
        z = self.z(as_tensor(x))
        outcomes = concat([self.head0(z), self.head1(z)], axis=1)
        g = (sigmoid(self.propensity_head(z)[:, 0]) + 0.01) * (1.0 / 1.02)
        return outcomes, g

    def forward(self, x) -> Tensor:
        return self.outputs(x)[0]

    def effect(self, x) -> np.ndarray:
        out = self(x).numpy()
        return out[:, 1] - out[:, 0]

    def propensity(self, x) -> np.ndarray:
        return self.outputs(x)[1].numpy()

    def loss(self, x, t, y) -> Tensor:
        x = as_tensor(x)
        t = check_treatment(t, x.shape[0], "DragonNet.loss")
        outcomes, g = self.outputs(x)
        tt, yy = _constant(t, outcomes), _constant(y, outcomes)
        q = _factual(outcomes, t)
        outcome_loss = ((q - yy) * (q - yy)).mean()
        bce = -(tt * log(g) + (1.0 - tt) * log(1.0 - g)).mean()
        perturbed = q + self.epsilon * (tt / g - (1.0 - tt) / (1.0 - g))
        targeted = ((yy - perturbed) * (yy - perturbed)).mean()
        return outcome_loss + bce * self.alpha + targeted * self.beta
