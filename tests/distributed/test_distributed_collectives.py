"""The collectives on 2 (and 3) forked processes against NumPy, every dtype, in chunks."""

import functools

import numpy as np
import pytest

import lamina
import lamina.distributed as dist
from lamina.distributed import collectives
from lamina.errors import ShapeError

DTYPES = [np.float32, np.float64, np.int64]
SHAPE = (7, 11)          # 616 bytes in float64: three chunks of the 256-byte slots
PATHS = ["shared memory", "sockets"]


def data(rank, dtype, shape=SHAPE, offset=0):
    """Rank ``rank``'s array: the same on every process that asks for it."""
    rng = np.random.default_rng(100 * rank + offset)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-4, 5, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def same_bits_everywhere(array):
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, array.tobytes())
    assert all(bits == everyone[0] for bits in everyone)


EXPECTED = {
    "SUM": lambda xs: functools.reduce(np.add, xs),
    "MAX": lambda xs: functools.reduce(np.maximum, xs),
    "MIN": lambda xs: functools.reduce(np.minimum, xs),
    "PRODUCT": lambda xs: functools.reduce(np.multiply, xs),
}


def through(path):
    """Send the arrays of all_reduce and broadcast through shared memory in chunks, or all
    through the control sockets."""
    collectives.SMALL_ARRAY_BYTES = 0 if path == "shared memory" else 2**20


def _all_reduce_every_op(rank, dtype, path):
    through(path)
    world = dist.get_world_size()
    everyone = [data(r, dtype) for r in range(world)]
    for name, expected in EXPECTED.items():
        x = data(rank, dtype)
        dist.all_reduce(x, op=dist.ReduceOp[name])
        np.testing.assert_array_equal(x, expected(everyone), err_msg=name)
        same_bits_everywhere(x)
    if np.dtype(dtype).kind == "f":
        x = data(rank, dtype)
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
        np.testing.assert_array_equal(x, functools.reduce(np.add, everyone) / dtype(world))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_reduce_equals_numpy_on_two_ranks(run_ranks, dtype, path):
    run_ranks(_all_reduce_every_op, 2, dtype, path)


@pytest.mark.parametrize("path", PATHS)
def test_all_reduce_equals_numpy_on_three_ranks(run_ranks, path):
    run_ranks(_all_reduce_every_op, 3, np.float64, path)


def _tensors_and_strided_arrays(rank):
    through("shared memory")
    t = lamina.tensor(data(rank, np.float32))
    dist.all_reduce(t, op="sum")
    np.testing.assert_array_equal(t.data, data(0, np.float32) + data(1, np.float32))
    whole = data(rank, np.float64, (6, 8))
    column = whole[:, 1::3]                        # not contiguous: changed in place all the same
    dist.all_reduce(column)
    np.testing.assert_array_equal(whole[:, 1::3], data(0, np.float64, (6, 8))[:, 1::3]
                                  + data(1, np.float64, (6, 8))[:, 1::3])
    np.testing.assert_array_equal(whole[:, 0], data(rank, np.float64, (6, 8))[:, 0])
    empty = np.zeros((0, 3), np.float32)
    dist.all_reduce(empty)


def test_all_reduce_of_tensors_strided_and_empty_arrays(run_ranks):
    run_ranks(_tensors_and_strided_arrays)


