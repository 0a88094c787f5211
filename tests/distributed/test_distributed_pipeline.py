"""send / recv between forked processes, and a Pipeline of stages against the unsplit model."""

import copy

import numpy as np
import pytest

import lamina
import lamina.distributed as dist
from lamina import functional as F
from lamina import nn
from lamina.distributed import Pipeline
from lamina.errors import ShapeError

BATCH, MICRO_BATCHES = 8, 4


def _point_to_point(rank):
    world = dist.get_world_size()
    after, before = (rank + 1) % world, (rank - 1) % world
    mine = np.arange(3 * (rank + 1), dtype=np.float64).reshape(rank + 1, 3)
    big = np.full(300_000, float(rank))            # more than a socket's buffer
    dist.send(mine, after)
    dist.send(big, after, tag=7)
    dist.barrier()                                 # collectives in between do not see the messages
    received = dist.recv_array(before)
    np.testing.assert_array_equal(received, np.arange(3 * (before + 1)).reshape(before + 1, 3))
    into = lamina.tensor(np.zeros(300_000), dtype=np.float64)
    assert dist.recv(into, before, tag=7) == before
    np.testing.assert_array_equal(into.data, float(before))
    dist.send(np.ones(2), after, tag=1)
    with pytest.raises(ValueError, match="expected tag 2"):
        dist.recv_array(before, tag=2)
    dist.send(np.ones(2), after)
    with pytest.raises(ShapeError, match="shape"):
        dist.recv(np.zeros(3), before)
    with pytest.raises(ValueError, match="is this rank"):
        dist.send(np.ones(1), rank)


@pytest.mark.parametrize("nprocs", [2, 3])
def test_send_and_recv_around_a_ring(run_ranks, nprocs):
    run_ranks(_point_to_point, nprocs)


def stages(world_size):
    """The same model, built alike on every process, cut into ``world_size`` stages."""
    lamina.manual_seed(0)
    widths = [6, 4, 2] if world_size == 2 else [6, 4, 3, 2]
    layers = [nn.Dense(w, activation="tanh" if i < len(widths) - 1 else None) for i, w in enumerate(widths)]
    for layer, fan_in in zip(layers, [5] + widths[:-1]):
        layer.build((None, fan_in))
    cuts = [[0], [1, 2]] if world_size == 2 else [[0], [1], [2, 3]]
    return [nn.Sequential(*[layers[i] for i in cut]).double() for cut in cuts]


def batch():
    rng = np.random.default_rng(5)
    return rng.standard_normal((BATCH, 5)), rng.standard_normal((BATCH, 2))


def mse(output, target):
    return F.mean_squared_error(output, lamina.tensor(target, dtype=np.float64))


def _pipelined(rank, schedule):
    world = dist.get_world_size()
    parts = stages(world)
    whole = copy.deepcopy(parts)                    # the unsplit model: the stages one after another
    x, y = batch()
    h = lamina.tensor(x, dtype=np.float64)
    for part in whole:
        h = part(h)
    expected_loss = mse(h, y)
    expected_loss.backward()
    expected = [p.grad for part in whole for p in part.parameters()]
    mine = [len(part.parameters()) for part in parts]
    start = sum(mine[:rank])
    pipeline = Pipeline(parts, micro_batches=MICRO_BATCHES, schedule=schedule)
    for _ in range(2):                              # the second pass adds to the gradients
        loss = pipeline.train_step(x, y, loss_fn=mse)
    if rank == world - 1:
        assert loss == pytest.approx(float(expected_loss.item()), rel=1e-12)
    else:
        assert loss is None
    for p, e in zip(pipeline.parameters(), expected[start:start + mine[rank]], strict=True):
        np.testing.assert_allclose(p.grad, 2 * e, rtol=0, atol=1e-12)
    kept = MICRO_BATCHES if schedule == "gpipe" else min(world - rank, MICRO_BATCHES)
    assert pipeline.max_in_flight == kept
    predicted = pipeline.predict(x)
    if rank == world - 1:
        np.testing.assert_allclose(predicted, h.data, rtol=0, atol=1e-12)
    else:
        assert predicted is None


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_two_stages_give_the_gradients_of_the_whole_batch(run_ranks, schedule):
    run_ranks(_pipelined, 2, schedule)


def test_three_stages_with_1f1b(run_ranks):
    run_ranks(_pipelined, 3, "1f1b")


def _bad_pipelines(rank):
    parts = stages(2)
    with pytest.raises(ValueError, match="one stage per rank"):
        Pipeline(parts[:1], micro_batches=2)
    with pytest.raises(ValueError, match="unknown schedule"):
        Pipeline(parts, micro_batches=2, schedule="zigzag")
    pipeline = Pipeline(parts, micro_batches=3)
    if rank == 0:
        with pytest.raises(ValueError, match="equal micro-batches"):
            pipeline.train_step(np.zeros((8, 5)))


def test_bad_arguments_are_refused(run_ranks):
    run_ranks(_bad_pipelines, 2)


def test_readme_example_gives_one_loss_three_ways():
    from test_readme import run_section

    names = run_section("### Sharded, tensor-parallel and pipeline training")
    loss, split_loss, pipeline_loss = names["losses"]
    assert split_loss == pytest.approx(loss, rel=1e-12)
    assert pipeline_loss == pytest.approx(loss, rel=1e-12)
    assert loss < 0.1 * np.mean(names["y"] ** 2)                 # trained
