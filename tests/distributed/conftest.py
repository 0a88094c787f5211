import pytest

import lamina.distributed as dist


@pytest.fixture
def run_ranks(tmp_path):
    """``run_ranks(fn, nprocs=2, *args)`` runs ``fn(rank, *args)`` in ``nprocs`` forked processes
    joined in a process group (small shared-memory slots, so that arrays go in several chunks);
    an assertion failing in one is raised here with its rank and traceback."""
    count = [0]

    def run(fn, nprocs=2, *args, slot_bytes=256, start_method="fork"):
        count[0] += 1
        rendezvous = f"file://{tmp_path / f'rendezvous{count[0]}'}"
        dist.spawn(_in_group, args=(fn, nprocs, rendezvous, slot_bytes, args), nprocs=nprocs,
                   start_method=start_method)

    return run


def _in_group(rank, fn, world_size, rendezvous, slot_bytes, args):
    dist.init_process_group("shm", rendezvous, rank=rank, world_size=world_size, slot_bytes=slot_bytes, timeout=60)
    fn(rank, *args)
    dist.destroy_process_group()