def _broadcast_gather_scatter(rank, dtype):
    for path in PATHS:
        through(path)
        x = data(rank, dtype)
        dist.broadcast(x, src=1)
        np.testing.assert_array_equal(x, data(1, dtype))

    gathered = [np.zeros(SHAPE, dtype) for _ in range(2)]
    dist.all_gather(gathered, data(rank, dtype))
    for r in range(2):
        np.testing.assert_array_equal(gathered[r], data(r, dtype))

    at_root = [np.zeros(SHAPE, dtype) for _ in range(2)] if rank == 1 else None
    dist.gather(data(rank, dtype), at_root, dst=1)
    if rank == 1:
        for r in range(2):
            np.testing.assert_array_equal(at_root[r], data(r, dtype))

    mine = np.zeros(SHAPE, dtype)
    dist.scatter(mine, [data(9, dtype, offset=r) for r in range(2)] if rank == 0 else None, src=0)
    np.testing.assert_array_equal(mine, data(9, dtype, offset=rank))

    out = np.zeros(SHAPE, dtype)
    dist.reduce_scatter(out, [data(rank, dtype, offset=part) for part in range(2)])
    np.testing.assert_array_equal(out, data(0, dtype, offset=rank) + data(1, dtype, offset=rank))
    if np.dtype(dtype).kind == "f":
        dist.reduce_scatter(out, [data(rank, dtype, offset=part) for part in range(2)], op=dist.ReduceOp.MAX)
        np.testing.assert_array_equal(out, np.maximum(data(0, dtype, offset=rank), data(1, dtype, offset=rank)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_gather_scatter_reduce_scatter_equal_numpy(run_ranks, dtype):
    run_ranks(_broadcast_gather_scatter, 2, dtype)


def _objects(rank):
    everyone = [None, None]
    dist.all_gather_object(everyone, {"rank": rank, "name": f"process {rank}"})
    assert everyone == [{"rank": 0, "name": "process 0"}, {"rank": 1, "name": "process 1"}]
    chosen = [rank, "from", rank] if rank == 1 else [None, None, None]
    dist.broadcast_object_list(chosen, src=1)
    assert chosen == [1, "from", 1]
    dist.barrier()
    assert dist.is_initialized() and dist.get_world_size() == 2 and dist.get_rank() == rank
    assert dist.is_main_process() == (rank == 0)


def test_objects_and_barrier(run_ranks):
    run_ranks(_objects)


def _mismatches_raise_on_every_rank(rank):
    with pytest.raises(ShapeError, match=r"rank 1 called all_reduce\(SUM, shape=\(4,\)"):
        dist.all_reduce(np.zeros(3 + rank))
    with pytest.raises(ShapeError, match="do not match"):
        dist.broadcast(np.zeros(3, np.float32 if rank else np.float64))
    with pytest.raises(ValueError, match="unknown op 'mean'"):
        dist.all_reduce(np.zeros(3), op="mean")
    with pytest.raises(TypeError, match="AVG needs a floating array"):
        dist.all_reduce(np.zeros(3, np.int64), op=dist.ReduceOp.AVG)
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 2\)"):
        dist.broadcast(np.zeros(3), src=2)
    with pytest.raises(ShapeError, match=r"tensor_list\[1\] has shape \(2,\)"):
        dist.all_gather([np.zeros(3), np.zeros(2)], np.zeros(3))
    with pytest.raises(TypeError, match="NumPy array or a lamina Tensor"):
        dist.all_reduce([1.0, 2.0])
    x = np.arange(3.0)
    dist.all_reduce(x)                            # the ranks are still in step after the errors
    np.testing.assert_array_equal(x, 2 * np.arange(3.0))


def test_mismatched_calls_and_bad_arguments_give_clear_errors(run_ranks):
    run_ranks(_mismatches_raise_on_every_rank)


def test_errors_outside_a_group():
    assert not dist.is_initialized() and dist.is_main_process()
    with pytest.raises(RuntimeError, match="no process group; call lamina.distributed.init_process_group"):
        dist.all_reduce(np.zeros(3))
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, world_size\) = \[0, 2\); got 2"):
        dist.init_process_group("shm", "tcp://127.0.0.1:1", rank=2, world_size=2)
    with pytest.raises(ValueError, match="unknown backend 'nccl'"):
        dist.init_process_group("nccl", "tcp://127.0.0.1:1", rank=0, world_size=2)
    with pytest.raises(ValueError, match="unknown init_method"):
        dist.init_process_group("shm", "udp://x", rank=0, world_size=2)


def test_a_group_of_one_process(tmp_path):
    dist.init_process_group("gloo", f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        x = data(0, np.float64)
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
        np.testing.assert_array_equal(x, data(0, np.float64))
        with pytest.raises(RuntimeError, match="already rank 0 of 1"):
            dist.init_process_group("shm", rank=0, world_size=1)
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
