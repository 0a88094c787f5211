"""Preference optimization of language models: the losses of DPO and its variants, SimPO, ORPO,
KTO and the Bradley-Terry reward model, as pure functions of sequence log-probabilities.

A policy's log-probability of a completion y given a prompt x, log pi(y | x), is the sum of
its tokens' log-probabilities (:func:`sequence_log_probs`). DPO (Rafailov et al. 2023) reads
beta log(pi(y | x) / pi_ref(y | x)) as an implicit reward, so that with the policy's and a
frozen reference model's log-probabilities of a chosen completion y_w and a rejected one y_l

    h = [log pi(y_w) - log pi(y_l)] - [log pi_ref(y_w) - log pi_ref(y_l)]

is the margin between the two rewards, over beta; each ``loss_type`` is a different loss of
h (or of the two log-ratios u_w = log pi(y_w) - log pi_ref(y_w), u_l likewise), with the
formulas of Hugging Face TRL's ``DPOTrainer``. Every loss here is a composite of primitive ops,
so second derivatives come for free; rewards returned alongside are constants (no graph).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import arithmetic as A
from lamina.functional import reduce as R
from lamina.functional.activation import relu, sigmoid
from lamina.functional.activation_extra import log_sigmoid
from lamina.functional.elementwise import exp, log, where
from lamina.functional.indexing import gather, sort
from lamina.functional.loss import _check_reduction, _reduce
from lamina.functional.math_more import expm1
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat, reshape

__all__ = ["DPO_LOSS_TYPES", "dpo_loss", "kto_loss", "orpo_loss", "reward_model_loss", "sequence_log_probs",
           "simpo_loss"]

DPO_LOSS_TYPES = ("sigmoid", "robust", "exo_pair", "hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "aot",
                  "aot_pair", "apo_zero", "apo_down", "discopop")
"""The ``loss_type`` values of :func:`dpo_loss`, TRL's names."""


# -- checks ------------------------------------------------------------------------------------
def _as_tensor(values, dtype=None) -> Tensor:
    if isinstance(values, Tensor):
        return values
    data = backend.xp.asarray(values)
    if dtype is not None or data.dtype.kind != "f":
        data = data.astype(dtype or backend.get_default_dtype())
    return Tensor._constant(data, data.dtype)


def _constant(values: Tensor) -> Tensor:
    return values.detach() if values.requires_grad else values


