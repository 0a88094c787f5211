"""DistributedSampler(group=...) on 4 forked processes in a 2x2 mesh: each data-parallel group
shares the data among its own members (PyTorch's shares for the group's rank and size), the
two tensor-parallel ranks of a replica read the same share, and a non-member is refused."""

import numpy as np
import pytest
import torch.utils.data

import lamina.distributed as dist
from lamina.data import ArrayDataset, DataLoader
from lamina.distributed import DistributedSampler


def _mesh_shares(rank, n):
    mesh = dist.DeviceMesh(4, tp_size=2)
    dp, tp = mesh.dp_group, mesh.tp_group
    unshuffled = DistributedSampler(range(n), shuffle=False, group=dp)
    assert (unshuffled.num_replicas, unshuffled.rank) == (2, rank // 2)
    expected = torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=rank // 2, shuffle=False)
    assert list(unshuffled) == list(expected) and len(unshuffled) == len(expected)

    sampler = DistributedSampler(range(n), seed=3, group=dp)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        share = np.array(list(sampler), dtype=np.float64)
        counts = np.bincount(share.astype(np.int64), minlength=n).astype(np.float64)
        dist.all_reduce(counts, group=dp)              # the replicas' shares cover the data once
        np.testing.assert_array_equal(counts, np.ones(n))
        both = share.copy()
        dist.all_reduce(both, group=tp)                # a replica's two ranks read the same share
        np.testing.assert_array_equal(both, 2 * share)

    x = np.arange(float(n))[:, None]
    loader = DataLoader(ArrayDataset(x, x), batch_size=3, sampler=DistributedSampler(range(n), shuffle=False,
                                                                                     group=dp))
    seen = np.concatenate([batch[0][:, 0] for batch in loader])
    np.testing.assert_array_equal(seen, np.arange(rank // 2, n, 2))

    pair = dist.new_group([0, 1])
    if rank < 2:
        assert DistributedSampler(range(n), group=pair).rank == rank
    else:
        with pytest.raises(ValueError, match="DistributedSampler: this process is not a member of group"):
            DistributedSampler(range(n), group=pair)


def test_sampler_shares_the_data_within_a_data_parallel_group(run_ranks):
    run_ranks(_mesh_shares, 4, 10)
