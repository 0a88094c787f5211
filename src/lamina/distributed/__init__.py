"""Data-parallel training over several processes of one machine, with ``torch.distributed``'s API.

Start the processes with :func:`spawn`, join them with :func:`init_process_group`, then use the
collectives (:func:`all_reduce`, :func:`broadcast`, ...) on NumPy arrays and lamina Tensors,
wrap the model in :class:`DistributedDataParallel`, and give each rank its share of the data
with :class:`DistributedSampler`::

    import lamina.distributed as dist

    def train(rank, world_size):
        dist.init_process_group("shm", "file:///tmp/rendezvous", rank=rank, world_size=world_size)
        model = dist.DistributedDataParallel(build_model())
        ...
        dist.destroy_process_group()

    dist.spawn(train, args=(2,), nprocs=2)
"""

from lamina.distributed.collectives import (
    ReduceOp,
    all_gather,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    broadcast_object_list,
    gather,
    reduce_scatter,
    scatter,
)
from lamina.distributed.ddp import DistributedDataParallel
from lamina.distributed.group import (
    DistributedError,
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    is_main_process,
)
from lamina.distributed.launch import ProcessContext, ProcessExitedException, ProcessRaisedException, spawn
from lamina.distributed.sampler import DistributedSampler

__all__ = [
    "DistributedDataParallel", "DistributedError", "DistributedSampler", "ProcessContext", "ProcessExitedException",
    "ProcessRaisedException", "ReduceOp", "all_gather", "all_gather_object", "all_reduce", "barrier", "broadcast",
    "broadcast_object_list", "destroy_process_group", "gather", "get_rank", "get_world_size", "init_process_group",
    "is_initialized", "is_main_process", "reduce_scatter", "scatter", "spawn",
]
