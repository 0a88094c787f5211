"""Subgroups (new_group) on 4 forked processes: collectives among members only, two disjoint
groups at once, group ranks, errors, and a 2x2 mesh of tensor-parallel pairs trained with DDP
(and ZeRO over a subgroup) against single-process training in PyTorch."""

import contextlib
import io
import re

import numpy as np
import pytest
import torch

import lamina
import lamina.distributed as dist
from lamina import functional as F
from lamina import nn, optim
from lamina.distributed import collectives
from lamina.errors import ShapeError

TIGHT = dict(rtol=0, atol=1e-10)


def _pair_collectives(rank, through_slots):
    if through_slots:
        collectives.SMALL_ARRAY_BYTES = 0               # forked copy: every array goes through shared memory
    low, high = dist.new_group([0, 1]), dist.new_group([3, 2])
    mine, other = (low, high) if rank < 2 else (high, low)
    members = [0, 1] if rank < 2 else [2, 3]
    assert other is dist.GroupMember.NON_GROUP_MEMBER
    assert dist.get_rank(mine) == rank % 2 and dist.get_world_size(mine) == 2
    assert dist.get_rank(other) == -1 and dist.get_world_size(other) == -1
    assert dist.get_process_group_ranks(mine) == members and dist.get_rank() == rank
    values = {r: np.arange(40.0) * (r + 1) for r in range(4)}
    for step in range(3):                               # both pairs at once, several times over
        x = values[rank] + step
        dist.all_reduce(x, group=mine)
        np.testing.assert_array_equal(x, sum(values[r] + step for r in members))
    x = np.full(7, float(rank))
    dist.broadcast(x, src=members[1], group=mine)       # src is a global rank, as in torch
    np.testing.assert_array_equal(x, np.full(7, float(members[1])))
    gathered = [np.zeros(5) for _ in range(2)]
    dist.all_gather(gathered, np.full(5, rank * 1.0), group=mine)
    np.testing.assert_array_equal(np.stack(gathered), np.repeat(np.array(members, float)[:, None], 5, 1))
    out = np.zeros(6)
    dist.reduce_scatter(out, [np.full(6, 10.0 * rank + part) for part in range(2)], group=mine)
    np.testing.assert_array_equal(out, np.full(6, sum(10.0 * r for r in members) + 2 * (rank % 2)))
    root = members[0]
    into = [np.zeros(3) for _ in range(2)] if rank == root else None
    dist.gather(np.full(3, rank + 0.5), into, dst=root, group=mine)
    if rank == root:
        np.testing.assert_array_equal(np.stack(into)[:, 0], np.array(members) + 0.5)
    piece = np.zeros(4)
    dist.scatter(piece, [np.full(4, 100.0 + r) for r in members] if rank == root else None, src=root, group=mine)
    np.testing.assert_array_equal(piece, np.full(4, 100.0 + rank))
    objects = [None, None]
    dist.all_gather_object(objects, {"rank": rank}, group=mine)
    assert objects == [{"rank": r} for r in members]
    dist.barrier(group=mine)
    partner = members[1 - rank % 2]
    dist.send(np.full(2, float(rank)), partner, group=mine)
    np.testing.assert_array_equal(dist.recv_array(partner, group=mine), np.full(2, float(partner)))
    total = np.array([rank + 1.0] * 50)                 # the default group still works after the pairs
    dist.all_reduce(total)
    np.testing.assert_array_equal(total, np.full(50, 10.0))


@pytest.mark.parametrize("through_slots", [False, True])
def test_disjoint_pairs_run_collectives_at_once(run_ranks, through_slots):
    run_ranks(_pair_collectives, 4, through_slots)


