"""Temporal Graph Network (Rossi et al., 2020) for link prediction on a stream of events.

Each node keeps a memory s_n (zero at the start) and the time of its last update. An event
(i, j, t, e) sends i the raw message [s_i, s_j, e, phi(t - last_i)] and j the message
[s_j, s_i, e, phi(t - last_j)] (identity message function); a node's messages of one batch
are aggregated by keeping the last one, and its memory is updated by a GRU, s_n <- GRU(m_n, s_n).

To keep the memory free of leakage and still train the GRU (as PyTorch Geometric's TGN does),
a batch's raw messages are only stored by :meth:`TGN.update` after its loss is computed; they
are applied, inside the autograd graph, when the next batch is scored. The embedding of node n
at time t is :class:`~lamina.nn.TemporalGraphAttention` of its memory over its k most recent
earlier interactions (neighbour memories, messages, elapsed times), and a link is scored by
w^T relu(W_s z_i + W_d z_j + b) + c.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.temporal_graph import LastNeighborSampler, TemporalEvents
from lamina.nn import init as initializers
from lamina.nn.cells import GRUCell
from lamina.nn.dense import linear
from lamina.nn.graph.temporal import TemporalGraphAttention, TimeEncoder
from lamina.nn.module import Module

__all__ = ["TGN", "last_messages"]


def last_messages(nodes: np.ndarray, times: np.ndarray) -> dict[int, int]:
    """For each node, the index of its last message (latest time; later position on ties)."""
    last: dict[int, int] = {}
    for index in np.lexsort((np.arange(len(times)), times)):
        last[int(nodes[index])] = int(index)
    return last


class TGN(Module):
    """TGN with a GRU memory, identity messages, last-message aggregation, a temporal graph
    attention embedding over the ``neighbors`` most recent interactions and an MLP link scorer.

    ``forward(src, dst, t)`` gives link logits (B,); call :meth:`update` with the batch's events
    after the loss, :meth:`reset_memory` before a new pass over the stream and
    :meth:`detach_memory` to cut the autograd graph between batches."""

    def __init__(self, num_nodes: int, msg_dim: int, memory_dim: int = 16, time_dim: int = 8,
                 embedding_dim: int = 16, neighbors: int = 5, heads: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.num_nodes, self.msg_dim, self.memory_dim = int(num_nodes), int(msg_dim), int(memory_dim)
        self.neighbors = int(neighbors)
        self.time_encoder = TimeEncoder(time_dim)
        self.memory_updater = GRUCell(memory_dim)
        self.memory_updater.build((1, 2 * memory_dim + msg_dim + time_dim))
        self.memory_updater.built = True
        self.embedding = TemporalGraphAttention(memory_dim, msg_dim, time_dim, embedding_dim, heads=heads)
        dtype = backend.get_default_dtype()
        self.add_parameter("src_kernel", initializers.xavier_uniform((embedding_dim, embedding_dim), dtype=dtype))
        self.add_parameter("dst_kernel", initializers.xavier_uniform((embedding_dim, embedding_dim), dtype=dtype))
        self.add_parameter("hidden_bias", initializers.zeros((embedding_dim,), dtype=dtype))
        self.add_parameter("out_kernel", initializers.xavier_uniform((embedding_dim, 1), dtype=dtype))
        self.add_parameter("out_bias", initializers.zeros((1,), dtype=dtype))
        self.built = True
        self.reset_memory()

    def reset_memory(self) -> None:
        """Zero memories, no history and no pending messages."""
        dtype = self.src_kernel.dtype
        self.memory = Tensor(np.zeros((self.num_nodes, self.memory_dim), dtype=dtype))
        self.last_update = np.zeros(self.num_nodes)
        self.history = TemporalEvents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                                      np.zeros((0, self.msg_dim), dtype=dtype))
        self._sampler = LastNeighborSampler(self.history, self.neighbors)
        self._pending: TemporalEvents | None = None
        self._current: tuple | None = None

    def detach_memory(self) -> None:
        """Cut the autograd graph behind the memory (its values stay)."""
        self.memory, self._current = Tensor(self.memory.numpy()), None

    def current_memory(self) -> tuple[Tensor, np.ndarray]:
        """Memories (num_nodes, memory_dim) and last-update times after applying the pending
        messages (in the autograd graph)."""
        if self._pending is None:
            return self.memory, self.last_update
        if self._current is not None:
            return self._current
        events, memory = self._pending, self.memory
        nodes = np.concatenate([events.src, events.dst])
        partners = np.concatenate([events.dst, events.src])
        times = np.concatenate([events.t, events.t])
        last = last_messages(nodes, times)
        chosen = np.array(list(last.values()), dtype=np.int64)
        targets = nodes[chosen]
        elapsed = (times[chosen] - self.last_update[targets]).astype(memory.dtype)
        messages = F.concat([F.take_rows(memory, targets), F.take_rows(memory, partners[chosen]),
                             Tensor(np.concatenate([events.msg, events.msg])[chosen].astype(memory.dtype)),
                             self.time_encoder(elapsed)], axis=1)
        updated = self.memory_updater(messages, F.take_rows(memory, targets))
        touched = np.zeros((self.num_nodes, 1), dtype=memory.dtype)
        touched[targets] = 1.0
        scattered = F.segment_sum(updated, targets, self.num_nodes)    # one row per touched node
        last_update = self.last_update.copy()
        last_update[targets] = times[chosen]
        self._current = (memory * (1.0 - touched) + scattered, last_update)
        return self._current

    def embed(self, nodes, times) -> Tensor:
        """Embeddings (B, embedding_dim) of ``nodes`` at ``times`` from events before them."""
        nodes, times = np.asarray(nodes, dtype=np.int64), np.asarray(times, dtype=np.float64)
        memory, _ = self.current_memory()
        neighbors, event_times, event_ids, mask = self._sampler.sample(nodes, times)
        b, k = neighbors.shape
        dtype = memory.dtype
        neighbor_memory = F.reshape(F.take_rows(memory, neighbors.reshape(-1)), (b, k, self.memory_dim))
        neighbor_msg = self.history.msg[event_ids] if len(self.history) else np.zeros((b, k, self.msg_dim))
        delta_t = np.where(mask, times[:, None] - event_times, 0.0)
        return self.embedding(F.take_rows(memory, nodes), neighbor_memory, Tensor(neighbor_msg.astype(dtype)),
                              Tensor(delta_t.astype(dtype)), mask)

    def score(self, z_src, z_dst) -> Tensor:
        hidden = F.relu(linear(z_src, self.src_kernel) + linear(z_dst, self.dst_kernel, self.hidden_bias))
        return F.reshape(linear(hidden, self.out_kernel, self.out_bias), (-1,))

    def forward(self, src, dst, t):
        z_src, z_dst = self.embed(src, t), self.embed(dst, t)
        return self.score(z_src, z_dst)

    def update(self, events: TemporalEvents) -> None:
        """Commit the pending messages to the memory (detached) and store ``events`` as the new
        pending messages and in the neighbour history."""
        memory, last_update = self.current_memory()
        self.memory, self.last_update = Tensor(memory.numpy()), last_update
        self._pending, self._current = events, None
        h = self.history
        self.history = TemporalEvents(np.concatenate([h.src, events.src]), np.concatenate([h.dst, events.dst]),
                                      np.concatenate([h.t, events.t]),
                                      np.concatenate([h.msg, events.msg.astype(h.msg.dtype)]))
        self._sampler = LastNeighborSampler(self.history, self.neighbors)
