"""Self-supervised losses with a target branch that gets no gradient: MoCo v2 and v3, BYOL,
SimSiam, and SwAV's swapped prediction with Sinkhorn-Knopp assignments.

Each method compares an online branch (trained) with a target branch: a momentum copy of
the network (MoCo's keys, BYOL's target) or the same network with its output detached
(SimSiam), or equal-partition cluster assignments (SwAV's codes). The target side is
always cut from the graph here, so callers may pass it with or without a graph and no
gradient reaches it. Shapes: one row per sample, (N, D).
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax
from lamina.functional.losses_ssl import _positive, _rows, _two_views, info_nce_loss
from lamina.functional.optimal_transport_entropic import sinkhorn_balance
from lamina.functional.shape import concat, getitem
from lamina.functional.similarity import normalize

__all__ = ["byol_loss", "moco_logits", "moco_v2_loss", "moco_v3_loss", "simsiam_loss", "sinkhorn_knopp",
           "swav_loss"]


def _constant(x) -> Tensor:
    """``x`` as a tensor outside any graph (the stop-gradient sg(x)); a float array keeps its dtype."""
    if isinstance(x, Tensor):
        return x.detach()
    dtype = getattr(x, "dtype", None)
    return Tensor(x, dtype=dtype if dtype is not None and dtype.kind == "f" else None)


def _queue(queue, d: int, fn: str) -> Tensor:
    queue = _constant(queue)
    if queue.ndim != 2 or queue.shape[1] != d:
        raise ShapeError(f"{fn}: queue must hold K keys of shape (K, {d}) like the queries, got shape {queue.shape}")
    return queue


def moco_logits(q, k, queue, temperature: float = 0.2) -> tuple[Tensor, object]:
    """MoCo's logits and labels (He et al. 2020, Algorithm 1), for (N, D) queries ``q`` and
    keys ``k`` and the (K, D) ``queue`` of earlier keys; q and k are scaled to unit length
    (the queue is taken as it is: :class:`lamina.models.MoCoQueue` stores unit keys):

        l_pos = (q_i . k_i)            (N, 1)
        l_neg = q_i . queue_j          (N, K)
        logits = [l_pos, l_neg] / tau  (N, 1 + K), labels all 0 (the positive is column 0)

    The keys and the queue are constants (no gradient)."""
    fn = "moco_logits"
    tau = _positive(temperature, "temperature", fn)
    q, k = _two_views(q, _constant(k), fn, 1)
    queue = _queue(queue, q.shape[1], fn)
    q, k = normalize(q, axis=-1), normalize(k, axis=-1)
    positive = (q * k).sum(axis=-1, keepdims=True)
    logits = concat([positive, q @ queue.T], axis=1) / tau
    return logits, backend.xp.zeros(q.shape[0], dtype=backend.xp.intp)


def moco_v2_loss(q, k, queue, temperature: float = 0.2) -> Tensor:
    """MoCo v2's InfoNCE (Chen et al. 2020): cross entropy of :func:`moco_logits` with label
    0, the mean over the N queries; tau = 0.2 as in the paper. No gradient reaches ``k``
    (the momentum encoder's keys) or the queue."""
    fn = "moco_v2_loss"
    q, k = _two_views(q, _constant(k), fn, 1)
    queue = _queue(queue, q.shape[1], fn)
    return info_nce_loss(q, k, queue, temperature=_positive(temperature, "temperature", fn))


def _in_batch_contrast(q: Tensor, k: Tensor, tau: float) -> Tensor:
    """MoCo v3's ctr(q, k): cross entropy of (q_i . k_j / tau)_j with label i, times 2 tau."""
    q, k = normalize(q, axis=-1), normalize(k, axis=-1)
    n = q.shape[0]
    xp = backend.xp
    picked = getitem(log_softmax((q @ k.T) / tau, axis=-1), (xp.arange(n), xp.arange(n)))
    return -picked.mean() * (2.0 * tau)


def moco_v3_loss(q1, q2, k1, k2, temperature: float = 0.2) -> Tensor:
    """MoCo v3's symmetrised contrastive loss (Chen, Xie and He 2021), in-batch negatives:

        L = ctr(q1, k2) + ctr(q2, k1),
        ctr(q, k) = 2 tau * mean_i -log softmax_j(q_i . k_j / tau)[i]

    q1, q2: predictor outputs of the two views (online, trained); k1, k2: the momentum
    encoder's outputs of the same views (constants). Vectors are scaled to unit length; the
    2 tau factor is the reference's. tau = 0.2 (the paper's ViT setting; the reference's
    default is 1.0)."""
    fn = "moco_v3_loss"
    tau = _positive(temperature, "temperature", fn)
    q1, q2 = _two_views(q1, q2, fn, 1)
    k1, k2 = _two_views(_constant(k1), _constant(k2), fn, 1)
    if k1.shape != q1.shape:
        raise ShapeError(f"{fn}: queries have shape {q1.shape} but keys have shape {k1.shape}; expected one shape")
    return _in_batch_contrast(q1, k2, tau) + _in_batch_contrast(q2, k1, tau)


def _cosine(p: Tensor, z: Tensor) -> Tensor:
    return (normalize(p, axis=-1) * normalize(z, axis=-1)).sum(axis=-1)


def _predictions_and_targets(p1, p2, z1, z2, fn: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    p1, p2 = _two_views(p1, p2, fn, 1)
    z1, z2 = _two_views(_constant(z1), _constant(z2), fn, 1)
    if p1.shape != z1.shape:
        raise ShapeError(f"{fn}: predictions have shape {p1.shape} but targets have shape {z1.shape}; the "
                         "predictor must map back to the projection's size")
    return p1, p2, z1, z2


def byol_loss(p1, p2, z1, z2) -> Tensor:
    """BYOL's symmetrised regression loss (Grill et al. 2020):

        L = mean_i [ (2 - 2 cos(p1_i, sg(z2_i))) + (2 - 2 cos(p2_i, sg(z1_i))) ]

    p1, p2: the online predictor's outputs of views 1 and 2; z1, z2: the target network's
    projections of views 1 and 2 (constants). 2 - 2 cos is the squared distance of the unit
    vectors; the two terms are summed, as the paper's L + L~."""
    p1, p2, z1, z2 = _predictions_and_targets(p1, p2, z1, z2, "byol_loss")
    return (4.0 - 2.0 * _cosine(p1, z2) - 2.0 * _cosine(p2, z1)).mean()


def simsiam_loss(p1, p2, z1, z2) -> Tensor:
    """SimSiam's symmetrised negative cosine (Chen and He 2021):

        L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,  D(p, z) = -mean_i cos(p_i, z_i)

    p: the predictor's outputs, z: the projections of the same network (detached here: the
    stop-gradient is what keeps SimSiam from collapsing). The minimum is -1."""
    p1, p2, z1, z2 = _predictions_and_targets(p1, p2, z1, z2, "simsiam_loss")
    return -(_cosine(p1, z2).mean() + _cosine(p2, z1).mean()) * 0.5


def sinkhorn_knopp(scores, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's equal-partition soft assignments (Caron et al. 2020; the reference's
    ``distributed_sinkhorn`` on one process) of B samples to K prototypes, from (B, K)
    ``scores`` (cosine similarities of the samples and the prototypes):

        Q = exp(scores / epsilon)^T / sum          (K, B), total mass 1
        repeat ``iterations`` times:
            each row (prototype) scaled to mass 1 / K
            each column (sample) scaled to mass 1 / B
        return (B Q)^T                             (B, K): each row sums to 1

    Returned as a constant tensor (the codes get no gradient); the exponent is shifted by
    its maximum first, which the first normalisation cancels."""
    fn = "sinkhorn_knopp"
    eps = _positive(epsilon, "epsilon", fn)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"{fn}: iterations must be an int >= 1, got {iterations!r}")
    scores = _rows(_constant(scores), "scores", fn)
    xp = backend.xp
    logits = scores.data.T / eps
    q = xp.exp(logits - logits.max())
    q = q / q.sum()
    n_prototypes, batch = q.shape
    q = sinkhorn_balance(Tensor(q, dtype=q.dtype), 1.0 / n_prototypes, 1.0 / batch, int(iterations)).data
    return Tensor((q * batch).T, dtype=q.dtype)


def swav_loss(scores, crops_for_assign=(0, 1), temperature: float = 0.1, epsilon: float = 0.05,
              iterations: int = 3, queue_scores=None) -> Tensor:
    """SwAV's swapped prediction loss (Caron et al. 2020) over V crops of one batch of B
    images, ``scores`` a list of V (B, K) prototype scores (2 large crops then any small
    ones; multi-crop). For each crop a in ``crops_for_assign`` the codes q_a =
    :func:`sinkhorn_knopp` of its (detached) scores predict every other crop v:

        L = 1/|A| sum_a 1/(V - 1) sum_{v != a} mean_i -sum_k q_a[i, k] log softmax(s_v[i] / tau)_k

    ``queue_scores``: None, or one (M, K) array per assigned crop, the scores of earlier
    batches' features (SwAV's queue, for small batches): they join the Sinkhorn problem
    before the batch and their codes are dropped."""
    fn = "swav_loss"
    tau = _positive(temperature, "temperature", fn)
    if not isinstance(scores, (list, tuple)) or len(scores) < 2:
        raise ValueError(f"{fn}: scores must be a list of at least 2 crops' (B, K) scores, got {type(scores).__name__}"
                         f"{'' if not isinstance(scores, (list, tuple)) else f' of {len(scores)}'}")
    scores = [_rows(s, f"scores[{v}]", fn) for v, s in enumerate(scores)]
    if any(s.shape != scores[0].shape for s in scores):
        raise ShapeError(f"{fn}: every crop's scores must have one shape (B, K), got {[s.shape for s in scores]}")
    assign = list(crops_for_assign)
    if not assign or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or not 0 <= a < len(scores)
                         for a in assign):
        raise ValueError(f"{fn}: crops_for_assign must be crop indices in [0, {len(scores)}), got {crops_for_assign!r}")
    if queue_scores is not None and len(queue_scores) != len(assign):
        raise ValueError(f"{fn}: queue_scores must give one (M, K) array per assigned crop ({len(assign)}), got "
                         f"{len(queue_scores)}")
    batch = scores[0].shape[0]
    log_probabilities = [log_softmax(s / tau, axis=-1) for s in scores]
    total = None
    for i, a in enumerate(assign):
        own = scores[a].detach()
        if queue_scores is not None:
            own = concat([_rows(_constant(queue_scores[i]), f"queue_scores[{i}]", fn), own], axis=0)
        codes = getitem(sinkhorn_knopp(own, epsilon, iterations), slice(-batch, None))
        terms = [-(codes * log_probabilities[v]).sum(axis=-1).mean() for v in range(len(scores)) if v != a]
        crop_loss = terms[0]
        for term in terms[1:]:
            crop_loss = crop_loss + term
        crop_loss = crop_loss / (len(scores) - 1)
        total = crop_loss if total is None else total + crop_loss
    return total / len(assign)
