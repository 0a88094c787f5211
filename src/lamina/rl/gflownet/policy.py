"""A GFlowNet: forward policy P_F, backward policy P_B (uniform or learned), state flows F(s) and
log Z, trajectory sampling with epsilon-uniform exploration, and the per-step quantities the
losses of :mod:`lamina.rl.gflownet.losses` take."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor, no_grad, tensor
from lamina.rl.gflownet.environments import DAGEnv
from lamina.rl.gflownet.losses import (
    detailed_balance_loss,
    flow_matching_loss,
    masked_logits,
    subtrajectory_balance_loss,
    trajectory_balance_loss,
)
from lamina.rl.networks import mlp, obs_tensor

LOSSES = ("fm", "db", "tb", "subtb")


@dataclass
class Trajectories:
    """B trajectories padded to T actions: ``states`` (B, T, state_dim) with s_t before action t
    (padding repeats the terminal state), ``actions`` (B, T) with -1 for padding, ``lengths`` (B,)
    counting the stop action, ``log_rewards`` (B,) of the terminal states."""

    states: numpy.ndarray
    actions: numpy.ndarray
    lengths: numpy.ndarray
    log_rewards: numpy.ndarray

    @property
    def step_mask(self) -> numpy.ndarray:
        return self.actions >= 0

    @property
    def terminal_states(self) -> numpy.ndarray:
        return self.states[numpy.arange(len(self.lengths)), self.lengths - 1]

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, rows) -> Trajectories:
        width = max(int(self.lengths[rows].max()), 1)
        return Trajectories(self.states[rows, :width], self.actions[rows, :width], self.lengths[rows],
                            self.log_rewards[rows])

    @staticmethod
    def concatenate(parts: Sequence[Trajectories]) -> Trajectories:
        width = max(p.actions.shape[1] for p in parts)

        def pad(array, fill_last):
            extra = width - array.shape[1]
            if extra == 0:
                return array
            tail = numpy.repeat(array[:, -1:], extra, axis=1) if fill_last else numpy.full(
                (len(array), extra) + array.shape[2:], -1, array.dtype)
            return numpy.concatenate([array, tail], axis=1)

        return Trajectories(numpy.concatenate([pad(p.states, True) for p in parts]),
                            numpy.concatenate([pad(p.actions, False) for p in parts]),
                            numpy.concatenate([p.lengths for p in parts]),
                            numpy.concatenate([p.log_rewards for p in parts]))


class GFlowNet(nn.Module):
    """P_F, P_B and F(s) as heads of one network on ``env.features(states)`` (an MLP with
    ``hidden`` layers unless ``net`` is given, mapping features to n_actions [+ n_backward_actions
    when P_B is learned] + 1 outputs), and log Z a learned scalar. Invalid actions are masked.
    The forward logits double as log edge flows log F(s -> s') for flow matching."""

    def __init__(self, env: DAGEnv, hidden: Sequence[int] = (64, 64), backward: str = "uniform",
                 net: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        if backward not in ("uniform", "learned"):
            raise ValueError(f"GFlowNet: backward must be 'uniform' or 'learned', got {backward!r}")
        self.env, self.backward = env, backward
        n_backward = env.n_backward_actions if backward == "learned" else 0
        self.n_outputs = env.n_actions + n_backward + 1
        self.net = net if net is not None else mlp(env.feature_dim, hidden, self.n_outputs)
        self.log_z = nn.Parameter(numpy.zeros(()))

    def heads(self, states) -> tuple[Tensor, Tensor | None, Tensor]:
        """(forward logits (n, A), backward logits (n, A_b) or None, log F(s) (n,)) at ``states``."""
        out = self.net(obs_tensor(self.env.features(states)))
        n_forward = self.env.n_actions
        backward = out[:, n_forward:-1] if self.backward == "learned" else None
        return out[:, :n_forward], backward, out[:, -1]

    def forward_log_probs(self, states) -> Tensor:
        """log P_F(. | s) over all forward actions, -inf-like for invalid ones: (n, A)."""
        logits, _, _ = self.heads(states)
        return F.log_softmax(masked_logits(logits, self.env.forward_mask(states)), axis=1)

    def sample(self, n: int, epsilon: float = 0.0, rng: numpy.random.Generator | None = None) -> Trajectories:
        """n trajectories from s0 following P_F mixed with the uniform policy over valid actions:
        (1 - epsilon) P_F + epsilon U."""
        rng = rng if rng is not None else numpy.random.default_rng()
        env = self.env
        state = env.initial_states(n)
        states, actions = [], []
        done = numpy.zeros(n, bool)
        lengths = numpy.zeros(n, numpy.int64)
        while not done.all():
            mask = env.forward_mask(state)
            with no_grad():
                probs = numpy.exp(self.forward_log_probs(state).numpy().astype(numpy.float64)) * mask
            uniform = mask / mask.sum(axis=1, keepdims=True)
            probs = (1.0 - epsilon) * probs / probs.sum(axis=1, keepdims=True) + epsilon * uniform
            cumulative = probs.cumsum(axis=1)
            action = (rng.random((n, 1)) * cumulative[:, -1:] > cumulative).sum(axis=1)
            action = numpy.minimum(action, env.stop_action)
            action = numpy.where(done, -1, action)
            states.append(state)
            actions.append(action)
            lengths += ~done
            moving = ~done & (action != env.stop_action)
            next_state = state.copy()
            if moving.any():
                next_state[moving] = env.step(state[moving], action[moving])
            done = done | (action == env.stop_action)
            state = next_state
        trajectories = Trajectories(numpy.stack(states, 1), numpy.stack(actions, 1), lengths, numpy.zeros(n))
        trajectories.log_rewards = env.log_reward(trajectories.terminal_states)
        return trajectories

    def step_quantities(self, traj: Trajectories) -> dict[str, Tensor]:
        """log_pf, log_pb (B, T) and log_flows (B, T + 1) along ``traj`` (see the losses module)."""
        env = self.env
        batch, steps = traj.actions.shape
        flat = traj.states.reshape(batch * steps, -1)
        logits, backward_logits, log_flow = self.heads(flat)
        log_pf_all = F.log_softmax(masked_logits(logits, env.forward_mask(flat)), axis=1)
        step_mask = traj.step_mask
        rows = numpy.arange(batch)[:, None] * steps + numpy.arange(steps)[None, :]
        actions = numpy.maximum(traj.actions, 0)
        zeros = numpy.zeros((batch, steps), log_pf_all.dtype)
        log_pf = F.where(step_mask, F.take(log_pf_all.reshape(-1), rows * env.n_actions + actions), zeros)

        # P_B(s_t | s_{t+1}) is read at the next state, for every action but stop
        has_next = step_mask & (traj.actions != env.stop_action)
        next_rows = numpy.minimum(rows + 1, batch * steps - 1)
        back = numpy.where(has_next, env.backward_index(actions), 0)
        backward_mask = env.backward_mask(flat)
        if backward_logits is None:
            counts = backward_mask.sum(axis=1).reshape(-1)[next_rows]
            log_pb = tensor(numpy.where(has_next, -numpy.log(numpy.maximum(counts, 1)), 0.0).astype(zeros.dtype))
        else:
            log_pb_all = F.log_softmax(masked_logits(backward_logits, backward_mask), axis=1)
            picked = F.take(log_pb_all.reshape(-1), next_rows * env.n_backward_actions + back)
            log_pb = F.where(has_next, picked, zeros)

        positions = numpy.arange(steps + 1)[None, :]
        flow_rows = numpy.arange(batch)[:, None] * steps + numpy.minimum(positions, steps - 1)
        is_state = positions < traj.lengths[:, None]
        after_stop = numpy.where(positions == traj.lengths[:, None], traj.log_rewards[:, None], 0.0)
        log_flows = F.where(is_state, F.take(log_flow, flow_rows), after_stop.astype(zeros.dtype))
        return {"log_pf": log_pf, "log_pb": log_pb, "log_flows": log_flows}

    def flow_matching_terms(self, traj: Trajectories) -> Tensor:
        """The flow-matching loss on the states visited by ``traj`` (parents' edge flows in,
        children's edge flows and the exit flow out; exit flow against R at terminal states)."""
        env = self.env
        visited = traj.step_mask.copy()
        visited[:, 0] = False                                    # s0 has no inflow
        inner = traj.states[visited]
        terminal = traj.terminal_states
        n_inner = len(inner)
        back_mask = env.backward_mask(inner) if n_inner else numpy.zeros((0, env.n_backward_actions), bool)
        parent_rows, parent_states, parent_actions = [], [], []
        for b in range(env.n_backward_actions):
            rows = numpy.flatnonzero(back_mask[:, b])
            if len(rows):
                parents, forward_actions = env.parents(inner[rows], numpy.full(len(rows), b))
                parent_rows.append(rows * env.n_backward_actions + b)
                parent_states.append(parents)
                parent_actions.append(forward_actions)
        parents = numpy.concatenate(parent_states) if parent_states else inner[:0]
        every = numpy.concatenate([inner, terminal, parents])
        logits, _, _ = self.heads(every)
        flat_logits = logits.reshape(-1)
        n_terminal = len(terminal)
        exit_flows = F.take(flat_logits, (n_inner + numpy.arange(n_terminal)) * env.n_actions + env.stop_action)
        if n_inner == 0:
            gap = exit_flows - traj.log_rewards.astype(exit_flows.dtype)
            return (gap * gap).mean()
        out_flows = logits[:n_inner]
        parent_index = n_inner + n_terminal + numpy.arange(len(parents))
        edge_index = parent_index * env.n_actions + numpy.concatenate(parent_actions)
        slots = numpy.concatenate(parent_rows)
        # scatter the parents' edge flows into an (n_inner, n_backward) table by a one-hot product
        placement = numpy.zeros((len(slots), n_inner * env.n_backward_actions), flat_logits.dtype)
        placement[numpy.arange(len(slots)), slots] = 1.0
        in_flows = (F.take(flat_logits, edge_index).expand_dims(0) @ placement).reshape(n_inner, -1)
        return flow_matching_loss(in_flows, back_mask, out_flows, env.forward_mask(inner), exit_flows,
                                  traj.log_rewards)

    def loss(self, traj: Trajectories, kind: str = "tb", lam: float = 0.9) -> Tensor:
        """The training loss ``kind`` in ('fm', 'db', 'tb', 'subtb') on ``traj``."""
        if kind not in LOSSES:
            raise ValueError(f"GFlowNet.loss: kind must be one of {LOSSES}, got {kind!r}")
        if kind == "fm":
            return self.flow_matching_terms(traj)
        q = self.step_quantities(traj)
        if kind == "tb":
            return trajectory_balance_loss(self.log_z, q["log_pf"], q["log_pb"], traj.log_rewards)
        if kind == "db":
            return detailed_balance_loss(q["log_flows"], q["log_pf"], q["log_pb"], traj.step_mask)
        return subtrajectory_balance_loss(q["log_flows"], q["log_pf"], q["log_pb"], traj.step_mask, lam)
