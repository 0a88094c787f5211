"""Prioritized experience replay, proportional variant (Schaul et al., 2016): transition i is
replayed with probability P(i) = p_i^alpha / sum_k p_k^alpha, p_i = |delta_i| + eps, and its
update is weighted by the importance-sampling weight w_i = (N P(i))^-beta / max_j w_j."""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.rl.replay import Batch, ReplayBuffer


class SumTree:
    """A complete binary tree over ``capacity`` non-negative leaf values in which every inner node
    holds the sum of its children: setting leaves and finding the leaf where a prefix sum falls
    take O(log capacity) steps (both vectorized over many leaves or values at once).

    The root is node 1, node n has children 2n and 2n + 1, and leaf i is node ``leaves + i`` with
    ``leaves`` the smallest power of two >= capacity (the extra leaves stay 0)."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"SumTree: capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.leaves = 1 << (capacity - 1).bit_length()
        self.depth = self.leaves.bit_length() - 1
        self.nodes = numpy.zeros(2 * self.leaves, dtype=numpy.float64)

    @property
    def total(self) -> float:
        """The sum of all leaves."""
        return float(self.nodes[1])

    def __getitem__(self, index) -> numpy.ndarray:
        return self.nodes[self.leaves + numpy.asarray(index)]

    def update(self, index, values) -> None:
        """Set leaves ``index`` to ``values`` (a later repeat of an index wins) and refresh the sums."""
        index = numpy.atleast_1d(numpy.asarray(index, dtype=numpy.int64))
        values = numpy.broadcast_to(numpy.asarray(values, dtype=numpy.float64), index.shape)
        if index.size and (index.min() < 0 or index.max() >= self.capacity):
            raise IndexError(f"SumTree.update: leaf indices must lie in [0, {self.capacity}), got "
                             f"{index.min()}..{index.max()}")
        if values.size and not (numpy.isfinite(values).all() and values.min() >= 0):
            raise ValueError(f"SumTree.update: values must be finite and >= 0, got min {values.min()}")
        nodes = self.leaves + index
        self.nodes[nodes] = values
        for _ in range(self.depth):       # a node met twice gets the same sum twice: no need to deduplicate
            nodes = nodes // 2
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]

    def find(self, prefix_sums) -> numpy.ndarray:
        """For each value v in [0, total), the leaf i with sum(leaves[:i]) <= v < sum(leaves[:i + 1]):
        drawing v uniformly picks leaf i with probability leaves[i] / total. Leaves of value 0
        are never returned while the total is positive."""
        values = numpy.array(prefix_sums, dtype=numpy.float64, ndmin=1)
        nodes = numpy.ones(values.shape, dtype=numpy.int64)
        for _ in range(self.depth):
            left = self.nodes[2 * nodes]
            # go right only into a subtree with mass, so rounding at the top end never picks an empty leaf
            right = (values >= left) & (self.nodes[2 * nodes + 1] > 0)
            values = numpy.where(right, values - left, numpy.minimum(values, left))
            nodes = 2 * nodes + right
        return nodes - self.leaves


class PrioritizedBatch(NamedTuple):
    """A replayed batch, its importance-sampling weights and the buffer slots it came from."""

    batch: Batch
    weights: numpy.ndarray
    indices: numpy.ndarray


class PrioritizedReplayBuffer(ReplayBuffer):
    """A :class:`ReplayBuffer` sampled in proportion to priorities kept in a :class:`SumTree`.

    A new transition gets the largest priority given so far (so each is replayed at least
    once soon); :meth:`update_priorities` sets p_i = (|delta_i| + eps)^alpha from the TD errors
    of a replayed batch. :meth:`sample` draws one transition from each of ``batch_size`` equal
    slices of the total priority (stratified, as in the paper) and returns the weights
    w_i = (N P(i))^-beta normalised by their largest value in the batch. ``beta`` is set from
    outside (annealed towards 1 over training)."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], alpha: float = 0.6, beta: float = 0.4,
                 eps: float = 1e-6, seed: int | None = None, **kwargs):
        super().__init__(capacity, obs_shape, seed=seed, **kwargs)
        if alpha < 0 or not 0 <= beta <= 1 or eps <= 0:
            raise ValueError(f"PrioritizedReplayBuffer: needs alpha >= 0, 0 <= beta <= 1 and eps > 0, got "
                             f"alpha={alpha}, beta={beta}, eps={eps}")
        self.alpha, self.beta, self.eps = alpha, beta, eps
        self.tree = SumTree(capacity)
        self.max_priority = 1.0

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        self.tree.update(self.position, self.max_priority)
        super().add(obs, action, reward, next_obs, terminated)

    def probabilities(self, indices) -> numpy.ndarray:
        """P(i) = p_i / sum_k p_k for stored slots ``indices`` (p already raised to alpha)."""
        return self.tree[indices] / self.tree.total

    def importance_weights(self, indices) -> numpy.ndarray:
        """w_i = (N P(i))^-beta / max_j w_j over ``indices``, N the number stored."""
        weights = (self.size * self.probabilities(indices)) ** -self.beta
        return weights / weights.max()

    def sample(self, batch_size: int) -> PrioritizedBatch:
        if batch_size > self.size:
            raise ValueError(f"PrioritizedReplayBuffer.sample: asked for {batch_size} transitions but only "
                             f"{self.size} stored")
        edges = numpy.linspace(0.0, self.tree.total, batch_size + 1)
        indices = self.tree.find(self.rng.uniform(edges[:-1], edges[1:]))
        batch = Batch(self.obs[indices], self.actions[indices], self.rewards[indices], self.next_obs[indices],
                      self.terminated[indices])
        return PrioritizedBatch(batch, self.importance_weights(indices).astype(numpy.float32), indices)

    def state_dict(self) -> dict:
        """The uniform buffer's state with the sum tree's nodes, the largest priority and beta."""
        return {**super().state_dict(), "tree": self.tree.nodes.copy(), "max_priority": self.max_priority,
                "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        nodes = numpy.asarray(state["tree"])
        if nodes.shape != self.tree.nodes.shape:
            raise ValueError(f"PrioritizedReplayBuffer.load_state_dict: the sum tree has {nodes.shape[0]} nodes "
                             f"in the state but {self.tree.nodes.shape[0]} in the buffer")
        super().load_state_dict(state)
        self.tree.nodes[...] = nodes
        self.max_priority, self.beta = float(state["max_priority"]), float(state["beta"])

    def update_priorities(self, indices, td_errors) -> None:
        """p_i <- (|delta_i| + eps)^alpha for the slots ``indices`` of a replayed batch."""
        priorities = (numpy.abs(numpy.asarray(td_errors, dtype=numpy.float64)) + self.eps) ** self.alpha
        self.tree.update(indices, priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))