def _three_of_four(rank):
    collectives.SMALL_ARRAY_BYTES = 0
    group = dist.new_group([0, 1, 2])
    untouched = np.full(30, -1.0)
    x = np.full(30, rank + 1.0)
    if rank == 3:
        for call in (lambda: dist.all_reduce(x, group=group), lambda: dist.barrier(group=group),
                     lambda: dist.broadcast(x, src=0, group=group)):
            with pytest.raises(RuntimeError, match=r"lamina\.distributed\.\w+: rank 3 is not a member"):
                call()
    else:
        dist.all_reduce(x, group=group)
        np.testing.assert_array_equal(x, np.full(30, 6.0))
        with pytest.raises(ValueError, match=r"broadcast: src must be a \(global\) rank of the group"):
            dist.broadcast(x, src=3, group=group)
    np.testing.assert_array_equal(untouched, np.full(30, -1.0))
    np.testing.assert_array_equal(x, np.full(30, 6.0) if rank < 3 else np.full(30, 4.0))
    with pytest.raises(ValueError, match="new_group: the ranks called it with different ranks"):
        dist.new_group([0, 1] if rank else [0, 2])
    with pytest.raises(ValueError, match="new_group: ranks must be distinct"):
        dist.new_group([0, 0, 5])
    dist.destroy_process_group(group)
    if rank < 3:
        with pytest.raises(RuntimeError, match="all_reduce: .* was destroyed"):
            dist.all_reduce(x, group=group)
    mismatch = np.zeros(4 if rank == 1 else 3)
    if rank < 2:
        pair = dist.new_group([0, 1])
        with pytest.raises(ShapeError, match="all_reduce: the ranks called collectives that do not match"):
            dist.all_reduce(mismatch, group=pair)
    else:
        dist.new_group([0, 1])


def test_non_members_are_refused_and_left_alone(run_ranks):
    run_ranks(_three_of_four, 4)


# -- a 2x2 mesh: tensor-parallel pairs, data parallel across them ------------------------

def _batch():
    rng = np.random.default_rng(3)
    return rng.standard_normal((8, 5)), rng.standard_normal((8, 3))


def _unsplit_mlp():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3))
    model.build((None, 5))
    return model.double()


