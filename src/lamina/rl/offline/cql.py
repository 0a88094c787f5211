"""Conservative Q-learning for discrete actions, CQL(H) of Kumar et al. (2020) on a DQN: the
temporal-difference loss plus alpha times a regularizer that pushes Q down on every action
(a soft maximum) and up on the dataset's action, so that actions the data never took are not
over-valued:

    R(Q) = mean_i [log sum_a exp Q(s_i, a) - Q(s_i, a_i)]
    L = mean_i l(Q(s_i, a_i) - y_i) + alpha R(Q),   y_i = r_i + gamma (1 - terminal_i) max_a' Q'(s'_i, a')

with l the squared error or the Huber loss and Q' a target network copied from Q every
``target_update_interval`` updates (d3rlpy's ``DiscreteCQL``, which uses the Huber loss)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import logsumexp, mean, mse_loss, smooth_l1_loss, take_along_dim
from lamina.nn import Module
from lamina.rl.networks import copy_weights, mlp
from lamina.rl.offline.common import OfflineAgent, check_number, check_positive_int, net_tensor
from lamina.rl.replay import Batch
from lamina.rl.spaces import Discrete, Space


def discrete_cql_regularizer(q_values: Tensor, actions) -> Tensor:
    """R(Q) = mean_i [logsumexp_a Q(s_i, a) - Q(s_i, a_i)] for Q-values (batch, n_actions)."""
    index = numpy.asarray(actions, dtype=numpy.int64)[:, None]
    return mean(logsumexp(q_values, axis=1) - take_along_dim(q_values, index, axis=1)[:, 0])


def q_learning_targets(target_net: Module, batch: Batch, gamma: float) -> numpy.ndarray:
    """y = r + gamma (1 - terminal) max_a' Q'(s', a'), in the target network's dtype."""
    with no_grad():
        next_q = target_net(net_tensor(target_net, batch.next_obs)).numpy()
    not_terminal = 1.0 - numpy.asarray(batch.terminated, dtype=next_q.dtype)
    return (numpy.asarray(batch.rewards, dtype=next_q.dtype) + gamma * not_terminal * next_q.max(axis=1)).astype(
        next_q.dtype)


def discrete_cql_loss(q_net: Module, target_net: Module, batch: Batch, gamma: float, alpha: float,
                      td_loss: str = "huber") -> tuple[Tensor, Tensor, Tensor]:
    """(L, the TD loss, R(Q)) of the module docstring; ``td_loss`` "huber" (smooth L1, beta 1) or "mse"."""
    q = q_net(net_tensor(q_net, batch.obs))
    index = numpy.asarray(batch.actions, dtype=numpy.int64)[:, None]
    q_taken = take_along_dim(q, index, axis=1)[:, 0]
    targets = tensor(q_learning_targets(target_net, batch, gamma), dtype=q.dtype)
    td = smooth_l1_loss(q_taken, targets) if td_loss == "huber" else mse_loss(q_taken, targets)
    regularizer = discrete_cql_regularizer(q, batch.actions)
    return td + alpha * regularizer, td, regularizer


class DiscreteCQL(OfflineAgent):
    """A Q-network trained offline on :func:`discrete_cql_loss` with Adam; acts greedily.

    ``alpha`` weighs the conservative regularizer (0 gives plain offline DQN). The TD loss is the
    squared error by default: on CartPole data of expert and random episodes, the Huber loss with
    alpha = 1 left the greedy policy falling within 15 steps for some seeds."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64), lr: float = 1e-3,
                 gamma: float = 0.99, alpha: float = 1.0, batch_size: int = 256, target_update_interval: int = 100,
                 td_loss: str = "mse", seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if not isinstance(action_space, Discrete):
            raise ValueError(f"{who}: needs a Discrete action space, got {action_space!r}")
        if td_loss not in ("huber", "mse"):
            raise ValueError(f"{who}: td_loss must be 'huber' or 'mse', got {td_loss!r}")
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.alpha = check_number(who, "alpha", alpha, 0.0)
        check_number(who, "lr", lr, 0.0, open_low=True)
        self.target_update_interval = check_positive_int(who, "target_update_interval", target_update_interval)
        self.td_loss = td_loss
        self.q_net = mlp(obs_dim, hidden, action_space.n)
        self.target_net = mlp(obs_dim, hidden, action_space.n)
        copy_weights(self.q_net, self.target_net)
        self.optimizer = optim.Adam(self.q_net.parameters(), lr=lr)

    def update(self, batch: Batch) -> dict[str, float]:
        loss, td, regularizer = discrete_cql_loss(self.q_net, self.target_net, batch, self.gamma, self.alpha,
                                                  self.td_loss)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_update_interval == 0:
            copy_weights(self.q_net, self.target_net)
        return {"loss": loss.item(), "td_loss": td.item(), "cql_regularizer": regularizer.item()}

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            return self.q_net(net_tensor(self.q_net, obs)).numpy()[0].argmax()
