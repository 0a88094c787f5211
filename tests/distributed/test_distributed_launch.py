"""spawn: failures in a child reach the parent with the rank and traceback; the others stop."""

import os
import time

import numpy as np
import pytest

import lamina.distributed as dist


def _rank_1_raises(rank):
    if rank == 1:
        raise ValueError("bad value on purpose")
    dist.barrier()                        # rank 0 waits for rank 1, which is gone


def test_an_exception_in_a_child_is_raised_with_its_rank(run_ranks):
    with pytest.raises(dist.ProcessRaisedException, match=r"(?s)rank 1 .*raised.*Traceback.*"
                                                          "ValueError: bad value on purpose") as caught:
        run_ranks(_rank_1_raises)
    assert caught.value.rank == 1


def _rank_0_waits_forever(rank, marker):
    if rank == 1:
        os._exit(3)
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(60)


def test_a_child_that_exits_stops_the_others(tmp_path):
    marker = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(dist.ProcessExitedException, match="rank 1 .* exited with code 3") as caught:
        dist.spawn(_rank_0_waits_forever, args=(str(marker),), nprocs=2, start_method="fork")
    assert caught.value.exit_code == 3 and time.monotonic() - started < 30
    while not marker.exists():           # rank 0 may not have got as far as writing it
        time.sleep(0.01)
    pid = int(marker.read_text() or 0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)                   # terminated and reaped


def _sum_ranks(rank, path, world_size):
    dist.init_process_group("shm", f"file://{path}", rank=rank, world_size=world_size)
    x = np.array([rank + 1.0])
    dist.all_reduce(x)
    if x[0] != world_size * (world_size + 1) / 2:
        raise AssertionError(f"sum {x[0]}")
    dist.destroy_process_group()


def test_join_later(tmp_path):
    context = dist.spawn(_sum_ranks, args=(str(tmp_path / "rendezvous"), 2), nprocs=2, join=False,
                         start_method="fork")
    assert len(context.pids()) == 2
    while not context.join(timeout=10):
        pass


def test_the_rendezvous_file_is_removed_and_can_be_used_again(tmp_path):
    path = tmp_path / "rendezvous"
    for _ in range(2):
        dist.spawn(_sum_ranks, args=(str(path), 2), nprocs=2, start_method="fork")
        assert not path.exists()
    path.write_text("{}")
    with pytest.raises(dist.ProcessRaisedException, match=r"(?s)rank 0 .*rendezvous file .* already exists"):
        dist.spawn(_sum_ranks, args=(str(path), 2), nprocs=2, start_method="fork")


def test_the_spawn_start_method(tmp_path):
    """A fresh interpreter per process (one here: it imports lamina, which takes a while)."""
    dist.spawn(_sum_ranks, args=(str(tmp_path / "rendezvous"), 1), nprocs=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="nprocs must be a positive integer; got 0"):
        dist.spawn(_sum_ranks, nprocs=0)
    with pytest.raises(TypeError, match="define fn at module level"):
        dist.spawn(lambda rank: None, nprocs=1)
