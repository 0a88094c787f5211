r"""Penalties that ask a model to work equally well in every training environment.

* IRMv1 (Arjovsky et al. 2019, invariant risk minimization): for one environment e with
  risk R_e(w · f) of the logits scaled by a dummy classifier w = 1.0,

      P_e = (dR_e / dw |_{w=1})^2,

  whose unbiased estimate from two disjoint halves a and b of the batch is
  (dR_a / dw)(dR_b / dw). The training cost is sum_e R_e + lambda sum_e P_e. The gradient
  dR_e/dw is taken with the graph kept, so P_e can itself be differentiated (double backward).
* V-REx (Krueger et al. 2021, risk extrapolation): the variance of the environment risks,

      P = (1/m) sum_e (R_e - mean_e R_e)^2,

  added to the mean (or sum) of the risks with a weight beta.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor, enable_grad, grad
from lamina.functional.loss import categorical_cross_entropy
from lamina.functional.reduce import mean
from lamina.functional.shape import stack

__all__ = ["irm_penalty", "vrex_penalty"]


def _risk_gradient_at_unit_scale(logits: Tensor, labels) -> Tensor:
    """dR/dw at w = 1 for R = cross-entropy(w · logits, labels), kept on the graph."""
    scale = Tensor(backend.xp.ones((), dtype=logits.dtype), requires_grad=True, dtype=logits.dtype)
    with enable_grad():
        risk = categorical_cross_entropy(logits * scale, labels, from_logits=True)
        (slope,) = grad(risk, [scale], create_graph=True)
    return slope


def irm_penalty(logits, labels, unbiased: bool = False) -> Tensor:
    """IRMv1 penalty of one environment: (dR/dw at w = 1)^2 with R the mean softmax
    cross-entropy of ``logits`` (N, classes) against integer ``labels`` (N,).

    ``unbiased=True`` uses the two-half estimate (dR_a/dw)(dR_b/dw) over the first and
    second halves of the batch (even N of at least 2). Differentiable twice."""
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    labels = backend.xp.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"irm_penalty: expected logits (N, classes) and labels (N,), got {logits.shape} "
                         f"and {labels.shape}")
    n = logits.shape[0]
    if not unbiased:
        slope = _risk_gradient_at_unit_scale(logits, labels)
        return slope * slope
    if n < 2 or n % 2:
        raise ValueError(f"irm_penalty: unbiased=True splits the batch in two halves; needs an even N >= 2, "
                         f"got N={n}")
    half = n // 2
    return _risk_gradient_at_unit_scale(logits[:half], labels[:half]) * \
        _risk_gradient_at_unit_scale(logits[half:], labels[half:])


def vrex_penalty(risks) -> Tensor:
    """V-REx penalty: the (population, 1/m) variance of the m >= 2 environment ``risks``
    (a sequence of scalar tensors or a (m,) tensor)."""
    values = risks if isinstance(risks, Tensor) else stack([r if isinstance(r, Tensor) else Tensor(r)
                                                            for r in risks])
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"vrex_penalty: needs the risks of at least 2 environments as m scalars, got shape "
                         f"{values.shape}")
    centred = values - mean(values)
    return mean(centred * centred)
