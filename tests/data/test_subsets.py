import warnings

import numpy as np
import pytest
import torch
from torch.utils import data as tud

import lamina
from lamina.data import ArrayDataset, DataLoader
from lamina.data.subsets import ConcatDataset, Subset, random_split


def _arrays(n, offset=0):
    x = (np.arange(n * 6, dtype=np.float32) + 6 * offset).reshape(n, 3, 2)
    y = np.arange(offset, offset + n, dtype=np.int64)
    return x, y


def _pair(n, offset=0):
    """The same samples as a lamina ArrayDataset and a torch TensorDataset."""
    x, y = _arrays(n, offset)
    return ArrayDataset(x, y), tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def _assert_same_sample(ours, theirs):
    (xo, yo), (xt, yt) = ours, theirs
    np.testing.assert_array_equal(xo, xt.numpy())
    np.testing.assert_array_equal(yo, yt.numpy())


class CountingDataset(ArrayDataset):
    """An ArrayDataset that counts single-sample and batch lookups."""

    def __init__(self, x, y=None):
        super().__init__(x, y)
        self.sample_calls = 0
        self.batch_calls = 0

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            self.sample_calls += 1
        else:
            self.batch_calls += 1
        return super().__getitem__(index)


class PairsDataset:
    """A dataset that only answers one sample at a time: the loader's per-sample path."""

    def __init__(self, n, offset=0):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not isinstance(i, int):
            raise TypeError(f"PairsDataset takes ints, got {type(i).__name__}")
        if not 0 <= i < self.n:
            raise IndexError(i)
        value = self.offset + i
        return np.full((3, 2), value, dtype=np.float32), value


# -- Subset ---------------------------------------------------------------------------

def test_subset_matches_torch_for_every_index():
    ours_ds, torch_ds = _pair(10)
    indices = [7, 0, -1, 3, 3, -10]
    ours, theirs = Subset(ours_ds, indices), tud.Subset(torch_ds, indices)
    assert len(ours) == len(theirs) == 6
    for i in range(-6, 6):
        _assert_same_sample(ours[i], theirs[i])


def test_subset_batch_index_matches_torch():
    ours_ds, torch_ds = _pair(10)
    indices = [9, 2, 5, -2, 0]
    ours, theirs = Subset(ours_ds, indices), tud.Subset(torch_ds, indices)
    asked = [4, -1, 0, 2, 2]
    _assert_same_sample(ours[np.array(asked)], theirs[asked])
    _assert_same_sample(ours[1:4], theirs[[1, 2, 3]])
    xb, yb = ours[np.array([True, False, True, False, False])]
    np.testing.assert_array_equal(yb, [9, 5])
    xb, yb = ours[[]]
    assert xb.shape == (0, 3, 2) and yb.shape == (0,)


def test_subset_out_of_range():
    ours_ds, torch_ds = _pair(5)
    ours, theirs = Subset(ours_ds, [1, 2, 3]), tud.Subset(torch_ds, [1, 2, 3])
    for bad in (3, -4):
        with pytest.raises(IndexError):
            theirs[bad]
        with pytest.raises(IndexError, match=rf"Subset: index {bad} is out of range for 3 samples"):
            ours[bad]
    with pytest.raises(IndexError, match="index 7 is out of range"):
        ours[np.array([0, 7])]
    with pytest.raises(ValueError, match=r"Subset: index 5 is out of range for 5 samples \(valid: -5 to 4\)"):
        Subset(ours_ds, [0, 5])
    with pytest.raises(ValueError, match="index -6"):
        Subset(ours_ds, [-6])
    with pytest.raises(ValueError, match="1-d sequence"):
        Subset(ours_ds, 3)
    with pytest.raises(TypeError, match="dtype float64"):
        ours[np.array([0.5])]


def test_subset_of_a_per_sample_dataset_returns_samples():
    sub = Subset(PairsDataset(6), [5, 1])
    assert sub[-1][1] == 1
    samples = sub[np.array([0, 1])]
    assert [s[1] for s in samples] == [5, 1]
    assert sub.fetches_batches is False and sub.labelled is None


