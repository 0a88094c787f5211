"""Client splits for federated learning: every index used once, Dirichlet label skew that
vanishes as alpha grows, shards with few labels per client, quantity skew, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import dirichlet_partition, iid_partition, quantity_skew_partition, shard_partition

LABELS = np.random.default_rng(0).integers(0, 10, size=3000)


def assert_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def label_shares(parts, labels=LABELS, classes=10):
    """Each client's label histogram as proportions (rows sum to 1)."""
    counts = np.stack([np.bincount(labels[p], minlength=classes) for p in parts]).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def test_iid_partition_is_an_exact_cover_of_near_equal_parts():
    parts = iid_partition(1003, 7, seed=3)
    assert_exact_cover(parts, 1003)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [p.tolist() for p in parts] == [p.tolist() for p in iid_partition(1003, 7, seed=3)]
    assert [p.tolist() for p in parts] != [p.tolist() for p in iid_partition(1003, 7, seed=4)]


@pytest.mark.parametrize("alpha", [0.1, 1.0, 1000.0])
def test_dirichlet_partition_is_an_exact_cover(alpha):
    parts = dirichlet_partition(LABELS, 10, alpha, seed=1)
    assert_exact_cover(parts, len(LABELS))
    assert min(map(len, parts)) >= 10


def test_large_alpha_approaches_iid_label_proportions():
    overall = np.bincount(LABELS, minlength=10) / len(LABELS)
    shares = label_shares(dirichlet_partition(LABELS, 10, alpha=1000.0, seed=0))
    # with alpha = 1000 each client gets about 1/10 of each class (about 30 samples), so its
    # label proportions sit within a few points of the overall ones
    assert np.abs(shares - overall).max() < 0.05


def test_small_alpha_concentrates_labels():
    small = label_shares(dirichlet_partition(LABELS, 10, alpha=0.1, seed=0, min_size=1))
    large = label_shares(dirichlet_partition(LABELS, 10, alpha=100.0, seed=0, min_size=1))
    # the commonest label of a client: about 0.1 under IID, mostly over half under alpha = 0.1
    assert np.mean(small.max(axis=1)) > 0.5
    assert np.mean(large.max(axis=1)) < 0.2
    present = (small > 0.01).sum(axis=1)
    assert np.mean(present) < 6


def test_shard_partition_gives_few_labels_per_client():
    parts = shard_partition(LABELS, 20, shards_per_client=2, seed=0)
    assert_exact_cover(parts, len(LABELS))
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2
    assert max(map(len, parts)) - min(map(len, parts)) < 40  # shards are near-equal (about 75 samples)


def test_shard_partition_with_one_shard_per_client_is_by_label():
    parts = shard_partition(LABELS, 10, shards_per_client=1, seed=2)
    assert sorted(int(np.unique(LABELS[p])[0]) for p in parts) == list(range(10))
    assert all(len(np.unique(LABELS[p])) == 1 for p in parts)


def test_quantity_skew_partition_varies_sizes_but_not_labels():
    parts = quantity_skew_partition(len(LABELS), 5, alpha=0.5, seed=0, min_size=20)
    assert_exact_cover(parts, len(LABELS))
    sizes = np.array(list(map(len, parts)))
    assert sizes.min() >= 20 and sizes.max() > 2 * sizes.min()


@pytest.mark.parametrize("call, message", [
    (lambda: iid_partition(5, 6), "6 clients"),
    (lambda: dirichlet_partition(LABELS[:30], 5, 0.5, min_size=10), "50 samples"),
    (lambda: dirichlet_partition(LABELS, 5, 0.0), "alpha must be a finite number > 0"),
    (lambda: dirichlet_partition(LABELS, 5, -1.0), "alpha"),
    (lambda: quantity_skew_partition(100, 3, alpha=0), "alpha"),
    (lambda: shard_partition(LABELS, 2, shards_per_client=2), "10 classes"),
    (lambda: iid_partition(10, 0), "clients must be an integer >= 1"),
])
def test_partitions_reject_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