def _positive(value, name: str, fn: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf
    if not ok:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _in_range(value, name: str, fn: str, low: float, high: float, high_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value <= high
    if not ok or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{fn}: {name} must be a number in [{low:g}, {high:g}{bracket}, got {value!r}")
    return float(value)


def _same_shapes(fn: str, **named) -> list[Tensor]:
    """The named log-probabilities as tensors, all of the first one's shape (one value per sample)."""
    tensors = {name: _as_tensor(v) for name, v in named.items()}
    shapes = {name: t.shape for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ShapeError(f"{fn}: expected one value per pair, the same 1-D shape (batch,) for every input; got "
                         f"{listed}")
    return list(tensors.values())


def _check_loss_type(loss_type: str, fn: str) -> None:
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"{fn}: unknown loss_type {loss_type!r}; expected one of {', '.join(DPO_LOSS_TYPES)}")


# -- sequence log-probabilities ---------------------------------------------------------------
def sequence_log_probs(logits, labels, mask=None, average: bool = False, ignore_index: int = -100) -> Tensor:
    """log pi(y | x) of each row: the sum (``average=True``: the mean) of log softmax(z_t)[y_{t+1}]
    over the positions t + 1 that ``mask`` marks, for a causal language model's scores
    ``logits`` (N, T, V) of the ids ``labels`` (N, T): the scores at step t predict the token at
    t + 1, so the first token is never scored.

    ``mask`` (N, T), True for the completion's tokens (False for the prompt and padding); None
    scores the labels other than ``ignore_index`` (TRL's -100 for the prompt and padding).
    Returns (N,). One log-sum-exp and one gather on the scores as they are (no shifted copy, no
    full log-softmax); masked positions contribute exactly nothing, whatever their (finite) scores or ids.
    """
    fn = "sequence_log_probs"
    scores = _as_tensor(logits)
    ids = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
    if scores.ndim != 3 or ids.shape != scores.shape[:2]:
        raise ShapeError(f"{fn}: expected logits (batch, time, vocab) and labels (batch, time) of the same batch "
                         f"and time; got logits {scores.shape} and labels {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be integer token ids, got dtype {ids.dtype}")
    if mask is None:
        keep = ids != ignore_index
    else:
        keep = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask)
        if keep.shape != ids.shape:
            raise ShapeError(f"{fn}: mask has shape {keep.shape} but labels have {ids.shape}; they must match")
        keep = keep.astype(bool)
    # position t scores the next token: targets and mask move one step left, the last step scores nothing
    scored = np.zeros_like(keep)
    scored[:, :-1] = keep[:, 1:]
    targets = np.zeros(ids.shape, dtype=np.int64)
    targets[:, :-1] = np.where(scored[:, :-1], ids[:, 1:], 0)
    vocab = scores.shape[-1]
    if scored.any() and (targets[scored].min() < 0 or targets[scored].max() >= vocab):
        raise ValueError(f"{fn}: scored labels must lie in [0, {vocab}), found values from "
                         f"{targets[scored].min()} to {targets[scored].max()}")
    picked = gather(scores, -1, targets[..., None])
    token_log_probs = A.sub(picked, logsumexp(scores, axis=-1, keepdims=True))[..., 0]
    zero = backend.xp.zeros((), dtype=scores.dtype)
    total = R.sum(where(backend.xp.asarray(scored), token_log_probs, zero), axis=-1)
    if not average:
        return total
    counts = scored.sum(axis=-1)
    if (counts == 0).any():
        raise ValueError(f"{fn}: average=True needs at least one scored token per row; rows "
                         f"{np.flatnonzero(counts == 0).tolist()} have none")
    return total / backend.xp.asarray(counts, dtype=scores.dtype)


# -- DPO and its variants -----------------------------------------------------------------------
def _smoothed_sigmoid_loss(z: Tensor, label_smoothing: float) -> Tensor:
    """-(1 - eps) log sigma(z) - eps log sigma(-z): a logistic loss with labels smoothed by eps."""
    loss = -log_sigmoid(z) * (1.0 - label_smoothing)
    if label_smoothing:
        loss = loss - log_sigmoid(-z) * label_smoothing
    return loss


def _dpo_losses(loss_type: str, logps: tuple[Tensor, Tensor, Tensor, Tensor], beta: float, label_smoothing: float,
                bco_delta, discopop_tau: float) -> Tensor:
    """Per-pair losses of the log-probabilities (policy chosen, policy rejected, reference chosen,
    reference rejected)."""
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = logps
    policy_ratio, ref_ratio = policy_chosen - policy_rejected, ref_chosen - ref_rejected
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    margin = policy_ratio - ref_ratio
    eps = label_smoothing
    if loss_type == "sigmoid":
        return _smoothed_sigmoid_loss(margin * beta, eps)
    if loss_type == "robust":
        z = margin * beta
        return (-log_sigmoid(z) * (1.0 - eps) + log_sigmoid(-z) * eps) / (1.0 - 2.0 * eps)
    if loss_type == "exo_pair":
        eps = eps or 1e-3
        z = margin * beta
        return (sigmoid(z) * (log_sigmoid(z) - math.log(1.0 - eps))
                + sigmoid(-z) * (log_sigmoid(-z) - math.log(eps)))
    if loss_type == "hinge":
        return relu(1.0 - margin * beta)
    if loss_type == "ipo":
        return (margin - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "bco_pair":
        chosen, rejected = chosen_ratio * beta, rejected_ratio * beta
        if bco_delta is None:
            bco_delta = float(R.mean(concat([_constant(chosen), _constant(rejected)])).item())
        return -log_sigmoid(chosen - bco_delta) - log_sigmoid(-(rejected - bco_delta))
    if loss_type == "sppo_hard":
        return (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2
    if loss_type == "nca_pair":
        chosen, rejected = chosen_ratio * beta, rejected_ratio * beta
        return -log_sigmoid(chosen) - 0.5 * log_sigmoid(-chosen) - 0.5 * log_sigmoid(-rejected)
    if loss_type in ("aot", "aot_pair"):
        # optimal transport over the batch: each sorted policy quantity against the sorted reference one
        first, second = (policy_ratio, ref_ratio) if loss_type == "aot" else (chosen_ratio, rejected_ratio)
        delta = sort(first, axis=0)[0] - sort(second, axis=0)[0]
        return _smoothed_sigmoid_loss(delta * beta, eps)
    if loss_type == "apo_zero":
        return (1.0 - sigmoid(chosen_ratio * beta)) + sigmoid(rejected_ratio * beta)
    if loss_type == "apo_down":
        return sigmoid(chosen_ratio * beta) + (1.0 - sigmoid((chosen_ratio - rejected_ratio) * beta))
    # discopop: a blend of the logistic and exponential losses, weighted by sigma(beta h / tau)
    z = margin * beta
    modulation = sigmoid(z / discopop_tau)
    return -log_sigmoid(z) * (1.0 - modulation) + exp(-z) * modulation


def _rewards(policy: Tensor, reference: Tensor, beta: float) -> Tensor:
    """beta (log pi - log pi_ref), a constant: DPO's implicit reward."""
    return _constant(policy - reference) * beta


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0, reduction: str = "mean",
             bco_delta: float | None = None, discopop_tau: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
    """Direct preference optimization (Rafailov et al. 2023) and its variants, as Hugging Face TRL's
    ``DPOTrainer.dpo_loss``: (loss, chosen_rewards, rejected_rewards).

    Inputs (batch,): the sequence log-probabilities of the chosen and rejected completions under the
    policy and the reference model (:func:`sequence_log_probs`); reference ones None: reference-free
    (pi_ref uniform, both taken as 0). With u_w = log pi(y_w) - log pi_ref(y_w), u_l likewise,
    h = u_w - u_l, eps = ``label_smoothing`` and sigma the logistic function, per pair:

    - ``sigmoid`` (DPO; cDPO when eps > 0): -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
    - ``robust`` (rDPO): [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps)
    - ``exo_pair`` (EXO): sigma(beta h)(log sigma(beta h) - log(1 - eps))
      + sigma(-beta h)(log sigma(-beta h) - log eps), eps = 1e-3 when 0
    - ``hinge`` (RSO): max(0, 1 - beta h)
    - ``ipo`` (IPO): (h - 1 / (2 beta))^2 (TRL feeds it length-averaged log-probabilities)
    - ``bco_pair`` (BCO): -log sigma(beta u_w - delta) - log sigma(-(beta u_l - delta)), delta =
      ``bco_delta`` (a trainer's running mean of the rewards), by default this batch's mean reward
    - ``sppo_hard`` (SPPO): (u_w - 1 / (2 beta))^2 + (u_l + 1 / (2 beta))^2
    - ``nca_pair`` (NCA): -log sigma(beta u_w) - log sigma(-beta u_w) / 2 - log sigma(-beta u_l) / 2
    - ``aot`` (AOT): the sigmoid loss of delta = sort(log pi(y_w) - log pi(y_l)) - sort(log pi_ref(y_w)
      - log pi_ref(y_l)), sorted over the batch; ``aot_pair``: delta = sort(u_w) - sort(u_l)
    - ``apo_zero`` (APO): 1 - sigma(beta u_w) + sigma(beta u_l); ``apo_down``: sigma(beta u_w) + 1
      - sigma(beta (u_w - u_l))
    - ``discopop``: (1 - m) (-log sigma(beta h)) + m e^(-beta h), m = sigma(beta h / ``discopop_tau``)

    The rewards beta u_w and beta u_l are returned as constants, one per pair. ``reduction``:
    'mean', 'sum' or 'none' (the per-pair losses).
    """
    fn = "dpo_loss"
    _check_loss_type(loss_type, fn)
    beta = _positive(beta, "beta", fn)
    _check_reduction(reduction, fn)
    if loss_type == "robust":
        label_smoothing = _in_range(label_smoothing, "label_smoothing", fn, 0.0, 0.5, high_open=True)
    else:
        label_smoothing = _in_range(label_smoothing, "label_smoothing", fn, 0.0, 1.0)
    discopop_tau = _positive(discopop_tau, "discopop_tau", fn)
    if (ref_chosen_logps is None) != (ref_rejected_logps is None):
        raise ValueError(f"{fn}: give both reference log-probabilities, or neither (reference-free)")
    named = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps}
    if ref_chosen_logps is not None:
        named.update(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    logps = _same_shapes(fn, **named)
    if ref_chosen_logps is None:
        zeros = Tensor._constant(backend.xp.zeros(logps[0].shape, dtype=logps[0].dtype), logps[0].dtype)
        logps += [zeros, zeros]
    losses = _dpo_losses(loss_type, tuple(logps), beta, label_smoothing, bco_delta, discopop_tau)
    return _reduce(losses, reduction), _rewards(logps[0], logps[2], beta), _rewards(logps[1], logps[3], beta)


def simpo_loss(policy_chosen_logps, policy_rejected_logps, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0, reduction: str = "mean") -> tuple[Tensor, Tensor, Tensor]:
    """SimPO (Meng et al. 2024), reference-free, as TRL's ``CPOTrainer`` with ``loss_type='simpo'``:
    (loss, chosen_rewards, rejected_rewards) with, per pair,

        L = -(1 - eps) log sigma(beta (a_w - a_l) - gamma) - eps log sigma(-(beta (a_w - a_l) - gamma))

    a_w and a_l the length-normalised (average per token, ``sequence_log_probs(..., average=True)``)
    log-probabilities of the chosen and rejected completions, ``gamma`` the target reward margin and
    eps = ``label_smoothing``. The rewards are beta a_w and beta a_l (constants).
    """
    fn = "simpo_loss"
    beta = _positive(beta, "beta", fn)
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(gamma):
        raise ValueError(f"{fn}: gamma (the reward margin) must be a finite number, got {gamma!r}")
    label_smoothing = _in_range(label_smoothing, "label_smoothing", fn, 0.0, 1.0)
    _check_reduction(reduction, fn)
    chosen, rejected = _same_shapes(fn, policy_chosen_logps=policy_chosen_logps,
                                    policy_rejected_logps=policy_rejected_logps)
    z = (chosen - rejected - float(gamma) / beta) * beta
    losses = _smoothed_sigmoid_loss(z, label_smoothing)
    return _reduce(losses, reduction), _constant(chosen) * beta, _constant(rejected) * beta


def _log1m_exp(logp: Tensor) -> Tensor:
    """log(1 - e^x) for x < 0, as log(-expm1(x)): accurate where e^x is near 1."""
    return log(-expm1(logp))


def orpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_nll=None, beta: float = 0.1,
              reduction: str = "mean") -> tuple[Tensor, Tensor, Tensor]:
    """ORPO (Hong et al. 2024), reference-free, as TRL's ``ORPOTrainer``: (loss, chosen_rewards,
    rejected_rewards) with, per pair,

        L = NLL_w - beta log sigma(log odds(y_w) - log odds(y_l)),   log odds(y) = a - log(1 - e^a)

    a_w and a_l the average per-token log-probabilities (< 0) of the completions
    (``sequence_log_probs(..., average=True)``). ``chosen_nll``: the supervised term, per pair or one
    number (TRL's: the cross-entropy of the chosen rows' tokens); None: -a_w, the chosen completion's
    mean negative log-likelihood. The rewards are beta a_w and beta a_l (constants).
    """
    fn = "orpo_loss"
    beta = _positive(beta, "beta", fn)
    _check_reduction(reduction, fn)
    chosen, rejected = _same_shapes(fn, policy_chosen_logps=policy_chosen_logps,
                                    policy_rejected_logps=policy_rejected_logps)
    log_odds = (chosen - rejected) - (_log1m_exp(chosen) - _log1m_exp(rejected))
    nll = -chosen if chosen_nll is None else _as_tensor(chosen_nll, chosen.dtype)
    if nll.ndim and nll.shape != chosen.shape:
        raise ShapeError(f"{fn}: chosen_nll must be one number or one per pair {chosen.shape}, got {nll.shape}")
    losses = nll - log_sigmoid(log_odds) * beta
    return _reduce(losses, reduction), _constant(chosen) * beta, _constant(rejected) * beta


def kto_loss(policy_chosen_logps, policy_rejected_logps, policy_kl_logps, ref_chosen_logps, ref_rejected_logps,
             ref_kl_logps, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             reduction: str = "mean") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """KTO (Ethayarajh et al. 2024), as TRL's ``KTOTrainer``: (loss, chosen_rewards,
    rejected_rewards, kl) for unpaired desirable ("chosen", n_w of them) and undesirable
    ("rejected", n_l) completions:

        z_0 = max(0, mean(log pi(y'_i) - log pi_ref(y'_i)))            (constant)
        L_w = lambda_D (1 - sigma(beta (log pi(y_w) - log pi_ref(y_w) - z_0)))
        L_l = lambda_U (1 - sigma(beta (z_0 - log pi(y_l) + log pi_ref(y_l))))

    z_0 estimates KL(pi || pi_ref) from mismatched completions y'_i (each prompt paired with another
    row's completion, the ``*_kl_logps``); ``policy_kl_logps`` None takes z_0 = 0. lambda_D =
    ``desirable_weight``, lambda_U = ``undesirable_weight``. The losses of the n_w + n_l completions
    (chosen first) are reduced together; either group may be empty. Rewards beta (log pi -
    log pi_ref) and z_0 come back as constants.
    """
    fn = "kto_loss"
    beta = _positive(beta, "beta", fn)
    desirable_weight = _positive(desirable_weight, "desirable_weight", fn)
    undesirable_weight = _positive(undesirable_weight, "undesirable_weight", fn)
    _check_reduction(reduction, fn)
    chosen, ref_chosen = _same_shapes(fn, policy_chosen_logps=policy_chosen_logps, ref_chosen_logps=ref_chosen_logps)
    rejected, ref_rejected = _same_shapes(fn, policy_rejected_logps=policy_rejected_logps,
                                          ref_rejected_logps=ref_rejected_logps)
    if (policy_kl_logps is None) != (ref_kl_logps is None):
        raise ValueError(f"{fn}: give both policy_kl_logps and ref_kl_logps, or neither (no KL estimate)")
    kl = Tensor._constant(backend.xp.zeros((), dtype=chosen.dtype), chosen.dtype)
    if policy_kl_logps is not None:
        policy_kl, ref_kl = _same_shapes(fn, policy_kl_logps=policy_kl_logps, ref_kl_logps=ref_kl_logps)
        if policy_kl.shape[0]:
            kl = relu(R.mean(_constant(policy_kl) - _constant(ref_kl)))
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    chosen_losses = (1.0 - sigmoid((chosen_ratio - kl) * beta)) * desirable_weight
    rejected_losses = (1.0 - sigmoid((kl - rejected_ratio) * beta)) * undesirable_weight
    losses = concat([chosen_losses, rejected_losses])
    if not losses.shape[0] and reduction == "mean":
        raise ValueError(f"{fn}: no completion to score (both groups are empty)")
    return (_reduce(losses, reduction), _constant(chosen_ratio) * beta, _constant(rejected_ratio) * beta,
            _constant(kl))


def reward_model_loss(chosen_rewards, rejected_rewards, margin=None, center_rewards_coefficient: float | None = None,
                      reduction: str = "mean") -> Tensor:
    """The Bradley-Terry loss of a reward model, as TRL's ``RewardTrainer``: per pair

        L = -log sigma(r_w - r_l - m) + c (r_w + r_l)^2

    r_w, r_l the scalar rewards of the chosen and rejected completions ((batch,) or (batch, 1)),
    m = ``margin`` (per pair or one number; None: 0) and c = ``center_rewards_coefficient`` (None:
    0), a penalty that keeps the rewards centred on zero (Eisenstein et al. 2023)."""
    fn = "reward_model_loss"
    _check_reduction(reduction, fn)
    chosen, rejected = _as_tensor(chosen_rewards), _as_tensor(rejected_rewards)
    if chosen.shape != rejected.shape or chosen.ndim not in (1, 2) or (chosen.ndim == 2 and chosen.shape[1] != 1):
        raise ShapeError(f"{fn}: expected chosen_rewards and rejected_rewards of one shape, (batch,) or (batch, 1); "
                         f"got {chosen.shape} and {rejected.shape}")
    difference = chosen - rejected
    if margin is not None:
        margin = _as_tensor(margin, chosen.dtype)
        if margin.ndim and margin.size != chosen.shape[0]:
            raise ShapeError(f"{fn}: margin must be one number or one per pair ({chosen.shape[0]}), got shape "
                             f"{margin.shape}")
        difference = difference - (reshape(margin, *chosen.shape) if margin.ndim else margin)
    losses = -log_sigmoid(difference)
    if center_rewards_coefficient is not None:
        coefficient = _in_range(center_rewards_coefficient, "center_rewards_coefficient", fn, 0.0, math.inf)
        losses = losses + (chosen + rejected) ** 2 * coefficient
    return _reduce(losses, reduction)
