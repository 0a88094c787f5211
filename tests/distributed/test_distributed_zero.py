"""ZeroRedundancyOptimizer (stages 1 and 2) on 2 forked processes against one Adam on the whole batch."""

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.distributed import DistributedDataParallel, ZeroRedundancyOptimizer, partition_parameters

STEPS, BATCH, LR = 5, 8, 0.05


def batches():
    rng = np.random.default_rng(3)
    return [(rng.standard_normal((BATCH, 5)), rng.standard_normal((BATCH, 2))) for _ in range(STEPS)]


def mlp(seed):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(6), nn.Tanh(), nn.Dense(4), nn.Tanh(), nn.Dense(2))
    model.build((None, 5))
    return model.double()


def loss_of(model, x, y):
    return F.mean_squared_error(model(lamina.tensor(x, dtype=np.float64)), lamina.tensor(y, dtype=np.float64))


def half(rank, array):
    return array[rank * BATCH // 2:(rank + 1) * BATCH // 2]


def one_process_run():
    model = mlp(0)
    optimizer = optim.Adam(model, lr=LR)
    for x, y in batches():
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
    return [p.data.copy() for p in model.parameters()], optimizer.state_dict()


def assert_same_state(actual, expected):
    assert actual["optimizer"] == expected["optimizer"]
    assert actual["step_count"] == expected["step_count"]
    assert sorted(actual["state"]) == sorted(expected["state"])
    for i, entry in expected["state"].items():
        assert sorted(actual["state"][i]) == sorted(entry)
        for key, value in entry.items():
            np.testing.assert_allclose(actual["state"][i][key], value, rtol=0, atol=1e-9)
    assert actual["param_groups"] == expected["param_groups"]


def state_bytes(optimizer):
    return sum(value.nbytes for entry in optimizer.state.values() for value in entry.values()
               if isinstance(value, np.ndarray))


def _train_sharded(rank, stage, expected_params, expected_state):
    model = mlp(seed=rank)                                 # rank 0's weights are copied to rank 1
    forward = DistributedDataParallel(model) if stage == 1 else model
    zero = ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=stage, lr=LR)
    for x, y in batches():
        zero.zero_grad()
        loss_of(forward, half(rank, x), half(rank, y)).backward()
        zero.step()
        if stage == 2:      # only this rank's shard keeps its (averaged) gradient
            owned = set(zero.local_indices)
            assert [p.grad is not None for p in model.parameters()] == [i in owned for i in range(6)]
    for p, e in zip(model.parameters(), expected_params, strict=True):
        np.testing.assert_allclose(p.data, e, rtol=0, atol=1e-6)

    whole = 2 * sum(p.data.nbytes for p in model.parameters())          # Adam's two moments
    assert 0.4 < state_bytes(zero.optim) / whole < 0.6
    assert sorted(zero.optim.state) == list(range(len(zero.local_indices)))

    zero.consolidate_state_dict(to=0)
    if rank == 0:
        assert_same_state(zero.state_dict(), expected_state)
    else:
        with pytest.raises(RuntimeError, match="consolidate_state_dict"):
            zero.state_dict()

    fresh = ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=stage, lr=LR)
    fresh.load_state_dict(expected_state)                  # each rank keeps its shard of the whole state
    fresh.consolidate_state_dict(to=1)
    if rank == 1:
        assert_same_state(fresh.state_dict(), expected_state)


@pytest.mark.parametrize("stage", [1, 2])
def test_sharded_adam_equals_one_adam_on_the_whole_batch(run_ranks, stage):
    expected_params, expected_state = one_process_run()
    run_ranks(_train_sharded, 2, stage, expected_params, expected_state)


def test_partition_is_balanced_largest_first():
    assert partition_parameters([30, 6, 24, 4, 8, 2], 2) == [[0, 1, 5], [2, 3, 4]]
    assert partition_parameters([5, 5, 5], 2) == [[0, 2], [1]]
    assert partition_parameters([1], 3) == [[0], [], []]


def _bad_stage(rank):
    with pytest.raises(ValueError, match="stage must be 1"):
        ZeroRedundancyOptimizer(mlp(0).parameters(), optim.Adam, stage=3, lr=LR)


def test_bad_stage_is_refused(run_ranks):
    run_ranks(_bad_stage, 2)
