"""Distillation beyond the logits: the student also learns from what the teacher computes
on the way, its intermediate features, or from how the teacher relates the samples of a
batch to one another.

Each loss takes the student's tensor (it gets the gradient) and the teacher's for the same
inputs (a tensor or an array, used as a constant: no gradient reaches the teacher). Images
are NHWC; a feature map (m, h, w, c) is flattened to (m, h w c) by the relational losses.

* :func:`hint_loss`, FitNets (Romero et al. 2015): mean squared error between a regressor
  (an adapter such as a 1x1 convolution) of the student's hint layer and the teacher's guided layer.
* :func:`attention_transfer_loss` (Zagoruyko and Komodakis 2017): distance between the
  spatial attention maps of :func:`attention_map`.
* :func:`rkd_distance_loss`, :func:`rkd_angle_loss`, :func:`rkd_loss`, relational KD (Park
  et al. 2019): the pairwise distances and the angles of triples of embeddings.
* :func:`pkt_loss`, probabilistic knowledge transfer (Passalis and Tefas 2018).
* :func:`similarity_preserving_loss` (Tung and Mori 2019): the batch's Gram matrices.
* :func:`nst_loss`, neuron selectivity transfer (Huang and Wang 2017): MMD with a
  polynomial kernel between the two sides' channels.
* :func:`crd_loss`, contrastive representation distillation (Tian et al. 2020) in its
  in-batch form.
* :func:`dkd_loss`, decoupled KD (Zhao et al. 2022), with :func:`dkd_terms` its two parts.

All are composites of existing ops, so second derivatives come with them.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax
from lamina.functional.indexing import masked_fill
from lamina.functional.loss import _check_reduction
from lamina.functional.losses_distill import _label_rows
from lamina.functional.losses_more import _check_number
from lamina.functional.reduce_more import logsumexp
from lamina.functional.torch_losses import smooth_l1_loss

__all__ = ["attention_map", "attention_transfer_loss", "crd_loss", "dkd_loss", "dkd_terms", "hint_loss",
           "nst_loss", "pkt_loss", "rkd_angle_loss", "rkd_distance_loss", "rkd_loss", "similarity_preserving_loss"]


# -- inputs ---------------------------------------------------------------------------------
def _student(x, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"{fn}: the student's features must have a batch axis and at least one more, got shape "
                         f"{x.shape}")
    return x


def _teacher(x, student: Tensor, fn: str) -> Tensor:
    """The teacher's values as a constant of the student's dtype, with the same batch size."""
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if data.ndim < 2 or data.shape[0] != student.shape[0]:
        raise ShapeError(f"{fn}: the teacher's features of shape {data.shape} must hold the student's "
                         f"{student.shape[0]} samples on their first axis (student shape {student.shape})")
    return Tensor(data.astype(student.dtype, copy=False), dtype=student.dtype)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _eye(n: int, like: Tensor):
    return backend.xp.eye(n, dtype=like.dtype)


# -- FitNets ----------------------------------------------------------------------------------
def hint_loss(student_features, teacher_features, regressor=None) -> Tensor:
    """FitNets' hint loss: L = mean((r(s) - t)^2) over every element, s the student's hint
    layer, t the teacher's guided layer and r the ``regressor`` (a callable, e.g. a 1x1
    :class:`lamina.nn.Conv2D` or a :class:`lamina.nn.Dense`, trained with the student; None
    for the identity). The regressed features must have the teacher's shape.
    """
    fn = "hint_loss"
    student = _student(student_features, fn)
    teacher = _teacher(teacher_features, student, fn)
    regressed = student if regressor is None else regressor(student)
    if tuple(regressed.shape) != tuple(teacher.shape):
        hint = ("give a regressor (a 1x1 Conv2D or Dense adapter) mapping the student's features onto the "
                "teacher's" if regressor is None else "the regressor must map them onto the teacher's shape")
        raise ShapeError(f"{fn}: the student's features have shape {tuple(regressed.shape)} but the teacher's "
                         f"have shape {tuple(teacher.shape)}; {hint}")
    return ((regressed - teacher) ** 2).mean()


# -- attention transfer -----------------------------------------------------------------------
def attention_map(features, p: float = 2.0, eps: float = 1e-12) -> Tensor:
    """The spatial attention map of NHWC ``features`` (m, h, w, c): Q = mean_c |A_c|^p,
    flattened to (m, h w) and divided by its L2 norm (at least ``eps``), one row per sample."""
    fn = "attention_map"
    x = features if isinstance(features, Tensor) else Tensor(features)
    if x.ndim != 4:
        raise ShapeError(f"{fn}: expected NHWC feature maps (batch, height, width, channels), got shape {x.shape}")
    _check_number(p, "p", fn, 0.0, strict=True)
    q = (x.abs() ** p).mean(axis=-1).reshape(x.shape[0], -1)
    norm = (q * q).sum(axis=-1, keepdims=True).sqrt()
    return q / norm.clip(low=eps)


def attention_transfer_loss(student_features, teacher_features, p: float = 2.0, beta: float = 1000.0) -> Tensor:
    """Attention transfer: L = (beta / 2) mean((Q_s - Q_t)^2), Q the :func:`attention_map`
    of each side's NHWC features (the mean runs over the batch and the h w positions, as in
    the authors' code; beta = 1000 there). The channel counts may differ; the spatial sizes
    must match."""
    fn = "attention_transfer_loss"
    student = _student(student_features, fn)
    teacher = _teacher(teacher_features, student, fn)
    _check_number(beta, "beta", fn, 0.0, strict=False)
    if student.ndim != 4 or teacher.ndim != 4 or student.shape[1:3] != teacher.shape[1:3]:
        raise ShapeError(f"{fn}: expects NHWC feature maps of one spatial size (the channels may differ); got the "
                         f"student's {tuple(student.shape)} and the teacher's {tuple(teacher.shape)}")
    difference = attention_map(student, p) - attention_map(teacher, p)
    return (difference * difference).mean() * (beta / 2.0)


# -- relational KD ----------------------------------------------------------------------------
def _pairwise_distances(e: Tensor) -> Tensor:
    """||e_i - e_j||_2 for the rows of e, 0 on the diagonal (its root taken of 1 there, so
    the gradient stays finite)."""
    difference = e.reshape(e.shape[0], 1, -1) - e.reshape(1, e.shape[0], -1)
    eye = _eye(e.shape[0], e)
    return ((difference * difference).sum(axis=-1) + eye).sqrt() * (1.0 - eye)


def _mean_normalised(d: Tensor) -> Tensor:
    """Distances divided by their mean over the pairs i != j (the scale of the embedding)."""
    n = d.shape[0]
    if n < 2:
        raise ShapeError(f"rkd_distance_loss: needs at least 2 samples in the batch, got {n}")
    return d / (d.sum() / float(n * (n - 1)))


def rkd_distance_loss(student_embeddings, teacher_embeddings) -> Tensor:
    """RKD distance-wise: L = mean_{i,j} huber(psi_s(i, j) - psi_t(i, j)), psi(i, j) =
    ||e_i - e_j|| / mu with mu the mean distance over the pairs i != j, huber the smooth L1
    (delta 1), the mean over all m^2 pairs (diagonal included, as in the authors' code).
    Features of any shape are flattened per sample."""
    fn = "rkd_distance_loss"
    student = _flat(_student(student_embeddings, fn))
    teacher = _flat(_teacher(teacher_embeddings, student, fn))
    return smooth_l1_loss(_mean_normalised(_pairwise_distances(student)),
                          _mean_normalised(_pairwise_distances(teacher)))


def _angles(e: Tensor) -> Tensor:
    """cos of the angle at e_j between e_i and e_k, <u_ji, u_jk> with u_ji the unit vector
    from e_j to e_i (0 where i = j): shape (m, m, m) indexed (j, i, k)."""
    m = e.shape[0]
    difference = e.reshape(1, m, -1) - e.reshape(m, 1, -1)      # [j, i] = e_i - e_j
    eye = _eye(m, e)[..., None]
    units = difference / ((difference * difference).sum(axis=-1, keepdims=True) + eye).sqrt()
    return units @ units.swapaxes(1, 2)


def rkd_angle_loss(student_embeddings, teacher_embeddings) -> Tensor:
    """RKD angle-wise: L = mean_{j,i,k} huber(cos angle_s(i, j, k) - cos angle_t(i, j, k)),
    the angle at e_j of the triangle (e_i, e_j, e_k), huber the smooth L1 (delta 1), the mean
    over all m^3 triples. Unchanged when either embedding is rotated, scaled or shifted."""
    fn = "rkd_angle_loss"
    student = _flat(_student(student_embeddings, fn))
    teacher = _flat(_teacher(teacher_embeddings, student, fn))
    return smooth_l1_loss(_angles(student), _angles(teacher))


def rkd_loss(student_embeddings, teacher_embeddings, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """Relational KD: distance_weight * :func:`rkd_distance_loss` + angle_weight *
    :func:`rkd_angle_loss` (25 and 50 as in the published code)."""
    fn = "rkd_loss"
    distance_weight = _check_number(distance_weight, "distance_weight", fn, 0.0, strict=False)
    angle_weight = _check_number(angle_weight, "angle_weight", fn, 0.0, strict=False)
    return (rkd_distance_loss(student_embeddings, teacher_embeddings) * distance_weight
            + rkd_angle_loss(student_embeddings, teacher_embeddings) * angle_weight)


# -- PKT and similarity-preserving ------------------------------------------------------------
def _conditional_probabilities(e: Tensor, eps: float) -> Tensor:
    """P(j | i) = K(i, j) / sum_j K(i, j), K(i, j) = (1 + cos(e_i, e_j)) / 2."""
    units = e / ((e * e).sum(axis=-1, keepdims=True).sqrt() + eps)
    kernel = (units @ units.T + 1.0) / 2.0
    return kernel / kernel.sum(axis=-1, keepdims=True)


def pkt_loss(student_embeddings, teacher_embeddings, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer: L = mean_{i,j} p_ij log((p_ij + eps) / (q_ij + eps)),
    p and q the teacher's and the student's conditional probabilities P(j | i) from the
    cosine-similarity kernel (1 + cos) / 2, the mean over all m^2 entries (the authors' code;
    a KL divergence per row, up to the constant m and eps)."""
    fn = "pkt_loss"
    _check_number(eps, "eps", fn, 0.0, strict=True)
    student = _flat(_student(student_embeddings, fn))
    teacher = _flat(_teacher(teacher_embeddings, student, fn))
    p = _conditional_probabilities(teacher, eps)
    q = _conditional_probabilities(student, eps)
    return (p * ((p + eps).log() - (q + eps).log())).mean()


def _row_normalised_gram(e: Tensor) -> Tensor:
    gram = e @ e.T
    return gram / (gram * gram).sum(axis=-1, keepdims=True).sqrt().clip(low=1e-12)


def similarity_preserving_loss(student_features, teacher_features) -> Tensor:
    """Similarity-preserving KD: L = ||G_s - G_t||_F^2 / m^2, G = the batch's Gram matrix
    f f^T of the flattened features with each row divided by its L2 norm. The two sides may
    have any, different, feature shapes."""
    fn = "similarity_preserving_loss"
    student = _flat(_student(student_features, fn))
    teacher = _flat(_teacher(teacher_features, student, fn))
    difference = _row_normalised_gram(student) - _row_normalised_gram(teacher)
    return (difference * difference).sum() / float(student.shape[0] ** 2)


# -- neuron selectivity transfer (MMD) --------------------------------------------------------
def _channel_distributions(x: Tensor) -> Tensor:
    """(m, c, h w): each channel's map over the positions, divided by its L2 norm."""
    maps = x.reshape(x.shape[0], -1, x.shape[-1]).swapaxes(1, 2)
    return maps / (maps * maps).sum(axis=-1, keepdims=True).sqrt().clip(low=1e-12)


def nst_loss(student_features, teacher_features) -> Tensor:
    """Neuron selectivity transfer (Huang and Wang 2017): the squared MMD between the
    student's and the teacher's channels, each channel's L2-normalised map over the h w
    positions a sample of the distribution, with the polynomial kernel k(a, b) = (a . b)^2:

        L = mean k(s_i, s_j) + mean k(t_i, t_j) - 2 mean k(s_i, t_j),

    each mean over the batch and the pairs of channels. NHWC maps of one spatial size; the
    channel counts may differ."""
    fn = "nst_loss"
    student = _student(student_features, fn)
    teacher = _teacher(teacher_features, student, fn)
    if student.ndim != 4 or teacher.ndim != 4 or student.shape[1:3] != teacher.shape[1:3]:
        raise ShapeError(f"{fn}: expects NHWC feature maps of one spatial size (the channels may differ); got the "
                         f"student's {tuple(student.shape)} and the teacher's {tuple(teacher.shape)}")
    s, t = _channel_distributions(student), _channel_distributions(teacher)

    def kernel_mean(a: Tensor, b: Tensor) -> Tensor:
        return ((a @ b.swapaxes(1, 2)) ** 2).mean()
    return kernel_mean(s, s) + kernel_mean(t, t) - kernel_mean(s, t) * 2.0


# -- CRD --------------------------------------------------------------------------------------
def crd_loss(student_embeddings, teacher_embeddings, temperature: float = 0.07) -> Tensor:
    """Contrastive representation distillation, in-batch: with z the L2-normalised
    embeddings and S = z_s z_t^T / tau, L = CE(S, i) + CE(S^T, i), the mean cross-entropy
    of picking each sample's own partner among the batch, student-anchored and
    teacher-anchored (the two terms of Tian et al.).

    The paper draws its negatives from a memory bank of the whole training set with an NCE
    estimate; here the other samples of the batch are the negatives (InfoNCE), which needs
    no bank and approaches it as batches grow. Both embeddings usually come out of trained
    linear heads on the two models' features, so the teacher's side is NOT made a constant
    here: a gradient reaches a teacher-side head (the teacher's features themselves should
    be given without a graph)."""
    fn = "crd_loss"
    tau = _check_number(temperature, "temperature", fn, 0.0, strict=True)
    student = _flat(_student(student_embeddings, fn))
    teacher = teacher_embeddings if isinstance(teacher_embeddings, Tensor) else _teacher(teacher_embeddings,
                                                                                        student, fn)
    teacher = _flat(teacher)
    if teacher.shape != student.shape:
        raise ShapeError(f"{fn}: the embeddings must have one shape (linear heads map both sides to one size); "
                         f"got the student's {tuple(student.shape)} and the teacher's {tuple(teacher.shape)}")

    def unit(e: Tensor) -> Tensor:
        return e / (e * e).sum(axis=-1, keepdims=True).sqrt().clip(low=1e-12)

    scores = (unit(student) @ unit(teacher).T) / tau
    eye = _eye(student.shape[0], student)
    student_anchored = -(log_softmax(scores, axis=-1) * eye).sum(axis=-1).mean()
    teacher_anchored = -(log_softmax(scores, axis=0) * eye).sum(axis=0).mean()
    return student_anchored + teacher_anchored


# -- decoupled KD -----------------------------------------------------------------------------
def dkd_terms(student_logits, teacher_logits, labels, temperature: float = 4.0) -> tuple[Tensor, Tensor, Tensor]:
    """Decoupled KD's parts per sample, (TCKD, NCKD, p_t): with p and q the teacher's and the
    student's softmax(logits / T),

        TCKD = T^2 KL(b_p || b_q),  b = (p_target, 1 - p_target), the binary target/non-target split;
        NCKD = T^2 KL(p_hat || q_hat),  p_hat = p over the non-target classes, renormalised;

    and p_t the teacher's target probability (a constant). They decompose classic KD
    exactly: T^2 KL(p || q) = TCKD + (1 - p_t) NCKD. ``labels``: integer classes of shape
    logits.shape[:-1] or one-hot rows. The parts are computed from log-softmaxes (the
    non-target sums as log-sum-exps), so no probability is rounded to 0 before its log."""
    fn = "dkd_terms"
    t = _check_number(temperature, "temperature", fn, 0.0, strict=True)
    student = student_logits if isinstance(student_logits, Tensor) else Tensor(student_logits)
    if student.ndim < 1 or student.shape[-1] < 2:
        raise ShapeError(f"{fn}: logits need a class axis (the last) of at least 2 classes, got shape {student.shape}")
    teacher_data = teacher_logits.data if isinstance(teacher_logits, Tensor) else backend.xp.asarray(teacher_logits)
    if teacher_data.shape != student.shape:
        raise ShapeError(f"{fn}: student_logits has shape {student.shape} but teacher_logits has shape "
                         f"{teacher_data.shape}; they must match")
    teacher = Tensor(teacher_data.astype(student.dtype, copy=False), dtype=student.dtype)
    target = _label_rows(labels, student, fn)
    if not bool(backend.xp.all((target == 0) | (target == 1))) or not bool(backend.xp.all(target.sum(-1) == 1)):
        raise ValueError(f"{fn}: labels must be integer classes or one-hot rows (decoupled KD needs one target "
                         "class per sample)")
    is_target = target.astype(bool)

    def split(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_all = log_softmax(logits / t, axis=-1)
        log_target = (log_all * target).sum(axis=-1)
        log_rest = logsumexp(masked_fill(log_all, is_target, float("-inf")), axis=-1)
        return log_all, log_target, log_rest

    s_all, s_target, s_rest = split(student)
    p_all, p_target, p_rest = split(teacher)
    p_t = p_target.exp()
    tckd = p_t * (p_target - s_target) + p_rest.exp() * (p_rest - s_rest)
    p_hat_log = p_all - p_rest.reshape(*p_rest.shape, 1)
    q_hat_log = s_all - s_rest.reshape(*s_rest.shape, 1)
    nckd = (p_hat_log.exp() * (p_hat_log - q_hat_log) * (1.0 - target)).sum(axis=-1)
    return tckd * (t * t), nckd * (t * t), p_t


def dkd_loss(student_logits, teacher_logits, labels, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0, reduction: str = "mean") -> Tensor:
    """Decoupled knowledge distillation: L = alpha TCKD + beta NCKD per sample (see
    :func:`dkd_terms`), averaged over the batch with ``reduction='mean'`` (``'sum'``,
    ``'none'``). Defaults are the paper's CIFAR settings (alpha 1, beta 8, T 4); classic KD
    is the special case of a per-sample beta = alpha (1 - p_t). The cross-entropy with the
    labels, and the paper's warm-up of the KD weight, are the training loop's."""
    fn = "dkd_loss"
    _check_reduction(reduction, fn)
    alpha = _check_number(alpha, "alpha", fn, 0.0, strict=False)
    beta = _check_number(beta, "beta", fn, 0.0, strict=False)
    tckd, nckd, _ = dkd_terms(student_logits, teacher_logits, labels, temperature)
    losses = tckd * alpha + nckd * beta
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()
