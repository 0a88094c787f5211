"""Mixing networks of value-decomposition methods: Q_tot(s, a) from the agents' chosen
Q_i(o_i, a_i) and the global state s."""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import abs as absolute
from lamina.functional import elu, matmul
from lamina.functional import sum as sum_of
from lamina.nn import Module
from lamina.rl.networks import mlp
from lamina.rl.off_policy import linear_default_init


class VDNMixer(Module):
    """Value decomposition networks (Sunehag et al., 2018): Q_tot = sum_i Q_i (the state unused)."""

    def __init__(self):
        super().__init__()
        self.built = True

    def forward(self, agent_qs: Tensor, states: Tensor | None = None) -> Tensor:
        """agent_qs (batch, n_agents) -> Q_tot (batch,)."""
        return sum_of(agent_qs, axis=1)


class QMixer(Module):
    """The QMIX mixing network (Rashid et al., 2018): a two-layer network on the agents' Q-values
    whose weights and biases are outputs of hypernetworks of the state s,

        h = elu(q^T |W_1(s)| + b_1(s)),   Q_tot = h^T |w_2(s)| + V(s),

    with W_1(s) (n_agents, embed_dim), b_1(s) and w_2(s) of size embed_dim, V(s) a ReLU network
    with one hidden layer. The absolute values make every weight on the path from Q_i to Q_tot
    non-negative, so dQ_tot / dQ_i >= 0 and the agents' greedy actions are greedy for Q_tot.
    ``hypernet_layers=2`` gives the weight hypernetworks a ReLU hidden layer of ``hypernet_embed``
    units (PyMARL's option). Layers start from PyTorch's default initialization."""

    def __init__(self, n_agents: int, state_dim: int, embed_dim: int = 32, hypernet_layers: int = 1,
                 hypernet_embed: int = 64):
        super().__init__()
        if hypernet_layers not in (1, 2):
            raise ValueError(f"QMixer: hypernet_layers must be 1 or 2, got {hypernet_layers!r}")
        self.n_agents, self.state_dim, self.embed_dim = n_agents, state_dim, embed_dim
        hidden = () if hypernet_layers == 1 else (hypernet_embed,)
        self.hyper_w1 = linear_default_init(mlp(state_dim, hidden, n_agents * embed_dim))
        self.hyper_w2 = linear_default_init(mlp(state_dim, hidden, embed_dim))
        self.hyper_b1 = linear_default_init(mlp(state_dim, (), embed_dim))
        self.value = linear_default_init(mlp(state_dim, (embed_dim,), 1))
        self.built = True

    def forward(self, agent_qs: Tensor, states: Tensor) -> Tensor:
        """agent_qs (batch, n_agents) and states (batch, state_dim) -> Q_tot (batch,)."""
        batch = agent_qs.shape[0]
        if agent_qs.shape[1:] != (self.n_agents,) or states.shape != (batch, self.state_dim):
            raise ShapeError(f"QMixer: needs agent_qs (batch, {self.n_agents}) and states (batch, {self.state_dim}), "
                             f"got {agent_qs.shape} and {states.shape}")
        w1 = absolute(self.hyper_w1(states)).reshape(batch, self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(states).reshape(batch, 1, self.embed_dim)
        hidden = elu(matmul(agent_qs.reshape(batch, 1, self.n_agents), w1) + b1)
        w2 = absolute(self.hyper_w2(states)).reshape(batch, self.embed_dim, 1)
        return (matmul(hidden, w2)).reshape(batch) + self.value(states).reshape(batch)
