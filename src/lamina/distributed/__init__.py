"""Data-parallel training over several processes of one machine, with ``torch.distributed``'s API.

Start the processes with :func:`spawn`, join them with :func:`init_process_group`, then use the
collectives (:func:`all_reduce`, :func:`broadcast`, ...) on NumPy arrays and lamina Tensors,
wrap the model in :class:`DistributedDataParallel`, and give each rank its share of the data
with :class:`DistributedSampler`. Beyond data parallelism: :class:`ZeroRedundancyOptimizer`
shards the optimizer state (and gradients) over the ranks, :class:`ColumnParallelDense` and
:class:`RowParallelDense` split a layer's weight (tensor parallelism), and :class:`Pipeline`
runs a model cut into stages, one per rank, over micro-batches (pipeline parallelism).
:func:`new_group` makes subgroups that every collective and wrapper takes as ``group=``, and
:class:`DeviceMesh` the data- and tensor-parallel groups of a 2-D mesh, to combine them::

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
    recv,
    recv_array,
    reduce_scatter,
    scatter,
    send,
)
from lamina.distributed.ddp import DistributedDataParallel
from lamina.distributed.group import (
    DistributedError,
    GroupMember,
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    is_main_process,
)
from lamina.distributed.launch import ProcessContext, ProcessExitedException, ProcessRaisedException, spawn
from lamina.distributed.pipeline import Pipeline
from lamina.distributed.sampler import DistributedSampler
from lamina.distributed.siglip import ring_shift, siglip_loss_ring
from lamina.distributed.subgroup import DeviceMesh, Subgroup, device_mesh_groups, get_process_group_ranks, new_group
from lamina.distributed.tensor_parallel import (
    ColumnParallelDense,
    RowParallelDense,
    copy_to_parallel_region,
    gather_from_parallel_region,
    reduce_from_parallel_region,
    tensor_parallel_mlp,
)
from lamina.distributed.zero import ZeroRedundancyOptimizer, partition_parameters

__all__ = [
    "ColumnParallelDense", "DeviceMesh", "DistributedDataParallel", "DistributedError", "DistributedSampler",
    "GroupMember", "Pipeline", "ProcessContext", "ProcessExitedException", "ProcessRaisedException", "ReduceOp",
    "RowParallelDense", "Subgroup", "ZeroRedundancyOptimizer", "all_gather", "all_gather_object", "all_reduce",
    "barrier", "broadcast", "broadcast_object_list", "copy_to_parallel_region", "destroy_process_group",
    "device_mesh_groups", "gather", "gather_from_parallel_region", "get_process_group_ranks", "get_rank",
    "get_world_size", "init_process_group", "is_initialized", "is_main_process", "new_group",
    "partition_parameters", "recv", "recv_array", "reduce_from_parallel_region", "reduce_scatter",
    "ring_shift", "scatter", "send", "siglip_loss_ring", "spawn", "tensor_parallel_mlp",
]
