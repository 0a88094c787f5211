import numpy as np
import pytest
import torch
from torch.utils import data as tud

import lamina
from lamina.data import ArrayDataset, DataLoader
from lamina.data.samplers import RandomSampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler
from lamina.data.subsets import ConcatDataset, Subset


def _dataset(n):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return ArrayDataset(x, np.arange(n))


def _labels(loader):
    return [yb.copy() for _, yb in loader]


def _chi_square(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


# χ² at p = 0.001 for 3 and 4 degrees of freedom: a correct sampler exceeds it once in a thousand seeds.
CHI2_3, CHI2_4 = 16.27, 18.47


# -- the samplers on their own --------------------------------------------------------

def test_sequential_sampler():
    order = SequentialSampler().order(5, np.random.default_rng(0))
    np.testing.assert_array_equal(order, np.arange(5))


def test_random_sampler_without_replacement_chains_permutations():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(np.sort(RandomSampler().order(9, rng)), np.arange(9))
    sampler = RandomSampler(num_samples=23)
    order = sampler.order(9, rng)
    assert sampler.num_indices(9) == len(order) == 23
    for run in (order[:9], order[9:18]):
        np.testing.assert_array_equal(np.sort(run), np.arange(9))
    assert len(set(order[18:].tolist())) == 5


def test_random_sampler_with_replacement_is_uniform():
    order = RandomSampler(replacement=True, num_samples=8000).order(5, np.random.default_rng(1))
    assert len(order) == 8000 and order.min() >= 0 and order.max() < 5
    counts = np.bincount(order, minlength=5)
    assert _chi_square(counts, np.full(5, 8000 / 5)) < CHI2_4
    short = RandomSampler(replacement=True, num_samples=4).order(100, np.random.default_rng(2))
    assert len(short) == 4


def test_subset_random_sampler_permutes_its_indices():
    sampler = SubsetRandomSampler([4, 0, -1, 7])
    orders = [sampler.order(10, np.random.default_rng(seed)) for seed in range(6)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), [0, 4, 7, 9])
    assert len({tuple(o.tolist()) for o in orders}) > 1
    with pytest.raises(ValueError, match=r"index 7 is out of range for a dataset of 6 samples \(valid: -6 to 5\)"):
        sampler.order(6, np.random.default_rng(0))


def test_weighted_sampler_frequencies_follow_the_weights():
    weights = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    draws = 20000
    order = WeightedRandomSampler(weights, draws).order(5, np.random.default_rng(0))
    counts = np.bincount(order, minlength=5)
    assert counts[2] == 0
    positive = weights > 0
    expected = draws * weights[positive] / weights.sum()
    assert _chi_square(counts[positive], expected) < CHI2_3
    # The same expectation holds for torch's sampler with the same weights.
    torch_counts = np.bincount(list(tud.WeightedRandomSampler(weights.tolist(), draws,
                                                              generator=torch.Generator().manual_seed(0))),
                               minlength=5)
    assert torch_counts[2] == 0 and _chi_square(torch_counts[positive], expected) < CHI2_3


def test_weighted_sampler_without_replacement_draws_distinct_indices():
    weights = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    sampler = WeightedRandomSampler(weights, 4, replacement=False)
    rng = np.random.default_rng(0)
    firsts = []
    for _ in range(2000):
        order = sampler.order(5, rng)
        np.testing.assert_array_equal(np.sort(order), [0, 1, 3, 4])
        firsts.append(order[0])
    # The first draw of each epoch picks index i with probability w_i / sum(w).
    counts = np.bincount(firsts, minlength=5)[[0, 1, 3, 4]]
    assert _chi_square(counts, 2000 * np.array([1, 2, 3, 4]) / 10) < CHI2_3