# -- ConcatDataset --------------------------------------------------------------------

def test_concat_matches_torch_for_every_index():
    pairs = [_pair(4), _pair(0, 100), _pair(3, 4), _pair(5, 7)]
    ours = ConcatDataset([p[0] for p in pairs])
    theirs = tud.ConcatDataset([p[1] for p in pairs])
    assert len(ours) == len(theirs) == 12
    assert ours.cumulative_sizes == list(theirs.cumulative_sizes)
    for i in range(-12, 12):
        _assert_same_sample(ours[i], theirs[i])
    with pytest.raises(IndexError):
        theirs[12]
    for bad in (12, -13):
        with pytest.raises(IndexError, match=rf"ConcatDataset: index {bad} is out of range for 12 samples"):
            ours[bad]


def test_concat_batch_index_equals_samples_in_order():
    pairs = [_pair(4), _pair(3, 4), _pair(5, 7)]
    ours = ConcatDataset([p[0] for p in pairs])
    theirs = tud.ConcatDataset([p[1] for p in pairs])
    asked = [11, 0, 5, -1, 4, 4, 3, 7, -12]
    xb, yb = ours[np.array(asked)]
    np.testing.assert_array_equal(yb, [theirs[i][1].item() for i in asked])
    np.testing.assert_array_equal(xb, np.stack([theirs[i][0].numpy() for i in asked]))
    xb, yb = ours[np.array([5, 6])]  # within one dataset
    np.testing.assert_array_equal(yb, [5, 6])
    xb, yb = ours[np.zeros(0, dtype=np.int64)]
    assert xb.shape == (0, 3, 2) and yb.shape == (0,)


def test_concat_of_several_inputs_and_unlabelled():
    a = ArrayDataset((np.arange(6.0).reshape(3, 2), np.arange(3)), np.array([0, 1, 2]))
    b = ArrayDataset((np.arange(6.0, 10.0).reshape(2, 2), np.arange(3, 5)), np.array([3, 4]))
    (x1, x2), y = ConcatDataset([a, b])[np.array([4, 0, 3])]
    np.testing.assert_array_equal(x1, [[8, 9], [0, 1], [6, 7]])
    np.testing.assert_array_equal(x2, [4, 0, 3])
    np.testing.assert_array_equal(y, [4, 0, 3])
    unlabelled = ConcatDataset([ArrayDataset(np.arange(3.0)), ArrayDataset(np.arange(3.0, 5.0))])
    assert unlabelled.labelled is False
    np.testing.assert_array_equal(unlabelled[np.array([4, 1])], [4.0, 1.0])


def test_concat_rejects_different_structures():
    x, y = _arrays(3)
    with pytest.raises(ValueError, match=r"dataset 0 gives \(float32\[3, 2\], int64\[\]\) but dataset 1 gives "
                                         r"\(float32\[2, 3\], int64\[\]\)"):
        ConcatDataset([ArrayDataset(x, y), ArrayDataset(x.reshape(3, 2, 3), y)])
    with pytest.raises(ValueError, match="float64"):
        ConcatDataset([ArrayDataset(x, y), ArrayDataset(x.astype(np.float64), y)])
    with pytest.raises(ValueError, match="same structure"):
        ConcatDataset([ArrayDataset(x, y), ArrayDataset(x)])
    with pytest.raises(ValueError, match=r"dataset 1 gives \(float32\[3, 2\], int64\[\]\)"):
        ConcatDataset([ArrayDataset(x.astype(np.float64), y), PairsDataset(2)])
    mixed = ConcatDataset([ArrayDataset(x, y), PairsDataset(2)])  # same structure, one per-sample dataset
    assert mixed.fetches_batches is False and mixed[-1][1] == 1
    with pytest.raises(ValueError, match="must not be empty"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="dataset 1 must define __len__"):
        ConcatDataset([ArrayDataset(x, y), object()])


