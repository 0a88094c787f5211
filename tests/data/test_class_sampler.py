"""MPerClassSampler: m samples of each of batch_size / m classes per batch."""

import numpy as np
import pytest

from lamina.data import ArrayDataset, DataLoader, MPerClassSampler

LABELS = np.repeat(np.arange(6), [5, 2, 8, 3, 6, 4])      # class 1 has fewer than m = 3 samples


def batches(sampler, seed=0):
    order = sampler.order(len(LABELS), np.random.default_rng(seed))
    return order.reshape(-1, sampler.batch_size)


def test_each_batch_holds_m_of_distinct_classes():
    sampler = MPerClassSampler(LABELS, m=3, batch_size=12, length=60)
    assert sampler.num_indices(len(LABELS)) == 60
    for batch in batches(sampler):
        groups = LABELS[batch].reshape(-1, 3)
        assert (groups == groups[:, :1]).all()                 # groups of m of one class
        assert len(set(groups[:, 0].tolist())) == 4             # batch_size / m distinct classes
        for group, label in zip(batch.reshape(-1, 3), groups[:, 0]):
            if label != 1:
                assert len(set(group.tolist())) == 3            # without replacement where possible


def test_every_class_is_drawn_and_the_order_is_seeded():
    sampler = MPerClassSampler(LABELS, m=2, batch_size=6, length=600)
    order = sampler.order(len(LABELS), np.random.default_rng(1))
    assert set(LABELS[order].tolist()) == set(range(6))
    np.testing.assert_array_equal(order, sampler.order(len(LABELS), np.random.default_rng(1)))


def test_without_batch_size_each_block_visits_every_class():
    sampler = MPerClassSampler(LABELS, m=2, length=40)
    order = sampler.order(len(LABELS), np.random.default_rng(0))
    assert len(order) == 36
    for block in order.reshape(-1, 12):
        assert sorted(LABELS[block][::2].tolist()) == list(range(6))


def test_with_a_loader():
    data = ArrayDataset(np.arange(len(LABELS)), LABELS)
    loader = DataLoader(data, batch_size=8, sampler=MPerClassSampler(LABELS, m=4, batch_size=8, length=32), seed=0)
    seen = [np.asarray(y) for _, y in loader]
    assert len(seen) == 4 and all(len(np.unique(y)) == 2 for y in seen)


def test_errors():
    with pytest.raises(ValueError, match="must be a multiple of m=3"):
        MPerClassSampler(LABELS, m=3, batch_size=10)
    with pytest.raises(ValueError, match="needs 7 classes .* only 6 classes"):
        MPerClassSampler(LABELS, m=2, batch_size=14)
    with pytest.raises(ValueError, match="shorter than one batch"):
        MPerClassSampler(LABELS, m=2, batch_size=4, length=3)
    with pytest.raises(ValueError, match="labels for a dataset of"):
        MPerClassSampler(LABELS, m=2).order(5, np.random.default_rng(0))