def test_sampler_errors():
    with pytest.raises(ValueError, match=r"weights must be >= 0; got -1.0 at index 1"):
        WeightedRandomSampler([1.0, -1.0, 2.0], 3)
    with pytest.raises(ValueError, match="at least one weight must be positive"):
        WeightedRandomSampler([0.0, 0.0], 3)
    with pytest.raises(ValueError, match="finite"):
        WeightedRandomSampler([1.0, np.nan], 3)
    with pytest.raises(ValueError, match=r"1-d.*shape \(2, 2\)"):
        WeightedRandomSampler(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="num_samples=3 cannot exceed the 2 positive weights"):
        WeightedRandomSampler([1.0, 0.0, 1.0], 3, replacement=False)
    with pytest.raises(ValueError, match="3 weights for a dataset of 4 samples"):
        WeightedRandomSampler([1.0, 1.0, 1.0], 2).order(4, np.random.default_rng(0))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            RandomSampler(num_samples=bad)
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            WeightedRandomSampler([1.0], bad)
    with pytest.raises(ValueError, match="replacement must be True or False"):
        RandomSampler(replacement=1)
    with pytest.raises(ValueError, match="cannot draw 3 indices from an empty dataset"):
        RandomSampler(num_samples=3).order(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-d sequence of ints"):
        SubsetRandomSampler([0.5, 1.5])


# -- DataLoader(sampler=...) ----------------------------------------------------------

@pytest.mark.parametrize("make, drop_last", [
    (lambda: SequentialSampler(), False),
    (lambda: RandomSampler(), True),
    (lambda: RandomSampler(replacement=True, num_samples=30), False),
    (lambda: RandomSampler(num_samples=25), True),
    (lambda: SubsetRandomSampler([3, 1, 4, 15, 9, 2, 6]), False),
    (lambda: WeightedRandomSampler(np.arange(17) + 1.0, 11), True),
])
def test_loader_length_follows_the_sampler_as_torch(make, drop_last):
    theirs = {
        SequentialSampler: lambda s, ds: tud.SequentialSampler(ds),
        RandomSampler: lambda s, ds: tud.RandomSampler(ds, replacement=s.replacement, num_samples=s.num_samples),
        SubsetRandomSampler: lambda s, ds: tud.SubsetRandomSampler(s.indices.tolist()),
        WeightedRandomSampler: lambda s, ds: tud.WeightedRandomSampler(s.weights.tolist(), s.num_samples),
    }
    sampler = make()
    torch_ds = tud.TensorDataset(torch.arange(17))
    torch_loader = tud.DataLoader(torch_ds, batch_size=4, drop_last=drop_last,
                                  sampler=theirs[type(sampler)](sampler, torch_ds))
    loader = DataLoader(_dataset(17), batch_size=4, drop_last=drop_last, sampler=sampler, seed=0)
    assert len(loader) == len(torch_loader) == len(list(loader))


def test_loader_with_a_sampler_yields_its_indices():
    ds = _dataset(20)
    chosen = [3, 17, 8, 0, 11, 5, 19]
    loader = DataLoader(ds, batch_size=3, sampler=SubsetRandomSampler(chosen), seed=4)
    assert loader.shuffle is False
    for _ in range(2):
        batches = list(loader)
        assert [len(yb) for _, yb in batches] == [3, 3, 1]
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, ds.x[yb])
        np.testing.assert_array_equal(np.sort(np.concatenate([yb for _, yb in batches])), np.sort(chosen))
    in_order = DataLoader(ds, batch_size=8, sampler=SequentialSampler())
    np.testing.assert_array_equal(np.concatenate(_labels(in_order)), np.arange(20))


def test_loader_with_a_sampler_over_a_concatenation():
    parts = ConcatDataset([_dataset(6), Subset(_dataset(10), [9, 8, 7])])
    loader = DataLoader(parts, batch_size=4, sampler=WeightedRandomSampler(np.ones(9), 12), seed=0)
    labels = np.concatenate(_labels(loader))
    assert len(labels) == 12 and set(labels.tolist()) <= set(range(6)) | {7, 8, 9}


def test_loader_with_a_sampler_is_reproducible():
    def orders(seed=None):
        sampler = RandomSampler(replacement=True, num_samples=40)
        loader = DataLoader(_dataset(30), batch_size=8, sampler=sampler, seed=seed)
        return [np.concatenate(_labels(loader)) for _ in range(2)]

    first, second = orders(seed=5)
    assert not np.array_equal(first, second)  # a fresh draw each epoch
    again = orders(seed=5)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    assert not np.array_equal(orders(seed=6)[0], first)
    lamina.manual_seed(9)
    unseeded = orders()
    lamina.manual_seed(9)
    np.testing.assert_array_equal(orders()[1], unseeded[1])


@pytest.mark.parametrize("make", [
    lambda: WeightedRandomSampler(np.linspace(0.5, 2.0, 31), 29),
    lambda: RandomSampler(num_samples=45),
    lambda: SubsetRandomSampler(np.arange(0, 31, 2)),
])
def test_loader_with_a_sampler_resumes_mid_epoch(make):
    ref = DataLoader(_dataset(31), batch_size=4, sampler=make(), seed=5)
    _labels(ref)
    it = iter(ref)
    for _ in range(3):
        next(it)
    state = ref.state_dict()
    tail = [yb.copy() for _, yb in it]
    following = _labels(ref)
    fresh = DataLoader(_dataset(31), batch_size=4, sampler=make(), seed=123)
    fresh.load_state_dict(state)
    got_tail = _labels(fresh)
    assert len(got_tail) == len(tail) == len(ref) - 3
    for a, b in zip(tail, got_tail, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(following, _labels(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.epoch == ref.epoch


def test_loader_sampler_errors():
    ds = _dataset(5)
    with pytest.raises(ValueError, match="sampler and shuffle=True are mutually exclusive"):
        DataLoader(ds, sampler=SequentialSampler(), shuffle=True)
    with pytest.raises(TypeError, match="sampler must have num_indices"):
        DataLoader(ds, sampler=[0, 1, 2])
    with pytest.raises(ValueError, match="6 weights for a dataset of 5 samples"):
        list(DataLoader(ds, sampler=WeightedRandomSampler(np.ones(6), 3)))
    saved = DataLoader(ds, sampler=RandomSampler(num_samples=8), seed=0).state_dict()
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(ds, sampler=RandomSampler(num_samples=9), seed=0).load_state_dict(saved)
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(ds, shuffle=False, seed=0).load_state_dict(saved)
