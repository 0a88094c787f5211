"""Two pieces DINOv2 (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without
Supervision") adds to DINO and iBOT (:mod:`lamina.models.dino`, :mod:`lamina.models.ibot`);
the training step is :class:`lamina.train.DINOv2Trainer`.

Sinkhorn-Knopp centring (from SwAV) replaces the teacher's EMA centre. The teacher's B x K
scores become Q = exp(scores / tau_t), then a few rounds (3 in DINOv2) alternately rescale
Q so that every prototype k gets the same total mass 1 / K and every sample the same 1 / B
(an entropic optimal-transport plan between the uniform marginals); the targets are B Q:
each sample's row sums to 1, each prototype's column to about B / K.

KoLeo (Sablayrolles et al. 2019, "Spreading vectors for similarity search"), the
Kozachenko-Leonenko differential-entropy estimator, spreads a batch's features:

    L_koleo = -1/n sum_i log(rho_i + eps),  rho_i = min_{j != i} ||x_i - x_j||
    over the L2-normalised features x_i.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["koleo_loss", "sinkhorn_knopp_centering"]

KOLEO_EPS = 1e-8


def sinkhorn_knopp_centering(teacher_output, teacher_temp: float, iterations: int = 3):
    """The teacher's targets (B, K) by Sinkhorn-Knopp (module docstring), as a constant array
    of the scores' dtype. Q starts as exp(scores / tau_t) / sum; each of ``iterations`` rounds
    divides every prototype's column by K times its sum, then every sample's row by B times its
    sum; the result is B Q, whose rows sum to 1. The rounds run on log Q (float64), so that
    sharp temperatures cannot underflow a whole column to 0."""
    scores = teacher_output.data if isinstance(teacher_output, Tensor) else backend.xp.asarray(teacher_output)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ShapeError(f"sinkhorn_knopp_centering: teacher outputs of shape {tuple(scores.shape)}; expected "
                         "(batch, K)")
    if not teacher_temp > 0:
        raise ValueError(f"sinkhorn_knopp_centering: teacher_temp must be > 0, got {teacher_temp!r}")
    iterations = positive_int(iterations, "sinkhorn_knopp_centering: iterations")
    batch, prototypes = scores.shape
    xp = backend.xp
    log_q = scores.astype(xp.float64) / teacher_temp        # the rounds on log Q: no underflow
    log_q = log_q - _logsumexp(log_q, None)
    for _ in range(iterations):
        log_q = log_q - _logsumexp(log_q, 0) - xp.log(prototypes)
        log_q = log_q - _logsumexp(log_q, 1) - xp.log(batch)
    return xp.exp(log_q + xp.log(batch)).astype(scores.dtype)


def _logsumexp(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return top + backend.xp.log(backend.xp.exp(a - top).sum(axis=axis, keepdims=True))


def koleo_loss(features, eps: float = KOLEO_EPS) -> Tensor:
    """L_koleo of the module docstring for ``features`` (n, d), n >= 2: each row normalised
    (x / max(||x||, eps)), its nearest other row found (by the largest dot product; the
    choice is a constant of the graph), rho_i = ||x_i - x_j + eps|| as DINOv2's pairwise
    distance, and -mean log(rho + eps). Gradients reach both x_i and its neighbour."""
    x = as_tensor(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ShapeError(f"koleo_loss: features of shape {x.shape}; expected (n, d) with n >= 2 (every row needs a "
                         "nearest neighbour)")
    unit = F.normalize(x, axis=-1, eps=eps)
    dots = unit.data @ unit.data.T
    xp = backend.xp
    dots[xp.arange(x.shape[0]), xp.arange(x.shape[0])] = -xp.inf
    nearest = dots.argmax(axis=1)
    rho = F.pairwise_distance(unit, F.getitem(unit, nearest), eps=eps)
    return F.neg(F.mean(F.log(F.add(rho, eps))))