def test_concat_of_per_sample_datasets_goes_through_the_loader():
    ds = ConcatDataset([PairsDataset(3), PairsDataset(4, offset=3)])
    assert ds.fetches_batches is False
    batches = list(DataLoader(ds, batch_size=3, shuffle=False))
    assert [len(yb) for _, yb in batches] == [3, 3, 1]
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0], yb)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), np.arange(7))


# -- the loader's batch path ----------------------------------------------------------

def test_loader_fetches_whole_batches_from_subsets_and_concatenations():
    x, y = _arrays(20)
    first, second = CountingDataset(x[:12], y[:12]), CountingDataset(x[12:], y[12:])
    nested = Subset(ConcatDataset([first, Subset(second, [7, 0, 3, 5])]), np.arange(15, -1, -1))
    loader = DataLoader(nested, batch_size=5, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    for xb, yb in batches:
        np.testing.assert_array_equal(xb, x[yb])
    assert sorted(np.concatenate([yb for _, yb in batches]).tolist()) == list(range(12)) + [12, 15, 17, 19]
    assert first.sample_calls == second.sample_calls == 0
    assert 0 < first.batch_calls <= 4 and 0 < second.batch_calls <= 4


def test_loader_over_unlabelled_subset_yields_inputs_and_refuses_batch_transform():
    x, _ = _arrays(7)
    sub = Subset(ArrayDataset(x), [6, 2, 4])
    batches = list(DataLoader(sub, batch_size=2, shuffle=False))
    np.testing.assert_array_equal(batches[0], x[[6, 2]])
    np.testing.assert_array_equal(batches[1], x[[4]])
    with pytest.raises(ValueError, match="labelled"):
        DataLoader(sub, batch_transform=lambda xb, yb: (xb, yb))


# -- random_split ---------------------------------------------------------------------

@pytest.mark.parametrize("n, lengths", [
    (10, [0.7, 0.2, 0.1]), (11, [0.7, 0.2, 0.1]), (13, [0.7, 0.2, 0.1]), (101, [0.7, 0.2, 0.1]),
    (7, [0.5, 0.5]), (10, [1 / 3, 1 / 3, 1 / 3]), (5, [0.1, 0.1, 0.1, 0.7]), (2, [0.25, 0.25, 0.25, 0.25]),
    (12, [3, 4, 5]), (4, [0, 4]),
])
def test_random_split_sizes_match_torch_and_partition(n, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about empty parts
        expected = [len(part) for part in tud.random_split(range(n), lengths)]
    parts = random_split(ArrayDataset(np.arange(n)), lengths, seed=0)
    assert [len(part) for part in parts] == expected
    np.testing.assert_array_equal(np.sort(np.concatenate([part.indices for part in parts])), np.arange(n))
    for part in parts:
        np.testing.assert_array_equal(part[np.arange(len(part))], part.indices)


def test_random_split_is_reproducible():
    ds = ArrayDataset(np.arange(50))
    same = [random_split(ds, [0.6, 0.4], seed=3)[0].indices for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], random_split(ds, [0.6, 0.4], seed=4)[0].indices)
    assert not np.array_equal(np.sort(same[0]), same[0])  # shuffled, not a prefix
    drawn = []
    for _ in range(2):
        lamina.manual_seed(11)
        drawn.append(random_split(ds, [20, 30])[1].indices)
    np.testing.assert_array_equal(*drawn)


def test_random_split_errors():
    ds = ArrayDataset(np.arange(10))
    with pytest.raises(ValueError, match=r"lengths \[3, 4\] sum to 7, but the dataset has 10 samples"):
        random_split(ds, [3, 4])
    with pytest.raises(ValueError, match=r"sum to 0.9.*not 1"):
        random_split(ds, [0.5, 0.4])
    with pytest.raises(ValueError, match="fraction 1.5 at position 0 is not between 0 and 1"):
        random_split(ds, [1.5, -0.5])
    with pytest.raises(ValueError, match=">= 0"):
        random_split(ds, [12, -2])
    with pytest.raises(ValueError, match="must not be empty"):
        random_split(ds, [])
    with pytest.raises(ValueError, match="ints or fractions"):
        random_split(ds, [True, 9])