def _torch_sgd(model, x, y, steps, lr):
    """Single-process SGD on the whole batch, in PyTorch: the final (w1, b1, w2, b2)."""
    w1, b1, w2, b2 = [torch.tensor(p.data, requires_grad=True) for p in model.parameters()]
    for _ in range(steps):
        loss = ((torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2 - torch.tensor(y)) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for w in (w1, b1, w2, b2):
                w -= lr * w.grad
                w.grad = None
    return [w.detach().numpy() for w in (w1, b1, w2, b2)]


def _mesh_training(rank):
    mesh = dist.DeviceMesh(4, tp_size=2)
    assert mesh.mesh == [[0, 1], [2, 3]] and (mesh.dp_rank, mesh.tp_rank) == divmod(rank, 2)
    dp, tp = mesh.dp_group, mesh.tp_group
    assert dist.get_process_group_ranks(tp) == mesh.mesh[rank // 2]
    assert dist.get_process_group_ranks(dp) == [rank % 2, rank % 2 + 2]
    full = _unsplit_mlp()
    x, y = _batch()
    expected = _torch_sgd(full, x, y, steps=3, lr=0.1)
    model = nn.Sequential(dist.ColumnParallelDense.from_dense(full[0], group=tp),
                          dist.RowParallelDense.from_dense(full[1], group=tp))
    model = dist.DistributedDataParallel(model, process_group=dp)
    sgd = optim.SGD(model, lr=0.1)
    rows = slice(4 * mesh.dp_rank, 4 * (mesh.dp_rank + 1))       # each replica: half the batch
    for _ in range(3):
        sgd.zero_grad()
        out = model(lamina.tensor(x[rows], dtype=np.float64))
        F.mean_squared_error(out, lamina.tensor(y[rows], dtype=np.float64)).backward()
        sgd.step()
    hidden = slice(4 * mesh.tp_rank, 4 * (mesh.tp_rank + 1))
    column, row = model.module[0], model.module[1]
    np.testing.assert_allclose(column.weight.data, expected[0][:, hidden], **TIGHT)
    np.testing.assert_allclose(column.bias.data, expected[1][hidden], **TIGHT)
    np.testing.assert_allclose(row.weight.data, expected[2][hidden], **TIGHT)
    np.testing.assert_allclose(row.bias.data, expected[3], **TIGHT)


def test_tensor_parallel_pairs_with_ddp_across_equal_one_process(run_ranks):
    run_ranks(_mesh_training, 4)


def _torch_adam(model, batches, targets, steps, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam (Kingma and Ba; PyTorch's form, eps after the bias-corrected root) on the mean of the
    per-batch mean losses, gradients by PyTorch."""
    weights = [torch.tensor(p.data, requires_grad=True) for p in model.parameters()]
    moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in weights]
    for t in range(1, steps + 1):
        losses = [((torch.tensor(b) @ weights[0] + weights[1] - torch.tensor(y)) ** 2).mean()
                  for b, y in zip(batches, targets)]
        (sum(losses) / len(losses)).backward()
        with torch.no_grad():
            for w, (m, v) in zip(weights, moments):
                m.mul_(betas[0]).add_((1 - betas[0]) * w.grad)
                v.mul_(betas[1]).add_((1 - betas[1]) * w.grad ** 2)
                denominator = (v / (1 - betas[1] ** t)).sqrt() + eps
                w -= lr / (1 - betas[0] ** t) * m / denominator
                w.grad = None
    return [w.detach().numpy() for w in weights]


def _zero_data():
    data = {r: np.random.default_rng(r).standard_normal((6, 4)) for r in range(4)}
    targets = {r: np.random.default_rng(10 + r).standard_normal((6, 3)) for r in range(4)}
    return data, targets


def _small_model(seed):
    lamina.manual_seed(seed)
    model = nn.Dense(3)
    model.build((None, 4))
    return model.double()


def _zero_in_pairs(rank, expected):
    dp, _ = dist.device_mesh_groups(4, 2)                # dp groups {0, 2} and {1, 3}
    assert dist.get_process_group_ranks(dp) == [rank % 2, rank % 2 + 2]
    data, targets = _zero_data()
    model = _small_model(seed=rank % 2)
    zero = dist.ZeroRedundancyOptimizer(model, optim.Adam, stage=2, group=dp, lr=0.05)
    assert len(zero.local_indices) == 1 and zero.world_size == 2
    for _ in range(3):
        zero.zero_grad()
        out = model(lamina.tensor(data[rank], dtype=np.float64))
        F.mean_squared_error(out, lamina.tensor(targets[rank], dtype=np.float64)).backward()
        zero.step()
    for param, want in zip(model.parameters(), expected[rank % 2]):
        np.testing.assert_allclose(param.data, want, rtol=0, atol=1e-9)


def test_zero_over_a_subgroup_equals_adam(run_ranks):
    data, targets = _zero_data()
    expected = {column: _torch_adam(_small_model(seed=column), [data[column], data[column + 2]],
                                    [targets[column], targets[column + 2]], steps=3, lr=0.05)
                for column in (0, 1)}
    run_ranks(_zero_in_pairs, 4, expected)


def _two_pipelines(rank):
    pipe_group, _ = dist.device_mesh_groups(4, 2)         # stage groups {0, 2} and {1, 3}
    full = _unsplit_mlp()
    x, y = _batch()
    x = x + rank % 2                                      # each pipeline its own data
    pipeline = dist.Pipeline([full[0], full[1]], micro_batches=2, group=pipe_group, schedule="1f1b")
    loss = pipeline.train_step(x, y, loss_fn=lambda out, target: F.mean_squared_error(
        out, lamina.tensor(target, dtype=np.float64)))
    weights = [torch.tensor(p.data, requires_grad=True) for p in full.parameters()]
    w1, b1, w2, b2 = weights
    expected = ((torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2 - torch.tensor(y)) ** 2).mean()
    expected.backward()
    stage = 0 if rank < 2 else 1
    mine = full[stage].parameters()
    for param, want in zip(mine, weights[2 * stage:2 * stage + 2]):
        np.testing.assert_allclose(param.grad, want.grad.numpy(), **TIGHT)
    if stage == 1:
        assert abs(loss - expected.item()) < 1e-12


def test_two_pipelines_side_by_side(run_ranks):
    run_ranks(_two_pipelines, 4)


def test_readme_mesh_example_trains_one_model():
    from test_readme import README

    section = README.read_text().split("### Sharded, tensor-parallel and pipeline training", 1)[1].split("\n### ")[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), names)
    losses = names["losses"]
    assert len(set(losses)) == 1                                    # every rank holds the same model
    assert losses[0] < 0.1 * np.mean(names["y"] ** 2)              # trained
