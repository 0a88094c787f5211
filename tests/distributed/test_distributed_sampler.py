"""DistributedSampler: PyTorch's shares without shuffling, PyTorch's rules with it."""

import numpy as np
import pytest
import torch.utils.data

from lamina.data import ArrayDataset, DataLoader
from lamina.distributed import DistributedSampler


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n, replicas", [(10, 3), (12, 3), (7, 2), (2, 3), (1, 4), (0, 2)])
def test_unshuffled_shares_equal_torch(n, replicas, drop_last):
    data = list(range(n))
    for rank in range(replicas):
        ours = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=False,
                                                     drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs)


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_shares_are_disjoint_cover_and_change_with_the_epoch(drop_last):
    n, replicas = 23, 3
    samplers = [DistributedSampler(range(n), num_replicas=replicas, rank=r, seed=5, drop_last=drop_last)
                for r in range(replicas)]
    orders = []
    for epoch in range(2):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        shares = [list(sampler) for sampler in samplers]
        torch_lengths = [len(torch.utils.data.DistributedSampler(range(n), replicas, r, drop_last=drop_last))
                         for r in range(replicas)]
        assert [len(share) for share in shares] == torch_lengths
        every = [i for share in shares for i in share]
        if drop_last:                              # 21 distinct samples, the last two of the order cut
            assert len(set(every)) == len(every) == 21
        else:                                      # 24 slots: every sample, one of them twice
            assert set(every) == set(range(n)) and len(every) == 24
        orders.append(shares)
    assert orders[0] != orders[1]
    again = DistributedSampler(range(n), num_replicas=replicas, rank=0, seed=5, drop_last=drop_last)
    assert list(again) == orders[0][0]             # the order depends on seed and epoch alone


def test_the_loader_batches_a_rank_share():
    x = np.arange(10.0)[:, None]
    sampler = DistributedSampler(ArrayDataset(x, np.arange(10)), num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(ArrayDataset(x, np.arange(10)), batch_size=2, sampler=sampler)
    assert len(loader) == 3
    assert [yb.tolist() for _, yb in loader] == [[1, 3], [5, 7], [9]]
    sampler.shuffle = True
    sampler.set_epoch(3)
    assert np.concatenate([yb for _, yb in loader]).tolist() == list(sampler)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas\) = \[0, 2\); got 2"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be a positive integer; got 0"):
        DistributedSampler(range(4), num_replicas=0, rank=0)
    with pytest.raises(RuntimeError, match="no process group"):
        DistributedSampler(range(4))
