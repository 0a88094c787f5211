"""Training loop for :class:`GFlowNet` with epsilon-uniform exploration and an optional replay of
past trajectories."""

from __future__ import annotations

import numpy

from lamina import optim
from lamina.rl.gflownet.policy import GFlowNet, Trajectories


class TrajectoryReplay:
    """The last ``capacity`` trajectories, sampled uniformly."""

    def __init__(self, capacity: int):
        self.capacity, self.items = capacity, []

    def add(self, traj: Trajectories) -> None:
        self.items.extend(traj.select(numpy.array([i])) for i in range(len(traj)))
        del self.items[:max(0, len(self.items) - self.capacity)]

    def sample(self, n: int, rng: numpy.random.Generator) -> Trajectories:
        picks = rng.integers(0, len(self.items), size=n)
        return Trajectories.concatenate([self.items[i] for i in picks])

    def __len__(self) -> int:
        return len(self.items)


def train_gflownet(gflownet: GFlowNet, loss: str = "tb", steps: int = 1000, batch_size: int = 16,
                   lr: float = 1e-3, lr_log_z: float = 0.1, epsilon: float = 0.0, lam: float = 0.9,
                   replay_capacity: int = 0, replay_batch: int = 0, seed: int = 0) -> dict:
    """Sample ``batch_size`` trajectories per step (epsilon-uniform exploration), add
    ``replay_batch`` replayed ones when ``replay_capacity`` > 0, and take an Adam step on ``loss``
    ('fm', 'db', 'tb' or 'subtb'); log Z learns with ``lr_log_z``. Returns the per-step ``losses``
    and the ``visited`` terminal states (a set of tuples)."""
    rng = numpy.random.default_rng(seed)
    net_params = [p for p in gflownet.parameters() if p is not gflownet.log_z]
    optimizer = optim.Adam([{"params": net_params, "lr": lr}, {"params": [gflownet.log_z], "lr": lr_log_z}])
    replay = TrajectoryReplay(replay_capacity) if replay_capacity > 0 else None
    losses, visited = [], set()
    for _ in range(steps):
        traj = gflownet.sample(batch_size, epsilon, rng)
        visited.update(tuple(int(v) for v in row) for row in traj.terminal_states)
        batch = traj
        if replay is not None:
            if len(replay) and replay_batch:
                batch = Trajectories.concatenate([traj, replay.sample(replay_batch, rng)])
            replay.add(traj)
        value = gflownet.loss(batch, loss, lam)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value.item()))
    return {"losses": losses, "visited": visited}
