"""Discrete batch-constrained Q-learning (Fujimoto, Conti, Ghavamzadeh and Pineau, 2019): a
behaviour classifier G(a | s) = softmax(g(s)) learned alongside Q, and the maximum over next
actions restricted to those the classifier finds likely enough,

    A(s) = {a : G(a | s) / max_a' G(a' | s) > tau}
    y = r + gamma (1 - terminal) Q'(s', argmax_{a in A(s')} Q(s', a))
    L = mean_i huber(Q(s_i, a_i) - y_i) + mean_i -log G(a_i | s_i) + 0.01 mean g(s)^2

(tau = 0.3; the last term keeps the logits small). Actions are argmax_{a in A(s)} Q(s, a); with
tau = 0 this is double DQN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import cross_entropy, mean, smooth_l1_loss, take_along_dim
from lamina.rl.networks import copy_weights, mlp, soft_update
from lamina.rl.offline.common import OfflineAgent, check_number, net_tensor
from lamina.rl.replay import Batch
from lamina.rl.spaces import Discrete, Space


def filtered_greedy_actions(q_values, logits, threshold: float) -> numpy.ndarray:
    """argmax of Q over the actions with G(a | s) / max G > ``threshold`` for each row of
    Q-values and classifier logits (batch, n_actions); the likeliest action always qualifies."""
    q_values, logits = numpy.asarray(q_values), numpy.asarray(logits)
    if q_values.shape != logits.shape or q_values.ndim != 2:
        raise ShapeError(f"filtered_greedy_actions: needs Q-values and logits of one shape (batch, n_actions), "
                         f"got {q_values.shape} and {logits.shape}")
    ratio = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    allowed = ratio > threshold
    allowed[numpy.arange(len(ratio)), ratio.argmax(axis=1)] = True
    return numpy.where(allowed, q_values, -numpy.inf).argmax(axis=1)


class DiscreteBCQ(OfflineAgent):
    """Discrete BCQ (module docstring) with the authors' ``threshold`` 0.3, gamma 0.99, the
    Huber loss and the logit penalty 0.01; Adam with lr 1e-3 (theirs: 3e-4 for small tasks), a
    Polyak-averaged target network (rate 0.005) and separate Q and classifier MLPs.
    :meth:`predict` acts by the filtered argmax."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64), lr: float = 1e-3,
                 gamma: float = 0.99, polyak: float = 0.005, threshold: float = 0.3, logit_penalty: float = 0.01,
                 batch_size: int = 256, seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if not isinstance(action_space, Discrete):
            raise ValueError(f"{who}: needs a Discrete action space (BCQ takes Box ones), got {action_space!r}")
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.polyak = check_number(who, "polyak", polyak, 0.0, 1.0, open_low=True)
        self.threshold = check_number(who, "threshold", threshold, 0.0, 1.0)
        self.logit_penalty = check_number(who, "logit_penalty", logit_penalty, 0.0)
        check_number(who, "lr", lr, 0.0, open_low=True)
        self.q_net, self.target_net = mlp(obs_dim, hidden, self.n_outputs), mlp(obs_dim, hidden, self.n_outputs)
        copy_weights(self.q_net, self.target_net)
        self.classifier = mlp(obs_dim, hidden, self.n_outputs)
        self.optimizer = optim.Adam(self.q_net.parameters() + self.classifier.parameters(), lr=lr)

    def targets(self, batch: Batch) -> numpy.ndarray:
        """y of the module docstring, in the networks' dtype."""
        with no_grad():
            next_obs = net_tensor(self.q_net, batch.next_obs)
            best = filtered_greedy_actions(self.q_net(next_obs).numpy(), self.classifier(next_obs).numpy(),
                                           self.threshold)
            next_q = self.target_net(next_obs).numpy()[numpy.arange(len(best)), best]
        not_terminal = 1.0 - numpy.asarray(batch.terminated, dtype=next_q.dtype)
        return (numpy.asarray(batch.rewards, dtype=next_q.dtype) + self.gamma * not_terminal * next_q
                ).astype(next_q.dtype)

    def loss(self, batch: Batch, targets: numpy.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """(L, the Huber TD part, the classifier's cross-entropy) for the batch and targets y."""
        obs = net_tensor(self.q_net, batch.obs)
        actions = numpy.asarray(batch.actions, dtype=numpy.int64)
        q = take_along_dim(self.q_net(obs), actions[:, None], axis=1)[:, 0]
        td = smooth_l1_loss(q, tensor(targets, dtype=q.dtype))
        logits = self.classifier(obs)
        imitation = cross_entropy(logits, actions)
        return td + imitation + self.logit_penalty * mean(logits * logits), td, imitation

    def update(self, batch: Batch) -> dict[str, float]:
        total, td, imitation = self.loss(batch, self.targets(batch))
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        soft_update(self.q_net, self.target_net, self.polyak)
        self.updates += 1
        return {"loss": total.item(), "td_loss": td.item(), "imitation_loss": imitation.item()}

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            s = net_tensor(self.q_net, obs)
            return filtered_greedy_actions(self.q_net(s).numpy(), self.classifier(s).numpy(), self.threshold)[0]
