"""DistributedDataParallel on 2 forked processes against one process on the whole batch."""

import numpy as np
import pytest

import lamina
import lamina.distributed as dist
from lamina import functional as F
from lamina import nn, optim
from lamina.distributed import DistributedDataParallel

STEPS, BATCH = 5, 8


def batches():
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((BATCH, 5)), rng.standard_normal((BATCH, 2))) for _ in range(STEPS)]


def mlp(seed):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(6), nn.Tanh(), nn.Dense(4), nn.Tanh(), nn.Dense(2))
    model.build((None, 5))
    return model.double()


def loss_of(model, x, y):
    return F.mean_squared_error(model(lamina.tensor(x, dtype=np.float64)), lamina.tensor(y, dtype=np.float64))


def one_process_run():
    model = mlp(0)
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9)
    for x, y in batches():
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
    return [p.data.copy() for p in model.parameters()]


def check_equal_to(expected, model):
    for p, e in zip(model.parameters(), expected, strict=True):
        np.testing.assert_allclose(p.data, e, rtol=0, atol=1e-6)
    everyone = [None, None]
    dist.all_gather_object(everyone, [p.data.tobytes() for p in model.parameters()])
    assert everyone[0] == everyone[1]                  # identical bits on both ranks


def half(rank, array):
    return array[rank * BATCH // 2:(rank + 1) * BATCH // 2]


def _train_on_halves(rank, expected, bucket_cap_mb):
    model = DistributedDataParallel(mlp(seed=rank), bucket_cap_mb=bucket_cap_mb)   # rank 0's weights win
    if bucket_cap_mb < 1:
        assert len(model._buckets) > 2
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9)
    for x, y in batches():
        optimizer.zero_grad()
        loss_of(model, half(rank, x), half(rank, y)).backward()
        optimizer.step()
    check_equal_to(expected, model.module)


@pytest.mark.parametrize("bucket_cap_mb", [25.0, 1e-4])
def test_steps_on_halves_equal_one_process_on_whole_batches(run_ranks, bucket_cap_mb):
    run_ranks(_train_on_halves, 2, one_process_run(), bucket_cap_mb)


def _accumulate_with_no_sync(rank, expected):
    model = DistributedDataParallel(mlp(seed=0))
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9)
    quarter = BATCH // 4
    for x, y in batches():
        optimizer.zero_grad()
        mine_x, mine_y = half(rank, x), half(rank, y)
        with model.no_sync():
            (loss_of(model, mine_x[:quarter], mine_y[:quarter]) * 0.5).backward()
        if rank == 0:   # the first micro-batch's gradients are this rank's own until the synced backward
            assert any(not np.array_equal(p.grad, 0) for p in model.parameters())
        (loss_of(model, mine_x[quarter:], mine_y[quarter:]) * 0.5).backward()
        optimizer.step()
    check_equal_to(expected, model.module)


def test_no_sync_accumulation_equals_the_plain_run(run_ranks):
    run_ranks(_accumulate_with_no_sync, 2, one_process_run())


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Dense(2), nn.Dense(2)

    def forward(self, x):
        return self.used(x)


def two_heads(seed):
    lamina.manual_seed(seed)
    model = TwoHeads()
    model.used.build((None, 3))
    model.unused.build((None, 3))
    return model


def _unused_parameters(rank):
    x = lamina.tensor(np.full((2, 3), rank + 1.0, np.float32))
    model = DistributedDataParallel(two_heads(rank), find_unused_parameters=True)
    model.module.unused.weight.grad = np.full((3, 2), 2.0 * rank, np.float32)   # gets averaged too
    model(x).sum().backward()
    np.testing.assert_array_equal(model.module.unused.weight.grad, np.full((3, 2), 1.0))
    np.testing.assert_array_equal(model.module.unused.bias.grad, np.zeros(2))
    np.testing.assert_allclose(model.module.used.bias.grad, np.full(2, 2.0))   # d(sum)/db = 2 rows

    strict = DistributedDataParallel(two_heads(0))
    strict(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"no gradient to parameters \['unused.weight', 'unused.bias'\].*"
                                           "find_unused_parameters=True"):
        strict(x)


def test_find_unused_parameters(run_ranks):
    run_ranks(_unused_parameters)


def _state_and_buffers(rank):
    lamina.manual_seed(rank)
    inner = nn.Sequential(nn.Dense(3), nn.BatchNorm())
    inner.build((None, 4))
    model = DistributedDataParallel(inner)
    assert list(model.state_dict()) == list(inner.state_dict())         # no "module." prefix
    state = {f"module.{key}": value + 1 for key, value in model.state_dict().items()}
    before = {key: value.copy() for key, value in inner.state_dict().items()}
    model.load_state_dict(state)
    for key, value in inner.state_dict().items():
        np.testing.assert_array_equal(value, before[key] + 1)
    model(lamina.tensor(np.random.default_rng(rank).standard_normal((4, 4)).astype(np.float32)))
    means = [None, None]
    dist.all_gather_object(means, inner[1].running_mean.copy())
    assert not np.array_equal(means[0], means[1])      # each rank's batch moved its own statistics
    model(lamina.tensor(np.zeros((4, 4), np.float32)))  # rank 0's statistics are copied first
    dist.all_gather_object(means, inner[1].running_mean.copy())
    np.testing.assert_array_equal(means[0], means[1])


def test_state_dict_has_no_prefix_and_buffers_follow_rank_0(run_ranks):
    run_ranks(_state_and_buffers)


def test_needs_a_group_and_a_built_model(tmp_path):
    with pytest.raises(RuntimeError, match="no process group"):
        DistributedDataParallel(mlp(0))
    dist.init_process_group("shm", f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="has no weights yet; build it first"):
            DistributedDataParallel(nn.Sequential(nn.Dense(3)))
    finally:
        dist.destroy_process_group()
