"""GFlowNet training objectives, on log-probabilities and log-flows gathered along trajectories.

Shapes: a batch of B trajectories padded to T actions; ``step_mask`` (B, T) is True for real
actions (the last real action of each trajectory is stop). ``log_pf`` and ``log_pb`` (B, T) hold
log P_F(s_{t+1} | s_t) and log P_B(s_t | s_{t+1}) (zero for stop and padding); ``log_flows``
(B, T + 1) holds log F(s_t) for the visited states with log R(x) in place of the flow after stop.
"""

from __future__ import annotations

import numpy

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

MASKED_LOGIT = -1e9


def masked_logits(logits: Tensor, mask) -> Tensor:
    """``logits`` where ``mask`` holds, a very negative number elsewhere (probability 0 after softmax)."""
    return F.where(numpy.asarray(mask, dtype=bool), logits, numpy.full(logits.shape, MASKED_LOGIT, logits.dtype))


def _check_steps(name: str, step_mask, *tensors) -> numpy.ndarray:
    step_mask = numpy.asarray(step_mask, dtype=bool)
    for t in tensors:
        if t.shape != step_mask.shape:
            raise ShapeError(f"{name}: per-step tensors must have the step mask's shape {step_mask.shape}, "
                             f"got {t.shape}")
    return step_mask


def trajectory_balance_loss(log_z: Tensor, log_pf: Tensor, log_pb: Tensor, log_rewards) -> Tensor:
    """Trajectory balance (Malkin et al. 2022), averaged over the batch::

        (log Z + sum_t log P_F(s_{t+1}|s_t) - log R(x) - sum_t log P_B(s_t|s_{t+1}))^2
    """
    if log_pf.shape != log_pb.shape or log_pf.shape[:1] != numpy.shape(log_rewards):
        raise ShapeError(f"trajectory_balance_loss: log_pf {log_pf.shape} and log_pb {log_pb.shape} must be "
                         f"(B, T) and log_rewards {numpy.shape(log_rewards)} (B,)")
    log_rewards = numpy.asarray(log_rewards, dtype=log_pf.dtype)
    delta = log_z + log_pf.sum(axis=1) - log_pb.sum(axis=1) - log_rewards
    return (delta * delta).mean()


def detailed_balance_loss(log_flows: Tensor, log_pf: Tensor, log_pb: Tensor, step_mask) -> Tensor:
    """Detailed balance (Bengio et al. 2023), averaged over the real transitions::

        (log F(s_t) + log P_F(s_{t+1}|s_t) - log F(s_{t+1}) - log P_B(s_t|s_{t+1}))^2

    where F after the stop action is R(x)."""
    step_mask = _check_steps("detailed_balance_loss", step_mask, log_pf, log_pb)
    delta = log_flows[:, :-1] + log_pf - log_flows[:, 1:] - log_pb
    squares = F.where(step_mask, delta * delta, numpy.zeros(step_mask.shape, delta.dtype))
    return squares.sum() / float(step_mask.sum())


def subtrajectory_balance_loss(log_flows: Tensor, log_pf: Tensor, log_pb: Tensor, step_mask,
                               lam: float = 0.9) -> Tensor:
    """Sub-trajectory balance (Madan et al. 2023): for every pair i < j <= n of each trajectory's
    states, delta_ij = log F(s_i) + sum_{i<=t<j} (log P_F - log P_B) - log F(s_j); per trajectory
    sum lam^(j-i) delta_ij^2 / sum lam^(j-i), then the batch mean."""
    step_mask = _check_steps("subtrajectory_balance_loss", step_mask, log_pf, log_pb)
    batch, steps = step_mask.shape
    prefix = _prepend_zero((log_pf - log_pb).cumsum(axis=1))
    potential = log_flows - prefix                       # delta_ij = potential_i - potential_j
    delta = potential.expand_dims(2) - potential.expand_dims(1)
    index = numpy.arange(steps + 1)
    lengths = step_mask.sum(axis=1)
    pair = (index[:, None] < index[None, :])[None] & (index[None, None, :] <= lengths[:, None, None])
    weights = numpy.where(pair, float(lam) ** (index[None, :] - index[:, None]), 0.0).astype(log_pf.dtype)
    weights /= weights.sum(axis=(1, 2), keepdims=True)
    return (delta * delta * weights).sum() / float(batch)


def _prepend_zero(x: Tensor) -> Tensor:
    """[0, x_1, ..., x_T] along axis 1 (as a product with a shift matrix)."""
    steps = x.shape[1]
    shift = numpy.eye(steps, steps + 1, k=1, dtype=x.dtype)
    return x @ shift


def flow_matching_loss(log_in_flows: Tensor, in_mask, log_out_flows: Tensor, out_mask,
                       log_exit_flows: Tensor, log_rewards) -> Tensor:
    """Flow matching (Bengio et al. 2021) with edge flows F(s -> s'): for visited non-initial states
    (rows of the first four arguments, parents' edges in, children's edges out including stop)::

        (log sum_parents F(s -> s') - log sum_children F(s' -> s''))^2

    averaged, plus the mean of (log F(x -> stop) - log R(x))^2 over terminated states x."""
    inflow = F.logsumexp(masked_logits(log_in_flows, in_mask), axis=1)
    outflow = F.logsumexp(masked_logits(log_out_flows, out_mask), axis=1)
    mismatch = inflow - outflow
    reward_gap = log_exit_flows - numpy.asarray(log_rewards, dtype=log_exit_flows.dtype)
    return (mismatch * mismatch).mean() + (reward_gap * reward_gap).mean()
